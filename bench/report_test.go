package bench

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"
)

// testResult is a one-job randread result: 1000 reads of 4 KiB over 2 s
// with latencies 1..1000 µs.
func testResult() *Result {
	spec := &Spec{Name: "a", Target: "device:/x", Mode: ModeRandRead, RWMixRead: 50, BlockSize: 4096,
		IODepth: 32, NumJobs: 1, Size: 1 << 30, Runtime: 2 * time.Second, TimeBased: true, Engine: "io_uring"}
	jr := JobResult{Runtime: 2 * time.Second}
	jr.Read.Clat, jr.Read.Lat = newHistogram(), newHistogram()
	for i := int64(1); i <= 1000; i++ {
		jr.Read.IOs++
		jr.Read.Bytes += 4096
		jr.Read.Clat.Record(i * 1000)
		jr.Read.Lat.Record(i*1000 + 500)
	}
	return &Result{Spec: spec, Target: "device:/x (io_uring)", Start: time.Unix(1700000000, 0), Jobs: []JobResult{jr}}
}

func TestWriteJSONShape(t *testing.T) {
	var buf bytes.Buffer
	if err := WriteJSON(&buf, testResult()); err != nil {
		t.Fatal(err)
	}
	// Decode the way a fio reader does.
	var rep struct {
		Version string `json:"fio version"`
		Jobs    []struct {
			Jobname string `json:"jobname"`
			Read    struct {
				IOBytes  int64   `json:"io_bytes"`
				IOKBytes int64   `json:"io_kbytes"`
				BW       int64   `json:"bw"`
				BWBytes  int64   `json:"bw_bytes"`
				IOPS     float64 `json:"iops"`
				Runtime  int64   `json:"runtime"`
				TotalIOs int64   `json:"total_ios"`
				ClatNs   struct {
					Min, Max   int64
					Mean       float64
					Percentile map[string]int64 `json:"percentile"`
				} `json:"clat_ns"`
				LatNs struct {
					Min        int64            `json:"min"`
					Percentile map[string]int64 `json:"percentile"`
				} `json:"lat_ns"`
			} `json:"read"`
			Write map[string]any `json:"write"`
		} `json:"jobs"`
	}
	if err := json.Unmarshal(buf.Bytes(), &rep); err != nil {
		t.Fatalf("%v\n%s", err, buf.String())
	}
	if rep.Version != "cfs-bench" || len(rep.Jobs) != 1 || rep.Jobs[0].Jobname != "a" {
		t.Fatalf("header: %+v", rep)
	}
	r := rep.Jobs[0].Read
	if r.IOBytes != 4096000 || r.IOKBytes != 4000 || r.TotalIOs != 1000 || r.Runtime != 2000 ||
		r.IOPS != 500 || r.BWBytes != 2048000 || r.BW != 2000 {
		t.Errorf("read = %+v", r)
	}
	if r.ClatNs.Min != 1000 || r.ClatNs.Max != 1000000 || r.ClatNs.Mean != 500500 || r.LatNs.Min != 1500 {
		t.Errorf("clat = %+v", r.ClatNs)
	}
	keys := []string{"1.000000", "5.000000", "10.000000", "20.000000", "30.000000", "40.000000", "50.000000",
		"60.000000", "70.000000", "80.000000", "90.000000", "95.000000", "99.000000", "99.500000", "99.900000",
		"99.950000", "99.990000"}
	if len(r.ClatNs.Percentile) != len(keys) || len(r.LatNs.Percentile) != len(keys) {
		t.Errorf("percentile keys: clat %v lat %v", r.ClatNs.Percentile, r.LatNs.Percentile)
	}
	for _, k := range keys {
		if _, ok := r.ClatNs.Percentile[k]; !ok {
			t.Errorf("clat_ns.percentile lacks %q", k)
		}
	}
	if p99 := r.ClatNs.Percentile["99.000000"]; p99 < 985000 || p99 > 995000 {
		t.Errorf("p99 = %d, want 990000 ± 0.5%%", p99)
	}
	// Keys come in fio's numeric order, not sorted as strings.
	if strings.Index(buf.String(), `"5.000000"`) > strings.Index(buf.String(), `"10.000000"`) {
		t.Error("percentiles are not in fio's order")
	}
	// A direction without I/O: zeros and no percentile map.
	w := rep.Jobs[0].Write
	if w["iops"].(float64) != 0 || w["io_bytes"].(float64) != 0 || w["runtime"].(float64) != 0 {
		t.Errorf("write = %v", w)
	}
	clat := w["clat_ns"].(map[string]any)
	if _, ok := clat["percentile"]; ok || clat["N"].(float64) != 0 || clat["min"].(float64) != 0 {
		t.Errorf("write.clat_ns = %v", clat)
	}
}

func TestWriteNormal(t *testing.T) {
	var buf bytes.Buffer
	if err := WriteNormal(&buf, testResult()); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	for _, want := range []string{
		"read: IOPS=500, BW=2000KiB/s (2048kB/s)(4000KiB/2000msec)",
		"clat (usec): min=1, max=1000, avg=500.50",
		" lat (usec): min=1.5, max=1001, avg=501.00",
		"clat percentiles (usec):",
		"| 99.00th=[  987], 99.50th=[  995], 99.90th=[ 1000], 99.95th=[ 1000],\n     | 99.99th=[ 1000]\n",
		"READ: bw=2000KiB/s (2048kB/s), 2000KiB/s-2000KiB/s (2048kB/s-2048kB/s), io=4000KiB (4096kB)",
		"run=2000-2000msec",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("normal output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "write:") {
		t.Errorf("a read-only job printed a write section:\n%s", out)
	}
}

func TestFormatting(t *testing.T) {
	for _, c := range []struct{ got, want string }{
		{formatCount(38234), "38.2k"}, {formatCount(950), "950"}, {formatCount(1.5e6), "1.5M"},
		{formatBinary(4096), "4096B"}, {formatBinary(64 << 10), "64KiB"}, {formatBinary(1.5 * (1 << 20)), "1536KiB"}, {formatBinary(5 << 30), "5120MiB"}, {formatBinary(10 << 30), "10GiB"}, {formatDecimal(157e6), "157MB"},
		{formatETA(4 * time.Second), "4s"}, {formatETA(65 * time.Second), "1m05s"}, {formatETA(2*time.Hour + 3*time.Minute), "2h03m00s"},
	} {
		if c.got != c.want {
			t.Errorf("got %q, want %q", c.got, c.want)
		}
	}
}
