package backend

import (
	"encoding/json"
	"net/http"
	"sync/atomic"
)

// InFlightPath is where a handler wrapped by [InFlight.Wrap] reports the
// count; requests for it are not counted.
const InFlightPath = "/inflight"

// InFlight counts the requests being served at once by the handlers it
// wraps, and the most there have been since it was last reset, so that a
// benchmark can tell whether every stream it opened through a proxy really
// reached the backend at the same time. The zero value is ready to use; one
// InFlight may wrap several handlers, and then counts them all.
type InFlight struct {
	now, peak atomic.Int64
}

// InFlightReport is the JSON body of [InFlightPath].
type InFlightReport struct {
	// Now is the number of requests being served when the report was made.
	Now int64 `json:"now"`
	// Peak is the most requests served at once since the last reset, or
	// since the start.
	Peak int64 `json:"peak"`
}

// Wrap returns h counted by g. It answers GET [InFlightPath] itself with
// an [InFlightReport]; with the query reset=1 it then starts the peak
// afresh from the requests being served.
func (g *InFlight) Wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == InFlightPath {
			g.report(w, r)
			return
		}
		g.enter()
		defer g.now.Add(-1)
		h.ServeHTTP(w, r)
	})
}

// Report returns the count and the peak.
func (g *InFlight) Report() InFlightReport {
	return InFlightReport{Now: g.now.Load(), Peak: g.peak.Load()}
}

func (g *InFlight) enter() {
	n := g.now.Add(1)
	for {
		p := g.peak.Load()
		if n <= p || g.peak.CompareAndSwap(p, n) {
			return
		}
	}
}

func (g *InFlight) report(w http.ResponseWriter, r *http.Request) {
	rep := g.Report()
	if r.URL.Query().Get("reset") == "1" {
		g.peak.Store(g.now.Load())
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(rep)
}
