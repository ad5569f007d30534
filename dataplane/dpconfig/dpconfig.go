// Package dpconfig is the dataplane's configuration: one table of keys
// (Keys), each with its command-line flag, default, valid range, and
// whether it applies live (over the sidecar channel, at once) or takes a
// restart. The dataplane process, its sidecar channel and the control
// process all read the same table, so a key means the same thing, and is
// refused for the same reasons, everywhere.
//
// # Configuration file
//
// A file (cfs dataplane --config PATH) holds one setting per line:
//
//	# comment
//	nvme.queue_depth = 64
//	cpu.affinity     = 0-3,6
//	control.socket   = "/run/cfs/dp0.sock"
//
// Blank lines and lines whose first non-blank character is '#' are
// ignored; every other line is KEY = VALUE, spaces around both are
// trimmed, and a value may be written as a Go double-quoted string (for
// one with leading or trailing spaces or a '#'). A '#' after a value is
// part of the value. Parsing is strict: an unknown key, a repeated key, a
// line without '=', a bad value, a line over MaxLineBytes or a file over
// MaxFileBytes is an error that names the file, the line and the key (and,
// for an unknown key, the nearest valid one). Command-line flags override
// the file.
//
// # Values
//
// Integers are decimal. Sizes are bytes with an optional binary unit:
// 4096, 64k, 16M, 2G, 1T (k, m, g, t, p, optionally followed by b or ib;
// any case). Booleans are true/false (also on/off, yes/no, 1/0). Durations
// are Go durations (500ms, 10s, 2m). Every value has bounds: Key.Range
// states them and a value outside them is refused.
package dpconfig

import (
	"errors"
	"fmt"
	"math"
	"net"
	"strconv"
	"strings"
	"time"
)

// Limits of the file format.
const (
	// MaxFileBytes bounds a configuration file.
	MaxFileBytes = 1 << 20
	// MaxLineBytes bounds one line of it.
	MaxLineBytes = 4096
	// MaxValueBytes bounds one value (a line, a config.set value).
	MaxValueBytes = MaxLineBytes
	// MaxCPU is one more than the highest CPU number cpu.affinity takes.
	MaxCPU = 1024
	// MaxSocketPath bounds control.socket: a Unix socket address holds a
	// path of at most 107 bytes.
	MaxSocketPath = 107
)

// Config is a dataplane's configuration. The zero value is not valid: start
// from Default. Each field names its key; Keys documents units and ranges.
type Config struct {
	Device         string        // nvme.device
	DeviceSize     int64         // nvme.device_size, bytes; 0: the device must exist
	IOEngine       string        // nvme.ioengine: auto, io_uring or pread
	QueueDepth     int           // nvme.queue_depth: data requests per partition
	WriteCombining bool          // data.write_combining
	Workers        int           // data.workers; 0: 32 per CPU
	WorkerQueue    int           // data.worker_queue
	DrainTimeout   time.Duration // data.drain_timeout
	Listen         string        // network.listen, HOST:PORT
	EventLoops     int           // network.event_loops; 0: one per pinned CPU, or per CPU
	TCPNoDelay     bool          // network.tcp_nodelay
	TCPSndBuf      int           // network.tcp_sndbuf, bytes; 0: the kernel's autotuning
	TCPRcvBuf      int           // network.tcp_rcvbuf, bytes; 0: the kernel's autotuning
	Affinity       Affinity      // cpu.affinity
	IOThreads      int           // cpu.io_threads; 0: one per two CPUs
	ControlSocket  string        // control.socket
	MetricsListen  string        // metrics.listen, HOST:PORT; "": no /metrics
}

// Key is one configuration key.
type Key struct {
	// Name is the key, "section.name".
	Name string
	// Flag is the cfs dataplane flag that sets it (without the dashes).
	Flag string
	// Live keys apply at once when set over the sidecar channel; the
	// others take a restart of the dataplane.
	Live bool
	// Default is the default value, in canonical form.
	Default string
	// Range states the valid values, as error messages say it.
	Range string
	// Help says what the key does.
	Help string

	get func(*Config) string
	set func(*Config, string) error // parses and validates; the error says why
}

// Value is k's value in c, in canonical form.
func (k Key) Value(c *Config) string { return k.get(c) }

// Errors callers test with errors.Is.
var (
	ErrUnknownKey = errors.New("unknown configuration key")
	ErrBadValue   = errors.New("bad configuration value")
)

