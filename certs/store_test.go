package certs

import (
	"crypto/tls"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"spooky/internal/testkit"
)

// writePair writes a self-signed certificate named cn for names, and its
// key, into dir, and returns their files.
func writePair(t *testing.T, dir, cn string, names ...string) Pair {
	t.Helper()
	certPEM, keyPEM := testkit.SelfSignedPEM(t, cn, names...)
	p := Pair{Cert: filepath.Join(dir, cn+".pem"), Key: filepath.Join(dir, cn+".key")}
	if err := os.WriteFile(p.Cert, certPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p.Key, keyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func served(t *testing.T, s *Store, name string) string {
	t.Helper()
	cert, err := s.GetCertificate(&tls.ClientHelloInfo{ServerName: name})
	if err != nil {
		t.Fatal(err)
	}
	return cert.Leaf.Subject.CommonName
}

func TestSNIChoice(t *testing.T) {
	dir := t.TempDir()
	var s Store
	pairs := []Pair{
		writePair(t, dir, "default", "default.test"),
		writePair(t, dir, "wild", "*.example.com"),
		writePair(t, dir, "exact", "api.example.com", "Other.Test"),
		writePair(t, dir, "cn-only"),
		writePair(t, dir, "second-wild", "*.example.com", "deep.a.example.com"),
	}
	if _, err := s.Load(pairs); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ name, want string }{
		{"", "default"},
		{"default.test", "default"},
		{"api.example.com", "exact"},          // exact before wildcard
		{"API.Example.COM.", "exact"},         // case and a trailing dot
		{"www.example.com", "wild"},           // the first pair with the wildcard
		{"a.b.example.com", "default"},        // a wildcard matches one label
		{"deep.a.example.com", "second-wild"}, // exact in a later pair
		{"example.com", "default"},            // nor the bare domain
		{"other.test", "exact"},
		{"cn-only", "cn-only"}, // the common name when there are no DNS names
		{"unknown.test", "default"},
		{"127.0.0.1", "default"},
	} {
		if got := served(t, &s, tc.name); got != tc.want {
			t.Errorf("%q: served %q, want %q", tc.name, got, tc.want)
		}
	}
}

func TestEmptyStore(t *testing.T) {
	var s Store
	if _, err := s.GetCertificate(&tls.ClientHelloInfo{}); err == nil {
		t.Error("an empty store served a certificate")
	}
	if _, err := s.Load(nil); err != ErrNoPairs {
		t.Errorf("Load(nil) = %v, want ErrNoPairs", err)
	}
}

func TestReloadKeepsTheOldPairOnFailure(t *testing.T) {
	dir := t.TempDir()
	var s Store
	p := writePair(t, dir, "old", "a.test")
	if changed, err := s.Load([]Pair{p}); !changed || err != nil {
		t.Fatalf("Load = %v, %v", changed, err)
	}
	if changed, err := s.Reload(); changed || err != nil {
		t.Fatalf("Reload of unchanged files = %v, %v; want false, nil", changed, err)
	}

	other := writePair(t, t.TempDir(), "other", "a.test")
	for _, tc := range []struct {
		name  string
		write func()
		want  string
	}{
		{"key mismatch", func() { copyFile(t, other.Cert, p.Cert) }, "private key does not match"},
		{"not PEM", func() { os.WriteFile(p.Cert, []byte("not PEM"), 0o600) }, "failed to find any PEM data"},
		{"unreadable", func() { os.Remove(p.Key) }, "no such file"},
	} {
		tc.write()
		changed, err := s.Reload()
		if changed || err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: Reload = %v, %v; want an error with %q", tc.name, changed, err, tc.want)
		}
		if got := served(t, &s, "a.test"); got != "old" {
			t.Errorf("%s: served %q, want the old certificate", tc.name, got)
		}
	}
	// The same broken files again: reported once.
	os.WriteFile(p.Cert, []byte("not PEM"), 0o600)
	copyFile(t, other.Key, p.Key)
	if _, err := s.Reload(); err == nil {
		t.Fatal("broken files loaded")
	}
	if changed, err := s.Reload(); changed || err != nil {
		t.Errorf("Reload of the same broken files = %v, %v; want false, nil", changed, err)
	}
	// Load, as a new config does, reports them every time.
	if _, err := s.Load([]Pair{p}); err == nil {
		t.Error("Load of broken files succeeded")
	}

	copyFile(t, other.Cert, p.Cert)
	if changed, err := s.Reload(); !changed || err != nil {
		t.Fatalf("Reload of a good pair = %v, %v", changed, err)
	}
	if got := served(t, &s, "a.test"); got != "other" {
		t.Errorf("served %q, want the new certificate", got)
	}
}

func TestDevStoreDoesNotReload(t *testing.T) {
	var s Store
	cert, err := Dev()
	if err != nil {
		t.Fatal(err)
	}
	s.SetDev(cert)
	if changed, err := s.Reload(); changed || err != nil {
		t.Errorf("Reload = %v, %v", changed, err)
	}
	if !IsDev(s.Current()) || s.Files() != nil {
		t.Errorf("not the development certificate, or files %v", s.Files())
	}
}

func TestDirs(t *testing.T) {
	dir := t.TempDir()
	real := filepath.Join(dir, "..2026_01_01")
	if err := os.Mkdir(real, 0o700); err != nil {
		t.Fatal(err)
	}
	p := writePair(t, real, "k8s")
	if err := os.Symlink(real, filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "tls.crt")
	if err := os.Symlink(filepath.Join("..data", "k8s.pem"), link); err != nil {
		t.Fatal(err)
	}
	got := Dirs([]string{link, p.Key})
	if len(got) != 2 || got[0] != dir || !strings.HasSuffix(got[1], "..2026_01_01") {
		t.Errorf("Dirs = %v, want %s and the directory the link points into", got, dir)
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o600); err != nil {
		t.Fatal(err)
	}
}
