package dpconfig

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestDefaults(t *testing.T) {
	c := Default()
	if c.QueueDepth != 128 || !c.WriteCombining || !c.TCPNoDelay || c.DrainTimeout != 10*time.Second ||
		c.IOEngine != "auto" || c.WorkerQueue != 4096 || c.Affinity.Enabled() {
		t.Fatalf("defaults: %+v", c)
	}
	for _, k := range Keys() {
		if got := k.Value(&c); got != k.Default {
			t.Errorf("%s: default %q reads back as %q", k.Name, k.Default, got)
		}
		if k.Range == "" || k.Help == "" || k.Flag == "" {
			t.Errorf("%s: lacks a range, help or flag: %+v", k.Name, k)
		}
	}
	if err := c.Check(); err == nil || !strings.Contains(err.Error(), "--device (or nvme.device in --config)") || !strings.Contains(err.Error(), "control.socket") {
		t.Errorf("Check of the defaults: %v", err)
	}
}

func TestSetValidates(t *testing.T) {
	for _, c := range []struct {
		key, value, want string // want: canonical value, or "!" + substring of the error
	}{
		{"nvme.queue_depth", "64", "64"},
		{"nvme.queue_depth", " 4096 ", "4096"},
		{"nvme.queue_depth", "0", `!bad value "0" for nvme.queue_depth: want an integer in 1..4096 (0 is out of range)`},
		{"nvme.queue_depth", "4097", "!want an integer in 1..4096"},
		{"nvme.queue_depth", "lots", "!not a decimal integer"},
		{"data.workers", "0", "0"},
		{"data.workers", "16385", "!0 (32 per CPU) or an integer in 1..16384"},
		{"data.write_combining", "off", "false"},
		{"data.write_combining", "maybe", "!want true or false"},
		{"network.tcp_sndbuf", "16M", "16M"},
		{"network.tcp_sndbuf", "16777216", "16M"},
		{"network.tcp_sndbuf", "0", "0"},
		{"network.tcp_sndbuf", "1k", "!0 (the kernel's autotuning) or a size in 4k..256M"},
		{"network.tcp_rcvbuf", "1G", "!1G is out of range"},
		{"network.tcp_rcvbuf", "4kib", "4k"},
		{"network.tcp_rcvbuf", "4x", "!unknown unit"},
		{"network.tcp_rcvbuf", "4i", "!unknown unit"},
		{"network.tcp_rcvbuf", "-4k", "!must start with a decimal number"},
		{"network.tcp_rcvbuf", "99999999999999999999", "!too large"},
		{"nvme.device_size", "2G", "2G"},
		{"nvme.device_size", "100", "!out of range"},
		{"nvme.ioengine", "io_uring", "io_uring"},
		{"nvme.ioengine", "spdk", "!want auto, io_uring or pread"},
		{"data.drain_timeout", "1m30s", "1m30s"},
		{"data.drain_timeout", "11m", "!a duration in 0s..10m0s"},
		{"data.drain_timeout", "-1s", "!out of range"},
		{"network.listen", "127.0.0.1:7420", "127.0.0.1:7420"},
		{"network.listen", "[::]:0", "[::]:0"},
		{"network.listen", "localhost", "!not HOST:PORT"},
		{"network.listen", "h:70000", "!port"},
		{"cpu.affinity", "0-3,6", "0-3,6"},
		{"cpu.affinity", "6,0,1-3,2", "0-3,6"},
		{"cpu.affinity", "true", "true"},
		{"cpu.affinity", "no", "false"},
		{"cpu.affinity", "3-1", "!runs backwards"},
		{"cpu.affinity", "0,,1", "!empty element"},
		{"cpu.affinity", "1024", "!CPU 1024 is over 1023"},
		{"cpu.affinity", "a-b", "!is not a CPU number"},
		{"cpu.io_threads", "257", "!0 (one per two CPUs, of cpu.affinity's when set) or an integer in 1..256"},
		{"control.socket", "/run/cfs/dp0.sock", "/run/cfs/dp0.sock"},
		{"control.socket", "/" + strings.Repeat("x", MaxSocketPath), "!a path of at most 107 bytes"},
		{"nvme.device", "a\nb", "!line break"},
		{"nvme.queue_depth", strings.Repeat("9", MaxValueBytes+1), "!longer than"},
	} {
		cfg := Default()
		before := cfg
		err := cfg.Set(c.key, c.value)
		if strings.HasPrefix(c.want, "!") {
			if err == nil || !errors.Is(err, ErrBadValue) || !strings.Contains(err.Error(), c.want[1:]) || !strings.Contains(err.Error(), c.key) {
				t.Errorf("Set(%s, %q) = %v; want a bad-value error naming the key and %q", c.key, c.value, err, c.want[1:])
			}
			if cfg.Affinity.String() != before.Affinity.String() || cfg.QueueDepth != before.QueueDepth {
				t.Errorf("Set(%s, %q) failed but changed the config", c.key, c.value)
			}
			if _, err := Check(c.key, c.value); err == nil {
				t.Errorf("Check(%s, %q) accepted what Set refuses", c.key, c.value)
			}
			continue
		}
		if err != nil {
			t.Errorf("Set(%s, %q): %v", c.key, c.value, err)
			continue
		}
		if got, _ := cfg.Get(c.key); got != c.want {
			t.Errorf("Set(%s, %q) reads back %q, want %q", c.key, c.value, got, c.want)
		}
		if got, err := Check(c.key, c.value); err != nil || got != c.want {
			t.Errorf("Check(%s, %q) = %q, %v; want %q", c.key, c.value, got, err, c.want)
		}
	}
}

