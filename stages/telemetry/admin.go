package telemetry

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"sync"
	"time"
)

// AdminURL is the admin server's base URL once Serve has bound it, or "".
func (t *Telemetry) AdminURL() string {
	if u := t.adminURL.Load(); u != nil {
		return *u
	}
	return ""
}

// adminServer is the admin HTTP server on one address.
type adminServer struct {
	srv    *http.Server
	done   sync.WaitGroup
	failed chan error
}

// bindAdmin listens on address and serves the admin endpoints there until
// stop; failed receives the error if serving fails.
func (t *Telemetry) bindAdmin(address string) (*adminServer, error) {
	ln, err := net.Listen("tcp", address)
	if err != nil {
		return nil, fmt.Errorf("telemetry: admin.address %q: %w", address, err)
	}
	url := "http://" + ln.Addr().String()
	t.adminURL.Store(&url)
	a := &adminServer{
		srv:    &http.Server{Handler: t.adminHandler(), ReadHeaderTimeout: 5 * time.Second},
		failed: make(chan error, 1),
	}
	a.done.Go(func() {
		if err := a.srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			a.failed <- fmt.Errorf("telemetry: admin server: %w", err)
		}
	})
	return a, nil
}

// stop closes the server, giving requests in flight a second to finish.
func (a *adminServer) stop() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	a.srv.Shutdown(ctx)
	a.done.Wait()
}

// adminHandler serves the admin endpoints.
func (t *Telemetry) adminHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /debug/stages", t.serveStages)
	mux.HandleFunc("GET /debug/config", t.serveConfig)
	mux.HandleFunc("GET /debug/upstreams", t.serveUpstreams)
	mux.HandleFunc("GET /metrics", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
		t.writeMetrics(w)
	})
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return mux
}
