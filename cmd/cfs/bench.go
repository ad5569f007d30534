package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/claudefs/claudefs/bench"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

func newBenchCmd(stdout, stderr io.Writer) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Benchmark ClaudeFS components with fio's job files, flags and report",
		Long: `bench measures ClaudeFS storage components the way fio measures a disk: the
same job files and flags, the same report (--output-format=json is fio's JSON
shape, so tools that read fio's output read ours), and built-in profiles.`,
		Args: cobra.NoArgs,
		RunE: showHelp,
	}
	cmd.AddCommand(newBenchRunCmd(stdout, stderr), newBenchProfilesCmd(stdout))
	return cmd
}

const benchRunExample = `  # a fio job file, against the file it names (filename=) or against --target
  cfs bench run job.fio
  cfs bench run --target device:/tmp/x.dat --output-format=json job.fio

  # a built-in profile (cfs bench profiles lists them), shortened
  cfs bench run --profile randread-4k --target store:/tmp/store.dat --runtime=10

  # 4 KiB random reads, 32 in flight, 5 s, JSON on stdout (the file is laid out if absent)
  cfs bench run --target device:/tmp/x.dat --rw=randread --bs=4k --iodepth=32 --size=1G --runtime=5 --time_based --output-format=json

  # 70/30 random read/write mix, 4 jobs reported as one, 10 s after a 2 s ramp, on a block device
  cfs bench run --target device:/dev/nvme0n1 --rw=randrw --rwmixread=70 --bs=4k --iodepth=16 --numjobs=4 --group_reporting --runtime=10 --ramp_time=2 --time_based

  # write with weighted block sizes and CRC32C stamps, fdatasync every 32 writes, read back and check
  cfs bench run --target device:/tmp/x.dat --rw=randwrite --bssplit=4k/50:64k/50 --iodepth=8 --size=256m --fdatasync=32 --verify=crc32c

  # files in a directory (a mounted file system): one file per job, pread/pwrite, fsync every 16 writes
  cfs bench run --target dir:/mnt/claudefs/bench --rw=randrw --bs=4k --iodepth=8 --numjobs=2 --size=256m --fsync=16 --verify=crc32c

  # many small files: create, write, fsync, close, stat, read back, unlink; ops/s per operation
  cfs bench run --profile small-files --target dir:/mnt/claudefs/bench --nrfiles=10000 --verify=crc32c

  # fail (exit 1) when any figure is more than 5% worse than last time's report
  cfs bench run --profile randread-4k --target device:/tmp/x.dat --output-format=json --compare last.json --compare-threshold=5 > now.json

  # compare with fio: the same job file (fio takes --ioengine=io_uring)
  fio --ioengine=io_uring --output-format=json job.fio`

