package dataplane

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/claudefs/claudefs/dataplane/sidecar"
	"github.com/claudefs/claudefs/netio"
	"github.com/claudefs/claudefs/nvme/chunkstore"
)

// cfsBin is the cfs binary built by TestMain for the process tests.
var cfsBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "cfs-dataplane-test")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	cfsBin = filepath.Join(dir, "cfs")
	out, err := exec.Command("go", "build", "-o", cfsBin, "github.com/claudefs/claudefs/cmd/cfs").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "building cfs: %v\n%s", err, out)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// proc is a running `cfs dataplane`.
type proc struct {
	cmd  *exec.Cmd
	addr string
	sock string // its control socket
	// startLog is its stderr up to the "listening on" line.
	startLog string
	stderr   *bytes.Buffer // all of the process's stderr, once it has exited
	done     chan error
}

var listenRE = regexp.MustCompile(`listening on (\S+)`)

// startDataplane starts cfs dataplane on device, with its control socket
// next to the device (so a restart finds the socket a killed one left).
func startDataplane(t *testing.T, device string) *proc {
	t.Helper()
	sock := filepath.Join(filepath.Dir(device), "ctl.sock")
	cmd := exec.Command(cfsBin, "dataplane", "--device", device, "--device-size", "64M",
		"--listen", "127.0.0.1:0", "--control-socket", sock, "--event-loops", "2")
	pr, pw := io.Pipe()
	cmd.Stderr = pw
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &proc{cmd: cmd, sock: sock, stderr: &bytes.Buffer{}, done: make(chan error, 1)}
	addrc := make(chan [2]string, 1)
	copied := make(chan struct{})
	go func() {
		defer close(copied)
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			line := sc.Text()
			p.stderr.WriteString(line + "\n")
			if m := listenRE.FindStringSubmatch(line); m != nil {
				addrc <- [2]string{m[1], p.stderr.String()}
			}
		}
		_, _ = io.Copy(io.Discard, pr)
	}()
	go func() {
		err := cmd.Wait()
		pw.Close()
		<-copied
		p.done <- err
	}()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			<-p.done
		}
	})
	select {
	case a := <-addrc:
		p.addr, p.startLog = a[0], a[1]
		return p
	case err := <-p.done:
		t.Fatalf("cfs dataplane exited before listening: %v\n%s", err, p.stderr)
	case <-time.After(15 * time.Second):
		t.Fatalf("cfs dataplane did not listen within 15s")
	}
	return nil
}

func (p *proc) wait(t *testing.T) error {
	t.Helper()
	select {
	case err := <-p.done:
		return err
	case <-time.After(15 * time.Second):
		t.Fatalf("cfs dataplane did not exit within 15s")
		return nil
	}
}

