package bench

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"runtime"
	"syscall"

	"github.com/claudefs/claudefs/nvme"
	"github.com/claudefs/claudefs/nvme/ioengine"
)

// deviceAlign is the alignment device targets require of --bs and --offset:
// the logical block size of every modern NVMe format and of ext4/xfs.
const deviceAlign = 4096

// maxDeviceBuffers bounds a device job's buffer region (up to 2 × iodepth × bs).
const maxDeviceBuffers = 1 << 30

func init() {
	RegisterTarget("device", "device:PATH  a file or block device: raw O_DIRECT I/O through the ClaudeFS I/O engine (a file is laid out when absent or short)", openDevice)
}

// deviceTarget runs each job the way fio's io_uring engine does: one
// goroutine locked to its OS thread with its own engine, exactly iodepth I/Os
// in flight, a refill per completion.
type deviceTarget struct {
	dev  *nvme.Device
	kind ioengine.Kind
	logf func(string, ...any)
	name string // engine chosen by the first job, for String
}

func openDevice(path string, spec *Spec, env *Env) (Target, error) {
	switch {
	case path == "":
		return nil, Usagef("--target=device:PATH: PATH is empty")
	case spec.BSSplit == nil && spec.BlockSize%deviceAlign != 0:
		return nil, Usagef("--bs=%d: a device target needs a multiple of %d", spec.BlockSize, deviceAlign)
	case spec.Align%deviceAlign != 0:
		return nil, Usagef("--bssplit: a device target needs every size to be a multiple of %d", deviceAlign)
	case spec.Offset%deviceAlign != 0:
		return nil, Usagef("--offset=%d: a device target needs a multiple of %d", spec.Offset, deviceAlign)
	case int64(bufferSlots(spec))*int64(spec.BlockSize) > maxDeviceBuffers:
		return nil, Usagef("--iodepth=%d × --bs=%d: a device job's buffers (one per I/O in flight and direction) are limited to %s",
			spec.IODepth, spec.BlockSize, formatBinary(maxDeviceBuffers))
	}
	opts := nvme.OpenOptions{}
	if spec.Size > 0 {
		opts.CreateSize = spec.Offset + spec.Size
		opts.Progress = env.LayoutProgress(path)
	} else if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		return nil, Usagef("--target=device:%s does not exist: pass --size to lay it out", path)
	}
	dev, err := nvme.Open(path, opts)
	if err != nil {
		return nil, err
	}
	if err := fitDevice(dev, spec); err != nil {
		dev.Close()
		return nil, err
	}
	return &deviceTarget{dev: dev, kind: spec.Engine, logf: env.Logf}, nil
}

// fitDevice checks spec against the opened device and resolves spec.Size.
func fitDevice(dev *nvme.Device, spec *Spec) error {
	bs := int64(dev.BlockSize())
	switch {
	case int64(spec.Align)%bs != 0:
		return Usagef("--bs=%d: %s has %d-byte blocks; use a multiple", spec.Align, dev.Path(), bs)
	case spec.Offset%bs != 0:
		return Usagef("--offset=%d: %s has %d-byte blocks; use a multiple", spec.Offset, dev.Path(), bs)
	case spec.Offset >= dev.Size():
		return Usagef("--offset=%d: %s holds only %d bytes", spec.Offset, dev.Path(), dev.Size())
	}
	if spec.Size == 0 {
		spec.Size = dev.Size() - spec.Offset
	}
	switch {
	case spec.Offset+spec.Size > dev.Size():
		return Usagef("--offset + --size = %d bytes: past the end of %s (%d bytes)", spec.Offset+spec.Size, dev.Path(), dev.Size())
	case spec.Size < int64(spec.BlockSize):
		return Usagef("--size=%d: below --bs=%d", spec.Size, spec.BlockSize)
	}
	return nil
}

func (t *deviceTarget) String() string {
	if t.name == "" {
		return "device:" + t.dev.Path()
	}
	return fmt.Sprintf("device:%s (%s)", t.dev.Path(), t.name)
}

func (t *deviceTarget) Close() error { return t.dev.Close() }

