package bench

import (
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/claudefs/claudefs/nvme/ioengine"
)

// fioStyle is a job file written the way fio's HOWTO and examples write
// them: comments of both kinds, two [global] sections, bare booleans,
// spaces around '=', fio's aliases and units.
const fioStyle = `; -- start job file --
# a comment line
[global]
filename=/tmp/cfs-jobfile-test.dat
size = 256m
direct=1
ioengine=io_uring
runtime=5
time_based

[randread]
rw=randread
bs=4k
iodepth=16

[seq-write]
stonewall
readwrite=write
blocksize=1M
iodepth=4
numjobs=2
group_reporting
end_fsync=1
fdatasync=8

[global]
ramp_time=500ms

[mixed]
rw=randrw
rwmixread=70
bssplit=4k/10:64k/50:32k/
verify=crc32c
offset=1m
name=mixed-70
; -- end job file --
`

func TestParseJobFileFioStyle(t *testing.T) {
	jf, err := ParseJobFile("job.fio", []byte(fioStyle))
	if err != nil {
		t.Fatal(err)
	}
	if len(jf.Sections) != 3 {
		t.Fatalf("%d sections", len(jf.Sections))
	}
	// The second [global] applies only to the job after it.
	if n := len(jf.Sections[1].Global); n != 6 {
		t.Errorf("seq-write sees %d global options, want 6", n)
	}
	if g := jf.Sections[2].Global; len(g) != 7 || g[6].String() != "ramp_time=500ms" || g[6].Line != 27 {
		t.Errorf("mixed sees globals %v", g)
	}
	if o := jf.Sections[1].Options[1]; o.Key != "rw" || o.Value != "write" || o.Line != 18 {
		t.Errorf("alias readwrite= gave %+v", o)
	}
	if o := jf.Sections[0].Global[4]; o.Key != "runtime" || o.Value != "5" {
		t.Errorf("global option 4 = %+v", o)
	}
	if o := jf.Sections[0].Global[5]; !o.Bare || o.Key != "time_based" || o.String() != "time_based" {
		t.Errorf("bare option = %+v", o)
	}

	base := DefaultFlags()
	base.Progress = false
	specs, err := jf.Specs(base, nil)
	if err != nil {
		t.Fatal(err)
	}
	r, w, m := specs[0], specs[1], specs[2]
	wantR := &Spec{Name: "randread", Target: "device:/tmp/cfs-jobfile-test.dat", Mode: ModeRandRead, RWMixRead: 50,
		BlockSize: 4096, Align: 4096, IODepth: 16, NumJobs: 1, Size: 256 << 20, Runtime: 5 * time.Second, TimeBased: true,
		Engine: ioengine.Uring, GroupID: 0, GlobalOptions: jf.Sections[0].Global, JobOptions: jf.Sections[0].Options}
	if !reflect.DeepEqual(r, wantR) {
		t.Errorf("randread spec\n%+v\nwant\n%+v", r, wantR)
	}
	if w.Mode != ModeWrite || w.BlockSize != 1<<20 || w.NumJobs != 2 || !w.GroupReporting || !w.EndFsync ||
		w.SyncEvery != 8 || !w.SyncData || w.GroupID != 1 || w.RampTime != 0 {
		t.Errorf("seq-write spec %+v", w)
	}
	wantSplit := []BSWeight{{4096, 10}, {64 << 10, 50}, {32 << 10, 40}}
	if m.Name != "mixed-70" || m.Mode != ModeRandRW || m.RWMixRead != 70 || !reflect.DeepEqual(m.BSSplit, wantSplit) ||
		m.BlockSize != 64<<10 || m.Align != 4096 || !m.Verify || m.Offset != 1<<20 || m.RampTime != 500*time.Millisecond || m.GroupID != 2 {
		t.Errorf("mixed spec %+v", m)
	}
}

