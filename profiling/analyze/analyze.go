// Package analyze cuts CPU profiles for the operator commands: decoding
// pprof bytes from a node (bounded), keeping one core's samples (the
// dataplane's pprof labels), folding samples into stacks for a flame
// graph, bucketing CPU by where it goes (workload analysis), and reading
// `perf script` output.
package analyze

import (
	"bytes"
	"fmt"
	"sort"
	"strings"

	"github.com/claudefs/claudefs/profiling/flamegraph"
	"github.com/google/pprof/profile"
)

// MaxProfileBytes bounds the pprof bytes Decode accepts (gzipped).
const MaxProfileBytes = 8 << 20

// maxDecodedBytes bounds a profile once gunzipped: a tiny gzip can expand
// to gigabytes, so the check is on the decompressed stream.
const maxDecodedBytes = 256 << 20

// Decode parses pprof bytes (gzipped or not) into a profile, refusing
// more than MaxProfileBytes (or a gunzipped size over 256 MiB) and
// profiles that fail pprof's own consistency checks.
func Decode(b []byte) (*profile.Profile, error) {
	if len(b) == 0 {
		return nil, fmt.Errorf("analyze: an empty profile")
	}
	if len(b) > MaxProfileBytes {
		return nil, fmt.Errorf("analyze: a profile of %d bytes, at most %d", len(b), MaxProfileBytes)
	}
	raw, err := gunzipBounded(b, maxDecodedBytes)
	if err != nil {
		return nil, err
	}
	p, err := profile.ParseUncompressed(raw)
	if err != nil {
		return nil, fmt.Errorf("analyze: not a pprof profile: %v", err)
	}
	if err := p.CheckValid(); err != nil {
		return nil, fmt.Errorf("analyze: inconsistent pprof profile: %v", err)
	}
	return p, nil
}

// valueIndex is the index of the sample value to weigh by: "samples"
// (a CPU profile's count) when present, else the first.
func valueIndex(p *profile.Profile) int {
	for i, st := range p.SampleType {
		if st.Type == "samples" {
			return i
		}
	}
	return 0
}

// Total is the profile's weight in samples.
func Total(p *profile.Profile) int64 {
	vi := valueIndex(p)
	var n int64
	for _, s := range p.Sample {
		if vi < len(s.Value) {
			n += s.Value[vi]
		}
	}
	return n
}

// KeepLabel keeps only the samples whose label key has value (e.g. core
// "2"), in place, and returns the profile and the samples kept.
func KeepLabel(p *profile.Profile, key, value string) (*profile.Profile, int) {
	kept := p.Sample[:0]
	for _, s := range p.Sample {
		for _, v := range s.Label[key] {
			if v == value {
				kept = append(kept, s)
				break
			}
		}
	}
	p.Sample = kept
	return p.Compact(), len(kept)
}

// LabelValues lists the values label key takes in p, sorted.
func LabelValues(p *profile.Profile, key string) []string {
	seen := map[string]bool{}
	for _, s := range p.Sample {
		for _, v := range s.Label[key] {
			seen[v] = true
		}
	}
	out := make([]string, 0, len(seen))
	for v := range seen {
		out = append(out, v)
	}
	sort.Strings(out)
	return out
}

// frames is a sample's function names, leaf first (inlined calls
// expanded: pprof lists a location's lines innermost first).
func frames(s *profile.Sample) []string {
	var out []string
	for _, loc := range s.Location {
		if len(loc.Line) == 0 {
			out = append(out, fmt.Sprintf("0x%x", loc.Address))
			continue
		}
		for _, ln := range loc.Line {
			name := "?"
			if ln.Function != nil {
				name = ln.Function.Name
			}
			out = append(out, name)
		}
	}
	return out
}

// Folded turns p's samples into flame graph samples (root first).
func Folded(p *profile.Profile) []flamegraph.Sample {
	vi := valueIndex(p)
	out := make([]flamegraph.Sample, 0, len(p.Sample))
	for _, s := range p.Sample {
		if vi >= len(s.Value) || s.Value[vi] <= 0 {
			continue
		}
		f := frames(s)
		for i, j := 0, len(f)-1; i < j; i, j = i+1, j-1 {
			f[i], f[j] = f[j], f[i]
		}
		out = append(out, flamegraph.Sample{Stack: f, Value: s.Value[vi]})
	}
	return out
}

// ContainsFunction reports whether a frame of p's samples is named by a
// function containing sub.
func ContainsFunction(p *profile.Profile, sub string) bool {
	for _, f := range p.Function {
		if strings.Contains(f.Name, sub) {
			return true
		}
	}
	return false
}

var gzipMagic = []byte{0x1f, 0x8b}

func isGzip(b []byte) bool { return bytes.HasPrefix(b, gzipMagic) }
