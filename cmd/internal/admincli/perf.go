package admincli

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/claudefs/claudefs/controlplane/node"
	"github.com/claudefs/claudefs/controlplane/supervise"
	"github.com/claudefs/claudefs/profiling/analyze"
	"github.com/claudefs/claudefs/profiling/flamegraph"
	"github.com/spf13/cobra"
)

func newProcessTop(f *flags) *cobra.Command {
	var nodeID string
	var interval time.Duration
	var limit int
	cmd := &cobra.Command{
		Use:   "process-top [--node NODE] [--interval 1s]",
		Short: "A node's processes (CPU, RSS, threads) and its dataplane's per-core CPU",
		Long: `process-top samples a node's processes (supervisor, control, dataplane) over
--interval and shows each one's CPU (100% = one CPU busy), resident memory
and threads, then the dataplane's busiest threads from /proc/PID/task: the
I/O cores (role io) and event loops (role net) by number, with the CPU each
is pinned to and the one it last ran on.

--json fields: node, interval_ns, processes[] {name, pid, cpu_percent,
user_cpu_s, system_cpu_s, rss_bytes, threads}, dataplane_threads[] {tid,
comm, role, core, pinned_cpu, last_cpu, cpu_percent}, error.`,
		Example: fmt.Sprintf("  %[1]s process-top --node node-1\n  %[1]s process-top --node node-1 --interval 3s --json | jq '.dataplane_threads[] | select(.role==\"io\")'", f.o.Prog),
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if interval < 100*time.Millisecond || interval > 10*time.Second {
				return fmt.Errorf("--interval %v: want 100ms..10s", interval)
			}
			ctx, cancel := context.WithTimeout(context.Background(), max(f.timeout, interval+15*time.Second))
			defer cancel()
			q := url.Values{"interval": {interval.String()}}
			if nodeID != "" {
				q.Set("node", nodeID)
			}
			var r node.ProcessesResponse
			if _, err := f.call(ctx, http.MethodGet, "/v1/admin/processes?"+q.Encode(), nil, &r); err != nil {
				return f.fail(err)
			}
			if f.asJSON {
				return f.printJSON(r)
			}
			f.printf("%s, CPU over %s\n", r.Node, time.Duration(r.IntervalNs))
			f.printf("%-11s %8s %7s %10s %8s\n", "PROCESS", "PID", "CPU%", "RSS", "THREADS")
			for _, p := range r.Processes {
				f.printf("%-11s %8d %6.1f%% %10s %8d\n", p.Name, p.PID, p.CPUPercent, bytesH(int64(p.RSSBytes)), p.Threads)
			}
			if r.Error != "" {
				f.printf("dataplane: %s\n", r.Error)
			}
			if len(r.Threads) > 0 {
				f.printf("\ndataplane threads, busiest first:\n%-8s %-9s %7s %7s %6s  %s\n", "TID", "ROLE", "PINNED", "ONCPU", "CPU%", "COMM")
				for i, t := range r.Threads {
					if i >= limit {
						f.printf("(%d more threads; --threads N shows more)\n", len(r.Threads)-limit)
						break
					}
					role := "-"
					if t.Role == "io" {
						role = fmt.Sprintf("io core %d", t.Core)
					} else if t.Role == "net" {
						role = fmt.Sprintf("loop %d", t.Core)
					}
					pinned := "-"
					if t.PinnedCPU >= 0 {
						pinned = strconv.Itoa(t.PinnedCPU)
					}
					f.printf("%-8d %-9s %7s %7d %5.1f%%  %s\n", t.TID, role, pinned, t.LastCPU, t.CPUPercent, t.Comm)
				}
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&nodeID, "node", "", "the node to look at (default: the node answering)")
	cmd.Flags().DurationVar(&interval, "interval", time.Second, "the CPU sampling interval, 100ms..10s")
	cmd.Flags().IntVar(&limit, "threads", 20, "dataplane threads to list")
	return cmd
}

// perfSamples is perf record's "(N samples)" report.
var perfSamples = regexp.MustCompile(`\((\d+) samples\)`)

// lookPerf finds perf, or says how to get it.
func lookPerf() (string, error) {
	p, err := exec.LookPath("perf")
	if err != nil {
		return "", errors.New("perf is not installed on this machine: apt-get install linux-perf (Debian) or linux-tools-$(uname -r) (Ubuntu); the Go profiler works without it: profile / flamegraph")
	}
	return p, nil
}

// PerfProfileJSON is `perf-profile --json`.
type PerfProfileJSON struct {
	File      string  `json:"file"`
	Target    string  `json:"target"` // "system" or the pids
	DurationS float64 `json:"duration_s"`
	Samples   int     `json:"samples"`
}

func newPerfProfile(f *flags) *cobra.Command {
	var dur time.Duration
	var cpu bool
	var out, pids string
	var freq int
	var nodeLocal bool
	cmd := &cobra.Command{
		Use:   "perf-profile [--duration 30s] [--cpu] [--pid P,… | --local-node] [-o perf.data]",
		Short: "Record CPU samples with Linux perf on this machine (kernel and user stacks)",
		Long: `perf-profile runs Linux perf on the machine it runs on (not through the admin
API: perf needs the node's kernel): CPU samples with call graphs at
--frequency Hz for --duration, of the whole system by default, of the given
pids with --pid, or of this node's processes (from --node-dir's pids.json)
with --local-node. Unlike the Go profiler, perf sees the kernel side of
io_uring, the network stack and the device. When perf is missing, or the
kernel refuses it (perf_event_paranoid, a VM without perf events), it says
so and what to do. perf-generate-flamegraph draws the result.

--json fields: file, target, duration_s, samples.`,
		Example: fmt.Sprintf(`  %[1]s perf-profile --duration 30s --cpu
  %[1]s perf-profile --duration 10s --local-node --node-dir /var/lib/cfs -o dp.perf.data
  %[1]s perf-generate-flamegraph --input dp.perf.data --output /tmp/cpu-flame.svg`, f.o.Prog),
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if dur < time.Second || dur > 10*time.Minute {
				return fmt.Errorf("--duration %v: want 1s..10m", dur)
			}
			if freq < 1 || freq > 10000 {
				return fmt.Errorf("--frequency %d: want 1..10000 Hz", freq)
			}
			if !cpu {
				return errors.New("--cpu=false: CPU sampling is the only kind perf-profile records")
			}
			perf, err := lookPerf()
			if err != nil {
				return f.fail(err)
			}
			args := []string{"record", "-F", strconv.Itoa(freq), "-g", "-o", out}
			target := "system"
			switch {
			case pids != "" && nodeLocal:
				return errors.New("give --pid or --local-node, not both")
			case nodeLocal:
				m, err := supervise.ReadPids(node.PidFile(f.nodeDir))
				if err != nil {
					return f.fail(fmt.Errorf("this node's processes: %w (is a node running from --node-dir %s?)", err, f.nodeDir))
				}
				var list []string
				for _, name := range []string{"dataplane", "control"} {
					if p := m[name]; p > 0 {
						list = append(list, strconv.Itoa(p))
					}
				}
				if len(list) == 0 {
					return f.fail(fmt.Errorf("%s names no running dataplane or control process", node.PidFile(f.nodeDir)))
				}
				pids = strings.Join(list, ",")
				fallthrough
			case pids != "":
				for _, p := range strings.Split(pids, ",") {
					if n, err := strconv.Atoi(strings.TrimSpace(p)); err != nil || n <= 0 {
						return fmt.Errorf("--pid %q: want process ids, comma-separated", pids)
					}
				}
				args = append(args, "-p", pids)
				target = "pid " + pids
			default:
				args = append(args, "-a")
			}
			args = append(args, "--", "sleep", strconv.FormatFloat(dur.Seconds(), 'f', -1, 64))
			fmt.Fprintf(f.o.Stderr, "recording %s of %s with perf at %d Hz…\n", dur, target, freq)
			ctx, cancel := context.WithTimeout(context.Background(), dur+time.Minute)
			defer cancel()
			var stderr bytes.Buffer
			c := exec.CommandContext(ctx, perf, args...)
			c.Stderr = &stderr
			if err := c.Run(); err != nil {
				msg := strings.TrimSpace(stderr.String())
				if len(msg) > 600 {
					msg = msg[:600] + "…"
				}
				hint := "perf could not record here"
				if strings.Contains(msg, "perf_event_paranoid") || strings.Contains(msg, "Permission") || strings.Contains(msg, "Access to performance monitoring") {
					hint = "the kernel refuses perf events to this user: run as root or lower /proc/sys/kernel/perf_event_paranoid"
				} else if strings.Contains(msg, "not supported") || strings.Contains(msg, "No such device") {
					hint = "this machine offers no perf events (a VM without a PMU?); the Go profiler works without them: profile / flamegraph"
				}
				return f.fail(fmt.Errorf("%s: perf record: %v: %s", hint, err, msg))
			}
			n := 0
			if m := perfSamples.FindStringSubmatch(stderr.String()); m != nil {
				n, _ = strconv.Atoi(m[1])
			}
			j := PerfProfileJSON{File: out, Target: target, DurationS: dur.Seconds(), Samples: n}
			if f.asJSON {
				return f.printJSON(j)
			}
			f.printf("wrote %s: %d samples of %s over %s\n", out, n, target, dur)
			f.printf("draw it with: %s perf-generate-flamegraph --input %s --output cpu-flame.svg\n", f.o.Prog, out)
			return nil
		},
	}
	cmd.Flags().DurationVar(&dur, "duration", 30*time.Second, "how long to record, 1s..10m")
	cmd.Flags().BoolVar(&cpu, "cpu", true, "sample CPU (the only kind recorded)")
	cmd.Flags().StringVarP(&out, "output", "o", "perf.data", "the perf data file to write")
	cmd.Flags().StringVar(&pids, "pid", "", "record these processes only (comma-separated pids)")
	cmd.Flags().BoolVar(&nodeLocal, "local-node", false, "record this node's dataplane and control processes (pids.json in --node-dir)")
	cmd.Flags().IntVar(&freq, "frequency", 99, "samples per second per CPU")
	return cmd
}

