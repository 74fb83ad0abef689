package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"

	"spooky/certs"
	"spooky/internal/testkit"
)

// reloadable is a daemon running from a config file the test rewrites.
type reloadable struct {
	t    *testing.T
	path string
	d    *daemon
	url  string
	logs *syncBuffer // the daemon's log, at debug level
}

func startReloadable(t *testing.T, doc string) *reloadable {
	t.Helper()
	path := writeConfig(t, doc)
	logs := &syncBuffer{}
	url, d := startSpookyLogging(t, path, io.MultiWriter(logs, testLogOutput()))
	return &reloadable{t: t, path: path, d: d, url: url, logs: logs}
}

// reload writes doc over the config file and reloads it, as the file watch
// or a SIGHUP would; it returns the validation error, if any.
func (r *reloadable) reload(doc string) error {
	r.t.Helper()
	if err := os.WriteFile(r.path, []byte(doc), 0o600); err != nil {
		r.t.Fatal(err)
	}
	return r.d.control.Reload(context.Background())
}

func (r *reloadable) debugConfig() map[string]any {
	r.t.Helper()
	resp, err := http.Get(r.d.telemetry.AdminURL() + "/debug/config")
	if err != nil {
		r.t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		r.t.Fatal(err)
	}
	return out
}

// load is GETs sent from a few goroutines, each waiting for one answer
// before it sends the next, until stop.
type load struct {
	failed   atomic.Int64
	firstErr atomic.Value
	done     chan struct{}
	wg       sync.WaitGroup

	mu   sync.Mutex
	seen []string // the backend of each answer, in order
}

// steadyLoad sends GETs of url from n goroutines until stop.
func steadyLoad(t *testing.T, c *http.Client, url string, n int) *load {
	l := &load{done: make(chan struct{})}
	for range n {
		l.wg.Go(func() {
			for {
				select {
				case <-l.done:
					return
				default:
				}
				resp, err := c.Get(url)
				if err == nil {
					_, err = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if err == nil && resp.StatusCode != 200 {
						err = fmt.Errorf("status %d", resp.StatusCode)
					}
				}
				if err != nil {
					l.failed.Add(1)
					l.firstErr.CompareAndSwap(nil, err.Error())
					continue
				}
				l.mu.Lock()
				l.seen = append(l.seen, resp.Header.Get("X-Backend"))
				l.mu.Unlock()
			}
		})
	}
	t.Cleanup(func() { l.stop() })
	return l
}

// answers is how many GETs have been answered so far: a mark for since.
func (l *load) answers() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.seen)
}

// since counts, by backend, the answers that came after mark.
func (l *load) since(mark int) map[string]int {
	l.mu.Lock()
	defer l.mu.Unlock()
	counts := map[string]int{}
	for _, b := range l.seen[mark:] {
		counts[b]++
	}
	return counts
}

// stop stops the load and returns how many GETs failed (with the first
// failure) and which backends answered, in order. It may be called again.
func (l *load) stop() (failed int64, first string, seen []string) {
	select {
	case <-l.done:
	default:
		close(l.done)
	}
	l.wg.Wait()
	first, _ = l.firstErr.Load().(string)
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.failed.Load(), first, l.seen
}

func TestTwentyReloadsUnderLoadDropNothing(t *testing.T) {
	b1, b2 := startBackend(t, "b1"), startBackend(t, "b2")
	to := func(b *testBackend) string {
		return spookyConfig(allRoute, map[string][]string{"app": {b.addr}})
	}
	r := startReloadable(t, to(b1))
	const goroutines = 4
	l := steadyLoad(t, h3Client(t), r.url+"/bytes?n=64", goroutines)
	var mark int
	for i := range 20 {
		target := b2
		if i%2 == 1 {
			target = b1
		}
		if err := r.reload(to(target)); err != nil {
			t.Fatal(err)
		}
		// Reload returns once every stage has applied the config; the
		// load goes on to the new target before the next one.
		mark = l.answers()
		testkit.WaitFor(t, fmt.Sprintf("answers from %s after reload %d", target.name, i+1),
			func() bool { return l.since(mark)[target.name] >= goroutines })
	}
	// The last config sends everything to b1. Of the answers after it was
	// applied, only the requests in flight as it was, one per goroutine,
	// may come from b2.
	testkit.WaitFor(t, "40 answers after the last reload", func() bool { return l.answers()-mark >= 40+goroutines })
	failed, first, _ := l.stop()
	if failed != 0 {
		t.Fatalf("%d requests failed during reloads; first: %s", failed, first)
	}
	after := l.since(mark)
	if others := l.answers() - mark - after["b1"]; others > goroutines {
		t.Fatalf("after the last reload, answers came from %v; want b1's, and at most %d others from requests in flight", after, goroutines)
	}
	if v := r.debugConfig()["version"].(float64); v != 21 {
		t.Fatalf("/debug/config version %v, want 21", v)
	}
}

