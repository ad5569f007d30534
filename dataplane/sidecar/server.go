package sidecar

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Handler is what the dataplane does for each operation. Methods are
// called from connection goroutines, concurrently, and should honour ctx
// (the request's deadline); an error is answered with CodeOf(err).
type Handler interface {
	// ConfigGet returns key's value, or every key's when key is "".
	ConfigGet(ctx context.Context, key string) ([]ConfigValue, error)
	// ConfigSet applies a live key at once; for a restart key it only
	// validates value (see SetResult).
	ConfigSet(ctx context.Context, key, value string) (SetResult, error)
	// SetEpoch raises the placement epoch to epoch; an older one is an
	// error matching ErrStaleEpoch. It returns the epoch in force.
	SetEpoch(ctx context.Context, epoch uint64) (uint64, error)
	Health(ctx context.Context) (Health, error)
	Stats(ctx context.Context) (Stats, error)
	// ProfileCPU profiles the process's CPU for d (MinProfile..MaxProfile)
	// and returns the pprof bytes (at most MaxProfileBytes). One profile
	// runs at a time: another is an error matching ErrBusy.
	ProfileCPU(ctx context.Context, d time.Duration) ([]byte, error)
}

// ServerOptions configure a Server. Zero values take the defaults noted.
type ServerOptions struct {
	// Path is the socket's path (at most 107 bytes).
	Path string
	// MaxConns bounds the connections served at once (default 8); one
	// more is answered busy and closed.
	MaxConns int
	// RequestTimeout bounds each request from its first byte to its
	// response being written (default 10s).
	RequestTimeout time.Duration
	// IdleTimeout closes a connection that sends nothing for this long
	// (default 10m).
	IdleTimeout time.Duration
	// Logf receives notable events (default: dropped).
	Logf func(format string, args ...any)
}

// Server serves the sidecar protocol on a Unix socket it owns.
type Server struct {
	opts ServerOptions
	ln   *net.UnixListener
	lock *os.File
	ino  uint64 // the socket file's inode, so Close removes only ours

	conns    chan struct{} // a slot per connection served
	handlers chan struct{} // a slot per handler call running, abandoned ones included

	mu     sync.Mutex
	open   map[net.Conn]struct{}
	closed bool
	wg     sync.WaitGroup
}

// Listen claims opts.Path and listens on it; Serve then answers requests.
// It refuses (naming the owner's pid) when a live process holds the
// socket's lock file, and when the path exists and is not a socket; a
// stale socket file is replaced.
func Listen(opts ServerOptions) (*Server, error) {
	if opts.Path == "" {
		return nil, errors.New("sidecar: no socket path")
	}
	if len(opts.Path) > 107 {
		return nil, fmt.Errorf("sidecar: socket path %q is %d bytes; a Unix socket path holds at most 107", opts.Path, len(opts.Path))
	}
	if opts.MaxConns <= 0 {
		opts.MaxConns = 8
	}
	if opts.RequestTimeout <= 0 {
		opts.RequestTimeout = 10 * time.Second
	}
	if opts.IdleTimeout <= 0 {
		opts.IdleTimeout = 10 * time.Minute
	}
	if opts.Logf == nil {
		opts.Logf = func(string, ...any) {}
	}
	if err := os.MkdirAll(filepath.Dir(opts.Path), 0o700); err != nil {
		return nil, fmt.Errorf("sidecar: creating the socket's directory: %w", err)
	}
	lock, err := lockOwner(opts.Path + ".lock")
	if err != nil {
		return nil, err
	}
	s := &Server{opts: opts, lock: lock, conns: make(chan struct{}, opts.MaxConns),
		handlers: make(chan struct{}, 2*opts.MaxConns), open: map[net.Conn]struct{}{}}
	if err := s.bind(); err != nil {
		lock.Close()
		return nil, err
	}
	return s, nil
}

// lockOwner takes the exclusive lock that makes this process the socket's
// owner, and writes its pid into the lock file.
func lockOwner(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("sidecar: opening the lock file: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		owner := "another process"
		if b, rerr := io.ReadAll(io.LimitReader(f, 32)); rerr == nil {
			if pid, perr := strconv.Atoi(strings.TrimSpace(string(b))); perr == nil {
				owner = fmt.Sprintf("a live process (pid %d)", pid)
			}
		}
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("sidecar: control socket %s is owned by %s holding %s: stop that dataplane, or give this one another control socket",
				strings.TrimSuffix(path, ".lock"), owner, path)
		}
		return nil, fmt.Errorf("sidecar: locking %s: %w", path, err)
	}
	if err := f.Truncate(0); err == nil {
		_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return f, nil
}

