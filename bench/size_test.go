package bench

import (
	"strconv"
	"testing"
	"time"
)

func TestParseSize(t *testing.T) {
	good := []struct {
		in   string
		want int64
	}{
		{"0", 0}, {"4096", 4096}, {"4k", 4096}, {"4K", 4096}, {"4kb", 4096}, {"4KiB", 4096},
		{"1m", 1 << 20}, {"1M", 1 << 20}, {"1MiB", 1 << 20}, {"1G", 1 << 30}, {"2t", 2 << 40},
		{"1p", 1 << 50}, {"512b", 512}, {" 8k ", 8192}, {"1024P", 1 << 60},
	}
	for _, c := range good {
		got, err := ParseSize(c.in)
		if err != nil || got != c.want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", c.in, got, err, c.want)
		}
	}
	for _, in := range []string{"", "k", "-4k", "4x", "4kk", "4 k", "1.5m", "4kibb", "1025P", "99999999999999999999", "0x10", "4e3"} {
		if got, err := ParseSize(in); err == nil {
			t.Errorf("ParseSize(%q) = %d, want an error", in, got)
		}
	}
}

func TestParseDuration(t *testing.T) {
	good := []struct {
		in   string
		want time.Duration
	}{
		{"5", 5 * time.Second}, {"5s", 5 * time.Second}, {"2m", 2 * time.Minute}, {"1h", time.Hour},
		{"250ms", 250 * time.Millisecond}, {"10us", 10 * time.Microsecond}, {"0", 0}, {"7d", MaxDuration},
	}
	for _, c := range good {
		got, err := ParseDuration(c.in)
		if err != nil || got != c.want {
			t.Errorf("ParseDuration(%q) = %v, %v; want %v", c.in, got, err, c.want)
		}
	}
	for _, in := range []string{"", "s", "-1", "5x", "1.5s", "8d", "99999999999999999999"} {
		if got, err := ParseDuration(in); err == nil {
			t.Errorf("ParseDuration(%q) = %v, want an error", in, got)
		}
	}
}

// FuzzParseSize checks that ParseSize never panics, stays in [0, MaxSize],
// and agrees with a plain decimal rendering of its result.
func FuzzParseSize(f *testing.F) {
	for _, s := range []string{"4k", "1M", "4096", "4KiB", "1p", "", "x", "9223372036854775807", "1024P"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := ParseSize(s)
		if err != nil {
			return
		}
		if n < 0 || n > MaxSize {
			t.Fatalf("ParseSize(%q) = %d: outside [0, %d]", s, n, MaxSize)
		}
		if m, err := ParseSize(strconv.FormatInt(n, 10)); err != nil || m != n {
			t.Fatalf("ParseSize(%q) = %d but its decimal form parses to %d, %v", s, n, m, err)
		}
	})
}

// FuzzParseArgs feeds arbitrary values to the size, time and mode flags:
// parsing must never panic, and an accepted spec must keep its invariants.
func FuzzParseArgs(f *testing.F) {
	f.Add("4k", "1G", "5", "randread", "0")
	f.Add("1m", "", "2m", "rw", "4k")
	f.Add("0", "-1", "x", "bogus", "1p")
	f.Fuzz(func(t *testing.T, bs, size, runtime, rw, offset string) {
		args := []string{"--target=device:/x", "--bs=" + bs, "--runtime=" + runtime, "--rw=" + rw, "--offset=" + offset}
		if size != "" {
			args = append(args, "--size="+size)
		}
		s, err := ParseArgs(args)
		if err != nil {
			if !IsUsage(err) {
				t.Fatalf("ParseArgs(%q): %v is not a usage error", args, err)
			}
			return
		}
		if s.BlockSize < 1 || s.BlockSize > MaxBlockSize || (s.Size != 0 && s.Size < int64(s.BlockSize)) ||
			s.Offset < 0 || s.Offset+s.Size > MaxSize || s.Runtime < 0 {
			t.Fatalf("ParseArgs(%q) = %+v: invariants broken", args, s)
		}
	})
}
