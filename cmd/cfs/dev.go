package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/claudefs/claudefs/controlplane/cluster"
	"github.com/claudefs/claudefs/controlplane/node"
	"github.com/claudefs/claudefs/controlplane/pki"
	"github.com/claudefs/claudefs/controlplane/supervise"
	"github.com/spf13/cobra"
)

const devLong = `dev runs a whole ClaudeFS cluster on this machine for development and tests:
every node's dataplane and control process on loopback, file-backed devices,
no configuration. Everything lives under --dir (default ./cfs-dev): one
directory per node with its node.json, logs, Raft state and device file.`

// devCluster is DIR/cluster.json: the node directories of a dev cluster.
type devCluster struct {
	Name  string   `json:"name"`
	Nodes []string `json:"nodes"` // node directories, relative to DIR
}

const devClusterFile = "cluster.json"

func newDevCmd(stdout, stderr io.Writer) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "dev",
		Short: "Run a local cluster on loopback (up, status, down, env)",
		Long:  devLong,
		Example: `  cfs dev up --nodes 3 --shards 256
  cfs dev status
  cfs dev status --json | jq '.groups'
  eval "$(cfs dev env)"
  cfs dev down`,
		Args: cobra.NoArgs,
		RunE: showHelp,
	}
	cmd.AddCommand(newDevUpCmd(stdout, stderr), newDevStatusCmd(stdout), newDevDownCmd(stdout), newDevEnvCmd(stdout))
	return cmd
}

func newDevUpCmd(stdout, stderr io.Writer) *cobra.Command {
	var dir, deviceSize string
	var nodes, shards int
	var combining bool
	var wait time.Duration
	cmd := &cobra.Command{
		Use:   "up [--nodes N] [--shards S] [--dir DIR]",
		Short: "Start a local cluster (or restart the one in --dir)",
		Long: `up makes a cluster of --nodes nodes under --dir and starts it: node 1
bootstraps, the others join with tokens, exactly as on real machines. It
waits until every node is HEALTHY and every Raft group has a leader (up to
--wait), printing progress, then prints where everything is.

If --dir already holds a dev cluster, up starts its nodes again (their data
is kept); --nodes and --shards then do not apply.`,
		Example: `  cfs dev up
  cfs dev up --nodes 3 --shards 256 --dir /tmp/cfs-dev --device-size 1G`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if nodes < 1 || nodes > 16 {
				return fmt.Errorf("--nodes %d: want 1..16 on one machine", nodes)
			}
			if shards < 1 || shards > 4096 {
				return fmt.Errorf("--shards %d: want 1..4096 for a dev cluster", shards)
			}
			return devUp(dir, nodes, shards, deviceSize, combining, wait, stdout, stderr)
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&dir, "dir", "./cfs-dev", "directory holding the cluster")
	fs.IntVar(&nodes, "nodes", 3, "nodes")
	fs.IntVar(&shards, "shards", 256, "metadata shards (Raft groups of 3 replicas)")
	fs.StringVar(&deviceSize, "device-size", "1G", "size of each node's file device")
	fs.BoolVar(&combining, "raft-write-combining", false, "raft.write_combining on every node")
	fs.DurationVar(&wait, "wait", 3*time.Minute, "how long to wait for the cluster to be healthy")
	return cmd
}

