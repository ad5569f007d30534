package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func mustSpec(t *testing.T, args ...string) *Spec {
	t.Helper()
	spec, err := ParseArgs(append(args, "--progress=false"))
	if err != nil {
		t.Fatal(err)
	}
	return spec
}

// measuringJob returns job 0 of spec in a run already measuring.
func measuringJob(spec *Spec) *Job {
	st := &runState{}
	st.phase.Store(phaseMeasure)
	return newJob(spec, st, 0)
}

// TestBSSplitDistribution draws many I/Os from a bssplit job: each size
// comes up at its weight, offsets are aligned and inside the range, and
// sequential I/Os follow each other.
func TestBSSplitDistribution(t *testing.T) {
	spec := mustSpec(t, "--target=device:x", "--rw=randread", "--bssplit=4k/10:64k/50:32k/40", "--size=16m", "--offset=1m", "--runtime=1", "--time_based")
	w, err := measuringJob(spec).NewWorker()
	if err != nil {
		t.Fatal(err)
	}
	const n = 200_000
	count := map[int]int{}
	for range n {
		io, ok := w.NextIO()
		if !ok || io.Kind != IORead {
			t.Fatalf("NextIO = %+v, %v", io, ok)
		}
		if io.Off%4096 != 0 || io.Off < 1<<20 || io.Off+int64(io.Len) > 17<<20 {
			t.Fatalf("I/O of %d bytes at %d: outside [1m, 17m) or unaligned", io.Len, io.Off)
		}
		count[io.Len]++
	}
	for size, pct := range map[int]float64{4 << 10: 10, 64 << 10: 50, 32 << 10: 40} {
		if got := float64(count[size]) * 100 / n; math.Abs(got-pct) > 0.5 {
			t.Errorf("%d-byte I/Os: %.2f%%, want %.0f%%", size, got, pct)
		}
	}
	if len(count) != 3 {
		t.Errorf("sizes drawn: %v", count)
	}

	spec = mustSpec(t, "--target=device:x", "--rw=write", "--bssplit=4k/50:12k/50", "--size=1m")
	w, _ = measuringJob(spec).NewWorker()
	var next, bytes int64
	for {
		io, ok := w.NextIO()
		if !ok {
			break
		}
		if io.Kind != IOWrite || io.Off != next {
			if io.Off != 0 {
				t.Fatalf("sequential I/O at %d, want %d (or 0 after wrapping)", io.Off, next)
			}
		}
		next = io.Off + int64(io.Len)
		bytes += int64(io.Len)
	}
	if bytes < 1<<20 || bytes >= 1<<20+12<<10 {
		t.Errorf("a size-based bssplit job issued %d bytes for --size=1m", bytes)
	}
}

// TestDeviceBSSplitVerify writes a file sequentially with a bssplit and
// verify=crc32c: the job reads back every unit it wrote and finds them
// good; the bytes moved match the sizes drawn.
func TestDeviceBSSplitVerify(t *testing.T) {
	path := filepath.Join(t.TempDir(), "dev.dat")
	res := runSpec(t, "--target=device:"+path, "--rw=write", "--bssplit=4k/50:12k/50", "--iodepth=8", "--size=4m", "--verify=crc32c")
	j := res.Jobs[0]
	if j.Write.Bytes < 4<<20 || j.Write.Bytes >= 4<<20+12<<10 || j.Write.IOs < 4<<20/(12<<10) || j.Write.IOs > 4<<20/(4<<10) {
		t.Errorf("wrote %d bytes in %d I/Os", j.Write.Bytes, j.Write.IOs)
	}
	if mean := float64(j.Write.Bytes) / float64(j.Write.IOs); mean < 7<<10 || mean > 9<<10 {
		t.Errorf("mean I/O %.0f bytes, want about 8 KiB", mean)
	}
	if j.Verify.Units != 1024 || j.Verify.Mismatches != 0 {
		t.Errorf("verify: %+v, want 1024 units (4 MiB / 4 KiB) and no mismatch", j.Verify)
	}
}

