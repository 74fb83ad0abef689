package backend

import (
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"net/http"

	"github.com/quic-go/quic-go/http3"
)

// ServeH2C serves h over cleartext HTTP/2 with prior knowledge (RFC 9113
// section 3.3), the way spooky talks to its upstreams, on ln until the
// returned server is closed. Closing the server closes ln. HTTP/1 is not
// offered, so a proxy that falls back to it fails loudly instead of
// benchmarking the wrong protocol.
func ServeH2C(ln net.Listener, h http.Handler) *http.Server {
	var protocols http.Protocols
	protocols.SetUnencryptedHTTP2(true)
	srv := &http.Server{Handler: h, Protocols: &protocols}
	go func() {
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			slog.Error("backend: h2c server stopped", "addr", ln.Addr().String(), "err", err)
		}
	}()
	return srv
}

// ServeH2 serves h over HTTP/2 over TLS with cert (certs.Dev will do) on
// ln until the returned server is closed: the no-proxy reference for a
// client that speaks HTTP/2, as ServeH3 is for one that speaks HTTP/3.
// Closing the server closes ln. Only HTTP/2 is served, so a client that
// falls back to HTTP/1.1 fails instead of benchmarking the wrong protocol.
func ServeH2(ln net.Listener, h http.Handler, cert tls.Certificate) *http.Server {
	var protocols http.Protocols
	protocols.SetHTTP2(true)
	srv := &http.Server{
		Handler:   h,
		Protocols: &protocols,
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}},
	}
	go func() {
		if err := srv.ServeTLS(ln, "", ""); !errors.Is(err, http.ErrServerClosed) {
			slog.Error("backend: HTTP/2 over TLS server stopped", "addr", ln.Addr().String(), "err", err)
		}
	}()
	return srv
}

// ServeH3 serves h over HTTP/3 on pc with cert (certs.Dev
// will do) until the returned server is closed. It is the no-proxy
// reference a benchmark compares spooky against. Closing the server leaves
// pc open: the caller owns it and closes it after the server.
func ServeH3(pc net.PacketConn, h http.Handler, cert tls.Certificate) *http3.Server {
	srv := &http3.Server{
		Handler:   h,
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}},
	}
	go func() {
		if err := srv.Serve(pc); !errors.Is(err, http.ErrServerClosed) {
			slog.Error("backend: HTTP/3 server stopped", "addr", pc.LocalAddr().String(), "err", err)
		}
	}()
	return srv
}
