package certs

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
)

// ErrNoPairs is what Store.Load returns for an empty list of pairs.
var ErrNoPairs = errors.New("certs: no certificate and key pairs")

// Pair names the PEM files of one certificate chain and its private key.
type Pair struct {
	Cert string
	Key  string
}

// Store holds the certificates spooky serves and picks one for each TLS
// handshake by its server name (SNI): a pair whose certificate names it
// exactly, else one with a wildcard name matching it (*.example.com
// matches one label, a.example.com, not a.b.example.com nor example.com),
// else the first pair. A Store is swapped atomically: a handshake sees the
// old set of pairs or the new one, never a mix. The zero Store serves
// nothing until Load or SetDev.
type Store struct {
	cur atomic.Pointer[chain]

	mu     sync.Mutex // serialises Load and SetDev
	failed [sha256.Size]byte
	hasErr bool // failed is the sum of files that did not load
}

// chain is one loaded set of pairs, never changed once stored.
type chain struct {
	pairs    []Pair // the files; nil for a development certificate
	sum      [sha256.Size]byte
	certs    []*tls.Certificate
	exact    map[string]*tls.Certificate
	wildcard map[string]*tls.Certificate // by the name without its "*."
}

// GetCertificate picks the certificate for hello, as tls.Config's
// GetCertificate. It never fails once the Store holds a certificate.
func (s *Store) GetCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	c := s.cur.Load()
	if c == nil {
		return nil, errors.New("certs: no certificate loaded")
	}
	return c.pick(hello.ServerName), nil
}

// pick chooses the certificate for a server name.
func (c *chain) pick(name string) *tls.Certificate {
	name = strings.ToLower(strings.TrimSuffix(name, "."))
	if name != "" {
		if cert := c.exact[name]; cert != nil {
			return cert
		}
		if _, parent, ok := strings.Cut(name, "."); ok {
			if cert := c.wildcard[parent]; cert != nil {
				return cert
			}
		}
	}
	return c.certs[0]
}

// Current is the default certificate: the first pair's, or the development
// one; nil before the Store holds any.
func (s *Store) Current() *tls.Certificate {
	if c := s.cur.Load(); c != nil {
		return c.certs[0]
	}
	return nil
}

// Files lists the certificate and key files of the pairs being served, in
// order; none for a development certificate.
func (s *Store) Files() []string {
	c := s.cur.Load()
	if c == nil {
		return nil
	}
	var files []string
	for _, p := range c.pairs {
		files = append(files, p.Cert, p.Key)
	}
	return files
}

// Pairs lists the pairs being served; nil for a development certificate.
func (s *Store) Pairs() []Pair {
	if c := s.cur.Load(); c != nil {
		return c.pairs
	}
	return nil
}

// SetDev makes the Store serve cert alone, for every name.
func (s *Store) SetDev(cert tls.Certificate) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.hasErr = false
	s.cur.Store(&chain{certs: []*tls.Certificate{&cert}})
}

// Load reads pairs from their files and, when they differ from what the
// Store serves, parses them and serves them from the next handshake on. It
// reports whether it changed what is served. A pair that cannot be read,
// is not PEM, or whose key does not match its certificate fails the whole
// load, and the Store keeps serving what it served.
func (s *Store) Load(pairs []Pair) (changed bool, err error) {
	if len(pairs) == 0 {
		return false, ErrNoPairs
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.loadLocked(pairs, false)
}

// Reload reads again the files of the pairs being served, as Load does;
// it does nothing for a development certificate. A Load of other pairs at
// the same time is not undone by it. Files that failed to load fail once:
// until they change again, Reload reports (false, nil) for them, so that a
// caller that polls reports the failure once.
func (s *Store) Reload() (changed bool, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.cur.Load()
	if c == nil || c.pairs == nil {
		return false, nil
	}
	return s.loadLocked(c.pairs, true)
}

func (s *Store) loadLocked(pairs []Pair, once bool) (changed bool, err error) {
	raw, sum, err := read(pairs)
	if err != nil {
		return false, err
	}
	cur := s.cur.Load()
	if cur != nil && cur.sum == sum && slices.Equal(cur.pairs, pairs) {
		s.hasErr = false
		return false, nil
	}
	if once && s.hasErr && s.failed == sum {
		return false, nil
	}
	next, err := parse(pairs, raw, sum)
	if err != nil {
		s.failed, s.hasErr = sum, true
		return false, err
	}
	s.hasErr = false
	s.cur.Store(next)
	return true, nil
}

// read reads every file of pairs and sums them all.
func read(pairs []Pair) ([][2][]byte, [sha256.Size]byte, error) {
	h := sha256.New()
	raw := make([][2][]byte, len(pairs))
	for i, p := range pairs {
		for j, path := range []string{p.Cert, p.Key} {
			b, err := os.ReadFile(path)
			if err != nil {
				return nil, [sha256.Size]byte{}, fmt.Errorf("certs: %w", err)
			}
			raw[i][j] = b
			fmt.Fprintf(h, "%d:%s:%d:", i*2+j, path, len(b))
			h.Write(b)
		}
	}
	var sum [sha256.Size]byte
	h.Sum(sum[:0])
	return raw, sum, nil
}

// parse turns the files' bytes into a chain, indexing each certificate by
// the DNS names of its leaf (its common name when it has none). The first
// pair to name a host wins it.
func parse(pairs []Pair, raw [][2][]byte, sum [sha256.Size]byte) (*chain, error) {
	c := &chain{pairs: pairs, sum: sum, exact: map[string]*tls.Certificate{}, wildcard: map[string]*tls.Certificate{}}
	for i, p := range pairs {
		cert, err := tls.X509KeyPair(raw[i][0], raw[i][1])
		if err != nil {
			return nil, fmt.Errorf("certs: %s and %s: %w", p.Cert, p.Key, err)
		}
		if cert.Leaf == nil {
			if cert.Leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
				return nil, fmt.Errorf("certs: %s: %w", p.Cert, err)
			}
		}
		c.certs = append(c.certs, &cert)
		names := cert.Leaf.DNSNames
		if len(names) == 0 && cert.Leaf.Subject.CommonName != "" {
			names = []string{cert.Leaf.Subject.CommonName}
		}
		for _, n := range names {
			n = strings.ToLower(strings.TrimSuffix(n, "."))
			m := c.exact
			if rest, ok := strings.CutPrefix(n, "*."); ok {
				n, m = rest, c.wildcard
			}
			if _, taken := m[n]; !taken {
				m[n] = &cert
			}
		}
	}
	return c, nil
}

// Dirs lists the directories that hold files, and those that hold what
// their symbolic links point to, each once: watching them sees a file
// written in place, replaced by a rename, or swapped by a symbolic link
// flip (a Kubernetes secret's ..data, certbot's live/ links).
func Dirs(files []string) []string {
	var dirs []string
	add := func(d string) {
		if !slices.Contains(dirs, d) {
			dirs = append(dirs, d)
		}
	}
	for _, f := range files {
		add(filepath.Dir(f))
		if real, err := filepath.EvalSymlinks(f); err == nil {
			add(filepath.Dir(real))
		}
	}
	return dirs
}
