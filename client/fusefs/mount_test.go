package fusefs_test

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hanwen/go-fuse/v2/posixtest"
	"golang.org/x/sys/unix"

	"github.com/claudefs/claudefs/client/fusefs"
)

var cfsBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "cfs-fusefs-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	cfsBin = filepath.Join(dir, "cfs")
	if out, err := exec.Command("go", "build", "-o", cfsBin, "github.com/claudefs/claudefs/cmd/cfs").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "building cfs: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func cfs(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command(cfsBin, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("cfs %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// devCluster starts a 3-node dev cluster (real processes) and returns its
// directory and the control processes' Raft addresses.
func devCluster(t *testing.T) (string, string) {
	t.Helper()
	dir := t.TempDir()
	t.Cleanup(func() {
		if out, err := exec.Command(cfsBin, "dev", "down", "--dir", dir).CombinedOutput(); err != nil {
			t.Errorf("cfs dev down: %v\n%s", err, out)
		}
	})
	cfs(t, "dev", "up", "--dir", dir, "--nodes", "3", "--shards", "16", "--device-size", "512M", "--wait", "150s")
	for _, l := range strings.Split(cfs(t, "dev", "env", "--dir", dir), "\n") {
		if v, ok := strings.CutPrefix(l, "export CFS_CLUSTER="); ok {
			return dir, v
		}
	}
	t.Fatal("cfs dev env printed no CFS_CLUSTER")
	return "", ""
}

// dataplanePid is the pid of the first node's dataplane (cfs dev status --json).
func dataplanePid(t *testing.T, dir string) int {
	t.Helper()
	var st struct {
		Nodes []struct {
			Dataplane struct {
				Pid int `json:"pid"`
			} `json:"dataplane"`
		} `json:"nodes"`
	}
	if err := json.Unmarshal([]byte(cfs(t, "dev", "status", "--json", "--dir", dir)), &st); err != nil || len(st.Nodes) == 0 {
		t.Fatalf("cfs dev status --json: %v", err)
	}
	return st.Nodes[0].Dataplane.Pid
}

func mounted(path string) bool {
	b, _ := os.ReadFile("/proc/self/mountinfo")
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) > 4 && f[4] == path {
			return true
		}
	}
	return false
}