// TestJobFileCommandLine: command-line options override the job file for
// every job, and are reported as global options; --target wins over
// filename=, and --target KIND: takes the file name.
func TestJobFileCommandLine(t *testing.T) {
	jf, err := ParseJobFile("j.fio", []byte("[global]\nfilename=/data/f\ndirect=1\n[a]\nrw=randread\niodepth=4\n[b]\nrw=write\n"))
	if err != nil {
		t.Fatal(err)
	}
	cli := []Option{{Key: "iodepth", Value: "32"}, {Key: "runtime", Value: "2"}, {Key: "time_based", Value: "true"}}
	base := DefaultFlags()
	specs, err := jf.Specs(base, cli)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range specs {
		if s.IODepth != 32 || s.Runtime != 2*time.Second || !s.TimeBased || s.Target != "device:/data/f" || len(s.Notes) != 0 {
			t.Errorf("job %s: %+v", s.Name, s)
		}
		if len(s.GlobalOptions) != 5 || s.GlobalOptions[2].Key != "iodepth" {
			t.Errorf("job %s: global options %v", s.Name, s.GlobalOptions)
		}
	}
	for target, want := range map[string]string{
		"device:/other": "device:/other", "store:": "store:/data/f", "device:": "device:/data/f", "device:/data/f": "device:/data/f",
	} {
		base.Target = target
		specs, err := jf.Specs(base, nil)
		if err != nil {
			t.Fatal(err)
		}
		if specs[0].Target != want {
			t.Errorf("--target %s: target %s, want %s", target, specs[0].Target, want)
		}
		if overridden := len(specs[0].Notes) == 1 && strings.Contains(specs[0].Notes[0], "overrides filename=/data/f"); overridden != (target == "device:/other") {
			t.Errorf("--target %s: notes %q", target, specs[0].Notes)
		}
	}
	// directory= joins a relative filename=; no direct= gets a note.
	jf, err = ParseJobFile("j.fio", []byte("[j]\ndirectory=/mnt/d\nfilename=f.dat\n"))
	if err != nil {
		t.Fatal(err)
	}
	specs, err = jf.Specs(DefaultFlags(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if specs[0].Target != "device:/mnt/d/f.dat" || len(specs[0].Notes) != 1 || !strings.Contains(specs[0].Notes[0], "sets no direct=") {
		t.Errorf("target %s, notes %q", specs[0].Target, specs[0].Notes)
	}
}

// TestJobFileEngines: fio's engine names map onto ours, with a note.
func TestJobFileEngines(t *testing.T) {
	for _, c := range []struct {
		engine string
		kind   ioengine.Kind
		depth  int
		note   string
	}{
		{"io_uring", ioengine.Uring, 16, ""},
		{"libaio", ioengine.Auto, 16, "no libaio engine"},
		{"psync", ioengine.Pread, 1, "one I/O in flight"},
		{"pvsync2", ioengine.Pread, 1, "one I/O in flight"},
		{"pread", ioengine.Pread, 16, ""},
	} {
		jf, err := ParseJobFile("e.fio", []byte(fmt.Sprintf("[e]\nfilename=/x\ndirect=1\niodepth=16\nioengine=%s\n", c.engine)))
		if err != nil {
			t.Fatal(err)
		}
		specs, err := jf.Specs(DefaultFlags(), nil)
		if err != nil {
			t.Fatal(err)
		}
		s := specs[0]
		notes := strings.Join(s.Notes, "; ")
		if s.Engine != c.kind || s.IODepth != c.depth || (c.note == "") != (notes == "") || !strings.Contains(notes, c.note) {
			t.Errorf("ioengine=%s: engine %s iodepth %d notes %q", c.engine, s.Engine, s.IODepth, notes)
		}
	}
}

// TestJobFileErrors: every way a job file is refused names the file and
// the line (and the option where there is one).
func TestJobFileErrors(t *testing.T) {
	many := func(format string, n int) string {
		var b strings.Builder
		for i := range n {
			fmt.Fprintf(&b, format, i)
		}
		return b.String()
	}
	for _, c := range []struct {
		text string
		want string
	}{
		{"[a]\nrw=read\nnrfiles=4\n", `j.fio:3: option "nrfiles" is not supported (cfs bench takes bs, bssplit,`},
		{"[global]\nfilesize=1m\n[a]\n", `j.fio:2: option "filesize" is not supported`},
		{"; c\n\n[a]\n  rate_iops = 100  \n", `j.fio:4: option "rate_iops" is not supported`},
		{"rw=read\n[a]\n", `j.fio:1: "rw=read" comes before any section`},
		{"[a\nrw=read\n", `j.fio:1: "[a": a section header is [NAME]`},
		{"[ ]\n", "j.fio:1: a section needs a name"},
		{"[a]\n[b]\n[a]\n", "j.fio:3: a second job section [a] (the first is at line 1)"},
		{"[a]\nbs\n", `j.fio:2: option "bs" needs a value`},
		{"[a]\nbs=\n", `j.fio:2: option "bs" has an empty value`},
		{"[a]\nfilename=${HOME}/x\n", "j.fio:2: filename=${HOME}/x: fio's ${VAR} expansion is not supported"},
		{"[a]\ninclude other.fio\n", "j.fio:2: fio's include directive is not supported"},
		{"[a]\nrw read\n", `j.fio:2: "rw read": an option is key=value or a bare key`},
		{"[a]\n=4k\n", "j.fio:2: \"=4k\": no option name before '='"},
		{"[global]\nname=x\n[a]\n", "j.fio:2: name= in [global]"},
		{"[global]\nrw=read\n", "j.fio: no job section"},
		{"", "j.fio: no job section"},
		{"[a]\nrw=read\x00\n", "j.fio: holds a NUL byte"},
		{"[a]\nrw=\xff\n", "j.fio:2: not valid UTF-8"},
		{"[a]\nfilename=" + strings.Repeat("x", MaxJobFileLine) + "\n", "j.fio:2: a line is limited to 4096 bytes"},
		{"[a]\n" + strings.Repeat("; padding\n", MaxJobFileSize/10+1), "bytes: a job file is limited to 1048576"},
		{many("[j%d]\n", MaxJobSections+1), "j.fio:65: more than 64 job sections"},
		{"[a]\n" + many("size=%dk\n", MaxSectionOptions+1), "j.fio:258: more than 256 options in section [a]"},
		{"[global]\n" + many("size=%dk\n", MaxSectionOptions+1) + "[a]\n", "j.fio:258: more than 256 options in [global] sections"},
		{"[a]\nbs=4q\n", `j.fio:2: bs=4q: size "4q": unknown unit "q"`},
		{"[a]\niodepth=many\n", "j.fio:2: iodepth=many: not an integer"},
		{"[a]\ntime_based=maybe\n", "j.fio:2: time_based=maybe: not a boolean"},
		{"[a]\nrw=trim\n", "j.fio:2: rw=trim: must be one of read, write"},
		{"[a]\nruntime=5y\n", `j.fio:2: runtime=5y: time "5y": unknown unit`},
		{"[a]\nbssplit=4k/60:8k/60\n", "j.fio:2: bssplit=4k/60:8k/60: the percentages add up to 120"},
		{"[a]\nsize=4m\noffset=1q\n", "j.fio:3: offset=1q"},
		{"[a]\ndirect=yes please\n", "j.fio:2: direct=yes please: not a boolean"},
		{"[" + strings.Repeat("n", maxNameLen+1) + "]\n", "j.fio:1: section name"},
	} {
		_, err := ParseJobFile("j.fio", []byte(c.text))
		if err == nil || !IsUsage(err) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q:\n got %v\nwant a usage error containing %q", trunc(c.text), err, c.want)
		}
	}
	// Values that are well-formed alone but wrong together fail in Specs,
	// naming the file and the job.
	for _, c := range []struct {
		text string
		want string
	}{
		{"[small]\nfilename=/x\nbs=8k\nsize=4k\n", "j.fio: job [small] (line 1): --size=4k: must be at least --bs"},
		{"[d0]\nfilename=/x\ndirect=0\n", "j.fio: job [d0] (line 1): --direct=0: only --direct=1"},
		{"[v]\nfilename=/x\nverify=md5\n", "j.fio: job [v] (line 1): --verify=\"md5\": only crc32c"},
		{"[f]\nfilename=/x\nfsync=2\nfdatasync=2\n", "give one of them"},
		{"[n]\nrw=read\n", "j.fio: job [n] (line 1): --target is required"},
		{"[tb]\nfilename=/x\ntime_based\n", "--time_based needs a positive --runtime"},
		{"[q]\nfilename=/x\niodepth=2000\n", "--iodepth=2000: must be 1..1024"},
	} {
		jf, err := ParseJobFile("j.fio", []byte(c.text))
		if err != nil {
			t.Fatalf("%q: %v", c.text, err)
		}
		_, err = jf.Specs(DefaultFlags(), nil)
		if err == nil || !IsUsage(err) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q:\n got %v\nwant a usage error containing %q", c.text, err, c.want)
		}
	}
}

