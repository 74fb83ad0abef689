package listener

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"spooky/config"
	"spooky/envelope"
	"spooky/internal/testkit"
	"spooky/stages"
)

// tcpConfig is listenConfig with HTTPS over TCP on, as the defaults have
// it.
func tcpConfig(address string) *config.Config {
	cfg := listenConfig(address)
	cfg.Listen.TCP = config.TCP{Enabled: true, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: time.Minute}
	cfg.Listen.AltSvc = config.AltSvc{Enabled: true, MaxAge: 24 * time.Hour}
	return cfg
}

// tcpClient is an HTTPS client over TCP with connections of its own:
// HTTP/2 when h2, else HTTP/1.1 (no h2 in its ALPN).
func tcpClient(t *testing.T, h2 bool) *http.Client {
	tr := &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, ForceAttemptHTTP2: h2}
	if !h2 {
		tr.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
	}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 20 * time.Second}
}

// do sends req and returns its response with the body read.
func do(t *testing.T, c *http.Client, req *http.Request) (*http.Response, string) {
	t.Helper()
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(body)
}

func getURL(t *testing.T, c *http.Client, url string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	return do(t, c, req)
}

var tcpProtocols = []struct {
	name  string
	h2    bool
	proto string
}{{"HTTP/2", true, "HTTP/2.0"}, {"HTTP/1.1", false, "HTTP/1.1"}}