func devUp(dir string, nodes, shards int, deviceSize string, combining bool, wait time.Duration, stdout, stderr io.Writer) (err error) {
	self, err := os.Executable()
	if err != nil {
		return &runtimeError{err}
	}
	dc, err := readDevCluster(dir)
	fresh := errors.Is(err, os.ErrNotExist)
	if err != nil && !fresh {
		return &runtimeError{err}
	}
	var started []string
	defer func() {
		if err != nil && len(started) > 0 {
			fmt.Fprintf(stderr, "cfs dev up failed; stopping the nodes it started (their logs stay in %s)\n", dir)
			stopNodes(dir, started, io.Discard)
		}
	}()
	if !fresh {
		for _, n := range dc.Nodes {
			if supervisorAlive(filepath.Join(dir, n)) {
				continue
			}
			if err := startNode(self, filepath.Join(dir, n)); err != nil {
				return &runtimeError{err}
			}
			started = append(started, n)
		}
		if len(started) == 0 {
			fmt.Fprintf(stdout, "the dev cluster in %s is already running\n", dir)
		}
	} else {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return &runtimeError{err}
		}
		dc = &devCluster{Name: "dev"}
		common := []string{"--init-only", "--host", "127.0.0.1", "--raft-port", "0", "--gossip-port", "0", "--client-port", "0", "--data-port", "0", "--metrics-port", "0", "--device-size", deviceSize}
		if combining {
			common = append(common, "--raft-write-combining")
		}
		var seed string
		for i := 1; i <= nodes; i++ {
			name := fmt.Sprintf("node%d", i)
			nd := filepath.Join(dir, name)
			args := append([]string{"server"}, common...)
			args = append(args, "--dir", nd)
			if i == 1 {
				args = append(args[:1], append([]string{"bootstrap", "--cluster-name", dc.Name, "--initial-nodes", strconv.Itoa(nodes), "--shards", strconv.Itoa(shards)}, args[1:]...)...)
			} else {
				client, err := devCreds(dir).Client(10 * time.Second)
				if err != nil {
					return &runtimeError{err}
				}
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				tok, err := retryToken(ctx, client, seed)
				cancel()
				if err != nil {
					return &runtimeError{fmt.Errorf("getting a join token for %s from node 1: %w", name, err)}
				}
				args = append(args[:1], append([]string{"join", "--token", tok, "--seed", seed}, args[1:]...)...)
			}
			if out, err := exec.Command(self, args...).CombinedOutput(); err != nil {
				return &runtimeError{fmt.Errorf("cfs %v: %v: %s", args, err, out)}
			}
			dc.Nodes = append(dc.Nodes, name)
			if err := writeDevCluster(dir, dc); err != nil {
				return &runtimeError{err}
			}
			if err := startNode(self, nd); err != nil {
				return &runtimeError{err}
			}
			started = append(started, name)
			if i == 1 {
				c, err := node.LoadConfig(nd)
				if err != nil {
					return &runtimeError{err}
				}
				seed = c.ClientAddr
				if err := writeDevCreds(dir, nd); err != nil {
					return &runtimeError{fmt.Errorf("writing the dev cluster's client certificate: %w", err)}
				}
			}
			fmt.Fprintf(stderr, "node %d of %d started\n", i, nodes)
		}
	}
	// Wait for every node HEALTHY and every group with a leader.
	deadline := time.Now().Add(wait)
	lastLine := ""
	for {
		st := devStatus(dir, dc)
		ok := st.Groups.Total > 0 && st.Groups.WithLeader == st.Groups.Total && len(st.Nodes) == len(dc.Nodes)
		for _, n := range st.Nodes {
			ok = ok && n.State == cluster.Healthy
		}
		line := fmt.Sprintf("waiting: %d/%d nodes healthy, %d/%d groups with a leader", countHealthy(st), len(dc.Nodes), st.Groups.WithLeader, st.Groups.Total)
		if line != lastLine {
			fmt.Fprintln(stderr, line)
			lastLine = line
		}
		if ok {
			printDevStatus(stdout, st)
			fmt.Fprintf(stdout, "\nstop it with: cfs dev down --dir %s\n", dir)
			return nil
		}
		if time.Now().After(deadline) {
			printDevStatus(stderr, st)
			return &runtimeError{fmt.Errorf("the cluster was not healthy after %s; see the logs under %s (node*/control.log, node*/dataplane.log)", wait, dir)}
		}
		time.Sleep(500 * time.Millisecond)
	}
}

func countHealthy(st *devStatusJSON) int {
	n := 0
	for _, x := range st.Nodes {
		if x.State == cluster.Healthy {
			n++
		}
	}
	return n
}

