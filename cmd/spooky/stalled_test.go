package main

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"testing/iotest"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"

	"spooky/internal/testkit"
)

// stallingClient is an HTTP/3 client whose streams take at most 64 KiB
// that nobody reads: a response body it does not read stalls spooky's
// writes after that.
func stallingClient(t *testing.T) *http3.Transport {
	t.Helper()
	tr := &http3.Transport{
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true},
		QUICConfig: &quic.Config{
			InitialStreamReceiveWindow:     64 << 10,
			MaxStreamReceiveWindow:         64 << 10,
			InitialConnectionReceiveWindow: 64 << 20,
			MaxConnectionReceiveWindow:     64 << 20,
		},
	}
	t.Cleanup(func() { tr.Close() })
	return tr
}

// TestStalledReadersHoldNoPoolWorker opens more never-read downloads than
// the pool has workers: ordinary requests are still served, because a pool
// worker hands each response to the listener to relay at the client's
// pace; and once the stalled clients have taken nothing for
// listen.write_idle_timeout, their streams are reset and nothing of them
// is left in flight.
func TestStalledReadersHoldNoPoolWorker(t *testing.T) {
	const workers, stalled = 4, 16
	b := startBackend(t, "b1")
	doc := spookyConfig(allRoute, map[string][]string{"app": {b.addr}})
	doc = strings.Replace(doc, `listen: { address: "127.0.0.1:0" }`, `listen: { address: "127.0.0.1:0", write_idle_timeout: 300ms }`, 1)
	doc = strings.Replace(doc, "pool: { workers: 64,", "pool: { workers: 4,", 1)
	url, d := startSpooky(t, doc)

	slow := stallingClient(t)
	var bodies []io.ReadCloser
	for range stalled {
		req, _ := http.NewRequest(http.MethodGet, url+"/bytes?n=8388608", nil)
		resp, err := slow.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("stalled download: status %d", resp.StatusCode)
		}
		bodies = append(bodies, resp.Body)
	}
	if n := d.listener.Inspect().InFlight; n < workers {
		t.Fatalf("only %d downloads in flight; the test needs more than the %d pool workers", n, workers)
	}

	c := h3Client(t)
	for range 20 {
		if resp, body := get(t, c, url+"/"); resp.StatusCode != http.StatusOK {
			t.Fatalf("ordinary request beside %d stalled downloads: %d %q", stalled, resp.StatusCode, body)
		}
	}

	// The stalled streams are reset once they have taken nothing for the
	// write idle timeout; their handlers end.
	testkit.WaitFor(t, "the stalled downloads to be reset", func() bool { return d.listener.Inspect().InFlight == 0 })
	for i, body := range bodies {
		n, err := io.Copy(io.Discard, body)
		var streamErr *quic.StreamError
		var h3Err *http3.Error
		if err == nil || !(errors.As(err, &streamErr) || errors.As(err, &h3Err)) {
			t.Fatalf("stalled download %d: read %d bytes, then %v; want a reset stream", i, n, err)
		}
	}
}

// TestRouteTimeoutEndsABodyInProgress: the route timeout bounds the whole
// exchange, body included, even while the client reads nothing.
func TestRouteTimeoutEndsABodyInProgress(t *testing.T) {
	b := startBackend(t, "b1")
	routes := "  - { match: { host: \"*\", path_prefix: \"/\" }, upstream: app, timeout: 300ms }\n"
	url, d := startSpooky(t, spookyConfig(routes, map[string][]string{"app": {b.addr}}))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url+"/bytes?n=8388608", nil)
	resp, err := stallingClient(t).RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	testkit.WaitFor(t, "the route timeout to end the download", func() bool { return d.listener.Inspect().InFlight == 0 })
	if n, err := io.Copy(io.Discard, resp.Body); err == nil {
		t.Fatalf("read %d bytes of 8 MiB and a clean end; want a reset", n)
	}
}

// h3Conn opens one QUIC connection to spooky and an HTTP/3 client
// connection on it, so that a test knows which connection its requests use.
func h3Conn(t *testing.T, url string) *http3.ClientConn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	qc, err := quic.DialAddr(ctx, strings.TrimPrefix(url, "https://"),
		&tls.Config{InsecureSkipVerify: true, NextProtos: []string{http3.NextProtoH3}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { qc.CloseWithError(0, "") })
	return (&http3.Transport{}).NewClientConn(qc)
}

// TestUploadCutBeforeAnswerIsNoSuccess: a client whose upload breaks off
// (its send side reset mid-body) before any response must not read a
// response at all, let alone a 2xx: spooky resets the stream with
// H3_REQUEST_INCOMPLETE.
func TestUploadCutBeforeAnswerIsNoSuccess(t *testing.T) {
	// The upstream answers only once it has the whole body.
	addr := testkit.StartH2C(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, err := io.Copy(io.Discard, r.Body); err == nil {
			w.WriteHeader(http.StatusOK)
		}
	}), testkit.H2COptions{})
	url, _ := startSpooky(t, spookyConfig(allRoute, map[string][]string{"app": {addr}}))
	// The client's body fails after 64 KiB of the 1 MiB it declared:
	// quic-go's client then resets its send side and waits for the answer.
	body := io.MultiReader(strings.NewReader(strings.Repeat("x", 64<<10)), iotest.ErrReader(errors.New("upload cut")))
	req, _ := http.NewRequest(http.MethodPost, url+"/", body)
	req.ContentLength = 1 << 20
	resp, err := h3Conn(t, url).RoundTrip(req)
	if err == nil {
		t.Fatalf("got a %d response to an upload that was cut off; want the stream reset", resp.StatusCode)
	}
	var streamErr *quic.StreamError
	if !errors.As(err, &streamErr) || streamErr.ErrorCode != quic.StreamErrorCode(http3.ErrCodeRequestIncomplete) {
		t.Fatalf("got %v; want the stream reset with H3_REQUEST_INCOMPLETE", err)
	}
}
