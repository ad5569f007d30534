package bench

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
)

// MaxBaselineSize bounds a --compare baseline file.
const MaxBaselineSize = 64 << 20

// DefaultCompareThreshold is --compare-threshold's default: a figure more
// than 10% worse than its baseline fails the comparison.
const DefaultCompareThreshold = 0.10

// Figure is one number of a report compared with its baseline.
type Figure struct {
	Job    string // jobname, with "#N" when several entries share it
	Dir    string // read or write
	Name   string // iops, bw, clat p50, clat p99, clat p99.9, lat mean
	Base   float64
	Now    float64
	Ratio  float64 // Now / Base
	Higher bool    // higher is better (iops, bw); else lower is (latency)
	Worse  bool    // worse than the threshold allows
}

// Comparison is a report compared with a baseline.
type Comparison struct {
	Threshold float64
	Figures   []Figure
	// Missing lists the baseline's jobs (and directions) that the report
	// lacks: they cannot be compared, which fails the comparison.
	Missing []string
}

// Failed reports whether any figure is worse than the threshold or a
// baseline job is missing.
func (c *Comparison) Failed() bool {
	if len(c.Missing) > 0 {
		return true
	}
	for _, f := range c.Figures {
		if f.Worse {
			return true
		}
	}
	return false
}

// Err describes the failures, naming each figure; nil when none.
func (c *Comparison) Err() error {
	var msgs []string
	for _, f := range c.Figures {
		if f.Worse {
			msgs = append(msgs, fmt.Sprintf("%s %s %s is %.3f × the baseline (%s → %s), worse than the %s threshold",
				f.Job, f.Dir, f.Name, f.Ratio, formatFigure(f.Name, f.Base), formatFigure(f.Name, f.Now), formatPercent(c.Threshold)))
		}
	}
	for _, m := range c.Missing {
		msgs = append(msgs, m+" is in the baseline but not in this run")
	}
	if len(msgs) == 0 {
		return nil
	}
	return fmt.Errorf("regression against the baseline: %s", strings.Join(msgs, "; "))
}

// Report is what Compare reads of a fio JSON report: per job entry, its
// name and per direction its rates and latencies.
type Report struct {
	Jobs []ReportJob `json:"jobs"`
}

type ReportJob struct {
	Jobname string    `json:"jobname"`
	Read    ReportDir `json:"read"`
	Write   ReportDir `json:"write"`
}

type ReportDir struct {
	IOPS     float64 `json:"iops"`
	BWBytes  float64 `json:"bw_bytes"`
	BW       float64 `json:"bw"` // KiB/s, when bw_bytes is absent (older fio)
	TotalIOs float64 `json:"total_ios"`
	ClatNs   struct {
		Percentile map[string]float64 `json:"percentile"`
	} `json:"clat_ns"`
	LatNs struct {
		Mean float64 `json:"mean"`
	} `json:"lat_ns"`
}

// ParseReport decodes a fio JSON report (ours or fio's). Text before the
// first '{' (fio prints notes there) is skipped.
func ParseReport(data []byte) (*Report, error) {
	if len(data) > MaxBaselineSize {
		return nil, fmt.Errorf("%d bytes: a report is limited to %d", len(data), MaxBaselineSize)
	}
	i := bytes.IndexByte(data, '{')
	if i < 0 {
		return nil, fmt.Errorf("no JSON object: not a fio --output-format=json report")
	}
	var r Report
	dec := json.NewDecoder(bytes.NewReader(data[i:]))
	if err := dec.Decode(&r); err != nil {
		return nil, fmt.Errorf("not a fio JSON report: %w", err)
	}
	if len(r.Jobs) == 0 {
		return nil, fmt.Errorf("no jobs[]: not a fio JSON report")
	}
	return &r, nil
}

// entries keys the report's jobs: the jobname, with "#N" (0-based) when
// several entries share it (numjobs without group_reporting).
func (r *Report) entries() (keys []string, jobs map[string]*ReportJob) {
	count := map[string]int{}
	for _, j := range r.Jobs {
		count[j.Jobname]++
	}
	seen := map[string]int{}
	jobs = map[string]*ReportJob{}
	for i := range r.Jobs {
		j := &r.Jobs[i]
		k := j.Jobname
		if count[k] > 1 {
			k = fmt.Sprintf("%s#%d", k, seen[j.Jobname])
			seen[j.Jobname]++
		}
		keys = append(keys, k)
		jobs[k] = j
	}
	return keys, jobs
}

// comparePercentiles are the clat percentiles compared, with fio's keys.
var comparePercentiles = []struct{ name, key string }{
	{"clat p50", "50.000000"}, {"clat p99", "99.000000"}, {"clat p99.9", "99.900000"},
}

