package bench

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/claudefs/claudefs/nvme/ioengine"
)

func TestParseArgsDefaults(t *testing.T) {
	s, err := ParseArgs([]string{"--target", "device:/tmp/x"})
	if err != nil {
		t.Fatal(err)
	}
	want := Spec{Name: "bench", Target: "device:/tmp/x", Mode: ModeRead, RWMixRead: 50, BlockSize: 4096, Align: 4096,
		IODepth: 1, NumJobs: 1, Engine: ioengine.Auto, Output: FormatNormal, Progress: true}
	if !reflect.DeepEqual(*s, want) {
		t.Fatalf("defaults = %+v\nwant %+v", *s, want)
	}
}

func TestParseArgsFio(t *testing.T) {
	s, err := ParseArgs(strings.Fields("--name=a --target=device:/tmp/x --size=1G --runtime=5 --time_based --direct=1 " +
		"--ioengine=io_uring --rw=randrw --rwmixread=70 --bs=4k --iodepth=32 --numjobs=4 --ramp_time=2s --offset=1m " +
		"--output-format=json --progress=false"))
	if err != nil {
		t.Fatal(err)
	}
	want := Spec{Name: "a", Target: "device:/tmp/x", Mode: ModeRandRW, RWMixRead: 70, BlockSize: 4096, Align: 4096,
		IODepth: 32, NumJobs: 4, Size: 1 << 30, Offset: 1 << 20, Runtime: 5 * time.Second, TimeBased: true,
		RampTime: 2 * time.Second, Engine: ioengine.Uring, Output: FormatJSON}
	if !reflect.DeepEqual(*s, want) {
		t.Fatalf("spec = %+v\nwant %+v", *s, want)
	}
}

func TestParseArgsModes(t *testing.T) {
	for in, want := range map[string]Mode{"read": ModeRead, "write": ModeWrite, "randread": ModeRandRead,
		"randwrite": ModeRandWrite, "randrw": ModeRandRW, "readwrite": ModeReadWrite, "rw": ModeReadWrite} {
		s, err := ParseArgs([]string{"--target=device:x", "--rw=" + in})
		if err != nil || s.Mode != want {
			t.Errorf("--rw=%s: %v, %v; want %v", in, s, err, want)
		}
	}
}

func TestParseArgsErrors(t *testing.T) {
	cases := []struct {
		args string
		want string // substring of the error
	}{
		{"", "--target is required"},
		{"--target=nocolon", "must be KIND:ARG"},
		{"--target=device:x --direct=0", "only --direct=1 is supported"},
		{"--target=device:x --rw=trim", "--rw="},
		{"--target=device:x --rwmixread=101", "--rwmixread=101"},
		{"--target=device:x --rwmixread=-1", "--rwmixread=-1"},
		{"--target=device:x --bs=0", "--bs=0"},
		{"--target=device:x --bs=4q", "--bs"},
		{"--target=device:x --bs=128m", "--bs=128m"},
		{"--target=device:x --iodepth=0", "--iodepth=0: must be 1..1024"},
		{"--target=device:x --iodepth=1025", "--iodepth=1025"},
		{"--target=device:x --numjobs=0", "--numjobs=0: must be 1..64"},
		{"--target=device:x --numjobs=65", "--numjobs=65"},
		{"--target=device:x --bs=8k --size=4k", "must be at least --bs"},
		{"--target=device:x --size=abc", "--size"},
		{"--target=device:x --offset=-1", "--offset"},
		{"--target=device:x --runtime=5x", "--runtime"},
		{"--target=device:x --time_based", "--time_based needs a positive --runtime"},
		{"--target=device:x --ramp_time=1y", "--ramp_time"},
		{"--target=device:x --ioengine=posixaio", "--ioengine"},
		{"--target=device:x --bssplit=4k/50:8k/60", "add up to 110"},
		{"--target=device:x --bssplit=4k/50:8k/40", "add up to 90, not 100"},
		{"--target=device:x --bssplit=4k/50,8k/100", "a comma"},
		{"--target=device:x --bssplit=4q/100", "--bssplit"},
		{"--target=device:x --fsync=1 --fdatasync=1", "give one of them"},
		{"--target=device:x --fsync=-1", "--fsync=-1"},
		{"--target=device:x --verify=md5", "only crc32c"},
		{"--target=device:x --verify=crc32c --bs=16", "needs at least 32"},
		{"--target=device:x --verify=crc32c --rw=randwrite --size=1t", "at most 134217728 of them"},
		{"--target=device: --filename=a:b", "several files"},
		{"--target=device:", "no ARG"},
		{"--directory=/tmp", "--directory without --filename"},
		{"--target=device:x --output-format=terse", "--output-format"},
		{"--target=device:x --name=", "--name"},
		{"--target=device:x --size=1p --offset=1024p", "--offset + --size"},
		{"--target=device:x --iodepth=abc", "invalid argument"},
		{"--target=device:x --group_report", "unknown flag"},
		{"--target=device:x extra", "unexpected argument"},
	}
	for _, c := range cases {
		_, err := ParseArgs(strings.Fields(c.args))
		if err == nil || !strings.Contains(err.Error(), c.want) || !IsUsage(err) {
			t.Errorf("ParseArgs(%q) = %v; want a usage error containing %q", c.args, err, c.want)
		}
	}
}
