package uring

import "unsafe"

// Setup flags (io_uring_params.flags). The version in each comment is the
// first Linux release that accepts the flag.
const (
	SetupIOPoll       uint32 = 1 << 0  // 5.1: busy-poll completions (O_DIRECT on poll queues only)
	SetupSQPoll       uint32 = 1 << 1  // 5.1: a kernel thread consumes the SQ
	SetupSQAff        uint32 = 1 << 2  // 5.1: pin the SQPOLL thread to Params.SQThreadCPU
	SetupCQSize       uint32 = 1 << 3  // 5.5: Params.CQEntries holds the CQ size
	SetupClamp        uint32 = 1 << 4  // 5.6: clamp entries to the maximum instead of EINVAL
	SetupSubmitAll    uint32 = 1 << 7  // 5.18: keep submitting after an SQE fails prep
	SetupCoopTaskrun  uint32 = 1 << 8  // 5.19: no IPI on completion; task work runs at the next kernel entry
	SetupTaskrunFlag  uint32 = 1 << 9  // 5.19: set SQFlagTaskrun when task work is pending
	SetupSingleIssuer uint32 = 1 << 12 // 6.0: only the creating thread may submit (EEXIST otherwise)
	SetupDeferTaskrun uint32 = 1 << 13 // 6.1: completions are posted only when the owner enters with GETEVENTS
	SetupNoSQArray    uint32 = 1 << 16 // 6.6: no SQ index array; SQEs are consumed in ring order
	setupSQE128       uint32 = 1 << 10 // not supported by this binding (SQE stride 64 is assumed)
	setupCQE32        uint32 = 1 << 11 // not supported by this binding (CQE stride 16 is assumed)
	setupNoMmap       uint32 = 1 << 14 // not supported by this binding (the kernel's rings are mmap'd)
	setupRegFdOnly    uint32 = 1 << 15 // not supported by this binding (needs a real ring fd)
	setupUnsupported         = setupSQE128 | setupCQE32 | setupNoMmap | setupRegFdOnly
)

// Feature bits reported in Params.Features.
const (
	FeatSingleMmap     uint32 = 1 << 0
	FeatNoDrop         uint32 = 1 << 1
	FeatSubmitStable   uint32 = 1 << 2
	FeatRWCurPos       uint32 = 1 << 3
	FeatCurPersonal    uint32 = 1 << 4
	FeatFastPoll       uint32 = 1 << 5
	FeatPoll32Bits     uint32 = 1 << 6
	FeatSQPollNonfixed uint32 = 1 << 7
	FeatExtArg         uint32 = 1 << 8
	FeatNativeWorkers  uint32 = 1 << 9
	FeatRsrcTags       uint32 = 1 << 10
	FeatCQESkip        uint32 = 1 << 11
	FeatLinkedFile     uint32 = 1 << 12
	FeatRegRegRing     uint32 = 1 << 13
)

// SQ ring flags (the kernel writes them; read with SQFlags).
const (
	SQFlagNeedWakeup uint32 = 1 << 0 // SQPOLL thread sleeps: enter with SQ_WAKEUP
	SQFlagCQOverflow uint32 = 1 << 1 // completions wait in the overflow list: enter with GETEVENTS
	SQFlagTaskrun    uint32 = 1 << 2 // task work pending (TASKRUN_FLAG): enter with GETEVENTS
)

// io_uring_enter flags.
const (
	enterGetEvents      uint32 = 1 << 0
	enterSQWakeup       uint32 = 1 << 1
	enterExtArg         uint32 = 1 << 3
	enterRegisteredRing uint32 = 1 << 4
)

// SQE flags (SQE.Flags).
const (
	SQEFixedFile      uint8 = 1 << 0 // SQE.Fd is an index into the registered file table
	SQEIODrain        uint8 = 1 << 1 // start only after every earlier SQE completed
	SQEIOLink         uint8 = 1 << 2 // the next SQE starts only if this one succeeds; else it gets -ECANCELED
	SQEIOHardlink     uint8 = 1 << 3 // like SQEIOLink, but the chain survives a failure
	SQEAsync          uint8 = 1 << 4 // always punt to an io-wq worker
	SQEBufferSelect   uint8 = 1 << 5 // pick a provided buffer from SQE.BufIndex's group
	SQECQESkipSuccess uint8 = 1 << 6 // post no CQE when the operation succeeds
)

// Opcodes this binding has helpers for.
const (
	OpNop         uint8 = 0
	OpReadv       uint8 = 1
	OpWritev      uint8 = 2
	OpFsync       uint8 = 3
	OpReadFixed   uint8 = 4
	OpWriteFixed  uint8 = 5
	OpTimeout     uint8 = 11
	OpLinkTimeout uint8 = 15
	OpRead        uint8 = 22
	OpWrite       uint8 = 23
)

// Operation-specific flags (SQE.OpFlags).
const (
	// FsyncDatasync makes OpFsync an fdatasync.
	FsyncDatasync uint32 = 1 << 0
	// RWFDsync is RWF_DSYNC for read/write SQEs: the write is durable on completion.
	RWFDsync uint32 = 0x2
)

