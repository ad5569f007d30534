package bench

import (
	"bytes"
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"
)

// fioBaseline is a report fio 3.33 wrote (a randread and a randwrite job
// with fdatasync, --output-format=json).
func fioBaseline(t *testing.T) []byte {
	t.Helper()
	data, err := os.ReadFile("testdata/fio-3.33.json")
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// scaled rewrites a JSON report, multiplying jobs[i].dir.field (a number,
// or a clat_ns percentile given as "percentile:99.000000") by f.
func scaled(t *testing.T, data []byte, i int, dir, field string, f float64) []byte {
	t.Helper()
	var rep map[string]any
	if err := json.Unmarshal(data, &rep); err != nil {
		t.Fatal(err)
	}
	d := rep["jobs"].([]any)[i].(map[string]any)[dir].(map[string]any)
	if key, ok := strings.CutPrefix(field, "percentile:"); ok {
		p := d["clat_ns"].(map[string]any)["percentile"].(map[string]any)
		p[key] = p[key].(float64) * f
	} else {
		d[field] = d[field].(float64) * f
	}
	out, err := json.Marshal(rep)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func mustReport(t *testing.T, data []byte) *Report {
	t.Helper()
	r, err := ParseReport(data)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestCompareFioBaseline(t *testing.T) {
	data := fioBaseline(t)
	base := mustReport(t, append([]byte("fio: some note before the JSON\n"), data...))
	if len(base.Jobs) != 2 || base.Jobs[0].Jobname != "randread" || base.Jobs[0].Read.IOPS <= 0 || base.Jobs[1].Write.IOPS <= 0 {
		t.Fatalf("parsed %+v", base.Jobs)
	}

	// Against itself: every figure at 1.000, nothing worse.
	c := Compare(base, base, DefaultCompareThreshold)
	if c.Failed() || c.Err() != nil {
		t.Fatalf("self comparison failed: %v", c.Err())
	}
	names := map[string]bool{}
	for _, f := range c.Figures {
		names[f.Job+" "+f.Dir+" "+f.Name] = true
		if f.Ratio != 1 {
			t.Errorf("%+v", f)
		}
	}
	for _, want := range []string{"randread read iops", "randread read bw", "randread read clat p50", "randread read clat p99",
		"randread read clat p99.9", "randread read lat mean", "randwrite write iops", "randwrite write clat p99"} {
		if !names[want] {
			t.Errorf("no figure %q in %v", want, names)
		}
	}
	if names["randread write iops"] || names["randwrite read iops"] {
		t.Error("compared a direction the baseline did not move data in")
	}

	for _, c := range []struct {
		job          int
		dir, field   string
		f            float64
		fail         bool
		figure, want string
	}{
		{0, "read", "iops", 0.8, true, "iops", "randread read iops is 0.800 × the baseline"},
		{0, "read", "iops", 0.95, false, "iops", ""},
		{0, "read", "iops", 1.5, false, "iops", ""},
		{1, "write", "bw_bytes", 0.85, true, "bw", "randwrite write bw is 0.850 ×"},
		{0, "read", "percentile:99.000000", 1.25, true, "clat p99", "randread read clat p99 is 1.250 ×"},
		{0, "read", "percentile:50.000000", 0.5, false, "clat p50", ""},
		{1, "write", "percentile:99.900000", 1.09, false, "clat p99.9", ""},
	} {
		now := mustReport(t, scaled(t, data, c.job, c.dir, c.field, c.f))
		cmp := Compare(base, now, DefaultCompareThreshold)
		err := cmp.Err()
		if cmp.Failed() != c.fail || (err != nil) != c.fail || (c.fail && !strings.Contains(err.Error(), c.want)) {
			t.Errorf("%s %s × %v: failed %v, %v; want failed %v naming %q", c.dir, c.field, c.f, cmp.Failed(), err, c.fail, c.want)
		}
		var out bytes.Buffer
		if err := cmp.Write(&out, "base.json"); err != nil {
			t.Fatal(err)
		}
		if c.fail && !strings.Contains(out.String(), "WORSE") || !strings.Contains(out.String(), "compared with base.json (a figure fails when more than 10% worse)") {
			t.Errorf("table:\n%s", out.String())
		}
	}

	// A tighter threshold catches a 5% drop.
	now := mustReport(t, scaled(t, data, 0, "read", "iops", 0.95))
	if c := Compare(base, now, 0.02); !c.Failed() || !strings.Contains(c.Err().Error(), "worse than the 2% threshold") {
		t.Errorf("2%% threshold: %v", c.Err())
	}
	// A baseline job missing from the run fails the comparison.
	var one map[string]any
	if err := json.Unmarshal(data, &one); err != nil {
		t.Fatal(err)
	}
	one["jobs"] = one["jobs"].([]any)[:1]
	onlyRead, _ := json.Marshal(one)
	if c := Compare(base, mustReport(t, onlyRead), 0.1); !c.Failed() || !strings.Contains(c.Err().Error(), "job randwrite write is in the baseline but not in this run") {
		t.Errorf("missing job: %v", c.Err())
	}
}

// TestCompareOwnReport: our JSON report reads back and compares; entries
// sharing a jobname (numjobs without group_reporting) match in order.
func TestCompareOwnReport(t *testing.T) {
	r := testResult()
	r.Spec.NumJobs = 2
	r.Jobs = append(r.Jobs, r.Jobs[0])
	var buf bytes.Buffer
	if err := WriteJSON(&buf, r); err != nil {
		t.Fatal(err)
	}
	base := mustReport(t, buf.Bytes())
	c := Compare(base, base, 0.1)
	if c.Failed() || len(c.Figures) != 2*6 || c.Figures[0].Job != "a#0" || c.Figures[6].Job != "a#1" {
		t.Errorf("figures %+v", c.Figures)
	}
	slow := testResult()
	slow.Jobs[0].Runtime = 4 * time.Second // half the IOPS
	buf.Reset()
	if err := WriteJSON(&buf, slow); err != nil {
		t.Fatal(err)
	}
	one := mustReport(t, buf.Bytes())
	if c := Compare(one, one, 0.1); c.Failed() {
		t.Errorf("self: %v", c.Err())
	}
	fast := testResult()
	buf.Reset()
	if err := WriteJSON(&buf, fast); err != nil {
		t.Fatal(err)
	}
	if c := Compare(mustReport(t, buf.Bytes()), one, 0.1); !c.Failed() || !strings.Contains(c.Err().Error(), "a read iops is 0.500 ×") {
		t.Errorf("half the IOPS: %v", c.Err())
	}
}

func TestParseReportErrors(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"", "no JSON object"},
		{"fio: error\n", "no JSON object"},
		{"{", "not a fio JSON report"},
		{`{"jobs": []}`, "no jobs[]"},
		{`{"jobs": [{"read": {"iops": "fast"}}]}`, "not a fio JSON report"},
	} {
		if _, err := ParseReport([]byte(c.in)); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("ParseReport(%q) = %v, want %q", c.in, err, c.want)
		}
	}
	if _, err := ParseThreshold("10%"); err != nil {
		t.Error(err)
	}
	for _, s := range []string{"0", "-5", "x", "2000", "NaN"} {
		if _, err := ParseThreshold(s); err == nil {
			t.Errorf("ParseThreshold(%q) accepted", s)
		}
	}
	if v, _ := ParseThreshold(" 2.5 "); v != 0.025 {
		t.Errorf("ParseThreshold(2.5) = %v", v)
	}
}

// FuzzParseReport: a --compare baseline is untrusted input; decoding and
// comparing it never panics. The seed corpus runs in go test.
func FuzzParseReport(f *testing.F) {
	if data, err := os.ReadFile("testdata/fio-3.33.json"); err == nil {
		f.Add(data)
	}
	for _, seed := range []string{
		`{"jobs":[{"jobname":"a","read":{"iops":1,"total_ios":1,"clat_ns":{"percentile":{"99.000000":5}},"lat_ns":{"mean":2}}}]}`,
		`note {"jobs":[{"jobname":"a"},{"jobname":"a"}]}`,
		`{"jobs":[{"write":{"iops":1e308,"bw":-1}}]}`,
		`{"jobs":null}`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := ParseReport(data)
		if err != nil {
			return
		}
		c := Compare(r, r, 0.1)
		for _, fg := range c.Figures {
			if fg.Worse {
				t.Fatalf("a report is worse than itself: %+v", fg)
			}
		}
		var out bytes.Buffer
		if err := c.Write(&out, "fuzz"); err != nil {
			t.Fatal(err)
		}
	})
}
