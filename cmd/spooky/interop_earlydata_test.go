package main

import (
	"context"
	"crypto/tls"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/quic-go/quic-go/http3"

	"spooky/bench/backend"
	"spooky/internal/testkit"
)

// earlyDataRecorder is an upstream that serves the demo handlers and
// records, for every request it receives, its method, path and Early-Data
// header.
type earlyDataRecorder struct {
	mu   sync.Mutex
	seen []string // "METHOD /path Early-Data=value"
}

func (u *earlyDataRecorder) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	u.mu.Lock()
	u.seen = append(u.seen, r.Method+" "+r.URL.Path+" Early-Data="+r.Header.Get("Early-Data"))
	u.mu.Unlock()
	backend.Handler("b1").ServeHTTP(w, r)
}

// received returns what the upstream has received so far and forgets it.
func (u *earlyDataRecorder) received() []string {
	u.mu.Lock()
	defer u.mu.Unlock()
	seen := u.seen
	u.seen = nil
	return seen
}

// gtlsResumer runs gtlsclient against spooky with one session file and
// one transport parameters file, so that every run after the first resumes
// the session of the run before and may send its request in 0-RTT.
type gtlsResumer struct {
	bin        string
	url        string // spooky's base URL: the requests' authority
	dir        string // the session, transport parameters and request body files
	sessionTPs []string
}

func newGtlsResumer(t *testing.T, bin, url string) *gtlsResumer {
	dir := t.TempDir()
	return &gtlsResumer{bin: bin, url: url, dir: dir, sessionTPs: []string{
		"--session-file=" + filepath.Join(dir, "session.pem"),
		"--tp-file=" + filepath.Join(dir, "tp.pem"),
	}}
}

// run sends one request to spooky's path, through hold if it is not nil,
// and returns gtlsclient's output, which logs every frame it sends and
// receives. gtlsclient exits once its request's stream has closed and the
// handshake is confirmed (HANDSHAKE_DONE, RFC 9001 §4.1.2), which spooky
// never sends through hold: there it is stopped once the stream closed.
func (g *gtlsResumer) run(t *testing.T, spookyAddr string, hold *handshakeHold, method, path, body string) string {
	t.Helper()
	addr := spookyAddr
	if hold != nil {
		addr = hold.addr()
	}
	host, port, _ := strings.Cut(addr, ":")
	args := append([]string{"--exit-on-all-streams-close", "--timeout=5s", "--handshake-timeout=5s", "-m", method}, g.sessionTPs...)
	if body != "" {
		data := filepath.Join(g.dir, "body")
		if err := os.WriteFile(data, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		args = append(args, "--data="+data)
	}
	args = append(args, host, port, g.url+path)
	ctx, cancel := context.WithTimeout(context.Background(), testkit.Watchdog)
	defer cancel()
	cmd := exec.CommandContext(ctx, g.bin, args...)
	out := &closeWatch{closed: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	var err error
	if hold != nil {
		select {
		case <-out.closed:
			cmd.Process.Kill()
			<-exited
		case err = <-exited:
		}
	} else {
		err = <-exited
	}
	if err != nil {
		t.Fatalf("gtlsclient %s %s: %v\n%s", method, path, err, out)
	}
	return out.String()
}

// closeWatch collects gtlsclient's output and closes closed once it says
// that the request's stream closed.
type closeWatch struct {
	syncBuffer
	closed chan struct{}
	once   sync.Once
}

func (w *closeWatch) Write(p []byte) (int, error) {
	n, err := w.syncBuffer.Write(p)
	if strings.Contains(w.String(), "HTTP stream 0 closed") {
		w.once.Do(func() { close(w.closed) })
	}
	return n, err
}

// saved fails the test unless the last run left a session and transport
// parameters to resume with.
func (g *gtlsResumer) saved(t *testing.T) {
	t.Helper()
	for _, f := range []string{"session.pem", "tp.pem"} {
		if st, err := os.Stat(filepath.Join(g.dir, f)); err != nil || st.Size() == 0 {
			t.Fatalf("gtlsclient saved no %s to resume with: %v", f, err)
		}
	}
}

var (
	// sentRequestIn0RTT matches ngtcp2's log of a 0-RTT packet carrying
	// the end of the first request stream (stream 0, RFC 9000 §2.1): the
	// whole request, body included, went in early data.
	sentRequestIn0RTT = regexp.MustCompile(`frm tx \d+ 0RTT STREAM\(0x0[8-f]\) id=0x0 fin=1 `)
	// serverHandshakeCrypto matches ngtcp2's log of the server's TLS
	// handshake messages after its ServerHello.
	serverHandshakeCrypto = regexp.MustCompile(`frm rx \d+ Handshake CRYPTO\(0x06\) offset=\d+ len=(\d+)`)
)

// usedEarlyData says whether gtlsclient sent its request in 0-RTT and the
// server accepted it.
func usedEarlyData(out string) bool {
	return sentRequestIn0RTT.MatchString(out) && !strings.Contains(out, "Early data was rejected by server")
}

// handshakeBytes sums the TLS handshake bytes the server sent gtlsclient
// in Handshake packets: a full handshake's include the certificate, a
// resumed one's do not.
func handshakeBytes(out string) int {
	n := 0
	for _, m := range serverHandshakeCrypto.FindAllStringSubmatch(out, -1) {
		l, _ := strconv.Atoi(m[1])
		n += l
	}
	return n
}

// ticketAllowsEarlyData connects to spooky at url with quic-go and says
// whether the session ticket it gets allows 0-RTT (RFC 8446 §4.6.1,
// max_early_data_size), which gtlsclient does not look at.
func ticketAllowsEarlyData(t *testing.T, url string) bool {
	t.Helper()
	cache := &ticketSignal{ClientSessionCache: tls.NewLRUClientSessionCache(1), put: make(chan bool, 1)}
	tr := &http3.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true, ClientSessionCache: cache}}
	defer tr.Close()
	get(t, &http.Client{Transport: tr}, url+"/")
	return testkit.Recv(t, cache.put, "a session ticket")
}

