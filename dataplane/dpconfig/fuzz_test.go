package dpconfig

import (
	"strings"
	"testing"
)

// FuzzSet drives every key's validator with arbitrary values (what a
// config.set over the sidecar channel carries): none may panic, a value
// accepted reads back in a canonical form that is accepted again unchanged,
// and an unknown key is always refused.
func FuzzSet(f *testing.F) {
	for _, k := range keys {
		f.Add(k.Name, k.Default)
	}
	for _, v := range []string{"0-3,6", "16M", "-1", "1e9", "true", "[::]:0", "\x00", "9999999999999999999999", "0-1023", strings.Repeat("1,", 600)} {
		f.Add("cpu.affinity", v)
		f.Add("network.tcp_sndbuf", v)
		f.Add("network.listen", v)
	}
	f.Add("nvme.queue_dept", "1")
	f.Fuzz(func(t *testing.T, key, value string) {
		c := Default()
		err := c.Set(key, value)
		if err != nil {
			return
		}
		got, err := c.Get(key)
		if err != nil {
			t.Fatalf("Get(%q) after a Set that worked: %v", key, err)
		}
		again, err := Check(key, got)
		if err != nil || again != got {
			t.Fatalf("%s: canonical %q of %q does not round-trip: %q, %v", key, got, value, again, err)
		}
	})
}

// FuzzLoad feeds arbitrary files to the parser: it may refuse them, never
// panic.
func FuzzLoad(f *testing.F) {
	f.Add("nvme.queue_depth = 64\n# c\ncpu.affinity = 0-1\n")
	f.Add("control.socket = \"/a b\"\n")
	f.Add("=\n")
	f.Add("x = \"\\\n")
	f.Add("nvme.device = a\nnvme.device = b\n")
	f.Fuzz(func(t *testing.T, text string) {
		c := Default()
		if err := c.Load(strings.NewReader(text), "fuzz"); err != nil && !strings.HasPrefix(err.Error(), "fuzz") {
			t.Fatalf("error does not name the source: %v", err)
		}
	})
}
