package admincli

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/claudefs/claudefs/controlplane/node"
	"github.com/claudefs/claudefs/profiling"
	"github.com/claudefs/claudefs/profiling/analyze"
	"github.com/claudefs/claudefs/profiling/flamegraph"
	"github.com/google/pprof/profile"
	"github.com/spf13/cobra"
)

// profileFlags are what profile, flamegraph and workload-analysis share.
type profileFlags struct {
	node     string
	core     int
	duration time.Duration
	process  string
	op       string // keep only the samples labelled with this op
	input    string // a pprof file instead of asking a node
}

func (p *profileFlags) register(cmd *cobra.Command, defDuration time.Duration, withInput bool) {
	fs := cmd.Flags()
	fs.StringVar(&p.node, "node", "", "the node to profile (default: the node answering)")
	fs.IntVar(&p.core, "core", -1, "keep only the samples of this dataplane I/O core (its partition goroutine and event loop: pprof label core)")
	fs.DurationVar(&p.duration, "duration", defDuration, "how long to profile, 1s..120s")
	fs.StringVar(&p.process, "process", node.ProcessDataplane, "the process to profile: dataplane or control")
	fs.StringVar(&p.op, "operation", "", "keep only the samples of request workers serving this operation (pprof label op: write, read, delete, stat, list, stats)")
	if withInput {
		fs.StringVar(&p.input, "input", "", "read this pprof file (e.g. from `profile -o`) instead of profiling a node")
	}
}

// check validates the flags (a bad command line: exit status 2).
func (p *profileFlags) check() error {
	switch p.op {
	case "", "write", "read", "delete", "stat", "list", "stats":
	default:
		return fmt.Errorf("--operation %q: want write, read, delete, stat, list or stats", p.op)
	}
	if p.core < -1 {
		return fmt.Errorf("--core %d: want an I/O core number (0, 1, …)", p.core)
	}
	if p.input != "" {
		return nil
	}
	if _, err := node.ParseProfileDuration(p.duration.String()); err != nil {
		return fmt.Errorf("--duration: %v", err)
	}
	if p.process != node.ProcessDataplane && p.process != node.ProcessControl {
		return fmt.Errorf("--process %q: want dataplane or control", p.process)
	}
	if (p.core >= 0 || p.op != "") && p.process != node.ProcessDataplane {
		return fmt.Errorf("--core and --operation apply to the dataplane's profile (its labels), not the %s's", p.process)
	}
	return nil
}

// taken is a profile and where it came from.
type taken struct {
	Node    string
	Process string
	PID     int
	Dur     time.Duration
	Raw     []byte
	Prof    *profile.Profile
}

func (t *taken) what() string {
	if t.Node == "" {
		return t.Process
	}
	return fmt.Sprintf("%s's %s", t.Node, t.Process)
}

