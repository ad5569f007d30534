package clustertest

import (
	"context"
	"encoding/json"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/claudefs/claudefs/controlplane/meta"
)

// TestBenchClusterTarget: `cfs bench run --target cluster:ADDR` drives the
// native client on a real 3-node cluster with fio's flags and JSON: random
// writes of 64 KiB with verify=crc32c (read back and checked, zero
// mismatches), then verified random reads of the same file, which the
// metadata service shows at its laid-out size.
func TestBenchClusterTarget(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a 3-node cluster of real processes")
	}
	c := devUp(t, 3, 8)
	addrs := strings.Join(c.raftAddrs(), ",")
	type dir struct {
		IOs  int64   `json:"total_ios"`
		IOPS float64 `json:"iops"`
	}
	type report struct {
		Jobs []struct {
			Read   dir `json:"read"`
			Write  dir `json:"write"`
			Verify struct {
				Units      int64 `json:"units_checked"`
				Mismatches int64 `json:"mismatches"`
			} `json:"cfs verify"`
		} `json:"jobs"`
	}
	run := func(rw string) report {
		t.Helper()
		args := []string{"bench", "run", "--target", "cluster:" + addrs, "--name", "bt", "--rw", rw, "--bs", "64k",
			"--size", "16m", "--iodepth", "4", "--verify", "crc32c", "--output-format=json", "--progress=false"}
		out, err := exec.Command(cfsBin, args...).Output()
		if err != nil {
			var stderr []byte
			if ee, ok := err.(*exec.ExitError); ok {
				stderr = ee.Stderr
			}
			t.Fatalf("cfs %s: %v\n%s\n%s", strings.Join(args, " "), err, out, stderr)
		}
		var r report
		if err := json.Unmarshal(out, &r); err != nil || len(r.Jobs) != 1 {
			t.Fatalf("cfs bench run's JSON: %v\n%s", err, out)
		}
		return r
	}
	w := run("randwrite").Jobs[0]
	if w.Write.IOs != 256 || w.Write.IOPS <= 0 || w.Verify.Units == 0 || w.Verify.Mismatches != 0 {
		t.Fatalf("randwrite: %+v", w)
	}
	r := run("randread").Jobs[0]
	if r.Read.IOs != 256 || r.Verify.Units == 0 || r.Verify.Mismatches != 0 {
		t.Fatalf("randread: %+v", r)
	}
	mc := c.metaClient(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	e, err := mc.Lookup(ctx, meta.RootIno, "bt.0.0")
	if err != nil {
		t.Fatalf("lookup /bt.0.0: %v", err)
	}
	if in, err := mc.GetAttr(ctx, e.Ino); err != nil || in.Size != 16<<20 {
		t.Fatalf("/bt.0.0: size %d, %v; want %d", in.Size, err, 16<<20)
	}
}
