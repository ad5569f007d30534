package main

import (
	"context"
	"fmt"
	"io"
	"log"
	"os"
	"os/signal"
	"runtime"
	"syscall"

	"github.com/claudefs/claudefs/controlplane/node"
	"github.com/spf13/cobra"
)

func newControlCmd(stderr io.Writer) *cobra.Command {
	var dir string
	var procs int
	cmd := &cobra.Command{
		Use:   "control [--dir DIR]",
		Short: "Run a node's control process (Raft groups, membership, client API)",
		Long: `control runs the control process of the node in DIR (DIR/node.json, made by
'cfs server bootstrap' or 'cfs server join'): the cluster group and the
metadata shards this node holds replicas of, all over one multiplexed Raft
transport; the SWIM failure detector; the client API. 'cfs server run'
starts it beside the node's dataplane; run it alone only to debug.

On SIGTERM it leaves gossip (peers see it gone at once), hands its Raft
leaderships to peers where it can, closes its stores and exits 0.`,
		Example: `  cfs control --dir /var/lib/cfs`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			logger := log.New(stderr, "cfs control: ", log.LstdFlags|log.Lmicroseconds)
			if procs < 1 || procs > 256 {
				return fmt.Errorf("--max-procs %d: want 1..256", procs)
			}
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			// $GOMAXPROCS, when set, wins, as everywhere in Go.
			if os.Getenv("GOMAXPROCS") == "" {
				go node.AdaptProcs(ctx, procs, logger.Printf)
			}
			// Hundreds of Raft groups each log their retries while a peer is down.
			if err := node.Run(ctx, dir, node.RateLimited(logger.Printf, 20, 200)); err != nil {
				return &runtimeError{err}
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&dir, "dir", "/var/lib/cfs", "node directory")
	cmd.Flags().IntVar(&procs, "max-procs", min(runtime.NumCPU(), 4), "most OS threads running Go code at once when busy; idle, the process runs on one, so the hundreds of Raft groups' timers wake no other thread (docs/benchmarks.md)")
	return cmd
}