// UnknownKeyError names a key that is not in the table, and the nearest
// one that is, when one is near.
type UnknownKeyError struct {
	Key        string
	Suggestion string // "" when no key is near
}

func (e *UnknownKeyError) Error() string {
	if e.Suggestion != "" {
		return fmt.Sprintf("unknown configuration key %q (did you mean %q?)", clip(e.Key), e.Suggestion)
	}
	return fmt.Sprintf("unknown configuration key %q; the keys are %s", clip(e.Key), strings.Join(Names(), ", "))
}

// Is makes errors.Is(err, ErrUnknownKey) true.
func (e *UnknownKeyError) Is(target error) bool { return target == ErrUnknownKey }

// ValueError is a value a key refuses: it names the key, the value, the
// valid range and why.
type ValueError struct {
	Key, Value, Range string
	Reason            string
}

func (e *ValueError) Error() string {
	s := fmt.Sprintf("bad value %q for %s: want %s", clip(e.Value), e.Key, e.Range)
	if e.Reason != "" {
		s += " (" + e.Reason + ")"
	}
	return s
}

// Is makes errors.Is(err, ErrBadValue) true.
func (e *ValueError) Is(target error) bool { return target == ErrBadValue }

// clip shortens what a peer or a file sent before it is echoed in an error.
func clip(s string) string {
	if len(s) > 64 {
		return s[:64] + "..."
	}
	return s
}

// Default is the configuration with every key at its default. Device,
// Listen and ControlSocket are empty: they have no default and Check
// requires them.
func Default() Config {
	var c Config
	for _, k := range keys {
		if err := k.set(&c, k.Default); err != nil {
			panic("dpconfig: default of " + k.Name + ": " + err.Error())
		}
	}
	return c
}

// Keys returns the table, in documentation order.
func Keys() []Key { return append([]Key(nil), keys...) }

// Names returns the key names, in documentation order.
func Names() []string {
	n := make([]string, len(keys))
	for i, k := range keys {
		n[i] = k.Name
	}
	return n
}

// Lookup returns the key called name, or an *UnknownKeyError.
func Lookup(name string) (Key, error) {
	for _, k := range keys {
		if k.Name == name {
			return k, nil
		}
	}
	return Key{}, &UnknownKeyError{Key: name, Suggestion: suggest(name)}
}

// Check validates value for key without a Config and returns it in
// canonical form.
func Check(key, value string) (string, error) {
	k, err := Lookup(key)
	if err != nil {
		return "", err
	}
	c := Default()
	if err := c.setKey(k, value); err != nil {
		return "", err
	}
	return k.get(&c), nil
}

// Set sets key to value in c. An unknown key is an *UnknownKeyError, a
// refused value a *ValueError; c is unchanged then.
func (c *Config) Set(key, value string) error {
	k, err := Lookup(key)
	if err != nil {
		return err
	}
	return c.setKey(k, value)
}

func (c *Config) setKey(k Key, value string) error {
	if len(value) > MaxValueBytes {
		return &ValueError{Key: k.Name, Value: value, Range: k.Range, Reason: fmt.Sprintf("longer than %d bytes", MaxValueBytes)}
	}
	tmp := *c
	if err := k.set(&tmp, strings.TrimSpace(value)); err != nil {
		return &ValueError{Key: k.Name, Value: value, Range: k.Range, Reason: err.Error()}
	}
	*c = tmp
	return nil
}

// Get returns key's value in c, in canonical form.
func (c *Config) Get(key string) (string, error) {
	k, err := Lookup(key)
	if err != nil {
		return "", err
	}
	return k.get(c), nil
}

