package bench

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"
)

// ReportVersion is the "fio version" of the JSON report.
const ReportVersion = "cfs-bench"

// percentileList is fio's default list of completion-latency percentiles.
var percentileList = []float64{1, 5, 10, 20, 30, 40, 50, 60, 70, 80, 90, 95, 99, 99.5, 99.9, 99.95, 99.99}

// jsonReport is fio's --output-format=json document, with the fields fio's
// readers use.
type jsonReport struct {
	FioVersion    string            `json:"fio version"`
	Timestamp     int64             `json:"timestamp"`    // Unix seconds at start
	TimestampMs   int64             `json:"timestamp_ms"` // Unix milliseconds at start
	Time          string            `json:"time"`         // ctime(3) of the start
	GlobalOptions map[string]string `json:"global options,omitempty"`
	Target        string            `json:"cfs target"` // ClaudeFS extension: the first job's target
	Jobs          []jsonJob         `json:"jobs"`
}

type jsonJob struct {
	Jobname    string            `json:"jobname"`
	GroupID    int               `json:"groupid"`
	Error      int               `json:"error"` // 84 (EILSEQ) when verify found a mismatch, as fio
	Eta        int               `json:"eta"`
	Elapsed    int64             `json:"elapsed"` // seconds, ramp included
	JobOptions map[string]string `json:"job options"`
	Read       jsonDir           `json:"read"`
	Write      jsonDir           `json:"write"`
	Trim       jsonDir           `json:"trim"`
	Sync       jsonSync          `json:"sync"`
	JobRuntime int64             `json:"job_runtime"` // ms; summed over the jobs of a group_reporting entry, as fio
	// ClaudeFS extensions: the target, the spec as resolved, and what
	// verify=crc32c checked.
	Target string            `json:"cfs target"`
	Spec   map[string]string `json:"cfs job"`
	Verify *jsonVerify       `json:"cfs verify,omitempty"`
}

type jsonSync struct {
	TotalIOs int64   `json:"total_ios"`
	LatNs    jsonLat `json:"lat_ns"`
}

type jsonVerify struct {
	UnitBytes  int            `json:"unit_bytes"`
	Units      int64          `json:"units_checked"`
	Mismatches int64          `json:"mismatches"`
	First      []jsonMismatch `json:"first_mismatches,omitempty"`
}

type jsonMismatch struct {
	Offset int64  `json:"offset"`
	Reason string `json:"reason"`
}

type jsonDir struct {
	IOBytes  int64   `json:"io_bytes"`
	IOKBytes int64   `json:"io_kbytes"`
	BWBytes  int64   `json:"bw_bytes"` // bytes/s
	BW       int64   `json:"bw"`       // KiB/s
	IOPS     float64 `json:"iops"`
	Runtime  int64   `json:"runtime"` // ms; 0 when the direction did no I/O
	TotalIOs int64   `json:"total_ios"`
	ShortIOs int64   `json:"short_ios"`
	DropIOs  int64   `json:"drop_ios"`
	ClatNs   jsonLat `json:"clat_ns"`
	LatNs    jsonLat `json:"lat_ns"`
}

type jsonLat struct {
	Min        int64       `json:"min"`
	Max        int64       `json:"max"`
	Mean       float64     `json:"mean"`
	Stddev     float64     `json:"stddev"`
	N          uint64      `json:"N"`
	Percentile percentiles `json:"percentile,omitempty"`
}

// percentiles marshals as a JSON object with fio's keys ("99.000000") in
// percentileList order, values in ns.
type percentiles []int64

func (p percentiles) MarshalJSON() ([]byte, error) {
	var b bytes.Buffer
	b.WriteByte('{')
	for i, v := range p {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, "%q:%d", percentileKey(percentileList[i]), v)
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}

// percentileKey is fio's JSON key for percentile p: "99.000000".
func percentileKey(p float64) string { return strconv.FormatFloat(p, 'f', 6, 64) }

