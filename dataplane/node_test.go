package dataplane

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/claudefs/claudefs/dataplane/dpconfig"
	"github.com/claudefs/claudefs/dataplane/sidecar"
	"github.com/claudefs/claudefs/netio"
	"github.com/claudefs/claudefs/nvme/chunkstore"
)

// testNodeConfig is a small dataplane: a 32 MiB file device with two I/O
// cores, two event loops, on loopback. The socket lives in a short
// directory (a Unix socket path holds 107 bytes; t.TempDir's can be long).
func testNodeConfig(t *testing.T) dpconfig.Config {
	t.Helper()
	dir, err := os.MkdirTemp("", "cfs-sc")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	cfg := dpconfig.Default()
	cfg.Device = filepath.Join(dir, "dev")
	cfg.DeviceSize = 32 << 20
	cfg.Listen = "127.0.0.1:0"
	cfg.ControlSocket = filepath.Join(dir, "ctl.sock")
	cfg.IOThreads = 2
	cfg.EventLoops = 2
	return cfg
}

type logBuf struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *logBuf) logf(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	fmt.Fprintf(&l.b, format+"\n", args...)
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func startNode(t *testing.T, cfg dpconfig.Config) (*Node, *logBuf) {
	t.Helper()
	lb := &logBuf{}
	n, err := StartNode(cfg, lb.logf)
	if err != nil {
		t.Fatalf("StartNode: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := n.Stop(ctx); err != nil {
			t.Errorf("Stop: %v", err)
		}
	})
	return n, lb
}

func sidecarClient(t *testing.T, n *Node) *sidecar.Client {
	c := sidecar.NewClient(n.Config().ControlSocket, sidecar.ClientOptions{})
	t.Cleanup(func() { c.Close() })
	return c
}