// TestVerifyCatchesCorruption writes a file with verify=crc32c, corrupts
// it between the write and the read, and reads it back: the read job
// counts the bad units, names their offsets and fails.
func TestVerifyCatchesCorruption(t *testing.T) {
	path := filepath.Join(t.TempDir(), "dev.dat")
	res := runSpec(t, "--target=device:"+path, "--rw=write", "--bs=16k", "--iodepth=4", "--size=1m", "--verify=crc32c")
	if v := res.Jobs[0].Verify; v.Units != 64 || v.Mismatches != 0 {
		t.Fatalf("write job's read-back: %+v", v)
	}
	read := func() (*Result, *VerifyError) {
		spec := mustSpec(t, "--target=device:"+path, "--rw=read", "--bs=16k", "--iodepth=4", "--size=1m", "--verify=crc32c")
		res, err := Run(context.Background(), spec, io.Discard)
		var ve *VerifyError
		if err != nil && !errors.As(err, &ve) {
			t.Fatal(err)
		}
		return res, ve
	}
	if res, ve := read(); ve != nil || res.Jobs[0].Verify.Units != 64 {
		t.Fatalf("clean read: %v, %+v", ve, res.Jobs[0].Verify)
	}

	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	// Flip a byte in block 5, and copy block 0 over block 9.
	b := []byte{0}
	if _, err := f.ReadAt(b, 5*16384+100); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0x40
	if _, err := f.WriteAt(b, 5*16384+100); err != nil {
		t.Fatal(err)
	}
	blk := make([]byte, 16384)
	if _, err := f.ReadAt(blk, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(blk, 9*16384); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}

	res, ve := read()
	if ve == nil {
		t.Fatal("a read of the corrupted file passed verification")
	}
	v := res.Jobs[0].Verify
	if v.Mismatches != 2 || v.Units != 64 || len(v.First) != 2 {
		t.Fatalf("verify: %+v", v)
	}
	if v.First[0].Offset != 5*16384 || !strings.Contains(v.First[0].Reason, "CRC32C mismatch") ||
		v.First[1].Offset != 9*16384 || !strings.Contains(v.First[1].Reason, "written for offset 0") {
		t.Errorf("mismatches: %+v", v.First)
	}
	if msg := ve.Error(); !strings.Contains(msg, "2 of 64 units checked failed") || !strings.Contains(msg, "offset 81920: CRC32C mismatch") {
		t.Errorf("error: %s", msg)
	}
	var buf bytes.Buffer
	if err := WriteJSON(&buf, res); err != nil {
		t.Fatal(err)
	}
	var rep struct {
		Jobs []struct {
			Error  int `json:"error"`
			Verify struct {
				Units      int64 `json:"units_checked"`
				Mismatches int64 `json:"mismatches"`
				First      []struct {
					Offset int64 `json:"offset"`
				} `json:"first_mismatches"`
			} `json:"cfs verify"`
		} `json:"jobs"`
	}
	if err := json.Unmarshal(buf.Bytes(), &rep); err != nil {
		t.Fatal(err)
	}
	if j := rep.Jobs[0]; j.Error != 84 || j.Verify.Mismatches != 2 || j.Verify.Units != 64 || j.Verify.First[1].Offset != 9*16384 {
		t.Errorf("JSON: %+v", j)
	}

	// Data never written with verify has no header.
	other := filepath.Join(t.TempDir(), "zeros.dat")
	spec := mustSpec(t, "--target=device:"+other, "--rw=randread", "--bs=4k", "--size=64k", "--verify=crc32c")
	_, err = Run(context.Background(), spec, io.Discard)
	if !errors.As(err, &ve) || !strings.Contains(err.Error(), "no verify header") {
		t.Errorf("reading zeros with verify: %v", err)
	}
}

// TestVerifyMixed: in a mixed job, reads of units the job has written are
// checked as it runs, and everything written is read back at the end.
func TestVerifyMixed(t *testing.T) {
	path := filepath.Join(t.TempDir(), "dev.dat")
	res := runSpec(t, "--target=device:"+path, "--rw=randrw", "--bs=4k", "--iodepth=8", "--size=256k", "--runtime=400ms",
		"--time_based", "--verify=crc32c", "--numjobs=2")
	for _, j := range res.Jobs {
		if j.Read.IOs == 0 || j.Write.IOs == 0 || j.Verify.Mismatches != 0 {
			t.Errorf("job %d: %d reads, %d writes, verify %+v", j.Index, j.Read.IOs, j.Write.IOs, j.Verify)
		}
		// Reads of written units plus the read-back of every written unit
		// (all 64 of the range after so many writes).
		if j.Verify.Units <= 64 {
			t.Errorf("job %d: %d units checked", j.Index, j.Verify.Units)
		}
	}
}

