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
	FioVersion  string    `json:"fio version"`
	Timestamp   int64     `json:"timestamp"`    // Unix seconds at start
	TimestampMs int64     `json:"timestamp_ms"` // Unix milliseconds at start
	Time        string    `json:"time"`         // ctime(3) of the start
	Target      string    `json:"cfs target"`   // ClaudeFS extension: the target
	Jobs        []jsonJob `json:"jobs"`
}

type jsonJob struct {
	Jobname    string            `json:"jobname"`
	GroupID    int               `json:"groupid"`
	Error      int               `json:"error"`
	Eta        int               `json:"eta"`
	Elapsed    int64             `json:"elapsed"` // seconds, ramp included
	JobOptions map[string]string `json:"job options"`
	Read       jsonDir           `json:"read"`
	Write      jsonDir           `json:"write"`
	JobRuntime int64             `json:"job_runtime"` // ms
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

// WriteJSON writes the result as fio's JSON report.
func WriteJSON(w io.Writer, r *Result) error {
	s := r.Spec
	rep := jsonReport{
		FioVersion:  ReportVersion,
		Timestamp:   r.Start.Unix(),
		TimestampMs: r.Start.UnixMilli(),
		Time:        r.Start.Format("Mon Jan _2 15:04:05 2006"),
		Target:      r.Target,
	}
	opts := map[string]string{
		"name": s.Name, "rw": s.Mode.String(), "bs": strconv.Itoa(s.BlockSize),
		"iodepth": strconv.Itoa(s.IODepth), "numjobs": strconv.Itoa(s.NumJobs),
		"size": strconv.FormatInt(s.Size, 10), "offset": strconv.FormatInt(s.Offset, 10),
		"direct": "1", "ioengine": string(s.Engine),
	}
	if s.Mode.Mixed() {
		opts["rwmixread"] = strconv.Itoa(s.RWMixRead)
	}
	if s.Runtime > 0 {
		opts["runtime"] = strconv.FormatInt(s.Runtime.Milliseconds(), 10) + "ms"
	}
	if s.TimeBased {
		opts["time_based"] = "1"
	}
	if s.RampTime > 0 {
		opts["ramp_time"] = strconv.FormatInt(s.RampTime.Milliseconds(), 10) + "ms"
	}
	for _, jr := range r.Jobs {
		rep.Jobs = append(rep.Jobs, jsonJob{
			Jobname:    s.Name,
			Elapsed:    int64((jr.Runtime + s.RampTime).Round(time.Second) / time.Second),
			JobOptions: opts,
			Read:       dirJSON(&jr.Read, jr.Runtime),
			Write:      dirJSON(&jr.Write, jr.Runtime),
			JobRuntime: jr.Runtime.Milliseconds(),
		})
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(&rep)
}

// WriteNormal writes the result as fio's human-readable summary.
func WriteNormal(w io.Writer, r *Result) error {
	s := r.Spec
	var b strings.Builder
	fmt.Fprintf(&b, "%s: (g=0): rw=%s, bs=%s, iodepth=%d, numjobs=%d, target=%s\n",
		s.Name, s.Mode, formatBinary(float64(s.BlockSize)), s.IODepth, s.NumJobs, r.Target)
	for _, jr := range r.Jobs {
		fmt.Fprintf(&b, "\n%s: (groupid=0, jobs=1): err= 0: pid=%d: %s\n", s.Name, os.Getpid(), r.Start.Format("Mon Jan _2 15:04:05 2006"))
		writeDirNormal(&b, "read", &jr.Read, jr.Runtime)
		writeDirNormal(&b, "write", &jr.Write, jr.Runtime)
	}
	b.WriteString("\nRun status group 0 (all jobs):\n")
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
		fmt.Fprintf(&b, "%8s: bw=%s/s (%s/s), %s/s-%s/s (%s/s-%s/s), io=%s (%s), run=%d-%dmsec\n", dir,
			formatBinary(bwSum), formatDecimal(bwSum), formatBinary(bwMin), formatBinary(bwMax),
			formatDecimal(bwMin), formatDecimal(bwMax), formatBinary(float64(bytes)), formatDecimal(float64(bytes)),
			rtMin.Milliseconds(), rtMax.Milliseconds())
	}
	_, err := io.WriteString(w, b.String())
	return err
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
