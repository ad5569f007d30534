package bench

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// MaxSize is the largest byte count ParseSize accepts (1 EiB), far above any
// device yet small enough that offset+size arithmetic cannot overflow int64.
const MaxSize = int64(1) << 60

// ParseSize parses a byte count in fio's syntax: a decimal integer with an
// optional, case-insensitive binary suffix: k, m, g, t or p, each optionally
// followed by "b" or "ib" ("4k", "4K", "4kb", "4KiB" and "4096" are all 4096
// bytes; "1m" and "1M" are 1048576). Unlike fio in its default kb_base=1024
// compatibility mode, "KiB" also means 1024. The result is in [0, MaxSize].
func ParseSize(s string) (int64, error) {
	t := strings.TrimSpace(s)
	if t == "" {
		return 0, fmt.Errorf("size %q: empty", s)
	}
	lower := strings.ToLower(t)
	digits := len(lower)
	for i, c := range lower {
		if c < '0' || c > '9' {
			digits = i
			break
		}
	}
	if digits == 0 {
		return 0, fmt.Errorf("size %q: must start with a decimal number (e.g. 4k, 1m, 4096)", s)
	}
	shift, ok := sizeSuffixShift(lower[digits:])
	if !ok {
		return 0, fmt.Errorf("size %q: unknown unit %q (use k, m, g, t or p, optionally followed by b or ib)", s, t[digits:])
	}
	n, err := strconv.ParseInt(lower[:digits], 10, 64)
	if err != nil || n > MaxSize>>shift {
		return 0, fmt.Errorf("size %q: larger than the limit of %d bytes", s, MaxSize)
	}
	return n << shift, nil
}

// sizeSuffixShift maps a lower-case unit suffix to its power of two.
func sizeSuffixShift(suffix string) (uint, bool) {
	if suffix == "" || suffix == "b" {
		return 0, true
	}
	var shift uint
	switch suffix[0] {
	case 'k':
		shift = 10
	case 'm':
		shift = 20
	case 'g':
		shift = 30
	case 't':
		shift = 40
	case 'p':
		shift = 50
	default:
		return 0, false
	}
	switch suffix[1:] {
	case "", "b", "ib":
		return shift, true
	}
	return 0, false
}

// MaxDuration bounds --runtime and --ramp_time: one week.
const MaxDuration = 7 * 24 * time.Hour

// ParseDuration parses a time in fio's syntax: a decimal integer with an
// optional unit, "us", "ms", "s", "m", "h" or "d"; a bare number is seconds
// ("5" and "5s" are five seconds, "2m" two minutes). The result is in
// [0, MaxDuration].
func ParseDuration(s string) (time.Duration, error) {
	t := strings.ToLower(strings.TrimSpace(s))
	digits := len(t)
	for i, c := range t {
		if c < '0' || c > '9' {
			digits = i
			break
		}
	}
	if digits == 0 {
		return 0, fmt.Errorf("time %q: must start with a decimal number (e.g. 5, 30s, 2m)", s)
	}
	var unit time.Duration
	switch t[digits:] {
	case "us", "usec":
		unit = time.Microsecond
	case "ms", "msec":
		unit = time.Millisecond
	case "", "s", "sec":
		unit = time.Second
	case "m", "min":
		unit = time.Minute
	case "h":
		unit = time.Hour
	case "d":
		unit = 24 * time.Hour
	default:
		return 0, fmt.Errorf("time %q: unknown unit %q (use us, ms, s, m, h or d; a bare number is seconds)", s, t[digits:])
	}
	n, err := strconv.ParseInt(t[:digits], 10, 64)
	if err != nil || n > int64(MaxDuration/unit) {
		return 0, fmt.Errorf("time %q: longer than the limit of %s", s, MaxDuration)
	}
	return time.Duration(n) * unit, nil
}

// formatBinary renders n bytes with a binary unit the way fio's normal output
// does, keeping up to four integer digits: "512B", "4KiB", "1953KiB", "149MiB".
func formatBinary(n float64) string {
	units := []string{"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"}
	return formatUnits(n, 1024, units)
}

// formatDecimal renders n bytes with a decimal unit: "4096B", "2048kB", "157MB".
func formatDecimal(n float64) string {
	units := []string{"B", "kB", "MB", "GB", "TB", "PB", "EB"}
	return formatUnits(n, 1000, units)
}

func formatUnits(n, base float64, units []string) string {
	i := 0
	for n >= 9999.5 && i < len(units)-1 {
		n /= base
		i++
	}
	return formatNumber(n) + units[i]
}

// formatNumber renders v with at most four significant digits and no
// trailing zeros: 149, 1.5, 38.2, 1024.
func formatNumber(v float64) string {
	if v == math.Trunc(v) || v >= 100 {
		return strconv.FormatFloat(math.Round(v), 'f', -1, 64)
	}
	scale := 100.0
	if v >= 10 {
		scale = 10
	}
	return strconv.FormatFloat(math.Round(v*scale)/scale, 'f', -1, 64)
}

// formatCount renders an operation rate or count fio-style: 950, 38.2k, 1.2M.
func formatCount(v float64) string {
	switch {
	case v >= 1e9*0.9995:
		return formatNumber(v/1e9) + "G"
	case v >= 1e6*0.9995:
		return formatNumber(v/1e6) + "M"
	case v >= 1e3*0.9995:
		return formatNumber(v/1e3) + "k"
	}
	return formatNumber(v)
}
