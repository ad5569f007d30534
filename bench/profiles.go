package bench

import (
	"fmt"
	"io"
	"strings"
)

// Profile is a built-in benchmark: a fio job section under a name.
type Profile struct {
	Name        string
	Description string
	// Options are the job's fio options, space-separated, as a job file
	// would hold them one per line (and fio takes them as --flags).
	Options string
	// Needs is empty when the profile runs on the block targets (device:,
	// store:, dataplane:); otherwise it names the kind of target the
	// profile needs and that cfs bench does not have yet.
	Needs string
	// Targets, when set, is the kind of target the profile runs on, with
	// its own workload rather than a fio job file (small-files on dir:,
	// RunSmallFiles; metadata on cluster:, RunMetadata).
	Targets string
}

// blockCommon is what every block profile shares: 1 GiB per job (the
// working set of store: and dataplane:), 30 s measured, O_DIRECT.
const blockCommon = "size=1G runtime=30 time_based direct=1"

var profiles = []Profile{
	{Name: "randread-4k", Description: "4 KiB random reads, 32 in flight: small-block read IOPS",
		Options: "rw=randread bs=4k iodepth=32 " + blockCommon},
	{Name: "randwrite-4k", Description: "4 KiB random writes, 32 in flight: small-block write IOPS",
		Options: "rw=randwrite bs=4k iodepth=32 " + blockCommon},
	{Name: "seqread-1m", Description: "1 MiB sequential reads, 8 in flight: read bandwidth",
		Options: "rw=read bs=1m iodepth=8 " + blockCommon},
	{Name: "seqwrite-1m", Description: "1 MiB sequential writes, 8 in flight: write bandwidth",
		Options: "rw=write bs=1m iodepth=8 " + blockCommon},
	{Name: "mixed-70-30", Description: "4 KiB random I/O, 70% reads and 30% writes, 32 in flight: a database-like mix",
		Options: "rw=randrw rwmixread=70 bs=4k iodepth=32 " + blockCommon},
	{Name: "small-files", Description: "many small files written whole and read back: 4-64 KiB each, 10000 files, 32 open at a time",
		Options: "rw=write bssplit=4k/40:16k/40:64k/20 nrfiles=10000 filesize=4k-64k openfiles=32 create_on_open=1 fsync_on_close=1 direct=1",
		Targets: "dir:"},
	{Name: "metadata", Description: "mdtest-like: --numjobs clients create --files files each in --dirs shared directories, then stat, list and unlink them: metadata operations per second",
		Options: "numjobs=16 dirs=64 files=2000 (phases create, stat, readdir, unlink)",
		Targets: "cluster:"},
}

// Profiles lists the built-in profiles in a fixed order.
func Profiles() []Profile { return append([]Profile(nil), profiles...) }

// FioFlags renders the profile's options as fio command-line flags.
func (p Profile) FioFlags() string {
	if p.Needs != "" || p.Targets != "" {
		return p.Options
	}
	f := strings.Fields(p.Options)
	for i := range f {
		f[i] = "--" + f[i]
	}
	return strings.Join(f, " ")
}

// ProfileJobFile returns the job file of profile name: one section named
// after it. A profile that needs a target cfs bench does not have is a
// *UsageError saying so.
func ProfileJobFile(name string) (*JobFile, error) {
	for _, p := range profiles {
		if p.Name != name {
			continue
		}
		if p.Needs != "" {
			return nil, Usagef("profile %s needs %s, which cfs bench does not support yet", name, p.Needs)
		}
		if p.Targets != "" {
			return nil, Usagef("profile %s is not a fio job: it runs its own workload on a %s target: cfs bench run --profile %s --target %sARG",
				name, p.Targets, name, p.Targets)
		}
		text := "[" + p.Name + "]\n" + strings.Join(strings.Fields(p.Options), "\n") + "\n"
		return ParseJobFile("profile "+name, []byte(text))
	}
	names := make([]string, len(profiles))
	for i, p := range profiles {
		names[i] = p.Name
	}
	return nil, Usagef("--profile=%q: no such profile; `cfs bench profiles` lists them: %s", name, strings.Join(names, ", "))
}

// WriteProfiles prints the profiles for `cfs bench profiles`.
func WriteProfiles(w io.Writer) error {
	var b strings.Builder
	for _, p := range profiles {
		fmt.Fprintf(&b, "%-13s %s\n", p.Name, p.Description)
		label := "fio"
		if p.Targets != "" {
			label = "options"
		}
		fmt.Fprintf(&b, "%-13s %s: %s\n", "", label, p.FioFlags())
		switch {
		case p.Needs != "":
			fmt.Fprintf(&b, "%-13s needs %s: not supported yet\n", "", p.Needs)
		case p.Targets == "dir:":
			fmt.Fprintf(&b, "%-13s targets: dir:; create, write, fsync, close, stat, read, unlink: ops/s\n", "")
		case p.Targets != "":
			fmt.Fprintf(&b, "%-13s targets: %s; create, stat, readdir, unlink: ops/s and latency per phase\n", "", p.Targets)
		default:
			fmt.Fprintf(&b, "%-13s targets: device:, store:, dataplane:, dir:, cluster:\n", "")
		}
	}
	b.WriteString("\nRun one with: cfs bench run --profile NAME --target KIND:ARG [fio flags to override, e.g. --runtime=10 --size=4G]\n")
	_, err := io.WriteString(w, b.String())
	return err
}