// mount runs `cfs mount` at a new directory; the test's end sends it
// SIGTERM and checks that it unmounts and exits cleanly.
func mount(t *testing.T, cluster string) string {
	t.Helper()
	mnt := filepath.Join(t.TempDir(), "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	var log bytes.Buffer
	cmd := exec.Command(cfsBin, "mount", "--cluster", cluster, mnt)
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("cfs mount after SIGTERM: %v\n%s", err, log.String())
			}
		case <-time.After(20 * time.Second):
			_ = cmd.Process.Kill()
			_ = syscall.Unmount(mnt, syscall.MNT_DETACH)
			t.Errorf("cfs mount did not exit within 20 s of SIGTERM\n%s", log.String())
		}
		if mounted(mnt) {
			_ = syscall.Unmount(mnt, syscall.MNT_DETACH)
			t.Errorf("%s still mounted after cfs mount exited", mnt)
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for !mounted(mnt) {
		select {
		case err := <-done:
			t.Fatalf("cfs mount exited: %v\n%s", err, log.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("not mounted within 30 s\n%s", log.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	return mnt
}

// TestMount mounts a 3-node dev cluster twice and checks the mount as
// users meet it: go-fuse's POSIX suite, fio writing random blocks of
// mixed sizes and verifying them by CRC32C, and close-to-open consistency
// between the two mounts.
func TestMount(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a dev cluster")
	}
	dir, cluster := devCluster(t)
	a := mount(t, cluster)
	b := mount(t, cluster)

	t.Run("posixtest", func(t *testing.T) {
		names := make([]string, 0, len(posixtest.All))
		for n := range posixtest.All {
			names = append(names, n)
		}
		sort.Strings(names)
		for _, n := range names {
			t.Run(n, func(t *testing.T) {
				dir := filepath.Join(a, "posix-"+n)
				if err := os.Mkdir(dir, 0o755); err != nil {
					t.Fatal(err)
				}
				posixtest.All[n](t, dir)
			})
		}
	})

	t.Run("readahead", func(t *testing.T) {
		if os.Geteuid() != 0 {
			t.Skip("cfs mount sets the kernel's readahead window through sysfs, as root only")
		}
		// The kernel's 128 KiB default would cut sequential reads into
		// 128 KiB FUSE requests; cfs mount sets the window to 1 MiB.
		if n, err := fusefs.Readahead(a); err != nil || n != 1<<20 {
			t.Fatalf("readahead window %d bytes (%v), want 1 MiB", n, err)
		}
	})

	t.Run("close-to-open", func(t *testing.T) {
		r := rand.New(rand.NewPCG(3, 4))
		want := make([]byte, 9<<20+77)
		for i := range want {
			want[i] = byte(r.Uint32())
		}
		if err := os.WriteFile(filepath.Join(a, "shared"), want, 0o644); err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(filepath.Join(b, "shared"))
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("the other mount read %d bytes (%v), want the %d written and closed", len(got), err, len(want))
		}
		// An overwrite in the middle, closed in b, is seen by the next open in a.
		f, err := os.OpenFile(filepath.Join(b, "shared"), os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.WriteAt([]byte("close-to-open"), 5<<20); err != nil {
			t.Fatal(err)
		}
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
		copy(want[5<<20:], "close-to-open")
		if got, err := os.ReadFile(filepath.Join(a, "shared")); err != nil || !bytes.Equal(got, want) {
			t.Fatalf("after the other mount's overwrite: %v, bytes equal %v", err, bytes.Equal(got, want))
		}
	})

	// A node's dataplane SIGKILLed in the middle of a write: the write goes
	// on with the other shards, every byte reads back (degraded reads
	// while it is down), and after the supervisor restarts it.
	t.Run("dataplane-killed", func(t *testing.T) {
		r := rand.New(rand.NewPCG(5, 6))
		want := make([]byte, 40<<20)
		for i := range want {
			want[i] = byte(r.Uint32())
		}
		f, err := os.Create(filepath.Join(a, "survivor"))
		if err != nil {
			t.Fatal(err)
		}
		pid := dataplanePid(t, dir)
		for off := 0; off < len(want); off += 1 << 20 {
			if off == 16<<20 {
				if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := f.WriteAt(want[off:off+1<<20], int64(off)); err != nil {
				t.Fatalf("write at %d MiB after the kill: %v", off>>20, err)
			}
		}
		if err := f.Close(); err != nil {
			t.Fatalf("close: %v", err)
		}
		for _, m := range []string{a, b} {
			if got, err := os.ReadFile(filepath.Join(m, "survivor")); err != nil || !bytes.Equal(got, want) {
				t.Fatalf("read back through %s: %v, bytes equal %v", m, err, bytes.Equal(got, want))
			}
		}
		deadline := time.Now().Add(30 * time.Second)
		for p := dataplanePid(t, dir); p == pid || p == 0; p = dataplanePid(t, dir) {
			if time.Now().After(deadline) {
				t.Fatal("the dataplane was not restarted within 30 s")
			}
			time.Sleep(200 * time.Millisecond)
		}
		if got, err := os.ReadFile(filepath.Join(b, "survivor")); err != nil || !bytes.Equal(got, want) {
			t.Fatalf("read back after the restart: %v", err)
		}
	})

	// cp -a writes each file, then sets its times (utimensat) and its mode
	// as a minimal ACL (fsetxattr system.posix_acl_access), all before
	// close: the copy must have the source's mode and times, in this mount
	// and in another after close, and store no ACL.
	t.Run("cp-a-attributes", func(t *testing.T) {
		src := t.TempDir()
		past := time.Date(2020, 1, 2, 3, 4, 5, 600_000_000, time.UTC)
		for i, mode := range []os.FileMode{0o644, 0o755, 0o600, 0o640} {
			p := filepath.Join(src, fmt.Sprintf("f%d", i))
			if err := os.WriteFile(p, bytes.Repeat([]byte{byte(i)}, 3000*(i+1)), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(p, mode); err != nil {
				t.Fatal(err)
			}
			if err := os.Chtimes(p, past, past.Add(time.Duration(i)*time.Hour)); err != nil {
				t.Fatal(err)
			}
		}
		if out, err := exec.Command("cp", "-a", src, filepath.Join(a, "cpa")).CombinedOutput(); err != nil {
			t.Fatalf("cp -a: %v\n%s", err, out)
		}
		for i := 0; i < 4; i++ {
			want, err := os.Stat(filepath.Join(src, fmt.Sprintf("f%d", i)))
			if err != nil {
				t.Fatal(err)
			}
			for _, m := range []string{a, b} {
				p := filepath.Join(m, "cpa", fmt.Sprintf("f%d", i))
				got, err := os.Stat(p)
				if err != nil {
					t.Fatal(err)
				}
				if got.Mode() != want.Mode() || !got.ModTime().Equal(want.ModTime()) || got.Size() != want.Size() {
					t.Errorf("%s: %v %v %d bytes, want %v %v %d", p, got.Mode(), got.ModTime(), got.Size(), want.Mode(), want.ModTime(), want.Size())
				}
				if n, err := unix.Listxattr(p, make([]byte, 256)); err != nil || n != 0 {
					t.Errorf("%s: %d bytes of xattr names (%v), want none (a minimal ACL is the mode)", p, n, err)
				}
			}
		}
	})

	// Attribute changes on a file being written: one that takes a
	// permission away is seen by another mount at once; a write after a
	// set mtime moves it again, as on a local file system.
	t.Run("attributes-while-writing", func(t *testing.T) {
		p := filepath.Join(a, "writing")
		f, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if _, err := f.Write([]byte("first")); err != nil {
			t.Fatal(err)
		}
		if err := f.Chmod(0o600); err != nil {
			t.Fatal(err)
		}
		if st, err := os.Stat(filepath.Join(b, "writing")); err != nil || st.Mode().Perm() != 0o600 {
			t.Fatalf("the other mount sees %v (%v) before close, want -rw------- at once", st.Mode(), err)
		}
		past := time.Date(2021, 5, 6, 7, 8, 9, 0, time.UTC)
		if err := os.Chtimes(p, past, past); err != nil {
			t.Fatal(err)
		}
		if st, err := f.Stat(); err != nil || !st.ModTime().Equal(past) {
			t.Fatalf("mtime %v (%v) after utimes, want %v", st.ModTime(), err, past)
		}
		if _, err := f.Write([]byte("second")); err != nil {
			t.Fatal(err)
		}
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
		// A name b has not looked up: b's kernel caches what it saw of
		// "writing" for a second.
		if err := os.Rename(p, p+"-closed"); err != nil {
			t.Fatal(err)
		}
		st, err := os.Stat(filepath.Join(b, "writing-closed"))
		if err != nil || time.Since(st.ModTime()) > time.Minute || st.Size() != 11 {
			t.Fatalf("after a write that followed utimes: mtime %v, %d bytes (%v); want about now, 11", st.ModTime(), st.Size(), err)
		}
	})

	// An extended ACL (a named user) is stored and read back; the mode's
	// group bits become its mask, as Linux file systems do.
	t.Run("extended-acl", func(t *testing.T) {
		p := filepath.Join(a, "acl")
		if err := os.WriteFile(p, []byte("x"), 0o640); err != nil {
			t.Fatal(err)
		}
		ent := func(tag, perm uint16, id uint32) []byte {
			e := make([]byte, 8)
			binary.LittleEndian.PutUint16(e, tag)
			binary.LittleEndian.PutUint16(e[2:], perm)
			binary.LittleEndian.PutUint32(e[4:], id)
			return e
		}
		acl := binary.LittleEndian.AppendUint32(nil, 2)
		for _, e := range [][]byte{ent(0x01, 6, 0xffffffff), ent(0x02, 7, 1234), ent(0x04, 4, 0xffffffff), ent(0x10, 5, 0xffffffff), ent(0x20, 0, 0xffffffff)} {
			acl = append(acl, e...)
		}
		if err := unix.Setxattr(p, "system.posix_acl_access", acl, 0); err != nil {
			t.Fatal(err)
		}
		got := make([]byte, 256)
		n, err := unix.Getxattr(filepath.Join(b, "acl"), "system.posix_acl_access", got)
		if err != nil || !bytes.Equal(got[:n], acl) {
			t.Fatalf("the ACL read back: %x (%v), want %x", got[:n], err, acl)
		}
		if st, err := os.Stat(filepath.Join(b, "acl")); err != nil || st.Mode().Perm() != 0o650 {
			t.Fatalf("mode %v (%v), want -rw-r-x--- (the mask as group bits)", st.Mode(), err)
		}
		if err := unix.Setxattr(p, "system.posix_acl_access", acl[:len(acl)-1], 0); err != syscall.EINVAL {
			t.Fatalf("a torn ACL: %v, want EINVAL", err)
		}
	})

	// A file this mount created answers its (absent) extended attributes
	// itself while open; one set through the mount is seen at once, here
	// and, after close, in the other mount.
	t.Run("xattrs-of-new-file", func(t *testing.T) {
		p := filepath.Join(a, "xnew")
		f, err := os.Create(p)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if _, err := f.Write([]byte("data")); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 64)
		if _, err := unix.Getxattr(p, "user.k", buf); err != unix.ENODATA {
			t.Fatalf("getxattr of a new file: %v, want ENODATA", err)
		}
		if err := unix.Removexattr(p, "user.k"); err != unix.ENODATA {
			t.Fatalf("removexattr of a new file: %v, want ENODATA", err)
		}
		if err := unix.Setxattr(p, "user.k", []byte("v1"), 0); err != nil {
			t.Fatal(err)
		}
		if n, err := unix.Getxattr(p, "user.k", buf); err != nil || string(buf[:n]) != "v1" {
			t.Fatalf("getxattr after set: %q, %v", buf[:n], err)
		}
		if n, err := unix.Listxattr(p, buf); err != nil || string(buf[:n]) != "user.k\x00" {
			t.Fatalf("listxattr after set: %q, %v", buf[:n], err)
		}
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
		if n, err := unix.Getxattr(filepath.Join(b, "xnew"), "user.k", buf); err != nil || string(buf[:n]) != "v1" {
			t.Fatalf("the other mount's getxattr: %q, %v", buf[:n], err)
		}
	})

	t.Run("fio-verify", func(t *testing.T) {
		if _, err := exec.LookPath("fio"); err != nil {
			t.Skip("fio not installed (make tools installs it)")
		}
		out, err := exec.Command("fio", "--name=verify", "--directory="+a, "--size=96M", "--rw=randwrite",
			"--bssplit=4k/50:64k/30:1m/20", "--verify=crc32c", "--do_verify=1", "--verify_state_save=0", "--ioengine=psync").CombinedOutput()
		if err != nil || !bytes.Contains(out, []byte("err= 0")) {
			t.Fatalf("fio --verify=crc32c: %v\n%s", err, out)
		}
	})
}
