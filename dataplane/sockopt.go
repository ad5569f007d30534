package dataplane

import (
	"os"
	"strconv"
	"sync"

	"golang.org/x/sys/unix"
)

// tcpOpts are the TCP options of the shard connections: TCP_NODELAY, and
// SO_SNDBUF / SO_RCVBUF in bytes (0: not set, the kernel autotunes).
type tcpOpts struct {
	NoDelay        bool
	SndBuf, RcvBuf int
}

// liveSockopts applies TCP options changed after netio started (which set
// the start values on every connection it accepts) to the server's
// connections: at once to every open one, and to each new one when it
// first sends a request. netio exposes no connection handles, so the
// connections are found as this process's sockets whose local port is the
// listen port and that have a peer (the listener has none).
type liveSockopts struct {
	port  int
	start tcpOpts

	mu  sync.Mutex
	cur tcpOpts

	kick chan struct{}
	stop chan struct{}
	done chan struct{}
}

func newLiveSockopts(port int, start tcpOpts) *liveSockopts {
	l := &liveSockopts{port: port, start: start, cur: start,
		kick: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
	go l.run()
	return l
}

// set makes o the options in force and applies them to every open
// connection; it returns how many connections it updated.
func (l *liveSockopts) set(o tcpOpts) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.cur = o
	return l.apply()
}

// newConn is called when a connection is first seen: it asks the
// background goroutine to bring new connections up to date.
func (l *liveSockopts) newConn() {
	select {
	case l.kick <- struct{}{}:
	default:
	}
}

func (l *liveSockopts) run() {
	defer close(l.done)
	for {
		select {
		case <-l.stop:
			return
		case <-l.kick:
			l.mu.Lock()
			if l.cur != l.start { // otherwise netio already set them
				_, _ = l.apply()
			}
			l.mu.Unlock()
		}
	}
}

func (l *liveSockopts) close() {
	close(l.stop)
	<-l.done
}

// apply sets l.cur on every connection of the listen port; l.mu is held.
func (l *liveSockopts) apply() (int, error) {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return 0, err
	}
	n := 0
	var firstErr error
	for _, e := range ents {
		fd, err := strconv.Atoi(e.Name())
		if err != nil || !l.isConn(fd) {
			continue
		}
		if err := setTCPOpts(fd, l.cur); err != nil {
			if firstErr == nil && err != unix.EBADF {
				firstErr = err
			}
			continue
		}
		n++
	}
	return n, firstErr
}

// isConn reports whether fd is an accepted connection of the listen port.
// (A descriptor closed and reused since ReadDir fails these checks, or is
// another such connection.)
func (l *liveSockopts) isConn(fd int) bool {
	sa, err := unix.Getsockname(fd)
	if err != nil {
		return false
	}
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		if a.Port != l.port {
			return false
		}
	case *unix.SockaddrInet6:
		if a.Port != l.port {
			return false
		}
	default:
		return false
	}
	_, err = unix.Getpeername(fd)
	return err == nil
}

func setTCPOpts(fd int, o tcpOpts) error {
	nd := 0
	if o.NoDelay {
		nd = 1
	}
	if err := unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, nd); err != nil {
		return err
	}
	if o.SndBuf > 0 {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF, o.SndBuf); err != nil {
			return err
		}
	}
	if o.RcvBuf > 0 {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, o.RcvBuf); err != nil {
			return err
		}
	}
	return nil
}