func newBenchRunCmd(stdout, stderr io.Writer) *cobra.Command {
	var (
		flags     bench.Flags
		profile   string
		compare   string
		threshold string
		mdDirs    int
		mdFiles   int
		nrfiles   int
	)
	cmd := &cobra.Command{
		Use:                   "run [--target KIND:ARG] [--profile NAME] [fio flags] [JOBFILE]",
		DisableFlagsInUseLine: true,
		Short:                 "Run a fio job file, a profile or one fio-style job against a target",
		Long: `run runs fio jobs against --target and prints fio's report.

The jobs come from a fio job file (JOBFILE; - reads it from stdin), a built-in
profile (--profile), or the flags alone. A job file is fio's: [global] and
job sections, key=value or bare keys (time_based), ';' and '#' comments, fio's
units. It takes the options rw, rwmixread, bs, bssplit, iodepth, numjobs,
size, offset, runtime, time_based, ramp_time, direct, fsync, fdatasync,
end_fsync, verify (crc32c), filename, directory, group_reporting,
norandommap, name, ioengine and stonewall; any other option is an error
naming it and its line. Flags given on the command line apply to every job,
over the job file, as fio's do. Job sections run one after another (as if
each had fio's stonewall), each its own reporting group; the report has one
jobs[] entry per job, or per section with group_reporting.

--profile small-files runs on a dir: target only, its own workload rather
than a job: --nrfiles files of 4, 16 or 64 KiB (40/40/20%), --iodepth at a
time (default 32), each created, written, fsync'ed and closed, then stat'ed,
read back (compared with --verify=crc32c) and unlinked; it reports files and
operations per second and each operation's latency.

The target is --target KIND:ARG; a --target of only KIND: takes ARG from
filename= (joined to directory=), and without --target filename= names a
device: file. Without --time_based a job stops after moving --size bytes (or
after --runtime, whichever comes first); with it, it runs for exactly
--runtime, wrapping around the range. Sizes take fio's units (4k, 1m, 1G,
4096, 4KiB); times are seconds or take a unit (5, 30s, 2m). A random job
visits every block of its range once per pass, in a pseudo-random order
(fio's random map); --norandommap draws offsets with replacement instead, as
does a --bssplit job. I/O is O_DIRECT (a dir: target also takes --direct=0). fio's libaio engine runs as auto (io_uring), its synchronous
engines (psync, sync, pvsync, pvsync2) as pread with one I/O in flight.

--compare BASELINE.json compares the run with an earlier fio-format JSON
report (ours or fio's): IOPS, bandwidth, clat p50/p99/p99.9 and mean latency
per job and direction; any figure more than --compare-threshold worse, or a
baseline job missing, fails the command (exit status 1) naming the figure.
The comparison goes to stdout after a normal report, to stderr after JSON.

The progress line and notes go to stderr; in --output-format=json mode stdout
carries the JSON alone.

Targets:
  ` + strings.Join(bench.Targets(), "\n  "),
		Example: benchRunExample,
		Args:    cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if profile == "metadata" {
				return runMetadataBench(cmd, &flags, args, mdDirs, mdFiles, stdout, stderr)
			}
			if cmd.Flags().Changed("dirs") || cmd.Flags().Changed("files") {
				return bench.Usagef("--dirs and --files belong to --profile metadata")
			}
			if profile == bench.SmallFilesProfile && strings.HasPrefix(flags.Target, "dir:") {
				return runSmallFiles(cmd, &flags, nrfiles, args, stdout, stderr)
			}
			specs, err := benchSpecs(cmd, &flags, profile, args)
			if err != nil {
				return err
			}
			var cmp *benchCompare
			if compare != "" {
				if cmp, err = loadBaseline(compare, threshold); err != nil {
					return err
				}
			} else if cmd.Flags().Changed("compare-threshold") {
				return bench.Usagef("--compare-threshold needs --compare BASELINE.json")
			}
			return runBench(specs, cmp, stdout, stderr)
		},
	}
	flags.Register(cmd.Flags())
	cmd.Flags().StringVar(&profile, "profile", "", "run a built-in profile (cfs bench profiles lists them); flags given override its options")
	cmd.Flags().StringVar(&compare, "compare", "", "compare with BASELINE.json, an earlier fio-format JSON report; fail when a figure is worse than --compare-threshold")
	cmd.Flags().StringVar(&threshold, "compare-threshold", "10%", "how much worse than the baseline a figure may be, in percent")
	cmd.Flags().IntVar(&mdDirs, "dirs", 64, "--profile metadata: directories the clients share")
	cmd.Flags().IntVar(&mdFiles, "files", 2000, "--profile metadata: files each client creates")
	cmd.Flags().IntVar(&nrfiles, "nrfiles", 10000, "--profile small-files: how many files")
	cmd.Flags().SortFlags = false
	return cmd
}

// benchSpecs resolves the jobs to run from the job file (args[0]), the
// profile or the flags alone; the job options given as flags override.
func benchSpecs(cmd *cobra.Command, flags *bench.Flags, profile string, args []string) ([]*bench.Spec, error) {
	fs := cmd.Flags()
	var cli []bench.Option
	fs.Visit(func(f *pflag.Flag) {
		if bench.IsJobOption(f.Name) {
			cli = append(cli, bench.Option{Key: f.Name, Value: f.Value.String()})
		}
	})
	base := bench.DefaultFlags()
	base.Target, base.OutputFormat, base.Progress = flags.Target, flags.OutputFormat, flags.Progress
	var jf *bench.JobFile
	var err error
	switch {
	case len(args) == 1 && profile != "":
		return nil, bench.Usagef("give a job file or --profile, not both")
	case len(args) == 1:
		jf, err = readJobFile(args[0], cmd.InOrStdin())
	case profile != "":
		jf, err = bench.ProfileJobFile(profile)
	default:
		s, err := bench.CommandLineSpec(base, cli)
		if err != nil {
			return nil, err
		}
		return []*bench.Spec{s}, nil
	}
	if err != nil {
		return nil, err
	}
	if fs.Changed("name") {
		return nil, bench.Usagef("--name names the job of a run without a job file; a job file or profile names its jobs by their sections")
	}
	return jf.Specs(base, cli)
}

