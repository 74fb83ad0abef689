package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"

	"spooky/bench/backend"
	"spooky/config"
	"spooky/internal/testkit"
	"spooky/supervisor"
)

// testBackend is an in-process h2c backend serving the demo handlers under
// its name, and /hold, which it answers ("held") only once the test calls
// releaseHeld: a request the test knows is in flight for as long as it
// wants.
type testBackend struct {
	name, addr string
	// holding is closed when the first request to /hold has arrived.
	holding     chan struct{}
	arrived     sync.Once
	release     chan struct{}
	releaseOnce sync.Once
}

func startBackend(t *testing.T, name string) *testBackend {
	t.Helper()
	b := &testBackend{name: name, holding: make(chan struct{}), release: make(chan struct{})}
	demo := backend.Handler(name)
	b.addr = testkit.StartH2C(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/hold" {
			demo.ServeHTTP(w, r)
			return
		}
		b.arrived.Do(func() { close(b.holding) })
		select {
		case <-b.release:
		case <-r.Context().Done():
			return
		}
		w.Header().Set("X-Backend", name)
		io.WriteString(w, "held\n")
	}), testkit.H2COptions{})
	return b
}

// releaseHeld answers every request to /hold, those waiting and those to
// come.
func (b *testBackend) releaseHeld() { b.releaseOnce.Do(func() { close(b.release) }) }

// spookyConfig renders a config with one route per upstream group, each
// group listing addrs.
func spookyConfig(routes string, groups map[string][]string) string {
	var b strings.Builder
	b.WriteString("listen: { address: \"127.0.0.1:0\" }\nadmin: { address: \"127.0.0.1:0\" }\nlog: { level: error }\n")
	b.WriteString("stages:\n  pool: { workers: 64, queue: 256 }\n")
	b.WriteString("routes:\n" + routes)
	b.WriteString("upstreams:\n")
	for name, addrs := range groups {
		fmt.Fprintf(&b, "  %s:\n    endpoints:\n", name)
		for _, a := range addrs {
			fmt.Fprintf(&b, "      - { address: %q }\n", a)
		}
	}
	return b.String()
}

func writeConfig(t *testing.T, doc string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(path, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// startSpooky runs a daemon in-process from a config file on disk and
// returns its HTTP/3 base URL and the daemon.
func startSpooky(t *testing.T, doc string) (string, *daemon) {
	t.Helper()
	return startSpookyFrom(t, writeConfig(t, doc))
}

// startSpookyFrom runs a daemon on the config file at path until the test
// ends, and returns its HTTP/3 base URL.
func startSpookyFrom(t *testing.T, path string) (string, *daemon) {
	t.Helper()
	return startSpookyLogging(t, path, testLogOutput())
}

// startSpookyLogging is startSpookyFrom with the daemon's log, at debug
// level, written to logs.
func startSpookyLogging(t *testing.T, path string, logs io.Writer) (string, *daemon) {
	t.Helper()
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	d, err := newDaemon(path, cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("daemon: %v", err)
		}
	})
	testkit.WaitFor(t, "every stage to be running and the admin server up", func() bool {
		for _, st := range d.supervisor.Statuses() {
			if st.State != supervisor.StateRunning {
				return false
			}
		}
		return d.telemetry.AdminURL() != ""
	})
	return "https://" + d.listener.Addr().String(), d
}

// syncBuffer is a buffer that a logger or a child process writes while the
// test reads it.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func h3Client(t *testing.T) *http.Client {
	t.Helper()
	tr := &http3.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}
	t.Cleanup(func() { tr.Close() })
	return &http.Client{Transport: tr, Timeout: 20 * time.Second}
}

func get(t *testing.T, c *http.Client, url string) (*http.Response, string) {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(body)
}