// RunJob locks the goroutine to its thread (for good: the engine's
// contract) and runs the job's I/O loop on its own engine.
func (t *deviceTarget) RunJob(job *Job) error {
	runtime.LockOSThread()
	w, err := job.NewWorker()
	if err != nil {
		return err
	}
	dj, err := t.openJob(job)
	if err != nil {
		return err
	}
	if job.Index == 0 {
		t.name = dj.eng.Name()
	}
	err = dj.loop.run(w)
	if err == nil && job.Spec.EndFsync && job.Writes() {
		err = dj.loop.syncNow(w)
	}
	job.EndMeasure()
	if err == nil && job.ReadBack() {
		err = t.readBack(job, w, dj.mem)
	}
	return errors.Join(err, dj.close())
}

// readBack reads what the job wrote, through the kernel (pread on the
// O_DIRECT descriptor) into buf, and checks it (verify=crc32c).
func (t *deviceTarget) readBack(job *Job, w *Worker, buf []byte) error {
	fd := t.dev.Fd()
	return readBackRuns(job, w, buf, func(b []byte, off int64) error { return preadFull(fd, b, off) })
}

// deviceJob is one job's engine, buffers and loop.
type deviceJob struct {
	eng  ioengine.Engine
	mem  []byte // bufferSlots × bs bytes from nvme.AllocAligned, registered as fixed buffer 0
	loop *deviceLoop
}

// bufferSlots is how many bs-byte buffers a device job has: iodepth that
// reads land in when the mode reads, and iodepth holding the write pattern
// when it writes, so reads never overwrite what writes send.
func bufferSlots(spec *Spec) int {
	n := 0
	if spec.Mode.Reads() {
		n += spec.IODepth
	}
	if spec.Mode.Writes() {
		n += spec.IODepth
	}
	return n
}

// openJob creates the calling thread's engine with the device as file 0 and
// its buffers (bufferSlots, read buffers first) as fixed buffer 0.
func (t *deviceTarget) openJob(job *Job) (*deviceJob, error) {
	spec := job.Spec
	eng, err := ioengine.New(spec.Engine, spec.IODepth, t.logf)
	if err != nil {
		return nil, fmt.Errorf("I/O engine %s: %w", spec.Engine, err)
	}
	readSlots := 0
	if spec.Mode.Reads() {
		readSlots = spec.IODepth
	}
	mem, err := nvme.AllocAligned(bufferSlots(spec) * spec.BlockSize)
	if err != nil {
		eng.Close()
		return nil, err
	}
	writes := mem[readSlots*spec.BlockSize : bufferSlots(spec)*spec.BlockSize]
	if len(writes) > 0 {
		fillPattern(writes[:spec.BlockSize])
		for off := spec.BlockSize; off < len(writes); off += spec.BlockSize {
			copy(writes[off:], writes[:spec.BlockSize])
		}
	}
	if err := eng.RegisterFiles([]int{t.dev.Fd()}); err != nil {
		eng.Close()
		nvme.FreeAligned(mem)
		return nil, fmt.Errorf("register %s with the I/O engine: %w", t.dev.Path(), err)
	}
	if err := eng.RegisterBuffers([][]byte{mem}); err != nil {
		eng.Close()
		nvme.FreeAligned(mem)
		return nil, fmt.Errorf("register %s of I/O buffers: %w", formatBinary(float64(len(mem))), err)
	}
	loop := newDeviceLoop(eng, mem, readSlots, spec.BlockSize, spec.IODepth)
	loop.syncData, loop.stamp = spec.SyncData, spec.Verify
	return &deviceJob{eng: eng, mem: mem, loop: loop}, nil
}

// close releases the engine and, unless I/O is still in flight after an
// engine failure (the kernel may yet write into it), the buffers.
func (d *deviceJob) close() error {
	err := d.eng.Close()
	if err != nil {
		err = fmt.Errorf("close I/O engine: %w", err)
	}
	if d.loop.inflight == 0 {
		nvme.FreeAligned(d.mem)
	}
	return err
}

// fillPattern fills buf (a multiple of 8 bytes long) with pseudo-random
// bytes, splitmix64 words from a fixed seed, so written data is neither
// zeros nor compressible and a test can recognise it.
func fillPattern(buf []byte) {
	state := uint64(0xc1a0de)
	for i := 0; i+8 <= len(buf); i += 8 {
		binary.LittleEndian.PutUint64(buf[i:], splitmix64(&state))
	}
}

