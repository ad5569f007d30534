package node

import (
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/claudefs/claudefs/controlplane/pki"
)

// The client API is HTTPS (TLS 1.3) with certificates of the cluster's own CA
// (controlplane/pki), kept in DIR/tls/ of every node:
//
//	ca.crt     the cluster CA's certificate (0644)
//	ca.key     the CA's key (0600): every node holds it so that whichever node leads the
//	           cluster group can sign a joiner's certificate; a node certificate grants
//	           full admin access anyway, so a node is as trusted as the CA
//	node.crt   this node's certificate (SANs: its addresses, 127.0.0.1, localhost), then
//	           the CA's; used as server certificate and as client certificate when the
//	           node calls another (forwarding, gathering reports)
//	node.key   its key (0600)
//	admin.pem  bootstrap only: an operator's client certificate and key (0600)
//
// Every connection must present a certificate the cluster CA signed
// (tls.RequireAndVerifyClientCert), except one kind: a joiner, which holds no certificate
// yet, connects with the TLS server name JoinServerName. Such connections are served
// only POST /v1/join, which the join token authenticates; the joiner checks the server
// against the CA pin the token carries (see JoinToken) and receives its certificate in
// the answer.

// JoinServerName is the TLS server name of a joiner's connection (no client certificate).
const JoinServerName = "join.claudefs.invalid"

// TLSDir is the directory of a node's certificates.
func TLSDir(dir string) string { return filepath.Join(dir, "tls") }

// Files inside TLSDir.
func CAFile(dir string) string    { return filepath.Join(TLSDir(dir), "ca.crt") }
func CAKeyFile(dir string) string { return filepath.Join(TLSDir(dir), "ca.key") }
func CertFile(dir string) string  { return filepath.Join(TLSDir(dir), "node.crt") }
func KeyFile(dir string) string   { return filepath.Join(TLSDir(dir), "node.key") }
func AdminFile(dir string) string { return filepath.Join(TLSDir(dir), "admin.pem") }

// hostsOf lists the hosts of a node's addresses, for its certificate's SANs.
func hostsOf(addrs ...string) []string {
	var out []string
	for _, a := range addrs {
		if h, _, err := net.SplitHostPort(a); err == nil && h != "" {
			out = append(out, h)
		}
	}
	return out
}

// InitClusterTLS makes a new cluster CA in dir (the first node's directory), the node's
// certificate for c's addresses and an operator's client certificate (admin.pem).
func InitClusterTLS(dir string, c *Config) error {
	ca, err := pki.NewCA(c.ClusterName)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(TLSDir(dir), 0o700); err != nil {
		return err
	}
	caKey, err := pki.KeyPEM(ca.Key)
	if err != nil {
		return err
	}
	if err := pki.WriteFile(CAKeyFile(dir), caKey, 0o600); err != nil {
		return err
	}
	if err := pki.WriteFile(CAFile(dir), pki.CertPEM(ca.Cert), 0o644); err != nil {
		return err
	}
	key, err := pki.NewKey()
	if err != nil {
		return err
	}
	cert, err := ca.Issue(&key.PublicKey, c.ID, pki.Node, hostsOf(c.ClientAddr, c.RaftAddr, c.GossipAddr, c.DataplaneAddr))
	if err != nil {
		return err
	}
	if err := writeKeyPair(CertFile(dir), KeyFile(dir), pki.CertPEM(cert, ca.Cert), key); err != nil {
		return err
	}
	akey, err := pki.NewKey()
	if err != nil {
		return err
	}
	acert, err := ca.Issue(&akey.PublicKey, "admin", pki.Client, nil)
	if err != nil {
		return err
	}
	akeyPEM, err := pki.KeyPEM(akey)
	if err != nil {
		return err
	}
	return pki.WriteFile(AdminFile(dir), append(pki.CertPEM(acert, ca.Cert), akeyPEM...), 0o600)
}

func writeKeyPair(certPath, keyPath string, certPEM []byte, key *ecdsa.PrivateKey) error {
	kp, err := pki.KeyPEM(key)
	if err != nil {
		return err
	}
	if err := pki.WriteFile(keyPath, kp, 0o600); err != nil {
		return err
	}
	return pki.WriteFile(certPath, certPEM, 0o644)
}

