package main

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"spooky/internal/testkit"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
)

// withListen adds keys to the listen mapping of a spookyConfig document.
func withListen(doc, keys string) string {
	return strings.Replace(doc, `listen: { address: "127.0.0.1:0" }`, `listen: { address: "127.0.0.1:0", `+keys+` }`, 1)
}

func TestRequestLimits(t *testing.T) {
	b := startBackend(t, "b1")
	doc := withListen(spookyConfig(allRoute, map[string][]string{"app": {b.addr}}),
		`limits: { request_header_bytes: 8KiB, request_headers: 20, request_body_bytes: 64KiB }`)
	url, d := startSpooky(t, doc)
	c := h3Client(t)
	do := func(req *http.Request) (*http.Response, string, error) {
		resp, err := c.Do(req)
		if err != nil {
			return nil, "", err
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		return resp, string(body), err
	}
	for _, tc := range []struct {
		name   string
		build  func() *http.Request
		status int
		want   string
	}{
		{"within every limit", func() *http.Request {
			req, _ := http.NewRequest(http.MethodPost, url+"/echo", strings.NewReader(strings.Repeat("x", 64<<10)))
			for i := range 15 {
				req.Header.Set("X-Field-"+string(rune('a'+i)), "v")
			}
			return req
		}, 200, strings.Repeat("x", 64<<10)},
		{"too many fields", func() *http.Request {
			req, _ := http.NewRequest(http.MethodGet, url+"/", nil)
			for i := range 21 {
				req.Header.Add("X-Many", string(rune('a'+i)))
			}
			return req
		}, 431, "too many request header fields"},
		{"too many bytes", func() *http.Request {
			req, _ := http.NewRequest(http.MethodGet, url+"/", nil)
			req.Header.Set("X-Big", strings.Repeat("b", 9<<10))
			return req
		}, 431, "request header fields too large"},
		{"declared body too large", func() *http.Request {
			req, _ := http.NewRequest(http.MethodPost, url+"/echo", strings.NewReader(strings.Repeat("x", 64<<10+1)))
			return req
		}, 413, "request body too large"},
	} {
		resp, body, err := do(tc.build())
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		if resp.StatusCode != tc.status || !strings.Contains(body, tc.want) {
			t.Errorf("%s: got %d %.80q; want %d with %q", tc.name, resp.StatusCode, body, tc.status, tc.want)
		}

	}

	// A body of unannounced length is cut off at the limit: the stream is
	// reset, never answered as if whole.
	body := io.MultiReader(strings.NewReader(strings.Repeat("x", 64<<10)), strings.NewReader("one byte too many"))
	req, _ := http.NewRequest(http.MethodPost, url+"/echo", io.NopCloser(body))
	req.ContentLength = -1
	if resp, err := h3Conn(t, url).RoundTrip(req); err == nil {
		got, err := io.ReadAll(resp.Body)
		if err == nil {
			t.Errorf("undeclared body past the limit: got %d with %d bytes; want the stream reset", resp.StatusCode, len(got))
		}
	}

	refused := d.listener.Inspect().Refused
	for reason, want := range map[string]uint64{"request_headers": 1, "request_header_bytes": 1, "request_body_bytes": 2} {
		if refused[reason] != want {
			t.Errorf("refused[%s] = %d, want %d (all: %v)", reason, refused[reason], want, refused)
		}
	}
}

func TestConnectionsPerClientAreCapped(t *testing.T) {
	b := startBackend(t, "b1")
	url, d := startSpooky(t, withListen(spookyConfig(allRoute, map[string][]string{"app": {b.addr}}),
		`limits: { connections_per_client: 2 }`))
	addr := strings.TrimPrefix(url, "https://")
	dial := func() (*quic.Conn, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return quic.DialAddr(ctx, addr, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{http3.NextProtoH3}}, nil)
	}
	var open []*quic.Conn
	t.Cleanup(func() {
		for _, c := range open {
			c.CloseWithError(0, "")
		}
	})
	for range 2 {
		c, err := dial()
		if err != nil {
			t.Fatalf("connection within the limit: %v", err)
		}
		open = append(open, c)
	}
	var te *quic.TransportError
	if c, err := dial(); err == nil {
		open = append(open, c)
		t.Fatal("a third connection from one address was accepted; want it refused")
	} else if !errors.As(err, &te) || te.ErrorCode != quic.ConnectionRefused {
		t.Fatalf("third connection: %v; want CONNECTION_REFUSED", err)
	}
	if n := d.listener.Inspect().Refused["connections_per_client"]; n == 0 {
		t.Fatalf("refused connections_per_client = %d, want at least 1 (quic-go may count a resent Initial twice)", n)
	}
	// Closing one makes room again.
	open[0].CloseWithError(0, "")
	open = open[1:]
	testkit.WaitFor(t, "a connection from the same client once one closed", func() bool {
		c, err := dial()
		if err != nil {
			return false
		}
		open = append(open, c)
		return true
	})
}