// submitBatch is how many prepared I/Os one submission carries at most.
// Larger batches save io_uring_enter calls but hold the first I/Os of a
// batch back until the kernel has issued the whole batch (a few µs each in
// a VM: with 32 refills per enter, 4 KiB reads lost ~10% of their IOPS and
// spent 100 µs between queueing and submission). 4 measured best for 4 KiB
// reads at iodepth 32 and 128 and no worse for 1 MiB I/Os.
const submitBatch = 4

// deviceLoop keeps depth I/Os in flight on one engine. Slots index the
// per-I/O state and the bs-byte read and write buffers. It allocates
// nothing after newDeviceLoop.
type deviceLoop struct {
	eng      ioengine.Engine
	reads    []byte // depth × bs bytes that reads land in (empty when the mode only writes)
	writes   []byte // depth × bs bytes of the write pattern (empty when the mode only reads)
	bs       int    // bytes per slot: the largest I/O
	depth    int
	inflight int
	syncData bool         // syncs are fdatasync
	stamp    bool         // verify=crc32c: stamp each write's buffer
	op       *ioengine.Op // reused: Prepare takes a pointer, which would escape
	pending  bool         // op holds an I/O not yet prepared (queue full, or a sync waiting for the I/Os in flight)
	barrier  bool         // a sync is in flight: issue nothing until it completes
	free     []int32      // free slots
	batch    []int32      // slots prepared since the last submit
	issued   []int64      // per slot: Now() when queued, ns
	sub      []int64      // per slot: Now() after submission, ns
	io       []IO         // per slot: the I/O
	cqes     []ioengine.Completion
}

// newDeviceLoop takes readSlots (0 or depth) read buffers from the start
// of mem and the write buffers after them.
func newDeviceLoop(eng ioengine.Engine, mem []byte, readSlots, bs, depth int) *deviceLoop {
	l := &deviceLoop{
		eng: eng, bs: bs, depth: depth,
		reads:  mem[:readSlots*bs],
		writes: mem[readSlots*bs:],
		op:     &ioengine.Op{File: 0, BufIndex: 0},
		free:   make([]int32, depth),
		batch:  make([]int32, 0, depth),
		issued: make([]int64, depth),
		sub:    make([]int64, depth),
		io:     make([]IO, depth),
		cqes:   make([]ioengine.Completion, depth),
	}
	for i := range l.free {
		l.free[i] = int32(depth - 1 - i)
	}
	return l
}

// buf is slot s's buffer for io.
func (l *deviceLoop) buf(s int32, io IO) []byte {
	lo, hi := int(s)*l.bs, int(s)*l.bs+io.Len
	if io.Kind == IOWrite {
		return l.writes[lo:hi:hi]
	}
	return l.reads[lo:hi:hi]
}

// run issues the worker's I/Os until it reports the end, then waits for the
// ones in flight. On an I/O error it stops issuing and still drains;
// inflight is left > 0 only when the engine itself failed.
func (l *deviceLoop) run(w *Worker) error {
	var firstErr error
	stopping := false
	for {
		if !stopping {
			done, err := l.fill(w)
			if err != nil {
				firstErr = err
			}
			stopping = done || err != nil
		}
		if len(l.batch) > 0 {
			if err := l.submit(); err != nil {
				return errors.Join(firstErr, err)
			}
		}
		if l.inflight == 0 {
			if stopping {
				return firstErr
			}
			continue // the queue was full: prepare the held I/O again
		}
		n := l.eng.Reap(l.cqes)
		if n == 0 {
			if _, err := l.eng.Submit(1, 0); err != nil {
				return errors.Join(firstErr, fmt.Errorf("wait for completions: %w", err))
			}
			n = l.eng.Reap(l.cqes)
		}
		now := Now()
		for _, c := range l.cqes[:n] {
			s := int32(c.UserData)
			io := l.io[s]
			l.inflight--
			l.free = append(l.free, s)
			if io.Kind == IOSync {
				l.barrier = false
			}
			switch {
			case firstErr != nil:
			case c.Res != int32(io.Len):
				firstErr, stopping = ioError(io, c.Res), true
			default:
				if io.Verify {
					w.Check(l.buf(s, io), io.Off)
				}
				w.Complete(io, now-l.issued[s], now-l.sub[s])
			}
		}
	}
}