// TestDeviceSync: fdatasync=N syncs after every N writes, end_fsync once
// more at the end, through either engine; each sync is recorded.
func TestDeviceSync(t *testing.T) {
	for _, engine := range []string{"auto", "pread"} {
		path := filepath.Join(t.TempDir(), "dev.dat")
		spec := mustSpec(t, "--target=device:"+path, "--rw=randwrite", "--bs=4k", "--iodepth=4", "--size=1m",
			"--fdatasync=8", "--end_fsync=1", "--ioengine="+engine, "--output-format=json")
		res, err := Run(context.Background(), spec, io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		j := res.Jobs[0]
		if j.Write.IOs != 256 || j.Sync.IOs != 256/8+1 || j.Sync.Lat.Min() <= 0 || j.Sync.Bytes != 0 {
			t.Errorf("%s: %d writes, %d syncs (min %d ns)", engine, j.Write.IOs, j.Sync.IOs, j.Sync.Lat.Min())
		}
		var buf bytes.Buffer
		if err := WriteJSON(&buf, res); err != nil {
			t.Fatal(err)
		}
		var rep struct {
			Jobs []struct {
				Sync struct {
					TotalIOs int64 `json:"total_ios"`
					LatNs    struct {
						N          int64            `json:"N"`
						Percentile map[string]int64 `json:"percentile"`
					} `json:"lat_ns"`
				} `json:"sync"`
			} `json:"jobs"`
		}
		if err := json.Unmarshal(buf.Bytes(), &rep); err != nil {
			t.Fatal(err)
		}
		if s := rep.Jobs[0].Sync; s.TotalIOs != 33 || s.LatNs.N != 33 || s.LatNs.Percentile["99.000000"] <= 0 {
			t.Errorf("%s: JSON sync %+v", engine, s)
		}
	}
}

// TestStoreVerifyAndSync: a store: target checks verify=crc32c stamps end
// to end and issues no syncs (its writes are durable), saying so.
func TestStoreVerifyAndSync(t *testing.T) {
	path := filepath.Join(t.TempDir(), "store.dat")
	spec := mustSpec(t, "--target=store:"+path, "--rw=randwrite", "--bs=4k", "--iodepth=8", "--size=1m", "--verify=crc32c", "--fsync=4", "--end_fsync=1")
	var stderr bytes.Buffer
	res, err := Run(context.Background(), spec, &stderr)
	if err != nil {
		t.Fatal(err)
	}
	j := res.Jobs[0]
	if j.Write.IOs != 256 || j.Sync.IOs != 0 || j.Verify.Units == 0 || j.Verify.Mismatches != 0 {
		t.Errorf("store write: %d writes, %d syncs, verify %+v", j.Write.IOs, j.Sync.IOs, j.Verify)
	}
	if !strings.Contains(stderr.String(), "acknowledged only once durable, so fsync=, fdatasync= and end_fsync add nothing") {
		t.Errorf("stderr: %s", stderr.String())
	}
	res = runSpec(t, "--target=store:"+path, "--rw=randread", "--bs=4k", "--iodepth=8", "--size=1m", "--verify=crc32c")
	if v := res.Jobs[0].Verify; v.Units != 256 || v.Mismatches != 0 {
		t.Errorf("store read: verify %+v", v)
	}
	spec = mustSpec(t, "--target=store:"+path, "--rw=randread", "--bssplit=4k/50:8k/50", "--size=1m")
	if _, err := Run(context.Background(), spec, io.Discard); err == nil || !IsUsage(err) || !strings.Contains(err.Error(), "need a device: target") {
		t.Errorf("bssplit on store: %v", err)
	}
}

// TestJobFileReportJSON runs a job file of two sections, one with numjobs=2
// and group_reporting, one with numjobs=2 alone, and loads the JSON report
// with a JSON parser: fio's fields, one jobs[] entry per job (one for the
// group_reporting section), the sections in their groups.
func TestJobFileReportJSON(t *testing.T) {
	path := filepath.Join(t.TempDir(), "dev.dat")
	text := "[global]\nfilename=" + path + "\nsize=1m\ndirect=1\nbs=4k\niodepth=4\n" +
		"[w]\nrw=randwrite\nnumjobs=2\ngroup_reporting\nfdatasync=16\n" +
		"[r]\nrw=randread\nnumjobs=2\nruntime=300ms\ntime_based\n"
	jf, err := ParseJobFile("two.fio", []byte(text))
	if err != nil {
		t.Fatal(err)
	}
	base := DefaultFlags()
	base.Progress = false
	specs, err := jf.Specs(base, []Option{{Key: "ioengine", Value: "io_uring"}})
	if err != nil {
		t.Fatal(err)
	}
	var results []*Result
	for _, s := range specs {
		res, err := Run(context.Background(), s, io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		results = append(results, res)
	}
	var buf bytes.Buffer
	if err := WriteJSON(&buf, results...); err != nil {
		t.Fatal(err)
	}
	var rep map[string]any
	if err := json.Unmarshal(buf.Bytes(), &rep); err != nil {
		t.Fatalf("%v\n%s", err, buf.String())
	}
	for _, k := range []string{"fio version", "timestamp", "timestamp_ms", "time", "global options", "jobs"} {
		if _, ok := rep[k]; !ok {
			t.Errorf("report lacks %q", k)
		}
	}
	if g := rep["global options"].(map[string]any); g["filename"] != path || g["ioengine"] != "io_uring" || g["iodepth"] != "4" {
		t.Errorf("global options %v", g)
	}
	jobs := rep["jobs"].([]any)
	if len(jobs) != 3 {
		t.Fatalf("%d jobs[] entries, want 1 (w, grouped) + 2 (r)", len(jobs))
	}
	for i, want := range []struct {
		name  string
		group float64
		dir   string
	}{{"w", 0, "write"}, {"r", 1, "read"}, {"r", 1, "read"}} {
		j := jobs[i].(map[string]any)
		if j["jobname"] != want.name || j["groupid"] != want.group || j["error"] != 0.0 {
			t.Errorf("jobs[%d]: jobname %v groupid %v error %v", i, j["jobname"], j["groupid"], j["error"])
		}
		for _, k := range []string{"eta", "elapsed", "job options", "read", "write", "trim", "sync", "job_runtime"} {
			if _, ok := j[k]; !ok {
				t.Errorf("jobs[%d] lacks %q", i, k)
			}
		}
		d := j[want.dir].(map[string]any)
		for _, k := range []string{"io_bytes", "io_kbytes", "bw_bytes", "bw", "iops", "runtime", "total_ios", "short_ios", "drop_ios", "clat_ns", "lat_ns"} {
			if _, ok := d[k]; !ok {
				t.Errorf("jobs[%d].%s lacks %q", i, want.dir, k)
			}
		}
		if d["iops"].(float64) <= 0 || d["io_bytes"].(float64) <= 0 {
			t.Errorf("jobs[%d].%s: %v", i, want.dir, d)
		}
		clat := d["clat_ns"].(map[string]any)
		for _, k := range []string{"min", "max", "mean", "stddev", "N", "percentile"} {
			if _, ok := clat[k]; !ok {
				t.Errorf("jobs[%d].%s.clat_ns lacks %q", i, want.dir, k)
			}
		}
		if _, ok := clat["percentile"].(map[string]any)["99.900000"]; !ok {
			t.Errorf("jobs[%d] lacks the 99.9th percentile", i)
		}
	}
	w := jobs[0].(map[string]any)
	if io := w["write"].(map[string]any)["io_bytes"].(float64); io != 2<<20 {
		t.Errorf("grouped w moved %v bytes, want 2 MiB (2 jobs × 1 MiB)", io)
	}
	if s := w["sync"].(map[string]any); s["total_ios"].(float64) != 2*256/16 {
		t.Errorf("grouped w synced %v times", s["total_ios"])
	}
	if o := w["job options"].(map[string]any); o["rw"] != "randwrite" || o["group_reporting"] != "1" || o["numjobs"] != "2" {
		t.Errorf("w job options %v", o)
	}
	// The normal report has both groups.
	buf.Reset()
	if err := WriteNormal(&buf, results...); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	for _, want := range []string{"w: (g=0): rw=randwrite", "w: (groupid=0, jobs=2)", "fsync/fdatasync/sync_file_range:", "Run status group 0", "r: (groupid=1, jobs=1)", "Run status group 1"} {
		if !strings.Contains(out, want) {
			t.Errorf("normal report lacks %q:\n%s", want, out)
		}
	}
}
