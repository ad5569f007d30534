package main

import (
	"context"
	"encoding/json"
	"io"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"

	"github.com/claudefs/claudefs/bench"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// smallFilesFlags are the flags `--profile small-files` takes besides
// --target dir:PATH; any other given is an error naming it.
var smallFilesFlags = map[string]bool{"target": true, "profile": true, "iodepth": true, "direct": true, "verify": true,
	"output-format": true, "progress": true, "nrfiles": true}

// runSmallFiles runs the small-files profile on a dir: target.
func runSmallFiles(cmd *cobra.Command, flags *bench.Flags, nrfiles int, args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 {
		return bench.Usagef("give a job file or --profile, not both")
	}
	var other []string
	cmd.Flags().Visit(func(f *pflag.Flag) {
		if !smallFilesFlags[f.Name] {
			other = append(other, "--"+f.Name)
		}
	})
	if len(other) > 0 {
		sort.Strings(other)
		return bench.Usagef("--profile small-files takes --iodepth (files at a time), --nrfiles, --direct, --verify=crc32c and --output-format; not %s", strings.Join(other, ", "))
	}
	o := bench.SmallFiles{Dir: strings.TrimPrefix(flags.Target, "dir:"), Files: nrfiles, Progress: flags.Progress}
	if cmd.Flags().Changed("iodepth") {
		o.Concurrency = flags.IODepth
	}
	switch flags.Direct {
	case 0:
		o.Buffered = true
	case 1:
	default:
		return bench.Usagef("--direct=%d: 0 or 1", flags.Direct)
	}
	switch flags.Verify {
	case "", "0":
	case "crc32c", "1":
		o.Verify = true
	default:
		return bench.Usagef("--verify=%q: crc32c (every file read back is compared with what was written)", flags.Verify)
	}
	asJSON := false
	switch flags.OutputFormat {
	case "normal":
	case "json":
		asJSON = true
	default:
		return bench.Usagef("--output-format=%q: normal or json", flags.OutputFormat)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	res, err := bench.RunSmallFiles(ctx, o, stderr)
	if err != nil {
		if bench.IsUsage(err) {
			return err
		}
		return &runtimeError{err}
	}
	if asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		err = enc.Encode(res)
	} else {
		err = bench.WriteSmallFilesReport(stdout, res)
	}
	if err != nil {
		return &runtimeError{err}
	}
	return nil
}
