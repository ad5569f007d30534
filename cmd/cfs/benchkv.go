package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/claudefs/claudefs/controlplane/node"
	"github.com/spf13/cobra"
)

// kvBenchResult is `cfs bench kv --json`.
type kvBenchResult struct {
	Clients     int     `json:"clients"`
	Groups      int     `json:"groups"`
	ValueBytes  int     `json:"value_bytes"`
	Seconds     float64 `json:"seconds"`
	Commits     int64   `json:"commits"`
	CommitsPerS float64 `json:"commits_per_sec"`
	Errors      int64   `json:"errors"`
	P50us       float64 `json:"p50_us"`
	P99us       float64 `json:"p99_us"`
	MaxUs       float64 `json:"max_us"`
}

func newBenchKVCmd(stdout, stderr io.Writer) *cobra.Command {
	var endpoint, dir, cert, key, ca string
	var clients, valueSize int
	var runtime time.Duration
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "kv (--endpoint HOST:PORT[,…] | --dir DEVDIR) [--clients N] [--runtime D]",
		Short: "Measure replicated commits per second on the metadata shards' key-value groups",
		Long: `kv runs --clients concurrent clients, each putting one value after another
into a random metadata shard (a Raft group of 3 replicas) through the client
API of that shard's leader, for --runtime. A put is counted when the leader
answers, that is once the command is committed on a majority and applied.
It prints commits per second and the latency of a commit.

With --dir it uses the dev cluster's client certificate (DIR/admin.pem, DIR/ca.crt);
else --cert/--key/--ca, $CLAUDEFS_CERT/$CLAUDEFS_KEY/$CLAUDEFS_CA, else
/var/lib/cfs/tls/'s, as cfsctl does.`,
		Example: `  cfs bench kv --dir ./cfs-dev --clients 16 --runtime 10s
  cfs bench kv --endpoint 10.0.0.1:7412 --clients 16 --runtime 30s --json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if clients < 1 || clients > 1024 || valueSize < 0 || valueSize > 64<<10 || runtime <= 0 || runtime > time.Hour {
				return errors.New("--clients 1..1024, --value-size 0..65536 and --runtime in (0, 1h] please")
			}
			eps, err := kvEndpoints(endpoint, dir)
			if err != nil {
				return err
			}
			creds := node.FindCreds(cert, key, ca, "/var/lib/cfs")
			if dir != "" {
				creds = devCreds(dir)
			}
			api, err := creds.Client(10 * time.Second)
			if err != nil {
				return &runtimeError{err}
			}
			res, err := benchKV(api, eps, clients, valueSize, runtime, stderr)
			if err != nil {
				return &runtimeError{err}
			}
			if asJSON {
				enc := json.NewEncoder(stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(res)
			}
			fmt.Fprintf(stdout, "kv: %d clients over %d groups, %d-byte values, %.1fs\n", res.Clients, res.Groups, res.ValueBytes, res.Seconds)
			fmt.Fprintf(stdout, "  commits: %d (%.0f/s), errors: %d\n", res.Commits, res.CommitsPerS, res.Errors)
			fmt.Fprintf(stdout, "  commit latency (µs): p50 %.0f, p99 %.0f, max %.0f\n", res.P50us, res.P99us, res.MaxUs)
			return nil
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&endpoint, "endpoint", "", "client API address(es) of the cluster's nodes (default $CFS_ENDPOINT)")
	fs.StringVar(&cert, "cert", "", "client certificate, PEM with its key (default $CLAUDEFS_CERT)")
	fs.StringVar(&key, "key", "", "the client certificate's key when --cert holds only the certificate (default $CLAUDEFS_KEY)")
	fs.StringVar(&ca, "ca", "", "the cluster CA's certificate (default $CLAUDEFS_CA)")
	fs.StringVar(&dir, "dir", "", "a dev cluster's directory, instead of --endpoint")
	fs.IntVar(&clients, "clients", 16, "concurrent clients, each with one put in flight")
	fs.IntVar(&valueSize, "value-size", 128, "bytes per value")
	fs.DurationVar(&runtime, "runtime", 10*time.Second, "how long to run")
	fs.BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func kvEndpoints(endpoint, dir string) ([]string, error) {
	if endpoint == "" {
		endpoint = os.Getenv("CFS_ENDPOINT")
	}
	if endpoint != "" {
		return strings.Split(endpoint, ","), nil
	}
	if dir == "" {
		return nil, errors.New("give --endpoint HOST:PORT (or $CFS_ENDPOINT) or --dir of a dev cluster")
	}
	dc, err := readDevCluster(dir)
	if err != nil {
		return nil, fmt.Errorf("no dev cluster in %s: %v", dir, err)
	}
	var eps []string
	for _, n := range dc.Nodes {
		c, err := node.LoadConfig(filepath.Join(dir, n))
		if err != nil {
			return nil, err
		}
		eps = append(eps, c.ClientAddr)
	}
	return eps, nil
}

// kvLeaders maps each metadata shard to its leader's client address, from every node's status.
func kvLeaders(ctx context.Context, c *node.Client, eps []string) (map[uint32]string, error) {
	leaders := map[uint32]string{}
	addrOf := map[string]string{}
	var lastErr error
	for _, ep := range eps {
		s, err := c.Status(ctx, ep, true)
		if err != nil {
			lastErr = err
			continue
		}
		for _, n := range s.Nodes {
			addrOf[n.ID] = n.ClientAddr
		}
		for _, g := range s.GroupList {
			if g.ID != 0 && g.State == "Leader" {
				leaders[g.ID] = ep
			}
		}
	}
	if len(leaders) == 0 {
		return nil, fmt.Errorf("no metadata shard has a leader (is the cluster up and its shards placed?): %v", lastErr)
	}
	return leaders, nil
}

func benchKV(api *node.Client, eps []string, clients, valueSize int, runtime time.Duration, stderr io.Writer) (*kvBenchResult, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	leaders, err := kvLeaders(ctx, api, eps)
	cancel()
	if err != nil {
		return nil, err
	}
	groups := make([]uint32, 0, len(leaders))
	for g := range leaders {
		groups = append(groups, g)
	}
	slices.Sort(groups)
	var mu sync.Mutex // guards leaders
	value := strings.Repeat("v", valueSize)
	var commits, errs atomic.Int64
	lat := make([][]time.Duration, clients)
	start := time.Now()
	deadline := start.Add(runtime)
	var wg sync.WaitGroup
	for cl := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(cl), uint64(start.UnixNano())))
			for i := 0; time.Now().Before(deadline); i++ {
				g := groups[rng.IntN(len(groups))]
				mu.Lock()
				addr := leaders[g]
				mu.Unlock()
				t0 := time.Now()
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				_, err := api.KV(ctx, addr, g, &node.KVRequest{Op: "put", Key: fmt.Sprintf("bench/%d/%d", cl, i%1024), Value: value})
				cancel()
				if err != nil {
					errs.Add(1)
					// Leadership moved: learn where, then go on.
					ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
					if l, lerr := kvLeaders(ctx, api, eps); lerr == nil {
						mu.Lock()
						leaders = l
						mu.Unlock()
					}
					cancel()
					continue
				}
				lat[cl] = append(lat[cl], time.Since(t0))
				commits.Add(1)
			}
		}()
	}
	done := make(chan struct{})
	go func() {
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-done:
				fmt.Fprintln(stderr)
				return
			case <-t.C:
				fmt.Fprintf(stderr, "\rkv: %.0fs, %d commits, %d errors   ", time.Since(start).Seconds(), commits.Load(), errs.Load())
			}
		}
	}()
	wg.Wait()
	close(done)
	elapsed := time.Since(start).Seconds()
	var all []time.Duration
	for _, l := range lat {
		all = append(all, l...)
	}
	slices.Sort(all)
	pct := func(p float64) float64 {
		if len(all) == 0 {
			return 0
		}
		return float64(all[min(len(all)-1, int(p*float64(len(all))))].Microseconds())
	}
	return &kvBenchResult{Clients: clients, Groups: len(groups), ValueBytes: valueSize, Seconds: elapsed,
		Commits: commits.Load(), CommitsPerS: float64(commits.Load()) / elapsed, Errors: errs.Load(),
		P50us: pct(0.50), P99us: pct(0.99), MaxUs: pct(1)}, nil
}