// bind replaces a stale socket file and listens, mode 0600.
func (s *Server) bind() error {
	path := s.opts.Path
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode()&os.ModeSocket == 0 {
			return fmt.Errorf("sidecar: %s exists and is not a socket: remove it or choose another control socket path", path)
		}
		// We hold the lock, so no live dataplane serves it: it was left
		// by one that was killed.
		s.opts.Logf("sidecar: replacing the stale socket %s", path)
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("sidecar: removing the stale socket %s: %w", path, err)
		}
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return fmt.Errorf("sidecar: listening on %s: %w", path, err)
	}
	ln.SetUnlinkOnClose(false) // Close removes it only if it is still ours
	// Until this chmod the socket has the umask's mode; peers are also
	// checked by credentials on accept, so nobody else gets in meanwhile.
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		os.Remove(path)
		return fmt.Errorf("sidecar: chmod 0600 %s: %w", path, err)
	}
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err == nil {
		s.ino = st.Ino
	}
	s.ln = ln
	return nil
}

// Path is the socket's path.
func (s *Server) Path() string { return s.opts.Path }

// Serve answers requests with h until Close; it returns at once.
func (s *Server) Serve(h Handler) {
	s.wg.Add(1)
	go s.accept(h)
}

func (s *Server) accept(h Handler) {
	defer s.wg.Done()
	uid := os.Getuid()
	for {
		c, err := s.ln.AcceptUnix()
		if err != nil {
			if s.isClosed() {
				return
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) {
				s.opts.Logf("sidecar: accept: %v (retrying)", err)
				time.Sleep(50 * time.Millisecond)
				continue
			}
			s.opts.Logf("sidecar: accept: %v (no longer serving)", err)
			return
		}
		if cred, err := peerCred(c); err != nil || (int(cred.Uid) != uid && cred.Uid != 0) {
			s.opts.Logf("sidecar: refused a peer that is neither root nor uid %d (%+v, %v)", uid, cred, err)
			c.Close()
			continue
		}
		select {
		case s.conns <- struct{}{}:
		default:
			s.refuse(c, fmt.Sprintf("too many sidecar connections (at most %d): close one and retry", s.opts.MaxConns))
			continue
		}
		if !s.track(c) {
			c.Close()
			<-s.conns
			return
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer func() { <-s.conns }()
			defer s.untrack(c)
			s.serveConn(c, h)
		}()
	}
}

func peerCred(c *net.UnixConn) (*unix.Ucred, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return nil, err
	}
	var cred *unix.Ucred
	var cerr error
	if err := raw.Control(func(fd uintptr) {
		cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return nil, err
	}
	return cred, cerr
}

// refuse answers a connection it will not serve with one busy error and
// closes it.
func (s *Server) refuse(c net.Conn, msg string) {
	_ = c.SetWriteDeadline(time.Now().Add(time.Second))
	_ = writeResponse(c, Response{Error: &Error{Code: CodeBusy, Message: msg}})
	c.Close()
}

func (s *Server) track(c net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.open[c] = struct{}{}
	return true
}

func (s *Server) untrack(c net.Conn) {
	s.mu.Lock()
	delete(s.open, c)
	s.mu.Unlock()
	c.Close()
}

func (s *Server) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// serveConn answers one connection's requests in order.
func (s *Server) serveConn(c net.Conn, h Handler) {
	br := bufio.NewReaderSize(c, 4096)
	var buf []byte
	for {
		_ = c.SetReadDeadline(time.Now().Add(s.opts.IdleTimeout))
		if _, err := br.Peek(1); err != nil {
			return // closed, idle too long, or Close
		}
		deadline := time.Now().Add(s.opts.RequestTimeout)
		_ = c.SetDeadline(deadline)
		msg, err := ReadFrame(br, MaxFrame, buf)
		if err != nil {
			if errors.Is(err, errFrameSize) {
				_ = writeResponse(c, Response{Error: &Error{Code: CodeBadRequest, Message: err.Error() + "; closing the connection"}})
			}
			return
		}
		if cap(msg) <= 64<<10 {
			buf = msg // keep small buffers for the next request
		}
		req, err := DecodeRequest(msg)
		var resp Response
		if err != nil {
			resp = errorResponse(req.ID, err)
		} else {
			if req.DurationNs != nil {
				// A profile runs for its duration on top of the usual
				// bound (DecodeRequest bounded it).
				deadline = deadline.Add(time.Duration(*req.DurationNs))
				_ = c.SetDeadline(deadline)
			}
			var abandoned bool
			resp, abandoned = s.call(h, req, deadline)
			if abandoned {
				_ = writeResponse(c, resp)
				return // the handler still runs: take no more from this peer
			}
		}
		if err := writeResponse(c, resp); err != nil {
			return
		}
	}
}

