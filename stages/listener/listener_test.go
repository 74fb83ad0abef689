package listener

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/quic-go/quic-go/http3"

	"spooky/certs"
	"spooky/config"
	"spooky/envelope"
	"spooky/internal/testkit"
	"spooky/stages"
)

func listenConfig(address string) *config.Config {
	return &config.Config{Listen: config.Listen{
		Address:       address,
		AdmissionWait: time.Second,
		DrainTimeout:  5 * time.Second,
		Limits: config.ClientLimits{RequestHeaderBytes: 64 << 10, RequestHeaders: 100, RequestBodyBytes: 1 << 20,
			Connections: 100, ConnectionsPerClient: 100, ResetsPerSecond: 100},
		QUIC: config.QUIC{MaxStreams: 100, MaxHandshakes: 100, RetryAbove: 100},
	}}
}

// recorder keeps the status of every request the listener records.
type recorder struct {
	mu       sync.Mutex
	statuses []int
}

func (r *recorder) Record(e *envelope.Envelope) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.statuses = append(r.statuses, e.Status)
}

// fakeRouter answers every envelope in mb with 200 and the address of the
// socket the request came in on, until the test ends; a request for
// /nothing it finishes as a client gone away, with no answer at all, and
// one for /endless with a body that goes on until a write fails.
func fakeRouter(t *testing.T, mb *stages.Mailbox) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			msg, err := mb.Receive(ctx)
			if err != nil {
				return
			}
			if msg.IsControl {
				continue
			}
			e := msg.Data
			switch e.Request.URL.Path {
			case "/nothing":
				e.Finish(envelope.StatusClientClosed, stages.ErrClientClosed)
				continue
			case "/endless":
				// Writes until a write fails, as the relay does
				// to a client that stopped reading.
				e.ResponseStarted = true
				chunk := make([]byte, 64<<10)
				var err error
				for err == nil {
					_, err = e.Writer.Write(chunk)
				}
				e.Finish(http.StatusBadGateway, err)
				continue
			}
			local, _ := e.Request.Context().Value(http.LocalAddrContextKey).(net.Addr)
			e.Writer.WriteHeader(http.StatusOK)
			e.ResponseStarted = true
			io.WriteString(e.Writer, local.String())
			e.Finish(http.StatusOK, nil)
		}
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
}

// retirement is a drain timer the test fires.
type retirement struct {
	after  time.Duration
	retire func()
}