// ioError describes a failed or short I/O.
func ioError(io IO, res int32) error {
	what := "read"
	switch io.Kind {
	case IOWrite:
		what = "write"
	case IOSync:
		if res < 0 {
			return fmt.Errorf("sync: %w", syscall.Errno(-res))
		}
		return fmt.Errorf("sync: unexpected result %d", res)
	}
	if res < 0 {
		return fmt.Errorf("%s of %d bytes at offset %d: %w", what, io.Len, io.Off, syscall.Errno(-res))
	}
	return fmt.Errorf("%s of %d bytes at offset %d: short transfer of %d bytes", what, io.Len, io.Off, res)
}

// fill prepares I/Os (stamping their issue time), submitting every
// submitBatch, until depth are in flight, the engine's queue is full, a
// sync waits for the I/Os in flight or is itself in flight (the I/O drawn
// is held in op for the next fill), or the worker has nothing more (done).
// The caller submits the remainder.
func (l *deviceLoop) fill(w *Worker) (done bool, err error) {
	now := Now()
	for l.inflight < l.depth && !l.barrier {
		if !l.pending {
			io, ok := w.NextIO()
			if !ok {
				return true, nil
			}
			s := l.free[len(l.free)-1]
			l.free = l.free[:len(l.free)-1]
			l.io[s] = io
			l.setOp(s, io, w)
			l.pending = true
		}
		s := int32(l.op.UserData)
		sync := l.io[s].Kind == IOSync
		if sync && l.inflight > 0 {
			return false, nil // the sync covers the writes in flight: wait for them
		}
		if err := l.eng.Prepare(l.op); err != nil {
			if err == ioengine.ErrQueueFull {
				return false, nil
			}
			l.pending = false
			l.free = append(l.free, s)
			return true, fmt.Errorf("prepare I/O at offset %d: %w", l.io[s].Off, err)
		}
		l.pending = false
		l.issued[s] = now
		l.batch = append(l.batch, s)
		l.inflight++
		if sync {
			l.barrier = true
		}
		if len(l.batch) == submitBatch {
			if err := l.submit(); err != nil {
				return true, err
			}
			now = Now()
		}
	}
	return false, nil
}

// setOp describes io, in slot s, in l.op.
func (l *deviceLoop) setOp(s int32, io IO, w *Worker) {
	op := l.op
	op.UserData = uint64(s)
	op.Off, op.Flags = io.Off, 0
	switch io.Kind {
	case IOSync:
		op.Opcode, op.Buf, op.Off = ioengine.OpFsync, nil, 0
		if l.syncData {
			op.Flags = ioengine.FlagDatasync
		}
	case IOWrite:
		op.Opcode, op.Buf = ioengine.OpWrite, l.buf(s, io)
		if l.stamp {
			w.Stamp(op.Buf, io.Off)
		}
	default:
		op.Opcode, op.Buf = ioengine.OpRead, l.buf(s, io)
	}
}

// syncNow syncs the device once, with nothing else in flight, and records
// it (end_fsync).
func (l *deviceLoop) syncNow(w *Worker) error {
	s := l.free[len(l.free)-1]
	io := IO{Kind: IOSync}
	l.io[s] = io
	l.setOp(s, io, w)
	start := Now()
	if err := l.eng.Prepare(l.op); err != nil {
		return fmt.Errorf("end_fsync: %w", err)
	}
	l.inflight++
	if _, err := l.eng.Submit(1, 0); err != nil {
		return fmt.Errorf("end_fsync: %w", err)
	}
	sub := Now()
	for {
		if n := l.eng.Reap(l.cqes[:1]); n == 1 {
			l.inflight--
			if res := l.cqes[0].Res; res != 0 {
				return fmt.Errorf("end_fsync: %w", ioError(io, res))
			}
			now := Now()
			w.Complete(io, now-start, now-sub)
			return nil
		}
		if _, err := l.eng.Submit(1, 0); err != nil {
			return fmt.Errorf("end_fsync: wait for completion: %w", err)
		}
	}
}

// submit starts the prepared I/Os and stamps their submission time.
func (l *deviceLoop) submit() error {
	if _, err := l.eng.Submit(0, 0); err != nil {
		return fmt.Errorf("submit: %w", err)
	}
	now := Now()
	for _, s := range l.batch {
		l.sub[s] = now
	}
	l.batch = l.batch[:0]
	return nil
}