func latJSON(h *Histogram) jsonLat {
	l := jsonLat{Min: h.Min(), Max: h.Max(), Mean: h.Mean(), Stddev: h.Stddev(), N: h.Count()}
	if h.Count() > 0 {
		l.Percentile = make(percentiles, len(percentileList))
		for i, p := range percentileList {
			l.Percentile[i] = h.Percentile(p)
		}
	}
	return l
}

// dirRates returns bytes/s and I/Os per second over runtime.
func dirRates(d *DirStats, runtime time.Duration) (bw, iops float64) {
	if d.IOs == 0 || runtime <= 0 {
		return 0, 0
	}
	s := runtime.Seconds()
	return float64(d.Bytes) / s, float64(d.IOs) / s
}

func dirJSON(d *DirStats, runtime time.Duration) jsonDir {
	bw, iops := dirRates(d, runtime)
	j := jsonDir{
		IOBytes: d.Bytes, IOKBytes: d.Bytes >> 10,
		BWBytes: int64(bw), BW: int64(bw) >> 10, IOPS: iops,
		TotalIOs: d.IOs,
		ClatNs:   latJSON(&d.Clat), LatNs: latJSON(&d.Lat),
	}
	if d.IOs > 0 {
		j.Runtime = runtime.Milliseconds()
	}
	return j
}

// optionMap renders options as fio's "job options": the last value of
// each key wins; a bare option is "1".
func optionMap(opts ...[]Option) map[string]string {
	m := map[string]string{}
	for _, list := range opts {
		for _, o := range list {
			if o.Bare {
				m[o.Key] = "1"
			} else {
				m[o.Key] = o.Value
			}
		}
	}
	return m
}

// specMap is the spec as resolved, for the report.
func specMap(s *Spec) map[string]string {
	m := map[string]string{
		"rw": s.Mode.String(), "bs": strconv.Itoa(s.BlockSize),
		"iodepth": strconv.Itoa(s.IODepth), "numjobs": strconv.Itoa(s.NumJobs),
		"size": strconv.FormatInt(s.Size, 10), "offset": strconv.FormatInt(s.Offset, 10),
		"direct": "1", "ioengine": string(s.Engine),
	}
	if s.BSSplit != nil {
		parts := make([]string, len(s.BSSplit))
		for i, w := range s.BSSplit {
			parts[i] = fmt.Sprintf("%d/%d", w.Size, w.Percent)
		}
		m["bssplit"] = strings.Join(parts, ":")
	}
	if s.Mode.Mixed() {
		m["rwmixread"] = strconv.Itoa(s.RWMixRead)
	}
	if s.Runtime > 0 {
		m["runtime"] = strconv.FormatInt(s.Runtime.Milliseconds(), 10) + "ms"
	}
	if s.TimeBased {
		m["time_based"] = "1"
	}
	if s.RampTime > 0 {
		m["ramp_time"] = strconv.FormatInt(s.RampTime.Milliseconds(), 10) + "ms"
	}
	if s.SyncEvery > 0 {
		k := "fsync"
		if s.SyncData {
			k = "fdatasync"
		}
		m[k] = strconv.Itoa(s.SyncEvery)
	}
	if s.EndFsync {
		m["end_fsync"] = "1"
	}
	if s.Verify {
		m["verify"] = "crc32c"
	}
	if s.GroupReporting {
		m["group_reporting"] = "1"
	}
	if s.NoRandomMap && s.Mode.Random() {
		m["norandommap"] = "1"
	}
	return m
}

// reportJobs returns the entries a result reports: one per job, or with
// group_reporting one summing them all (bytes and I/Os added, latencies
// merged, runtime the longest).
func reportJobs(r *Result) []JobResult {
	if !r.Spec.GroupReporting || len(r.Jobs) < 2 {
		return r.Jobs
	}
	var g JobResult
	for _, j := range r.Jobs {
		g.Runtime = max(g.Runtime, j.Runtime)
		g.Read.merge(&j.Read)
		g.Write.merge(&j.Write)
		g.Sync.merge(&j.Sync)
		g.Verify.merge(&j.Verify)
	}
	return []JobResult{g}
}

