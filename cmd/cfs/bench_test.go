package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func writeFile(t *testing.T, name, text string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestBenchJobFile runs a job file the way the acceptance check does:
// --target device:FILE while the file also names it with filename=.
func TestBenchJobFile(t *testing.T) {
	dat := filepath.Join(t.TempDir(), "job.dat")
	job := writeFile(t, "job.fio", "[global]\nfilename="+dat+"\nsize=4m\ndirect=1\nruntime=300ms\ntime_based\n[randread]\nrw=randread\nbs=4k\niodepth=16\n")
	code, stdout, stderr := runCfs("bench", "run", "--target", "device:"+dat, "--output-format=json", job)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	var rep struct {
		Jobs []struct {
			Jobname string `json:"jobname"`
			Read    struct {
				IOPS float64 `json:"iops"`
			} `json:"read"`
			JobOptions map[string]string `json:"job options"`
		} `json:"jobs"`
		Global map[string]string `json:"global options"`
	}
	if err := json.Unmarshal([]byte(stdout), &rep); err != nil {
		t.Fatalf("stdout is not JSON: %v\n%s", err, stdout)
	}
	if len(rep.Jobs) != 1 || rep.Jobs[0].Jobname != "randread" || rep.Jobs[0].Read.IOPS <= 0 ||
		rep.Jobs[0].JobOptions["iodepth"] != "16" || rep.Global["filename"] != dat || rep.Global["output-format"] != "" {
		t.Fatalf("report: %+v", rep)
	}
	// Without --target, filename= is the device; flags override the file.
	code, stdout, stderr = runCfs("bench", "run", "--iodepth=2", "--progress=false", job)
	if code != 0 || !strings.Contains(stdout, "randread: (g=0): rw=randread, bs=4096B, iodepth=2, numjobs=1, target=device:"+dat) {
		t.Fatalf("exit %d\n%s\n%s", code, stdout, stderr)
	}
}

func TestBenchJobFileErrors(t *testing.T) {
	dat := filepath.Join(t.TempDir(), "x.dat")
	bad := writeFile(t, "bad.fio", "[global]\nfilename="+dat+"\n[a]\nrw=read\nnrfiles=4\n")
	good := writeFile(t, "good.fio", "[a]\nfilename="+dat+"\nsize=1m\n")
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"bench", "run", bad}, bad + `:5: option "nrfiles" is not supported (cfs bench takes`},
		{[]string{"bench", "run", "/nonexistent/job.fio"}, "job file: open /nonexistent/job.fio"},
		{[]string{"bench", "run", "--name=x", good}, "--name names the job of a run without a job file"},
		{[]string{"bench", "run", "--profile=randread-4k", good}, "give a job file or --profile, not both"},
		{[]string{"bench", "run", "--profile=small-files", "--target=device:" + dat}, "profile small-files is not a fio job: it runs its own workload on a dir: target"},
		{[]string{"bench", "run", "--profile=metadata", "--target=device:" + dat}, "--profile metadata runs against --target cluster:ADDR"},
		{[]string{"bench", "run", "--profile=nosuch", "--target=device:" + dat}, `--profile="nosuch": no such profile`},
		{[]string{"bench", "run", "--compare-threshold=5", good}, "--compare-threshold needs --compare"},
		{[]string{"bench", "run", "--compare=" + good, good}, "--compare " + good + ": no JSON object"},
		{[]string{"bench", "run", "--compare=/nonexistent.json", good}, "--compare: open /nonexistent.json"},
		{[]string{"bench", "run", "--compare=" + good, "--compare-threshold=0", good}, "--compare-threshold=\"0\""},
		{[]string{"bench", "run", good, good}, "accepts at most 1 arg"},
	} {
		code, stdout, stderr := runCfs(c.args...)
		if code != 2 || !strings.Contains(stderr, c.want) || stdout != "" {
			t.Errorf("cfs %q: exit %d, stdout %q, stderr %q; want exit 2 and %q", c.args, code, stdout, stderr, c.want)
		}
	}
}

func TestBenchProfiles(t *testing.T) {
	code, stdout, _ := runCfs("bench", "profiles")
	if code != 0 {
		t.Fatalf("exit %d", code)
	}
	for _, name := range []string{"randread-4k", "randwrite-4k", "seqread-1m", "seqwrite-1m", "mixed-70-30", "small-files", "metadata"} {
		if !strings.Contains(stdout, name+" ") {
			t.Errorf("cfs bench profiles lacks %s:\n%s", name, stdout)
		}
	}
	if !strings.Contains(stdout, "fio: --rw=read --bs=1m --iodepth=8") {
		t.Errorf("no fio options:\n%s", stdout)
	}
}

// TestBenchCompare: --compare passes against a baseline every figure of
// the run beats, and fails (exit 1, naming the figure) against one whose
// IOPS no run can reach.
func TestBenchCompare(t *testing.T) {
	dat := filepath.Join(t.TempDir(), "c.dat")
	baseline := func(iops, lat float64) string {
		rep := map[string]any{"jobs": []any{map[string]any{"jobname": "randread", "read": map[string]any{
			"iops": iops, "bw_bytes": iops * 4096, "total_ios": 100,
			"clat_ns": map[string]any{"percentile": map[string]any{"50.000000": lat, "99.000000": lat, "99.900000": lat}},
			"lat_ns":  map[string]any{"mean": lat},
		}}}}
		data, err := json.Marshal(rep)
		if err != nil {
			t.Fatal(err)
		}
		return writeFile(t, "base.json", string(data))
	}
	args := []string{"bench", "run", "--profile=randread-4k", "--target=device:" + dat, "--size=4m", "--runtime=300ms", "--iodepth=4", "--progress=false"}
	// A profile's job is named after it: the baseline's randread is not in
	// the run, which fails the comparison.
	code, _, stderr := runCfs(append(args, "--compare="+baseline(1, 1e12))...)
	if code != 1 || !strings.Contains(stderr, "job randread read is in the baseline but not in this run") {
		t.Fatalf("baseline job missing: exit %d\n%s", code, stderr)
	}
	job := writeFile(t, "r.fio", "[randread]\nrw=randread\nbs=4k\nfilename="+dat+"\nsize=4m\nruntime=300ms\ntime_based\ndirect=1\n")
	code, stdout, stderr := runCfs("bench", "run", "--progress=false", "--compare="+baseline(1, 1e12), job)
	if code != 0 || !strings.Contains(stdout, "randread                 read  iops") || strings.Contains(stdout, "WORSE") {
		t.Fatalf("better than the baseline: exit %d\n%s\n%s", code, stdout, stderr)
	}
	code, stdout, stderr = runCfs("bench", "run", "--progress=false", "--output-format=json", "--compare="+baseline(1e12, 1), job)
	if code != 1 || !strings.Contains(stderr, "regression against the baseline: randread read iops is") ||
		!strings.Contains(stderr, "randread read clat p99 is") || !strings.Contains(stderr, "WORSE") {
		t.Fatalf("worse than the baseline: exit %d\n%s", code, stderr)
	}
	var rep map[string]any
	if err := json.Unmarshal([]byte(stdout), &rep); err != nil {
		t.Errorf("with --compare and JSON, stdout is still the JSON alone: %v", err)
	}
}