// Check reports what c lacks to start a dataplane: the keys without a
// default (nvme.device, network.listen, control.socket).
func (c *Config) Check() error {
	var missing []string
	for _, m := range []struct {
		v, key, flag string
	}{{c.Device, "nvme.device", "device"}, {c.Listen, "network.listen", "listen"}, {c.ControlSocket, "control.socket", "control-socket"}} {
		if m.v == "" {
			missing = append(missing, fmt.Sprintf("--%s (or %s in --config)", m.flag, m.key))
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("missing %s", strings.Join(missing, ", "))
	}
	return nil
}

// The table. Each key's set validates against the bounds stated in Range.
var keys = []Key{
	strKey("nvme.device", "device", "", "a file or block device path of at most 4095 bytes", 4095,
		"file or block device holding the chunk store (required); a missing file is laid out with nvme.device_size bytes",
		func(c *Config) *string { return &c.Device }),
	sizeKey("nvme.device_size", "device-size", false, "0", 1<<20, 1<<50, "the device must already exist",
		"size of the file laid out when nvme.device does not exist; an existing device keeps its size",
		func(c *Config) *int64 { return &c.DeviceSize }),
	enumKey("nvme.ioengine", "ioengine", "auto", []string{"auto", "io_uring", "pread"},
		"I/O engine: io_uring, the pread/pwrite pool, or auto (io_uring where the kernel allows it)",
		func(c *Config) *string { return &c.IOEngine }),
	intKey("nvme.queue_depth", "queue-depth", true, "128", 1, 4096, "",
		"data requests (reads, writes, deletes) each I/O core holds at once; one more is refused as busy at once",
		func(c *Config) *int { return &c.QueueDepth }),
	boolKey("data.write_combining", "write-combining", false, "true",
		"gather concurrent small writes of a core into one durable append (up to 1 MiB, waiting up to 100µs for more); false appends each write as soon as an append slot is free, without waiting",
		func(c *Config) *bool { return &c.WriteCombining }),
	intKey("data.workers", "workers", false, "0", 1, 16384, "32 per CPU",
		"goroutines serving the requests the event loops do not hand to a core directly (stats, lists, deletes, overflow)",
		func(c *Config) *int { return &c.Workers }),
	intKey("data.worker_queue", "worker-queue", false, "4096", 1, 1<<20, "",
		"requests that may wait for a worker; one more is refused as busy",
		func(c *Config) *int { return &c.WorkerQueue }),
	durationKey("data.drain_timeout", "drain-timeout", true, "10s", 0, 10*time.Minute,
		"on SIGTERM/SIGINT, how long to wait for the requests in flight to be answered",
		func(c *Config) *time.Duration { return &c.DrainTimeout }),
	addrKey("network.listen", "listen",
		"TCP address to serve the shard protocol on (required); port 0 picks a free one and the log says which",
		func(c *Config) *string { return &c.Listen }),
	intKey("network.event_loops", "event-loops", false, "0", 1, 256, "one per pinned CPU, or one per CPU",
		"network event loops, each locked to its own thread",
		func(c *Config) *int { return &c.EventLoops }),
	boolKey("network.tcp_nodelay", "tcp-nodelay", true, "true",
		"TCP_NODELAY on the shard connections (false lets the kernel coalesce small replies)",
		func(c *Config) *bool { return &c.TCPNoDelay }),
	intSizeKey("network.tcp_sndbuf", "tcp-sndbuf", "0", 4<<10, 256<<20, "the kernel's autotuning",
		"SO_SNDBUF of each shard connection (the kernel doubles it and caps it at net.core.wmem_max)",
		func(c *Config) *int { return &c.TCPSndBuf }),
	intSizeKey("network.tcp_rcvbuf", "tcp-rcvbuf", "0", 4<<10, 256<<20, "the kernel's autotuning",
		"SO_RCVBUF of each shard connection (the kernel doubles it and caps it at net.core.rmem_max)",
		func(c *Config) *int { return &c.TCPRcvBuf }),
	{
		Name: "cpu.affinity", Flag: "cpu-affinity", Default: "false",
		Range: fmt.Sprintf("false (no pinning), true (every CPU the process may use) or a CPU list like 0-3,6 (CPUs 0..%d)", MaxCPU-1),
		Help:  "pin each I/O core's and each event loop's thread to one CPU of this list, in turn",
		get:   func(c *Config) string { return c.Affinity.String() },
		set: func(c *Config, v string) error {
			a, err := ParseAffinity(v)
			c.Affinity = a
			return err
		},
	},
	intKey("cpu.io_threads", "io-threads", false, "0", 1, 256, "one per two CPUs, of cpu.affinity's when set",
		"I/O cores (chunk store partitions, each with its own ring) when the device is formatted; an existing store keeps its count",
		func(c *Config) *int { return &c.IOThreads }),
	strKey("control.socket", "control-socket", "", fmt.Sprintf("a path of at most %d bytes", MaxSocketPath), MaxSocketPath,
		"Unix socket of the sidecar channel to the node's control process (required; created 0600, removed on exit)",
		func(c *Config) *string { return &c.ControlSocket }),
	addrKey("metrics.listen", "metrics-listen",
		"TCP address to serve Prometheus /metrics on, plain HTTP (default: none); port 0 picks a free one and the log says which",
		func(c *Config) *string { return &c.MetricsListen }),
}

func intKey(name, flag string, live bool, def string, lo, hi int, zero, help string, f func(*Config) *int) Key {
	rng := fmt.Sprintf("an integer in %d..%d", lo, hi)
	if zero != "" {
		rng = fmt.Sprintf("0 (%s) or an integer in %d..%d", zero, lo, hi)
	}
	return Key{Name: name, Flag: flag, Live: live, Default: def, Range: rng, Help: help,
		get: func(c *Config) string { return strconv.Itoa(*f(c)) },
		set: func(c *Config, v string) error {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				return errors.New("not a decimal integer")
			}
			if (n < int64(lo) || n > int64(hi)) && (n != 0 || zero == "") {
				return fmt.Errorf("%d is out of range", n)
			}
			*f(c) = int(n)
			return nil
		}}
}

