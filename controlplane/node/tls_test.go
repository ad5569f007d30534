package node

import (
	"context"
	"errors"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/claudefs/claudefs/controlplane/pki"
)

// tlsServer serves a node's client API TLS configuration and certificate gate in front
// of GET /v1/status and POST /v1/join handlers that answer who asked.
func tlsServer(t *testing.T, dir string) string {
	t.Helper()
	if err := InitClusterTLS(dir, &Config{ID: "node-1", ClusterName: "t", ClientAddr: "127.0.0.1:7412", RaftAddr: "10.1.2.3:7410"}); err != nil {
		t.Fatal(err)
	}
	nt, err := loadNodeTLS(dir)
	if err != nil {
		t.Fatal(err)
	}
	n := &Node{cfg: &Config{ID: "node-1"}, tls: nt}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/status", func(w http.ResponseWriter, r *http.Request) {
		n.writeJSON(w, http.StatusOK, &Status{NodeID: r.TLS.PeerCertificates[0].Subject.CommonName})
	})
	mux.HandleFunc("POST /v1/join", func(w http.ResponseWriter, r *http.Request) {
		n.writeJSON(w, http.StatusOK, &JoinResponse{NodeID: "node-2"})
	})
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: n.requireCert(mux), TLSConfig: nt.server, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.ServeTLS(l, "", "") }()
	t.Cleanup(func() { _ = srv.Close() })
	return l.Addr().String()
}