func TestInvalidReloadKeepsTheRunningConfig(t *testing.T) {
	b := startBackend(t, "b1")
	good := spookyConfig(allRoute, map[string][]string{"app": {b.addr}})
	r := startReloadable(t, good)
	c := h3Client(t)
	for _, tc := range []struct {
		name, doc, want string
	}{
		{"yaml syntax", good + "routes: [\n", "line"},
		{"unknown upstream", strings.Replace(good, "upstream: app", "upstream: nowhere", 1), `routes[0].upstream: "nowhere"`},
		{"missing certificate", strings.Replace(good, `listen: { address: "127.0.0.1:0" }`, `listen: { address: "127.0.0.1:0", tls: { cert: /nonexistent.pem, key: /nonexistent.key } }`, 1), "listen.tls.cert"},
		{"negative workers", strings.Replace(good, "workers: 64", "workers: -1", 1), "stages.pool.workers"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := r.reload(tc.doc); err == nil {
				t.Fatal("the invalid config was accepted")
			}
			resp, body := get(t, c, r.url+"/")
			if resp.StatusCode != 200 || body != "hello from b1\n" {
				t.Fatalf("after the rejected reload: %d %q", resp.StatusCode, body)
			}
			status := r.debugConfig()
			if status["last_result"] != "error" || !strings.Contains(status["last_error"].(string), tc.want) {
				t.Fatalf("/debug/config %v; want the error naming %q", status, tc.want)
			}
		})
	}
	resp, err := http.Get(r.d.telemetry.AdminURL() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(metrics), `spooky_config_reloads_total{result="error"} 4`) {
		t.Fatalf("reload errors not counted:\n%s", metrics)
	}
}

// TestConnectionSurvivesReloads keeps one QUIC connection open across a
// reload that changes routes, and across one that moves listen.address:
// the same connection goes on working, and the new address serves too.
func TestConnectionSurvivesReloads(t *testing.T) {
	b1, b2 := startBackend(t, "b1"), startBackend(t, "b2")
	r := startReloadable(t, spookyConfig(allRoute, map[string][]string{"app": {b1.addr}}))
	addr := strings.TrimPrefix(r.url, "https://")
	tlsConf := &tls.Config{InsecureSkipVerify: true, NextProtos: []string{http3.NextProtoH3}}
	qconn, err := quic.DialAddr(context.Background(), addr, tlsConf, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { qconn.CloseWithError(0, "") })
	cc := (&http3.Transport{}).NewClientConn(qconn)
	ask := func(url string) string {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, url, nil)
		resp, err := cc.RoundTrip(req)
		if err != nil {
			t.Fatalf("on the connection opened before the reloads: %v", err)
		}
		defer resp.Body.Close()
		return resp.Header.Get("X-Backend")
	}
	if got := ask(r.url + "/"); got != "b1" {
		t.Fatalf("answered by %q", got)
	}
	if err := r.reload(spookyConfig(allRoute, map[string][]string{"app": {b2.addr}})); err != nil {
		t.Fatal(err)
	}
	if got := ask(r.url + "/"); got != "b2" {
		t.Fatalf("after reload answered by %q", got)
	}

	moved := testkit.FreeAddr(t, "udp")
	doc := strings.Replace(spookyConfig(allRoute, map[string][]string{"app": {b2.addr}}), `address: "127.0.0.1:0" }`+"\nadmin", `address: "`+moved+`" }`+"\nadmin", 1)
	if err := r.reload(doc); err != nil {
		t.Fatal(err)
	}
	if got := ask(r.url + "/"); got != "b2" {
		t.Fatalf("after the move, the old connection got %q", got)
	}
	if qconn.Context().Err() != nil {
		t.Fatal("the connection opened before the reloads was closed")
	}
	if resp, _ := get(t, h3Client(t), "https://"+moved+"/"); resp.Header.Get("X-Backend") != "b2" {
		t.Fatalf("the new address answered %v", resp.Header)
	}
}