// call runs one handler call under the request's deadline. abandoned is
// true when the deadline passed first (the call goes on in its goroutine,
// holding a handler slot until it returns).
func (s *Server) call(h Handler, req Request, deadline time.Time) (resp Response, abandoned bool) {
	select {
	case s.handlers <- struct{}{}:
	default:
		return errorResponse(req.ID, &Error{Code: CodeBusy, Message: "too many sidecar requests still running: retry later"}), false
	}
	ctx, cancel := context.WithDeadline(context.Background(), deadline.Add(-50*time.Millisecond))
	done := make(chan Response, 1)
	go func() {
		defer func() { <-s.handlers }()
		defer cancel()
		defer func() {
			// A bug in a handler must not take the dataplane's hot path
			// down with it: answer internal and log where it was.
			if r := recover(); r != nil {
				s.opts.Logf("sidecar: %s panicked: %v\n%s", req.Op, r, debug.Stack())
				done <- errorResponse(req.ID, &Error{Code: CodeInternal, Message: fmt.Sprintf("%s failed: internal error (%v); the dataplane logged it", req.Op, r)})
			}
		}()
		done <- dispatch(ctx, h, req)
	}()
	select {
	case resp = <-done:
		return resp, false
	case <-ctx.Done():
		// The handler cancels ctx once it has answered, so both cases can be
		// ready together and select picks at random: an answer that is
		// there wins.
		select {
		case resp = <-done:
			return resp, false
		default:
		}
		return errorResponse(req.ID, &Error{Code: CodeTimeout, Message: fmt.Sprintf("%s did not finish in time (request timeout %v)", req.Op, s.opts.RequestTimeout)}), true
	}
}

func dispatch(ctx context.Context, h Handler, req Request) Response {
	var result any
	var err error
	switch req.Op {
	case OpConfigGet:
		var vals []ConfigValue
		vals, err = h.ConfigGet(ctx, req.Key)
		result = ConfigValues{Values: vals}
	case OpConfigSet:
		result, err = h.ConfigSet(ctx, req.Key, *req.Value)
	case OpEpochSet:
		var e uint64
		e, err = h.SetEpoch(ctx, *req.Epoch)
		result = EpochResult{Epoch: e}
	case OpHealth:
		result, err = h.Health(ctx)
	case OpStats:
		result, err = h.Stats(ctx)
	case OpProfileCPU:
		d := time.Duration(*req.DurationNs)
		var b []byte
		if b, err = h.ProfileCPU(ctx, d); err == nil && len(b) > MaxProfileBytes {
			err = &Error{Code: CodeInternal, Message: fmt.Sprintf("the profile is %d bytes, over the %d-byte limit: take a shorter one", len(b), MaxProfileBytes)}
		}
		result = CPUProfile{DurationNs: int64(d), Pprof: b}
	default: // DecodeRequest lets only known operations through
		err = &Error{Code: CodeUnknownOp, Message: "unknown operation " + strconv.Quote(req.Op)}
	}
	if err != nil {
		return errorResponse(req.ID, err)
	}
	b, err := json.Marshal(result)
	if err != nil {
		return errorResponse(req.ID, fmt.Errorf("encoding the %s result: %w", req.Op, err))
	}
	return Response{ID: req.ID, OK: true, Result: b}
}

func errorResponse(id uint64, err error) Response {
	var e *Error
	if errors.As(err, &e) {
		return Response{ID: id, Error: e}
	}
	return Response{ID: id, Error: &Error{Code: CodeOf(err), Message: clipMsg(err.Error())}}
}

func writeResponse(w io.Writer, resp Response) error {
	b, err := json.Marshal(resp)
	if err == nil && len(b) > MaxFrame {
		b, err = json.Marshal(Response{ID: resp.ID, Error: &Error{Code: CodeInternal,
			Message: fmt.Sprintf("response of %d bytes is over the %d-byte frame limit", len(b), MaxFrame)}})
	}
	if err != nil {
		return err
	}
	return WriteFrame(w, b)
}

// Close stops accepting, closes every connection, waits for the connection
// goroutines, removes the socket (if it is still this server's) and
// releases the lock. Handler calls past their deadline may still be
// running when it returns.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	for c := range s.open {
		c.Close()
	}
	s.mu.Unlock()
	err := s.ln.Close()
	s.wg.Wait()
	var st unix.Stat_t
	if unix.Stat(s.opts.Path, &st) == nil && st.Ino == s.ino {
		if rerr := os.Remove(s.opts.Path); rerr != nil && err == nil {
			err = rerr
		}
	}
	s.lock.Close() // releases the flock
	return err
}