// TestRapidResetClosesTheConnection opens streams on one connection and
// resets each right after its request head: past resets_per_second (with
// its burst) spooky closes the connection with H3_EXCESSIVE_LOAD, while a
// client on another connection is served.
func TestRapidResetClosesTheConnection(t *testing.T) {
	b := startBackend(t, "b1")
	url, d := startSpooky(t, withListen(spookyConfig(allRoute, map[string][]string{"app": {b.addr}}),
		`limits: { resets_per_second: 5 }`))
	cc := h3Conn(t, url)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	closed := cc.Context().Done()
	for i := 0; i < 200; i++ {
		str, err := cc.OpenRequestStream(ctx)
		if err != nil {
			break
		}
		req, _ := http.NewRequest(http.MethodGet, url+"/slow?d=10s", nil)
		if err := str.SendRequestHeader(req); err != nil {
			break
		}
		// Wait until spooky has the request, so the reset is of a
		// stream it serves, not one it never read.
		testkit.WaitFor(t, "spooky to hold the request (or close the connection)", func() bool { return d.listener.Inspect().InFlight > 0 || cc.Context().Err() != nil })
		str.CancelRead(quic.StreamErrorCode(http3.ErrCodeRequestCanceled))
		str.CancelWrite(quic.StreamErrorCode(http3.ErrCodeRequestCanceled))
		select {
		case <-closed:
			i = 200
		default:
		}
		testkit.WaitFor(t, "the reset request to end", func() bool { return d.listener.Inspect().InFlight == 0 })
	}
	select {
	case <-closed:
	case <-ctx.Done():
		t.Fatal("the connection was not closed after 200 rapid resets")
	}
	var appErr *quic.ApplicationError
	if err := context.Cause(cc.Context()); !errors.As(err, &appErr) || appErr.ErrorCode != quic.ApplicationErrorCode(http3.ErrCodeExcessiveLoad) {
		t.Fatalf("connection closed with %v; want H3_EXCESSIVE_LOAD", err)
	}
	if resp, body := get(t, h3Client(t), url+"/"); resp.StatusCode != http.StatusOK {
		t.Fatalf("another client after the attack: %d %q", resp.StatusCode, body)
	}
	if n := d.listener.Inspect().Refused["resets_per_second"]; n != 1 {
		t.Fatalf("refused resets_per_second = %d, want 1", n)
	}
}

// TestRetryAboveZeroAsksEveryClient: with quic.retry_above 0 every client
// proves its address with a Retry first, and is then served.
func TestRetryAboveZeroAsksEveryClient(t *testing.T) {
	b := startBackend(t, "b1")
	url, d := startSpooky(t, withListen(spookyConfig(allRoute, map[string][]string{"app": {b.addr}}),
		`quic: { retry_above: 0 }`))
	if resp, body := get(t, h3Client(t), url+"/"); resp.StatusCode != http.StatusOK {
		t.Fatalf("after a Retry: %d %q", resp.StatusCode, body)
	}
	if n := d.listener.Inspect().Refused["retry"]; n == 0 {
		t.Fatal("no Retry was asked for")
	}
}
