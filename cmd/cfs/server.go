package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	mrand "math/rand/v2"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/claudefs/claudefs/controlplane/node"
	"github.com/claudefs/claudefs/controlplane/pki"
	"github.com/claudefs/claudefs/controlplane/supervise"
	"github.com/spf13/cobra"
)

const serverLong = `server makes and runs a ClaudeFS storage node. A node is two processes that
'cfs server run' supervises: the dataplane (the node's device and shard
service) and the control process (Raft groups, membership, the client API).

A node's identity and addresses live in DIR/node.json, written once:
  bootstrap   on the first node of a new cluster
  join        on every other node, with a token from 'cfs admin cluster-token'
and both then run the node in the foreground (--init-only stops after writing
node.json). 'cfs server run --dir DIR' runs a node made earlier.`

type nodeFlags struct {
	dir        string
	host       string
	raftPort   int
	gossipPort int
	clientPort int
	dataPort   int
	metrics    int
	device     string
	deviceSize string
	combining  bool
	initOnly   bool
}

func (f *nodeFlags) register(cmd *cobra.Command) {
	fs := cmd.Flags()
	fs.StringVar(&f.dir, "dir", "/var/lib/cfs", "node directory: node.json, Raft state, logs, and the device file unless --device says otherwise")
	fs.StringVar(&f.host, "host", "127.0.0.1", "address this node listens on and peers reach it at")
	fs.IntVar(&f.raftPort, "raft-port", 7410, "Raft transport port (0 picks a free one, recorded in node.json)")
	fs.IntVar(&f.gossipPort, "gossip-port", 7411, "gossip (SWIM) port, TCP and UDP (0 picks a free one)")
	fs.IntVar(&f.clientPort, "client-port", 7412, "client and admin API port (0 picks a free one)")
	fs.IntVar(&f.dataPort, "data-port", 7420, "dataplane data port (0 picks a free one)")
	fs.IntVar(&f.metrics, "metrics-port", 7421, "port of the dataplane's Prometheus /metrics, plain HTTP (0 picks a free one; -1: none)")
	fs.StringVar(&f.device, "device", "", "the node's device, a block device or a file (default DIR/device.dat)")
	fs.StringVar(&f.deviceSize, "device-size", "4G", "size of the file device laid out on first start when --device does not exist")
	fs.BoolVar(&f.combining, "raft-write-combining", false, "raft.write_combining: combine all groups' Raft log appends into shared durable writes")
	fs.BoolVar(&f.initOnly, "init-only", false, "write DIR/node.json and exit instead of running the node")
}

// nodeConfig builds the node.json of a new node from the flags, choosing free ports for 0.
func (f *nodeFlags) nodeConfig() (*node.Config, error) {
	if err := os.MkdirAll(f.dir, 0o755); err != nil {
		return nil, &runtimeError{err}
	}
	if _, err := os.Stat(filepath.Join(f.dir, node.ConfigFile)); err == nil {
		return nil, fmt.Errorf("%s already holds a node (%s): run it with `cfs server run --dir %s`, or pick an empty --dir", f.dir, node.ConfigFile, f.dir)
	}
	addr := func(port int) (string, error) {
		if port < 0 || port > 65535 {
			return "", fmt.Errorf("port %d: want 0..65535", port)
		}
		if port == 0 {
			p, err := freePort(f.host)
			if err != nil {
				return "", err
			}
			port = p
		}
		return net.JoinHostPort(f.host, strconv.Itoa(port)), nil
	}
	c := &node.Config{Device: f.device, DeviceSize: f.deviceSize, WriteCombining: f.combining}
	if c.Device == "" {
		c.Device = filepath.Join(f.dir, "device.dat")
	}
	var err error
	for _, p := range []struct {
		dst  *string
		port int
	}{{&c.RaftAddr, f.raftPort}, {&c.GossipAddr, f.gossipPort}, {&c.ClientAddr, f.clientPort}, {&c.DataplaneAddr, f.dataPort}} {
		if *p.dst, err = addr(p.port); err != nil {
			return nil, err
		}
	}
	if f.metrics != -1 {
		if c.MetricsAddr, err = addr(f.metrics); err != nil {
			return nil, fmt.Errorf("--metrics-port: %w", err)
		}
	}
	return c, nil
}

// freePort picks a port on host free for both TCP and UDP (gossip uses both), at random
// below the kernel's ephemeral range. The node binds it only later, when its processes
// start: a port from the ephemeral range (what listening on port 0 hands out) may by then
// be the local end of some outgoing connection, and a long-lived one (Raft's, another
// test cluster's) would keep the node's process failing to bind for good.
func freePort(host string) (int, error) {
	lo, hi := 20000, ephemeralLow()
	if hi-lo < 1000 {
		lo, hi = 10000, max(hi, 11000)
	}
	for range 200 {
		port := lo + mrand.IntN(hi-lo)
		l, err := net.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(port)))
		if err != nil {
			continue
		}
		u, err := net.ListenPacket("udp", net.JoinHostPort(host, strconv.Itoa(port)))
		l.Close()
		if err == nil {
			u.Close()
			return port, nil
		}
	}
	return 0, fmt.Errorf("no port in %d..%d free for both TCP and UDP on %s", lo, hi-1, host)
}