// Compare compares the report now with the baseline base figure by figure:
// per job entry (matched by jobname, in order) and per direction the
// baseline moved data in: IOPS and bandwidth (worse when lower than
// 1 - threshold times the baseline), the clat p50/p99/p99.9 and the mean
// total latency (worse when higher than 1 + threshold times). A figure
// the baseline lacks or has as 0 is not compared.
func Compare(base, now *Report, threshold float64) *Comparison {
	c := &Comparison{Threshold: threshold}
	bkeys, bjobs := base.entries()
	_, njobs := now.entries()
	for _, k := range bkeys {
		b := bjobs[k]
		n, ok := njobs[k]
		for _, dir := range []string{"read", "write"} {
			bd, nd := &b.Read, (*ReportDir)(nil)
			if dir == "write" {
				bd = &b.Write
			}
			if bd.TotalIOs == 0 && bd.IOPS == 0 {
				continue
			}
			if ok {
				nd = &n.Read
				if dir == "write" {
					nd = &n.Write
				}
			}
			if nd == nil || (nd.TotalIOs == 0 && nd.IOPS == 0) {
				c.Missing = append(c.Missing, fmt.Sprintf("job %s %s", k, dir))
				continue
			}
			add := func(name string, bv, nv float64, higher bool) {
				if bv <= 0 || math.IsNaN(bv) || math.IsInf(bv, 0) || math.IsNaN(nv) || math.IsInf(nv, 0) {
					return
				}
				f := Figure{Job: k, Dir: dir, Name: name, Base: bv, Now: nv, Ratio: nv / bv, Higher: higher}
				if higher {
					f.Worse = f.Ratio < 1-threshold
				} else {
					f.Worse = f.Ratio > 1+threshold
				}
				c.Figures = append(c.Figures, f)
			}
			add("iops", bd.IOPS, nd.IOPS, true)
			add("bw", bd.bytesPerSec(), nd.bytesPerSec(), true)
			for _, p := range comparePercentiles {
				bv, bok := bd.ClatNs.Percentile[p.key]
				nv, nok := nd.ClatNs.Percentile[p.key]
				if bok && nok {
					add(p.name, bv, nv, false)
				}
			}
			add("lat mean", bd.LatNs.Mean, nd.LatNs.Mean, false)
		}
	}
	return c
}

func (d *ReportDir) bytesPerSec() float64 {
	if d.BWBytes > 0 {
		return d.BWBytes
	}
	return d.BW * 1024
}

// formatFigure renders a figure's value with its unit.
func formatFigure(name string, v float64) string {
	switch {
	case name == "iops":
		return formatCount(v)
	case name == "bw":
		return formatBinary(v) + "/s"
	}
	switch {
	case v >= 1e6:
		return formatNumber(v/1e6) + "ms"
	case v >= 1e3:
		return formatNumber(v/1e3) + "µs"
	}
	return formatNumber(v) + "ns"
}

func formatPercent(t float64) string {
	return strconv.FormatFloat(t*100, 'f', -1, 64) + "%"
}

// Write prints the comparison as a table: one line per figure with its
// baseline, its value now, the ratio and a verdict.
func (c *Comparison) Write(w io.Writer, baseline string) error {
	var b strings.Builder
	fmt.Fprintf(&b, "compared with %s (a figure fails when more than %s worse):\n", baseline, formatPercent(c.Threshold))
	fmt.Fprintf(&b, "  %-24s %-5s %-10s %12s %12s %7s\n", "job", "dir", "figure", "baseline", "now", "ratio")
	for _, f := range c.Figures {
		verdict := "ok"
		if f.Worse {
			verdict = "WORSE"
		}
		fmt.Fprintf(&b, "  %-24s %-5s %-10s %12s %12s %7.3f  %s\n", f.Job, f.Dir, f.Name,
			formatFigure(f.Name, f.Base), formatFigure(f.Name, f.Now), f.Ratio, verdict)
	}
	for _, m := range c.Missing {
		fmt.Fprintf(&b, "  %s: in the baseline, missing from this run\n", m)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// ParseThreshold parses --compare-threshold: a percentage, "10" or "10%",
// above 0 and at most 1000.
func ParseThreshold(s string) (float64, error) {
	t := strings.TrimSuffix(strings.TrimSpace(s), "%")
	v, err := strconv.ParseFloat(t, 64)
	if err != nil || !(v > 0 && v <= 1000) {
		return 0, Usagef("--compare-threshold=%q: a percentage above 0 and at most 1000, e.g. 10 or 10%%", s)
	}
	return v / 100, nil
}
