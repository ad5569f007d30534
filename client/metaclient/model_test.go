package metaclient

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/claudefs/claudefs/controlplane/meta"
	"golang.org/x/sys/unix"
)

// The model check: random sequences of operations run on the metadata
// service and on a local directory (the kernel's own file system as the
// model); after every step the errno must agree and the two trees must
// hold the same names, types, modes, link counts, sizes, symlink targets,
// xattrs and hard-link structure.

// modelNames and modelDepth span the paths the operations pick from.
var modelNames = []string{"a", "b", "c"}

const modelDepth = 3

func modelPaths() []string {
	var out []string
	var walk func(prefix string, depth int)
	walk = func(prefix string, depth int) {
		if depth == modelDepth {
			return
		}
		for _, n := range modelNames {
			p := n
			if prefix != "" {
				p = prefix + "/" + n
			}
			out = append(out, p)
			walk(p, depth+1)
		}
	}
	walk("", 0)
	return out
}

// errOf reduces an error to its errno (0 for nil).
func errOf(err error) syscall.Errno {
	if err == nil {
		return 0
	}
	var e syscall.Errno
	if errors.As(err, &e) {
		return e
	}
	return syscall.Errno(0xFFFF)
}

// resolve walks path's parent on the metadata service as the kernel
// would: a missing component is ENOENT, a file ENOTDIR, and a symlink
// (every test symlink dangles) ENOENT.
func resolve(ctx context.Context, c *Client, path string) (parent meta.Ino, name string, err error) {
	parts := strings.Split(path, "/")
	cur := meta.RootIno
	if b, ok := ctx.Value(baseKey{}).(meta.Ino); ok {
		cur = b
	}
	for _, p := range parts[:len(parts)-1] {
		e, err := c.Lookup(ctx, cur, p)
		if err != nil {
			return 0, "", err
		}
		switch e.Mode & meta.ModeType {
		case meta.ModeDir:
		case meta.ModeSymlink:
			return 0, "", syscall.ENOENT
		default:
			return 0, "", syscall.ENOTDIR
		}
		cur = e.Ino
	}
	return cur, parts[len(parts)-1], nil
}

type modelOp struct {
	desc  string
	local func(root string) error
	svc   func(ctx context.Context, c *Client) error
}

func pick[T any](r *rand.Rand, s []T) T { return s[r.IntN(len(s))] }

// isSymlink reports whether path is a symlink locally (operations that
// would follow it are skipped: the service's client follows nothing).
func isSymlink(root, p string) bool {
	fi, err := os.Lstat(filepath.Join(root, p))
	return err == nil && fi.Mode()&os.ModeSymlink != 0
}

// choosePaths picks mostly existing paths (p1) and mostly paths whose
// parent exists (p2), with some of the other kind for the errors.
func choosePaths(r *rand.Rand, paths []string, root string) (p1, p2 string) {
	var existing, dirs []string
	dirs = append(dirs, "")
	filepath.Walk(root, func(p string, fi os.FileInfo, err error) error {
		if err != nil || p == root {
			return nil
		}
		rel, _ := filepath.Rel(root, p)
		existing = append(existing, rel)
		if fi.IsDir() && strings.Count(rel, "/") < modelDepth-1 {
			dirs = append(dirs, rel)
		}
		return nil
	})
	newPath := func() string {
		d := pick(r, dirs)
		if d == "" {
			return pick(r, modelNames)
		}
		return d + "/" + pick(r, modelNames)
	}
	p1, p2 = newPath(), newPath()
	if len(existing) > 0 && r.IntN(10) < 8 {
		p1 = pick(r, existing)
	}
	if len(existing) > 0 && r.IntN(10) < 3 {
		p2 = pick(r, existing)
	}
	if r.IntN(20) == 0 {
		p1 = pick(r, paths)
	}
	return p1, p2
}

