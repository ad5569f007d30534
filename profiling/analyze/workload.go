package analyze

import (
	"sort"
	"strings"

	"github.com/google/pprof/profile"
)

// The workload buckets, in report order.
const (
	BucketEC          = "ec"          // erasure coding (reedsolomon)
	BucketCRC         = "crc"         // checksums (crc32)
	BucketCompression = "compression" // compress/*, zstd, snappy, lz4, s2, minlz
	BucketNetwork     = "network"     // netio, gnet, sockets, the network poller
	BucketGC          = "gc"          // the garbage collector and its write barriers
	BucketUring       = "io_uring"    // io_uring submission and waits (nvme/uring)
	BucketSyscall     = "syscalls"    // other system calls
	BucketOther       = "other"
)

// Buckets lists the buckets in report order.
var Buckets = []string{BucketEC, BucketCRC, BucketCompression, BucketNetwork, BucketGC, BucketUring, BucketSyscall, BucketOther}

// BucketShare is one bucket of a workload analysis.
type BucketShare struct {
	Bucket  string  `json:"bucket"`
	Samples int64   `json:"samples"`
	Percent float64 `json:"percent"`
	// Top is the bucket's heaviest leaf functions (at most 3).
	Top []FunctionShare `json:"top,omitempty"`
}

// FunctionShare is a function's weight (as the leaf of samples).
type FunctionShare struct {
	Function string `json:"function"`
	Samples  int64  `json:"samples"`
}

// compute buckets are decided by the frame nearest the leaf.
var computeRules = []struct {
	bucket string
	subs   []string
}{
	{BucketEC, []string{"reedsolomon"}},
	{BucketCRC, []string{"hash/crc32", "crc32.", "crc32c"}},
	{BucketCompression, []string{"compress/", "klauspost/compress", "zstd", "snappy", "lz4", "minlz", "/s2."}},
	{BucketGC, []string{"runtime.gc", "runtime.mark", "runtime.scanobject", "runtime.scanblock", "runtime.scanstack", "runtime.greyobject",
		"runtime.findObject", "runtime.bgsweep", "runtime.sweepone", "runtime.(*mspan).sweep", "runtime.(*sweepLocked)", "runtime.bgscavenge",
		"runtime.wbBuf", "runtime.(*gcWork)", "runtime.gcWriteBarrier", "runtime.bulkBarrier"}},
}

// Where a system call is made from decides its bucket; these frames mark
// the io_uring and network paths.
var (
	uringSubs   = []string{"claudefs/nvme/uring.", "ioengine.(*uringEngine)"}
	networkSubs = []string{"panjf2000/gnet", "claudefs/netio.", "net.(*conn)", "net.(*netFD)", "internal/poll.", "runtime.netpoll"}
	syscallSubs = []string{"syscall.", "golang.org/x/sys/unix.", "internal/runtime/syscall", "runtime/internal/syscall", "runtime.futex", "runtime.usleep", "runtime.epollwait"}
)

func hasAny(s string, subs []string) bool {
	for _, sub := range subs {
		if strings.Contains(s, sub) {
			return true
		}
	}
	return false
}

// Classify buckets one stack (leaf first): the compute bucket of the frame
// nearest the leaf, else io_uring or network when such a frame is on the
// stack, else syscalls when the leaf side is a system call, else other.
func Classify(stack []string) string {
	inSyscall := false
	for _, fn := range stack {
		switch {
		case hasAny(fn, uringSubs):
			return BucketUring
		case hasAny(fn, networkSubs):
			return BucketNetwork
		case hasAny(fn, syscallSubs):
			inSyscall = true
			continue
		}
		if inSyscall {
			continue // a caller of a system call: only uring/network re-bucket it
		}
		for _, r := range computeRules {
			if hasAny(fn, r.subs) {
				return r.bucket
			}
		}
	}
	if inSyscall {
		return BucketSyscall
	}
	return BucketOther
}

// Workload buckets p's samples (see Classify); every bucket is listed, in
// Buckets' order, and the percentages add up to 100 (0 for an empty
// profile).
func Workload(p *profile.Profile) (out []BucketShare, total int64) {
	vi := valueIndex(p)
	by := map[string]int64{}
	leaves := map[string]map[string]int64{}
	for _, s := range p.Sample {
		if vi >= len(s.Value) || s.Value[vi] <= 0 {
			continue
		}
		v := s.Value[vi]
		f := frames(s)
		b := Classify(f)
		by[b] += v
		total += v
		if len(f) > 0 {
			if leaves[b] == nil {
				leaves[b] = map[string]int64{}
			}
			leaves[b][f[0]] += v
		}
	}
	for _, b := range Buckets {
		bs := BucketShare{Bucket: b, Samples: by[b]}
		if total > 0 {
			bs.Percent = 100 * float64(by[b]) / float64(total)
		}
		for fn, n := range leaves[b] {
			bs.Top = append(bs.Top, FunctionShare{Function: fn, Samples: n})
		}
		sort.Slice(bs.Top, func(i, j int) bool {
			if bs.Top[i].Samples != bs.Top[j].Samples {
				return bs.Top[i].Samples > bs.Top[j].Samples
			}
			return bs.Top[i].Function < bs.Top[j].Function
		})
		if len(bs.Top) > 3 {
			bs.Top = bs.Top[:3]
		}
		out = append(out, bs)
	}
	return out, total
}