func trunc(s string) string {
	if len(s) > 80 {
		return s[:80] + "..."
	}
	return s
}

func TestParseBSSplit(t *testing.T) {
	for in, want := range map[string][]BSWeight{
		"4k/10:64k/50:32k/40": {{4096, 10}, {65536, 50}, {32768, 40}},
		"4k/50:1k/:32k/":      {{4096, 50}, {1024, 25}, {32768, 25}},
		"4k/:8k/:16k/":        {{4096, 34}, {8192, 33}, {16384, 33}},
		"4k":                  {{4096, 100}},
		"4k/100:8k/0":         {{4096, 100}, {8192, 0}},
	} {
		got, err := ParseBSSplit(in)
		if err != nil || !reflect.DeepEqual(got, want) {
			t.Errorf("ParseBSSplit(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "4k/101", "4k/-1", "4k/x", "0/100", "4k/50:4q/50", "4k/50,8k/100", "4k/30:8k/30", "128m/100",
		strings.Repeat("4k/1:", 64) + "4k/"} {
		if got, err := ParseBSSplit(in); err == nil {
			t.Errorf("ParseBSSplit(%q) = %v, want an error", in, got)
		}
	}
}

// FuzzParseJobFile: any input either parses into sections whose options
// are all known, or fails with a usage error; never a panic. The seed
// corpus runs in go test.
func FuzzParseJobFile(f *testing.F) {
	for _, seed := range []string{
		fioStyle,
		"[a]\nrw=randread\nbs=4k\n",
		"[global]\nsize=1m\n[a]\n[b]\nstonewall\n",
		"[a]\nbssplit=4k/:8k/\nverify=crc32c\n",
		"[a]\ninclude x\n",
		"[a]\nrw=read\x00",
		"[]\n",
		"[a]\n  ; x\n# y\n\r\n",
		"[a]\nfilename=${X}\n",
		"[global]\nname=x\n",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		jf, err := ParseJobFile("fuzz.fio", data)
		if err != nil {
			if !IsUsage(err) {
				t.Fatalf("not a usage error: %v", err)
			}
			return
		}
		if len(jf.Sections) == 0 || len(jf.Sections) > MaxJobSections {
			t.Fatalf("%d sections", len(jf.Sections))
		}
		for _, s := range jf.Sections {
			for _, o := range append(s.Global, s.Options...) {
				if !IsJobOption(o.Key) || o.Line < 1 {
					t.Fatalf("option %+v", o)
				}
			}
		}
		base := DefaultFlags()
		base.Target = "device:/fuzz"
		if _, err := jf.Specs(base, nil); err != nil && !IsUsage(err) {
			t.Fatalf("Specs: not a usage error: %v", err)
		}
	})
}
