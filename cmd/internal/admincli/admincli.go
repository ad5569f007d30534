// Package admincli is the operator command tree: `cfsctl …` and `cfs admin …` are the same
// commands, built here. Every command talks to a node's admin API (controlplane/node,
// admin_api.go), prints the runbook's human shape or, with --json, the API's JSON (stable
// field names, documented in docs/operations.md), and exits 0 only when it did what it
// was asked. Failures name the node and the cause and say what to try.
package admincli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/claudefs/claudefs/controlplane/node"
	"github.com/spf13/cobra"
)

// Options configure the tree.
type Options struct {
	Stdout, Stderr io.Writer
	// Runtime wraps an error that happened while a command ran (exit status 1), as
	// opposed to a bad command line (exit status 2).
	Runtime func(error) error
	// Prog is how the commands are invoked in examples: "cfsctl" or "cfs admin".
	Prog string
}

// flags find the cluster and shape output; shared by every command.
type flags struct {
	endpoint string
	nodeDir  string
	cert     string
	key      string
	ca       string
	asJSON   bool
	timeout  time.Duration
	o        Options
}

func (f *flags) register(cmd *cobra.Command) {
	fs := cmd.PersistentFlags()
	fs.StringVar(&f.endpoint, "endpoint", "", "client API address(es) of any node, HOST:PORT[,HOST:PORT…] (default $CFS_ENDPOINT, else this node's own from --node-dir)")
	fs.StringVar(&f.nodeDir, "node-dir", "/var/lib/cfs", "node directory whose node.json names this node's client API (used without --endpoint and $CFS_ENDPOINT)")
	fs.StringVar(&f.cert, "cert", "", "client certificate, PEM holding the certificate and its key (default $CLAUDEFS_CERT, else the node's own from --node-dir)")
	fs.StringVar(&f.key, "key", "", "the client certificate's key when --cert holds only the certificate (default $CLAUDEFS_KEY)")
	fs.StringVar(&f.ca, "ca", "", "the cluster CA's certificate the nodes are checked against (default $CLAUDEFS_CA, else --node-dir's tls/ca.crt)")
	fs.BoolVar(&f.asJSON, "json", false, "print JSON (stable field names: docs/operations.md)")
	fs.DurationVar(&f.timeout, "timeout", 20*time.Second, "give up after this long")
}

// endpoints lists the addresses to try, in order.
func (f *flags) endpoints() ([]string, error) {
	ep := f.endpoint
	if ep == "" {
		ep = os.Getenv("CFS_ENDPOINT")
	}
	if ep != "" {
		var out []string
		for _, e := range strings.Split(ep, ",") {
			if e = strings.TrimSpace(e); e != "" {
				out = append(out, e)
			}
		}
		if len(out) > 64 {
			return nil, fmt.Errorf("%d endpoints: at most 64", len(out))
		}
		if len(out) > 0 {
			return out, nil
		}
	}
	c, err := node.LoadConfig(f.nodeDir)
	if err != nil {
		return nil, fmt.Errorf("no cluster to talk to: give --endpoint HOST:PORT or set CFS_ENDPOINT (for a dev cluster: eval \"$(cfs dev env)\"); this machine's node config: %v", err)
	}
	return []string{c.ClientAddr}, nil
}

// perTry bounds one endpoint's answer before the next is tried (a stopped node accepts
// connections and never answers).
const perTry = 8 * time.Second

// call sends one request to the first endpoint that answers and decodes into out; it
// returns the address that answered.
func (f *flags) call(ctx context.Context, method, path string, in, out any) (string, error) {
	eps, err := f.endpoints()
	if err != nil {
		return "", err
	}
	c, err := f.client()
	if err != nil {
		return "", err
	}
	var errs []string
	for _, ep := range eps {
		tctx, cancel := context.WithTimeout(ctx, perTry)
		err := c.Do(tctx, ep, method, path, in, out)
		timedOut := tctx.Err() != nil
		cancel()
		var apiErr *node.APIError
		if err == nil {
			return ep, nil
		}
		var credErr *node.CredError
		if errors.As(err, &apiErr) {
			return ep, err // the node answered: its answer stands
		}
		if errors.As(err, &credErr) {
			return ep, err // every node would refuse the same credentials
		}
		if timedOut {
			err = fmt.Errorf("node at %s did not answer within %s (stopped or hung?)", ep, perTry)
		}
		errs = append(errs, err.Error())
		if ctx.Err() != nil {
			break
		}
	}
	return "", fmt.Errorf("no node answered: %s; check that the cluster runs (cfs dev status) and --endpoint/CFS_ENDPOINT", strings.Join(errs, "; "))
}

