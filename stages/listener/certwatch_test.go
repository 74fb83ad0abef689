package listener

import (
	"crypto/tls"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/quic-go/quic-go/http3"

	"spooky/config"
	"spooky/internal/testkit"
	"spooky/stages"
)

// pemPair is the content of a certificate file and its key's.
type pemPair struct{ cert, key []byte }

// newPair makes a self-signed certificate named cn, valid for localhost.
func newPair(t *testing.T, cn string) pemPair {
	t.Helper()
	certFile, keyFile := testkit.SelfSigned(t, cn, false)
	var p pemPair
	var err error
	if p.cert, err = os.ReadFile(certFile); err != nil {
		t.Fatal(err)
	}
	if p.key, err = os.ReadFile(keyFile); err != nil {
		t.Fatal(err)
	}
	return p
}

// write writes p's certificate to cert and its key to key, in place.
func (p pemPair) write(t *testing.T, cert, key string) {
	t.Helper()
	if err := os.WriteFile(cert, p.cert, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(key, p.key, 0o600); err != nil {
		t.Fatal(err)
	}
}

// servedOverTCP makes a TLS handshake with the listener's TCP socket,
// asking for name, and returns the common name of the certificate it shows.
func servedOverTCP(t *testing.T, l *Listener, name string) string {
	t.Helper()
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: testkit.Watchdog}, "tcp", l.TCPAddr().String(),
		&tls.Config{InsecureSkipVerify: true, ServerName: name})
	if err != nil {
		t.Fatalf("TLS handshake: %v", err)
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0].Subject.CommonName
}

// reports is a CertReporter that keeps what it is told.
type reports struct {
	mu   sync.Mutex
	errs []error
}

func (r *reports) CertificatesReloaded(err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.errs = append(r.errs, err)
}

// last is the last report, and whether there was one.
func (r *reports) last() (error, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.errs) == 0 {
		return nil, false
	}
	return r.errs[len(r.errs)-1], true
}

// startWithFiles starts a listener, over QUIC and TCP, serving the
// certificate in cert and key.
func startWithFiles(t *testing.T, cert, key string) (*Listener, *reports) {
	t.Helper()
	cfg := tcpConfig("127.0.0.1:0")
	cfg.Listen.TLS = []config.TLS{{Cert: cert, Key: key}}
	l, _, _ := start(t, cfg)
	rep := &reports{}
	l.ReportCertificates(rep)
	return l, rep
}

// waitServed waits until new TCP handshakes see the certificate named cn,
// and then checks that a new QUIC handshake does too.
func waitServed(t *testing.T, l *Listener, cn string) {
	t.Helper()
	testkit.WaitFor(t, "the listener to serve "+cn+" over TCP", func() bool { return servedOverTCP(t, l, "localhost") == cn })
	if got := get(t, client(t), l.Addr().String()); got.Subject.CommonName != cn {
		t.Errorf("over QUIC: served %q, want %q", got.Subject.CommonName, cn)
	}
}

func TestCertificateReloadsWhenItsFilesChange(t *testing.T) {
	t.Run("written in place", func(t *testing.T) {
		dir := t.TempDir()
		cert, key := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
		newPair(t, "old").write(t, cert, key)
		l, rep := startWithFiles(t, cert, key)
		waitServed(t, l, "old")

		newPair(t, "renewed").write(t, cert, key)
		waitServed(t, l, "renewed")
		if err, ok := rep.last(); !ok || err != nil {
			t.Errorf("last report %v (any: %v), want a reload that worked", err, ok)
		}
	})

	t.Run("replaced by rename", func(t *testing.T) {
		dir := t.TempDir()
		cert, key := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
		newPair(t, "old").write(t, cert, key)
		l, _ := startWithFiles(t, cert, key)
		waitServed(t, l, "old")

		newPair(t, "renewed").write(t, cert+".new", key+".new")
		if err := os.Rename(key+".new", key); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(cert+".new", cert); err != nil {
			t.Fatal(err)
		}
		waitServed(t, l, "renewed")
	})

	t.Run("symlink flip", func(t *testing.T) {
		// A Kubernetes secret volume: tls.crt -> ..data/tls.crt,
		// ..data -> ..<timestamp>, and an update makes a new
		// timestamped directory and renames a new ..data link over
		// the old one.
		dir := t.TempDir()
		flip := func(version string, p pemPair) {
			real := filepath.Join(dir, ".."+version)
			if err := os.Mkdir(real, 0o700); err != nil {
				t.Fatal(err)
			}
			p.write(t, filepath.Join(real, "tls.crt"), filepath.Join(real, "tls.key"))
			tmp := filepath.Join(dir, "..data_tmp")
			if err := os.Symlink(".."+version, tmp); err != nil {
				t.Fatal(err)
			}
			if err := os.Rename(tmp, filepath.Join(dir, "..data")); err != nil {
				t.Fatal(err)
			}
		}
		flip("2026_01", newPair(t, "old"))
		cert, key := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
		for _, f := range []string{"tls.crt", "tls.key"} {
			if err := os.Symlink(filepath.Join("..data", f), filepath.Join(dir, f)); err != nil {
				t.Fatal(err)
			}
		}
		l, _ := startWithFiles(t, cert, key)
		waitServed(t, l, "old")

		flip("2026_02", newPair(t, "renewed"))
		waitServed(t, l, "renewed")
		os.RemoveAll(filepath.Join(dir, "..2026_01")) // as the kubelet does
		flip("2026_03", newPair(t, "renewed again"))
		waitServed(t, l, "renewed again")
	})
}

