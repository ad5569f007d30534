package pki

import (
	"crypto/x509"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestIssueAndVerify(t *testing.T) {
	ca, err := NewCA("prod-1")
	if err != nil {
		t.Fatal(err)
	}
	if !ca.Cert.IsCA || ca.Cert.Subject.CommonName != "ClaudeFS cluster CA prod-1" || time.Until(ca.Cert.NotAfter) < CALifetime-2*time.Hour {
		t.Fatalf("CA: IsCA %v, CN %q, until %v", ca.Cert.IsCA, ca.Cert.Subject.CommonName, ca.Cert.NotAfter)
	}
	key, err := NewKey()
	if err != nil {
		t.Fatal(err)
	}
	nodeCert, err := ca.Issue(&key.PublicKey, "node-2", Node, []string{"10.0.0.2", "10.0.0.2", "storage-2.example", "127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca.Cert)
	for _, name := range []string{"10.0.0.2", "127.0.0.1", "localhost", "storage-2.example"} {
		for _, usage := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
			if _, err := nodeCert.Verify(x509.VerifyOptions{Roots: roots, DNSName: name, KeyUsages: []x509.ExtKeyUsage{usage}}); err != nil {
				t.Errorf("node certificate for %s, usage %v: %v", name, usage, err)
			}
		}
	}
	if len(nodeCert.IPAddresses) != 2 || len(nodeCert.DNSNames) != 2 {
		t.Errorf("SANs not deduplicated: %v %v", nodeCert.IPAddresses, nodeCert.DNSNames)
	}
	if _, err := nodeCert.Verify(x509.VerifyOptions{Roots: roots, DNSName: "10.0.0.3"}); err == nil {
		t.Error("the node certificate names an address it was not issued for")
	}
	client, err := ca.Issue(&key.PublicKey, "admin", Client, []string{"10.0.0.9"})
	if err != nil {
		t.Fatal(err)
	}
	if len(client.IPAddresses) != 0 {
		t.Error("a client certificate carries SANs")
	}
	if _, err := client.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err == nil {
		t.Error("a client certificate passes as a server's")
	}
	other, _ := NewCA("other")
	otherRoots := x509.NewCertPool()
	otherRoots.AddCert(other.Cert)
	if _, err := nodeCert.Verify(x509.VerifyOptions{Roots: otherRoots}); err == nil {
		t.Error("verified against another CA")
	}
	if Pin(ca.Cert) == Pin(other.Cert) || len(Pin(ca.Cert)) != 64 {
		t.Errorf("pins %s %s", Pin(ca.Cert), Pin(other.Cert))
	}
}

func TestPEMRoundTrip(t *testing.T) {
	ca, _ := NewCA("c")
	keyPEM, err := KeyPEM(ca.Key)
	if err != nil {
		t.Fatal(err)
	}
	back, err := ParseCA(CertPEM(ca.Cert), keyPEM)
	if err != nil || !back.Cert.Equal(ca.Cert) || !back.Key.Equal(ca.Key) {
		t.Fatalf("ParseCA: %v", err)
	}
	other, _ := NewCA("d")
	otherKey, _ := KeyPEM(other.Key)
	if _, err := ParseCA(CertPEM(ca.Cert), otherKey); err == nil || !strings.Contains(err.Error(), "does not belong") {
		t.Errorf("a CA with another's key: %v", err)
	}
	// a bundle of certificate and key: both found, in either order
	bundle := append(CertPEM(ca.Cert, other.Cert), keyPEM...)
	if certs, err := ParseCerts(bundle); err != nil || len(certs) != 2 {
		t.Errorf("ParseCerts(bundle): %d, %v", len(certs), err)
	}
	if k, err := ParseKey(append(keyPEM, CertPEM(ca.Cert)...)); err != nil || !k.Equal(ca.Key) {
		t.Errorf("ParseKey(key then cert): %v", err)
	}
	for _, bad := range []string{"", "garbage", "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", strings.Repeat("x", MaxPEMBytes+1)} {
		if _, err := ParseCerts([]byte(bad)); err == nil {
			t.Errorf("ParseCerts(%.20q) accepted", bad)
		}
		if _, err := ParseKey([]byte(bad)); err == nil {
			t.Errorf("ParseKey(%.20q) accepted", bad)
		}
	}
}

func TestCSR(t *testing.T) {
	key, _ := NewKey()
	csr, err := NewCSR(key)
	if err != nil {
		t.Fatal(err)
	}
	req, err := ParseCSR(csr)
	if err != nil {
		t.Fatal(err)
	}
	if !key.PublicKey.Equal(req.PublicKey) {
		t.Error("the CSR's key is not the joiner's")
	}
	// a CSR whose signature does not match its key
	tampered := []byte(strings.Replace(string(csr), string(csr[100:104]), "AAAA", 1))
	if _, err := ParseCSR(tampered); err == nil {
		t.Error("a tampered CSR passed")
	}
	for _, bad := range []string{"", "x", string(CertPEM()), strings.Repeat("a", MaxPEMBytes+1)} {
		if _, err := ParseCSR([]byte(bad)); err == nil {
			t.Errorf("ParseCSR(%.20q) accepted", bad)
		}
	}
}

func TestWriteFileMode(t *testing.T) {
	p := filepath.Join(t.TempDir(), "k.pem")
	if err := WriteFile(p, []byte("secret"), 0o600); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(p)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v, %v", fi.Mode(), err)
	}
	if b, err := ReadFile(p); err != nil || string(b) != "secret" {
		t.Fatalf("ReadFile: %q %v", b, err)
	}
	big := filepath.Join(t.TempDir(), "big")
	if err := os.WriteFile(big, make([]byte, MaxPEMBytes+1), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadFile(big); err == nil {
		t.Error("read a file over MaxPEMBytes")
	}
}