// CQE flags (CQE.Flags).
const (
	CQEFBuffer uint32 = 1 << 0 // buffer id in Flags>>16
	CQEFMore   uint32 = 1 << 1 // more CQEs will follow for this request
)

// mmap offsets and register opcodes.
const (
	offSQRing = 0
	offCQRing = 0x8000000
	offSQEs   = 0x10000000

	registerBuffers          = 0
	unregisterBuffers        = 1
	registerFiles            = 2
	unregisterFiles          = 3
	registerEventfd          = 4
	unregisterEventfd        = 5
	registerProbe            = 8
	registerRingFds          = 20
	unregisterRingFds        = 21
	probeOpSupported  uint16 = 1 << 0
	probeOps                 = 256
)

// SQE is one submission queue entry, laid out exactly as struct io_uring_sqe
// (64 bytes). GetSQE returns it zeroed; the Prep helpers fill it.
type SQE struct {
	Opcode      uint8
	Flags       uint8
	IoPrio      uint16
	Fd          int32  // fd, or registered-file index with SQEFixedFile
	Off         uint64 // file offset (or addr2 / timeout count)
	Addr        uint64 // data address (never a Go slice header's address)
	Len         uint32 // byte count, iovec count or timespec count
	OpFlags     uint32 // rw_flags, fsync_flags, timeout_flags, ...
	UserData    uint64 // returned verbatim in CQE.UserData; never a Go pointer
	BufIndex    uint16 // registered buffer index (fixed ops) or buffer group
	Personality uint16
	FileIndex   uint32
	Addr3       uint64
	_           uint64
}

// CQE is one completion queue entry (struct io_uring_cqe, 16 bytes). Res is
// the result or a negated errno.
type CQE struct {
	UserData uint64
	Res      int32
	Flags    uint32
}

// SQRingOffsets is struct io_sqring_offsets: byte offsets of the SQ ring's
// fields inside the mapped SQ ring.
type SQRingOffsets struct {
	Head, Tail, RingMask, RingEntries, Flags, Dropped, Array, Resv1 uint32
	UserAddr                                                        uint64
}

// CQRingOffsets is struct io_cqring_offsets: byte offsets of the CQ ring's
// fields inside the mapped CQ ring.
type CQRingOffsets struct {
	Head, Tail, RingMask, RingEntries, Overflow, CQEs, Flags, Resv1 uint32
	UserAddr                                                        uint64
}

// Params is struct io_uring_params (120 bytes). The caller sets Flags,
// CQEntries (with SetupCQSize), SQThreadCPU and SQThreadIdle (milliseconds);
// the kernel fills the rest.
type Params struct {
	SQEntries    uint32
	CQEntries    uint32
	Flags        uint32
	SQThreadCPU  uint32
	SQThreadIdle uint32
	Features     uint32
	WQFd         uint32
	Resv         [3]uint32
	SQOff        SQRingOffsets
	CQOff        CQRingOffsets
}

// Timespec is struct __kernel_timespec (always 64-bit fields).
type Timespec struct {
	Sec  int64
	Nsec int64
}

// getEventsArg is struct io_uring_getevents_arg, passed with IORING_ENTER_EXT_ARG.
type getEventsArg struct {
	Sigmask     uint64
	SigmaskSz   uint32
	MinWaitUsec uint32
	Ts          uint64
}

// rsrcUpdate is struct io_uring_rsrc_update (used for REGISTER_RING_FDS).
type rsrcUpdate struct {
	Offset uint32
	Resv   uint32
	Data   uint64
}

// ProbeOp is struct io_uring_probe_op.
type ProbeOp struct {
	Op    uint8
	_     uint8
	Flags uint16
	_     uint32
}

// Probe is struct io_uring_probe with room for every opcode.
type Probe struct {
	LastOp uint8 // highest opcode the kernel knows
	OpsLen uint8
	_      uint16
	_      [3]uint32
	Ops    [probeOps]ProbeOp
}

// Supported reports whether the kernel supports opcode op.
func (p *Probe) Supported(op uint8) bool {
	return op <= p.LastOp && p.Ops[op].Flags&probeOpSupported != 0
}

// Compile-time layout checks: a size drift is a build error.
var (
	_ [64]byte   = [unsafe.Sizeof(SQE{})]byte{}
	_ [16]byte   = [unsafe.Sizeof(CQE{})]byte{}
	_ [120]byte  = [unsafe.Sizeof(Params{})]byte{}
	_ [40]byte   = [unsafe.Sizeof(SQRingOffsets{})]byte{}
	_ [40]byte   = [unsafe.Sizeof(CQRingOffsets{})]byte{}
	_ [16]byte   = [unsafe.Sizeof(Timespec{})]byte{}
	_ [24]byte   = [unsafe.Sizeof(getEventsArg{})]byte{}
	_ [16]byte   = [unsafe.Sizeof(rsrcUpdate{})]byte{}
	_ [8]byte    = [unsafe.Sizeof(ProbeOp{})]byte{}
	_ [2064]byte = [unsafe.Sizeof(Probe{})]byte{}
)