// retryToken asks addr for a join token until it answers or ctx ends (node 1's control
// process needs a moment to elect itself leader of the cluster group).
func retryToken(ctx context.Context, c *node.Client, addr string) (string, error) {
	for {
		t, err := c.Token(ctx, addr, "storage", "")
		if err == nil {
			return t.Token, nil
		}
		select {
		case <-ctx.Done():
			return "", err
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// startNode starts `cfs server run --dir nd` detached from this process (its own session),
// output in nd/server.log.
func startNode(self, nd string) error {
	abs, err := filepath.Abs(nd)
	if err != nil {
		return err
	}
	out, err := os.OpenFile(filepath.Join(abs, "server.log"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer out.Close()
	cmd := exec.Command(self, "server", "run", "--dir", abs)
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return err
	}
	// Wait for the supervisor to record its pid, so status and down can find it.
	for range 100 {
		if pids, err := supervise.ReadPids(node.PidFile(abs)); err == nil && pids["supervisor"] == cmd.Process.Pid {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	return cmd.Process.Release()
}

func alive(pid int) bool { return pid > 0 && syscall.Kill(pid, 0) == nil }

func supervisorAlive(nd string) bool {
	pids, err := supervise.ReadPids(node.PidFile(nd))
	return err == nil && alive(pids["supervisor"])
}

func readDevCluster(dir string) (*devCluster, error) {
	b, err := os.ReadFile(filepath.Join(dir, devClusterFile))
	if err != nil {
		return nil, err
	}
	var dc devCluster
	if err := json.Unmarshal(b, &dc); err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(dir, devClusterFile), err)
	}
	return &dc, nil
}

func writeDevCluster(dir string, dc *devCluster) error {
	b, _ := json.MarshalIndent(dc, "", "  ")
	return os.WriteFile(filepath.Join(dir, devClusterFile), append(b, '\n'), 0o644)
}

// devStatusJSON is `cfs dev status --json`. Field names are stable.
type devStatusJSON struct {
	Groups  node.GroupsSummary `json:"groups"` // over the whole cluster: distinct groups, with a leader
	Dir     string             `json:"dir"`
	Cluster string             `json:"cluster_name"`
	Epoch   uint64             `json:"epoch"`
	Nodes   []devNodeJSON      `json:"nodes"`
}

type devNodeJSON struct {
	ID            string            `json:"id"`
	Dir           string            `json:"dir"`
	State         cluster.NodeState `json:"state"`
	SupervisorPid int               `json:"supervisor_pid,omitempty"`
	Dataplane     devProcJSON       `json:"dataplane"`
	Control       devProcJSON       `json:"control"`
	Error         string            `json:"error,omitempty"`
}

type devProcJSON struct {
	Pid        int    `json:"pid,omitempty"`
	Addr       string `json:"addr"`                  // dataplane: data port; control: client API
	MetricsURL string `json:"metrics_url,omitempty"` // dataplane only: its Prometheus /metrics
	RaftAddr   string `json:"raft_addr,omitempty"`   // control only
	GossipAddr string `json:"gossip_addr,omitempty"` // control only
	Log        string `json:"log"`
}

func devStatus(dir string, dc *devCluster) *devStatusJSON {
	st := &devStatusJSON{Dir: dir, Cluster: dc.Name}
	client, cerr := devCreds(dir).Client(3 * time.Second)
	type groupView struct{ leader bool }
	groups := map[uint32]*groupView{}
	states := map[string]cluster.NodeState{}
	for _, name := range dc.Nodes {
		nd := filepath.Join(dir, name)
		n := devNodeJSON{Dir: nd}
		c, err := node.LoadConfig(nd)
		if err != nil {
			n.Error = err.Error()
			st.Nodes = append(st.Nodes, n)
			continue
		}
		n.ID = c.ID
		n.Dataplane = devProcJSON{Addr: c.DataplaneAddr, Log: filepath.Join(nd, "dataplane.log")}
		if c.MetricsAddr != "" {
			n.Dataplane.MetricsURL = "http://" + c.MetricsAddr + "/metrics"
		}
		n.Control = devProcJSON{Addr: c.ClientAddr, RaftAddr: c.RaftAddr, GossipAddr: c.GossipAddr, Log: filepath.Join(nd, "control.log")}
		if pids, err := supervise.ReadPids(node.PidFile(nd)); err == nil {
			for name, dst := range map[string]*int{"supervisor": &n.SupervisorPid, "dataplane": &n.Dataplane.Pid, "control": &n.Control.Pid} {
				if alive(pids[name]) {
					*dst = pids[name]
				}
			}
		}
		if cerr != nil {
			n.Error = cerr.Error()
			st.Nodes = append(st.Nodes, n)
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		s, err := client.Status(ctx, c.ClientAddr, true)
		cancel()
		if err != nil {
			n.Error = err.Error()
		} else {
			if s.Epoch > st.Epoch {
				st.Epoch = s.Epoch
			}
			for _, ns := range s.Nodes {
				if states[ns.ID] == "" || s.Leader == s.NodeID {
					states[ns.ID] = ns.State // the cluster leader's record wins
				}
			}
			for _, g := range s.GroupList {
				v := groups[g.ID]
				if v == nil {
					v = &groupView{}
					groups[g.ID] = v
				}
				v.leader = v.leader || g.State == "Leader"
			}
		}
		st.Nodes = append(st.Nodes, n)
	}
	for i := range st.Nodes {
		st.Nodes[i].State = states[st.Nodes[i].ID]
		if st.Nodes[i].State == "" {
			st.Nodes[i].State = "UNKNOWN"
		}
	}
	st.Groups.Total = len(groups)
	for _, g := range groups {
		if g.leader {
			st.Groups.WithLeader++
		}
	}
	return st
}

func printDevStatus(w io.Writer, st *devStatusJSON) {
	fmt.Fprintf(w, "cluster %q in %s: %d nodes, groups with a leader %d/%d, placement epoch %d\n",
		st.Cluster, st.Dir, len(st.Nodes), st.Groups.WithLeader, st.Groups.Total, st.Epoch)
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tSTATE\tDATAPLANE PID\tDATA ADDR\tDP METRICS\tCONTROL PID\tCLIENT API\tRAFT\tGOSSIP")
	sort.SliceStable(st.Nodes, func(i, j int) bool { return st.Nodes[i].Dir < st.Nodes[j].Dir })
	pid := func(p int) string {
		if p == 0 {
			return "-"
		}
		return strconv.Itoa(p)
	}
	for _, n := range st.Nodes {
		dpm := strings.TrimSuffix(strings.TrimPrefix(n.Dataplane.MetricsURL, "http://"), "/metrics")
		if dpm == "" {
			dpm = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", n.ID, n.State, pid(n.Dataplane.Pid), n.Dataplane.Addr, dpm, pid(n.Control.Pid), n.Control.Addr, n.Control.RaftAddr, n.Control.GossipAddr)
	}
	tw.Flush()
	for _, n := range st.Nodes {
		if n.Error != "" {
			fmt.Fprintf(w, "%s: %s\n", n.Dir, n.Error)
		}
	}
	if len(st.Nodes) > 0 {
		fmt.Fprintf(w, "logs: %s/{server,control,dataplane}.log\n", filepath.Join(st.Dir, "node*"))
	}
}

func newDevStatusCmd(stdout io.Writer) *cobra.Command {
	var dir string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "status [--dir DIR] [--json]",
		Short: "Show the local cluster: nodes, their processes and addresses, Raft groups",
		Long: `status shows each node of the dev cluster in --dir: its id and state as the
cluster records it, the pids and addresses of its dataplane and control
process, and how many Raft groups have a leader. --json prints the same as a
JSON object (fields: groups.total, groups.with_leader, epoch, nodes[].id,
.state, .supervisor_pid, .dataplane.pid, .dataplane.addr, .control.pid,
.control.addr (client API), .control.raft_addr, .control.gossip_addr).`,
		Example: `  cfs dev status
  cfs dev status --json | jq -r '.nodes[].control.addr'`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			dc, err := readDevCluster(dir)
			if err != nil {
				return &runtimeError{fmt.Errorf("no dev cluster in %s (%v): start one with `cfs dev up --dir %s`", dir, err, dir)}
			}
			st := devStatus(dir, dc)
			if asJSON {
				enc := json.NewEncoder(stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(st)
			}
			printDevStatus(stdout, st)
			return nil
		},
	}
	cmd.Flags().StringVar(&dir, "dir", "./cfs-dev", "directory holding the cluster")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func newDevDownCmd(stdout io.Writer) *cobra.Command {
	var dir string
	cmd := &cobra.Command{
		Use:   "down [--dir DIR]",
		Short: "Stop the local cluster, leaving no process behind (data is kept)",
		Long: `down sends SIGTERM to every node's supervisor (which stops its dataplane and
control process cleanly), waits for all of them, and SIGKILLs whatever is left
after 30 s. The data stays in --dir: 'cfs dev up --dir DIR' starts the same
cluster again; remove the directory to forget it.`,
		Example: `  cfs dev down
  cfs dev down --dir /tmp/cfs-dev && rm -rf /tmp/cfs-dev`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			dc, err := readDevCluster(dir)
			if err != nil {
				return &runtimeError{fmt.Errorf("no dev cluster in %s (%v)", dir, err)}
			}
			if left := stopNodes(dir, dc.Nodes, stdout); left > 0 {
				return &runtimeError{fmt.Errorf("%d processes survived SIGKILL", left)}
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&dir, "dir", "./cfs-dev", "directory holding the cluster")
	return cmd
}

// stopNodes stops the nodes in dir/names and returns how many processes are still alive.
func stopNodes(dir string, names []string, w io.Writer) int {
	var all []int
	for _, name := range names {
		pids, err := supervise.ReadPids(node.PidFile(filepath.Join(dir, name)))
		if err != nil {
			continue
		}
		for _, p := range pids {
			if alive(p) {
				all = append(all, p)
			}
		}
		if p := pids["supervisor"]; alive(p) {
			_ = syscall.Kill(p, syscall.SIGTERM)
		} else { // no supervisor: stop its children directly
			for _, p := range pids {
				_ = syscall.Kill(p, syscall.SIGTERM)
			}
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		n := 0
		for _, p := range all {
			if alive(p) && !zombie(p) {
				n++
			}
		}
		if n == 0 {
			fmt.Fprintf(w, "stopped %d nodes (%d processes)\n", len(names), len(all))
			return 0
		}
		time.Sleep(100 * time.Millisecond)
	}
	left := 0
	for _, p := range all {
		if alive(p) && !zombie(p) {
			fmt.Fprintf(w, "pid %d did not stop within 30 s of SIGTERM; killing it\n", p)
			_ = syscall.Kill(p, syscall.SIGKILL)
		}
	}
	time.Sleep(200 * time.Millisecond)
	for _, p := range all {
		if alive(p) && !zombie(p) {
			left++
		}
	}
	return left
}

// zombie reports whether pid has exited and waits for a parent to reap it.
func zombie(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return true
	}
	// The state follows the parenthesised command name.
	for i := len(b) - 1; i > 0; i-- {
		if b[i] == ')' && i+2 < len(b) {
			return b[i+2] == 'Z'
		}
	}
	return false
}

func newDevEnvCmd(stdout io.Writer) *cobra.Command {
	var dir string
	cmd := &cobra.Command{
		Use:   "env [--dir DIR]",
		Short: "Print the export lines that point cfs admin at the local cluster",
		Long: `env prints shell export lines for the dev cluster in --dir: CFS_ENDPOINT (the
nodes' client API addresses, read by 'cfs admin' and cfsctl), CLAUDEFS_CERT and
CLAUDEFS_CA (the dev cluster's operator certificate and key, DIR/admin.pem, and
its CA, DIR/ca.crt, which 'cfs dev up' wrote), CFS_DATAPLANES (the
dataplane addresses, for 'cfs bench run --target dataplane:ADDR') and
CFS_CLUSTER (the control processes' Raft addresses, read by 'cfs mount').`,
		Example: `  eval "$(cfs dev env --dir /tmp/cfs-dev)"`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			dc, err := readDevCluster(dir)
			if err != nil || len(dc.Nodes) == 0 {
				return &runtimeError{fmt.Errorf("no dev cluster in %s: start one with `cfs dev up --dir %s`", dir, dir)}
			}
			var eps, dps, rafts []string
			for _, n := range dc.Nodes {
				if c, err := node.LoadConfig(filepath.Join(dir, n)); err == nil {
					eps = append(eps, c.ClientAddr)
					dps = append(dps, c.DataplaneAddr)
					rafts = append(rafts, c.RaftAddr)
				}
			}
			if len(eps) == 0 {
				return &runtimeError{fmt.Errorf("no node config readable under %s", dir)}
			}
			fmt.Fprintf(stdout, "export CFS_ENDPOINT=%s\n", strings.Join(eps, ","))
			cr := devCreds(dir)
			for _, kv := range [][2]string{{node.EnvCert, cr.Cert}, {node.EnvCA, cr.CA}} {
				abs, err := filepath.Abs(kv[1])
				if err != nil {
					return &runtimeError{err}
				}
				fmt.Fprintf(stdout, "export %s=%s\n", kv[0], shellQuote(abs))
			}
			fmt.Fprintf(stdout, "export CFS_DATAPLANES=%s\n", strings.Join(dps, ","))
			fmt.Fprintf(stdout, "export CFS_CLUSTER=%s\n", strings.Join(rafts, ","))
			return nil
		},
	}
	cmd.Flags().StringVar(&dir, "dir", "./cfs-dev", "directory holding the cluster")
	return cmd
}

// devCreds are the operator credentials `cfs dev up` writes into a dev cluster's directory.
func devCreds(dir string) node.Creds {
	return node.Creds{CA: filepath.Join(dir, "ca.crt"), Cert: filepath.Join(dir, "admin.pem")}
}

// writeDevCreds copies the first node's CA certificate and operator certificate (made by
// `cfs server bootstrap`) to where devCreds finds them.
func writeDevCreds(dir, firstNode string) error {
	cr := devCreds(dir)
	for _, f := range []struct {
		from, to string
		perm     os.FileMode
	}{{node.CAFile(firstNode), cr.CA, 0o644}, {node.AdminFile(firstNode), cr.Cert, 0o600}} {
		b, err := pki.ReadFile(f.from)
		if err != nil {
			return err
		}
		if err := pki.WriteFile(f.to, b, f.perm); err != nil {
			return err
		}
	}
	return nil
}

// shellQuote quotes s for a POSIX shell when it holds anything but safe characters.
func shellQuote(s string) string {
	if strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789/._-+:,=@") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
