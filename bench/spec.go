package bench

import (
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/claudefs/claudefs/nvme/ioengine"
	"github.com/spf13/pflag"
)

// Limits on a job spec. Each is checked by Flags.Spec.
const (
	MaxIODepth   = 1024     // --iodepth upper bound
	MaxNumJobs   = 64       // --numjobs upper bound
	MaxBlockSize = 64 << 20 // --bs upper bound, bytes
	maxNameLen   = 256      // --name length bound, bytes
	maxTargetLen = 4096     // --target length bound, bytes
)

// Mode is the access pattern of a job (fio's --rw).
type Mode uint8

// The access patterns; the names are fio's.
const (
	ModeRead      Mode = iota // sequential reads ("read")
	ModeWrite                 // sequential writes ("write")
	ModeRandRead              // uniformly random reads ("randread")
	ModeRandWrite             // uniformly random writes ("randwrite")
	ModeRandRW                // random reads and writes mixed by RWMixRead ("randrw")
	ModeReadWrite             // sequential reads and writes mixed by RWMixRead ("readwrite", "rw")
)

var modeNames = [...]string{"read", "write", "randread", "randwrite", "randrw", "readwrite"}

func (m Mode) String() string {
	if int(m) < len(modeNames) {
		return modeNames[m]
	}
	return fmt.Sprintf("Mode(%d)", m)
}

// ParseMode parses fio's --rw values; "rw" is accepted for "readwrite".
func ParseMode(s string) (Mode, error) {
	if s == "rw" {
		return ModeReadWrite, nil
	}
	for i, n := range modeNames {
		if s == n {
			return Mode(i), nil
		}
	}
	return 0, fmt.Errorf("--rw=%q: must be one of read, write, randread, randwrite, randrw, readwrite (rw)", s)
}

// Reads reports whether the mode issues reads.
func (m Mode) Reads() bool { return m != ModeWrite && m != ModeRandWrite }

// Writes reports whether the mode issues writes.
func (m Mode) Writes() bool { return m != ModeRead && m != ModeRandRead }

// Random reports whether offsets are drawn at random rather than walked in order.
func (m Mode) Random() bool { return m == ModeRandRead || m == ModeRandWrite || m == ModeRandRW }

// Mixed reports whether reads and writes are mixed by RWMixRead.
func (m Mode) Mixed() bool { return m == ModeRandRW || m == ModeReadWrite }

// Format is the report format (--output-format).
type Format uint8

// The report formats.
const (
	FormatNormal Format = iota // fio's human-readable summary
	FormatJSON                 // fio's JSON document
)