// getInBackground sends a GET of url in a goroutine and delivers its
// status, body and answering backend, or its error, on the channel.
func getInBackground(c *http.Client, url string) <-chan string {
	done := make(chan string, 1)
	go func() {
		resp, err := c.Get(url)
		if err != nil {
			done <- err.Error()
			return
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		done <- fmt.Sprint(resp.StatusCode, " ", string(body), " from ", resp.Header.Get("X-Backend"))
	}()
	return done
}

const allRoute = "  - { match: { host: \"*\", path_prefix: \"/\" }, upstream: app }\n"

func TestGetThroughSpooky(t *testing.T) {
	b := startBackend(t, "b1")
	url, _ := startSpooky(t, spookyConfig(allRoute, map[string][]string{"app": {b.addr}}))
	resp, body := get(t, h3Client(t), url+"/")
	if resp.StatusCode != 200 || body != "hello from b1\n" || resp.Header.Get("X-Backend") != "b1" {
		t.Fatalf("got %d %q %v", resp.StatusCode, body, resp.Header)
	}
	if resp.Proto != "HTTP/3.0" {
		t.Fatalf("proto %s", resp.Proto)
	}
}

func TestPostTenMebibytesEchoedByteExact(t *testing.T) {
	b := startBackend(t, "b1")
	url, _ := startSpooky(t, spookyConfig(allRoute, map[string][]string{"app": {b.addr}}))
	const size = 10 << 20
	pr, pw := io.Pipe()
	sent := sha256.New()
	go func() {
		chunk := make([]byte, 64<<10)
		for i := 0; i < size/len(chunk); i++ {
			for j := range chunk {
				chunk[j] = byte(i*31 + j)
			}
			sent.Write(chunk)
			if _, err := pw.Write(chunk); err != nil {
				pw.CloseWithError(err)
				return
			}
		}
		pw.Close()
	}()
	resp, err := h3Client(t).Post(url+"/echo", "application/octet-stream", pr)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	got := sha256.New()
	n, err := io.Copy(got, resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 || n != size || !bytes.Equal(got.Sum(nil), sent.Sum(nil)) {
		t.Fatalf("status %d, %d bytes back of %d, digests equal: %v", resp.StatusCode, n, size, bytes.Equal(got.Sum(nil), sent.Sum(nil)))
	}
}

// TestServerSentEventsArriveAsSent: an event reaches the client while the
// backend's response goes on. The backend sends the rest only once the
// client has read the first event, so a proxy that held events back until
// it had more would deliver nothing.
func TestServerSentEventsArriveAsSent(t *testing.T) {
	firstRead := make(chan struct{})
	addr := testkit.StartH2C(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, "data: 1\n\n")
		http.NewResponseController(w).Flush()
		select {
		case <-firstRead:
		case <-r.Context().Done():
			return
		}
		io.WriteString(w, "data: 2\n\ndata: 3\n\n")
	}), testkit.H2COptions{})
	url, _ := startSpooky(t, spookyConfig(allRoute, map[string][]string{"app": {addr}}))
	resp, err := h3Client(t).Get(url + "/events")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	r := bufio.NewReader(resp.Body)
	type line struct {
		s   string
		err error
	}
	first := make(chan line, 1)
	go func() {
		s, err := r.ReadString('\n')
		first <- line{s, err}
	}()
	if l := testkit.Recv(t, first, "the first event while the response goes on"); l.s != "data: 1\n" || l.err != nil {
		t.Fatalf("first line %q, %v", l.s, l.err)
	}
	close(firstRead)
	rest, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(rest), "data: 3") {
		t.Fatalf("rest %q", rest)
	}
}

func TestTrailersArrive(t *testing.T) {
	b := startBackend(t, "b1")
	url, _ := startSpooky(t, spookyConfig(allRoute, map[string][]string{"app": {b.addr}}))
	resp, body := get(t, h3Client(t), url+"/trailers")
	if resp.StatusCode != 200 || body == "" {
		t.Fatalf("got %d %q", resp.StatusCode, body)
	}
	if resp.Trailer.Get("Grpc-Status") != "0" || resp.Trailer.Get("Grpc-Message") != "ok" {
		t.Fatalf("trailers %v", resp.Trailer)
	}
}