func TestStageTuningShowsLiveWithoutFailures(t *testing.T) {
	b := startBackend(t, "b1")
	doc := spookyConfig(allRoute, map[string][]string{"app": {b.addr}})
	r := startReloadable(t, doc)
	l := steadyLoad(t, h3Client(t), r.url+"/bytes?n=64", 4)
	tuned := strings.Replace(doc, "pool: { workers: 64, queue: 256 }", "pool: { workers: 7, queue: 9 }\n  router: { workers: 3, queue: 33 }", 1)
	mark := l.answers()
	if err := r.reload(tuned); err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, "50 answers with the tuned stages", func() bool { return l.answers()-mark >= 50 })
	if failed, first, _ := l.stop(); failed != 0 {
		t.Fatalf("%d requests failed; first %s", failed, first)
	}
	want := map[string][2]int{"pool": {7, 9}, "router": {3, 33}}
	for _, s := range r.d.telemetry.Stages() {
		if w, ok := want[s.Name]; ok && (s.Workers != w[0] || s.Mailbox.DataCap != w[1]) {
			t.Errorf("%s shows %d workers, queue %d; want %v", s.Name, s.Workers, s.Mailbox.DataCap, w)
		}
	}
}

func TestRemovedEndpointFinishesItsInFlightRequest(t *testing.T) {
	b1, b2 := startBackend(t, "b1"), startBackend(t, "b2")
	r := startReloadable(t, spookyConfig(allRoute, map[string][]string{"app": {b1.addr}}))
	c := h3Client(t)
	held := getInBackground(c, r.url+"/hold")
	testkit.Recv(t, b1.holding, "the request to reach b1")
	if err := r.reload(spookyConfig(allRoute, map[string][]string{"app": {b2.addr}})); err != nil {
		t.Fatal(err)
	}
	if resp, _ := get(t, c, r.url+"/"); resp.Header.Get("X-Backend") != "b2" {
		t.Fatalf("new requests went to %q", resp.Header.Get("X-Backend"))
	}
	b1.releaseHeld()
	if got := testkit.Recv(t, held, "the request in flight to end"); got != "200 held\n from b1" {
		t.Fatalf("the in-flight request to the removed endpoint: %q", got)
	}
}

func TestAdminServerMovesOnReload(t *testing.T) {
	b := startBackend(t, "b1")
	doc := spookyConfig(allRoute, map[string][]string{"app": {b.addr}})
	r := startReloadable(t, doc)
	moved := testkit.FreeAddr(t, "tcp")
	if err := r.reload(strings.Replace(doc, `admin: { address: "127.0.0.1:0" }`, `admin: { address: "`+moved+`" }`, 1)); err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, "the admin server to move", func() bool { return r.d.telemetry.AdminURL() == "http://"+moved })
	resp, err := http.Get("http://" + moved + "/debug/config")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
}

// TestFileChangesReloadByThemselves edits the config file as editors do, in
// place and by writing a new file and renaming it over the old one; each
// edit is picked up without a signal.
func TestFileChangesReloadByThemselves(t *testing.T) {
	b1, b2 := startBackend(t, "b1"), startBackend(t, "b2")
	to := func(b *testBackend) string {
		return spookyConfig(allRoute, map[string][]string{"app": {b.addr}})
	}
	r := startReloadable(t, to(b1))
	c := h3Client(t)
	answeredBy := func(name string) func() bool {
		return func() bool {
			resp, err := c.Get(r.url + "/")
			if err != nil {
				return false
			}
			resp.Body.Close()
			return resp.Header.Get("X-Backend") == name
		}
	}
	if err := os.WriteFile(r.path, []byte(to(b2)), 0o600); err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, "b2 to answer after the file was written", answeredBy("b2"))

	tmp := r.path + ".swp"
	if err := os.WriteFile(tmp, []byte(to(b1)), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, r.path); err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, "b1 to answer after a file was renamed over it", answeredBy("b1"))

	// Removed, which breaks the watch, and written anew, as some tools do.
	const rearming = "msg=\"config watch re-arming\""
	before := strings.Count(r.logs.String(), rearming)
	if err := os.Remove(r.path); err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, "the daemon to see the file gone", func() bool { return strings.Count(r.logs.String(), rearming) > before })
	if err := os.WriteFile(r.path, []byte(to(b2)), 0o600); err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, "b2 to answer after the file was written anew", answeredBy("b2"))
}