// Spec is one validated benchmark: numjobs identical jobs run against one
// target. Invariants (established by Flags.Spec): Name is non-empty; Target
// is "KIND:ARG"; 1 <= IODepth <= MaxIODepth; 1 <= NumJobs <= MaxNumJobs;
// 1 <= BlockSize <= MaxBlockSize; Align divides BlockSize and every BSSplit
// size; Size is 0 (the target's whole capacity, to be resolved by the
// target's OpenFunc) or >= BlockSize; Offset >= 0; TimeBased implies
// Runtime > 0; SyncEvery >= 0.
type Spec struct {
	Name      string
	Target    string // the --target value, "KIND:ARG"
	Mode      Mode
	RWMixRead int // percent of reads in mixed modes, 0..100
	// BlockSize is the bytes of every I/O, or with BSSplit the largest
	// size of the split (what a buffer must hold).
	BlockSize int
	// BSSplit weights several block sizes (fio's bssplit); nil: every I/O
	// is BlockSize bytes.
	BSSplit []BSWeight
	// Align is what I/O offsets (from Offset) and lengths are multiples of:
	// BlockSize, or with BSSplit the greatest common divisor of its sizes.
	// It is also the unit verify=crc32c stamps.
	Align   int
	IODepth int   // I/Os in flight per job
	NumJobs int   // identical jobs, each over the whole [Offset, Offset+Size) range
	Size    int64 // bytes per job: the range covered and, without TimeBased, the bytes moved
	Offset  int64 // first byte of the range, bytes
	// Runtime caps the measured phase (0: no cap). With TimeBased the job
	// runs exactly this long, wrapping around the range.
	Runtime   time.Duration
	TimeBased bool
	// RampTime runs the workload this long before measuring; I/O done then
	// is neither reported nor counted against Size.
	RampTime time.Duration
	// SyncEvery > 0 makes a job sync the target after every SyncEvery
	// writes (fio's fsync=N, or fdatasync=N when SyncData): the sync waits
	// for the writes in flight, and no I/O is issued until it completes.
	SyncEvery int
	SyncData  bool
	// Buffered is --direct=0: I/O through the page cache (a dir: target
	// only; every other target does O_DIRECT).
	Buffered bool
	// EndFsync syncs the target once a job's writes are done, within its
	// measured runtime (fio's end_fsync).
	EndFsync bool
	// Verify stamps every Align bytes written with a CRC32C-checked header
	// and checks reads against it (fio's verify=crc32c); a job that writes
	// reads back what it wrote once it ends. A mismatch fails the run.
	Verify bool
	// NoRandomMap draws random offsets uniformly with replacement (fio's
	// norandommap); by default a random job visits every block once per
	// pass over the range, in a pseudo-random order, as fio's random map
	// makes it. With a bssplit offsets are always drawn with replacement.
	NoRandomMap bool
	// GroupReporting reports the NumJobs jobs as one, summed (fio's
	// group_reporting).
	GroupReporting bool
	Engine         ioengine.Kind
	Output         Format
	Progress       bool // print a progress line on stderr about once a second

	// GroupID is the job's reporting group: its section's place in the
	// job file (sections run one after another, each its own group).
	GroupID int
	// GlobalOptions and JobOptions are the options as written that made
	// this spec, for the report: command-line options and [global]
	// sections, and the job's own section.
	GlobalOptions []Option
	JobOptions    []Option
	// Notes are remarks for stderr about how options were taken (an engine
	// mapped onto another, a file name overridden by --target).
	Notes []string
}

// BSWeight is one entry of a block-size split: Percent of the I/Os are Size
// bytes.
type BSWeight struct {
	Size    int
	Percent int
}

// UsageError is a problem with the command line: a bad flag value, an
// unsupported target. Commands exit with status 2 on it.
type UsageError struct{ msg string }

func (e *UsageError) Error() string { return e.msg }

// Usagef returns a *UsageError; target OpenFuncs use it for spec values
// they cannot run (an unaligned --bs, a --size past a block device's end).
func Usagef(format string, args ...any) error {
	return &UsageError{msg: fmt.Sprintf(format, args...)}
}

// IsUsage reports whether err is or wraps a *UsageError.
func IsUsage(err error) bool {
	var u *UsageError
	return errors.As(err, &u)
}

// Flags holds the raw values of fio's flags, as typed, until Spec validates
// them. Sizes and times are strings because they use fio's unit syntax.
type Flags struct {
	Name           string
	Target         string
	RW             string
	RWMixRead      int
	BS             string
	IODepth        int
	NumJobs        int
	Size           string
	Offset         string
	Runtime        string
	TimeBased      bool
	RampTime       string
	Direct         int
	IOEngine       string
	OutputFormat   string
	Progress       bool
	BSSplit        string
	Fsync          int
	Fdatasync      int
	EndFsync       bool
	Verify         string
	Filename       string
	Directory      string
	GroupReporting bool
	NoRandomMap    bool
}

