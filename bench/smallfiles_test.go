package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestSmallFiles runs the small-files workload on a temporary directory:
// every phase counts every file, each operation once per file, the files
// read back equal what was written, and none is left.
func TestSmallFiles(t *testing.T) {
	for _, buffered := range []bool{false, true} {
		dir := filepath.Join(t.TempDir(), "sf")
		res, err := RunSmallFiles(context.Background(), SmallFiles{Dir: dir, Files: 300, Concurrency: 8, Verify: true, Buffered: buffered}, io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		if res.Files != 300 || res.Verified != 300 || res.Bytes < 300*4096 || res.Direct == buffered {
			t.Fatalf("result %+v", res)
		}
		want := map[string][]string{"write": {"create", "write", "fsync", "close"}, "stat": {"stat"}, "read": {"open", "read", "close"}, "unlink": {"unlink"}}
		if len(res.Phases) != 4 {
			t.Fatalf("%d phases", len(res.Phases))
		}
		for _, p := range res.Phases {
			var ops []string
			for _, op := range p.Ops {
				ops = append(ops, op.Op)
				if op.Count != 300 || op.OpsPerS <= 0 || op.P50us <= 0 || op.P99us < op.P50us || op.MaxUs < op.P99us {
					t.Errorf("%s %s: %+v", p.Phase, op.Op, op)
				}
			}
			if strings.Join(ops, ",") != strings.Join(want[p.Phase], ",") || p.FilesPerS <= 0 {
				t.Errorf("phase %s: ops %v, %.0f files/s", p.Phase, ops, p.FilesPerS)
			}
		}
		if left, _ := os.ReadDir(dir); len(left) != 0 {
			t.Errorf("%d files left", len(left))
		}
		var out bytes.Buffer
		if err := WriteSmallFilesReport(&out, res); err != nil || !strings.Contains(out.String(), "files/s") || !strings.Contains(out.String(), "300 files read back") {
			t.Errorf("report: %v\n%s", err, out.String())
		}
		b, _ := json.Marshal(res)
		var back map[string]any
		if json.Unmarshal(b, &back) != nil || back["profile"] != "small-files" || back["phases"] == nil {
			t.Errorf("JSON %s", b)
		}
	}
	if _, err := RunSmallFiles(context.Background(), SmallFiles{Dir: t.TempDir(), Files: MaxSmallFiles + 1}, io.Discard); !IsUsage(err) {
		t.Errorf("too many files: %v", err)
	}
	if _, err := RunSmallFiles(context.Background(), SmallFiles{Dir: t.TempDir(), Files: 1, Sizes: []BSWeight{{Size: 1000, Percent: 100}}}, io.Discard); !IsUsage(err) || !strings.Contains(err.Error(), "O_DIRECT") {
		t.Errorf("an O_DIRECT size not a multiple of 4096: %v", err)
	}
}
