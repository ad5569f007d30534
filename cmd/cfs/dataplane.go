package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/claudefs/claudefs/bench"
	"github.com/claudefs/claudefs/dataplane"
	"github.com/claudefs/claudefs/netio"
	"github.com/claudefs/claudefs/nvme/chunkstore"
	"github.com/claudefs/claudefs/nvme/ioengine"
	"github.com/spf13/cobra"
)

const dataplaneLong = `dataplane runs a node's shard service: it opens the chunk store on --device
(formatting it when the device holds none) and serves shard writes, reads,
deletes, stats and listings on --listen with ClaudeFS's framed binary
protocol (package dataplane documents the wire format).

When --device does not exist, a file of --device-size bytes is laid out there
first; without --device-size a missing device is an error. Sizes take fio's
units (512M, 2G, 4096).

On SIGTERM or SIGINT it stops accepting requests, waits up to --drain-timeout
for the requests in flight to be answered, closes the chunk store cleanly
(writing a final checkpoint so the next start replays nothing) and exits 0.

The sidecar channel to the control process (placement epochs, membership) is
not supported yet: --control-socket is accepted and reserved for it, and no
socket is created. Until then the placement epoch stays 0 and every
request's epoch is current.`

const dataplaneExample = `  # serve a 2 GiB file device on port 7420 (laid out on first start)
  cfs dataplane --device /var/lib/cfs/dev0.dat --device-size 2G --listen 127.0.0.1:7420 --control-socket /run/cfs/dp0.sock

  # a block device, 2 event loops, 64 store workers, pread instead of io_uring
  cfs dataplane --device /dev/nvme0n1 --listen 0.0.0.0:7420 --control-socket /run/cfs/dp0.sock --event-loops 2 --workers 64 --ioengine pread

  # measure it
  cfs bench run --target dataplane:127.0.0.1:7420 --rw=randread --bs=4k --iodepth=32 --size=512M --runtime=5 --time_based`

type dataplaneFlags struct {
	device       string
	deviceSize   string
	listen       string
	controlSock  string
	eventLoops   int
	workers      int
	queueDepth   int
	ioengine     string
	drainTimeout time.Duration
}

func newDataplaneCmd(stderr io.Writer) *cobra.Command {
	var f dataplaneFlags
	cmd := &cobra.Command{
		Use:                   "dataplane --device PATH [--device-size SIZE] --listen HOST:PORT --control-socket PATH [flags]",
		DisableFlagsInUseLine: true,
		Short:                 "Serve a chunk store's shards over the network (a node's data plane)",
		Long:                  dataplaneLong,
		Example:               dataplaneExample,
		Args:                  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runDataplane(&f, stderr)
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&f.device, "device", "", "file or block device holding the chunk store (required)")
	fs.StringVar(&f.deviceSize, "device-size", "", "size of the file laid out when --device does not exist, e.g. 2G")
	fs.StringVar(&f.listen, "listen", "", "TCP address to serve on, HOST:PORT (port 0 picks a free one; the log says which) (required)")
	fs.StringVar(&f.controlSock, "control-socket", "", "path of the control process's sidecar channel (required; reserved: the channel is not supported yet and no socket is created)")
	fs.IntVar(&f.eventLoops, "event-loops", 0, "network event loops (default: one per CPU)")
	fs.IntVar(&f.workers, "workers", 0, "goroutines calling the chunk store, bounding store I/Os in flight (default: 32 per CPU)")
	fs.IntVar(&f.queueDepth, "queue-depth", 0, "requests that may wait for a worker before new ones are refused as busy (default 4096)")
	fs.StringVar(&f.ioengine, "ioengine", "auto", "I/O engine: auto, io_uring or pread")
	fs.DurationVar(&f.drainTimeout, "drain-timeout", 10*time.Second, "on SIGTERM/SIGINT, how long to wait for requests in flight")
	for _, name := range []string{"device", "listen", "control-socket"} {
		_ = cmd.MarkFlagRequired(name)
	}
	fs.SortFlags = false
	return cmd
}

func runDataplane(f *dataplaneFlags, stderr io.Writer) error {
	engine, err := ioengine.ParseKind(f.ioengine)
	if err != nil {
		return fmt.Errorf("--ioengine: %v", err)
	}
	if f.eventLoops < 0 || f.workers < 0 || f.queueDepth < 0 {
		return errors.New("--event-loops, --workers and --queue-depth must not be negative")
	}
	var createSize int64
	if f.deviceSize != "" {
		if createSize, err = bench.ParseSize(f.deviceSize); err != nil {
			return fmt.Errorf("--device-size: %v", err)
		}
	}
	if _, err := os.Stat(f.device); errors.Is(err, os.ErrNotExist) {
		if createSize == 0 {
			return fmt.Errorf("--device %s does not exist; give --device-size to lay out a file there", f.device)
		}
	} else {
		createSize = 0 // an existing device keeps its size
	}
	logger := log.New(stderr, "cfs dataplane: ", log.LstdFlags|log.Lmicroseconds)

	// Failures from here on are runtime errors (exit status 1).
	store, err := chunkstore.Open(f.device, chunkstore.Options{CreateSize: createSize, Engine: engine, Logf: logger.Printf})
	if err != nil {
		return &runtimeError{fmt.Errorf("opening the chunk store: %w", err)}
	}
	srv, err := dataplane.NewServer(store, dataplane.Config{
		Net:        netio.ServerOptions{Addr: f.listen, EventLoops: f.eventLoops},
		Workers:    f.workers,
		QueueDepth: f.queueDepth,
	})
	if err == nil {
		err = srv.Start()
	}
	if err != nil {
		store.Close()
		return &runtimeError{fmt.Errorf("serving on %s: %w", f.listen, err)}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	logger.Printf("listening on %s (device %s, %d partitions, placement epoch %d; control socket %s reserved: sidecar channel not supported yet)",
		srv.Addr(), f.device, store.Partitions(), srv.Epoch(), f.controlSock)
	<-ctx.Done()
	stop() // a second signal kills
	logger.Printf("stopping: draining requests in flight (up to %v)", f.drainTimeout)
	dctx, cancel := context.WithTimeout(context.Background(), f.drainTimeout)
	defer cancel()
	if err := srv.Stop(dctx); err != nil {
		logger.Printf("drain incomplete after %v: %v (%d requests unanswered)", f.drainTimeout, err, srv.InFlight())
	}
	if err := store.Close(); err != nil {
		return &runtimeError{fmt.Errorf("closing the chunk store: %w", err)}
	}
	logger.Printf("stopped: chunk store closed cleanly")
	return nil
}