// Register defines the flags on fs with fio's names and defaults.
func (f *Flags) Register(fs *pflag.FlagSet) {
	fs.StringVar(&f.Target, "target", "", "what to benchmark, KIND:ARG (device:PATH: a file or block device through the I/O engine); KIND: alone takes ARG from --filename")
	fs.StringVar(&f.Name, "name", "bench", "job name, as in fio's report (a job file names its jobs by their sections)")
	fs.StringVar(&f.RW, "rw", "read", "access pattern: read, write, randread, randwrite, randrw, readwrite (rw)")
	fs.IntVar(&f.RWMixRead, "rwmixread", 50, "percent of I/Os that are reads in randrw/readwrite, 0..100")
	fs.StringVar(&f.BS, "bs", "4k", "bytes per I/O (4k, 64k, 1m, 4096, 4KiB)")
	fs.StringVar(&f.BSSplit, "bssplit", "", "weighted block sizes, SIZE/PERCENT:SIZE/PERCENT (4k/10:64k/50:32k/40; a blank percent shares what is left); overrides --bs")
	fs.IntVar(&f.IODepth, "iodepth", 1, fmt.Sprintf("I/Os kept in flight per job, 1..%d", MaxIODepth))
	fs.IntVar(&f.NumJobs, "numjobs", 1, fmt.Sprintf("identical jobs run in parallel, 1..%d", MaxNumJobs))
	fs.StringVar(&f.Size, "size", "", "bytes per job: the range covered and, without --time_based, the bytes moved (default: the whole target)")
	fs.StringVar(&f.Offset, "offset", "0", "first byte of the range")
	fs.StringVar(&f.Runtime, "runtime", "", "stop after this long (5, 30s, 2m); without --time_based a job also stops after --size bytes")
	fs.BoolVar(&f.TimeBased, "time_based", false, "run for exactly --runtime, wrapping around the range")
	fs.StringVar(&f.RampTime, "ramp_time", "0", "run this long before measuring")
	fs.IntVar(&f.Direct, "direct", 1, "1: O_DIRECT (the only mode supported)")
	fs.IntVar(&f.Fsync, "fsync", 0, "sync the target (fsync) after every N writes, waiting for the writes in flight first; 0: never")
	fs.IntVar(&f.Fdatasync, "fdatasync", 0, "like --fsync with fdatasync")
	fs.BoolVar(&f.EndFsync, "end_fsync", false, "fsync the target when a job's writes are done (within its runtime)")
	fs.StringVar(&f.Verify, "verify", "", "crc32c: stamp written blocks with a CRC32C header, check every read of them, read back what a writing job wrote; any mismatch fails the run")
	fs.StringVar(&f.IOEngine, "ioengine", string(ioengine.Auto), "I/O engine for device targets: auto, io_uring, pread; fio's libaio runs as auto, psync/sync/pvsync/pvsync2 as pread with iodepth=1")
	fs.StringVar(&f.Filename, "filename", "", "the file or device: the ARG of --target when --target is absent (device:) or only KIND:")
	fs.StringVar(&f.Directory, "directory", "", "directory a relative --filename is in")
	fs.BoolVar(&f.GroupReporting, "group_reporting", false, "report the --numjobs jobs as one, summed")
	fs.BoolVar(&f.NoRandomMap, "norandommap", false, "draw random offsets with replacement; by default a random job visits every block once per pass, in a random order")
	fs.StringVar(&f.OutputFormat, "output-format", "normal", "report format: normal or json (json goes alone to stdout)")
	fs.BoolVar(&f.Progress, "progress", true, "print a progress line on stderr about once a second")
}

// DefaultFlags returns the flags' default values, as Register sets them.
func DefaultFlags() Flags {
	var f Flags
	f.Register(pflag.NewFlagSet("defaults", pflag.ContinueOnError))
	return f
}

// MaxSyncEvery bounds --fsync and --fdatasync.
const MaxSyncEvery = 1 << 30

