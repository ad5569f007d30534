package dpconfig

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Affinity is cpu.affinity: the CPUs the dataplane's I/O cores and event
// loops are pinned to, one thread per CPU in turn.
type Affinity struct {
	// All is the value "true": every CPU the process may run on, resolved
	// when the dataplane starts.
	All bool
	// CPUs is an explicit list, ascending and without duplicates, each
	// below MaxCPU. Empty with All false is "false": no pinning.
	CPUs []int
}

// Enabled reports whether threads are pinned at all.
func (a Affinity) Enabled() bool { return a.All || len(a.CPUs) > 0 }

// String is the canonical form: "false", "true" or a CPU list with ranges
// ("0-3,6").
func (a Affinity) String() string {
	switch {
	case a.All:
		return "true"
	case len(a.CPUs) == 0:
		return "false"
	}
	return FormatCPUList(a.CPUs)
}

// ParseAffinity parses cpu.affinity: false (also off, no, none, or empty),
// true (also on, yes, all), or a CPU list.
func ParseAffinity(s string) (Affinity, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "", "false", "off", "no", "none":
		return Affinity{}, nil
	case "true", "on", "yes", "all":
		return Affinity{All: true}, nil
	}
	cpus, err := ParseCPUList(s)
	if err != nil {
		return Affinity{}, err
	}
	return Affinity{CPUs: cpus}, nil
}

// ParseCPUList parses a Linux CPU list ("0-3,6", "2", "0,2,4-5"): comma
// separated CPUs or inclusive ranges, each CPU below MaxCPU. The result is
// ascending without duplicates; an empty list is an error.
func ParseCPUList(s string) ([]int, error) {
	var seen [MaxCPU]bool
	n := 0
	for _, part := range strings.Split(strings.TrimSpace(s), ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			return nil, errors.New("empty element in the CPU list")
		}
		lo, hi, isRange := strings.Cut(part, "-")
		a, err := parseCPU(lo)
		if err != nil {
			return nil, err
		}
		b := a
		if isRange {
			if b, err = parseCPU(hi); err != nil {
				return nil, err
			}
			if b < a {
				return nil, fmt.Errorf("range %d-%d runs backwards", a, b)
			}
		}
		for c := a; c <= b; c++ {
			if !seen[c] {
				seen[c] = true
				n++
			}
		}
	}
	cpus := make([]int, 0, n)
	for c, ok := range seen {
		if ok {
			cpus = append(cpus, c)
		}
	}
	return cpus, nil
}

func parseCPU(s string) (int, error) {
	s = strings.TrimSpace(s)
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 || len(s) > 4 {
		return 0, fmt.Errorf("%q is not a CPU number", clip(s))
	}
	if n >= MaxCPU {
		return 0, fmt.Errorf("CPU %d is over %d", n, MaxCPU-1)
	}
	return n, nil
}

// FormatCPUList writes ascending CPUs as a CPU list with ranges.
func FormatCPUList(cpus []int) string {
	var b strings.Builder
	for i := 0; i < len(cpus); {
		j := i
		for j+1 < len(cpus) && cpus[j+1] == cpus[j]+1 {
			j++
		}
		if b.Len() > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.Itoa(cpus[i]))
		if j > i {
			b.WriteByte('-')
			b.WriteString(strconv.Itoa(cpus[j]))
		}
		i = j + 1
	}
	return b.String()
}