// TestForwardedHeadersReachTheBackend: hop-by-hop fields stop at spooky,
// forwarding fields are added, and a client's X-Forwarded-For is extended
// only when it is a trusted proxy (trusted_proxies); from anyone else it
// is replaced.
func TestForwardedHeadersReachTheBackend(t *testing.T) {
	b := startBackend(t, "b1")
	for _, tc := range []struct {
		name, trusted, wantXFF string
	}{
		{"untrusted client", "", "127.0.0.1"},
		{"trusted proxy", "trusted_proxies: [ 127.0.0.1 ]\n", "203.0.113.7, 127.0.0.1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			url, _ := startSpooky(t, tc.trusted+spookyConfig(allRoute, map[string][]string{"app": {b.addr}}))
			req, _ := http.NewRequest("GET", url+"/headers", nil)
			// quic-go's client drops the connection-specific fields itself
			// and its server rejects them as malformed (RFC 9114 §4.2); what
			// can arrive is TE, which only "trailers" may survive, and
			// X-Forwarded-For from an earlier hop.
			req.Header.Set("Te", "trailers")
			req.Header.Set("X-Forwarded-For", "203.0.113.7")
			req.Header.Set("X-Custom", "kept")
			resp, err := h3Client(t).Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var seen backend.Received
			if err := json.NewDecoder(resp.Body).Decode(&seen); err != nil {
				t.Fatal(err)
			}
			h := seen.Header
			for _, name := range []string{"Connection", "Keep-Alive", "Proxy-Connection", "Transfer-Encoding", "Upgrade"} {
				if _, ok := h[name]; ok {
					t.Errorf("%s reached the backend", name)
				}
			}
			if got := h.Get("X-Forwarded-For"); got != tc.wantXFF {
				t.Errorf("X-Forwarded-For %q, want %q", got, tc.wantXFF)
			}
			if h.Get("X-Forwarded-Proto") != "https" || h.Get("Via") != "3 spooky" || h.Get("X-Custom") != "kept" {
				t.Errorf("headers %v", h)
			}
			if seen.Host != strings.TrimPrefix(url, "https://") {
				t.Errorf("backend saw :authority %q, client sent %q", seen.Host, strings.TrimPrefix(url, "https://"))
			}
		})
	}
}

func TestRoundRobinSpreadsEvenly(t *testing.T) {
	b1, b2 := startBackend(t, "b1"), startBackend(t, "b2")
	url, _ := startSpooky(t, spookyConfig(allRoute, map[string][]string{"app": {b1.addr, b2.addr}}))
	c := h3Client(t)
	counts := map[string]int{}
	for range 100 {
		resp, _ := get(t, c, url+"/")
		counts[resp.Header.Get("X-Backend")]++
	}
	if counts["b1"] != 50 || counts["b2"] != 50 {
		t.Fatalf("spread %v", counts)
	}
}

func TestErrorStatuses(t *testing.T) {
	b := startBackend(t, "b1")
	routes := "  - { match: { host: \"*\", path_prefix: \"/down\" }, upstream: down }\n" +
		"  - { match: { host: \"*\", path_prefix: \"/hold\" }, upstream: app, timeout: 200ms }\n" +
		"  - { match: { host: \"*\", path_prefix: \"/app\" }, upstream: app }\n"
	url, _ := startSpooky(t, spookyConfig(routes, map[string][]string{"app": {b.addr}, "down": {testkit.FreeAddr(t, "tcp")}}))
	c := h3Client(t)
	for _, tc := range []struct {
		path, want string
		status     int
	}{
		{"/nowhere", "no route", 404},
		{"/down", "upstream connect failed", 502},
		{"/hold", "route timeout", 504}, // held until the route's timeout cancels it
	} {
		resp, body := get(t, c, url+tc.path)
		if resp.StatusCode != tc.status || !strings.Contains(body, tc.want) || strings.Count(body, "\n") != 1 {
			t.Errorf("%s: got %d %q; want %d mentioning %q on one line", tc.path, resp.StatusCode, body, tc.status, tc.want)
		}
	}
}

