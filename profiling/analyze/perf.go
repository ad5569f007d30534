package analyze

import (
	"bufio"
	"fmt"
	"io"
	"strings"

	"github.com/claudefs/claudefs/profiling/flamegraph"
)

// Bounds of ParsePerfScript.
const (
	maxPerfLine   = 64 << 10 // bytes of one line
	maxPerfDepth  = 512      // frames kept per stack (the callers beyond are cut)
	maxPerfStacks = 1 << 20  // distinct stacks
)

// ParsePerfScript folds the output of `perf script` (samples with call
// chains: perf record -g) into flame graph samples, root first, each stack
// rooted at the command's name. A frame without a symbol is named by its
// object ("[unknown]" when perf knows neither). Lines over 64 KiB, or over
// 2^20 distinct stacks, are an error; it never panics on odd input.
func ParsePerfScript(r io.Reader) ([]flamegraph.Sample, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), maxPerfLine)
	counts := map[string]int64{}
	var order []string
	var comm string
	var stack []string // leaf first
	inSample := false
	flush := func() error {
		if !inSample {
			return nil
		}
		inSample = false
		if comm == "" && len(stack) == 0 {
			return nil
		}
		f := make([]string, 0, len(stack)+1)
		f = append(f, comm)
		for i := len(stack) - 1; i >= 0; i-- {
			f = append(f, stack[i])
		}
		key := strings.Join(f, "\x00")
		if _, ok := counts[key]; !ok {
			if len(order) >= maxPerfStacks {
				return fmt.Errorf("perf script: over %d distinct stacks", maxPerfStacks)
			}
			order = append(order, key)
		}
		counts[key]++
		stack = stack[:0]
		return nil
	}
	for sc.Scan() {
		line := sc.Text()
		if strings.TrimSpace(line) == "" {
			if err := flush(); err != nil {
				return nil, err
			}
			continue
		}
		if line[0] != ' ' && line[0] != '\t' {
			// A sample's header: "comm pid[/tid] [cpu] time: period event:".
			if err := flush(); err != nil {
				return nil, err
			}
			inSample = true
			comm = perfComm(line)
			continue
		}
		if !inSample || len(stack) >= maxPerfDepth {
			continue
		}
		stack = append(stack, perfFrame(strings.TrimSpace(line)))
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("perf script: %v", err)
	}
	if err := flush(); err != nil {
		return nil, err
	}
	out := make([]flamegraph.Sample, 0, len(order))
	for _, k := range order {
		out = append(out, flamegraph.Sample{Stack: strings.Split(k, "\x00"), Value: counts[k]})
	}
	return out, nil
}

// perfComm is the command name of a header line: what comes before the
// pid field (the first all-digit field, optionally pid/tid). A command may
// contain spaces.
func perfComm(line string) string {
	fields := strings.Fields(line)
	for i, f := range fields {
		if i > 0 && isPid(f) {
			return strings.Join(fields[:i], " ")
		}
	}
	if len(fields) > 0 {
		return fields[0]
	}
	return "[unknown]"
}

func isPid(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range s {
		if (c < '0' || c > '9') && c != '/' {
			return false
		}
	}
	return s[0] != '/'
}

// perfFrame names one call-chain line "ADDR SYMBOL+OFFSET (OBJECT)".
func perfFrame(s string) string {
	// Drop the address.
	if i := strings.IndexByte(s, ' '); i > 0 {
		s = s[i+1:]
	} else {
		return "[unknown]"
	}
	obj := ""
	if i := strings.LastIndex(s, " ("); i >= 0 && strings.HasSuffix(s, ")") {
		obj = s[i+2 : len(s)-1]
		s = s[:i]
	}
	s = strings.TrimSpace(s)
	if i := strings.LastIndex(s, "+0x"); i > 0 {
		s = s[:i]
	}
	if s == "" || s == "[unknown]" {
		if obj != "" && obj != "[unknown]" {
			return "[" + obj + "]"
		}
		return "[unknown]"
	}
	return s
}