// fetch takes the profile the flags ask for (or reads --input), decoded and, with
// --core, cut to that core.
func (f *flags) fetch(p *profileFlags) (*taken, error) {
	t := &taken{Process: p.process, Dur: p.duration}
	if p.input != "" {
		b, err := os.ReadFile(p.input)
		if err != nil {
			return nil, err
		}
		t.Raw, t.Process = b, p.input
	} else {
		ctx, cancel := context.WithTimeout(context.Background(), max(f.timeout, p.duration+30*time.Second))
		defer cancel()
		// One quick call finds a node that answers and the address of the one asked for.
		var c node.AdminCluster
		ep, err := f.call(ctx, http.MethodGet, "/v1/admin/cluster?reports=0", nil, &c)
		if err != nil {
			return nil, err
		}
		id, addr := p.node, ep
		if id == "" {
			id = c.AnsweredBy
		} else {
			addr = ""
			var ids []string
			for _, n := range c.Nodes {
				if n.ID == id {
					addr = n.ClientAddr
				}
				ids = append(ids, n.ID)
			}
			if addr == "" {
				return nil, fmt.Errorf("no node %q in cluster %s (members: %s)", id, c.ClusterName, strings.Join(ids, ", "))
			}
		}
		fmt.Fprintf(f.o.Stderr, "taking a %s CPU profile of %s's %s (%s)…\n", p.duration, id, p.process, addr)
		q := url.Values{"duration": {p.duration.String()}, "process": {p.process}}
		var resp node.ProfileResponse
		api, err := node.FindCreds(f.cert, f.key, f.ca, f.nodeDir).Client(p.duration + 30*time.Second)
		if err != nil {
			return nil, err
		}
		if err := api.Do(ctx, addr, http.MethodGet, "/v1/admin/profile?"+q.Encode(), nil, &resp); err != nil {
			return nil, fmt.Errorf("profiling %s's %s at %s: %w", id, p.process, addr, err)
		}
		t.Node, t.PID, t.Raw, t.Dur = resp.Node, resp.PID, resp.Pprof, time.Duration(resp.DurationNs)
	}
	prof, err := analyze.Decode(t.Raw)
	if err != nil {
		return nil, fmt.Errorf("the profile of %s: %w", t.what(), err)
	}
	t.Prof = prof
	if p.input != "" {
		t.Dur = time.Duration(prof.DurationNanos)
	}
	if p.core >= 0 {
		cores := analyze.LabelValues(prof, profiling.LabelCore)
		if _, kept := analyze.KeepLabel(prof, profiling.LabelCore, strconv.Itoa(p.core)); kept == 0 {
			have := "none (no I/O core ran while it was taken)"
			if len(cores) > 0 {
				have = strings.Join(cores, ", ")
			}
			return nil, fmt.Errorf("the profile of %s has no samples of core %d; cores seen: %s", t.what(), p.core, have)
		}
	}
	if p.op != "" {
		ops := analyze.LabelValues(prof, profiling.LabelOp)
		if _, kept := analyze.KeepLabel(prof, profiling.LabelOp, p.op); kept == 0 {
			return nil, fmt.Errorf("the profile of %s has no samples of operation %s (ops seen: %s); reads and writes the fast path serves run on the event loops and I/O cores, which --core selects",
				t.what(), p.op, orNone(strings.Join(ops, ", ")))
		}
	}
	if p.core >= 0 || p.op != "" {
		var buf bytes.Buffer
		if err := prof.Write(&buf); err != nil {
			return nil, err
		}
		t.Raw = buf.Bytes()
	}
	return t, nil
}

// needSamples refuses a profile without samples, saying why that happens.
func needSamples(t *taken) error {
	if analyze.Total(t.Prof) > 0 {
		return nil
	}
	return fmt.Errorf("the profile of %s holds no samples: it used no CPU for %s (idle?); profile it while it is busy, or for longer", t.what(), t.Dur)
}

// ProfileJSON is `profile --json`.
type ProfileJSON struct {
	Node      string   `json:"node"`
	Process   string   `json:"process"`
	PID       int      `json:"pid"`
	DurationS float64  `json:"duration_s"`
	Core      *int     `json:"core,omitempty"`
	File      string   `json:"file"`
	Bytes     int      `json:"bytes"`
	Samples   int64    `json:"samples"`
	Cores     []string `json:"cores"` // the core labels in the profile
}