func TestUnknownKeyNamesIt(t *testing.T) {
	for _, c := range []struct{ key, suggestion string }{
		{"nvme.queue_dept", "nvme.queue_depth"},
		{"queue_depth", "nvme.queue_depth"},
		{"queue-depth", "nvme.queue_depth"},
		{"--tcp-nodelay", "network.tcp_nodelay"},
		{"network.tcp_sndbuff", "network.tcp_sndbuf"},
		{"cpu.afinity", "cpu.affinity"},
		{"raft.write_combining", "data.write_combining"},
		{"transport.enable_rdma", ""},
	} {
		cfg := Default()
		err := cfg.Set(c.key, "1")
		var uk *UnknownKeyError
		if !errors.As(err, &uk) || !errors.Is(err, ErrUnknownKey) || uk.Suggestion != c.suggestion || !strings.Contains(err.Error(), `"`+c.key+`"`) {
			t.Errorf("Set(%q): %v; want an unknown-key error naming it and suggesting %q", c.key, err, c.suggestion)
		}
		if c.suggestion == "" && !strings.Contains(err.Error(), "nvme.queue_depth") {
			t.Errorf("with no near key the error lists the keys: %v", err)
		}
	}
}

func TestLoadFile(t *testing.T) {
	dir := t.TempDir()
	write := func(text string) string {
		p := filepath.Join(dir, "dp.conf")
		if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	cfg := Default()
	err := cfg.LoadFile(write(`# a node's dataplane
nvme.device      = /srv/cfs/dev0.dat
nvme.device_size = 2G
   # indented comment

nvme.queue_depth = 64
cpu.affinity     = 0-1
control.socket   = "/run/cfs/dp 0.sock"
network.listen   = 127.0.0.1:7420
nvme.ioengine    = pread
`))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Device != "/srv/cfs/dev0.dat" || cfg.DeviceSize != 2<<30 || cfg.QueueDepth != 64 ||
		cfg.Affinity.String() != "0-1" || cfg.ControlSocket != "/run/cfs/dp 0.sock" || cfg.IOEngine != "pread" || cfg.Check() != nil {
		t.Fatalf("loaded %+v", cfg)
	}
	for _, c := range []struct{ text, want string }{
		{"nvme.queue_dept = 3\n", `dp.conf:1: unknown configuration key "nvme.queue_dept" (did you mean "nvme.queue_depth"?)`},
		{"\n\nnvme.queue_depth = 0\n", `dp.conf:3: bad value "0" for nvme.queue_depth: want an integer in 1..4096`},
		{"nvme.queue_depth\n", `dp.conf:1: "nvme.queue_depth" is not KEY = VALUE`},
		{"nvme.queue_depth = 3\nnvme.queue_depth = 4\n", "dp.conf:2: nvme.queue_depth is already set on line 1"},
		{`control.socket = "/x` + "\n", "opens a quote"},
		{"nvme.queue_depth = 1 # trailing\n", "not a decimal integer"},
		{strings.Repeat("#", MaxLineBytes+1) + "\n", "dp.conf:1: line longer than 4096 bytes"},
	} {
		cfg := Default()
		err := cfg.LoadFile(write(c.text))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("loading %q: %v; want %q", c.text, err, c.want)
		}
		if cfg.QueueDepth != 128 {
			t.Errorf("a failed load changed the config: %+v", cfg)
		}
	}
	big := write(strings.Repeat("# padding line\n", MaxFileBytes/15+1))
	if err := cfg.LoadFile(big); err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Errorf("oversized file: %v", err)
	}
	if err := cfg.LoadFile(filepath.Join(dir, "absent")); err == nil || !strings.Contains(err.Error(), "absent") {
		t.Errorf("absent file: %v", err)
	}
}

func TestCPUList(t *testing.T) {
	cpus, err := ParseCPUList(" 6, 0-3 ,2")
	if err != nil || FormatCPUList(cpus) != "0-3,6" || len(cpus) != 5 {
		t.Fatalf("ParseCPUList: %v %v", cpus, err)
	}
	if FormatCPUList([]int{0, 2, 4, 5}) != "0,2,4-5" {
		t.Errorf("FormatCPUList: %q", FormatCPUList([]int{0, 2, 4, 5}))
	}
	all, err := ParseCPUList("0-1023")
	if err != nil || len(all) != MaxCPU {
		t.Errorf("the whole range: %d CPUs, %v", len(all), err)
	}
}

func TestSize(t *testing.T) {
	for s, want := range map[string]int64{"0": 0, "4096": 4096, "4k": 4096, "4KiB": 4096, "4kb": 4096, "16M": 16 << 20, "2g": 2 << 30, "1T": 1 << 40, "1p": 1 << 50, "7b": 7} {
		if n, err := ParseSize(s); err != nil || n != want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", s, n, err, want)
		}
	}
	for _, s := range []string{"", "k", "ib", "4ib", "4q", "4 k k", "1.5G", "9999999P"} {
		if n, err := ParseSize(s); err == nil {
			t.Errorf("ParseSize(%q) = %d, want an error", s, n)
		}
	}
	for n, want := range map[int64]string{0: "0", 4096: "4k", 4097: "4097", 16 << 20: "16M", 3 << 30: "3G"} {
		if got := FormatSize(n); got != want {
			t.Errorf("FormatSize(%d) = %q, want %q", n, got, want)
		}
	}
}