// writeCertificate writes a fresh self-signed certificate and key for
// localhost to dir, returning their paths and the certificate's serial.
func writeCertificate(t *testing.T, dir, name string) (certPath, keyPath, serial string) {
	t.Helper()
	cert, err := certs.Dev()
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalECPrivateKey(cert.PrivateKey.(*ecdsa.PrivateKey))
	if err != nil {
		t.Fatal(err)
	}
	certPath, keyPath = filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key")
	if err := os.WriteFile(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Certificate[0]}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certPath, keyPath, cert.Leaf.SerialNumber.String()
}

// TestCertificateReload: after a reload that names a new certificate, new
// handshakes get it, and a connection made with the old one goes on.
func TestCertificateReload(t *testing.T) {
	b := startBackend(t, "b1")
	dir := t.TempDir()
	cert1, key1, serial1 := writeCertificate(t, dir, "one")
	cert2, key2, serial2 := writeCertificate(t, dir, "two")
	withCert := func(cert, key string) string {
		return strings.Replace(spookyConfig(allRoute, map[string][]string{"app": {b.addr}}),
			`listen: { address: "127.0.0.1:0" }`,
			fmt.Sprintf(`listen: { address: "127.0.0.1:0", tls: { cert: %q, key: %q } }`, cert, key), 1)
	}
	r := startReloadable(t, withCert(cert1, key1))
	addr := strings.TrimPrefix(r.url, "https://")
	dial := func() (*quic.Conn, string) {
		t.Helper()
		conn, err := quic.DialAddr(context.Background(), addr, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{http3.NextProtoH3}}, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.CloseWithError(0, "") })
		return conn, conn.ConnectionState().TLS.PeerCertificates[0].SerialNumber.String()
	}
	old, got := dial()
	if got != serial1 {
		t.Fatalf("first handshake got serial %s, want %s", got, serial1)
	}
	if err := r.reload(withCert(cert2, key2)); err != nil {
		t.Fatal(err)
	}
	if _, got := dial(); got != serial2 {
		t.Fatalf("handshake after the reload got serial %s, want the new %s", got, serial2)
	}
	req, _ := http.NewRequest(http.MethodGet, r.url+"/", nil)
	resp, err := (&http3.Transport{}).NewClientConn(old).RoundTrip(req)
	if err != nil {
		t.Fatalf("the connection made before the reload: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
}

// TestReloadToABusyAddressChangesNothing: a new listen.address that is in
// use rejects the reload, shown on /debug/config, before any stage applied
// it: traffic stays on the old upstream too.
func TestReloadToABusyAddressChangesNothing(t *testing.T) {
	b1, b2 := startBackend(t, "b1"), startBackend(t, "b2")
	r := startReloadable(t, spookyConfig(allRoute, map[string][]string{"app": {b1.addr}}))
	busy, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	doc := strings.Replace(spookyConfig(allRoute, map[string][]string{"app": {b2.addr}}),
		`listen: { address: "127.0.0.1:0" }`, `listen: { address: "`+busy.LocalAddr().String()+`" }`, 1)
	if err := r.reload(doc); err == nil {
		t.Fatal("a reload to a busy address was accepted")
	}
	if resp, _ := get(t, h3Client(t), r.url+"/"); resp.Header.Get("X-Backend") != "b1" {
		t.Fatalf("answered by %q after the rejected reload", resp.Header.Get("X-Backend"))
	}
	if status := r.debugConfig(); status["last_result"] != "error" || !strings.Contains(status["last_error"].(string), "listen.address") {
		t.Fatalf("/debug/config %v", status)
	}
}