// readJobFile reads a job file ("-": stdin), refusing one past
// bench.MaxJobFileSize.
func readJobFile(path string, stdin io.Reader) (*bench.JobFile, error) {
	r, name := stdin, "stdin"
	if path != "-" {
		f, err := os.Open(path)
		if err != nil {
			return nil, bench.Usagef("job file: %v", err)
		}
		defer f.Close()
		r, name = f, path
	}
	data, err := io.ReadAll(io.LimitReader(r, bench.MaxJobFileSize+1))
	if err != nil {
		return nil, bench.Usagef("job file %s: %v", name, err)
	}
	return bench.ParseJobFile(name, data)
}

type benchCompare struct {
	path      string
	base      *bench.Report
	threshold float64
}

func loadBaseline(path, threshold string) (*benchCompare, error) {
	t, err := bench.ParseThreshold(threshold)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, bench.Usagef("--compare: %v", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, bench.MaxBaselineSize+1))
	if err != nil {
		return nil, bench.Usagef("--compare: %v", err)
	}
	base, err := bench.ParseReport(data)
	if err != nil {
		return nil, bench.Usagef("--compare %s: %v", path, err)
	}
	return &benchCompare{path: path, base: base, threshold: t}, nil
}

// runBench runs the specs one after another, reports them together and
// compares the report with the baseline. An interrupt ends the running job
// early with a report, like fio, and skips the jobs after it; a failed
// verify=crc32c still reports and then fails.
func runBench(specs []*bench.Spec, cmp *benchCompare, stdout, stderr io.Writer) error {
	// The first interrupt ends the run early with a report; after it the
	// default action is back, so a second one kills.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		stop()
	}()
	var results []*bench.Result
	var failed error
	for _, spec := range specs {
		if ctx.Err() != nil {
			fmt.Fprintf(stderr, "cfs bench: interrupted: job %s not run\n", spec.Name)
			continue
		}
		res, err := bench.Run(ctx, spec, stderr)
		var verr *bench.VerifyError
		switch {
		case errors.As(err, &verr):
			failed = errors.Join(failed, err)
		case err != nil && len(results) > 0:
			// Report the jobs that ran, then fail.
			if werr := writeReport(specs[0].Output, results, stdout); werr != nil {
				fmt.Fprintf(stderr, "cfs bench: %v\n", werr)
			}
			fallthrough
		case err != nil:
			if bench.IsUsage(err) {
				return err
			}
			return &runtimeError{fmt.Errorf("job %s: %w", spec.Name, err)}
		}
		results = append(results, res)
	}
	if len(results) == 0 {
		return &runtimeError{errors.New("interrupted before any job ran")}
	}
	if err := writeReport(specs[0].Output, results, stdout); err != nil {
		return &runtimeError{err}
	}
	if cmp != nil {
		if err := compareReport(cmp, results, specs[0].Output, stdout, stderr); err != nil {
			failed = errors.Join(failed, err)
		}
	}
	if failed != nil {
		return &runtimeError{failed}
	}
	return nil
}

func writeReport(format bench.Format, results []*bench.Result, w io.Writer) error {
	if format == bench.FormatJSON {
		return bench.WriteJSON(w, results...)
	}
	return bench.WriteNormal(w, results...)
}

// compareReport compares the results, as their JSON report, with the
// baseline and prints the table: on stdout after a normal report, on stderr
// after JSON.
func compareReport(cmp *benchCompare, results []*bench.Result, format bench.Format, stdout, stderr io.Writer) error {
	var buf strings.Builder
	if err := bench.WriteJSON(&buf, results...); err != nil {
		return err
	}
	now, err := bench.ParseReport([]byte(buf.String()))
	if err != nil {
		return fmt.Errorf("reading back this run's report: %w", err)
	}
	c := bench.Compare(cmp.base, now, cmp.threshold)
	out := stdout
	if format == bench.FormatJSON {
		out = stderr
	}
	if err := c.Write(out, cmp.path); err != nil {
		return err
	}
	return c.Err()
}

func newBenchProfilesCmd(stdout io.Writer) *cobra.Command {
	return &cobra.Command{
		Use:   "profiles",
		Short: "List the built-in benchmark profiles and their fio options",
		Long: `profiles lists the built-in profiles that cfs bench run --profile NAME runs:
each one's name, what it measures, and the fio options it stands for (run
them with fio for a baseline). Flags given with --profile override the
profile's options.`,
		Args: cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error { return bench.WriteProfiles(stdout) },
	}
}