// ephemeralLow is the first port of the kernel's ephemeral range (32768 if unknown).
func ephemeralLow() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 32768
	}
	f := strings.Fields(string(b))
	if len(f) < 1 {
		return 32768
	}
	n, err := strconv.Atoi(f[0])
	if err != nil || n <= 1024 {
		return 32768
	}
	return n
}

func newServerCmd(stdout, stderr io.Writer) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "server",
		Short: "Make and run a storage node (bootstrap, join, run)",
		Long:  serverLong,
		Example: `  # first node of a 3-node cluster with 256 metadata shards
  cfs server bootstrap --cluster-name prod-1 --initial-nodes 3 --shards 256 --dir /var/lib/cfs

  # on the first node: a token for the next one (usable once, for 1 hour)
  TOKEN=$(cfs admin cluster-token --node-type storage)

  # on each other node
  cfs server join --token "$TOKEN" --seed 10.0.0.1:7412 --dir /var/lib/cfs

  # later starts
  cfs server run --dir /var/lib/cfs`,
		Args: cobra.NoArgs,
		RunE: showHelp,
	}
	cmd.AddCommand(newServerBootstrapCmd(stdout, stderr), newServerJoinCmd(stdout, stderr), newServerRunCmd(stderr))
	return cmd
}

func newServerBootstrapCmd(stdout, stderr io.Writer) *cobra.Command {
	var f nodeFlags
	var b node.Bootstrap
	var ec string
	cmd := &cobra.Command{
		Use:   "bootstrap --cluster-name NAME --initial-nodes N --shards S [flags]",
		Short: "Make the first node of a new cluster and run it",
		Long: `bootstrap makes this machine the first node (node-1) of a new cluster and runs it.
The cluster group starts with this node alone; the metadata shards (--shards
Raft groups of 3 replicas) are placed across the nodes once --initial-nodes
of them have joined ('cfs server join' with tokens from 'cfs admin
cluster-token').

It also makes the cluster's CA and certificates in DIR/tls/: ca.crt, ca.key
(0600), the node's node.crt and node.key, and admin.pem, an operator's client
certificate and key for cfsctl (export CLAUDEFS_CERT=DIR/tls/admin.pem).`,
		Example: `  cfs server bootstrap --cluster-name prod-1 --initial-nodes 3 --shards 256 --dir /var/lib/cfs --host 10.0.0.1`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			k, m, err := parseEC(ec)
			if err != nil {
				return err
			}
			b.K, b.M = k, m
			if b.ClusterName == "" || b.InitialNodes < 1 || b.Shards < 1 || b.Shards > 65536 {
				return errors.New("--cluster-name, --initial-nodes ≥ 1 and --shards 1..65536 are required")
			}
			c, err := f.nodeConfig()
			if err != nil {
				return err
			}
			c.ID, c.ClusterName, c.Bootstrap = "node-1", b.ClusterName, &b
			if err := node.InitClusterTLS(f.dir, c); err != nil {
				return &runtimeError{fmt.Errorf("making the cluster CA and certificates in %s: %w", node.TLSDir(f.dir), err)}
			}
			if err := node.SaveConfig(f.dir, c); err != nil {
				return &runtimeError{err}
			}
			fmt.Fprintf(stdout, "node-1 of cluster %q made in %s (client API https://%s)\n", b.ClusterName, f.dir, c.ClientAddr)
			fmt.Fprintf(stdout, "cluster CA %s; an operator's client certificate: export CLAUDEFS_CERT=%s CLAUDEFS_CA=%s\n", node.CAFile(f.dir), node.AdminFile(f.dir), node.CAFile(f.dir))
			if f.initOnly {
				return nil
			}
			return runServer(f.dir, stderr)
		},
	}
	f.register(cmd)
	fs := cmd.Flags()
	fs.StringVar(&b.ClusterName, "cluster-name", "", "name of the new cluster (required)")
	fs.IntVar(&b.InitialNodes, "initial-nodes", 3, "nodes that must join before the metadata shards are placed")
	fs.IntVar(&b.Shards, "shards", 256, "metadata shards (Raft groups)")
	fs.IntVar(&b.Replicas, "replicas", 3, "replicas per metadata shard")
	fs.StringVar(&ec, "ec", "4+2", "erasure coding of file data, k+m")
	fs.IntVar(&b.PGs, "pgs", 1024, "placement groups")
	return cmd
}

func parseEC(s string) (int, int, error) {
	ks, ms, ok := strings.Cut(s, "+")
	k, err1 := strconv.Atoi(ks)
	m, err2 := strconv.Atoi(ms)
	if !ok || err1 != nil || err2 != nil || k < 1 || m < 0 || k+m > 64 {
		return 0, 0, fmt.Errorf("--ec %q: want k+m such as 4+2 (k ≥ 1, k+m ≤ 64)", s)
	}
	return k, m, nil
}

