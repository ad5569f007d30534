package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/claudefs/claudefs/dataplane/dpconfig"
)

func runCfs(args ...string) (code int, stdout, stderr string) {
	var out, errOut bytes.Buffer
	code = run(args, &out, &errOut)
	return code, out.String(), errOut.String()
}

func TestExitCodes(t *testing.T) {
	for _, c := range []struct {
		args []string
		code int
		want string // substring of stderr
	}{
		{[]string{"bench", "run", "--target=nosuch:/x"}, 2, `target "nosuch" is not supported yet`},
		{[]string{"bench", "run", "--target=dataplane:/x"}, 2, `"/x" is not HOST:PORT`},
		{[]string{"bench", "run", "--target=device:/x", "--iodepth=0"}, 2, "--iodepth=0"},
		{[]string{"bench", "run", "--target=device:/x", "--direct=0"}, 2, "only --direct=1 is supported"},
		{[]string{"bench", "run", "--target=device:/x", "--bogus"}, 2, "unknown flag: --bogus"},
		{[]string{"bench", "run", "--target=device:/x", "extra"}, 2, "job file: open extra"},
		{[]string{"nosuch"}, 2, "unknown command"},
		{[]string{"bench", "nosuch"}, 2, "unknown command"},
		{[]string{"bench", "run", "--target=device:/proc/version", "--size=1m"}, 1, "cfs: "},
	} {
		code, stdout, stderr := runCfs(c.args...)
		if code != c.code || !strings.Contains(stderr, c.want) || stdout != "" {
			t.Errorf("cfs %q: exit %d, stdout %q, stderr %q; want exit %d and %q", c.args, code, stdout, stderr, c.code, c.want)
		}
	}
}

func TestHelpAndVersion(t *testing.T) {
	code, out, _ := runCfs("--help")
	if code != 0 || !strings.Contains(out, "ClaudeFS") || !strings.Contains(out, "bench run") {
		t.Errorf("cfs --help: exit %d\n%s", code, out)
	}
	code, out, _ = runCfs("bench", "run", "--help")
	if code != 0 || !strings.Contains(out, "--rw=randread --bs=4k --iodepth=32") || !strings.Contains(out, "device:PATH") {
		t.Errorf("cfs bench run --help: exit %d\n%s", code, out)
	}
	code, out, _ = runCfs("version")
	if code != 0 || !strings.HasPrefix(out, "cfs dev (commit ") {
		t.Errorf("cfs version: exit %d, %q", code, out)
	}
}

// TestBenchJSON runs a short device benchmark: stdout must be the JSON
// report alone.
func TestBenchJSON(t *testing.T) {
	path := filepath.Join(t.TempDir(), "x.dat")
	code, stdout, stderr := runCfs("bench", "run", "--target", "device:"+path, "--rw=randread", "--bs=4k",
		"--iodepth=8", "--size=4m", "--runtime=300ms", "--time_based", "--output-format=json")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	var rep struct {
		Jobs []struct {
			Read struct {
				IOPS   float64 `json:"iops"`
				ClatNs struct {
					Percentile map[string]int64 `json:"percentile"`
				} `json:"clat_ns"`
			} `json:"read"`
		} `json:"jobs"`
	}
	if err := json.Unmarshal([]byte(stdout), &rep); err != nil {
		t.Fatalf("stdout is not JSON: %v\n%s", err, stdout)
	}
	if len(rep.Jobs) != 1 || rep.Jobs[0].Read.IOPS <= 0 || rep.Jobs[0].Read.ClatNs.Percentile["99.000000"] <= 0 {
		t.Fatalf("report: %+v", rep)
	}
	if !strings.Contains(stderr, "laying out") {
		t.Errorf("stderr lacks the layout progress: %q", stderr)
	}
}

// TestDataplaneHelp: the help documents every flag and every configuration
// key with its range and whether it applies live.
func TestDataplaneHelp(t *testing.T) {
	code, out, _ := runCfs("dataplane", "--help")
	if code != 0 {
		t.Fatalf("exit %d", code)
	}
	for _, k := range dpconfig.Keys() {
		when := "restart"
		if k.Live {
			when = "live"
		}
		for _, want := range []string{k.Name, "--" + k.Flag + " value", k.Range, fmt.Sprintf("(%s; default", k.Name), when} {
			if !strings.Contains(out, want) {
				t.Errorf("help lacks %q (key %s)", want, k.Name)
			}
		}
	}
	for _, want := range []string{"--config string", "key = value", "restart_required", "0600", "no pinning"} {
		if !strings.Contains(out, want) {
			t.Errorf("help lacks %q", want)
		}
	}
	if strings.Contains(out, "not supported yet") {
		t.Errorf("help still says something is not supported yet:\n%s", out)
	}
}