// WriteJSON writes the results, in order, as one fio JSON report with an
// entry in jobs[] per job (per section with group_reporting); each
// result's jobs carry its Spec.GroupID.
func WriteJSON(w io.Writer, results ...*Result) error {
	if len(results) == 0 {
		return fmt.Errorf("no results to report")
	}
	first := results[0]
	rep := jsonReport{
		FioVersion:    ReportVersion,
		Timestamp:     first.Start.Unix(),
		TimestampMs:   first.Start.UnixMilli(),
		Time:          first.Start.Format("Mon Jan _2 15:04:05 2006"),
		GlobalOptions: optionMap(first.Spec.GlobalOptions),
		Target:        first.Target,
		Jobs:          []jsonJob{},
	}
	if len(rep.GlobalOptions) == 0 {
		rep.GlobalOptions = nil
	}
	for _, r := range results {
		s := r.Spec
		opts, resolved := optionMap(s.JobOptions), specMap(s)
		perEntry := 1
		if s.GroupReporting {
			perEntry = len(r.Jobs)
		}
		for _, jr := range reportJobs(r) {
			j := jsonJob{
				Jobname:    s.Name,
				GroupID:    s.GroupID,
				Elapsed:    int64((jr.Runtime + s.RampTime).Round(time.Second) / time.Second),
				JobOptions: opts,
				Read:       dirJSON(&jr.Read, jr.Runtime),
				Write:      dirJSON(&jr.Write, jr.Runtime),
				Trim:       dirJSON(&DirStats{}, 0),
				Sync:       jsonSync{TotalIOs: jr.Sync.IOs, LatNs: latJSON(&jr.Sync.Lat)},
				JobRuntime: jr.Runtime.Milliseconds() * int64(perEntry),
				Target:     r.Target,
				Spec:       resolved,
			}
			if s.Verify {
				v := &jsonVerify{UnitBytes: s.Align, Units: jr.Verify.Units, Mismatches: jr.Verify.Mismatches}
				for _, m := range jr.Verify.First {
					v.First = append(v.First, jsonMismatch(m))
				}
				j.Verify = v
				if v.Mismatches > 0 {
					j.Error = 84 // EILSEQ, fio's verify failure
				}
			}
			rep.Jobs = append(rep.Jobs, j)
		}
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(&rep)
}

// WriteNormal writes the results, in order, as fio's human-readable
// summary: per result its jobs (one entry with group_reporting) and its
// run status group.
func WriteNormal(w io.Writer, results ...*Result) error {
	var b strings.Builder
	for _, r := range results {
		writeResultNormal(&b, r)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func writeResultNormal(b *strings.Builder, r *Result) {
	s := r.Spec
	bs := formatBinary(float64(s.BlockSize))
	if s.BSSplit != nil {
		bs = formatBinary(float64(s.Align)) + "-" + bs
	}
	fmt.Fprintf(b, "%s: (g=%d): rw=%s, bs=%s, iodepth=%d, numjobs=%d, target=%s\n",
		s.Name, s.GroupID, s.Mode, bs, s.IODepth, s.NumJobs, r.Target)
	jobs := reportJobs(r)
	for _, jr := range jobs {
		n := 1
		if len(jobs) == 1 {
			n = len(r.Jobs)
		}
		errno := 0
		if jr.Verify.Mismatches > 0 {
			errno = 84
		}
		fmt.Fprintf(b, "\n%s: (groupid=%d, jobs=%d): err=%2d: pid=%d: %s\n", s.Name, s.GroupID, n, errno, os.Getpid(), r.Start.Format("Mon Jan _2 15:04:05 2006"))
		writeDirNormal(b, "read", &jr.Read, jr.Runtime)
		writeDirNormal(b, "write", &jr.Write, jr.Runtime)
		if jr.Sync.IOs > 0 {
			l := &jr.Sync.Lat
			unit, div := latUnit(l.Max())
			fmt.Fprintf(b, "  fsync/fdatasync/sync_file_range:\n    sync (%s): min=%s, max=%s, avg=%.2f, stdev=%.2f, N=%d\n", unit,
				formatNumber(float64(l.Min())/div), formatNumber(float64(l.Max())/div), l.Mean()/div, l.Stddev()/div, l.Count())
		}
		if s.Verify {
			fmt.Fprintf(b, "  verify (crc32c, %s units): %d checked, %d mismatches\n", formatBinary(float64(s.Align)), jr.Verify.Units, jr.Verify.Mismatches)
			for _, m := range jr.Verify.First {
				fmt.Fprintf(b, "    offset %d: %s\n", m.Offset, m.Reason)
			}
		}
	}
	fmt.Fprintf(b, "\nRun status group %d (all jobs):\n", s.GroupID)
	for _, dir := range []string{"READ", "WRITE"} {
		var bytes int64
		var bwSum, bwMin, bwMax float64
		var rtMin, rtMax time.Duration
		ran := false
		for _, jr := range r.Jobs {
			d := &jr.Read
			if dir == "WRITE" {
				d = &jr.Write
			}
			if d.IOs == 0 {
				continue
			}
			bw, _ := dirRates(d, jr.Runtime)
			if !ran {
				bwMin, bwMax, rtMin, rtMax = bw, bw, jr.Runtime, jr.Runtime
			}
			ran = true
			bytes += d.Bytes
			bwSum += bw
			bwMin, bwMax = min(bwMin, bw), max(bwMax, bw)
			rtMin, rtMax = min(rtMin, jr.Runtime), max(rtMax, jr.Runtime)
		}
		if !ran {
			continue
		}
		fmt.Fprintf(b, "%8s: bw=%s/s (%s/s), %s/s-%s/s (%s/s-%s/s), io=%s (%s), run=%d-%dmsec\n", dir,
			formatBinary(bwSum), formatDecimal(bwSum), formatBinary(bwMin), formatBinary(bwMax),
			formatDecimal(bwMin), formatDecimal(bwMax), formatBinary(float64(bytes)), formatDecimal(float64(bytes)),
			rtMin.Milliseconds(), rtMax.Milliseconds())
	}
	b.WriteString("\n")
}

func writeDirNormal(b *strings.Builder, name string, d *DirStats, runtime time.Duration) {
	if d.IOs == 0 {
		return
	}
	bw, iops := dirRates(d, runtime)
	fmt.Fprintf(b, "  %s: IOPS=%s, BW=%s/s (%s/s)(%s/%dmsec)\n", name, formatCount(iops), formatBinary(bw),
		formatDecimal(bw), formatBinary(float64(d.Bytes)), runtime.Milliseconds())
	for _, l := range []struct {
		label string
		h     *Histogram
	}{{"clat", &d.Clat}, {" lat", &d.Lat}} {
		unit, div := latUnit(l.h.Max())
		fmt.Fprintf(b, "   %s (%s): min=%s, max=%s, avg=%.2f, stdev=%.2f\n", l.label, unit,
			formatNumber(float64(l.h.Min())/div), formatNumber(float64(l.h.Max())/div), l.h.Mean()/div, l.h.Stddev()/div)
	}
	unit, div := latUnit(d.Clat.Percentile(99.99))
	fmt.Fprintf(b, "    clat percentiles (%s):\n", unit)
	for i, p := range percentileList {
		if i%4 == 0 {
			b.WriteString("     |")
		}
		fmt.Fprintf(b, " %5.2fth=[%5d]", p, int64(float64(d.Clat.Percentile(p))/div+0.5))
		if i < len(percentileList)-1 {
			b.WriteString(",")
		}
		if i == len(percentileList)-1 || i%4 == 3 {
			b.WriteString("\n")
		}
	}
}

// latUnit picks the unit fio would print latencies up to maxNs in.
func latUnit(maxNs int64) (string, float64) {
	switch {
	case maxNs >= 10_000_000_000:
		return "msec", 1e6
	case maxNs >= 10_000:
		return "usec", 1e3
	}
	return "nsec", 1
}
