package bench

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestDirTarget runs fio-style jobs on files in a temporary directory: files
// named as fio names them and laid out to --size, mixed I/O with fsync=,
// end_fsync and verify=crc32c, O_DIRECT and buffered.
func TestDirTarget(t *testing.T) {
	for _, direct := range []string{"1", "0"} {
		t.Run("direct="+direct, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "mnt")
			spec := mustSpec(t, "--target=dir:"+dir, "--name=dirjob", "--rw=randrw", "--bs=4k", "--size=2m", "--iodepth=3", "--numjobs=2",
				"--fsync=8", "--end_fsync=1", "--verify=crc32c", "--direct="+direct)
			res, err := Run(context.Background(), spec, io.Discard)
			if err != nil {
				t.Fatal(err)
			}
			if len(res.Jobs) != 2 || !strings.HasPrefix(res.Target, "dir:"+dir) {
				t.Fatalf("result: %d jobs on %q", len(res.Jobs), res.Target)
			}
			for _, j := range res.Jobs {
				if j.Read.IOs == 0 || j.Write.IOs == 0 || j.Read.Bytes+j.Write.Bytes != 2<<20 {
					t.Errorf("job %d: %d reads, %d writes, %d bytes; want 2 MiB in all", j.Index, j.Read.IOs, j.Write.IOs, j.Read.Bytes+j.Write.Bytes)
				}
				// fsync after every 8 writes of each of 3 goroutines, plus end_fsync
				if j.Sync.IOs < j.Write.IOs/8-3 || j.Sync.IOs == 0 {
					t.Errorf("job %d: %d syncs for %d writes", j.Index, j.Sync.IOs, j.Write.IOs)
				}
				if j.Verify.Units == 0 || j.Verify.Mismatches != 0 {
					t.Errorf("job %d: verify %+v", j.Index, j.Verify)
				}
			}
			for _, name := range []string{"dirjob.0.0", "dirjob.1.0"} {
				fi, err := os.Stat(filepath.Join(dir, name))
				if err != nil || fi.Size() != 2<<20 {
					t.Errorf("%s: %v, %v", name, fi, err)
				}
			}
		})
	}
}

// TestDirTargetVerifyCatchesCorruption writes with verify, corrupts the
// file behind the job's back, and reads it with verify: the mismatch fails
// the run.
func TestDirTargetVerifyCatchesCorruption(t *testing.T) {
	dir := t.TempDir()
	w := mustSpec(t, "--target=dir:"+dir, "--name=v", "--rw=write", "--bs=4k", "--size=256k", "--verify=crc32c")
	if _, err := Run(context.Background(), w, io.Discard); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(filepath.Join(dir, "v.0.0"), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("garbage!"), 5*4096+100); err != nil {
		t.Fatal(err)
	}
	f.Close()
	r := mustSpec(t, "--target=dir:"+dir, "--name=v", "--rw=read", "--bs=4k", "--size=256k", "--verify=crc32c")
	_, err = Run(context.Background(), r, io.Discard)
	var ve *VerifyError
	if !errors.As(err, &ve) || ve.Mismatches != 1 {
		t.Fatalf("reading a corrupted unit: %v, want one verify mismatch", err)
	}
}

func TestDirTargetUsage(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--target=dir:" + dir, "--bs=512", "--size=1m"}, "O_DIRECT needs a multiple of 4096"},
		{[]string{"--target=dir:" + dir}, "needs --size"},
		{[]string{"--target=dir:", "--size=1m"}, "no ARG"},
		{[]string{"--target=device:" + dir + "/x", "--size=1m", "--direct=0"}, "only --direct=1 is supported"},
	} {
		spec, err := ParseArgs(append(c.args, "--progress=false"))
		if err == nil {
			_, err = Run(context.Background(), spec, io.Discard)
		}
		var ue *UsageError
		if !errors.As(err, &ue) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: %v, want a usage error with %q", c.args, err, c.want)
		}
	}
	// --direct=0 with a --bs O_DIRECT could not do is fine on dir:.
	spec := mustSpec(t, "--target=dir:"+dir, "--bs=512", "--size=64k", "--direct=0", "--rw=write")
	if _, err := Run(context.Background(), spec, io.Discard); err != nil {
		t.Fatalf("buffered 512-byte writes: %v", err)
	}
}