func TestServesOverTCPThroughTheRouter(t *testing.T) {
	l, rec, _ := start(t, tcpConfig("127.0.0.1:0"))
	udp := l.Addr().(*net.UDPAddr)
	tcp := l.TCPAddr()
	if tcp == nil || tcp.(*net.TCPAddr).Port != udp.Port {
		t.Fatalf("TCP bound to %v, want the QUIC port %d", tcp, udp.Port)
	}
	wantAltSvc := `h3=":` + strconv.Itoa(udp.Port) + `"; ma=86400`
	for _, p := range tcpProtocols {
		t.Run(p.name, func(t *testing.T) {
			resp, body := getURL(t, tcpClient(t, p.h2), "https://"+tcp.String()+"/")
			if resp.StatusCode != http.StatusOK || body != tcp.String() || resp.Proto != p.proto {
				t.Fatalf("%s %s from %q", resp.Proto, resp.Status, body)
			}
			if got := resp.Header.Get("Alt-Svc"); got != wantAltSvc {
				t.Errorf("Alt-Svc %q, want %q", got, wantAltSvc)
			}
			if resp.TLS.NegotiatedProtocol == "" && p.h2 {
				t.Error("no ALPN")
			}
		})
	}
	// HTTP/3 responses say nothing of HTTP/3.
	resp, err := client(t).Get("https://" + udp.String() + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if got := resp.Header.Get("Alt-Svc"); got != "" {
		t.Errorf("Alt-Svc %q over HTTP/3", got)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.statuses) != 3 {
		t.Errorf("recorded %v, want three requests", rec.statuses)
	}
}

func TestAltSvcAsConfigured(t *testing.T) {
	cfg := tcpConfig("127.0.0.1:0")
	cfg.Listen.AltSvc = config.AltSvc{Enabled: true, Port: 443, MaxAge: time.Hour}
	l, _, _ := start(t, cfg)
	url := "https://" + l.TCPAddr().String() + "/"
	resp, _ := getURL(t, tcpClient(t, true), url)
	if got, want := resp.Header.Get("Alt-Svc"), `h3=":443"; ma=3600`; got != want {
		t.Errorf("Alt-Svc %q, want %q", got, want)
	}

	cfg = tcpConfig("127.0.0.1:0")
	cfg.Listen.AltSvc.Enabled = false
	if err := reconfigure(t, l, cfg); err != nil {
		t.Fatal(err)
	}
	resp, _ = getURL(t, tcpClient(t, false), url)
	if got, ok := resp.Header["Alt-Svc"]; ok {
		t.Errorf("Alt-Svc %q with listen.alt_svc.enabled false", got)
	}
}

func TestHeaderLimitsOverTCP(t *testing.T) {
	cfg := tcpConfig("127.0.0.1:0")
	cfg.Listen.Limits.RequestHeaderBytes = 4 << 10
	l, _, _ := start(t, cfg)
	for _, p := range tcpProtocols {
		t.Run(p.name, func(t *testing.T) {
			req, _ := http.NewRequest(http.MethodGet, "https://"+l.TCPAddr().String()+"/", nil)
			req.Header.Set("X-Big", strings.Repeat("a", 5<<10))
			resp, body := do(t, tcpClient(t, p.h2), req)
			if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge || !strings.Contains(body, ErrHeaderTooLarge.Error()) {
				t.Errorf("%s %q, want spooky's 431", resp.Status, body)
			}
		})
	}
	if n := l.Inspect().Refused[refusedHeaderBytes]; n != 2 {
		t.Errorf("%d refusals counted, want 2", n)
	}
}

// TestUnansweredOverTCPIsAnError: a request the pipeline answers with
// nothing must not reach the client as an empty 200 over TCP either.
func TestUnansweredOverTCPIsAnError(t *testing.T) {
	l, _, _ := start(t, tcpConfig("127.0.0.1:0"))
	for _, p := range tcpProtocols {
		t.Run(p.name, func(t *testing.T) {
			resp, err := tcpClient(t, p.h2).Get("https://" + l.TCPAddr().String() + "/nothing")
			if err == nil {
				body, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				if err == nil {
					t.Fatalf("%s %q, want an error", resp.Status, body)
				}
			}
		})
	}
}

func TestReloadMovesTheTCPAddress(t *testing.T) {
	cfg := tcpConfig("127.0.0.1:0")
	cfg.Listen.TCP.Address = testkit.FreeAddr(t, "tcp")
	l, _, _ := start(t, cfg)
	old := l.TCPAddr().String()
	getURL(t, tcpClient(t, true), "https://"+old+"/")

	next := tcpConfig("127.0.0.1:0")
	next.Listen.TCP.Address = testkit.FreeAddr(t, "tcp")
	if err := reconfigure(t, l, next); err != nil {
		t.Fatal(err)
	}
	if got := l.TCPAddr().String(); got != next.Listen.TCP.Address {
		t.Fatalf("TCP bound to %s after the move, want %s", got, next.Listen.TCP.Address)
	}
	for _, p := range tcpProtocols {
		resp, body := getURL(t, tcpClient(t, p.h2), "https://"+next.Listen.TCP.Address+"/")
		if resp.StatusCode != http.StatusOK || body != next.Listen.TCP.Address {
			t.Fatalf("%s from %q", resp.Status, body)
		}
	}
	if c, err := net.Dial("tcp", old); err == nil {
		c.Close()
		t.Error("the old TCP address still takes connections")
	}

	// An address in use changes nothing.
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	bad := tcpConfig("127.0.0.1:0")
	bad.Listen.TCP.Address = busy.Addr().String()
	if err := reconfigure(t, l, bad); err == nil || !strings.Contains(err.Error(), "listen.tcp.address") {
		t.Fatalf("reload to a busy address: %v", err)
	}
	getURL(t, tcpClient(t, false), "https://"+next.Listen.TCP.Address+"/")
}

func TestTCPDisabledAndEnabled(t *testing.T) {
	var l *Listener
	var port string
	var cfg *config.Config
	// Enabling TCP binds the QUIC port's number over TCP, which another
	// process may have taken meanwhile (tests run side by side): such an
	// attempt starts again with a fresh listener, three times at most.
	for attempt := 1; ; attempt++ {
		cfg = tcpConfig("127.0.0.1:0")
		cfg.Listen.TCP.Enabled = false
		l, _, _ = start(t, cfg)
		if a := l.TCPAddr(); a != nil {
			t.Fatalf("bound TCP %v with listen.tcp.enabled false", a)
		}
		port = strconv.Itoa(l.Addr().(*net.UDPAddr).Port)
		if c, err := net.Dial("tcp", "127.0.0.1:"+port); err == nil {
			c.Close()
			t.Fatal("something takes TCP connections on the QUIC port")
		}
		cfg = tcpConfig("127.0.0.1:0")
		err := reconfigure(t, l, cfg)
		if err == nil {
			break
		}
		if attempt == 3 || !errors.Is(err, syscall.EADDRINUSE) {
			t.Fatal(err)
		}
	}
	if got := l.TCPAddr().(*net.TCPAddr).Port; strconv.Itoa(got) != port {
		t.Errorf("TCP on port %d once enabled, want the QUIC port %s", got, port)
	}
	resp, _ := getURL(t, tcpClient(t, true), "https://127.0.0.1:"+port+"/")
	if resp.StatusCode != http.StatusOK {
		t.Fatal(resp.Status)
	}

	cfg.Listen.TCP.Enabled = false
	if err := reconfigure(t, l, cfg); err != nil {
		t.Fatal(err)
	}
	if c, err := net.Dial("tcp", "127.0.0.1:"+port); err == nil {
		c.Close()
		t.Fatal("TCP still takes connections once disabled")
	}
}

func TestTCPConnectionsCountAgainstTheLimits(t *testing.T) {
	cfg := tcpConfig("127.0.0.1:0")
	cfg.Listen.Limits.ConnectionsPerClient = 1
	l, _, _ := start(t, cfg)
	addr := l.TCPAddr().String()
	dial := func() error {
		c, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true})
		if err == nil {
			t.Cleanup(func() { c.Close() })
		}
		return err
	}
	if err := dial(); err != nil {
		t.Fatal(err)
	}
	if err := dial(); err == nil {
		t.Fatal("a second connection from one client was taken with connections_per_client 1")
	}
	if n := l.Inspect().Refused[refusedPerClient]; n != 1 {
		t.Errorf("%d refusals counted, want 1", n)
	}
	// Nor may an HTTP/3 connection come on top of it.
	if _, err := client(t).Get("https://" + l.Addr().String() + "/"); err == nil {
		t.Error("an HTTP/3 connection was taken beside the TCP one")
	}
}

