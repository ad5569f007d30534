package bench

import (
	"errors"
	"fmt"
	"io"
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
// 1 <= BlockSize <= MaxBlockSize; Size is 0 (the target's whole capacity, to
// be resolved by the target's OpenFunc) or >= BlockSize; Offset >= 0;
// TimeBased implies Runtime > 0.
type Spec struct {
	Name      string
	Target    string // the --target value, "KIND:ARG"
	Mode      Mode
	RWMixRead int   // percent of reads in mixed modes, 0..100
	BlockSize int   // bytes per I/O
	IODepth   int   // I/Os in flight per job
	NumJobs   int   // identical jobs, each over the whole [Offset, Offset+Size) range
	Size      int64 // bytes per job: the range covered and, without TimeBased, the bytes moved
	Offset    int64 // first byte of the range, bytes
	// Runtime caps the measured phase (0: no cap). With TimeBased the job
	// runs exactly this long, wrapping around the range.
	Runtime   time.Duration
	TimeBased bool
	// RampTime runs the workload this long before measuring; I/O done then
	// is neither reported nor counted against Size.
	RampTime time.Duration
	Engine   ioengine.Kind
	Output   Format
	Progress bool // print a progress line on stderr about once a second
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
	Name         string
	Target       string
	RW           string
	RWMixRead    int
	BS           string
	IODepth      int
	NumJobs      int
	Size         string
	Offset       string
	Runtime      string
	TimeBased    bool
	RampTime     string
	Direct       int
	IOEngine     string
	OutputFormat string
	Progress     bool
}

// Register defines the flags on fs with fio's names and defaults.
func (f *Flags) Register(fs *pflag.FlagSet) {
	fs.StringVar(&f.Target, "target", "", "what to benchmark, KIND:ARG (device:PATH: a file or block device through the I/O engine)")
	fs.StringVar(&f.Name, "name", "bench", "job name, as in fio's report")
	fs.StringVar(&f.RW, "rw", "read", "access pattern: read, write, randread, randwrite, randrw, readwrite (rw)")
	fs.IntVar(&f.RWMixRead, "rwmixread", 50, "percent of I/Os that are reads in randrw/readwrite, 0..100")
	fs.StringVar(&f.BS, "bs", "4k", "bytes per I/O (4k, 64k, 1m, 4096, 4KiB)")
	fs.IntVar(&f.IODepth, "iodepth", 1, fmt.Sprintf("I/Os kept in flight per job, 1..%d", MaxIODepth))
	fs.IntVar(&f.NumJobs, "numjobs", 1, fmt.Sprintf("identical jobs run in parallel, 1..%d", MaxNumJobs))
	fs.StringVar(&f.Size, "size", "", "bytes per job: the range covered and, without --time_based, the bytes moved (default: the whole target)")
	fs.StringVar(&f.Offset, "offset", "0", "first byte of the range")
	fs.StringVar(&f.Runtime, "runtime", "", "stop after this long (5, 30s, 2m); without --time_based a job also stops after --size bytes")
	fs.BoolVar(&f.TimeBased, "time_based", false, "run for exactly --runtime, wrapping around the range")
	fs.StringVar(&f.RampTime, "ramp_time", "0", "run this long before measuring")
	fs.IntVar(&f.Direct, "direct", 1, "1: O_DIRECT (the only mode supported)")
	fs.StringVar(&f.IOEngine, "ioengine", string(ioengine.Auto), "I/O engine for device targets: auto, io_uring, pread")
	fs.StringVar(&f.OutputFormat, "output-format", "normal", "report format: normal or json (json goes alone to stdout)")
	fs.BoolVar(&f.Progress, "progress", true, "print a progress line on stderr about once a second")
}

// Spec validates the flag values and returns the spec. Every error is a
// *UsageError naming the flag.
func (f *Flags) Spec() (*Spec, error) {
	s := &Spec{
		Name:      f.Name,
		Target:    f.Target,
		RWMixRead: f.RWMixRead,
		IODepth:   f.IODepth,
		NumJobs:   f.NumJobs,
		TimeBased: f.TimeBased,
		Progress:  f.Progress,
	}
	var err error
	switch {
	case s.Name == "" || len(s.Name) > maxNameLen || strings.IndexFunc(s.Name, unicode.IsControl) >= 0:
		return nil, Usagef("--name=%q: must be 1..%d printable characters", s.Name, maxNameLen)
	case s.Target == "":
		return nil, Usagef("--target is required, e.g. --target device:/tmp/cfs-bench.dat")
	case len(s.Target) > maxTargetLen || !strings.Contains(s.Target, ":"):
		return nil, Usagef("--target=%q: must be KIND:ARG, e.g. device:/tmp/cfs-bench.dat", s.Target)
	case f.Direct != 1:
		return nil, Usagef("--direct=%d: only --direct=1 is supported", f.Direct)
	case s.RWMixRead < 0 || s.RWMixRead > 100:
		return nil, Usagef("--rwmixread=%d: must be 0..100", s.RWMixRead)
	case s.IODepth < 1 || s.IODepth > MaxIODepth:
		return nil, Usagef("--iodepth=%d: must be 1..%d", s.IODepth, MaxIODepth)
	case s.NumJobs < 1 || s.NumJobs > MaxNumJobs:
		return nil, Usagef("--numjobs=%d: must be 1..%d", s.NumJobs, MaxNumJobs)
	}
	if s.Mode, err = ParseMode(f.RW); err != nil {
		return nil, Usagef("%v", err)
	}
	bs, err := ParseSize(f.BS)
	if err != nil {
		return nil, Usagef("--bs: %v", err)
	}
	if bs < 1 || bs > MaxBlockSize {
		return nil, Usagef("--bs=%s: must be 1 byte..%s", f.BS, formatBinary(MaxBlockSize))
	}
	s.BlockSize = int(bs)
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
	if s.Engine, err = ioengine.ParseKind(f.IOEngine); err != nil {
		return nil, Usagef("--ioengine=%q: must be auto, io_uring or pread", f.IOEngine)
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
