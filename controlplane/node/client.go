package node

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
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

// Client calls a node's client API over HTTPS.
type Client struct {
	HTTP  *http.Client
	creds Creds // the files tc came from, for error messages (may be empty)
}

// NewClient returns a client presenting and trusting what tc says (Creds.Client builds
// it from files), whose requests give up after timeout.
func NewClient(timeout time.Duration, tc *tls.Config) *Client {
	return &Client{HTTP: &http.Client{Timeout: timeout, Transport: &http.Transport{
		TLSClientConfig: tc, TLSHandshakeTimeout: 5 * time.Second, MaxIdleConnsPerHost: 64, IdleConnTimeout: 30 * time.Second}}}
}

// CredError is a failure of the TLS credentials (a certificate missing, refused or of
// another cluster): trying another node will not help.
type CredError struct{ Msg string }

func (e *CredError) Error() string { return e.Msg }

// explain turns a transport failure talking to addr into a message saying what to do.
func (c *Client) explain(addr string, err error) error {
	if e := c.explainTLS(addr, err); e != nil {
		return &CredError{Msg: e.Error()}
	}
	return fmt.Errorf("node at %s unreachable: %w (is its control process running? `cfs dev status` lists the addresses)", addr, err)
}

func (c *Client) explainTLS(addr string, err error) error {
	s := err.Error()
	var unknownCA x509.UnknownAuthorityError
	var badHost x509.HostnameError
	cert, ca := c.creds.Cert, c.creds.CA
	if cert == "" {
		cert = "presented"
	}
	switch {
	case strings.Contains(s, "tls: certificate required"):
		return fmt.Errorf("node at %s refused the connection: %w", addr, ErrNoCert)
	case strings.Contains(s, "tls: unknown certificate authority"), strings.Contains(s, "tls: bad certificate"):
		return fmt.Errorf("node at %s refused the client certificate %s: it is not signed by this cluster's CA (a certificate of another cluster?); use this cluster's (cfs dev env prints it; on a node: DIR/tls/)", addr, cert)
	case strings.Contains(s, "tls: expired certificate"):
		return fmt.Errorf("node at %s refused the client certificate %s: it has expired; issue a new one", addr, cert)
	case errors.As(err, &unknownCA):
		return fmt.Errorf("the certificate of the node at %s is not signed by the CA in %s: the CA is another cluster's, or the address is; set CLAUDEFS_CA/--ca to this cluster's ca.crt (cfs dev env prints it)", addr, ca)
	case errors.As(err, &badHost):
		return fmt.Errorf("the certificate of the node at %s does not name that address (%v): reach the node at the address it was made with", addr, err)
	case strings.Contains(s, "server gave HTTP response to HTTPS client"):
		return fmt.Errorf("node at %s answers plain HTTP: it runs a cfs from before the client API used TLS; upgrade and restart it", addr)
	}
	return nil
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
	req, err := http.NewRequestWithContext(ctx, method, "https://"+addr+path, body)
	if err != nil {
		return err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return c.explain(addr, err)
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