// TestSidecarOperations drives every sidecar operation against a real
// dataplane: epochs fence writes, nvme.queue_depth changes what the cores
// admit, restart keys change nothing, and stats count the I/O done.
func TestSidecarOperations(t *testing.T) {
	n, _ := startNode(t, testNodeConfig(t))
	sc := sidecarClient(t, n)
	ctx := ctxT(t)
	cl := NewClient(n.Addr().String(), netio.ClientOptions{})
	defer cl.Close()

	h, err := sc.Health(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !h.StoreOpen || h.Device != n.Config().Device || h.Partitions != 2 || h.PID != os.Getpid() ||
		h.CapacityBytes <= 0 || h.FreeBytes <= 0 || h.FreeBytes > h.CapacityBytes || h.Uptime() <= 0 || h.LastError != "" {
		t.Fatalf("health: %+v", h)
	}

	// Epochs: raised over the channel, then a write under an older one is
	// refused, and the channel refuses to go back.
	if e, err := sc.SetEpoch(ctx, 5); err != nil || e != 5 {
		t.Fatalf("SetEpoch(5) = %d, %v", e, err)
	}
	id := chunkstore.ID{Lo: 7}
	err = cl.WriteShard(ctx, id, 1, 4, []byte("stale"))
	wantCode(t, "write under epoch 4 after epoch.set 5", err, CodeStaleEpoch, ErrStaleEpoch, "older than the dataplane's epoch 5")
	if err := cl.WriteShard(ctx, id, 1, 5, []byte("current")); err != nil {
		t.Fatalf("write under the current epoch: %v", err)
	}
	if e, err := sc.SetEpoch(ctx, 3); !errors.Is(err, sidecar.ErrStaleEpoch) || e != 0 || !strings.Contains(err.Error(), "epoch 3 is older than the dataplane's epoch 5") {
		t.Fatalf("SetEpoch(3) after 5: %d, %v; want a stale-epoch error", e, err)
	}
	if e, err := sc.SetEpoch(ctx, 5); err != nil || e != 5 || n.Server().Epoch() != 5 {
		t.Fatalf("SetEpoch(5) again: %d, %v (idempotent)", e, err)
	}

	// config.get and config.set.
	all, err := sc.ConfigGet(ctx)
	if err != nil || len(all) != len(dpconfig.Keys()) {
		t.Fatalf("config.get: %d values, %v", len(all), err)
	}
	v, err := sc.ConfigGetKey(ctx, "nvme.queue_depth")
	if err != nil || v.Value != "128" || !v.Live || v.Range != "an integer in 1..4096" {
		t.Fatalf("config.get nvme.queue_depth: %+v, %v", v, err)
	}
	_, err = sc.ConfigGetKey(ctx, "nvme.queue_dept")
	if !errors.Is(err, dpconfig.ErrUnknownKey) || !strings.Contains(err.Error(), `"nvme.queue_dept" (did you mean "nvme.queue_depth"?)`) {
		t.Fatalf("config.get of an unknown key: %v", err)
	}
	_, err = sc.ConfigSet(ctx, "nvme.queue_depth", "0")
	if !errors.Is(err, dpconfig.ErrBadValue) || !strings.Contains(err.Error(), `bad value "0" for nvme.queue_depth: want an integer in 1..4096`) {
		t.Fatalf("config.set of a bad value: %v", err)
	}
	res, err := sc.ConfigSet(ctx, "cpu.io_threads", "3")
	if err != nil || res.Applied || !res.RestartRequired || res.Value != "2" || res.Requested != "3" || n.Config().IOThreads != 2 {
		t.Fatalf("config.set of a restart key: %+v, %v; want restart_required and nothing changed", res, err)
	}
	res, err = sc.ConfigSet(ctx, "nvme.queue_depth", "1")
	if err != nil || !res.Applied || res.RestartRequired || res.Value != "1" {
		t.Fatalf("config.set nvme.queue_depth 1: %+v, %v", res, err)
	}
	if v, err := sc.ConfigGetKey(ctx, "nvme.queue_depth"); err != nil || v.Value != "1" {
		t.Fatalf("config.get after set: %+v, %v", v, err)
	}

	// With one request per core admitted, concurrent writes are refused
	// busy; every write that is admitted lands.
	var wg sync.WaitGroup
	var mu sync.Mutex
	var ok, busy int
	for w := 0; w < 32; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 8; i++ {
				sid := chunkstore.ID{Hi: uint64(w + 1), Lo: uint64(i)}
				err := cl.WriteShard(ctx, sid, 1, 5, pattern(sid, 1, 4096))
				mu.Lock()
				switch {
				case err == nil:
					ok++
				case errors.Is(err, ErrBusy):
					busy++
				default:
					t.Errorf("write %v: %v", sid, err)
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	st, err := sc.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var refused uint64
	for _, c := range st.Cores {
		if c.QueueLimit != 1 {
			t.Errorf("core %d: queue limit %d in stats, want 1", c.Partition, c.QueueLimit)
		}
		refused += c.Refused
	}
	if busy == 0 || refused != uint64(busy) || ok == 0 {
		t.Fatalf("queue depth 1: %d written, %d busy, %d refusals in stats; want some of each, refusals = busy", ok, busy, refused)
	}
	if _, err := sc.ConfigSet(ctx, "nvme.queue_depth", "128"); err != nil {
		t.Fatal(err)
	}

	// Reads, then the per-core figures add up.
	buf := make([]byte, 8192)
	for i := 0; i < 20; i++ {
		if _, _, err := cl.ReadShard(ctx, id, 0, buf); err != nil {
			t.Fatal(err)
		}
	}
	st, err = sc.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Cores) != 2 || st.Epoch != 5 || st.UptimeNs <= 0 {
		t.Fatalf("stats: %+v", st)
	}
	var reads, writes, bytesR, bytesW, readLat, writeLat uint64
	for _, c := range st.Cores {
		if c.TID <= 0 || c.CPU != -1 || c.QueueDepth != 0 || c.QueueLimit != 128 || len(c.ReadLatency) != sidecar.LatencyBuckets || len(c.WriteLatency) != sidecar.LatencyBuckets {
			t.Errorf("core %d: %+v", c.Partition, c)
		}
		if c.Reads+c.Writes == 0 {
			t.Errorf("core %d served nothing: %+v", c.Partition, c)
		}
		reads, writes, bytesR, bytesW = reads+c.Reads, writes+c.Writes, bytesR+c.BytesRead, bytesW+c.BytesWritten
		for b := range c.ReadLatency {
			readLat += c.ReadLatency[b]
			writeLat += c.WriteLatency[b]
		}
	}
	if reads != 20 || bytesR != 20*uint64(len("current")) || writes != uint64(ok)+1 || bytesW != uint64(ok)*4096+uint64(len("current")) {
		t.Errorf("stats count %d reads of %d bytes, %d writes of %d bytes; want 20 of %d, %d of %d",
			reads, bytesR, writes, bytesW, 20*len("current"), ok+1, ok*4096+len("current"))
	}
	if readLat != reads || writeLat != writes {
		t.Errorf("latency histograms count %d reads and %d writes; the counters %d and %d", readLat, writeLat, reads, writes)
	}
	if len(st.EventLoops) == 0 || st.EventLoops[0].TID <= 0 || st.EventLoops[0].CPU != -1 {
		t.Errorf("event loops: %+v", st.EventLoops)
	}
	if st.Network.InFlight != 0 {
		t.Errorf("network: %+v", st.Network)
	}
}

// TestSidecarTCPOptions sets the live network keys and checks the server's
// sockets, an open connection's and a new one's.
func TestSidecarTCPOptions(t *testing.T) {
	n, _ := startNode(t, testNodeConfig(t))
	sc := sidecarClient(t, n)
	ctx := ctxT(t)
	port := n.Addr().(*net.TCPAddr).Port
	old := NewClient(n.Addr().String(), netio.ClientOptions{ConnsPerAddr: 1})
	defer old.Close()
	if _, err := old.Stats(ctx); err != nil {
		t.Fatal(err)
	}
	if conns := serverConns(t, port); len(conns) != 1 || sockopt(t, conns[0], unix.IPPROTO_TCP, unix.TCP_NODELAY) == 0 {
		t.Fatalf("before: %d server connections, want one with TCP_NODELAY", len(conns))
	}
	for _, kv := range [][2]string{{"network.tcp_nodelay", "false"}, {"network.tcp_sndbuf", "64k"}, {"network.tcp_rcvbuf", "96k"}} {
		if res, err := sc.ConfigSet(ctx, kv[0], kv[1]); err != nil || !res.Applied {
			t.Fatalf("config.set %s %s: %+v, %v", kv[0], kv[1], res, err)
		}
	}
	// Back to the kernel's autotuning is not possible on live sockets.
	if res, err := sc.ConfigSet(ctx, "network.tcp_sndbuf", "0"); err != nil || res.Applied || !res.RestartRequired || res.Value != "64k" {
		t.Fatalf("config.set network.tcp_sndbuf 0: %+v, %v", res, err)
	}
	fresh := NewClient(n.Addr().String(), netio.ClientOptions{ConnsPerAddr: 1})
	defer fresh.Close()
	if _, err := fresh.Stats(ctx); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		conns := serverConns(t, port)
		good := 0
		for _, fd := range conns {
			// The kernel doubles what SO_SNDBUF and SO_RCVBUF are set to.
			if sockopt(t, fd, unix.IPPROTO_TCP, unix.TCP_NODELAY) == 0 &&
				sockopt(t, fd, unix.SOL_SOCKET, unix.SO_SNDBUF) == 2*64<<10 &&
				sockopt(t, fd, unix.SOL_SOCKET, unix.SO_RCVBUF) == 2*96<<10 {
				good++
			}
		}
		if len(conns) == 2 && good == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d server connections have the new options", good, len(conns))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// serverConns returns this process's accepted sockets on port.
func serverConns(t *testing.T, port int) []int {
	t.Helper()
	l := &liveSockopts{port: port}
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	var fds []int
	for _, e := range ents {
		var fd int
		if _, err := fmt.Sscan(e.Name(), &fd); err == nil && l.isConn(fd) {
			fds = append(fds, fd)
		}
	}
	return fds
}

func sockopt(t *testing.T, fd, level, opt int) int {
	t.Helper()
	v, err := unix.GetsockoptInt(fd, level, opt)
	if err != nil {
		t.Fatalf("getsockopt fd %d: %v", fd, err)
	}
	return v
}

// TestControlSocketOwnership: the socket is 0600; a second dataplane on it
// is refused, naming the owner; a stale socket is replaced; a path that is
// not a socket is refused; a clean stop removes the socket.
func TestControlSocketOwnership(t *testing.T) {
	cfg := testNodeConfig(t)
	sock := cfg.ControlSocket
	// A socket file left behind by a killed dataplane.
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false)
	ln.Close()
	if _, err := net.Dial("unix", sock); err == nil {
		t.Fatal("the stale socket answers")
	}
	lb := &logBuf{}
	n, err := StartNode(cfg, lb.logf)
	if err != nil {
		t.Fatalf("start over a stale socket: %v", err)
	}
	if !strings.Contains(lb.String(), "replacing the stale socket") {
		t.Errorf("log does not say the stale socket was replaced:\n%s", lb)
	}
	fi, err := os.Stat(sock)
	if err != nil || fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != 0o600 {
		t.Fatalf("socket %v, %v; want a socket of mode 0600", fi.Mode(), err)
	}
	if _, err := sidecar.NewClient(sock, sidecar.ClientOptions{}).Health(ctxT(t)); err != nil {
		t.Fatalf("health over the replaced socket: %v", err)
	}
	// A second dataplane (its own device) on the same socket.
	cfg2 := cfg
	cfg2.Device += "2"
	_, err = StartNode(cfg2, nil)
	if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("owned by a live process (pid %d)", os.Getpid())) {
		t.Fatalf("second dataplane on a live socket: %v", err)
	}
	if _, err := os.Stat(cfg2.Device); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the refused dataplane laid out its device: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := n.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(sock); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("socket after a clean stop: %v", err)
	}
	// A regular file where the socket should go is not removed.
	if err := os.WriteFile(sock, []byte("precious"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = StartNode(cfg, nil)
	if err == nil || !strings.Contains(err.Error(), "exists and is not a socket") {
		t.Fatalf("start with a regular file at the socket path: %v", err)
	}
	if b, _ := os.ReadFile(sock); string(b) != "precious" {
		t.Fatalf("the file at the socket path was changed: %q", b)
	}
}

// rawCall writes one frame holding msg and reads one frame back.
func rawCall(t *testing.T, c net.Conn, msg []byte) (sidecar.Response, error) {
	t.Helper()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	hdr := binary.BigEndian.AppendUint32(nil, uint32(len(msg)))
	if _, err := c.Write(append(hdr, msg...)); err != nil {
		return sidecar.Response{}, err
	}
	b, err := sidecar.ReadFrame(c, sidecar.MaxFrame, nil)
	if err != nil {
		return sidecar.Response{}, err
	}
	return sidecar.DecodeResponse(b)
}

// TestSidecarBadInput sends malformed requests over the real socket: each
// gets an error reply; a connection whose framing is lost is closed, the
// others go on; connections beyond the bound are refused busy.
func TestSidecarBadInput(t *testing.T) {
	n, _ := startNode(t, testNodeConfig(t))
	sock := n.Config().ControlSocket
	dial := func() net.Conn {
		c, err := net.Dial("unix", sock)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	c := dial()
	for _, tc := range []struct {
		msg, code, want string
	}{
		{`{"id": 1, "op": "health"`, sidecar.CodeBadRequest, "malformed request"},
		{`{"id": 2, "op": "health", "extra": 1}`, sidecar.CodeBadRequest, `unknown field "extra"`},
		{`{"id": 3, "op": "format.disk"}`, sidecar.CodeUnknownOp, `unknown operation "format.disk"`},
		{`{"id": 4, "op": "config.set", "key": "nvme.queue_depth"}`, sidecar.CodeBadRequest, "needs a key and a value"},
		{`{"id": 5, "op": "epoch.set"}`, sidecar.CodeBadRequest, "needs an epoch"},
		{`{"id": 6, "op": "epoch.set", "epoch": -1}`, sidecar.CodeBadRequest, "malformed request"},
		{`{"id": 7, "op": "stats"} {"id": 8}`, sidecar.CodeBadRequest, "data after the JSON object"},
		{`[1,2,3]`, sidecar.CodeBadRequest, "malformed request"},
		{`{"id": 9, "op": "config.set", "key": "nvme.queue_depth", "value": "` + strings.Repeat("9", 5000) + `"}`, sidecar.CodeBadRequest, "value of 5000 bytes"},
		{`{"id": 10, "op": "config.set", "key": "no.such", "value": "1"}`, sidecar.CodeUnknownKey, `unknown configuration key "no.such"`},
		{`{"id": 11, "op": "config.set", "key": "nvme.queue_depth", "value": "many"}`, sidecar.CodeBadValue, `bad value "many" for nvme.queue_depth`},
	} {
		resp, err := rawCall(t, c, []byte(tc.msg))
		if err != nil || resp.OK || resp.Error == nil || resp.Error.Code != tc.code || !strings.Contains(resp.Error.Message, tc.want) {
			t.Errorf("%.60s: %+v %v; want %s mentioning %q", tc.msg, resp.Error, err, tc.code, tc.want)
		}
	}
	// The connection still serves.
	resp, err := rawCall(t, c, []byte(`{"id": 12, "op": "health"}`))
	if err != nil || !resp.OK || resp.ID != 12 {
		t.Fatalf("health after bad requests: %+v %v", resp, err)
	}
	var h sidecar.Health
	if err := json.Unmarshal(resp.Result, &h); err != nil || !h.StoreOpen {
		t.Fatalf("health result: %s, %v", resp.Result, err)
	}
	// A frame over the limit: error reply, then the connection is closed
	// (without the server reading or allocating the announced bytes).
	big := dial()
	_ = big.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := big.Write(binary.BigEndian.AppendUint32(nil, sidecar.MaxFrame+1)); err != nil {
		t.Fatal(err)
	}
	b, err := sidecar.ReadFrame(big, sidecar.MaxFrame, nil)
	if err != nil {
		t.Fatal(err)
	}
	if r, err := sidecar.DecodeResponse(b); err != nil || r.Error == nil || r.Error.Code != sidecar.CodeBadRequest || !strings.Contains(r.Error.Message, "frame length out of range") {
		t.Fatalf("oversized frame: %+v %v", r, err)
	}
	if _, err := big.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("after an oversized frame the connection is still open: %v", err)
	}
	// Connections beyond the bound (8) are refused busy.
	var conns []net.Conn
	for i := 0; i < 7; i++ { // c is the first of the 8
		cc := dial()
		if resp, err := rawCall(t, cc, []byte(`{"id": 1, "op": "health"}`)); err != nil || !resp.OK {
			t.Fatalf("connection %d: %+v %v", i+2, resp, err)
		}
		conns = append(conns, cc)
	}
	extra := dial()
	_ = extra.SetDeadline(time.Now().Add(5 * time.Second))
	b, err = sidecar.ReadFrame(extra, sidecar.MaxFrame, nil)
	if err != nil {
		t.Fatalf("ninth connection: %v", err)
	}
	if r, err := sidecar.DecodeResponse(b); err != nil || r.Error == nil || r.Error.Code != sidecar.CodeBusy {
		t.Fatalf("ninth connection: %+v %v; want busy", r, err)
	}
	// Closing one makes room again (the server notices the close).
	conns[0].Close()
	sc := sidecarClient(t, n)
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		_, err := sc.Health(ctxT(t))
		if err == nil {
			break
		}
		// Until the server has noticed the close, a new connection is
		// refused busy: the answer, or, when the server's close beats the
		// request, a broken pipe or reset.
		refused := errors.Is(err, sidecar.ErrBusy) || errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNRESET)
		if !refused || time.Now().After(deadline) {
			t.Fatalf("health once a connection closed: %v", err)
		}
	}
}

