package sidecar

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"
)

// ClientOptions configure a Client. Zero values take the defaults noted.
type ClientOptions struct {
	// Timeout bounds a call whose context has no deadline (default 10s).
	Timeout time.Duration
}

// Client calls a dataplane's sidecar channel. It keeps one connection,
// dialled on first use and again after a failure, and makes one call at a
// time on it (calls from several goroutines wait their turn). Every
// operation is idempotent, so a call whose connection fails is retried
// once on a new connection. Methods return an *Error for an error
// response (errors.Is matches its sentinel) and other errors for
// transport failures.
type Client struct {
	path string
	opts ClientOptions

	mu     sync.Mutex
	conn   net.Conn
	br     *bufio.Reader
	nextID uint64
	closed bool
}

// NewClient returns a client of the socket at path; it dials lazily.
func NewClient(path string, opts ClientOptions) *Client {
	if opts.Timeout <= 0 {
		opts.Timeout = 10 * time.Second
	}
	return &Client{path: path, opts: opts}
}

// Close closes the connection; later calls fail.
func (c *Client) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	return c.drop()
}

func (c *Client) drop() error {
	if c.conn == nil {
		return nil
	}
	err := c.conn.Close()
	c.conn, c.br = nil, nil
	return err
}

// ConfigGet returns every key's value, default, range and whether it is
// live, in documentation order.
func (c *Client) ConfigGet(ctx context.Context) ([]ConfigValue, error) {
	var r ConfigValues
	err := c.call(ctx, Request{Op: OpConfigGet}, &r)
	return r.Values, err
}

// ConfigGetKey returns one key's value (an unknown key matches
// dpconfig.ErrUnknownKey).
func (c *Client) ConfigGetKey(ctx context.Context, key string) (ConfigValue, error) {
	var r ConfigValues
	if err := c.call(ctx, Request{Op: OpConfigGet, Key: key}, &r); err != nil {
		return ConfigValue{}, err
	}
	if len(r.Values) != 1 || r.Values[0].Key != key {
		return ConfigValue{}, fmt.Errorf("sidecar: config.get %s answered %d values", key, len(r.Values))
	}
	return r.Values[0], nil
}

// ConfigSet sets key to value: a live key is in force when it returns
// (Applied); a restart key is only validated (RestartRequired). An
// unknown key matches dpconfig.ErrUnknownKey, a refused value
// dpconfig.ErrBadValue.
func (c *Client) ConfigSet(ctx context.Context, key, value string) (SetResult, error) {
	var r SetResult
	err := c.call(ctx, Request{Op: OpConfigSet, Key: key, Value: &value}, &r)
	return r, err
}

// SetEpoch raises the dataplane's placement epoch to epoch and returns the
// epoch in force; once it returns, no write under an older epoch can still
// land. An epoch older than the dataplane's matches ErrStaleEpoch.
func (c *Client) SetEpoch(ctx context.Context, epoch uint64) (uint64, error) {
	var r EpochResult
	err := c.call(ctx, Request{Op: OpEpochSet, Epoch: &epoch}, &r)
	return r.Epoch, err
}

// Health returns the dataplane's state.
func (c *Client) Health(ctx context.Context) (Health, error) {
	var r Health
	err := c.call(ctx, Request{Op: OpHealth}, &r)
	return r, err
}

// Stats returns the per-core, per-event-loop and network figures.
func (c *Client) Stats(ctx context.Context) (Stats, error) {
	var r Stats
	err := c.call(ctx, Request{Op: OpStats}, &r)
	return r, err
}

// ProfileCPU takes a CPU profile of the dataplane for d (MinProfile..
// MaxProfile) and returns its pprof bytes. The call waits d plus the
// client's timeout unless ctx ends first; a profile already running there
// matches ErrBusy.
func (c *Client) ProfileCPU(ctx context.Context, d time.Duration) (CPUProfile, error) {
	if d < MinProfile || d > MaxProfile {
		return CPUProfile{}, fmt.Errorf("sidecar: profile duration %v out of range %v..%v", d, MinProfile, MaxProfile)
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, d+c.opts.Timeout)
		defer cancel()
	}
	ns := int64(d)
	var raw json.RawMessage
	if err := c.call(ctx, Request{Op: OpProfileCPU, DurationNs: &ns}, &raw); err != nil {
		return CPUProfile{}, err
	}
	return DecodeCPUProfile(raw)
}

// call sends req and decodes the result into result.
func (c *Client) call(ctx context.Context, req Request, result any) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return errors.New("sidecar: client closed")
	}
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(c.opts.Timeout)
	}
	var resp Response
	var err error
	for attempt := 0; attempt < 2; attempt++ {
		reused := c.conn != nil
		resp, err = c.roundTrip(ctx, req, deadline)
		if err == nil || ctx.Err() != nil || !reused {
			break
		}
		// A kept connection may have been closed by the server (idle
		// timeout, restart): try once on a new one.
	}
	if err != nil {
		return err
	}
	if resp.Error != nil {
		return resp.Error
	}
	if err := json.Unmarshal(resp.Result, result); err != nil {
		return fmt.Errorf("sidecar: %s: malformed result: %s", req.Op, clipMsg(err.Error()))
	}
	return nil
}

func (c *Client) roundTrip(ctx context.Context, req Request, deadline time.Time) (Response, error) {
	if c.conn == nil {
		d := net.Dialer{Deadline: deadline}
		conn, err := d.DialContext(ctx, "unix", c.path)
		if err != nil {
			return Response{}, fmt.Errorf("sidecar: dialling %s: %w", c.path, err)
		}
		c.conn, c.br = conn, bufio.NewReaderSize(conn, 4096)
	}
	conn := c.conn
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Now()) })
	defer stop()
	_ = conn.SetDeadline(deadline)
	c.nextID++
	req.ID = c.nextID
	msg, err := json.Marshal(req)
	if err == nil {
		err = WriteFrame(conn, msg)
	}
	if err != nil {
		c.drop()
		return Response{}, c.transportErr(ctx, req, err)
	}
	b, err := ReadFrame(c.br, MaxFrame, nil)
	if err != nil {
		c.drop()
		return Response{}, c.transportErr(ctx, req, err)
	}
	resp, err := DecodeResponse(b)
	if err != nil {
		c.drop()
		return Response{}, err
	}
	if resp.ID != req.ID {
		// A busy refusal of the connection itself carries id 0.
		c.drop()
		if resp.Error != nil && resp.ID == 0 {
			return resp, nil
		}
		return Response{}, fmt.Errorf("sidecar: response id %d to request %d", resp.ID, req.ID)
	}
	return resp, nil
}

func (c *Client) transportErr(ctx context.Context, req Request, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("sidecar: %s: %w", req.Op, ctx.Err())
	}
	return fmt.Errorf("sidecar: %s on %s: %w", req.Op, c.path, err)
}
