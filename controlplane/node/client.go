package node

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"
)

// MaxResponseBytes bounds any client API answer read by Client.
const MaxResponseBytes = 16 << 20

// APIError is a non-2xx answer of the client API.
type APIError struct {
	Addr   string // the address asked
	Status int    // HTTP status
	ErrorResponse
}

func (e *APIError) Error() string {
	who := e.Node
	if who == "" {
		who = e.Addr
	}
	msg := fmt.Sprintf("%s: %s", who, e.ErrorResponse.Error)
	if e.Hint != "" {
		msg += " (" + e.Hint + ")"
	}
	return msg
}

// Client calls a node's client API.
type Client struct {
	HTTP *http.Client
}

// NewClient returns a client whose requests give up after timeout.
func NewClient(timeout time.Duration) *Client {
	return &Client{HTTP: &http.Client{Timeout: timeout, Transport: &http.Transport{MaxIdleConnsPerHost: 64, IdleConnTimeout: 30 * time.Second}}}
}

// Do sends in (JSON, or no body when nil) to addr's path and decodes the answer into out.
// Transport failures are reported as the node being unreachable, naming the address.
func (c *Client) Do(ctx context.Context, addr, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://"+addr+path, body)
	if err != nil {
		return err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return fmt.Errorf("node at %s unreachable: %w (is its control process running? `cfs dev status` lists the addresses)", addr, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, MaxResponseBytes+1))
	if err != nil {
		return fmt.Errorf("reading the answer of %s: %w", addr, err)
	}
	if len(b) > MaxResponseBytes {
		return fmt.Errorf("the answer of %s is over %d bytes", addr, MaxResponseBytes)
	}
	if resp.StatusCode/100 != 2 {
		e := &APIError{Addr: addr, Status: resp.StatusCode}
		if json.Unmarshal(b, &e.ErrorResponse) != nil || e.ErrorResponse.Error == "" {
			e.ErrorResponse.Error = fmt.Sprintf("HTTP %d: %s", resp.StatusCode, bytes.TrimSpace(b))
		}
		return e
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("bad answer from %s: %w", addr, err)
	}
	return nil
}

// Status asks addr for its view of the cluster; withGroups adds every group's state.
func (c *Client) Status(ctx context.Context, addr string, withGroups bool) (*Status, error) {
	var s Status
	path := "/v1/status"
	if withGroups {
		path += "?groups=1"
	}
	return &s, c.Do(ctx, addr, http.MethodGet, path, nil, &s)
}

// Token asks the cluster for a join token living ttl ("" for the default hour).
func (c *Client) Token(ctx context.Context, addr, nodeType, ttl string) (*TokenResponse, error) {
	var t TokenResponse
	return &t, c.Do(ctx, addr, http.MethodPost, "/v1/cluster-token", &TokenRequest{NodeType: nodeType, TTL: ttl}, &t)
}

// Join admits a new node with a token.
func (c *Client) Join(ctx context.Context, addr string, req *JoinRequest) (*JoinResponse, error) {
	var j JoinResponse
	return &j, c.Do(ctx, addr, http.MethodPost, "/v1/join", req, &j)
}

// KV runs one key-value operation on group through addr.
func (c *Client) KV(ctx context.Context, addr string, group uint32, req *KVRequest) (*KVResponse, error) {
	var r KVResponse
	return &r, c.Do(ctx, addr, http.MethodPost, "/v1/kv/"+strconv.FormatUint(uint64(group), 10), req, &r)
}

// IsCode reports whether err is an APIError with that code.
func IsCode(err error, code string) bool {
	var e *APIError
	return errors.As(err, &e) && e.Code == code
}