func TestBrokenCertificateFilesKeepTheOldPair(t *testing.T) {
	dir := t.TempDir()
	cert, key := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	newPair(t, "old").write(t, cert, key)
	l, rep := startWithFiles(t, cert, key)
	waitServed(t, l, "old")

	// A new certificate whose key was not written: it does not match.
	if err := os.WriteFile(cert, newPair(t, "mismatched").cert, 0o600); err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, "the rejected pair to be reported", func() bool {
		err, _ := rep.last()
		return err != nil
	})
	if err, _ := rep.last(); !strings.Contains(err.Error(), "private key does not match") {
		t.Errorf("reported %v, want the key mismatch", err)
	}
	if got := servedOverTCP(t, l, "localhost"); got != "old" {
		t.Errorf("served %q, want the old certificate", got)
	}

	// Not PEM at all.
	if err := os.WriteFile(cert, []byte("-----BEGIN nothing"), 0o600); err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, "the file that is not PEM to be reported", func() bool {
		err, _ := rep.last()
		return err != nil && strings.Contains(err.Error(), "PEM")
	})
	if got := servedOverTCP(t, l, "localhost"); got != "old" {
		t.Errorf("served %q, want the old certificate", got)
	}

	// Then the renewal completes.
	newPair(t, "renewed").write(t, cert, key)
	waitServed(t, l, "renewed")
	if err, _ := rep.last(); err != nil {
		t.Errorf("last report %v, want the reload that worked", err)
	}
}

func TestReloadFilesReadsTheCertificateAgain(t *testing.T) {
	// No Serve, so no file watch: only ReloadFiles (SIGHUP) reads the
	// files.
	dir := t.TempDir()
	cert, key := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	newPair(t, "old").write(t, cert, key)
	cfg := listenConfig("127.0.0.1:0")
	cfg.Listen.TLS = []config.TLS{{Cert: cert, Key: key}}
	l, err := New(cfg, stages.NewMailbox(config.Stage{Workers: 1, Queue: 1}), &recorder{}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	rep := &reports{}
	l.ReportCertificates(rep)

	if err := l.ReloadFiles(); err != nil {
		t.Fatal(err)
	}
	if _, ok := rep.last(); ok {
		t.Error("unchanged files were reported as reloaded")
	}
	os.WriteFile(cert, []byte("garbage"), 0o600)
	if err := l.ReloadFiles(); err == nil {
		t.Error("ReloadFiles of a broken pair succeeded")
	}
	if err, ok := rep.last(); !ok || err == nil {
		t.Error("the broken pair was not reported")
	}
	newPair(t, "renewed").write(t, cert, key)
	if err := l.ReloadFiles(); err != nil {
		t.Fatal(err)
	}
	if cn := l.certs.Current().Leaf.Subject.CommonName; cn != "renewed" {
		t.Errorf("serving %q, want the renewed certificate", cn)
	}
	if err, ok := rep.last(); !ok || err != nil {
		t.Errorf("last report %v, want the reload that worked", err)
	}
}

// namedPair writes a self-signed certificate named cn for the DNS names
// given, and its key, into dir, and returns listen.tls for them.
func namedPair(t *testing.T, dir, cn string, names ...string) config.TLS {
	t.Helper()
	certPEM, keyPEM := testkit.SelfSignedPEM(t, cn, names...)
	p := config.TLS{Cert: filepath.Join(dir, cn+".pem"), Key: filepath.Join(dir, cn+".key")}
	pemPair{cert: certPEM, key: keyPEM}.write(t, p.Cert, p.Key)
	return p
}

func TestCertificateChosenBySNI(t *testing.T) {
	dir := t.TempDir()
	cfg := tcpConfig("127.0.0.1:0")
	cfg.Listen.TLS = []config.TLS{
		namedPair(t, dir, "default", "localhost"),
		namedPair(t, dir, "wildcard", "*.example.com"),
		namedPair(t, dir, "exact", "api.example.com"),
	}
	l, _, _ := start(t, cfg)
	for _, tc := range []struct{ sni, want string }{
		{"api.example.com", "exact"},
		{"www.example.com", "wildcard"},
		{"a.b.example.com", "default"},
		{"unknown.test", "default"},
	} {
		if got := servedOverTCP(t, l, tc.sni); got != tc.want {
			t.Errorf("TCP, SNI %q: served %q, want %q", tc.sni, got, tc.want)
		}
		tr := &http3.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true, ServerName: tc.sni}}
		resp, err := (&http.Client{Transport: tr, Timeout: testkit.Watchdog}).Get("https://" + l.Addr().String() + "/")
		if err != nil {
			t.Fatalf("QUIC, SNI %q: %v", tc.sni, err)
		}
		resp.Body.Close()
		tr.Close()
		if got := resp.TLS.PeerCertificates[0].Subject.CommonName; got != tc.want {
			t.Errorf("QUIC, SNI %q: served %q, want %q", tc.sni, got, tc.want)
		}
	}
}
