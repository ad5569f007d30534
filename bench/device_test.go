package bench

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/claudefs/claudefs/nvme"
)

func runSpec(t *testing.T, args ...string) *Result {
	t.Helper()
	spec, err := ParseArgs(append(args, "--progress=false"))
	if err != nil {
		t.Fatal(err)
	}
	res, err := Run(context.Background(), spec, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// TestDeviceSequentialWriteLands writes a fresh file sequentially, size
// based, and reads it back: every block must hold the write pattern.
func TestDeviceSequentialWriteLands(t *testing.T) {
	path := filepath.Join(t.TempDir(), "dev.dat")
	res := runSpec(t, "--target=device:"+path, "--rw=write", "--bs=64k", "--iodepth=4", "--size=4m")
	w := res.Jobs[0].Write
	if w.IOs != 64 || w.Bytes != 4<<20 || res.Jobs[0].Read.IOs != 0 {
		t.Fatalf("write: %d I/Os, %d bytes; read %d I/Os; want 64, 4 MiB, 0", w.IOs, w.Bytes, res.Jobs[0].Read.IOs)
	}
	if w.Clat.Count() != 64 || w.Clat.Min() <= 0 || w.Lat.Min() < w.Clat.Min() {
		t.Fatalf("latencies: clat n=%d min=%d, lat min=%d", w.Clat.Count(), w.Clat.Min(), w.Lat.Min())
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	want := make([]byte, 64<<10)
	fillPattern(want)
	if bytes.Equal(want, make([]byte, len(want))) {
		t.Fatal("the pattern is all zeros")
	}
	for off := 0; off < 4<<20; off += len(want) {
		if !bytes.Equal(data[off:off+len(want)], want) {
			t.Fatalf("block at %d does not hold the written pattern", off)
		}
	}
}

// TestDeviceRandRWTimeBased runs a mixed random job for about a second with
// two jobs and checks both directions moved data within the range.
func TestDeviceRandRWTimeBased(t *testing.T) {
	path := filepath.Join(t.TempDir(), "dev.dat")
	start := time.Now()
	res := runSpec(t, "--target=device:"+path, "--rw=randrw", "--rwmixread=70", "--bs=4k", "--iodepth=16",
		"--numjobs=2", "--size=8m", "--offset=1m", "--runtime=1", "--time_based")
	if el := time.Since(start); el < time.Second || el > 5*time.Second {
		t.Errorf("a 1 s time-based run took %v", el)
	}
	if len(res.Jobs) != 2 || !strings.HasPrefix(res.Target, "device:"+path+" (") {
		t.Fatalf("jobs %d, target %q", len(res.Jobs), res.Target)
	}
	for _, j := range res.Jobs {
		if j.Read.IOs == 0 || j.Write.IOs == 0 {
			t.Fatalf("job %d: %d reads, %d writes", j.Index, j.Read.IOs, j.Write.IOs)
		}
		if j.Runtime < 900*time.Millisecond || j.Runtime > 2*time.Second {
			t.Errorf("job %d: runtime %v", j.Index, j.Runtime)
		}
		share := float64(j.Read.IOs) / float64(j.Read.IOs+j.Write.IOs)
		if share < 0.6 || share > 0.8 {
			t.Errorf("job %d: %.2f of I/Os are reads, want about 0.70", j.Index, share)
		}
	}
	// The first MiB (before --offset) was never written.
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(data[:1<<20], make([]byte, 1<<20)) {
		t.Error("a write landed before --offset")
	}
	if bytes.Equal(data[1<<20:9<<20], make([]byte, 8<<20)) {
		t.Error("no write landed in the range")
	}
}

func TestDeviceTargetErrors(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--target=device:" + dir + "/x", "--bs=6k", "--size=1m"}, "multiple of 4096"},
		{[]string{"--target=device:" + dir + "/x", "--offset=512", "--size=1m"}, "--offset=512"},
		{[]string{"--target=device:" + dir + "/absent"}, "pass --size"},
		{[]string{"--target=device:", "--size=1m"}, "no ARG"},
		{[]string{"--target=device:" + dir + "/x", "--rw=randrw", "--bs=1m", "--iodepth=1024", "--size=64m"}, "limited to"},
		{[]string{"--target=nosuch:x"}, `target "nosuch" is not supported yet`},
		{[]string{"--target=dataplane:x"}, `"x" is not HOST:PORT`},
		{[]string{"--target=cluster:x"}, "needs --size"},
		{[]string{"--target=dir:" + dir}, "needs --size"},
	} {
		spec, err := ParseArgs(append(c.args, "--progress=false"))
		if err == nil {
			_, err = Run(context.Background(), spec, io.Discard)
		}
		if err == nil || !IsUsage(err) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: %v; want a usage error containing %q", c.args, err, c.want)
		}
	}
	// A size past the end of an existing file that cannot grow: a block
	// device is not available here, so check fitDevice directly.
	path := filepath.Join(dir, "small")
	dev, err := nvme.Open(path, nvme.OpenOptions{CreateSize: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Close()
	spec := &Spec{BlockSize: 4096, Size: 2 << 20}
	if err := fitDevice(dev, spec); err == nil || !strings.Contains(err.Error(), "past the end") {
		t.Errorf("fitDevice past the end: %v", err)
	}
	spec = &Spec{BlockSize: 4096, Offset: 4096}
	if err := fitDevice(dev, spec); err != nil || spec.Size != 1<<20-4096 {
		t.Errorf("fitDevice resolving the size: %v, size %d", err, spec.Size)
	}
}

// TestRunCancel stops a long time-based run through its context and still
// gets a result.
func TestRunCancel(t *testing.T) {
	path := filepath.Join(t.TempDir(), "dev.dat")
	spec, err := ParseArgs([]string{"--target=device:" + path, "--rw=randread", "--size=4m", "--runtime=1h",
		"--time_based", "--progress=false"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	res, err := Run(ctx, spec, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if res.Jobs[0].Read.IOs == 0 || res.Jobs[0].Runtime > 5*time.Second {
		t.Fatalf("cancelled run: %d reads in %v", res.Jobs[0].Read.IOs, res.Jobs[0].Runtime)
	}
}

// TestProgressAndRamp checks the progress line and that ramp I/O is not
// reported.
func TestProgressAndRamp(t *testing.T) {
	path := filepath.Join(t.TempDir(), "dev.dat")
	spec, err := ParseArgs([]string{"--target=device:" + path, "--rw=randread", "--size=4m", "--runtime=700ms",
		"--ramp_time=3s", "--time_based"})
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	res, err := Run(context.Background(), spec, &stderr)
	if err != nil {
		t.Fatal(err)
	}
	out := stderr.String()
	if !strings.Contains(out, "laying out "+path+": 4096KiB/4096KiB (100%)") ||
		!strings.Contains(out, "[ramp][r=") || !strings.Contains(out, " IOPS w=0 IOPS][") || !strings.Contains(out, "% done][eta ") {
		t.Errorf("stderr:\n%s", out)
	}
	// Counting the ramp would make it ≥ 3.7 s; the I/O in flight at the end can add
	// a second or more on a disk shared with other tests.
	if j := res.Jobs[0]; j.Runtime < 650*time.Millisecond || j.Runtime >= 3*time.Second || j.Read.IOs == 0 {
		t.Errorf("measured %v with %d reads", j.Runtime, j.Read.IOs)
	}
}

// BenchmarkDeviceLoop measures the device loop alone: b.N 4 KiB random
// reads, 32 in flight, over a temp file. allocs/op must be 0.
func BenchmarkDeviceLoop(b *testing.B) {
	path := filepath.Join(b.TempDir(), "dev.dat")
	spec, err := ParseArgs([]string{"--target=device:" + path, "--rw=randrw", "--bs=4k", "--iodepth=32", "--size=16m", "--progress=false"})
	if err != nil {
		b.Fatal(err)
	}
	target, err := openTarget(spec, &Env{Stderr: io.Discard, Logf: b.Logf})
	if err != nil {
		b.Fatal(err)
	}
	defer target.Close()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread() // only after every engine is closed
	st := &runState{}
	st.phase.Store(phaseMeasure)
	job := newJob(spec, st, 0)
	job.limit = int64(b.N)
	w, err := job.NewWorker()
	if err != nil {
		b.Fatal(err)
	}
	dj, err := target.(*deviceTarget).openJob(job)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	err = dj.loop.run(w)
	b.StopTimer()
	if cerr := dj.close(); err == nil {
		err = cerr
	}
	if err != nil {
		b.Fatal(err)
	}
	if n := w.stats[0].IOs + w.stats[1].IOs; n != int64(b.N) {
		b.Fatalf("%d I/Os completed, want %d", n, b.N)
	}
}