func sizeRange(lo, hi int64, zero string) string {
	rng := fmt.Sprintf("a size in %s..%s (e.g. 4096, 64k, 16M, 2G)", FormatSize(lo), FormatSize(hi))
	if zero != "" {
		rng = "0 (" + zero + ") or " + rng
	}
	return rng
}

func parseSizeIn(v string, lo, hi int64, zero string) (int64, error) {
	n, err := ParseSize(v)
	if err != nil {
		return 0, err
	}
	if (n < lo || n > hi) && (n != 0 || zero == "") {
		return 0, fmt.Errorf("%s is out of range", FormatSize(n))
	}
	return n, nil
}

func sizeKey(name, flag string, live bool, def string, lo, hi int64, zero, help string, f func(*Config) *int64) Key {
	return Key{Name: name, Flag: flag, Live: live, Default: def, Range: sizeRange(lo, hi, zero), Help: help,
		get: func(c *Config) string { return FormatSize(*f(c)) },
		set: func(c *Config, v string) error {
			n, err := parseSizeIn(v, lo, hi, zero)
			if err == nil {
				*f(c) = n
			}
			return err
		}}
}

// intSizeKey is a live size key held in an int.
func intSizeKey(name, flag, def string, lo, hi int64, zero, help string, f func(*Config) *int) Key {
	return Key{Name: name, Flag: flag, Live: true, Default: def, Range: sizeRange(lo, hi, zero), Help: help,
		get: func(c *Config) string { return FormatSize(int64(*f(c))) },
		set: func(c *Config, v string) error {
			n, err := parseSizeIn(v, lo, hi, zero)
			if err == nil {
				*f(c) = int(n)
			}
			return err
		}}
}

func boolKey(name, flag string, live bool, def, help string, f func(*Config) *bool) Key {
	return Key{Name: name, Flag: flag, Live: live, Default: def, Range: "true or false", Help: help,
		get: func(c *Config) string { return strconv.FormatBool(*f(c)) },
		set: func(c *Config, v string) error {
			b, err := ParseBool(v)
			if err != nil {
				return err
			}
			*f(c) = b
			return nil
		}}
}

func durationKey(name, flag string, live bool, def string, lo, hi time.Duration, help string, f func(*Config) *time.Duration) Key {
	return Key{Name: name, Flag: flag, Live: live, Default: def, Help: help,
		Range: fmt.Sprintf("a duration in %v..%v (e.g. 500ms, 10s, 2m)", lo, hi),
		get:   func(c *Config) string { return f(c).String() },
		set: func(c *Config, v string) error {
			d, err := time.ParseDuration(v)
			if err != nil {
				return errors.New("not a duration")
			}
			if d < lo || d > hi {
				return fmt.Errorf("%v is out of range", d)
			}
			*f(c) = d
			return nil
		}}
}

func enumKey(name, flag, def string, vals []string, help string, f func(*Config) *string) Key {
	return Key{Name: name, Flag: flag, Default: def, Help: help,
		Range: strings.Join(vals[:len(vals)-1], ", ") + " or " + vals[len(vals)-1],
		get:   func(c *Config) string { return *f(c) },
		set: func(c *Config, v string) error {
			for _, ok := range vals {
				if v == ok {
					*f(c) = v
					return nil
				}
			}
			return errors.New("not one of those")
		}}
}

