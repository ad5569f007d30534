package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"text/tabwriter"

	"github.com/claudefs/claudefs/dataplane"
	"github.com/claudefs/claudefs/dataplane/dpconfig"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

const dataplaneLong = `dataplane runs a node's shard service: it opens the chunk store on --device
(formatting it when the device holds none) and serves shard writes, reads,
deletes, stats and listings on --listen with ClaudeFS's framed binary
protocol (package dataplane documents the wire format).

When --device does not exist, a file of --device-size bytes is laid out there
first; without --device-size a missing device is an error. Sizes take binary
units (512M, 2G, 4096).

Configuration: every setting is a key (below). --config PATH reads keys from a
file, one "key = value" per line, '#' starting a comment line, a value
optionally in Go double quotes; an unknown key, a repeated key or a bad value
is an error naming the line and the key. Flags override the file. Each key's
flag is listed with it.

The sidecar channel: the dataplane serves its node's control process on the
Unix socket --control-socket (mode 0600; a socket left by a killed dataplane
is replaced; a live dataplane's is refused; removed on exit). Over it the
control process reads and sets keys (live keys apply at once, the others
answer restart_required and change nothing), raises the placement epoch
(writes carrying an older epoch are then refused), and reads health and
per-core stats. Package dataplane/sidecar documents the protocol and is the
Go client.

CPU pinning: with cpu.affinity set, I/O core i and event loop i each get
their own thread, pinned to the i-th CPU of the list (round robin); the log
shows the placement. Without it nothing is pinned, and the log says so.

On SIGTERM or SIGINT it stops accepting requests, waits up to
data.drain_timeout for the requests in flight to be answered, closes the
chunk store cleanly (writing a final checkpoint so the next start replays
nothing), removes the control socket and exits 0.`

const dataplaneExample = `  # serve a 2 GiB file device on port 7420 (laid out on first start)
  cfs dataplane --device /var/lib/cfs/dev0.dat --device-size 2G --listen 127.0.0.1:7420 --control-socket /run/cfs/dp0.sock

  # a block device, pinned to CPUs 0-3, 2 event loops, pread instead of io_uring
  cfs dataplane --device /dev/nvme0n1 --listen 0.0.0.0:7420 --control-socket /run/cfs/dp0.sock --cpu-affinity 0-3 --event-loops 2 --ioengine pread

  # everything from a file, with one flag overriding it
  cfs dataplane --config /etc/cfs/dataplane.conf --queue-depth 64

  # measure it
  cfs bench run --target dataplane:127.0.0.1:7420 --rw=randread --bs=4k --iodepth=32 --size=512M --runtime=5 --time_based`

// keysHelp is the table of configuration keys for --help.
func keysHelp() string {
	var b strings.Builder
	b.WriteString("Configuration keys (flag; default; valid values; live = applies at once over the\nsidecar channel, restart = takes a restart):\n\n")
	tw := tabwriter.NewWriter(&b, 0, 4, 2, ' ', 0)
	for _, k := range dpconfig.Keys() {
		when := "restart"
		if k.Live {
			when = "live"
		}
		def := k.Default
		if def == "" {
			def = "(required)"
		}
		fmt.Fprintf(tw, "  %s\t--%s\t%s\t%s\n", k.Name, k.Flag, def, when)
		fmt.Fprintf(tw, "    \t%s\n", k.Help)
		fmt.Fprintf(tw, "    \tvalues: %s\n", k.Range)
	}
	tw.Flush()
	return b.String()
}