func newProfile(f *flags) *cobra.Command {
	var pf profileFlags
	var out string
	cmd := &cobra.Command{
		Use:   "profile [--node NODE] [--core C] [--duration 30s] -o FILE",
		Short: "Take a CPU profile of a node's dataplane (or control process) in pprof format",
		Long: `profile takes a CPU profile of a node's dataplane for --duration and writes it
to FILE in pprof's format (go tool pprof reads it). The dataplane labels its
samples: core (the I/O core: its partition goroutine and event loop), role
(io, net, worker) and op (on workers: write, read, delete, stat,
list, stats). --core keeps only one core's samples, --operation only the
workers' samples of one operation (reads and writes the fast path serves run
on the event loops and I/O cores instead: select those with --core).
--process control profiles the node's control process instead.

--json fields: node, process, pid, duration_s, core, file, bytes, samples, cores[].`,
		Example: fmt.Sprintf(`  %[1]s profile --node node-1 --duration 30s -o node-1.pprof
  %[1]s profile --node node-1 --core 0 --duration 10s -o core0.pprof
  go tool pprof -top -tagfocus=op=write node-1.pprof`, f.o.Prog),
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if out == "" {
				return fmt.Errorf("-o FILE is required (where to write the profile; - for stdout)")
			}
			if err := pf.check(); err != nil {
				return err
			}
			t, err := f.fetch(&pf)
			if err != nil {
				return f.fail(err)
			}
			if out == "-" {
				_, err = f.o.Stdout.Write(t.Raw)
				return f.fail(err)
			}
			if err := os.WriteFile(out, t.Raw, 0o644); err != nil {
				return f.fail(err)
			}
			j := ProfileJSON{Node: t.Node, Process: t.Process, PID: t.PID, DurationS: t.Dur.Seconds(), File: out, Bytes: len(t.Raw),
				Samples: analyze.Total(t.Prof), Cores: analyze.LabelValues(t.Prof, profiling.LabelCore)}
			if pf.core >= 0 {
				j.Core = &pf.core
			}
			if f.asJSON {
				return f.printJSON(j)
			}
			f.printf("wrote %s: %d samples over %s of %s (pid %d); cores in it: %s\n", out, j.Samples, t.Dur, t.what(), t.PID, orNone(strings.Join(j.Cores, ",")))
			f.printf("look at it with: go tool pprof -http=:8080 %s   or: %s flamegraph --input %s > flame.svg\n", out, f.o.Prog, out)
			return nil
		},
	}
	pf.register(cmd, 30*time.Second, false)
	cmd.Flags().StringVarP(&out, "output", "o", "", "the file to write (- for stdout)")
	return cmd
}

func newFlamegraph(f *flags) *cobra.Command {
	var pf profileFlags
	var out string
	cmd := &cobra.Command{
		Use:   "flamegraph [--node NODE] [--core C] [--duration 30s] [-o FILE] > flame.svg",
		Short: "A CPU flame graph (SVG) of a node's dataplane",
		Long: `flamegraph takes a CPU profile as profile does (or reads one with --input)
and draws it as an interactive SVG flame graph: the width of a frame is the
share of samples under it; hover for the function, its samples and percent;
click a frame to zoom to it, "Reset zoom" to zoom out; "Search" highlights
the frames matching a regular expression. Open it in a browser.`,
		Example: fmt.Sprintf(`  %[1]s flamegraph --node node-1 --duration 20s > /tmp/claudefs-flame.svg
  %[1]s flamegraph --node node-1 --core 1 -o core1.svg
  %[1]s flamegraph --input node-1.pprof > flame.svg`, f.o.Prog),
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := pf.check(); err != nil {
				return err
			}
			t, err := f.fetch(&pf)
			if err != nil {
				return f.fail(err)
			}
			if err := needSamples(t); err != nil {
				return f.fail(err)
			}
			sub := fmt.Sprintf("%s, %s", t.what(), t.Dur)
			if pf.core >= 0 {
				sub += fmt.Sprintf(", core %d", pf.core)
			}
			var w io.Writer = f.o.Stdout
			var file *os.File
			if out != "" && out != "-" {
				if file, err = os.Create(out); err != nil {
					return f.fail(err)
				}
				w = file
			}
			err = flamegraph.Render(w, analyze.Folded(t.Prof), flamegraph.Options{Title: "ClaudeFS CPU flame graph", Subtitle: sub})
			if file != nil {
				if cerr := file.Close(); err == nil {
					err = cerr
				}
			}
			if err != nil {
				return f.fail(fmt.Errorf("drawing the profile of %s: %w", t.what(), err))
			}
			if file != nil {
				fmt.Fprintf(f.o.Stderr, "wrote %s (%d samples)\n", out, analyze.Total(t.Prof))
			}
			return nil
		},
	}
	pf.register(cmd, 30*time.Second, true)
	cmd.Flags().StringVarP(&out, "output", "o", "", "write the SVG here instead of stdout")
	return cmd
}

// WorkloadJSON is `workload-analysis --json`.
type WorkloadJSON struct {
	Node      string                `json:"node"`
	Process   string                `json:"process"`
	DurationS float64               `json:"duration_s"`
	Core      *int                  `json:"core,omitempty"`
	Samples   int64                 `json:"samples"`
	Buckets   []analyze.BucketShare `json:"buckets"`
	ByRole    map[string]float64    `json:"by_role_percent,omitempty"`
}

