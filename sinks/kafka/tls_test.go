package kafka

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

// testPKI writes a CA, a server certificate for 127.0.0.1/localhost and a
// client certificate, all PEM, into dir.
func testPKI(t *testing.T, dir string) {
	t.Helper()
	newKey := func() *ecdsa.PrivateKey {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	writePEM := func(name string, blocks ...*pem.Block) {
		var b bytes.Buffer
		for _, bl := range blocks {
			if err := pem.Encode(&b, bl); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.WriteFile(filepath.Join(dir, name), b.Bytes(), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	keyPEM := func(k *ecdsa.PrivateKey) *pem.Block {
		der, err := x509.MarshalPKCS8PrivateKey(k)
		if err != nil {
			t.Fatal(err)
		}
		return &pem.Block{Type: "PRIVATE KEY", Bytes: der}
	}
	now := time.Now()
	caKey := newKey()
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "fanaudit test CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	leaf := func(serial int64, cn string, usage x509.ExtKeyUsage) (*ecdsa.PrivateKey, []byte) {
		k := newKey()
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: cn},
			NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage},
			DNSNames: []string{"localhost"}, IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &k.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		return k, der
	}
	srvKey, srvDER := leaf(2, "localhost", x509.ExtKeyUsageServerAuth)
	cliKey, cliDER := leaf(3, "fanaudit", x509.ExtKeyUsageClientAuth)
	writePEM("ca.pem", &pem.Block{Type: "CERTIFICATE", Bytes: caDER})
	writePEM("server.pem", keyPEM(srvKey), &pem.Block{Type: "CERTIFICATE", Bytes: srvDER}, &pem.Block{Type: "CERTIFICATE", Bytes: caDER})
	writePEM("client.pem", &pem.Block{Type: "CERTIFICATE", Bytes: cliDER})
	writePEM("client.key", keyPEM(cliKey))
}

// syncBuffer collects log output from several goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestTLSAndSASL runs the real broker with a SASL_SSL listener (client
// certificates required) and checks delivery for every mechanism, and that
// a wrong password gives a clear error and spools instead of dropping.
func TestTLSAndSASL(t *testing.T) {
	const user, password = "fanaudit", "s3cret-Pa55"
	pki := t.TempDir()
	testPKI(t, pki)
	pwFile := filepath.Join(pki, "password")
	if err := os.WriteFile(pwFile, []byte(password+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	wrongFile := filepath.Join(pki, "wrong")
	if err := os.WriteFile(wrongFile, []byte("not-the-password"), 0o600); err != nil {
		t.Fatal(err)
	}
	sport := freePort(t)
	b := startOwnBroker(t, "--sasl-ssl-port", strconv.Itoa(sport), "--tls-dir", pki,
		"--scram-user", user, "--scram-password-file", pwFile)
	secure := "127.0.0.1:" + strconv.Itoa(sport)
	t.Setenv("FANAUDIT_TEST_KAFKA_PASSWORD", password)

	tests := []struct {
		name      string
		mechanism string
		pwFile    string
		pwEnv     string
		wantOK    bool
	}{
		{"scram-sha-256 password file", "scram-sha-256", pwFile, "", true},
		{"scram-sha-512 password env", "scram-sha-512", "", "FANAUDIT_TEST_KAFKA_PASSWORD", true},
		{"plain", "plain", pwFile, "", true},
		{"wrong password spools", "scram-sha-512", wrongFile, "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			topic := uniqueTopic(t)
			createTopic(t, b.addr, topic, 1)
			cfg := testConfig(secure, topic)
			cfg.TLS = TLS{Enabled: true, CAFile: filepath.Join(pki, "ca.pem"), CertFile: filepath.Join(pki, "client.pem"),
				KeyFile: filepath.Join(pki, "client.key"), ServerName: "localhost"}
			cfg.SASL = SASL{Mechanism: tt.mechanism, Username: user, PasswordFile: tt.pwFile, PasswordEnv: tt.pwEnv}
			cfg.Spool.Dir = t.TempDir()
			cfg.WriteTimeout = Duration{5 * time.Second}
			var logs syncBuffer
			s, err := New(cfg, testHost, "tls", zerolog.New(&logs))
			if err != nil {
				t.Fatal(err)
			}
			r := startExisting(t, s, "tls")
			ids := r.push(t, 1, 500)
			if tt.wantOK {
				waitFor(t, 60*time.Second, "delivery", r.drained)
			} else {
				waitFor(t, 60*time.Second, "spooling", func() bool {
					qs := r.q.Stats()
					return qs.Delivered == 0 && qs.InFlight == 500 && qs.Depth == 0 && r.sink.Stats().SpoolPending == 500
				})
			}
			if err := r.closeAndWait(t, 30*time.Second); err != nil {
				t.Fatalf("Run: %v", err)
			}
			qs := settledQueue(t, r.q)
			if qs.Dropped != 0 {
				t.Fatalf("dropped %d", qs.Dropped)
			}
			out := logs.String()
			if strings.Contains(out, password) || strings.Contains(out, "not-the-password") {
				t.Fatal("a password appears in the log")
			}
			if !tt.wantOK {
				if !strings.Contains(out, "SASL Authentication Failed") && !strings.Contains(strings.ToLower(out), "authentication failed") {
					t.Fatalf("log does not say authentication failed:\n%s", out)
				}
				t.Logf("wrong password, first log line: %s", strings.SplitN(out, "\n", 2)[0])
				return
			}
			// Read back over the plaintext listener: the consumer is
			// independent of the sink's security settings.
			if d := check(ids, consumeIDs(t, b.addr, topic, len(ids), 30*time.Second)); d.missing != 0 {
				t.Fatalf("%d of %d missing", d.missing, d.sent)
			}
		})
	}
}
