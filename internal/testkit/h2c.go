// Package testkit holds what spooky's tests share: servers started on
// loopback for the length of one test, and bounded waits. Only _test.go
// files import it.
package testkit

import (
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"testing"
)

// H2COptions tunes the server StartH2C starts; the zero value is net/http's
// defaults.
type H2COptions struct {
	// MaxStreams is the server's SETTINGS_MAX_CONCURRENT_STREAMS; 0 means
	// net/http's default.
	MaxStreams int
	// Listener, if set, is served instead of a new loopback listener; a
	// test wraps one to see or cut the server's connections.
	Listener net.Listener
}

// StartH2C serves h over cleartext HTTP/2 with prior knowledge (RFC 9113
// §3.3), the way spooky talks to h2c upstreams, on loopback until the test
// ends, and returns its address. HTTP/1 is not offered. Its error log is
// discarded: tests that break connections on purpose would fill it.
func StartH2C(t testing.TB, h http.Handler, opts H2COptions) string {
	t.Helper()
	var protocols http.Protocols
	protocols.SetUnencryptedHTTP2(true)
	srv := &http.Server{Handler: h, Protocols: &protocols, ErrorLog: log.New(io.Discard, "", 0)}
	if opts.MaxStreams > 0 {
		srv.HTTP2 = &http.HTTP2Config{MaxConcurrentStreams: opts.MaxStreams}
	}
	ln := opts.Listener
	if ln == nil {
		var err error
		if ln, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
			t.Fatal(err)
		}
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	t.Cleanup(func() {
		srv.Close()
		if err := <-served; !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("testkit: h2c server: %v", err)
		}
	})
	return ln.Addr().String()
}