func newServerJoinCmd(stdout, stderr io.Writer) *cobra.Command {
	var f nodeFlags
	var token, seed string
	cmd := &cobra.Command{
		Use:   "join --token TOKEN --seed HOST:PORT [flags]",
		Short: "Make this machine a node of an existing cluster and run it",
		Long: `join asks the cluster at --seed (any member's client API address) to admit this
machine with a join token from 'cfs admin cluster-token'. A token admits one
node and expires an hour after it was made; a used or expired token is
refused with a message saying which. The cluster names the node (node-N).

The token also carries the pin (SHA-256 of the public key) of the cluster's CA:
join talks to --seed over TLS without a client certificate, trusts it only if
that CA signed its certificate, and receives in the answer the CA and this
node's certificate (DIR/tls/), signed for a key made here.`,
		Example: `  cfs server join --token "$TOKEN" --seed 10.0.0.1:7412 --dir /var/lib/cfs --host 10.0.0.2`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if token == "" {
				token = os.Getenv("JOIN_TOKEN")
			}
			if token == "" || seed == "" {
				return errors.New("--token (or $JOIN_TOKEN) and --seed are required")
			}
			secret, pin, err := node.SplitJoinToken(token)
			if err != nil {
				return err
			}
			c, err := f.nodeConfig()
			if err != nil {
				return err
			}
			key, err := pki.NewKey()
			if err != nil {
				return &runtimeError{err}
			}
			csr, err := pki.NewCSR(key)
			if err != nil {
				return &runtimeError{err}
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			resp, err := node.NewClient(20*time.Second, node.JoinTLS(pin)).Join(ctx, seed, &node.JoinRequest{
				Token: secret, RaftAddr: c.RaftAddr, GossipAddr: c.GossipAddr, ClientAddr: c.ClientAddr, DataplaneAddr: c.DataplaneAddr, Devices: 1, CSR: string(csr),
			})
			if err != nil {
				return &runtimeError{fmt.Errorf("joining through %s: %w", seed, err)}
			}
			if err := node.InstallJoinTLS(f.dir, resp, key, pin); err != nil {
				return &runtimeError{fmt.Errorf("%s was admitted as %s but its certificates could not be installed in %s: %w", f.dir, resp.NodeID, node.TLSDir(f.dir), err)}
			}
			c.ID, c.ClusterName, c.Seeds = resp.NodeID, resp.ClusterName, resp.Seeds
			if err := node.SaveConfig(f.dir, c); err != nil {
				return &runtimeError{err}
			}
			fmt.Fprintf(stdout, "%s joined cluster %q; made in %s (client API %s)\n", c.ID, c.ClusterName, f.dir, c.ClientAddr)
			if f.initOnly {
				return nil
			}
			return runServer(f.dir, stderr)
		},
	}
	f.register(cmd)
	cmd.Flags().StringVar(&token, "token", "", "join token from `cfs admin cluster-token` (default $JOIN_TOKEN)")
	cmd.Flags().StringVar(&seed, "seed", "", "client API address (HOST:PORT) of any member")
	return cmd
}

func newServerRunCmd(stderr io.Writer) *cobra.Command {
	var dir string
	cmd := &cobra.Command{
		Use:   "run [--dir DIR]",
		Short: "Run a node made earlier: supervise its dataplane and control process",
		Long: `run starts the node in DIR (see DIR/node.json): its dataplane and its control
process, each restarted with a growing back-off if it exits, until SIGTERM,
which it passes on and waits for. The children's output goes to
DIR/dataplane.log and DIR/control.log; their pids to DIR/pids.json.`,
		Example: `  cfs server run --dir /var/lib/cfs`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runServer(dir, stderr)
		},
	}
	cmd.Flags().StringVar(&dir, "dir", "/var/lib/cfs", "node directory")
	return cmd
}

// runServer supervises the node in dir until SIGTERM or SIGINT.
func runServer(dir string, stderr io.Writer) error {
	c, err := node.LoadConfig(dir)
	if err != nil {
		return &runtimeError{err}
	}
	self, err := os.Executable()
	if err != nil {
		return &runtimeError{err}
	}
	logger := log.New(stderr, "cfs server ("+c.ID+"): ", log.LstdFlags|log.Lmicroseconds)
	// --device-size only lays out a missing file; an existing device keeps its size.
	dp := []string{"dataplane", "--device", c.Device, "--device-size", c.DeviceSize, "--listen", c.DataplaneAddr, "--control-socket", node.DataplaneSocket(dir)}
	if c.MetricsAddr != "" {
		dp = append(dp, "--metrics-listen", c.MetricsAddr)
	}
	sup := supervise.New([]supervise.Child{
		{Name: "dataplane", Path: self, Args: dp, Log: filepath.Join(dir, "dataplane.log")},
		{Name: "control", Path: self, Args: []string{"control", "--dir", dir}, Log: filepath.Join(dir, "control.log")},
	}, node.PidFile(dir), logger.Printf)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	logger.Printf("running: client API %s, data %s, Raft %s, gossip %s", c.ClientAddr, c.DataplaneAddr, c.RaftAddr, c.GossipAddr)
	err = sup.Run(ctx)
	logger.Printf("stopped")
	return err
}