// TestPinning starts a dataplane pinned to two CPUs (or the one there is)
// and checks each I/O core's and event loop's thread affinity mask; then
// one without cpu.affinity, which pins nothing and says so.
func TestPinning(t *testing.T) {
	allowed, err := AllowedCPUs()
	if err != nil {
		t.Fatal(err)
	}
	cpus := allowed[:min(2, len(allowed))]
	cfg := testNodeConfig(t)
	cfg.Affinity = dpconfig.Affinity{CPUs: cpus}
	n, lb := startNode(t, cfg)
	want := fmt.Sprintf("placement: cpu.affinity %s = CPUs %s:", dpconfig.FormatCPUList(cpus), dpconfig.FormatCPUList(cpus))
	if !strings.Contains(lb.String(), want) {
		t.Errorf("log lacks %q:\n%s", want, lb)
	}
	// Two connections, so both event loops serve one (gnet spreads
	// connections over its loops round robin).
	ctx := ctxT(t)
	for i := 0; i < 2; i++ {
		cl := NewClient(n.Addr().String(), netio.ClientOptions{ConnsPerAddr: 1})
		defer cl.Close()
		if _, err := cl.Stats(ctx); err != nil {
			t.Fatal(err)
		}
	}
	cores, loops := n.Threads()
	if len(cores) != 2 || len(loops) != 2 {
		t.Fatalf("%d I/O core threads and %d event loop threads, want 2 and 2", len(cores), len(loops))
	}
	check := func(what string, th Thread) {
		t.Helper()
		wantCPU := cpus[th.Index%len(cpus)]
		var set unix.CPUSet
		if err := unix.SchedGetaffinity(th.TID, &set); err != nil {
			t.Fatalf("%s %d (thread %d): %v", what, th.Index, th.TID, err)
		}
		if th.CPU != wantCPU || set.Count() != 1 || !set.IsSet(wantCPU) {
			t.Errorf("%s %d (thread %d): recorded CPU %d, mask of %d CPUs; want only CPU %d", what, th.Index, th.TID, th.CPU, set.Count(), wantCPU)
		}
	}
	for _, th := range cores {
		check("I/O core", th)
	}
	for _, th := range loops {
		check("event loop", th)
	}
	st, err := sidecarClient(t, n).Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range st.Cores {
		if c.CPU != cpus[c.Partition%len(cpus)] {
			t.Errorf("stats: core %d on CPU %d, want %d", c.Partition, c.CPU, cpus[c.Partition%len(cpus)])
		}
	}

	// Without cpu.affinity nothing is pinned.
	n2, lb2 := startNode(t, testNodeConfig(t))
	if !strings.Contains(lb2.String(), "placement: no CPU pinning (cpu.affinity false)") {
		t.Errorf("log lacks the no-pinning line:\n%s", lb2)
	}
	cores, _ = n2.Threads()
	for _, th := range cores {
		var set unix.CPUSet
		if err := unix.SchedGetaffinity(th.TID, &set); err != nil {
			t.Fatal(err)
		}
		if th.CPU != -1 || set.Count() != len(allowed) {
			t.Errorf("unpinned I/O core %d: CPU %d, mask of %d CPUs; want -1 and all %d", th.Index, th.CPU, set.Count(), len(allowed))
		}
	}
	// A CPU the process may not use is refused before anything starts.
	bad := testNodeConfig(t)
	bad.Affinity = dpconfig.Affinity{CPUs: []int{dpconfig.MaxCPU - 1}}
	if _, err := StartNode(bad, nil); err == nil || !strings.Contains(err.Error(), "CPU 1023 not available to this process") {
		t.Errorf("affinity to CPU 1023: %v", err)
	}
}