func strKey(name, flag, def, rng string, maxLen int, help string, f func(*Config) *string) Key {
	return Key{Name: name, Flag: flag, Default: def, Range: rng, Help: help,
		get: func(c *Config) string { return *f(c) },
		set: func(c *Config, v string) error {
			if len(v) > maxLen {
				return fmt.Errorf("%d bytes long", len(v))
			}
			if strings.ContainsAny(v, "\x00\n\r") {
				return errors.New("contains a NUL or line break")
			}
			*f(c) = v
			return nil
		}}
}

func addrKey(name, flag, help string, f func(*Config) *string) Key {
	return Key{Name: name, Flag: flag, Help: help,
		Range: "HOST:PORT with a port in 0..65535 (e.g. 127.0.0.1:7420, [::]:7420, :7420)",
		get:   func(c *Config) string { return *f(c) },
		set: func(c *Config, v string) error {
			if v == "" {
				*f(c) = ""
				return nil
			}
			if len(v) > 261 {
				return fmt.Errorf("%d bytes long", len(v))
			}
			_, port, err := net.SplitHostPort(v)
			if err != nil {
				return errors.New("not HOST:PORT")
			}
			if p, err := strconv.ParseUint(port, 10, 16); err != nil || (p == 0 && port != "0") {
				return fmt.Errorf("port %q is not a number in 0..65535", clip(port))
			}
			*f(c) = v
			return nil
		}}
}

// ParseBool parses a boolean value: true/false, on/off, yes/no, 1/0 (any
// case).
func ParseBool(s string) (bool, error) {
	switch strings.ToLower(s) {
	case "true", "on", "yes", "1":
		return true, nil
	case "false", "off", "no", "0":
		return false, nil
	}
	return false, errors.New("not a boolean")
}

// ParseSize parses a byte count with an optional binary unit: 4096, 64k,
// 16M, 2G, 1T, 1P, each unit optionally followed by b or ib (any case).
// It refuses negative numbers and sizes over 2^62 bytes.
func ParseSize(s string) (int64, error) {
	t := strings.ToLower(strings.TrimSpace(s))
	i := 0
	for i < len(t) && t[i] >= '0' && t[i] <= '9' {
		i++
	}
	if i == 0 {
		return 0, errors.New("not a size: it must start with a decimal number")
	}
	var shift uint
	if rest := t[i:]; rest != "" && rest != "b" {
		switch rest[0] {
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
		}
		if tail := rest[1:]; shift == 0 || (tail != "" && tail != "b" && tail != "ib") {
			return 0, errors.New("unknown unit (use k, m, g, t or p, optionally followed by b or ib)")
		}
	}
	n, err := strconv.ParseInt(t[:i], 10, 64)
	if err != nil || n > math.MaxInt64>>(shift+1) {
		return 0, errors.New("too large")
	}
	return n << shift, nil
}

// FormatSize writes n bytes in the largest binary unit that divides it
// (16M, 4k, 4097).
func FormatSize(n int64) string {
	if n == 0 {
		return "0"
	}
	for _, u := range []struct {
		shift  uint
		suffix string
	}{{50, "P"}, {40, "T"}, {30, "G"}, {20, "M"}, {10, "k"}} {
		if n%(1<<u.shift) == 0 {
			return strconv.FormatInt(n>>u.shift, 10) + u.suffix
		}
	}
	return strconv.FormatInt(n, 10)
}

// suggest returns the key nearest to name, or "" when none is near: a key
// whose flag name is name, whose part after the dot is name, or within a
// small edit distance.
func suggest(name string) string {
	if len(name) > 128 {
		return ""
	}
	norm := strings.ReplaceAll(strings.ToLower(strings.TrimLeft(name, "-")), "-", "_")
	best, bestD := "", math.MaxInt
	for _, k := range keys {
		if norm == k.Name || norm == strings.ReplaceAll(k.Flag, "-", "_") || norm == k.Name[strings.IndexByte(k.Name, '.')+1:] {
			return k.Name
		}
		if d := editDistance(norm, k.Name); d < bestD {
			best, bestD = k.Name, d
		}
	}
	if bestD <= max(2, len(name)/3) {
		return best
	}
	return ""
}

// editDistance is the Levenshtein distance between a and b (bytes).
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
