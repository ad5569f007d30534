package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	_ "net/http/pprof" // --pprof
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/spf13/cobra"

	"github.com/claudefs/claudefs/client/data"
	"github.com/claudefs/claudefs/client/fusefs"
	"github.com/claudefs/claudefs/client/metaclient"
)

const mountLong = `cfs mount serves a ClaudeFS cluster's file system at MOUNTPOINT over FUSE
and stays in the foreground until the file system is unmounted (cfs umount
MOUNTPOINT, fusermount3 -u MOUNTPOINT) or cfs mount gets SIGTERM or SIGINT,
which flush every open file and unmount cleanly.

Metadata goes to the metadata shards; file data is cut into EC stripes
(4+2, 1 MiB units by default) written straight to the dataplanes. Writes are
buffered up to whole stripes and flushed on fsync and close; another mount
sees a file's data once it was closed here and opened there (close-to-open).

--cluster takes any control process's Raft address (a comma-separated list
is tried in order; ` + "`cfs dev status --json`" + ` lists them), or $CFS_CLUSTER.
Permissions are checked by the kernel (default_permissions) as for a local
file system; -o allow_other lets users other than the one mounting in.`

const mountExample = `  # mount a dev cluster at ./mnt (make demo does this)
  cfs dev up --nodes 3 --dir /tmp/cfs-dev
  eval "$(cfs dev env --dir /tmp/cfs-dev)"   # sets CFS_CLUSTER
  mkdir -p mnt && cfs mount ./mnt &

  # let other users in
  cfs mount --cluster 127.0.0.1:7000 -o allow_other /mnt/cfs

  # unmount (flushes and waits for the mount process to exit)
  cfs umount ./mnt`