// TestThreadCPU reads the CPU time of a thread that has spun for a while
// (60 ms of its own CPU time, not of the clock: on a busy machine a thread
// may run for little of 60 ms).
func TestThreadCPU(t *testing.T) {
	tidc := make(chan int)
	done := make(chan struct{})
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); {
			var ts unix.Timespec
			if err := unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &ts); err != nil || time.Duration(ts.Nano()) >= 60*time.Millisecond {
				break
			}
		}
		tidc <- unix.Gettid()
		<-done
	}()
	tid := <-tidc
	defer close(done)
	u, s, err := threadCPU(tid)
	if err != nil {
		t.Fatal(err)
	}
	if u+s < 20*time.Millisecond || u+s > 10*time.Second {
		t.Errorf("a thread that spun 60 ms used %v user + %v system", u, s)
	}
	for _, bad := range []string{"", "1 (x) R", "1 (a) b) R 1 2 3 4 5 6 7 8 9 10 x 12", "1 (x) R 1 2 3 4 5 6 7 8 9 10 -1 12"} {
		if _, _, err := parseThreadStat([]byte(bad)); err == nil {
			t.Errorf("parseThreadStat(%q) accepted", bad)
		}
	}
	// A command name with spaces and parentheses.
	u, s, err = parseThreadStat([]byte("12 (a (b) c) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0"))
	if err != nil || u != 2500*time.Millisecond || s != 500*time.Millisecond {
		t.Errorf("parseThreadStat: %v %v %v", u, s, err)
	}
}