// Spec validates the flag values and returns the spec. Every error is a
// *UsageError naming the flag.
func (f *Flags) Spec() (*Spec, error) {
	s := &Spec{
		Name:           f.Name,
		RWMixRead:      f.RWMixRead,
		IODepth:        f.IODepth,
		NumJobs:        f.NumJobs,
		TimeBased:      f.TimeBased,
		EndFsync:       f.EndFsync,
		GroupReporting: f.GroupReporting,
		NoRandomMap:    f.NoRandomMap,
		Progress:       f.Progress,
	}
	var err error
	if s.Target, err = f.target(s); err != nil {
		return nil, err
	}
	switch {
	case s.Name == "" || len(s.Name) > maxNameLen || strings.IndexFunc(s.Name, unicode.IsControl) >= 0:
		return nil, Usagef("--name=%q: must be 1..%d printable characters", s.Name, maxNameLen)
	case f.Direct != 1 && (f.Direct != 0 || !strings.HasPrefix(s.Target, "dir:")):
		return nil, Usagef("--direct=%d: only --direct=1 is supported (a dir: target also does buffered I/O, --direct=0)", f.Direct)
	case s.RWMixRead < 0 || s.RWMixRead > 100:
		return nil, Usagef("--rwmixread=%d: must be 0..100", s.RWMixRead)
	case s.IODepth < 1 || s.IODepth > MaxIODepth:
		return nil, Usagef("--iodepth=%d: must be 1..%d", s.IODepth, MaxIODepth)
	case s.NumJobs < 1 || s.NumJobs > MaxNumJobs:
		return nil, Usagef("--numjobs=%d: must be 1..%d", s.NumJobs, MaxNumJobs)
	case f.Fsync < 0 || f.Fsync > MaxSyncEvery:
		return nil, Usagef("--fsync=%d: must be 0..%d", f.Fsync, MaxSyncEvery)
	case f.Fdatasync < 0 || f.Fdatasync > MaxSyncEvery:
		return nil, Usagef("--fdatasync=%d: must be 0..%d", f.Fdatasync, MaxSyncEvery)
	case f.Fsync > 0 && f.Fdatasync > 0:
		return nil, Usagef("--fsync=%d and --fdatasync=%d: give one of them", f.Fsync, f.Fdatasync)
	}
	s.Buffered = f.Direct == 0
	s.SyncEvery, s.SyncData = f.Fsync, false
	if f.Fdatasync > 0 {
		s.SyncEvery, s.SyncData = f.Fdatasync, true
	}
	if s.Mode, err = ParseMode(f.RW); err != nil {
		return nil, Usagef("%v", err)
	}
	if err := f.blockSizes(s); err != nil {
		return nil, err
	}
	bs := int64(s.BlockSize)
	if f.Size != "" {
		if s.Size, err = ParseSize(f.Size); err != nil {
			return nil, Usagef("--size: %v", err)
		}
		if s.Size < bs {
			return nil, Usagef("--size=%s: must be at least --bs (%d bytes)", f.Size, bs)
		}
	}
	if s.Offset, err = ParseSize(f.Offset); err != nil {
		return nil, Usagef("--offset: %v", err)
	}
	if s.Offset+s.Size > MaxSize {
		return nil, Usagef("--offset + --size: larger than the limit of %d bytes", MaxSize)
	}
	if f.Runtime != "" {
		if s.Runtime, err = ParseDuration(f.Runtime); err != nil {
			return nil, Usagef("--runtime: %v", err)
		}
	}
	if s.TimeBased && s.Runtime <= 0 {
		return nil, Usagef("--time_based needs a positive --runtime")
	}
	if s.RampTime, err = ParseDuration(f.RampTime); err != nil {
		return nil, Usagef("--ramp_time: %v", err)
	}
	switch strings.ToLower(f.Verify) {
	case "", "0":
	case "crc32c", "crc32c-intel":
		s.Verify = true
		if s.Align < minVerifyUnit {
			return nil, Usagef("--verify=%s: stamps every %d bytes (the block size, or the largest size dividing every --bssplit size); it needs at least %d", f.Verify, s.Align, minVerifyUnit)
		}
		if units := s.Size / int64(s.Align); s.Mode.Writes() && units > maxVerifyUnits {
			return nil, Usagef("--verify=%s: a writing job remembers which of its %d-byte units it wrote, at most %d of them; --size=%s has %d", f.Verify, s.Align, maxVerifyUnits, f.Size, units)
		}
	default:
		return nil, Usagef("--verify=%q: only crc32c (or its synonym crc32c-intel) is supported", f.Verify)
	}
	if err := f.engine(s); err != nil {
		return nil, err
	}
	switch f.OutputFormat {
	case "normal":
		s.Output = FormatNormal
	case "json":
		s.Output = FormatJSON
	default:
		return nil, Usagef("--output-format=%q: must be normal or json", f.OutputFormat)
	}
	return s, nil
}

