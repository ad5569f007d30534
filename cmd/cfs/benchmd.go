package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/claudefs/claudefs/bench"
	"github.com/spf13/cobra"
)

// runMetadataBench runs `cfs bench run --profile metadata --target cluster:ADDR`.
func runMetadataBench(cmd *cobra.Command, flags *bench.Flags, args []string, dirs, files int, stdout, stderr io.Writer) error {
	if len(args) > 0 {
		return bench.Usagef("--profile metadata takes no job file")
	}
	for _, f := range []string{"rw", "bs", "iodepth", "size", "runtime", "time_based", "bssplit", "verify"} {
		if cmd.Flags().Changed(f) {
			return bench.Usagef("--%s does not apply to --profile metadata (it takes --numjobs, --dirs, --files, --output-format)", f)
		}
	}
	kind, arg, _ := strings.Cut(flags.Target, ":")
	if kind != "cluster" || arg == "" {
		return bench.Usagef("--profile metadata runs against --target cluster:ADDR[,ADDR…] (any control process's address; `cfs dev status --json` lists them), not %q", flags.Target)
	}
	jobs := flags.NumJobs
	if !cmd.Flags().Changed("numjobs") {
		jobs = 16
	}
	jsonOut := flags.OutputFormat == "json"
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	r, err := bench.RunMetadata(ctx, bench.MDSpec{Addrs: strings.Split(arg, ","), Jobs: jobs, Dirs: dirs, Files: files, Progress: stderr})
	if err != nil {
		return err
	}
	if err := bench.WriteMDReport(stdout, r, jsonOut); err != nil {
		return err
	}
	if r.FirstError != "" {
		return fmt.Errorf("metadata benchmark: %d operations failed; the first: %s", r.Create.Errors+r.Stat.Errors+r.Readdir.Errors+r.Unlink.Errors, r.FirstError)
	}
	return nil
}