func randomOp(r *rand.Rand, paths []string, root string) modelOp {
	p1, p2 := choosePaths(r, paths, root)
	lp := func(p string) string { return filepath.Join(root, p) }
	switch r.IntN(13) {
	case 0, 1:
		return modelOp{"create " + p1,
			func(string) error {
				fd, err := unix.Open(lp(p1), unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY, 0o644)
				if err == nil {
					unix.Close(fd)
				}
				return err
			},
			func(ctx context.Context, c *Client) error {
				par, name, err := resolve(ctx, c, p1)
				if err == nil {
					_, _, err = c.Create(ctx, par, name, 0o644, 0, Owner{}, true)
				}
				return err
			}}
	case 2, 3:
		return modelOp{"mkdir " + p1,
			func(string) error { return unix.Mkdir(lp(p1), 0o755) },
			func(ctx context.Context, c *Client) error {
				par, name, err := resolve(ctx, c, p1)
				if err == nil {
					_, err = c.Mkdir(ctx, par, name, 0o755, Owner{})
				}
				return err
			}}
	case 4:
		return modelOp{"unlink " + p1,
			func(string) error { return unix.Unlink(lp(p1)) },
			func(ctx context.Context, c *Client) error {
				par, name, err := resolve(ctx, c, p1)
				if err == nil {
					err = c.Unlink(ctx, par, name)
				}
				return err
			}}
	case 5:
		return modelOp{"rmdir " + p1,
			func(string) error { return unix.Rmdir(lp(p1)) },
			func(ctx context.Context, c *Client) error {
				par, name, err := resolve(ctx, c, p1)
				if err == nil {
					err = c.Rmdir(ctx, par, name)
				}
				return err
			}}
	case 6, 7, 8:
		flags := pick(r, []uint32{0, 0, RenameNoReplace, RenameExchange})
		return modelOp{fmt.Sprintf("rename %s %s flags %d", p1, p2, flags),
			func(string) error { return unix.Renameat2(unix.AT_FDCWD, lp(p1), unix.AT_FDCWD, lp(p2), uint(flags)) },
			func(ctx context.Context, c *Client) error {
				par1, n1, err := resolve(ctx, c, p1)
				if err != nil {
					return err
				}
				par2, n2, err := resolve(ctx, c, p2)
				if err != nil {
					return err
				}
				return c.Rename(ctx, par1, n1, par2, n2, flags)
			}}
	case 9:
		return modelOp{fmt.Sprintf("link %s %s", p1, p2),
			func(string) error { return unix.Linkat(unix.AT_FDCWD, lp(p1), unix.AT_FDCWD, lp(p2), 0) },
			func(ctx context.Context, c *Client) error {
				par1, n1, err := resolve(ctx, c, p1)
				if err != nil {
					return err
				}
				src, err := c.Lookup(ctx, par1, n1)
				if err != nil {
					return err
				}
				par2, n2, err := resolve(ctx, c, p2)
				if err != nil {
					return err
				}
				if _, err := c.Lookup(ctx, par2, n2); err == nil {
					return syscall.EEXIST // the kernel looks the new name up first
				}
				_, err = c.Link(ctx, src.Ino, par2, n2)
				return err
			}}
	case 10:
		return modelOp{"symlink " + p1,
			func(string) error { return unix.Symlink("/nonexistent/target", lp(p1)) },
			func(ctx context.Context, c *Client) error {
				par, name, err := resolve(ctx, c, p1)
				if err == nil {
					_, err = c.Symlink(ctx, par, name, "/nonexistent/target", Owner{})
				}
				return err
			}}
	case 11:
		if isSymlink(root, p1) {
			return modelOp{desc: "skip"}
		}
		mode := pick(r, []uint32{0o600, 0o755, 0o640})
		size := pick(r, []uint64{0, 1, 5000})
		return modelOp{fmt.Sprintf("chmod %o+truncate %d %s", mode, size, p1),
			func(string) error {
				if err := unix.Chmod(lp(p1), mode); err != nil {
					return err
				}
				return unix.Truncate(lp(p1), int64(size))
			},
			func(ctx context.Context, c *Client) error {
				par, name, err := resolve(ctx, c, p1)
				if err != nil {
					return err
				}
				e, err := c.Lookup(ctx, par, name)
				if err != nil {
					return err
				}
				if _, _, err := c.SetAttr(ctx, e.Ino, meta.SetAttr{Mask: meta.AttrMode, Mode: mode}); err != nil {
					return err
				}
				_, _, err = c.SetAttr(ctx, e.Ino, meta.SetAttr{Mask: meta.AttrSize, Size: size})
				return err
			}}
	default:
		if isSymlink(root, p1) {
			return modelOp{desc: "skip"}
		}
		val := pick(r, []string{"", "v1", "v2"})
		flags := pick(r, []int{0, unix.XATTR_CREATE, unix.XATTR_REPLACE})
		return modelOp{fmt.Sprintf("setxattr %s %q %d", p1, val, flags),
			func(string) error {
				if val == "" {
					return unix.Removexattr(lp(p1), "user.t")
				}
				return unix.Setxattr(lp(p1), "user.t", []byte(val), flags)
			},
			func(ctx context.Context, c *Client) error {
				par, name, err := resolve(ctx, c, p1)
				if err != nil {
					return err
				}
				e, err := c.Lookup(ctx, par, name)
				if err != nil {
					return err
				}
				if val == "" {
					return c.RemoveXattr(ctx, e.Ino, "user.t")
				}
				var f uint32
				switch flags {
				case unix.XATTR_CREATE:
					f = meta.FlagXattrCreate
				case unix.XATTR_REPLACE:
					f = meta.FlagXattrReplace
				}
				return c.SetXattr(ctx, e.Ino, "user.t", []byte(val), f)
			}}
	}
}

