package bench

import (
	"context"
	"io"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/claudefs/claudefs/dataplane"
	"github.com/claudefs/claudefs/netio"
	"github.com/claudefs/claudefs/nvme/chunkstore"
)

// runProfile runs profile name against target, shortened by the
// command-line options given (as cfs bench run --profile does), and checks
// the direction(s) it measures moved data.
func runProfile(t *testing.T, name, target string, cli ...Option) *Result {
	t.Helper()
	jf, err := ProfileJobFile(name)
	if err != nil {
		t.Fatal(err)
	}
	base := DefaultFlags()
	base.Target, base.Progress = target, false
	specs, err := jf.Specs(base, cli)
	if err != nil {
		t.Fatal(err)
	}
	if len(specs) != 1 || specs[0].Name != name {
		t.Fatalf("profile %s: %d specs", name, len(specs))
	}
	res, err := Run(context.Background(), specs[0], io.Discard)
	if err != nil {
		t.Fatalf("profile %s on %s: %v", name, target, err)
	}
	j := res.Jobs[0]
	s := specs[0]
	if (s.Mode.Reads() && j.Read.IOs == 0) || (s.Mode.Writes() && j.Write.IOs == 0) ||
		(!s.Mode.Reads() && j.Read.IOs != 0) || (!s.Mode.Writes() && j.Write.IOs != 0) {
		t.Errorf("profile %s on %s: %d reads, %d writes", name, target, j.Read.IOs, j.Write.IOs)
	}
	if j.Runtime < 200*time.Millisecond || j.Runtime > 5*time.Second {
		t.Errorf("profile %s on %s: measured %v", name, target, j.Runtime)
	}
	return res
}

// short overrides a profile's size and runtime, as flags would.
var short = []Option{{Key: "size", Value: "8m"}, {Key: "runtime", Value: "300ms"}}

func blockProfiles() []string {
	var names []string
	for _, p := range Profiles() {
		if p.Needs == "" && p.Targets == "" {
			names = append(names, p.Name)
		}
	}
	return names
}

func TestProfilesList(t *testing.T) {
	want := []string{"randread-4k", "randwrite-4k", "seqread-1m", "seqwrite-1m", "mixed-70-30", "small-files", "metadata"}
	ps := Profiles()
	if len(ps) != len(want) {
		t.Fatalf("%d profiles", len(ps))
	}
	for i, p := range ps {
		if p.Name != want[i] || p.Description == "" || p.Options == "" {
			t.Errorf("profile %d: %+v", i, p)
		}
	}
	for name, want := range map[string]string{"small-files": "on a dir: target", "metadata": "on a cluster: target"} {
		if _, err := ProfileJobFile(name); err == nil || !IsUsage(err) || !strings.Contains(err.Error(), "not a fio job") || !strings.Contains(err.Error(), want) {
			t.Errorf("profile %s as a job file: %v", name, err)
		}
	}
	if _, err := ProfileJobFile("nosuch"); err == nil || !strings.Contains(err.Error(), "randread-4k, randwrite-4k") {
		t.Errorf("unknown profile: %v", err)
	}
	var b strings.Builder
	if err := WriteProfiles(&b); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"randread-4k", "fio: --rw=randread --bs=4k --iodepth=32", "mixed-70-30", "--rwmixread=70", "small-files", "targets: dir:", "metadata", "targets: cluster:"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("profiles list lacks %q:\n%s", want, b.String())
		}
	}
}

// TestProfilesStore runs each block profile briefly against a store:
// target, a fresh one each.
func TestProfilesStore(t *testing.T) {
	for _, name := range blockProfiles() {
		runProfile(t, name, "store:"+filepath.Join(t.TempDir(), "store.dat"), short...)
	}
}

// TestProfilesDevice runs each block profile briefly against a device:
// file, and checks a profile's options against the spec they make.
func TestProfilesDevice(t *testing.T) {
	path := filepath.Join(t.TempDir(), "dev.dat")
	for _, name := range blockProfiles() {
		res := runProfile(t, name, "device:"+path, short...)
		if name == "mixed-70-30" {
			s := res.Spec
			if s.Mode != ModeRandRW || s.RWMixRead != 70 || s.BlockSize != 4096 || s.IODepth != 32 || !s.TimeBased || s.Size != 8<<20 {
				t.Errorf("mixed-70-30 spec: %+v", s)
			}
		}
	}
}

// TestProfilesDataplane runs each block profile briefly against an
// in-process dataplane server over loopback. The store is 1 GiB (sparse):
// the write profiles rewrite their 8 MiB working set at full speed, and
// with 256 MiB (8 segments per core) a fast run could fill a core's log
// before its cleaner freed a segment.
func TestProfilesDataplane(t *testing.T) {
	st, err := chunkstore.Open(filepath.Join(t.TempDir(), "dp.dat"), chunkstore.Options{CreateSize: 1 << 30, Partitions: 2, Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := dataplane.NewServer(st, dataplane.Config{Net: netio.ServerOptions{Addr: "127.0.0.1:0", EventLoops: 2}})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := srv.Stop(ctx); err != nil {
			t.Errorf("Stop: %v", err)
		}
		if err := st.Close(); err != nil {
			t.Errorf("store Close: %v", err)
		}
	})
	for _, name := range blockProfiles() {
		runProfile(t, name, "dataplane:"+srv.Addr().String(), short...)
	}
}
