package metrics_test

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/claudefs/claudefs/controlplane/metrics"
	"github.com/claudefs/claudefs/controlplane/node"
	"github.com/prometheus/procfs"
)

// promqlWords are PromQL's functions, aggregations and keywords: identifiers in a query
// that are not metric names.
var promqlWords = map[string]bool{"sum": true, "max": true, "min": true, "avg": true, "count": true, "by": true, "without": true,
	"rate": true, "irate": true, "increase": true, "histogram_quantile": true, "vector": true, "or": true, "and": true,
	"unless": true, "on": true, "ignoring": true, "le": true, "instance": true, "node": true, "state": true, "cpu": true}

var ident = regexp.MustCompile(`[a-zA-Z_:][a-zA-Z0-9_:]*`)

// metricNames returns the metric names a PromQL expression reads: identifiers outside
// label matchers, string literals and range selectors, that are not PromQL words.
func metricNames(expr string) []string {
	// drop {...} matchers, "..." strings and [...] ranges
	clean := regexp.MustCompile(`\{[^}]*\}|"[^"]*"|\[[^\]]*\]`).ReplaceAllString(expr, " ")
	var out []string
	for _, w := range ident.FindAllString(clean, -1) {
		if !promqlWords[w] {
			out = append(out, w)
		}
	}
	return out
}

// exported reports whether name is a series the control process or the dataplane exports
// (a histogram's _bucket, _sum and _count included).
func exported(name string) bool {
	for _, suf := range []string{"", "_bucket", "_sum", "_count"} {
		if base, ok := strings.CutSuffix(name, suf); ok && (slices.Contains(metrics.Exported, base) || slices.Contains(metrics.DataplaneExported, base)) {
			return true
		}
	}
	return false
}

func TestGrafanaPanelsNameExportedMetrics(t *testing.T) {
	files, _ := filepath.Glob("../../tools/grafana/*.json")
	if len(files) == 0 {
		t.Fatal("no dashboards in tools/grafana")
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var d struct {
			Panels []struct {
				Title   string `json:"title"`
				Targets []struct {
					Expr string `json:"expr"`
				} `json:"targets"`
			} `json:"panels"`
		}
		if err := json.Unmarshal(b, &d); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		if len(d.Panels) < 8 {
			t.Errorf("%s: %d panels, want the morning check's (nodes, Raft groups, latencies, storage, CPU)", f, len(d.Panels))
		}
		for _, p := range d.Panels {
			if len(p.Targets) == 0 {
				t.Errorf("%s: panel %q has no query", f, p.Title)
			}
			for _, tg := range p.Targets {
				names := metricNames(tg.Expr)
				if len(names) == 0 {
					t.Errorf("%s: panel %q: query %q names no metric", f, p.Title, tg.Expr)
				}
				for _, n := range names {
					if !exported(n) {
						t.Errorf("%s: panel %q reads %q, which nothing exports", f, p.Title, n)
					}
				}
			}
		}
	}
}

func TestMetricNames(t *testing.T) {
	got := metricNames(`histogram_quantile(0.99, sum by (le, instance) (rate(io_read_latency_bucket[5m]))) / max(cfs_node_state{state="DOWN"})`)
	if !slices.Equal(got, []string{"io_read_latency_bucket", "cfs_node_state"}) {
		t.Fatalf("metricNames: %q", got)
	}
}

// TestAlertFile checks tools/prometheus/alerts.yml holds exactly the rules cfsctl
// evaluates (name, expr, for), and that promtool accepts it.
func TestAlertFile(t *testing.T) {
	b, err := os.ReadFile("../../tools/prometheus/alerts.yml")
	if err != nil {
		t.Fatal(err)
	}
	blocks := strings.Split(string(b), "- alert: ")[1:]
	if len(blocks) != len(node.AlertRules) {
		t.Fatalf("alerts.yml has %d rules, cfsctl evaluates %d", len(blocks), len(node.AlertRules))
	}
	for i, r := range node.AlertRules {
		blk := blocks[i]
		field := func(k string) string {
			for _, line := range strings.Split(blk, "\n") {
				if v, ok := strings.CutPrefix(strings.TrimSpace(line), k+": "); ok {
					return v
				}
			}
			return ""
		}
		name := strings.TrimSpace(strings.SplitN(blk, "\n", 2)[0])
		if name != r.Name || field("expr") != r.Expr || field("for") != r.For || field("severity") != r.Severity {
			t.Errorf("rule %d: file has %s expr %q for %q severity %q; cfsctl has %s expr %q for %q severity %q",
				i, name, field("expr"), field("for"), field("severity"), r.Name, r.Expr, r.For, r.Severity)
		}
		for _, n := range metricNames(r.Expr) {
			if _, later := metrics.NotExported[n]; !exported(n) && !later {
				t.Errorf("rule %s reads %q, which nothing exports and NotExported does not explain", r.Name, n)
			}
		}
	}
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Skip("promtool not installed (make tools installs Debian's prometheus package)")
	}
	if out, err := exec.Command(promtool, "check", "rules", "../../tools/prometheus/alerts.yml").CombinedOutput(); err != nil {
		t.Fatalf("promtool check rules: %v\n%s", err, out)
	}
}

func TestBusy(t *testing.T) {
	a := procfs.CPUStat{User: 10, System: 5, Idle: 85}
	b := procfs.CPUStat{User: 40, System: 5, Idle: 115}
	if u, ok := metrics.Busy(a, b); !ok || u != 0.5 {
		t.Fatalf("Busy = %v, %v; want 0.5", u, ok)
	}
	if _, ok := metrics.Busy(a, a); ok {
		t.Fatal("Busy with no time passed must say so")
	}
}

func TestLog2Histogram(t *testing.T) {
	// 3 under 1 µs, 2 in [1, 2) µs, 1 in [512, 1024) µs.
	buckets := make([]uint64, 32)
	buckets[0], buckets[1], buckets[10] = 3, 2, 1
	count, sum, cum := metrics.Log2Histogram(buckets)
	if count != 6 {
		t.Fatalf("count %d, want 6", count)
	}
	bounds := metrics.LatencyBuckets()
	if cum[bounds[0]] != 3 || cum[bounds[1]] != 5 || cum[bounds[9]] != 5 || cum[bounds[10]] != 6 || cum[bounds[len(bounds)-1]] != 6 {
		t.Fatalf("cumulative counts %v", cum)
	}
	want := (3*0.5 + 2*1.5 + 768) / 1e6
	if d := sum - want; d > 1e-12 || d < -1e-12 {
		t.Fatalf("sum %v, want %v", sum, want)
	}
}
