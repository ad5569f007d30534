package pki

import "testing"

// FuzzParseCSR: a join request's certificate request is untrusted input; it is refused
// with an error, never a panic.
func FuzzParseCSR(f *testing.F) {
	key, _ := NewKey()
	csr, _ := NewCSR(key)
	f.Add(csr)
	f.Add([]byte("-----BEGIN CERTIFICATE REQUEST-----\nMAA=\n-----END CERTIFICATE REQUEST-----\n"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		if req, err := ParseCSR(b); err == nil && req.PublicKey == nil {
			t.Fatal("accepted a CSR without a key")
		}
	})
}

// FuzzParsePEM: certificate and key files (a join answer's, --cert, --ca) decode or fail.
func FuzzParsePEM(f *testing.F) {
	ca, _ := NewCA("f")
	k, _ := KeyPEM(ca.Key)
	f.Add(append(CertPEM(ca.Cert), k...))
	f.Add([]byte("-----BEGIN PRIVATE KEY-----\nMAA=\n-----END PRIVATE KEY-----\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _ = ParseCerts(b)
		_, _ = ParseKey(b)
		_, _ = ParseCA(b, b)
	})
}