// TestProcessCrashAndDrain writes from several clients to a real `cfs
// dataplane`, SIGKILLs it mid-write, restarts it on the same device and
// checks every acknowledged write reads back (at its version or a later
// one that was in flight), then SIGTERMs it under load: it drains and
// exits 0, and what it acknowledged is durable.
func TestProcessCrashAndDrain(t *testing.T) {
	dir, err := os.MkdirTemp("", "cfs-dp") // short: the socket path must fit 107 bytes
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	device := filepath.Join(dir, "dev.dat")
	p := startDataplane(t, device)

	const writers = 4
	shardSize := func(id chunkstore.ID) int { return 1 + int(id.Lo*7919%(48<<10)) }
	// Each writer rewrites its own 16 shards with rising versions, recording
	// the last acknowledged version of each.
	load := func(addr string, base uint64, stop <-chan struct{}) ([]map[chunkstore.ID]uint64, int) {
		acks := make([]map[chunkstore.ID]uint64, writers)
		var wg sync.WaitGroup
		var mu sync.Mutex
		total := 0
		for w := 0; w < writers; w++ {
			acks[w] = map[chunkstore.ID]uint64{}
			wg.Add(1)
			go func() {
				defer wg.Done()
				cl := NewClient(addr, netio.ClientOptions{ConnsPerAddr: 1, MaxRetries: -1})
				defer cl.Close()
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
				defer cancel()
				for v := base; ; v++ {
					for i := 0; i < 16; i++ {
						select {
						case <-stop:
							return
						default:
						}
						id := chunkstore.ID{Hi: uint64(w), Lo: uint64(i)}
						if err := cl.WriteShard(ctx, id, v, 0, pattern(id, v, shardSize(id))); err != nil {
							return // the process went away (or is draining)
						}
						acks[w][id] = v
						mu.Lock()
						total++
						mu.Unlock()
					}
				}
			}()
		}
		wg.Wait()
		return acks, total
	}
	verify := func(addr string, acks []map[chunkstore.ID]uint64) {
		t.Helper()
		cl := NewClient(addr, netio.ClientOptions{})
		defer cl.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		buf := make([]byte, 64<<10)
		n := 0
		for _, m := range acks {
			for id, v := range m {
				got, gv, err := cl.ReadShard(ctx, id, 0, buf)
				switch {
				case err != nil:
					t.Errorf("acknowledged shard %v v%d: %v", id, v, err)
				case gv < v:
					t.Errorf("shard %v: version %d, older than the acknowledged %d", id, gv, v)
				case !bytes.Equal(buf[:got], pattern(id, gv, shardSize(id))):
					t.Errorf("shard %v v%d: %d bytes that are not what version %d wrote", id, gv, got, gv)
				}
				n++
			}
		}
		if n == 0 {
			t.Error("no write was acknowledged")
		}
	}

	// Crash mid-write.
	stop := make(chan struct{})
	var acks []map[chunkstore.ID]uint64
	var total int
	loaded := make(chan struct{})
	go func() {
		acks, total = load(p.addr, 1, stop)
		close(loaded)
	}()
	time.Sleep(400 * time.Millisecond)
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = p.wait(t)
	<-loaded
	close(stop)
	t.Logf("%d writes acknowledged before SIGKILL", total)

	p = startDataplane(t, device)
	verify(p.addr, acks)
	if !strings.Contains(p.startLog, "replacing the stale socket "+p.sock) {
		t.Errorf("the restart after SIGKILL did not replace the stale control socket:\n%s", p.startLog)
	}
	// Drain under load.
	stop2 := make(chan struct{})
	loaded2 := make(chan struct{})
	go func() {
		acks, total = load(p.addr, 1<<32, stop2) // above every version of the first run
		close(loaded2)
	}()
	time.Sleep(300 * time.Millisecond)
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := p.wait(t); err != nil {
		t.Errorf("after SIGTERM: %v, want exit 0\n%s", err, p.stderr)
	}
	<-loaded2
	close(stop2)
	if !strings.Contains(p.stderr.String(), "chunk store closed cleanly") {
		t.Errorf("no clean close in the log:\n%s", p.stderr)
	}
	if _, err := os.Lstat(p.sock); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("control socket after SIGTERM: %v, want it removed", err)
	}
	t.Logf("%d writes acknowledged before SIGTERM", total)

	p = startDataplane(t, device)
	verify(p.addr, acks)
	// The bench target drives it too (lays out its shards, then mixes).
	out, err := exec.Command(cfsBin, "bench", "run", "--target", "dataplane:"+p.addr, "--rw=randrw", "--bs=4k",
		"--size=1M", "--iodepth=8", "--output-format=json", "--progress=false").CombinedOutput()
	if err != nil || !strings.Contains(string(out), `"jobs"`) {
		t.Errorf("cfs bench run --target dataplane: %v\n%s", err, out)
	}
	// The control process's side: raise the epoch over the sidecar
	// channel, after which a write under the old epoch is refused (last:
	// the loads above write under epoch 0).
	sc := sidecar.NewClient(p.sock, sidecar.ClientOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if h, err := sc.Health(ctx); err != nil || !h.StoreOpen || h.LiveChunks == 0 {
		t.Fatalf("health of the restarted dataplane: %+v, %v", h, err)
	}
	if e, err := sc.SetEpoch(ctx, 1); err != nil || e != 1 {
		t.Fatalf("epoch.set 1: %d, %v", e, err)
	}
	cl := NewClient(p.addr, netio.ClientOptions{})
	err = cl.WriteShard(ctx, chunkstore.ID{Hi: 99}, 1, 0, []byte("fenced"))
	wantCode(t, "write under epoch 0 after epoch.set 1", err, CodeStaleEpoch, ErrStaleEpoch, "older than the dataplane's epoch 1")
	cl.Close()
	sc.Close()

	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := p.wait(t); err != nil {
		t.Errorf("idle SIGTERM: %v", err)
	}
	// The clean close left nothing to replay.
	if !regexp.MustCompile(`0 batches replayed`).MatchString(p.stderr.String()) {
		t.Logf("log of the last start:\n%s", p.stderr)
	}
}

func writeFile(t *testing.T, text string) string {
	p := filepath.Join(t.TempDir(), "dp.conf")
	if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestProcessUsage checks the command's refusals.
func TestProcessUsage(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"dataplane", "--listen", "127.0.0.1:0", "--control-socket", "x"}, `missing --device (or nvme.device in --config)`},
		{[]string{"dataplane", "--device", "x", "--listen", "127.0.0.1:0", "--control-socket", "x", "--queue-depth", "0"}, `bad value "0" for nvme.queue_depth: want an integer in 1..4096`},
		{[]string{"dataplane", "--config", writeFile(t, "nvme.queue_dept = 4\n")}, `:1: unknown configuration key "nvme.queue_dept" (did you mean "nvme.queue_depth"?)`},
		{[]string{"dataplane", "--device", filepath.Join(t.TempDir(), "absent"), "--listen", "127.0.0.1:0", "--control-socket", "x"}, "give --device-size"},
		{[]string{"dataplane", "--device", "x", "--device-size", "12Q", "--listen", "127.0.0.1:0", "--control-socket", "x"}, "--device-size"},
		{[]string{"dataplane", "--device", "x", "--ioengine", "spdk", "--listen", "127.0.0.1:0", "--control-socket", "x"}, "--ioengine"},
		{[]string{"dataplane", "--device", "x", "--device-size", "64M", "--listen", "127.0.0.1:0", "--control-socket", "x", "--cpu-affinity", "1023"}, "CPU 1023 not available to this process"},
	} {
		out, err := exec.Command(cfsBin, c.args...).CombinedOutput()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 2 || !strings.Contains(string(out), c.want) {
			t.Errorf("cfs %q: %v, output %q; want exit 2 mentioning %q", c.args, err, out, c.want)
		}
	}
}
