package analyze

import (
	"bytes"
	"compress/gzip"
	"context"
	"hash/crc32"
	"runtime/pprof"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/claudefs/claudefs/profiling"
)

// burn spins computing CRCs until stop, labelled core=core.
func burn(core string, stop <-chan struct{}, wg *sync.WaitGroup) {
	defer wg.Done()
	pprof.Do(context.Background(), pprof.Labels("core", core), func(context.Context) {
		buf := make([]byte, 64<<10)
		for {
			select {
			case <-stop:
				return
			default:
			}
			crc32.Checksum(buf, crc32.MakeTable(crc32.Castagnoli))
		}
	})
}

// TestKeepLabel profiles two goroutines labelled core 0 and core 1 and
// keeps core 1's samples only.
func TestKeepLabel(t *testing.T) {
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(2)
	go burn("0", stop, &wg)
	go burn("1", stop, &wg)
	b, err := profiling.CPU(context.Background(), time.Second, 1<<20)
	close(stop)
	wg.Wait()
	if err != nil {
		t.Fatal(err)
	}
	p, err := Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	if got := LabelValues(p, "core"); len(got) != 2 || got[0] != "0" || got[1] != "1" {
		t.Fatalf("core labels %v, want [0 1]", got)
	}
	all := Total(p)
	p, kept := KeepLabel(p, "core", "1")
	if kept == 0 || Total(p) >= all {
		t.Fatalf("kept %d samples weighing %d of %d", kept, Total(p), all)
	}
	for _, s := range p.Sample {
		if v := s.Label["core"]; len(v) != 1 || v[0] != "1" {
			t.Fatalf("a sample labelled %v survived --core 1", s.Label)
		}
	}
	if !ContainsFunction(p, "hash/crc32") {
		t.Error("the CRC burner's frames are missing")
	}
	wl, total := Workload(p)
	if total != Total(p) {
		t.Fatalf("workload total %d, profile %d", total, Total(p))
	}
	var sum float64
	for _, b := range wl {
		sum += b.Percent
		if b.Bucket == BucketCRC && b.Percent < 50 {
			t.Errorf("CRC burner: crc bucket %.1f%%, want most of it: %+v", b.Percent, wl)
		}
	}
	if sum < 99.99 || sum > 100.01 || len(wl) != len(Buckets) {
		t.Errorf("buckets %+v add to %.2f%%", wl, sum)
	}
	folded := Folded(p)
	if len(folded) == 0 || len(folded[0].Stack) == 0 {
		t.Fatal("nothing folded")
	}
	if KeepLabel(p, "core", "7"); len(p.Sample) != 0 {
		t.Error("an absent core kept samples")
	}
}

func TestClassify(t *testing.T) {
	for _, c := range []struct {
		stack []string // leaf first
		want  string
	}{
		{[]string{"github.com/klauspost/reedsolomon.galMulSlicesAvx2", "main.encode"}, BucketEC},
		{[]string{"hash/crc32.castagnoliSSE42", "github.com/claudefs/claudefs/netio.decode"}, BucketCRC},
		{[]string{"github.com/klauspost/compress/zstd.(*Encoder).EncodeAll"}, BucketCompression},
		{[]string{"runtime.scanobject", "runtime.gcDrain", "runtime.gcBgMarkWorker"}, BucketGC},
		{[]string{"internal/runtime/syscall.Syscall6", "syscall.Syscall6", "github.com/claudefs/claudefs/nvme/uring.(*Ring).enter",
			"github.com/claudefs/claudefs/nvme/uring.(*Ring).Submit"}, BucketUring},
		{[]string{"internal/runtime/syscall.Syscall6", "syscall.write", "github.com/panjf2000/gnet/v2.(*conn).Write"}, BucketNetwork},
		{[]string{"internal/runtime/syscall/linux.Syscall6", "os.(*File).ReadAt"}, BucketSyscall},
		// a system call under a CRC caller is still a system call
		{[]string{"syscall.write", "hash/crc32.Update"}, BucketSyscall},
		{[]string{"runtime.memmove", "main.main"}, BucketOther},
		{nil, BucketOther},
	} {
		if got := Classify(c.stack); got != c.want {
			t.Errorf("Classify(%v) = %s, want %s", c.stack, got, c.want)
		}
	}
}

func TestDecodeRefuses(t *testing.T) {
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write([]byte("not a profile"))
	zw.Close()
	for _, c := range []struct {
		name string
		b    []byte
		want string
	}{
		{"empty", nil, "empty"},
		{"huge", make([]byte, MaxProfileBytes+1), "at most"},
		{"garbage", []byte("\x1f\x8bxx"), "bad gzip"},
		{"not pprof", gz.Bytes(), "not a pprof profile"},
	} {
		if _, err := Decode(c.b); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want an error with %q", c.name, err, c.want)
		}
	}
}

const perfScript = `cfs 14112 [001]   283.724921:    2004008 cpu-clock:ppp: 
	          167158 __strcmp_evex+0x38 (/usr/lib/x86_64-linux-gnu/libc.so.6)
	            e18f [unknown] (/usr/bin/dash)
	    7ffff4e58840 [unknown] ([unknown])

cfs 14112 [001]   283.726895:    2004008 cpu-clock:ppp: 
	          167158 __strcmp_evex+0x38 (/usr/lib/x86_64-linux-gnu/libc.so.6)
	            e18f [unknown] (/usr/bin/dash)
	    7ffff4e58840 [unknown] ([unknown])

kworker/0:1 12/12   283.730927:    2004008 cpu-clock:ppp: 
	ffffffff8100 native_safe_halt+0xe ([kernel.kallsyms])

swapper     0 [000]   283.9:    2004008 cpu-clock:ppp: 
`

func TestParsePerfScript(t *testing.T) {
	s, err := ParsePerfScript(strings.NewReader(perfScript))
	if err != nil {
		t.Fatal(err)
	}
	if len(s) != 3 {
		t.Fatalf("%d stacks, want 3: %+v", len(s), s)
	}
	if got := strings.Join(s[0].Stack, ";"); got != "cfs;[unknown];[/usr/bin/dash];__strcmp_evex" || s[0].Value != 2 {
		t.Errorf("first stack %q ×%d", got, s[0].Value)
	}
	if got := strings.Join(s[1].Stack, ";"); got != "kworker/0:1;native_safe_halt" {
		t.Errorf("second stack %q", got)
	}
	if got := strings.Join(s[2].Stack, ";"); got != "swapper" {
		t.Errorf("a sample without a chain: %q", got)
	}
	long := "x 1 1.0: 1 cpu-clock:\n\t" + strings.Repeat("a", maxPerfLine+1) + "\n"
	if _, err := ParsePerfScript(strings.NewReader(long)); err == nil {
		t.Error("a line over the limit was accepted")
	}
}