func ctx5(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestTLSAcceptsOnlyTheClusterCertificates(t *testing.T) {
	dir, other := t.TempDir(), t.TempDir()
	addr := tlsServer(t, dir)
	if err := InitClusterTLS(other, &Config{ID: "node-1", ClusterName: "other", ClientAddr: "127.0.0.1:1"}); err != nil {
		t.Fatal(err)
	}
	status := func(c Creds) (*Status, error) {
		tc, err := c.TLSConfig()
		if err != nil {
			t.Fatal(err)
		}
		cl := NewClient(5*time.Second, tc)
		cl.creds = c
		return cl.Status(ctx5(t), addr, false)
	}

	// the operator's certificate, and the node's own (node-to-node calls)
	for _, c := range []Creds{{CA: CAFile(dir), Cert: AdminFile(dir)}, {CA: CAFile(dir), Cert: CertFile(dir), Key: KeyFile(dir)}} {
		s, err := status(c)
		if err != nil {
			t.Fatalf("%+v: %v", c, err)
		}
		if want := map[string]string{AdminFile(dir): "admin", CertFile(dir): "node-1"}[c.Cert]; s.NodeID != want {
			t.Errorf("%+v: the server saw %q, want %q", c, s.NodeID, want)
		}
	}

	var ce *CredError
	// no certificate: refused in the handshake, saying what to set
	_, err := status(Creds{CA: CAFile(dir)})
	if !errors.As(err, &ce) || !strings.Contains(err.Error(), "the admin API requires a client certificate: set CLAUDEFS_CERT (cfs dev env prints it)") {
		t.Errorf("without a certificate: %v", err)
	}
	if _, err := (Creds{CA: CAFile(dir)}).Client(time.Second); !errors.Is(err, ErrNoCert) {
		t.Errorf("Creds.Client without a certificate: %v, want ErrNoCert", err)
	}
	// another cluster's certificate: refused, naming the file
	_, err = status(Creds{CA: CAFile(dir), Cert: AdminFile(other)})
	if !errors.As(err, &ce) || !strings.Contains(err.Error(), "refused the client certificate "+AdminFile(other)+": it is not signed by this cluster's CA") {
		t.Errorf("another cluster's certificate: %v", err)
	}
	// another cluster's CA: the server is not trusted
	_, err = status(Creds{CA: CAFile(other), Cert: AdminFile(dir)})
	if !errors.As(err, &ce) || !strings.Contains(err.Error(), "is not signed by the CA in "+CAFile(other)) {
		t.Errorf("another cluster's CA: %v", err)
	}
	// plain HTTP to the TLS port
	if resp, err := http.Get("http://" + addr + "/v1/status"); err == nil && resp.StatusCode == http.StatusOK {
		t.Error("plain HTTP served")
	}
}

func TestJoinConnectionWithoutCertificate(t *testing.T) {
	dir := t.TempDir()
	addr := tlsServer(t, dir)
	caPEM, err := pki.ReadFile(CAFile(dir))
	if err != nil {
		t.Fatal(err)
	}
	cas, err := pki.ParseCerts(caPEM)
	if err != nil {
		t.Fatal(err)
	}
	pin := pki.Pin(cas[0])
	join := NewClient(5*time.Second, JoinTLS(pin))
	if resp, err := join.Join(ctx5(t), addr, &JoinRequest{}); err != nil || resp.NodeID != "node-2" {
		t.Fatalf("join over the pinned connection: %+v, %v", resp, err)
	}
	// the join connection may only join
	_, err = join.Status(ctx5(t), addr, false)
	if !IsCode(err, "cert_required") || !strings.Contains(err.Error(), "set CLAUDEFS_CERT") {
		t.Errorf("status without a certificate on a join connection: %v", err)
	}
	// a pin of another CA: the joiner refuses the server
	other, err := pki.NewCA("other")
	if err != nil {
		t.Fatal(err)
	}
	_, err = NewClient(5*time.Second, JoinTLS(pki.Pin(other.Cert))).Join(ctx5(t), addr, &JoinRequest{})
	if err == nil || !strings.Contains(err.Error(), "not signed by the CA the join token names") {
		t.Errorf("join with another CA's pin: %v", err)
	}
}

func TestJoinTokenPin(t *testing.T) {
	pin := strings.Repeat("ab", 32)
	secret, p, err := SplitJoinToken(" " + JoinToken("cfsjoin-0123", pin) + "\n")
	if err != nil || secret != "cfsjoin-0123" || p != pin {
		t.Fatalf("SplitJoinToken: %q %q %v", secret, p, err)
	}
	for _, bad := range []string{"cfsjoin-0123", "cfsjoin-0123.", "cfsjoin-0123." + strings.Repeat("x", 64), ".", "a." + pin[:63]} {
		if _, _, err := SplitJoinToken(bad); err == nil || !strings.Contains(err.Error(), "cfs admin cluster-token") {
			t.Errorf("SplitJoinToken(%q): %v", bad, err)
		}
	}
}

func TestInstallJoinTLS(t *testing.T) {
	dir := t.TempDir()
	cfg := &Config{ID: "node-1", ClusterName: "t", ClientAddr: "127.0.0.1:7412"}
	if err := InitClusterTLS(dir, cfg); err != nil {
		t.Fatal(err)
	}
	nt, err := loadNodeTLS(dir)
	if err != nil {
		t.Fatal(err)
	}
	n := &Node{cfg: cfg, tls: nt}
	key, err := pki.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	csr, err := pki.NewCSR(key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := n.issueNodeCert(string(csr), "node-2", &JoinRequest{ClientAddr: "10.0.0.2:7412", RaftAddr: "10.0.0.2:7410"})
	if err != nil {
		t.Fatal(err)
	}
	caKey, _ := pki.KeyPEM(nt.ca.Key)
	resp := &JoinResponse{NodeID: "node-2", CACert: string(pki.CertPEM(nt.ca.Cert)), CAKey: string(caKey), Cert: cert}
	joiner := t.TempDir()
	if err := InstallJoinTLS(joiner, resp, key, strings.Repeat("0", 64)); err == nil {
		t.Error("installed a CA the pin does not name")
	}
	if err := InstallJoinTLS(joiner, resp, key, pki.Pin(nt.ca.Cert)); err != nil {
		t.Fatal(err)
	}
	jt, err := loadNodeTLS(joiner)
	if err != nil {
		t.Fatal(err)
	}
	leaf := jt.cert.Leaf
	if leaf.Subject.CommonName != "node-2" || len(leaf.IPAddresses) != 2 || leaf.IPAddresses[0].String() != "10.0.0.2" {
		t.Errorf("joiner's certificate: CN %q, IPs %v", leaf.Subject.CommonName, leaf.IPAddresses)
	}
	for _, f := range []string{KeyFile(joiner), CAKeyFile(joiner)} {
		if fi, err := os.Stat(f); err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: %v %v, want mode 0600", f, fi.Mode(), err)
		}
	}
	other, _ := pki.NewKey()
	if err := InstallJoinTLS(t.TempDir(), resp, other, pki.Pin(nt.ca.Cert)); err == nil {
		t.Error("installed a certificate for another key")
	}
	if _, err := n.issueNodeCert("not a csr", "node-3", &JoinRequest{}); err == nil {
		t.Error("issued a certificate for a bad CSR")
	}
}