// target resolves the target from --target, --filename and --directory:
// a --target with an ARG wins; a --target of only "KIND:" takes the file
// name as ARG; without --target the file name is a device.
func (f *Flags) target(s *Spec) (string, error) {
	file := f.Filename
	switch {
	case len(file) > maxTargetLen || strings.IndexFunc(file, unicode.IsControl) >= 0:
		return "", Usagef("--filename=%q: must be at most %d printable characters", file, maxTargetLen)
	case len(f.Directory) > maxTargetLen || strings.IndexFunc(f.Directory, unicode.IsControl) >= 0:
		return "", Usagef("--directory=%q: must be at most %d printable characters", f.Directory, maxTargetLen)
	}
	if file != "" && f.Directory != "" && !filepath.IsAbs(file) {
		file = filepath.Join(f.Directory, file)
	}
	t := f.Target
	switch {
	case len(t) > maxTargetLen:
		return "", Usagef("--target: longer than %d bytes", maxTargetLen)
	case t != "" && !strings.Contains(t, ":"):
		return "", Usagef("--target=%q: must be KIND:ARG (or KIND: with --filename), e.g. device:/tmp/cfs-bench.dat", t)
	case t == "" && file == "" && f.Directory != "":
		return "", Usagef("--directory without --filename: fio would make up a file per job there; cfs bench needs --filename (one file for all of a job's --numjobs)")
	case t == "" && file == "":
		return "", Usagef("--target is required, e.g. --target device:/tmp/cfs-bench.dat (or --filename, or filename= in a job file)")
	}
	kind, arg, _ := strings.Cut(t, ":")
	if t == "" {
		kind = "device"
	}
	if arg != "" {
		if file != "" && file != arg {
			s.Notes = append(s.Notes, fmt.Sprintf("--target %s overrides filename=%s", t, file))
		}
		return t, nil
	}
	if file == "" {
		return "", Usagef("--target=%s: no ARG; give KIND:ARG, or --filename (filename= in a job file)", t)
	}
	if strings.Contains(file, ":") && kind != "dataplane" {
		return "", Usagef("--filename=%q: fio's list of several files (a:b) is not supported; give one file", file)
	}
	return kind + ":" + file, nil
}

// blockSizes validates --bs or --bssplit and sets BlockSize, BSSplit and
// Align.
func (f *Flags) blockSizes(s *Spec) error {
	if f.BSSplit != "" {
		split, err := ParseBSSplit(f.BSSplit)
		if err != nil {
			return Usagef("--bssplit=%s: %v", f.BSSplit, err)
		}
		s.BSSplit = split
		for _, w := range split {
			s.BlockSize = max(s.BlockSize, w.Size)
			s.Align = gcd(s.Align, w.Size)
		}
		return nil
	}
	bs, err := ParseSize(f.BS)
	if err != nil {
		return Usagef("--bs: %v", err)
	}
	if bs < 1 || bs > MaxBlockSize {
		return Usagef("--bs=%s: must be 1 byte..%s", f.BS, formatBinary(MaxBlockSize))
	}
	s.BlockSize, s.Align = int(bs), int(bs)
	return nil
}

func gcd(a, b int) int {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}

// maxSplitEntries is how many sizes a --bssplit may weight (fio's limit).
const maxSplitEntries = 64

