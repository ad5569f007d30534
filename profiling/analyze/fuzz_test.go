package analyze

import (
	"strings"
	"testing"
)

// FuzzDecode feeds arbitrary bytes to Decode and what it accepts to the
// cutters: refusals are errors, never panics.
func FuzzDecode(f *testing.F) {
	f.Add([]byte("\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff\x01\x00\x00\xff\xff\x00\x00\x00\x00\x00\x00\x00\x00"))
	f.Add([]byte{0x0a, 0x04, 0x08, 0x01, 0x10, 0x02})
	f.Add([]byte("garbage"))
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := Decode(b)
		if err != nil {
			return
		}
		_ = Folded(p)
		_, _ = Workload(p)
		_ = LabelValues(p, "core")
		KeepLabel(p, "core", "0")
	})
}

// FuzzParsePerfScript feeds arbitrary text as perf script output.
func FuzzParsePerfScript(f *testing.F) {
	f.Add(perfScript)
	f.Add("a 1 1: 1 e:\n\t1 f+0x1 (o)\n\t\n")
	f.Add("\t orphan frame\n")
	f.Fuzz(func(t *testing.T, s string) {
		out, err := ParsePerfScript(strings.NewReader(s))
		if err != nil {
			return
		}
		for _, smp := range out {
			if smp.Value <= 0 || len(smp.Stack) == 0 || len(smp.Stack) > maxPerfDepth+1 {
				t.Fatalf("sample %+v", smp)
			}
		}
	})
}