// treeNode is one file of a tree as both sides describe it.
type treeNode struct {
	mode   uint32
	nlink  uint32
	size   int64
	target string
	xattr  string
	id     uint64 // the inode, for the hard-link structure
}

func (n treeNode) String() string {
	return fmt.Sprintf("mode %o nlink %d size %d target %q xattr %q", n.mode, n.nlink, n.size, n.target, n.xattr)
}

func localTree(t *testing.T, root string) map[string]treeNode {
	t.Helper()
	out := map[string]treeNode{}
	err := filepath.Walk(root, func(p string, _ os.FileInfo, err error) error {
		if err != nil || p == root {
			return err
		}
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return err
		}
		n := treeNode{mode: st.Mode, nlink: uint32(st.Nlink), id: st.Ino}
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFREG, unix.S_IFLNK:
			n.size = st.Size
		}
		if st.Mode&unix.S_IFMT == unix.S_IFLNK {
			n.target, _ = os.Readlink(p)
		} else {
			buf := make([]byte, 64)
			if k, err := unix.Lgetxattr(p, "user.t", buf); err == nil {
				n.xattr = string(buf[:k])
			}
		}
		rel, _ := filepath.Rel(root, p)
		out[rel] = n
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

type baseKey struct{}

// withBase makes resolve start at base instead of the root.
func withBase(ctx context.Context, base meta.Ino) context.Context {
	return context.WithValue(ctx, baseKey{}, base)
}

func serviceTree(ctx context.Context, t *testing.T, c *Client, top meta.Ino) map[string]treeNode {
	t.Helper()
	out := map[string]treeNode{}
	var walk func(dir meta.Ino, prefix string)
	walk = func(dir meta.Ino, prefix string) {
		after := ""
		for {
			ents, more, err := c.ReadDir(ctx, dir, after, 2)
			if err != nil {
				t.Fatalf("readdir %q: %v", prefix, err)
			}
			for _, e := range ents {
				in := e.Attr
				if in == nil {
					got, err := c.GetAttr(ctx, e.Ino)
					if err != nil {
						t.Fatalf("getattr %s/%s: %v", prefix, e.Name, err)
					}
					in = &got
				}
				p := e.Name
				if prefix != "" {
					p = prefix + "/" + e.Name
				}
				n := treeNode{mode: in.Mode, nlink: in.Nlink, target: in.Target, id: uint64(in.Ino)}
				if !meta.IsDir(in.Mode) {
					n.size = int64(in.Size)
				}
				if v, err := c.GetXattr(ctx, e.Ino, "user.t"); err == nil {
					n.xattr = string(v)
				}
				out[p] = n
				if meta.IsDir(in.Mode) {
					walk(e.Ino, p)
				}
				after = e.Name
			}
			if !more {
				return
			}
		}
	}
	walk(top, "")
	return out
}

func compareTrees(t *testing.T, step string, local, svc map[string]treeNode) {
	t.Helper()
	var diffs []string
	ids := map[uint64]uint64{} // local inode → service inode
	for p, l := range local {
		s, ok := svc[p]
		if !ok {
			diffs = append(diffs, fmt.Sprintf("%s: only in the local tree (%v)", p, l))
			continue
		}
		lid, sid := l.id, s.id
		l.id, s.id = 0, 0
		if l != s {
			diffs = append(diffs, fmt.Sprintf("%s: local %v, service %v", p, l, s))
		}
		if prev, seen := ids[lid]; seen && prev != sid {
			diffs = append(diffs, fmt.Sprintf("%s: hard links differ (local inode %d is service %x and %x)", p, lid, prev, sid))
		}
		ids[lid] = sid
	}
	for p, s := range svc {
		if _, ok := local[p]; !ok {
			diffs = append(diffs, fmt.Sprintf("%s: only in the service (%v)", p, s))
		}
	}
	if len(diffs) > 0 {
		sort.Strings(diffs)
		t.Fatalf("after %s the trees differ:\n  %s", step, strings.Join(diffs, "\n  "))
	}
}

func TestModelAgainstLocalDirectory(t *testing.T) {
	old := unix.Umask(0)
	defer unix.Umask(old)
	h := newHosts(t, 3, 8)
	c := h.client(Options{})
	steps := 400
	if testing.Short() {
		steps = 150
	}
	paths := modelPaths()
	succeeded := map[string]int{}
	for _, seed := range modelSeeds() {
		t.Run(fmt.Sprintf("seed%d", seed), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			root := t.TempDir()
			// Each seed works in its own directory of the service.
			base, err := c.Mkdir(ctx, meta.RootIno, fmt.Sprintf("seed%d", seed), 0o755, Owner{})
			if err != nil {
				t.Fatal(err)
			}
			sub := &subtree{c: c, base: base.Ino}
			r := rand.New(rand.NewPCG(seed, seed*7919))
			var history []string
			for i := 0; i < steps; i++ {
				op := randomOp(r, paths, root)
				if op.local == nil {
					continue
				}
				lerr := errOf(op.local(root))
				serr := errOf(sub.run(ctx, op))
				history = append(history, fmt.Sprintf("%d %s: %v", i, op.desc, lerr))
				if lerr == 0 {
					succeeded[strings.Fields(op.desc)[0]]++
				}
				if lerr != serr {
					t.Fatalf("step %d %s: local %v (%d), service %v (%d)\nhistory:\n%s", i, op.desc, lerr, int(lerr), serr, int(serr), tail(history, 25))
				}
				compareTrees(t, fmt.Sprintf("step %d %s\nhistory:\n%s\n", i, op.desc, tail(history, 25)), localTree(t, root), sub.tree(ctx, t))
			}
		})
	}
	t.Logf("operations that succeeded: %v", succeeded)
	// The sequences must exercise every operation, or the check says little.
	for _, kind := range []string{"create", "mkdir", "unlink", "rmdir", "rename", "link", "symlink", "chmod", "setxattr"} {
		if succeeded[kind] < 3 {
			t.Errorf("%s succeeded %d times in all the sequences: too few to check it", kind, succeeded[kind])
		}
	}
}

func tail(s []string, n int) string {
	if len(s) > n {
		s = s[len(s)-n:]
	}
	return strings.Join(s, "\n")
}

// subtree runs a model operation with the service's root replaced by base.
type subtree struct {
	c    *Client
	base meta.Ino
}

func (s *subtree) run(ctx context.Context, op modelOp) error {
	return op.svc(withBase(ctx, s.base), s.c)
}

func (s *subtree) tree(ctx context.Context, t *testing.T) map[string]treeNode {
	return serviceTree(ctx, t, s.c, s.base)
}

// modelSeeds are the sequences run: three by default, CFS_MODEL_SEEDS=N for
// N (a longer hunt for divergences).
func modelSeeds() []uint64 {
	n := 3
	if v, err := strconv.Atoi(os.Getenv("CFS_MODEL_SEEDS")); err == nil && v > 0 {
		n = v
	}
	out := make([]uint64, n)
	for i := range out {
		out[i] = uint64(i + 1)
	}
	return out
}