// ParseBSSplit parses fio's bssplit: SIZE/PERCENT entries separated by ':'.
// Entries with a blank percent share what the others leave of 100 evenly
// (the first ones get one more when it does not divide); the percentages
// must then add up to exactly 100. fio's separate read/write splits
// (a comma) are not supported.
func ParseBSSplit(s string) ([]BSWeight, error) {
	if strings.Contains(s, ",") {
		return nil, errors.New("separate splits for reads and writes (a comma) are not supported")
	}
	parts := strings.Split(s, ":")
	if len(parts) > maxSplitEntries {
		return nil, fmt.Errorf("%d sizes: at most %d", len(parts), maxSplitEntries)
	}
	out := make([]BSWeight, 0, len(parts))
	sum, blanks := 0, 0
	for _, p := range parts {
		sz, pct, _ := strings.Cut(p, "/")
		n, err := ParseSize(sz)
		if err != nil {
			return nil, err
		}
		if n < 1 || n > MaxBlockSize {
			return nil, fmt.Errorf("size %q: must be 1 byte..%s", sz, formatBinary(MaxBlockSize))
		}
		w := BSWeight{Size: int(n), Percent: -1}
		if pct = strings.TrimSpace(pct); pct != "" {
			v, err := strconv.Atoi(pct)
			if err != nil || v < 0 || v > 100 {
				return nil, fmt.Errorf("%q: the percent must be 0..100", p)
			}
			w.Percent = v
			sum += v
		} else {
			blanks++
		}
		out = append(out, w)
	}
	if sum > 100 {
		return nil, fmt.Errorf("the percentages add up to %d, more than 100", sum)
	}
	if blanks == 0 && sum != 100 {
		return nil, fmt.Errorf("the percentages add up to %d, not 100", sum)
	}
	left := 100 - sum
	for i := range out {
		if out[i].Percent < 0 {
			out[i].Percent = left / blanks
			if left%blanks > 0 {
				out[i].Percent++
				left--
			}
		}
	}
	return out, nil
}

// engine maps --ioengine onto ours: fio's libaio (the kernel's older
// asynchronous interface) runs as auto (io_uring where the kernel allows
// it); fio's synchronous engines run as pread with one I/O in flight, which
// is what they do whatever iodepth says.
func (f *Flags) engine(s *Spec) error {
	name := strings.ToLower(strings.TrimSpace(f.IOEngine))
	switch name {
	case "libaio":
		s.Engine = ioengine.Auto
		s.Notes = append(s.Notes, "ioengine=libaio: cfs bench has no libaio engine; it runs io_uring, the kernel's other asynchronous interface (pread where io_uring is unavailable)")
		return nil
	case "psync", "sync", "pvsync", "pvsync2":
		s.Engine = ioengine.Pread
		if s.IODepth > 1 {
			s.Notes = append(s.Notes, fmt.Sprintf("ioengine=%s is synchronous: one I/O in flight per job, as fio does whatever iodepth=%d says (cfs bench runs its pread engine)", name, s.IODepth))
			s.IODepth = 1
		}
		return nil
	}
	k, err := ioengine.ParseKind(name)
	if err != nil {
		return Usagef("--ioengine=%q: must be auto, io_uring or pread (fio's libaio, psync, sync, pvsync and pvsync2 are also taken)", f.IOEngine)
	}
	s.Engine = k
	return nil
}

// ParseArgs parses fio-style arguments (e.g. "--rw=randread", "--bs", "4k")
// into a validated spec. Commands register Flags on their own flag set
// instead; this is the same parse for callers without one.
func ParseArgs(args []string) (*Spec, error) {
	var f Flags
	fs := pflag.NewFlagSet("bench", pflag.ContinueOnError)
	fs.SetOutput(io.Discard)
	f.Register(fs)
	if err := fs.Parse(args); err != nil {
		return nil, Usagef("%v", err)
	}
	if fs.NArg() > 0 {
		return nil, Usagef("unexpected argument %q: every option is a --flag", fs.Arg(0))
	}
	return f.Spec()
}
