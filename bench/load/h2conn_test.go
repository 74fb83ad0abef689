package load

import (
	"crypto/tls"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"spooky/bench/backend"
	"spooky/certs"
)

// countingListener counts the connections it accepts.
type countingListener struct {
	net.Listener
	accepted atomic.Int64
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.accepted.Add(1)
	}
	return c, err
}

// loopbackTLS is a listener on a fresh loopback port that counts what it
// accepts, and the dev certificate, for a test's HTTPS server.
func loopbackTLS(t *testing.T) (*countingListener, tls.Certificate) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cert, err := certs.Dev()
	if err != nil {
		t.Fatal(err)
	}
	return &countingListener{Listener: ln}, cert
}

// startH2 serves h over HTTP/2 over TLS on a loopback port, the way the
// bench backend does, and returns its base URL and a count of the TCP
// connections it accepted.
func startH2(t *testing.T, h http.Handler) (string, *atomic.Int64) {
	t.Helper()
	ln, cert := loopbackTLS(t)
	srv := backend.ServeH2(ln, h, cert)
	t.Cleanup(func() { srv.Close() })
	return "https://" + ln.Addr().String(), &ln.accepted
}

func TestRunH2(t *testing.T) {
	base, accepted := startH2(t, backend.Handler("b1"))
	res, err := Run(t.Context(), Options{
		URL:         base + "/bytes?n=100",
		Protocol:    ProtocolH2,
		Connections: 3,
		Streams:     8,
		Warmup:      100 * time.Millisecond,
		Duration:    500 * time.Millisecond,
		TLSConfig:   insecure,
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Requests == 0 || res.TransportErrors != 0 || res.Non2xx != 0 {
		t.Fatalf("requests %d, transport errors %d (%s), non-2xx %d; want some, 0, 0",
			res.Requests, res.TransportErrors, res.FirstError, res.Non2xx)
	}
	if res.BytesReceived != 100*res.Requests || res.Backends["b1"] != res.Requests {
		t.Errorf("bytes %d, backends %v; want 100 bytes and b1 for each of %d requests",
			res.BytesReceived, res.Backends, res.Requests)
	}
	// One TCP connection per logical connection, however many streams
	// each keeps in flight.
	if n := accepted.Load(); n != 3 {
		t.Errorf("the run opened %d TCP connections, want its 3", n)
	}
}

func TestRunH2SendsBodies(t *testing.T) {
	base, _ := startH2(t, backend.Handler("b1"))
	res, err := Run(t.Context(), Options{
		URL: base + "/echo", Protocol: ProtocolH2, Method: "POST", BodySize: 3000,
		Connections: 1, Streams: 2, Duration: 300 * time.Millisecond, TLSConfig: insecure,
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Requests == 0 || res.TransportErrors != 0 || res.BytesReceived != 3000*res.Requests {
		t.Errorf("requests %d, transport errors %d (%s), bytes %d; want every body echoed",
			res.Requests, res.TransportErrors, res.FirstError, res.BytesReceived)
	}
}

// TestH2ConnStreamLimit checks that requests beyond the server's limit of
// concurrent streams wait on the one connection instead of dialling
// another.
func TestH2ConnStreamLimit(t *testing.T) {
	ln, cert := loopbackTLS(t)
	var protocols http.Protocols
	protocols.SetHTTP2(true)
	srv := &http.Server{
		Handler:   backend.Handler("b1"),
		Protocols: &protocols,
		HTTP2:     &http.HTTP2Config{MaxConcurrentStreams: 2},
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}},
	}
	go srv.ServeTLS(ln, "", "")
	t.Cleanup(func() { srv.Close() })

	res, err := Run(t.Context(), Options{
		URL: "https://" + ln.Addr().String() + "/slow?d=20ms", Protocol: ProtocolH2,
		Connections: 1, Streams: 6, Duration: time.Second, TLSConfig: insecure,
	})
	if err != nil {
		t.Fatal(err)
	}
	// Whether requests complete in the window is not asserted: now and
	// then net/http's client, with strict stream limits and the server's
	// limit below what it sent before the server's SETTINGS arrived,
	// holds every request until the run ends (seen about once in six
	// runs). The point here is the one connection.
	if res.TransportErrors != 0 {
		t.Errorf("transport errors %d (%s); want none", res.TransportErrors, res.FirstError)
	}
	if n := ln.accepted.Load(); n != 1 {
		t.Errorf("6 streams on a server allowing 2 opened %d TCP connections, want 1", n)
	}
}

func TestH2ConnSurvivesResetsAndCloses(t *testing.T) {
	base, accepted := startH2(t, backend.Handler("b1"))
	conn := NewH2Conn(insecure)
	t.Cleanup(func() { conn.Close() })
	get := func(path string) (*http.Response, error) {
		req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, base+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := conn.RoundTrip(req)
		if err != nil {
			return nil, err
		}
		defer resp.Body.Close()
		_, err = io.Copy(io.Discard, resp.Body)
		return resp, err
	}
	for range 10 {
		if _, err := get("/cut?n=10"); err == nil {
			t.Fatal("/cut completed cleanly, want a reset")
		}
	}
	resp, err := get("/healthz")
	if err != nil {
		t.Fatal(err)
	}
	if resp.Proto != "HTTP/2.0" {
		t.Errorf("Proto = %s, want HTTP/2.0", resp.Proto)
	}
	if n := accepted.Load(); n != 1 {
		t.Errorf("requests came over %d connections, want 1", n)
	}

	// Close aborts a request in flight.
	errs := make(chan error, 1)
	go func() {
		_, err := get("/slow?d=10s")
		errs <- err
	}()
	time.Sleep(100 * time.Millisecond)
	conn.Close()
	select {
	case err := <-errs:
		if err == nil {
			t.Error("a request in flight at Close completed, want it aborted")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a request in flight at Close still runs 5s later")
	}
	if _, err := get("/healthz"); !errors.Is(err, ErrConnClosed) {
		t.Errorf("after Close: err = %v, want ErrConnClosed", err)
	}
}

// TestH2ConnRefusesHTTP1 checks that a server that only speaks HTTP/1.1
// fails the request instead of being measured as HTTP/2.
func TestH2ConnRefusesHTTP1(t *testing.T) {
	ln, cert := loopbackTLS(t)
	var protocols http.Protocols
	protocols.SetHTTP1(true)
	srv := &http.Server{
		Handler:   backend.Handler("b1"),
		Protocols: &protocols,
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}},
	}
	go srv.ServeTLS(ln, "", "")
	t.Cleanup(func() { srv.Close() })

	conn := NewH2Conn(insecure)
	t.Cleanup(func() { conn.Close() })
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, "https://"+ln.Addr().String()+"/", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := conn.RoundTrip(req)
	if err == nil {
		resp.Body.Close()
		t.Fatalf("an HTTP/1.1-only server answered over %s, want an error", resp.Proto)
	}
}

// TestRunH2Stall checks that a stalling run over HTTP/2 holds its streams
// to the end, counts nothing, and ends (its streams do not outlive it).
func TestRunH2Stall(t *testing.T) {
	base, accepted := startH2(t, backend.Handler("b1"))
	res, err := Run(t.Context(), Options{
		URL: base + "/bytes?n=8388608", Protocol: ProtocolH2, Stall: true,
		Connections: 2, Streams: 3, Duration: 300 * time.Millisecond, TLSConfig: insecure,
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Requests != 0 || res.TransportErrors != 0 || res.BytesReceived != 0 {
		t.Errorf("requests %d, transport errors %d (%s), bytes %d; want nothing counted",
			res.Requests, res.TransportErrors, res.FirstError, res.BytesReceived)
	}
	if n := accepted.Load(); n != 2 {
		t.Errorf("the run opened %d TCP connections, want its 2", n)
	}
}

// TestBackendServeH2 checks that backend.ServeH2 speaks HTTP/2 and nothing else:
// a client that offers only HTTP/1.1 fails (the server takes its request
// for a bad HTTP/2 preface, and logs so).
func TestBackendServeH2(t *testing.T) {
	ln, cert := loopbackTLS(t)
	srv := backend.ServeH2(ln, backend.Handler("b1"), cert)
	t.Cleanup(func() { srv.Close() })
	url := "https://" + ln.Addr().String() + "/headers"

	tests := []struct {
		name      string
		proto     func(*http.Protocols)
		wantProto string // empty: the request must fail
	}{
		{"h2", func(p *http.Protocols) { p.SetHTTP2(true) }, "HTTP/2.0"},
		{"HTTP/1.1 only", func(p *http.Protocols) { p.SetHTTP1(true) }, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var protocols http.Protocols
			tt.proto(&protocols)
			tr := &http.Transport{Protocols: &protocols, ForceAttemptHTTP2: true, TLSClientConfig: insecure}
			t.Cleanup(tr.CloseIdleConnections)
			req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, url, nil)
			if err != nil {
				t.Fatal(err)
			}
			resp, err := tr.RoundTrip(req)
			if tt.wantProto == "" {
				if err == nil {
					resp.Body.Close()
					t.Fatalf("answered over %s, want a failure", resp.Proto)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var got backend.Received
			if err := json.NewDecoder(resp.Body).Decode(&got); err != nil {
				t.Fatal(err)
			}
			if resp.Proto != tt.wantProto || got.Proto != tt.wantProto || resp.Header.Get("X-Backend") != "b1" {
				t.Errorf("client got %s, backend %s, X-Backend %q; want %s, %s, b1",
					resp.Proto, got.Proto, resp.Header.Get("X-Backend"), tt.wantProto, tt.wantProto)
			}
		})
	}
}