// ticketSignal is a session cache that sends whether each ticket it is
// given allows early data.
type ticketSignal struct {
	tls.ClientSessionCache
	put chan bool
}

func (c *ticketSignal) Put(key string, cs *tls.ClientSessionState) {
	c.ClientSessionCache.Put(key, cs)
	if cs == nil {
		return
	}
	_, st, err := cs.ResumptionState()
	select {
	case c.put <- err == nil && st != nil && st.EarlyData:
	default:
	}
}

// TestNgtcp2ClientEarlyData resumes sessions with Debian's gtlsclient
// (--session-file, --tp-file) and sends requests in 0-RTT: a GET goes
// upstream with Early-Data: 1, a POST gets 425 and never reaches the
// upstream (RFC 8470), and with listen.quic.allow_0rtt: false the resumed
// connection carries no early data at all. gtlsclient's log says whether
// it sent the whole request in 0-RTT and whether the server rejected its
// early data; the upstream says whether spooky treated it as early.
//
// The resumed runs that send early data go through handshakeHold, which
// keeps spooky's side of the handshake from completing: on loopback the
// client's Finished could otherwise reach spooky before the request is
// processed, and the request would rightly be treated as not early.
func TestNgtcp2ClientEarlyData(t *testing.T) {
	bin := independentTool(t, "gtlsclient", "ngtcp2-client")
	up := &earlyDataRecorder{}
	upstream := testkit.StartH2C(t, up, testkit.H2COptions{})
	doc := spookyConfig(allRoute, map[string][]string{"app": {upstream}})

	t.Run("allowed", func(t *testing.T) {
		url, d := startSpooky(t, doc)
		spookyAddr := d.listener.Addr().String()
		g := newGtlsResumer(t, bin, url)
		if out := g.run(t, spookyAddr, nil, "GET", "/", ""); !strings.Contains(out, "[:status: 200]") {
			t.Fatalf("first run: not 200\n%s", out)
		}
		g.saved(t)
		up.received()

		hold := startHandshakeHold(t, spookyAddr)
		out := g.run(t, spookyAddr, hold, "GET", "/headers", "")
		if !usedEarlyData(out) {
			t.Fatalf("resumed GET: gtlsclient did not send it in accepted 0-RTT; the test proved nothing\n%s", out)
		}
		if !strings.Contains(out, "[:status: 200]") {
			t.Fatalf("GET in 0-RTT: not 200\n%s", out)
		}
		if seen := up.received(); len(seen) != 1 || seen[0] != "GET /headers Early-Data=1" {
			t.Fatalf("GET in 0-RTT: upstream received %q; want one GET /headers with Early-Data: 1", seen)
		}

		out = g.run(t, spookyAddr, hold, "POST", "/echo", "hello\n")
		if !usedEarlyData(out) {
			t.Fatalf("resumed POST: gtlsclient did not send it in accepted 0-RTT; the test proved nothing\n%s", out)
		}
		if !strings.Contains(out, "[:status: 425]") {
			t.Fatalf("POST in 0-RTT: not 425\n%s", out)
		}
		if seen := up.received(); len(seen) != 0 {
			t.Fatalf("POST in 0-RTT: upstream received %q; want nothing", seen)
		}

		if !ticketAllowsEarlyData(t, url) {
			t.Fatal("spooky's session ticket offers no early data with allow_0rtt: true")
		}
	})

	t.Run("disallowed", func(t *testing.T) {
		url, d := startSpooky(t, strings.Replace(doc, "listen: {", "listen: { quic: { allow_0rtt: false },", 1))
		spookyAddr := d.listener.Addr().String()
		g := newGtlsResumer(t, bin, url)
		first := g.run(t, spookyAddr, nil, "GET", "/", "")
		if !strings.Contains(first, "[:status: 200]") {
			t.Fatalf("first run: not 200\n%s", first)
		}
		g.saved(t)
		up.received()

		out := g.run(t, spookyAddr, nil, "GET", "/headers", "")
		if full, resumed := handshakeBytes(first), handshakeBytes(out); resumed == 0 || resumed >= full {
			t.Fatalf("the second run did not resume the first's session (server handshake %d bytes, first run's %d); the test proved nothing\n%s", resumed, full, out)
		}
		// gtlsclient 0.12 sends 0-RTT on a resumed session even when its
		// ticket allows none: spooky must reject it.
		if usedEarlyData(out) {
			t.Fatalf("spooky accepted 0-RTT with allow_0rtt: false\n%s", out)
		}
		if !strings.Contains(out, "[:status: 200]") {
			t.Fatalf("resumed GET: not 200\n%s", out)
		}
		if seen := up.received(); len(seen) != 1 || seen[0] != "GET /headers Early-Data=" {
			t.Fatalf("resumed GET: upstream received %q; want one GET /headers without Early-Data", seen)
		}
		if ticketAllowsEarlyData(t, url) {
			t.Fatal("spooky's session ticket offers early data with allow_0rtt: false")
		}
	})
}