func newDataplaneCmd(stderr io.Writer) *cobra.Command {
	var configPath string
	cmd := &cobra.Command{
		Use:                   "dataplane --device PATH [--device-size SIZE] --listen HOST:PORT --control-socket PATH [--config FILE] [flags]",
		DisableFlagsInUseLine: true,
		Short:                 "Serve a chunk store's shards over the network (a node's data plane)",
		Long:                  dataplaneLong + "\n\n" + keysHelp(),
		Example:               dataplaneExample,
		Args:                  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := dataplaneConfig(cmd.Flags(), configPath)
			if err != nil {
				return err
			}
			return runDataplane(cfg, stderr)
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&configPath, "config", "", "configuration file of key = value lines (keys below); flags override it")
	for _, k := range dpconfig.Keys() {
		def := k.Default
		if def == "" {
			def = "required"
		}
		f := fs.VarPF(&keyFlag{key: k.Name}, k.Flag, "", fmt.Sprintf("%s (%s; default %s; %s)", k.Help, k.Name, def, liveWord(k.Live)))
		f.DefValue = ""
		if k.Range == "true or false" {
			f.NoOptDefVal = "true"
		}
	}
	fs.SortFlags = false
	return cmd
}

func liveWord(live bool) string {
	if live {
		return "live"
	}
	return "restart"
}

// keyFlag is a flag that sets a configuration key; its value is
// validated by the key when the configuration is assembled.
type keyFlag struct {
	key   string
	value string
}

func (f *keyFlag) String() string { return f.value }
func (f *keyFlag) Type() string   { return "value" }
func (f *keyFlag) Set(v string) error {
	if _, err := dpconfig.Check(f.key, v); err != nil {
		return err
	}
	f.value = v
	return nil
}

// dataplaneConfig is the defaults, then the file, then the flags given.
func dataplaneConfig(fs *pflag.FlagSet, path string) (dpconfig.Config, error) {
	cfg := dpconfig.Default()
	if path != "" {
		if err := cfg.LoadFile(path); err != nil {
			return cfg, fmt.Errorf("--config: %w", err)
		}
	}
	for _, k := range dpconfig.Keys() {
		f := fs.Lookup(k.Flag)
		if f == nil || !f.Changed {
			continue
		}
		if err := cfg.Set(k.Name, f.Value.String()); err != nil {
			return cfg, fmt.Errorf("--%s: %w", k.Flag, err)
		}
	}
	if err := cfg.Check(); err != nil {
		return cfg, err
	}
	if _, err := os.Stat(cfg.Device); os.IsNotExist(err) && cfg.DeviceSize == 0 {
		return cfg, fmt.Errorf("--device %s does not exist; give --device-size to lay out a file there", cfg.Device)
	}
	if _, err := dataplane.ResolveAffinity(cfg.Affinity); err != nil {
		return cfg, fmt.Errorf("--cpu-affinity: %w", err)
	}
	return cfg, nil
}

func runDataplane(cfg dpconfig.Config, stderr io.Writer) error {
	logger := log.New(stderr, "cfs dataplane: ", log.LstdFlags|log.Lmicroseconds)
	// Failures from here on are runtime errors (exit status 1).
	node, err := dataplane.StartNode(cfg, logger.Printf)
	if err != nil {
		return &runtimeError{err}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if cfg.MetricsListen != "" {
		ms, err := dataplane.ServeMetrics(node, cfg.MetricsListen, logger.Printf)
		if err != nil {
			_ = node.Stop(context.Background())
			return &runtimeError{err}
		}
		defer ms.Close()
		logger.Printf("Prometheus metrics on http://%s/metrics", ms.Addr())
	}
	logger.Printf("listening on %s (device %s, %d I/O cores, placement epoch %d, queue depth %d per core; control socket %s)",
		node.Addr(), cfg.Device, node.Store().Partitions(), node.Server().Epoch(), cfg.QueueDepth, cfg.ControlSocket)
	<-ctx.Done()
	stop() // a second signal kills
	drain := node.Config().DrainTimeout
	logger.Printf("stopping: draining requests in flight (up to %v)", drain)
	dctx, cancel := context.WithTimeout(context.Background(), drain)
	defer cancel()
	// A drain cut short by the timeout is logged by Stop and still ends
	// in a clean close; a failed close is a failure.
	if err := node.Stop(dctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return &runtimeError{err}
	}
	logger.Printf("stopped: chunk store closed cleanly")
	return nil
}