// TestReloadOfTCPTimeoutsSwapsTheServer: an http.Server is not changed
// while it serves, so new timeouts take a new server on the same socket,
// and the old one shuts down.
func TestReloadOfTCPTimeoutsSwapsTheServer(t *testing.T) {
	cfg := tcpConfig("127.0.0.1:0")
	l, _, _ := start(t, cfg)
	addr := l.TCPAddr().String()
	c := tcpClient(t, true)
	getURL(t, c, "https://"+addr+"/")
	l.mu.Lock()
	before := l.tcpSrv
	l.mu.Unlock()

	next := tcpConfig("127.0.0.1:0")
	next.Listen.TCP.IdleTimeout = 5 * time.Second
	if err := reconfigure(t, l, next); err != nil {
		t.Fatal(err)
	}
	l.mu.Lock()
	after := l.tcpSrv
	l.mu.Unlock()
	if after == before || after.IdleTimeout != 5*time.Second {
		t.Fatalf("server after the reload: %p (idle %v), before %p", after, after.IdleTimeout, before)
	}
	if got := l.TCPAddr().String(); got != addr {
		t.Fatalf("moved to %s", got)
	}
	testkit.WaitFor(t, "the old server to shut down", func() bool {
		l.mu.Lock()
		defer l.mu.Unlock()
		return len(l.tcpRetiring) == 0
	})
	for _, p := range tcpProtocols {
		getURL(t, tcpClient(t, p.h2), "https://"+addr+"/")
	}
	getURL(t, c, "https://"+addr+"/")

	// A reload that changes nothing of it keeps the server.
	if err := reconfigure(t, l, next); err != nil {
		t.Fatal(err)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.tcpSrv != after {
		t.Error("a reload that left listen.tcp alone replaced the server")
	}
}

// TestDrainFinishesTCPRequestsInFlight: on Drain, the TCP socket closes at
// once, and a request in flight over HTTP/2 or HTTP/1.1 is answered before
// Drain returns.
func TestDrainFinishesTCPRequestsInFlight(t *testing.T) {
	router := stages.NewMailbox(config.Stage{Workers: 1, Queue: 16})
	held := make(chan *envelope.Envelope, 2)
	go func() {
		for {
			msg, err := router.Receive(t.Context())
			if err != nil {
				return
			}
			held <- msg.Data
		}
	}()
	l, err := New(tcpConfig("127.0.0.1:0"), router, &recorder{}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- l.Serve(ctx) }()
	t.Cleanup(func() {
		stop()
		<-served
		l.Close()
	})
	addr := l.TCPAddr().String()
	answers := make(chan string, len(tcpProtocols))
	for _, p := range tcpProtocols {
		c := tcpClient(t, p.h2)
		go func() {
			resp, err := c.Get("https://" + addr + "/")
			if err != nil {
				answers <- err.Error()
				return
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			answers <- resp.Proto + " " + string(body)
		}()
	}
	var inFlight []*envelope.Envelope
	for range tcpProtocols {
		inFlight = append(inFlight, testkit.Recv(t, held, "a request in flight"))
	}
	drained := make(chan error, 1)
	go func() {
		dctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		drained <- l.Drain(dctx)
	}()
	testkit.WaitFor(t, "the TCP socket to close", func() bool {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
		}
		return err != nil
	})
	select {
	case err := <-drained:
		t.Fatalf("Drain returned (%v) with requests in flight", err)
	default:
	}
	for _, e := range inFlight {
		e.Writer.WriteHeader(http.StatusOK)
		e.ResponseStarted = true
		io.WriteString(e.Writer, "done")
		e.Finish(http.StatusOK, nil)
	}
	got := map[string]bool{}
	for range tcpProtocols {
		got[testkit.Recv(t, answers, "an answer")] = true
	}
	if !got["HTTP/2.0 done"] || !got["HTTP/1.1 done"] {
		t.Errorf("answers %v", got)
	}
	if err := testkit.Recv(t, drained, "the drain to end"); err != nil {
		t.Errorf("Drain: %v", err)
	}
}

// TestWriteIdleTimeoutOverTCP: a client over TCP that stops reading is cut
// off after listen.write_idle_timeout, as over HTTP/3, and its handler
// ends at once.
func TestWriteIdleTimeoutOverTCP(t *testing.T) {
	cfg := tcpConfig("127.0.0.1:0")
	cfg.Listen.WriteIdleTimeout = 200 * time.Millisecond
	l, _, _ := start(t, cfg)
	for _, p := range tcpProtocols {
		t.Run(p.name, func(t *testing.T) {
			resp, err := tcpClient(t, p.h2).Get("https://" + l.TCPAddr().String() + "/endless")
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			// Nothing of the body is read: the handler's writes
			// block once the windows and buffers are full.
			testkit.WaitFor(t, "the stalled response to be cut off", func() bool { return l.Inspect().InFlight == 0 })
			if _, err := io.Copy(io.Discard, resp.Body); err == nil {
				t.Error("the body of a response cut off ended cleanly")
			}
		})
	}
}

// TestATimedOutConnectionWritesNoMore: once a write to a TCP client timed
// out, later writes fail at once instead of waiting again for a client
// that reads nothing (crypto/tls would wait 5 s more to send close_notify).
func TestATimedOutConnectionWritesNoMore(t *testing.T) {
	client, server := net.Pipe() // nothing ever reads client
	defer client.Close()
	defer server.Close()
	c := &countedConn{Conn: server}
	c.SetWriteDeadline(time.Now())
	if _, err := c.Write([]byte("x")); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("write past its deadline: %v", err)
	}
	c.SetWriteDeadline(time.Time{}) // as crypto/tls does for close_notify
	done := make(chan error, 1)
	go func() {
		_, err := c.Write([]byte("close_notify"))
		done <- err
	}()
	if err := testkit.Recv(t, done, "the write after a timeout to fail"); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("write after a timeout: %v", err)
	}
}