func newPerfFlamegraph(f *flags) *cobra.Command {
	var in, out string
	cmd := &cobra.Command{
		Use:   "perf-generate-flamegraph [--input perf.data] --output FILE.svg",
		Short: "Draw a perf-profile recording as an interactive SVG flame graph",
		Long: `perf-generate-flamegraph reads a perf recording (perf-profile, or any perf
record -g) with perf script on this machine and draws it as an interactive
SVG flame graph, each stack rooted at its command's name; hover, click to
zoom and search as in flamegraph.`,
		Example: fmt.Sprintf("  %[1]s perf-profile --duration 30s --cpu\n  %[1]s perf-generate-flamegraph --output /tmp/cpu-flame.svg", f.o.Prog),
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if out == "" {
				return errors.New("--output FILE.svg is required")
			}
			if _, err := os.Stat(in); err != nil {
				return f.fail(fmt.Errorf("the perf recording: %w (record one with %s perf-profile)", err, f.o.Prog))
			}
			perf, err := lookPerf()
			if err != nil {
				return f.fail(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
			defer cancel()
			c := exec.CommandContext(ctx, perf, "script", "-i", in)
			var stderr bytes.Buffer
			c.Stderr = &stderr
			stdout, err := c.StdoutPipe()
			if err != nil {
				return f.fail(err)
			}
			if err := c.Start(); err != nil {
				return f.fail(fmt.Errorf("perf script: %w", err))
			}
			samples, perr := analyze.ParsePerfScript(bufio.NewReaderSize(stdout, 1<<20))
			if perr != nil {
				_ = c.Process.Kill()
			}
			werr := c.Wait()
			if perr != nil {
				return f.fail(fmt.Errorf("reading perf script's output of %s: %w", in, perr))
			}
			if werr != nil {
				return f.fail(fmt.Errorf("perf script -i %s: %v: %s", in, werr, strings.TrimSpace(stderr.String())))
			}
			var total int64
			for _, s := range samples {
				total += s.Value
			}
			if total == 0 {
				return f.fail(fmt.Errorf("%s holds no samples (was anything running? record longer or system-wide)", in))
			}
			var buf bytes.Buffer
			if err := flamegraph.Render(&buf, samples, flamegraph.Options{Title: "perf CPU flame graph", Subtitle: in}); err != nil {
				return f.fail(err)
			}
			if err := os.WriteFile(out, buf.Bytes(), 0o644); err != nil {
				return f.fail(err)
			}
			if f.asJSON {
				return f.printJSON(map[string]any{"file": out, "input": in, "samples": total, "stacks": len(samples)})
			}
			f.printf("wrote %s: %d samples in %d stacks from %s\n", out, total, len(samples), in)
			return nil
		},
	}
	cmd.Flags().StringVarP(&in, "input", "i", "perf.data", "the perf recording")
	cmd.Flags().StringVar(&out, "output", "", "the SVG file to write")
	return cmd
}