// InstallJoinTLS writes what a join answer carried into dir: the CA (checked against the
// token's pin), its key, and the node's certificate for key.
func InstallJoinTLS(dir string, resp *JoinResponse, key *ecdsa.PrivateKey, pin string) error {
	ca, err := pki.ParseCA([]byte(resp.CACert), []byte(resp.CAKey))
	if err != nil {
		return fmt.Errorf("the join answer's CA: %w", err)
	}
	if pki.Pin(ca.Cert) != pin {
		return errors.New("the join answer's CA is not the one the token names")
	}
	certs, err := pki.ParseCerts([]byte(resp.Cert))
	if err != nil {
		return fmt.Errorf("the join answer's certificate: %w", err)
	}
	if !key.PublicKey.Equal(certs[0].PublicKey) {
		return errors.New("the join answer's certificate is not for this node's key")
	}
	if err := certs[0].CheckSignatureFrom(ca.Cert); err != nil {
		return fmt.Errorf("the join answer's certificate: %w", err)
	}
	if err := os.MkdirAll(TLSDir(dir), 0o700); err != nil {
		return err
	}
	if err := pki.WriteFile(CAKeyFile(dir), []byte(resp.CAKey), 0o600); err != nil {
		return err
	}
	if err := pki.WriteFile(CAFile(dir), pki.CertPEM(ca.Cert), 0o644); err != nil {
		return err
	}
	return writeKeyPair(CertFile(dir), KeyFile(dir), pki.CertPEM(certs[0], ca.Cert), key)
}

// nodeTLS is a running node's TLS material.
type nodeTLS struct {
	ca     *pki.CA
	pool   *x509.CertPool
	cert   tls.Certificate
	server *tls.Config // the client API listener's
	client *tls.Config // node-to-node calls
}

func loadNodeTLS(dir string) (*nodeTLS, error) {
	caPEM, err := pki.ReadFile(CAFile(dir))
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("%s has no certificates (%s is missing): the node was made before the client API used TLS; make it again with `cfs server bootstrap` or `cfs server join`", dir, CAFile(dir))
		}
		return nil, err
	}
	caKey, err := pki.ReadFile(CAKeyFile(dir))
	if err != nil {
		return nil, err
	}
	ca, err := pki.ParseCA(caPEM, caKey)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", TLSDir(dir), err)
	}
	cert, err := tls.LoadX509KeyPair(CertFile(dir), KeyFile(dir))
	if err != nil {
		return nil, fmt.Errorf("the node's certificate: %w", err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	t := &nodeTLS{ca: ca, pool: pool, cert: cert}
	t.server = &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{cert}, ClientCAs: pool, ClientAuth: tls.RequireAndVerifyClientCert}
	join := t.server.Clone()
	join.ClientAuth = tls.NoClientCert
	t.server.GetConfigForClient = func(h *tls.ClientHelloInfo) (*tls.Config, error) {
		if h.ServerName == JoinServerName {
			return join, nil
		}
		return nil, nil
	}
	t.client = &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: pool,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &cert, nil }}
	return t, nil
}

// JoinToken is the text of a join token: the secret the cluster group stores the hash of,
// a dot, and the pin (pki.Pin) of the cluster CA, by which the joiner tells the real
// cluster before it holds the CA.
func JoinToken(secret, pin string) string { return secret + "." + pin }

// SplitJoinToken parses a join token's text.
func SplitJoinToken(tok string) (secret, pin string, err error) {
	secret, pin, ok := strings.Cut(strings.TrimSpace(tok), ".")
	if !ok || secret == "" || len(pin) != 64 || strings.Trim(pin, "0123456789abcdef") != "" {
		return "", "", errors.New("the join token has no CA pin (want cfsjoin-….PIN): make a new one with `cfs admin cluster-token`")
	}
	return secret, pin, nil
}

// JoinTLS is the client TLS configuration of a joiner: no client certificate, server name
// JoinServerName, and the server trusted when its chain holds a CA of the given pin that
// signed its certificate.
func JoinTLS(pin string) *tls.Config {
	return &tls.Config{
		MinVersion:         tls.VersionTLS13,
		ServerName:         JoinServerName,
		InsecureSkipVerify: true, // replaced by the pin check below
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errors.New("the server sent no certificate")
			}
			for _, c := range cs.PeerCertificates[1:] {
				if c.IsCA && pki.Pin(c) == pin {
					pool := x509.NewCertPool()
					pool.AddCert(c)
					_, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
					if err != nil {
						return fmt.Errorf("the server's certificate: %w", err)
					}
					return nil
				}
			}
			return errors.New("the server's certificate is not signed by the CA the join token names (another cluster, or an impostor at --seed)")
		},
	}
}

// Creds name the files a client of the API presents and trusts.
type Creds struct {
	CA   string // the cluster CA's certificate (PEM)
	Cert string // the client certificate (PEM; may also hold the key)
	Key  string // its key, "" when Cert holds it
}

// Environment variables and files read by FindCreds.
const (
	EnvCert = "CLAUDEFS_CERT"
	EnvKey  = "CLAUDEFS_KEY"
	EnvCA   = "CLAUDEFS_CA"
)