func TestUpstreamDyingMidBodyResetsTheClientStream(t *testing.T) {
	b := startBackend(t, "b1")
	url, _ := startSpooky(t, spookyConfig(allRoute, map[string][]string{"app": {b.addr}}))
	var n int64
	resp, err := h3Client(t).Get(url + "/cut?n=100000")
	if err == nil {
		// The reset may overtake the response header, or come after
		// some of the body: either way it must surface as an error.
		n, err = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	var h3Err *http3.Error
	var streamErr *quic.StreamError
	if err == nil || !(errors.As(err, &h3Err) || errors.As(err, &streamErr)) {
		t.Fatalf("read %d bytes and then %v; want a stream error", n, err)
	}
}

func TestDebugStagesShowsEveryStage(t *testing.T) {
	b := startBackend(t, "b1")
	_, d := startSpooky(t, spookyConfig(allRoute, map[string][]string{"app": {b.addr}}))
	resp, err := http.Get(d.telemetry.AdminURL() + "/debug/stages")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out struct {
		Stages []struct {
			Name    string `json:"name"`
			State   string `json:"state"`
			Workers int    `json:"workers"`
			Mailbox *struct {
				DataCap int `json:"data_cap"`
			} `json:"mailbox"`
		} `json:"stages"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, s := range out.Stages {
		names[s.Name] = true
		if s.State != "running" {
			t.Errorf("%s is %s", s.Name, s.State)
		}
		if s.Name == "pool" && (s.Mailbox == nil || s.Mailbox.DataCap != 256 || s.Workers != 64) {
			t.Errorf("pool stage shows %+v", s)
		}
	}
	for _, want := range []string{"listener", "router", "balancer", "pool", "telemetry"} {
		if !names[want] {
			t.Errorf("stage %s missing from %v", want, names)
		}
	}
}

func TestMetricsCountRequests(t *testing.T) {
	b := startBackend(t, "b1")
	url, d := startSpooky(t, spookyConfig(allRoute, map[string][]string{"app": {b.addr}}))
	c := h3Client(t)
	for range 3 {
		get(t, c, url+"/")
	}
	want := `spooky_requests_total{route="*/",upstream="app",status_class="2xx"} 3`
	var text string
	testkit.WaitFor(t, "the requests to show on /metrics", func() bool {
		resp, err := http.Get(d.telemetry.AdminURL() + "/metrics")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		text = string(body)
		return strings.Contains(text, want)
	})
	if !strings.Contains(text, "spooky_request_duration_seconds_bucket{route=\"*/\",upstream=\"app\"") {
		t.Fatalf("no latency histogram in\n%s", text)
	}
}

func TestConcurrentRequestsAllAnswered(t *testing.T) {
	b1, b2 := startBackend(t, "b1"), startBackend(t, "b2")
	url, _ := startSpooky(t, spookyConfig(allRoute, map[string][]string{"app": {b1.addr, b2.addr}}))
	c := h3Client(t)
	var wg sync.WaitGroup
	errs := make(chan error, 200)
	for range 200 {
		wg.Go(func() {
			resp, err := c.Get(url + "/bytes?n=1000")
			if err != nil {
				errs <- err
				return
			}
			defer resp.Body.Close()
			n, err := io.Copy(io.Discard, resp.Body)
			if err != nil || n != 1000 || resp.StatusCode != 200 {
				errs <- fmt.Errorf("status %d, %d bytes, %v", resp.StatusCode, n, err)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func testLogOutput() io.Writer {
	if os.Getenv("TEST_LOG") != "" {
		return os.Stderr
	}
	return io.Discard
}

// TestOverloadShedsWithRetryAfter fills every queue behind the listener
// with requests the backend holds: requests that cannot get into the
// router's mailbox within the admission wait get 503 with Retry-After, and
// the admitted ones still succeed once the backend lets them go.
func TestOverloadShedsWithRetryAfter(t *testing.T) {
	b := startBackend(t, "b1")
	doc := strings.Replace(spookyConfig(allRoute, map[string][]string{"app": {b.addr}}),
		`listen: { address: "127.0.0.1:0" }`, `listen: { address: "127.0.0.1:0", admission_wait: 20ms }`, 1)
	doc = strings.Replace(doc, "pool: { workers: 64, queue: 256 }",
		"pool: { workers: 1, queue: 1 }\n  balancer: { workers: 1, queue: 1 }\n  router: { workers: 1, queue: 1 }", 1)
	url, d := startSpooky(t, doc)
	c := h3Client(t)
	const requests = 12 // twice what one worker and one place in each stage can hold
	var wg sync.WaitGroup
	var mu sync.Mutex
	statuses := map[int]int{}
	retryAfter := true
	shed := make(chan struct{}, requests)
	// Should a wait below fail, the requests still end before the test.
	t.Cleanup(func() { b.releaseHeld(); wg.Wait() })
	for range requests {
		wg.Go(func() {
			resp, err := c.Get(url + "/hold")
			if err != nil {
				t.Error(err)
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			mu.Lock()
			defer mu.Unlock()
			statuses[resp.StatusCode]++
			if resp.StatusCode == 503 {
				retryAfter = retryAfter && resp.Header.Get("Retry-After") != ""
				shed <- struct{}{}
			}
		})
	}
	testkit.Recv(t, b.holding, "a request to reach the backend")
	testkit.Recv(t, shed, "a request to be shed")
	b.releaseHeld()
	wg.Wait()
	if statuses[503] == 0 || statuses[200] == 0 || statuses[200]+statuses[503] != requests || !retryAfter {
		t.Fatalf("statuses %v, Retry-After on every 503: %v", statuses, retryAfter)
	}
	for _, s := range d.telemetry.Stages() {
		if s.Name == "router" && s.Mailbox.Dropped == 0 {
			t.Error("the router's mailbox counted no refused send")
		}
	}
}

// faultyStage fails every time it is started, once ready is closed.
type faultyStage struct{ ready <-chan struct{} }

func (f faultyStage) Serve(ctx context.Context) error {
	select {
	case <-f.ready:
	case <-ctx.Done():
		return nil
	}
	panic("faulty stage")
}

// stuckStage is a stage that does not stop when told to: it ignores its
// context and returns only when until is closed.
type stuckStage struct{ until <-chan struct{} }

func (s stuckStage) Serve(context.Context) error {
	<-s.until
	return nil
}

// TestEscalationStopsTheDaemon: a stage that keeps failing makes run
// return the escalation (exit code 3 in main) within the restart backoffs
// and the drain timeout, with a request in flight and a stage that does
// not stop.
func TestEscalationStopsTheDaemon(t *testing.T) {
	b := startBackend(t, "b1")
	d := newQuietDaemon(t, withListen(spookyConfig(allRoute, map[string][]string{"app": {b.addr}}), `drain_timeout: 1s`))
	// The stage starts failing once the request is with the backend.
	d.supervisor.Add(supervisor.Spec{Name: "faulty", Service: faultyStage{ready: b.holding}, Backoff: time.Millisecond, Intensity: 2})
	d.supervisor.Add(supervisor.Spec{Name: "stuck", Service: stuckStage{until: t.Context().Done()}})
	done := make(chan error, 1)
	go func() { done <- d.run(context.Background()) }()
	c := h3Client(t)
	go c.Get("https://" + d.listener.Addr().String() + "/hold")
	if err := testkit.Recv(t, done, "the daemon to stop after a stage escalated"); !errors.Is(err, supervisor.ErrEscalated) {
		t.Fatalf("run = %v, want the escalation", err)
	}
}

// TestRequestTrailersArrive: a client's request trailers (announced, as
// quic-go's client does) reach the backend.
func TestRequestTrailersArrive(t *testing.T) {
	addr := testkit.StartH2C(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		io.WriteString(w, r.Trailer.Get("X-Checksum"))
	}), testkit.H2COptions{})
	url, _ := startSpooky(t, spookyConfig(allRoute, map[string][]string{"app": {addr}}))
	req, _ := http.NewRequest(http.MethodPost, url+"/", strings.NewReader("payload"))
	req.Trailer = http.Header{"X-Checksum": {"abc"}}
	resp, err := h3Client(t).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "abc" {
		t.Fatalf("backend saw trailer %q", body)
	}
}
