package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/claudefs/claudefs/controlplane/node"
	"github.com/spf13/cobra"
)

// adminFlags find the cluster: --endpoint, else $CFS_ENDPOINT, else the client address in
// the node's own config (--node-dir, default /var/lib/cfs).
type adminFlags struct {
	endpoint string
	nodeDir  string
	asJSON   bool
	timeout  time.Duration
}

func (f *adminFlags) register(cmd *cobra.Command) {
	fs := cmd.PersistentFlags()
	fs.StringVar(&f.endpoint, "endpoint", "", "client API address(es) of any node, HOST:PORT[,HOST:PORT…] (default $CFS_ENDPOINT, else this node's own)")
	fs.StringVar(&f.nodeDir, "node-dir", "/var/lib/cfs", "node directory whose node.json names this node's client API (used without --endpoint and $CFS_ENDPOINT)")
	fs.BoolVar(&f.asJSON, "json", false, "print JSON")
	fs.DurationVar(&f.timeout, "timeout", 20*time.Second, "give up after this long")
}

// endpoints lists the addresses to try, in order.
func (f *adminFlags) endpoints() ([]string, error) {
	ep := f.endpoint
	if ep == "" {
		ep = os.Getenv("CFS_ENDPOINT")
	}
	if ep != "" {
		return strings.Split(ep, ","), nil
	}
	c, err := node.LoadConfig(f.nodeDir)
	if err != nil {
		return nil, fmt.Errorf("no cluster to talk to: give --endpoint HOST:PORT or set CFS_ENDPOINT (for a dev cluster: eval \"$(cfs dev env)\"); this machine's node config: %v", err)
	}
	return []string{c.ClientAddr}, nil
}

// each calls fn with each endpoint until one answers without a transport error.
func (f *adminFlags) each(fn func(ctx context.Context, addr string) error) error {
	eps, err := f.endpoints()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), f.timeout)
	defer cancel()
	var last error
	for _, ep := range eps {
		last = fn(ctx, strings.TrimSpace(ep))
		var apiErr *node.APIError
		if last == nil || errors.As(last, &apiErr) {
			break // the node answered, well or not
		}
	}
	if last != nil {
		return &runtimeError{last}
	}
	return nil
}

func newAdminCmd(stdout io.Writer) *cobra.Command {
	var f adminFlags
	cmd := &cobra.Command{
		Use:   "admin",
		Short: "Operate a cluster (the runbook's cfs admin commands)",
		Long: `admin talks to any node's client API. It finds the cluster from --endpoint,
else $CFS_ENDPOINT, else the node config of the machine it runs on.`,
		Example: `  TOKEN=$(cfs admin cluster-token --node-type storage)`,
		Args:    cobra.NoArgs,
		RunE:    showHelp,
	}
	f.register(cmd)
	cmd.AddCommand(newClusterTokenCmd(&f, stdout))
	return cmd
}

func newClusterTokenCmd(f *adminFlags, stdout io.Writer) *cobra.Command {
	var nodeType string
	var ttl time.Duration
	cmd := &cobra.Command{
		Use:   "cluster-token --node-type storage",
		Short: "Make a join token for a new node (usable once, expires in 1 hour)",
		Long: `cluster-token asks the cluster for a join token and prints it on stdout alone
(so TOKEN=$(cfs admin cluster-token) works). The token admits one node with
'cfs server join --token TOKEN --seed ADDR' and expires an hour after it was
made. Only its hash is stored in the cluster.`,
		Example: `  TOKEN=$(cfs admin cluster-token --node-type storage)
  cfs admin cluster-token --node-type storage --json | jq -r .expires`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if nodeType != "storage" {
				return fmt.Errorf("--node-type %q: only storage nodes exist", nodeType)
			}
			return f.each(func(ctx context.Context, addr string) error {
				t, err := node.NewClient(f.timeout).Token(ctx, addr, nodeType, ttl.String())
				if err != nil {
					return err
				}
				if f.asJSON {
					return json.NewEncoder(stdout).Encode(t)
				}
				fmt.Fprintln(stdout, t.Token)
				return nil
			})
		},
	}
	cmd.Flags().StringVar(&nodeType, "node-type", "storage", "type of node the token admits")
	cmd.Flags().DurationVar(&ttl, "ttl", time.Hour, "how long the token stays usable (at most 24h)")
	return cmd
}