// FindCreds resolves a client's credentials: each of the flags, else its environment
// variable, else the node directory's own (tls/ca.crt, and tls/node.crt with node.key when
// no certificate was named) if it has them.
func FindCreds(certFlag, keyFlag, caFlag, nodeDir string) Creds {
	pick := func(flag, env string) string {
		if flag != "" {
			return flag
		}
		return os.Getenv(env)
	}
	c := Creds{CA: pick(caFlag, EnvCA), Cert: pick(certFlag, EnvCert), Key: pick(keyFlag, EnvKey)}
	exists := func(p string) bool { _, err := os.Stat(p); return err == nil }
	if c.CA == "" && nodeDir != "" && exists(CAFile(nodeDir)) {
		c.CA = CAFile(nodeDir)
	}
	if c.Cert == "" && nodeDir != "" && exists(CertFile(nodeDir)) {
		c.Cert, c.Key = CertFile(nodeDir), KeyFile(nodeDir)
	}
	return c
}

// ErrNoCert says what to do when a client has no certificate.
var ErrNoCert = errors.New("the admin API requires a client certificate: set CLAUDEFS_CERT (cfs dev env prints it) or give --cert")

// TLSConfig loads the files. With no Cert it returns a configuration without a client
// certificate (the server will refuse it; tests use that).
func (c Creds) TLSConfig() (*tls.Config, error) {
	if c.CA == "" {
		return nil, errors.New("no cluster CA to check the nodes against: set CLAUDEFS_CA or give --ca (cfs dev env prints it; on a node it is DIR/tls/ca.crt)")
	}
	caPEM, err := pki.ReadFile(c.CA)
	if err != nil {
		return nil, fmt.Errorf("the cluster CA: %w", err)
	}
	cas, err := pki.ParseCerts(caPEM)
	if err != nil {
		return nil, fmt.Errorf("the cluster CA %s: %w", c.CA, err)
	}
	pool := x509.NewCertPool()
	for _, ca := range cas {
		pool.AddCert(ca)
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: pool}
	if c.Cert == "" {
		return tc, nil
	}
	certPEM, err := pki.ReadFile(c.Cert)
	if err != nil {
		return nil, fmt.Errorf("the client certificate: %w", err)
	}
	keyPEM := certPEM
	if c.Key != "" {
		if keyPEM, err = pki.ReadFile(c.Key); err != nil {
			return nil, fmt.Errorf("the client key: %w", err)
		}
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		where := c.Cert
		if c.Key != "" {
			where += " and " + c.Key
		}
		return nil, fmt.Errorf("the client certificate %s: %w (want PEM holding the certificate and its key, or the key in --key/CLAUDEFS_KEY)", where, err)
	}
	// Always present it (Go would send none when it does not chain to the CAs the server
	// names), so that a certificate of another cluster is refused as such.
	tc.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &pair, nil }
	return tc, nil
}

// Client returns a client of the API with these credentials; a missing certificate is
// ErrNoCert.
func (c Creds) Client(timeout time.Duration) (*Client, error) {
	if c.Cert == "" {
		return nil, ErrNoCert
	}
	tc, err := c.TLSConfig()
	if err != nil {
		return nil, err
	}
	cl := NewClient(timeout, tc)
	cl.creds = c
	return cl, nil
}

// logWriter adapts logf for http.Server.ErrorLog (refused handshakes land there), at
// most 5 lines a second: a scanner without a certificate must not flood control.log.
func logWriter(logf func(string, ...any)) io.Writer {
	lf := RateLimited(logf, 5, 20)
	return writerFunc(func(b []byte) (int, error) {
		lf("%s", strings.TrimRight(string(b), "\n"))
		return len(b), nil
	})
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(b []byte) (int, error) { return f(b) }

// requireCert serves connections without a client certificate (joiners, see
// JoinServerName) only POST /v1/join.
func (n *Node) requireCert(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.TLS != nil && len(r.TLS.VerifiedChains) > 0 {
			next.ServeHTTP(w, r)
			return
		}
		if r.Method == http.MethodPost && r.URL.Path == "/v1/join" {
			next.ServeHTTP(w, r)
			return
		}
		n.fail(w, http.StatusForbidden, "cert_required", ErrNoCert, "a connection without a certificate may only join (POST /v1/join)")
	})
}

// issueNodeCert signs a joiner's certificate for the key of its CSR, naming req's addresses.
func (n *Node) issueNodeCert(csrPEM string, id string, req *JoinRequest) (string, error) {
	csr, err := pki.ParseCSR([]byte(csrPEM))
	if err != nil {
		return "", err
	}
	cert, err := n.tls.ca.Issue(csr.PublicKey, id, pki.Node, hostsOf(req.ClientAddr, req.RaftAddr, req.GossipAddr, req.DataplaneAddr))
	if err != nil {
		return "", err
	}
	return string(pki.CertPEM(cert, n.tls.ca.Cert)), nil
}
