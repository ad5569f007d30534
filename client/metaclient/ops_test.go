package metaclient

import (
	"context"
	"errors"
	"fmt"
	"syscall"
	"testing"
	"time"

	"github.com/claudefs/claudefs/controlplane/meta"
)

// ok returns a checker of (value, error) results that fails t on an error.
func ok[T any](t *testing.T) func(T, error) T {
	return func(v T, err error) T {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
}

func noErr(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func wantErr(t *testing.T, what string, err, want error) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Fatalf("%s: got %v, want %v", what, err, want)
	}
}

// TestBasicOps runs each operation once across shards and checks results
// and errnos.
func TestBasicOps(t *testing.T) {
	h := newHosts(t, 3, 8)
	c := h.client(Options{})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	mi, me := ok[meta.Inode](t), ok[meta.Entry](t)
	root := mi(c.GetAttr(ctx, meta.RootIno))
	if !meta.IsDir(root.Mode) || root.Nlink != 2 {
		t.Fatalf("root: %+v", root)
	}
	o := Owner{Uid: 1000, Gid: 1000}
	f, existed, err := c.Create(ctx, meta.RootIno, "f", 0o644, 0, o, true)
	if err != nil || existed || f.Nlink != 1 || f.Uid != 1000 || f.Mode != meta.ModeRegular|0o644 {
		t.Fatalf("create: %+v %v %v", f, existed, err)
	}
	_, _, err = c.Create(ctx, meta.RootIno, "f", 0o644, 0, o, true)
	wantErr(t, "create O_EXCL over f", err, syscall.EEXIST)
	if g, existed, err := c.Create(ctx, meta.RootIno, "f", 0o644, 0, o, false); err != nil || !existed || g.Ino != f.Ino {
		t.Fatalf("create without O_EXCL: %+v %v %v", g, existed, err)
	}
	// Directories spread over shards: make enough that some cross.
	shardsSeen := map[uint32]bool{}
	var dirs []meta.Inode
	for i := 0; i < 12; i++ {
		d := mi(c.Mkdir(ctx, meta.RootIno, fmt.Sprintf("d%d", i), 0o755, o))
		shardsSeen[d.Ino.Shard()] = true
		dirs = append(dirs, d)
		if d.Parent != meta.RootIno || d.Nlink != 2 {
			t.Fatalf("mkdir: %+v", d)
		}
	}
	if len(shardsSeen) < 3 {
		t.Fatalf("12 directories landed on %d shards", len(shardsSeen))
	}
	root = mi(c.GetAttr(ctx, meta.RootIno))
	if root.Nlink != 2+12 {
		t.Fatalf("root nlink %d, want 14", root.Nlink)
	}
	_, err = c.Mkdir(ctx, meta.RootIno, "d0", 0o755, o)
	wantErr(t, "mkdir over d0", err, syscall.EEXIST)
	_, err = c.Mkdir(ctx, f.Ino, "x", 0o755, o)
	wantErr(t, "mkdir in a file", err, syscall.ENOTDIR)

	// A file in a directory on another shard, then hard links across shards.
	var far meta.Inode
	for _, d := range dirs {
		if d.Ino.Shard() != meta.RootIno.Shard() {
			far = d
			break
		}
	}
	g, _, err := c.Create(ctx, far.Ino, "g", 0o600, 0, o, true)
	if err != nil || g.Ino.Shard() != far.Ino.Shard() {
		t.Fatalf("create in %v: %+v %v", far.Ino, g, err)
	}
	l := mi(c.Link(ctx, g.Ino, meta.RootIno, "g-link"))
	if l.Nlink != 2 {
		t.Fatalf("link: nlink %d", l.Nlink)
	}
	_, err = c.Link(ctx, far.Ino, meta.RootIno, "dirlink")
	wantErr(t, "link a directory", err, syscall.EPERM)
	wantErr(t, "unlink a directory", c.Unlink(ctx, meta.RootIno, "d0"), syscall.EISDIR)
	noErr(t, c.Unlink(ctx, far.Ino, "g"))
	if in := mi(c.GetAttr(ctx, g.Ino)); in.Nlink != 1 {
		t.Fatalf("after unlink of one link: nlink %d", in.Nlink)
	}
	noErr(t, c.Unlink(ctx, meta.RootIno, "g-link")) // cross-shard: the inode is far's
	_, err = c.GetAttr(ctx, g.Ino)
	wantErr(t, "getattr of an unlinked inode", err, syscall.ENOENT)

	// rmdir: not empty, then empty (cross-shard).
	noErr(t, func() error { _, _, err := c.Create(ctx, far.Ino, "h", 0o600, 0, o, true); return err }())
	name := ""
	ents, _ := must2(t)(c.ReadDir(ctx, meta.RootIno, "", 100))
	for _, e := range ents {
		if e.Ino == far.Ino {
			name = e.Name
		}
	}
	wantErr(t, "rmdir non-empty", c.Rmdir(ctx, meta.RootIno, name), syscall.ENOTEMPTY)
	noErr(t, c.Unlink(ctx, far.Ino, "h"))
	noErr(t, c.Rmdir(ctx, meta.RootIno, name))
	wantErr(t, "rmdir again", c.Rmdir(ctx, meta.RootIno, name), syscall.ENOENT)
	wantErr(t, "rmdir a file", c.Rmdir(ctx, meta.RootIno, "f"), syscall.ENOTDIR)

	// Renames: a file over a file, a directory into another (loop check).
	noErr(t, func() error { _, _, err := c.Create(ctx, meta.RootIno, "f2", 0o644, 0, o, true); return err }())
	noErr(t, c.Rename(ctx, meta.RootIno, "f2", meta.RootIno, "f", 0))
	if e := me(c.Lookup(ctx, meta.RootIno, "f")); e.Ino == f.Ino {
		t.Fatal("rename over f kept the old f")
	}
	_, err = c.GetAttr(ctx, f.Ino)
	wantErr(t, "the replaced file", err, syscall.ENOENT)
	a, b := dirs[1], dirs[2]
	noErr(t, c.Rename(ctx, meta.RootIno, "d1", b.Ino, "a", 0))
	if in := mi(c.GetAttr(ctx, a.Ino)); in.Parent != b.Ino {
		t.Fatalf("moved dir's parent %v, want %v", in.Parent, b.Ino)
	}
	if in := mi(c.GetAttr(ctx, b.Ino)); in.Nlink != 3 {
		t.Fatalf("new parent's nlink %d, want 3", in.Nlink)
	}
	wantErr(t, "rename a dir into itself", c.Rename(ctx, meta.RootIno, "d2", a.Ino, "loop", 0), syscall.EINVAL)
	wantErr(t, "noreplace", c.Rename(ctx, meta.RootIno, "d3", meta.RootIno, "d4", RenameNoReplace), syscall.EEXIST)
	noErr(t, c.Rename(ctx, meta.RootIno, "d3", meta.RootIno, "f", RenameExchange))
	if e := me(c.Lookup(ctx, meta.RootIno, "f")); !meta.IsDir(e.Mode) {
		t.Fatal("exchange left f a file")
	}

	// Symlinks, xattrs, setattr.
	s := mi(c.Symlink(ctx, meta.RootIno, "s", "/some/where", o))
	if tgt := ok[string](t)(c.Readlink(ctx, s.Ino)); tgt != "/some/where" {
		t.Fatalf("readlink %q", tgt)
	}
	x := me(c.Lookup(ctx, meta.RootIno, "d3")).Ino // the file, after the exchange
	wantErr(t, "getxattr absent", func() error { _, err := c.GetXattr(ctx, x, "user.a"); return err }(), syscall.ENODATA)
	noErr(t, c.SetXattr(ctx, x, "user.a", []byte("1"), meta.FlagXattrCreate))
	wantErr(t, "setxattr create twice", c.SetXattr(ctx, x, "user.a", []byte("2"), meta.FlagXattrCreate), syscall.EEXIST)
	if v := ok[[]byte](t)(c.GetXattr(ctx, x, "user.a")); string(v) != "1" {
		t.Fatalf("getxattr %q", v)
	}
	if n := ok[[]string](t)(c.ListXattr(ctx, x)); len(n) != 1 || n[0] != "user.a" {
		t.Fatalf("listxattr %q", n)
	}
	in, _, err := c.SetAttr(ctx, x, meta.SetAttr{Mask: meta.AttrMode | meta.AttrSize, Mode: 0o600, Size: 12345})
	if err != nil || in.Mode != meta.ModeRegular|0o600 || in.Size != 12345 {
		t.Fatalf("setattr: %+v %v", in, err)
	}
	st := ok[FSStat](t)(c.StatFS(ctx))
	if st.Inodes == 0 || st.InodeLimit != meta.DefaultInodeLimit {
		t.Fatalf("statfs %+v", st)
	}
}

func must2(t *testing.T) func([]meta.Entry, bool, error) ([]meta.Entry, bool) {
	return func(e []meta.Entry, more bool, err error) ([]meta.Entry, bool) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return e, more
	}
}