func newMountCmd(stderr io.Writer) *cobra.Command {
	var cluster, pprofAddr string
	var opts []string
	cmd := &cobra.Command{
		Use:     "mount [--cluster ADDR] MOUNTPOINT",
		Short:   "Mount a ClaudeFS file system over FUSE",
		Long:    mountLong,
		Example: mountExample,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if cluster == "" {
				cluster = os.Getenv("CFS_CLUSTER")
			}
			if cluster == "" {
				return errors.New("no cluster: give --cluster ADDR (a control process's Raft address; `cfs dev status --json` lists them) or set $CFS_CLUSTER")
			}
			mo := fuse.MountOptions{
				FsName: "claudefs", Name: "claudefs", MaxWrite: 1 << 20, MaxReadAhead: 1 << 20,
				Options: []string{"default_permissions"}, MaxBackground: 64, DirectMount: true, EnableLocks: true,
				// ASYNC_DIO: the kernel sends an application's concurrent
				// O_DIRECT reads and writes (libaio, io_uring, several
				// threads) to us concurrently instead of one at a time; the
				// data path serves them in parallel. go-fuse does not ask for
				// it by default.
				ExtraCapabilities: fuse.CAP_ASYNC_DIO,
			}
			for _, o := range opts {
				for _, one := range strings.Split(o, ",") {
					switch one {
					case "allow_other":
						mo.AllowOther = true
					case "default_permissions", "":
					case "ro":
						mo.Options = append(mo.Options, "ro")
					default:
						return fmt.Errorf("-o %s: not a mount option cfs knows (allow_other, default_permissions, ro)", one)
					}
				}
			}
			if pprofAddr != "" {
				go func() { fmt.Fprintln(stderr, "cfs mount: pprof:", http.ListenAndServe(pprofAddr, nil)) }()
			}
			err := runMount(strings.Split(cluster, ","), args[0], mo, stderr)
			if err != nil {
				return &runtimeError{err}
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&cluster, "cluster", "", "control process Raft address(es), comma-separated (default $CFS_CLUSTER)")
	cmd.Flags().StringArrayVarP(&opts, "options", "o", nil, "mount options: allow_other, default_permissions (always on), ro")
	cmd.Flags().StringVar(&pprofAddr, "pprof", "", "serve Go's /debug/pprof on this address (e.g. 127.0.0.1:6060), for profiling the client")
	return cmd
}

func runMount(addrs []string, mnt string, mo fuse.MountOptions, stderr io.Writer) error {
	st, err := os.Stat(mnt)
	if err != nil {
		return fmt.Errorf("mount point: %w (create the directory first)", err)
	}
	if !st.IsDir() {
		return fmt.Errorf("mount point %s is not a directory", mnt)
	}
	logf := func(format string, args ...any) { fmt.Fprintf(stderr, "cfs mount: "+format+"\n", args...) }
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	mc, err := metaclient.Dial(ctx, addrs, metaclient.Options{})
	cancel()
	if err != nil {
		return err
	}
	defer mc.Close()
	dc, err := data.New(mc, data.TopologyFromMeta(mc), data.Options{Logf: logf})
	if err != nil {
		return err
	}
	defer dc.Close()
	tctx, tcancel := context.WithTimeout(context.Background(), 10*time.Second)
	_, _, err = dc.Capacity(tctx)
	tcancel()
	if err != nil {
		return fmt.Errorf("the dataplanes are not reachable: %w", err)
	}
	cfs := fusefs.New(mc, dc, fusefs.Options{Logf: logf})
	mo.FsName = "claudefs:" + addrs[0]
	srv, err := fs.Mount(mnt, cfs.Root(), cfs.FSOptions(mo))
	if err != nil {
		return fmt.Errorf("mount %s: %w", mnt, err)
	}
	if err := fusefs.SetReadahead(mnt, mo.MaxReadAhead); err != nil {
		logf("%v (sequential reads go in 128 KiB requests)", err)
	}
	abs, _ := filepath.Abs(mnt)
	fmt.Fprintf(stderr, "cfs mount: %s mounted at %s (cfs umount %s to unmount)\n", addrs[0], abs, mnt)
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(sig)
	go func() {
		s, ok := <-sig
		if !ok {
			return
		}
		fmt.Fprintf(stderr, "cfs mount: %v: unmounting %s\n", s, abs)
		for i := 0; i < 50; i++ {
			if err := srv.Unmount(); err == nil {
				return
			} else if i == 0 {
				fmt.Fprintf(stderr, "cfs mount: unmount: %v (busy? retrying for 10 s)\n", err)
			}
			time.Sleep(200 * time.Millisecond)
		}
		fmt.Fprintf(stderr, "cfs mount: %s is still busy; lazily detaching it\n", abs)
		_ = syscall.Unmount(abs, syscall.MNT_DETACH)
	}()
	srv.Wait()
	fmt.Fprintf(stderr, "cfs mount: %s unmounted\n", abs)
	return nil
}

const umountLong = `cfs umount unmounts a ClaudeFS mount (made by cfs mount) and waits until
the mount process has flushed and exited. A mount that does not answer
within --timeout is reported as stuck, with what to do, instead of hanging.`

func newUmountCmd(stderr io.Writer) *cobra.Command {
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:     "umount MOUNTPOINT",
		Short:   "Unmount a ClaudeFS FUSE mount",
		Long:    umountLong,
		Example: "  cfs umount ./mnt",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := umount(args[0], timeout); err != nil {
				return &runtimeError{err}
			}
			fmt.Fprintf(stderr, "cfs umount: %s unmounted\n", args[0])
			return nil
		},
	}
	cmd.Flags().DurationVar(&timeout, "timeout", 15*time.Second, "how long to wait for the mount to answer")
	return cmd
}

func umount(mnt string, timeout time.Duration) error {
	abs, err := filepath.Abs(mnt)
	if err != nil {
		return err
	}
	if !isFuseMount(abs) {
		return fmt.Errorf("%s is not a FUSE mount (nothing to unmount)", abs)
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, "fusermount3", "-u", abs).CombinedOutput()
	if ctx.Err() != nil {
		return fmt.Errorf("%s did not unmount within %v: the mount is stuck (its process hangs or a cluster is unreachable); `umount -l %s` detaches it, then kill the cfs mount process", abs, timeout, abs)
	}
	if err != nil {
		if uerr := syscall.Unmount(abs, 0); uerr != nil {
			return fmt.Errorf("fusermount3 -u %s: %v: %s (busy? close the files open there, or `umount -l %s`)", abs, err, strings.TrimSpace(string(out)), abs)
		}
	}
	for isFuseMount(abs) {
		if ctx.Err() != nil {
			return fmt.Errorf("%s is still mounted after %v", abs, timeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return nil
}

// isFuseMount reports whether path is a FUSE mount point (/proc/self/mountinfo).
func isFuseMount(path string) bool {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 10 || f[4] != path {
			continue
		}
		for i, x := range f {
			if x == "-" && i+1 < len(f) && strings.HasPrefix(f[i+1], "fuse") {
				return true
			}
		}
	}
	return false
}