// start runs a listener on cfg, with a router that answers every request,
// until the test ends. Sockets it replaces are retired only when the test
// fires what it receives from retirements.
func start(t *testing.T, cfg *config.Config) (l *Listener, rec *recorder, retirements chan retirement) {
	t.Helper()
	router := stages.NewMailbox(config.Stage{Workers: 1, Queue: 16})
	fakeRouter(t, router)
	rec = &recorder{}
	l, err := New(cfg, router, rec, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	retirements = make(chan retirement, 4)
	l.afterFunc = func(d time.Duration, f func()) { retirements <- retirement{d, f} }
	t.Cleanup(func() {
		if err := l.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- l.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return l, rec, retirements
}

// client is an HTTP/3 client with connections of its own: a new client
// makes a new handshake.
func client(t *testing.T) *http.Client {
	tr := &http3.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}
	t.Cleanup(func() { tr.Close() })
	return &http.Client{Transport: tr, Timeout: 20 * time.Second}
}

// get requests / from address and fails unless the socket bound there
// answered 200. It returns the certificate the server showed.
func get(t *testing.T, c *http.Client, address string) *x509.Certificate {
	t.Helper()
	resp, err := c.Get("https://" + address + "/")
	if err != nil {
		t.Fatalf("GET %s: %v", address, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK || string(body) != address {
		t.Fatalf("GET %s: %s from %q", address, resp.Status, body)
	}
	return resp.TLS.PeerCertificates[0]
}

// reconfigure applies cfg as the control plane does.
func reconfigure(t *testing.T, l *Listener, cfg *config.Config) error {
	t.Helper()
	rc := stages.Reconfigure{Config: cfg, Done: make(chan struct{})}
	err := l.SendControl(context.Background(), rc)
	select {
	case <-rc.Done:
	default:
		t.Error("the listener did not say it applied the config")
	}
	return err
}

// freeAddress is a loopback UDP address nobody is bound to.
func freeAddress(t *testing.T) string {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.LocalAddr().String()
}

// inUse reports whether a UDP socket is bound to address.
func inUse(t *testing.T, address string) bool {
	t.Helper()
	addr, err := net.ResolveUDPAddr("udp", address)
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.ListenUDP("udp", addr)
	if err != nil {
		return true
	}
	c.Close()
	return false
}

func TestServesThroughTheRouter(t *testing.T) {
	l, rec, _ := start(t, listenConfig("127.0.0.1:0"))
	c := client(t)
	addr := l.Addr().String()
	get(t, c, addr)
	get(t, c, addr)
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.statuses) != 2 || rec.statuses[0] != 200 || rec.statuses[1] != 200 {
		t.Errorf("recorded %v, want two 200s", rec.statuses)
	}
	if n := l.Inspect().InFlight; n != 0 {
		t.Errorf("%d requests in flight after they were answered", n)
	}
}

func TestNewAddressServesAndTheOldOneDrains(t *testing.T) {
	l, _, retirements := start(t, listenConfig("127.0.0.1:0"))
	old := l.Addr().String()
	before := client(t)
	get(t, before, old)

	moved := freeAddress(t)
	cfg := listenConfig(moved)
	cfg.Listen.DrainTimeout = 7 * time.Second
	if err := reconfigure(t, l, cfg); err != nil {
		t.Fatalf("reload: %v", err)
	}
	if got := l.Addr().String(); got != moved {
		t.Fatalf("bound to %s after the move, want %s", got, moved)
	}
	get(t, client(t), moved)
	// A connection made before the move is served on through the drain.
	get(t, before, old)
	if !inUse(t, old) {
		t.Fatal("the old socket closed before its drain timeout")
	}

	var r retirement
	select {
	case r = <-retirements:
	default:
		t.Fatal("the old socket was not set to retire")
	}
	if r.after != 7*time.Second {
		t.Errorf("the old socket retires after %v, want the new drain timeout 7s", r.after)
	}
	r.retire()
	if inUse(t, old) {
		t.Error("the old socket is still bound after its drain timeout")
	}
	get(t, client(t), moved)
}

func TestReloadToAnAddressInUseChangesNothing(t *testing.T) {
	cfg := listenConfig("127.0.0.1:0")
	l, _, retirements := start(t, cfg)
	addr := l.Addr().String()
	cert := l.certs.Current()
	busy, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()

	next := listenConfig(busy.LocalAddr().String())
	next.Listen.TLS = testTLS(t, "not applied")
	next.Listen.AdmissionWait, next.Listen.DrainTimeout = 3*time.Second, 9*time.Second
	err = reconfigure(t, l, next)
	if err == nil || !strings.Contains(err.Error(), "listener: listen.address") {
		t.Fatalf("reload: %v; want the bind error naming listen.address", err)
	}
	if l.Addr().String() != addr || l.listenAddress() != cfg.Listen.Address {
		t.Errorf("moved to %s (%s)", l.Addr(), l.listenAddress())
	}
	if l.certs.Current() != cert {
		t.Error("the certificate changed")
	}
	if time.Duration(l.admissionWait.Load()) != cfg.Listen.AdmissionWait || l.DrainTimeout() != cfg.Listen.DrainTimeout {
		t.Errorf("admission wait %v, drain timeout %v changed", time.Duration(l.admissionWait.Load()), l.DrainTimeout())
	}
	if len(retirements) > 0 {
		t.Error("a socket was retired")
	}
	get(t, client(t), addr)
}

func TestBadCertificateUndoesTheMove(t *testing.T) {
	l, _, retirements := start(t, listenConfig("127.0.0.1:0"))
	addr := l.Addr().String()
	moved := freeAddress(t)
	next := listenConfig(moved)
	next.Listen.TLS = []config.TLS{{Cert: filepath.Join(t.TempDir(), "missing.pem"), Key: filepath.Join(t.TempDir(), "missing.key")}}
	err := reconfigure(t, l, next)
	if !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), "listener: certificate") {
		t.Fatalf("reload: %v; want the certificate error", err)
	}
	if inUse(t, moved) {
		t.Error("the socket bound for the failed reload is still open")
	}
	if l.Addr().String() != addr || len(retirements) > 0 {
		t.Errorf("moved to %s", l.Addr())
	}
	get(t, client(t), addr)
}

func TestCertificateOnReload(t *testing.T) {
	l, _, _ := start(t, listenConfig("127.0.0.1:0"))
	addr := l.Addr().String()
	dev := l.certs.Current()
	if !certs.IsDev(dev) {
		t.Fatal("no development certificate without listen.tls")
	}
	if got := get(t, client(t), addr); !got.Equal(dev.Leaf) {
		t.Fatalf("served %q, want the development certificate", got.Subject)
	}

	// Still no listen.tls: the same certificate, not a new one, so that
	// clients told to trust it go on trusting it.
	next := listenConfig("127.0.0.1:0") // the address as configured: no move
	next.Listen.AdmissionWait = 2 * time.Second
	if err := reconfigure(t, l, next); err != nil {
		t.Fatal(err)
	}
	if l.certs.Current() != dev {
		t.Error("a reload without listen.tls made a new certificate")
	}
	if got := get(t, client(t), addr); !got.Equal(dev.Leaf) {
		t.Errorf("served %q after the reload, want the same development certificate", got.Subject)
	}

	// listen.tls set: new handshakes get its certificate.
	next.Listen.TLS = testTLS(t, "from files")
	if err := reconfigure(t, l, next); err != nil {
		t.Fatal(err)
	}
	if got := get(t, client(t), addr); got.Subject.CommonName != "from files" {
		t.Errorf("served %q, want the certificate from listen.tls", got.Subject)
	}

	// listen.tls removed: back to a development certificate.
	next.Listen.TLS = nil
	if err := reconfigure(t, l, next); err != nil {
		t.Fatal(err)
	}
	if got := get(t, client(t), addr); !certs.IsDev(&tls.Certificate{Leaf: got}) {
		t.Errorf("served %q, want a development certificate", got.Subject)
	}
}

// testTLS is listen.tls for a fresh self-signed certificate named cn.
func testTLS(t *testing.T, cn string) []config.TLS {
	cert, key := testkit.SelfSigned(t, cn, false)
	return []config.TLS{{Cert: cert, Key: key}}
}