func newWorkloadAnalysis(f *flags) *cobra.Command {
	var pf profileFlags
	cmd := &cobra.Command{
		Use:   "workload-analysis [--node NODE] [--duration 10s] [--core C]",
		Short: "Where a node's dataplane CPU goes: EC, CRC, compression, network, GC, io_uring, syscalls",
		Long: `workload-analysis takes a short CPU profile (as profile does) and buckets its
samples by where the CPU went, from the functions on each sample's stack:
ec (reedsolomon), crc (crc32), compression, network (netio, gnet, sockets,
the poller), gc (the collector), io_uring (submission and waits), syscalls
(other system calls), other. A computing frame nearest the leaf decides;
a system call counts as io_uring or network when made from there. It also
splits the samples by the dataplane's role label (io, net, worker).

--json fields: node, process, duration_s, core, samples, buckets[] {bucket,
samples, percent, top[] {function, samples}}, by_role_percent{role: pct}.`,
		Example: fmt.Sprintf(`  %[1]s workload-analysis --node node-1
  %[1]s workload-analysis --node node-1 --duration 30s --json | jq '.buckets[] | select(.percent > 10)'`, f.o.Prog),
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := pf.check(); err != nil {
				return err
			}
			t, err := f.fetch(&pf)
			if err != nil {
				return f.fail(err)
			}
			if err := needSamples(t); err != nil {
				return f.fail(err)
			}
			buckets, total := analyze.Workload(t.Prof)
			j := WorkloadJSON{Node: t.Node, Process: t.Process, DurationS: t.Dur.Seconds(), Samples: total, Buckets: buckets, ByRole: rolesOf(t.Prof, total)}
			if pf.core >= 0 {
				j.Core = &pf.core
			}
			if f.asJSON {
				return f.printJSON(j)
			}
			f.printf("%s, %s: %d samples (%.1f CPU-seconds)\n", t.what(), t.Dur, total, float64(total)*cpuSampleSeconds(t.Prof))
			f.printf("%-12s %7s %8s  %s\n", "BUCKET", "CPU%", "SAMPLES", "TOP FUNCTIONS")
			for _, b := range buckets {
				var top []string
				for _, fs := range b.Top {
					top = append(top, fmt.Sprintf("%s (%d)", shortFunc(fs.Function), fs.Samples))
				}
				f.printf("%-12s %6.1f%% %8d  %s\n", b.Bucket, b.Percent, b.Samples, strings.Join(top, ", "))
			}
			if len(j.ByRole) > 0 {
				var roles []string
				for r := range j.ByRole {
					roles = append(roles, r)
				}
				sort.Strings(roles)
				f.printf("by role:")
				for _, r := range roles {
					f.printf(" %s %.1f%%", r, j.ByRole[r])
				}
				f.printf("\n")
			}
			return nil
		},
	}
	pf.register(cmd, 10*time.Second, true)
	return cmd
}

// rolesOf splits p's samples by the role label, in percent ("unlabelled" for the rest).
func rolesOf(p *profile.Profile, total int64) map[string]float64 {
	if total == 0 {
		return nil
	}
	by := map[string]int64{}
	for _, s := range p.Sample {
		r := "unlabelled"
		if v := s.Label[profiling.LabelRole]; len(v) > 0 {
			r = v[0]
		}
		if len(s.Value) > 0 {
			by[r] += s.Value[0]
		}
	}
	out := map[string]float64{}
	for r, n := range by {
		out[r] = 100 * float64(n) / float64(total)
	}
	return out
}

// cpuSampleSeconds is the CPU time one sample stands for (the profile's period).
func cpuSampleSeconds(p *profile.Profile) float64 {
	if p.PeriodType != nil && p.PeriodType.Unit == "nanoseconds" && p.Period > 0 {
		return float64(p.Period) / 1e9
	}
	return 0.01
}

// shortFunc drops a function's module path ("github.com/x/y/pkg.F" → "pkg.F").
func shortFunc(fn string) string {
	if i := strings.LastIndex(fn, "/"); i >= 0 {
		return fn[i+1:]
	}
	return fn
}
