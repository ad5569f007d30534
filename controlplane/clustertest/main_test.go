package clustertest

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/claudefs/claudefs/controlplane/node"
)

var cfsBin string

func TestMain(m *testing.M) {
	if os.Getenv(driverEnv) != "" {
		os.Exit(m.Run()) // the metadata crash test's child: no cfs binary needed
	}
	dir, err := os.MkdirTemp("", "cfs-clustertest-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	cfsBin = filepath.Join(dir, "cfs")
	if out, err := exec.Command("go", "build", "-o", cfsBin, "github.com/claudefs/claudefs/cmd/cfs").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "building cfs: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// devStatus mirrors `cfs dev status --json`.
type devStatus struct {
	Groups struct {
		Total      int `json:"total"`
		WithLeader int `json:"with_leader"`
	} `json:"groups"`
	Epoch uint64 `json:"epoch"`
	Nodes []struct {
		ID            string `json:"id"`
		Dir           string `json:"dir"`
		State         string `json:"state"`
		SupervisorPid int    `json:"supervisor_pid"`
		Dataplane     struct {
			Pid  int    `json:"pid"`
			Addr string `json:"addr"`
		} `json:"dataplane"`
		Control struct {
			Pid      int    `json:"pid"`
			Addr     string `json:"addr"`
			RaftAddr string `json:"raft_addr"`
		} `json:"control"`
	} `json:"nodes"`
}

type cluster struct {
	t    *testing.T
	dir  string
	only []string // node directories to check, when not all (waitEpochPushed)
}

func cfs(t *testing.T, args ...string) (string, error) {
	t.Helper()
	out, err := exec.Command(cfsBin, args...).CombinedOutput()
	return string(out), err
}

// devUp starts a dev cluster and stops it when the test ends (keeping logs on failure).
func devUp(t *testing.T, nodes, shards int, extra ...string) *cluster {
	t.Helper()
	dir := t.TempDir()
	args := append([]string{"dev", "up", "--dir", dir, "--nodes", fmt.Sprint(nodes), "--shards", fmt.Sprint(shards), "--device-size", "128M", "--wait", "150s"}, extra...)
	start := time.Now()
	out, err := cfs(t, args...)
	c := &cluster{t: t, dir: dir}
	t.Cleanup(func() {
		if out, err := cfs(t, "dev", "down", "--dir", dir); err != nil {
			t.Errorf("cfs dev down: %v\n%s", err, out)
		}
		if t.Failed() {
			c.dumpLogs()
		}
	})
	if err != nil {
		c.dumpLogs()
		t.Fatalf("cfs %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	t.Logf("cfs dev up (%d nodes, %d shards) took %v", nodes, shards, time.Since(start).Round(time.Millisecond))
	return c
}

func (c *cluster) dumpLogs() {
	logs, _ := filepath.Glob(filepath.Join(c.dir, "node*", "*.log"))
	for _, l := range logs {
		b, _ := os.ReadFile(l)
		if len(b) > 6000 {
			b = b[len(b)-6000:]
		}
		c.t.Logf("==== %s (tail)\n%s", l, b)
	}
}

func (c *cluster) status() *devStatus {
	c.t.Helper()
	out, err := exec.Command(cfsBin, "dev", "status", "--json", "--dir", c.dir).Output()
	if err != nil {
		c.t.Fatalf("cfs dev status: %v", err)
	}
	var s devStatus
	if err := json.Unmarshal(out, &s); err != nil {
		c.t.Fatalf("cfs dev status --json: %v\n%s", err, out)
	}
	return &s
}

// api is a client of the cluster's API with the operator certificate `cfs dev up` wrote
// (what `cfs dev env` exports).
func (c *cluster) api(timeout time.Duration) *node.Client {
	cl, err := node.Creds{CA: filepath.Join(c.dir, "ca.crt"), Cert: filepath.Join(c.dir, "admin.pem")}.Client(timeout)
	if err != nil {
		c.t.Fatalf("the dev cluster's client certificate: %v", err)
	}
	return cl
}

// nodeStatus asks one node's client API for its view, with every group.
func (c *cluster) nodeStatus(addr string) (*node.Status, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	return c.api(3*time.Second).Status(ctx, addr, true)
}

// killNode SIGKILLs a node's supervisor, dataplane and control process at once.
func killNode(t *testing.T, n int, pids ...int) {
	t.Helper()
	for _, p := range pids {
		if p > 0 {
			if err := syscall.Kill(p, syscall.SIGKILL); err != nil {
				t.Logf("kill %d (node %d): %v", p, n, err)
			}
		}
	}
}

// waitFor polls cond every 100 ms until it holds or within passes; it returns how long it took.
func waitFor(t *testing.T, within time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > within {
			t.Fatalf("%s: not within %v", what, within)
		}
		time.Sleep(100 * time.Millisecond)
	}
	return time.Since(start)
}
