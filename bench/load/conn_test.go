package load

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net/http"
	"sync/atomic"
	"testing"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"

	"spooky/bench/backend"
)

// startCountingH3 serves the bench backend over HTTP/3 like startH3, and
// counts the QUIC connections the server accepts.
func startCountingH3(t *testing.T) (string, *atomic.Int64) {
	t.Helper()
	pc, cert := listenH3(t)
	var accepted atomic.Int64
	srv := &http3.Server{
		Handler:   backend.Handler("b1"),
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}},
		ConnContext: func(ctx context.Context, _ *quic.Conn) context.Context {
			accepted.Add(1)
			return ctx
		},
	}
	go srv.Serve(pc)
	t.Cleanup(func() { srv.Close() })
	return "https://" + pc.LocalAddr().String(), &accepted
}

// TestConnSurvivesFailedRequests provokes stream resets, some before the
// response headers, and checks every request still used one connection.
func TestConnSurvivesFailedRequests(t *testing.T) {
	base, accepted := startCountingH3(t)
	conn := NewConn(base[len("https://"):], insecure)
	t.Cleanup(func() { conn.Close() })

	get := func(path string) error {
		req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, base+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := conn.RoundTrip(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		_, err = io.Copy(io.Discard, resp.Body)
		return err
	}
	for range 20 {
		if err := get("/cut?n=10"); err == nil {
			t.Fatal("/cut completed cleanly, want a reset")
		}
	}
	if err := get("/healthz"); err != nil {
		t.Fatal(err)
	}
	if n := accepted.Load(); n != 1 {
		t.Errorf("requests came over %d connections, want 1", n)
	}

	conn.Close()
	if err := get("/healthz"); !errors.Is(err, ErrConnClosed) {
		t.Errorf("after Close: err = %v, want ErrConnClosed", err)
	}
}

func TestNewConnDefaultsPort(t *testing.T) {
	tests := []struct{ authority, want string }{
		{"example.com", "example.com:443"},
		{"example.com:8443", "example.com:8443"},
		{"127.0.0.1", "127.0.0.1:443"},
		{"[::1]", "[::1]:443"},
		{"[::1]:8443", "[::1]:8443"},
	}
	for _, tt := range tests {
		if got := NewConn(tt.authority, nil).authority; got != tt.want {
			t.Errorf("NewConn(%q) dials %q, want %q", tt.authority, got, tt.want)
		}
	}
}
