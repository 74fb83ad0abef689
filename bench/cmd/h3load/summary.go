package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"time"

	"spooky/bench/load"
)

// loadTest runs the load test and prints its summary. A signal ends the run
// early; what was measured until then is still printed.
func loadTest(ctx context.Context, opts load.Options, asJSON bool) error {
	res, err := load.Run(ctx, opts)
	if res.Duration == 0 {
		return err // nothing measured: a bad option, or a signal during warmup
	}
	if asJSON {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		return errors.Join(err, enc.Encode(res))
	}
	printSummary(os.Stdout, res)
	return err
}

func printSummary(w io.Writer, r load.Result) {
	fmt.Fprintf(w, "requests     %d in %v (%.1f req/s)\n", r.Requests, r.Duration, r.RequestsPerSec)
	l := r.Latency
	fmt.Fprintf(w, "latency      p50 %v  p90 %v  p99 %v  max %v\n", round(l.P50), round(l.P90), round(l.P99), round(l.Max))
	fmt.Fprintf(w, "errors       transport %d  non-2xx %d\n", r.TransportErrors, r.Non2xx)
	if r.FirstError != "" {
		fmt.Fprintf(w, "first error  %s\n", r.FirstError)
	}
	fmt.Fprintf(w, "received     %d bytes (%s/s)\n", r.BytesReceived, size(r.BytesPerSec))
	fmt.Fprintf(w, "statuses    ")
	for _, code := range slices.Sorted(maps.Keys(r.Statuses)) {
		fmt.Fprintf(w, " %d: %d", code, r.Statuses[code])
	}
	fmt.Fprintln(w)
	// Busiest backend first, so an uneven spread stands out.
	backends := slices.SortedFunc(maps.Keys(r.Backends), func(a, b string) int {
		return cmp.Or(cmp.Compare(r.Backends[b], r.Backends[a]), cmp.Compare(a, b))
	})
	fmt.Fprintf(w, "backends    ")
	for _, b := range backends {
		fmt.Fprintf(w, " %s: %d", b, r.Backends[b])
	}
	fmt.Fprintln(w)
	for _, p := range r.Processes {
		peak := "unknown"
		if p.PeakRSSBytes > 0 {
			peak = size(float64(p.PeakRSSBytes))
		}
		fmt.Fprintf(w, "pid %-8d cpu %.1f%%  rss %s (before the load %s, peak %s)\n",
			p.PID, p.CPUPercent, size(float64(p.RSSBytes)), size(float64(p.IdleRSSBytes)), peak)
	}
}

// round drops the nanoseconds nobody reads from a latency figure.
func round(d time.Duration) time.Duration {
	switch {
	case d >= time.Second:
		return d.Round(10 * time.Millisecond)
	case d >= time.Millisecond:
		return d.Round(10 * time.Microsecond)
	default:
		return d.Round(time.Microsecond)
	}
}

// size formats a byte count with a binary unit.
func size(n float64) string {
	const unit = 1024
	units := []string{"B", "KiB", "MiB", "GiB", "TiB"}
	i := 0
	for n >= unit && i < len(units)-1 {
		n /= unit
		i++
	}
	return fmt.Sprintf("%.1f %s", n, units[i])
}
