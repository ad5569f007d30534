package main

import (
	"context"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/claudefs/claudefs/bench"
	"github.com/spf13/cobra"
)

func newBenchCmd(stdout, stderr io.Writer) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Benchmark ClaudeFS components with fio's flags and report",
		Long: `bench measures ClaudeFS storage components the way fio measures a disk: the
same job flags, the same report (--output-format=json is fio's JSON shape,
so tools that read fio's output read ours).`,
		Args: cobra.NoArgs,
		RunE: showHelp,
	}
	cmd.AddCommand(newBenchRunCmd(stdout, stderr))
	return cmd
}

const benchRunExample = `  # 4 KiB random reads, 32 in flight, 5 s, JSON on stdout (the file is laid out if absent)
  cfs bench run --target device:/tmp/x.dat --rw=randread --bs=4k --iodepth=32 --size=1G --runtime=5 --time_based --output-format=json

  # 1 MiB sequential writes, 8 in flight, until 1 GiB is written
  cfs bench run --target device:/tmp/x.dat --rw=write --bs=1M --iodepth=8 --size=1G

  # 70/30 random read/write mix, 4 jobs, 10 s after a 2 s ramp, on a block device
  cfs bench run --target device:/dev/nvme0n1 --rw=randrw --rwmixread=70 --bs=4k --iodepth=16 --numjobs=4 --runtime=10 --ramp_time=2 --time_based

  # compare with fio: the same flags (fio takes --filename and --ioengine=io_uring)
  fio --name=a --filename=/tmp/x.dat --size=1G --runtime=5 --time_based --direct=1 --ioengine=io_uring --rw=randread --bs=4k --iodepth=32`

func newBenchRunCmd(stdout, stderr io.Writer) *cobra.Command {
	var flags bench.Flags
	cmd := &cobra.Command{
		Use:                   "run --target KIND:ARG [fio flags]",
		DisableFlagsInUseLine: true,
		Short:                 "Run one fio-style job against a target",
		Long: `run runs --numjobs identical jobs against --target and prints fio's report.

Without --time_based a job stops after moving --size bytes (or after
--runtime, whichever comes first); with it, it runs for exactly --runtime,
wrapping around the range. Sizes take fio's units (4k, 1m, 1G, 4096, 4KiB);
times are seconds or take a unit (5, 30s, 2m). Random offsets are drawn
uniformly with replacement (fio's norandommap). The progress line goes to
stderr; in --output-format=json mode stdout carries the JSON alone.

Targets:
  ` + strings.Join(bench.Targets(), "\n  "),
		Example: benchRunExample,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			spec, err := flags.Spec()
			if err != nil {
				return err
			}
			// The first interrupt ends the run early with a report, like
			// fio; after it the default action is back, so a second one kills.
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			go func() {
				<-ctx.Done()
				stop()
			}()
			res, err := bench.Run(ctx, spec, stderr)
			if err != nil {
				if bench.IsUsage(err) {
					return err
				}
				return &runtimeError{err}
			}
			if spec.Output == bench.FormatJSON {
				err = bench.WriteJSON(stdout, res)
			} else {
				err = bench.WriteNormal(stdout, res)
			}
			if err != nil {
				return &runtimeError{err}
			}
			return nil
		},
	}
	flags.Register(cmd.Flags())
	cmd.Flags().SortFlags = false
	return cmd
}