// callAt sends one request to addr.
func (f *flags) callAt(ctx context.Context, addr, method, path string, in, out any) error {
	c, err := f.client()
	if err != nil {
		return err
	}
	return c.Do(ctx, addr, method, path, in, out)
}

// client is an API client with the certificate and CA of --cert/--key/--ca, else
// $CLAUDEFS_CERT/$CLAUDEFS_KEY/$CLAUDEFS_CA, else the node directory's own.
func (f *flags) client() (*node.Client, error) {
	return node.FindCreds(f.cert, f.key, f.ca, f.nodeDir).Client(f.timeout)
}

func (f *flags) ctx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), f.timeout)
}

func (f *flags) fail(err error) error {
	if err == nil {
		return nil
	}
	return f.o.Runtime(err)
}

func (f *flags) printJSON(v any) error {
	enc := json.NewEncoder(f.o.Stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func (f *flags) printf(format string, args ...any) { fmt.Fprintf(f.o.Stdout, format, args...) }

// cluster fetches the cluster view (with every member's report unless bare).
func (f *flags) cluster(ctx context.Context, bare bool) (*node.AdminCluster, error) {
	var c node.AdminCluster
	path := "/v1/admin/cluster"
	if bare {
		path += "?reports=0"
	}
	_, err := f.call(ctx, http.MethodGet, path, nil, &c)
	return &c, err
}

// New builds the command tree under a command called use ("admin" for cfs, "cfsctl").
func New(use string, o Options) *cobra.Command {
	f := &flags{o: o}
	p := o.Prog
	cmd := &cobra.Command{
		Use:   use,
		Short: "Operate a ClaudeFS cluster (the runbook's cfs admin commands)",
		Long: `Operator commands for a ClaudeFS cluster: health, nodes, Raft groups, shards,
configuration, metrics, alerts, maintenance and CPU profiling, as the operations
runbook uses them.

The cluster is found from --endpoint, else $CFS_ENDPOINT (comma-separated
addresses are tried in order), else the node.json of the node this runs on
(--node-dir). The API is HTTPS with client certificates of the cluster's CA:
the certificate comes from --cert (PEM with certificate and key; or --key for
the key), else $CLAUDEFS_CERT ($CLAUDEFS_KEY), else the node's own (--node-dir's
tls/node.crt); the CA from --ca, else $CLAUDEFS_CA, else --node-dir's
tls/ca.crt. 'cfs dev env' prints all of them for a dev cluster. Every command takes --json for scripts; exit status is 0 on
success, 1 when the cluster could not do it, 2 on a bad command line.`,
		Example: fmt.Sprintf(`  eval "$(cfs dev env)"            # a dev cluster: CFS_ENDPOINT, CLAUDEFS_CERT, CLAUDEFS_CA
  %[1]s status
  %[1]s node-status --all --json | jq '.nodes[] | {id, state}'`, p),
		Args:          cobra.NoArgs,
		SilenceErrors: true,
		SilenceUsage:  true,
		RunE:          func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	f.register(cmd)
	storage := &cobra.Command{Use: "storage", Short: "Storage figures (storage stats)", Args: cobra.NoArgs,
		Example: fmt.Sprintf("  %s storage stats --json | jq '.nodes[] | {name, usage_pct}'", p),
		RunE:    func(cmd *cobra.Command, _ []string) error { return cmd.Help() }}
	storage.AddCommand(newStorageStats(f))
	config := &cobra.Command{Use: "config", Short: "Read and change the cluster's configuration (config get, config set)", Args: cobra.NoArgs,
		Example: fmt.Sprintf("  %[1]s config set nvme.queue_depth=128\n  %[1]s config get nvme.queue_depth", p),
		RunE:    func(cmd *cobra.Command, _ []string) error { return cmd.Help() }}
	config.AddCommand(newConfigSet(f), newConfigGet(f))
	cmd.AddCommand(newStatus(f), newNodeStatus(f), newNodeList(f), newAlerts(f), newCapacityCheck(f), newStats(f),
		newHealthReport(f), storage, newRaftStatus(f), newShardStats(f), newShardDistribution(f), config, newMetrics(f),
		newHardwareStats(f), newNetworkHealth(f), newSetLogLevel(f), newSetWindow(f), newClearWindow(f), newNodeStop(f),
		newClusterToken(f), newProfile(f), newFlamegraph(f), newWorkloadAnalysis(f), newProcessTop(f), newPerfProfile(f), newPerfFlamegraph(f))
	return cmd
}
