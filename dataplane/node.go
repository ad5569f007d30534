package dataplane

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/claudefs/claudefs/dataplane/dpconfig"
	"github.com/claudefs/claudefs/dataplane/sidecar"
	"github.com/claudefs/claudefs/netio"
	"github.com/claudefs/claudefs/nvme/chunkstore"
	"github.com/claudefs/claudefs/nvme/ioengine"
)

// Node is a running dataplane: the chunk store, the shard server, the
// threads pinned per cpu.affinity and the sidecar channel, built from one
// dpconfig.Config. It implements sidecar.Handler. cfs dataplane is a Node
// and a signal handler.
type Node struct {
	store *chunkstore.Store
	srv   *Server
	side  *sidecar.Server
	place *placement
	socks *liveSockopts
	logf  func(string, ...any)
	start time.Time

	mu  sync.Mutex
	cfg dpconfig.Config // the configuration in force

	storeOpen atomic.Bool
	errCount  atomic.Uint64
	lastErr   atomic.Pointer[recordedErr]
	stopOnce  sync.Once
	stopErr   error
}

type recordedErr struct {
	msg string
	at  time.Time
}

// StartNode starts a dataplane with cfg: it claims the control socket
// (refusing one a live dataplane owns), opens the chunk store on the
// device (laying out a file of cfg.DeviceSize when it is absent), pins
// threads as cpu.affinity says, serves the shard protocol on cfg.Listen
// and the sidecar channel on cfg.ControlSocket. logf receives the log.
func StartNode(cfg dpconfig.Config, logf func(string, ...any)) (*Node, error) {
	if logf == nil {
		logf = func(string, ...any) {}
	}
	if err := cfg.Check(); err != nil {
		return nil, err
	}
	engine, err := ioengine.ParseKind(cfg.IOEngine)
	if err != nil {
		return nil, err
	}
	cpus, err := ResolveAffinity(cfg.Affinity)
	if err != nil {
		return nil, err
	}
	createSize := cfg.DeviceSize
	if _, err := os.Stat(cfg.Device); errors.Is(err, os.ErrNotExist) {
		if createSize == 0 {
			return nil, fmt.Errorf("device %s does not exist; give --device-size (nvme.device_size) to lay out a file there", cfg.Device)
		}
	} else {
		createSize = 0 // an existing device keeps its size
	}
	n := &Node{cfg: cfg, logf: logf, start: time.Now()}
	if n.place, err = newPlacement(cpus, logf, n.recordErr); err != nil {
		return nil, err
	}

	// Claim the control socket first: a second dataplane on the same
	// socket stops here, before it touches any device.
	n.side, err = sidecar.Listen(sidecar.ServerOptions{Path: cfg.ControlSocket, Logf: logf})
	if err != nil {
		return nil, err
	}
	fail := func(err error) (*Node, error) {
		n.side.Close()
		if n.store != nil {
			n.store.Close()
		}
		return nil, err
	}

	partitions := cfg.IOThreads
	if partitions == 0 && len(cpus) > 0 {
		partitions = max(1, len(cpus)/2)
	}
	opts := chunkstore.Options{CreateSize: createSize, Engine: engine, Partitions: partitions,
		OnPartitionThread: n.place.partitionThread, Logf: logf}
	if !cfg.WriteCombining {
		opts.CombineBytes = 1 // flush each write at once
	}
	n.store, err = chunkstore.Open(cfg.Device, opts)
	if err != nil {
		return fail(fmt.Errorf("opening the chunk store: %w", err))
	}
	n.storeOpen.Store(true)
	if cfg.IOThreads != 0 && cfg.IOThreads != n.store.Partitions() {
		logf("cpu.io_threads %d applies when a device is formatted: the store on %s has %d I/O cores", cfg.IOThreads, cfg.Device, n.store.Partitions())
	}
	if err := n.store.SetQueueLimit(cfg.QueueDepth); err != nil {
		return fail(err)
	}
	loops := cfg.EventLoops
	if loops == 0 && len(cpus) > 0 {
		loops = len(cpus)
	}
	if loops == 0 {
		loops = runtime.NumCPU()
	}
	n.srv, err = NewServer(n.store, Config{
		// An event loop is locked to its thread only to be pinned to a
		// CPU: locked, each idle turn of a gnet loop costs two thread
		// hand-offs (netio.ServerOptions.NoLockOSThread), which on a
		// small machine sharing its cores with clients was 30% of the
		// CPU a 4 KiB read costs the dataplane.
		Net: netio.ServerOptions{Addr: cfg.Listen, EventLoops: loops, NoLockOSThread: len(cpus) == 0,
			DisableNoDelay: !cfg.TCPNoDelay, SocketSendBuffer: cfg.TCPSndBuf, SocketRecvBuffer: cfg.TCPRcvBuf},
		Workers:      cfg.Workers,
		QueueDepth:   cfg.WorkerQueue,
		OnConnThread: n.place.connThread,
		OnStoreError: n.recordErr,
	})
	if err == nil {
		err = n.srv.Start()
	}
	if err != nil {
		return fail(fmt.Errorf("serving on %s: %w", cfg.Listen, err))
	}
	port := 0
	if a, ok := n.srv.Addr().(*net.TCPAddr); ok {
		port = a.Port
	}
	n.socks = newLiveSockopts(port, tcpOpts{NoDelay: cfg.TCPNoDelay, SndBuf: cfg.TCPSndBuf, RcvBuf: cfg.TCPRcvBuf})
	n.place.mu.Lock()
	n.place.kick = n.socks.newConn
	n.place.mu.Unlock()
	n.side.Serve(n)
	logf("%s", n.place.describe(loops, cfg.Affinity))
	return n, nil
}

// Addr is the shard service's listen address.
func (n *Node) Addr() net.Addr { return n.srv.Addr() }

// Server is the shard server.
func (n *Node) Server() *Server { return n.srv }

// Store is the chunk store.
func (n *Node) Store() *chunkstore.Store { return n.store }

// Config is the configuration in force (live changes included).
func (n *Node) Config() dpconfig.Config {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.cfg
}

// Threads returns the I/O cores' threads (by partition) and the event
// loops' threads seen so far, with the CPU each is pinned to.
func (n *Node) Threads() (cores, loops []Thread) { return n.place.threads() }

// Stop closes the sidecar channel (removing its socket), stops the shard
// server, draining requests in flight until ctx is done, and closes the
// store cleanly. It returns the drain's error (ctx's, when requests were
// left unanswered) or the store's.
func (n *Node) Stop(ctx context.Context) error {
	n.stopOnce.Do(func() {
		if err := n.side.Close(); err != nil {
			n.logf("closing the control socket: %v", err)
		}
		drainErr := n.srv.Stop(ctx)
		if drainErr != nil {
			n.logf("drain incomplete: %v (%d requests unanswered)", drainErr, n.srv.InFlight())
		}
		n.place.release()
		n.socks.close()
		n.storeOpen.Store(false)
		if err := n.store.Close(); err != nil {
			n.stopErr = fmt.Errorf("closing the chunk store: %w", err)
			return
		}
		n.stopErr = drainErr
	})
	return n.stopErr
}

// recordErr notes an error for health's last_error.
func (n *Node) recordErr(err error) {
	n.errCount.Add(1)
	n.lastErr.Store(&recordedErr{msg: err.Error(), at: time.Now()})
}
