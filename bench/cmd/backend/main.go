// Command backend runs the bench backend (package spooky/bench/backend) as
// the upstreams a demo or benchmark puts behind spooky: one cleartext
// HTTP/2 server per -listen address, each answering as its own address so
// round robin is visible in X-Backend, and optionally the same routes over
// HTTP/3 with -h3 as the no-proxy reference to compare spooky against, and
// over HTTP/2 over TLS with -https as the reference for spooky's TCP
// listener.
// Every server also answers /inflight with the requests the process is
// serving at once and the most since the last /inflight?reset=1, counted
// over all of them (backend.InFlight).
//
//	backend -listen 127.0.0.1:9001,127.0.0.1:9002 -h3 127.0.0.1:9443 -https 127.0.0.1:9444
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"spooky/bench/backend"
	"spooky/certs"
)

// shutdownGrace bounds how long in-flight requests (a long /sse or /slow)
// may finish after a signal before their servers are closed under them.
const shutdownGrace = 5 * time.Second

func main() {
	listen := flag.String("listen", "127.0.0.1:9001,127.0.0.1:9002",
		"comma-separated TCP addresses to serve h2c (prior-knowledge HTTP/2) on; each answers as its address")
	h3 := flag.String("h3", "",
		"UDP address to also serve HTTP/3 on, with a self-signed certificate for localhost, 127.0.0.1 and ::1 (default: no HTTP/3)")
	https := flag.String("https", "",
		"TCP address to also serve HTTP/2 over TLS on (HTTP/2 only), with the same certificate as -h3 (default: none)")
	flag.Parse()
	if err := run(*listen, *h3, *https); err != nil {
		slog.Error("backend stopped", "err", err)
		os.Exit(1)
	}
}

// server is what run needs of an h2c, HTTP/2 or HTTP/3 server to stop it.
type server interface {
	Shutdown(context.Context) error
	Close() error
}

// running is a started server and the address it answers as.
type running struct {
	addr string
	srv  server
}

// run serves until SIGINT or SIGTERM, then shuts every server down.
func run(listen, h3Addr, httpsAddr string) (err error) {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	// One count over every server, answered on each at /inflight: a
	// benchmark reads how many requests reached the backend at once
	// whichever way they came.
	var inFlight backend.InFlight
	var servers []running
	// An http3.Server leaves its socket open, so it is closed after the server.
	var sockets []io.Closer
	defer func() {
		shutdownCtx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
		defer cancel()
		for _, r := range servers {
			err = errors.Join(err, r.shutdown(shutdownCtx))
		}
		for _, s := range sockets {
			err = errors.Join(err, s.Close())
		}
	}()

	// One self-signed certificate for HTTP/3 and HTTPS alike.
	devCert := sync.OnceValues(certs.Dev)
	for addr := range strings.SplitSeq(listen, ",") {
		ln, err := net.Listen("tcp", strings.TrimSpace(addr))
		if err != nil {
			return err
		}
		name := ln.Addr().String()
		servers = append(servers, running{name, backend.ServeH2C(ln, inFlight.Wrap(backend.Handler(name)))})
		slog.Info("serving h2c", "addr", name)
	}
	if h3Addr != "" {
		pc, err := net.ListenPacket("udp", h3Addr)
		if err != nil {
			return err
		}
		sockets = append(sockets, pc)
		name := pc.LocalAddr().String()
		cert, err := devCert()
		if err != nil {
			return fmt.Errorf("HTTP/3 on %s: %w", name, err)
		}
		servers = append(servers, running{name, backend.ServeH3(pc, inFlight.Wrap(backend.Handler(name)), cert)})
		slog.Info("serving HTTP/3", "addr", name)
	}
	if httpsAddr != "" {
		ln, err := net.Listen("tcp", httpsAddr)
		if err != nil {
			return err
		}
		name := ln.Addr().String()
		cert, err := devCert()
		if err != nil {
			ln.Close()
			return fmt.Errorf("HTTPS on %s: %w", name, err)
		}
		servers = append(servers, running{name, backend.ServeH2(ln, inFlight.Wrap(backend.Handler(name)), cert)})
		slog.Info("serving HTTP/2 over TLS", "addr", name)
	}

	<-ctx.Done()
	stop() // a second signal kills the process instead of waiting for the grace period
	slog.Info("shutting down", "grace", shutdownGrace)
	return nil
}

// shutdown lets the server finish its requests until ctx ends, then cuts
// the rest: long /sse and /slow requests are normal here, not a failure to
// stop.
func (r running) shutdown(ctx context.Context) error {
	err := r.srv.Shutdown(ctx)
	if errors.Is(err, context.DeadlineExceeded) {
		slog.Warn("grace period over, closing open connections", "addr", r.addr)
		return r.srv.Close()
	}
	return err
}
