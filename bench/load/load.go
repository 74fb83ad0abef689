// Package load owns closed-loop load generation for spooky's benchmarks,
// over HTTP/3 or HTTP/2 over TLS: it opens a fixed number of QUIC or TCP
// connections, keeps a fixed number of requests in flight on each, and reduces what came back to the
// figures a benchmark reports (throughput, latency percentiles, errors, and
// which upstreams answered).
package load

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/quic-go/quic-go"
)

// Options configures a run. Zero values mean the documented default.
type Options struct {
	// URL is the https:// URL every request goes to. Required.
	URL string
	// Method is the request method; default GET.
	Method string
	// Header is sent with every request and must not be modified during the
	// run. A Host field sets the request's authority.
	Header http.Header
	// BodySize is the number of bytes each request sends as its body; zero
	// sends none.
	BodySize int
	// Protocol is [ProtocolH3] (the default when empty) or [ProtocolH2].
	Protocol string
	// Connections is the number of connections: QUIC connections, each
	// with its own UDP socket and each a [Conn], or TCP connections, each
	// an [H2Conn]; default 4.
	Connections int
	// Streams is the number of requests kept in flight on each connection;
	// default 16.
	Streams int
	// Warmup runs load before measuring, so connection set-up and cold
	// caches stay out of the figures; zero measures from the start.
	Warmup time.Duration
	// Duration is how long load is measured after Warmup. Required.
	Duration time.Duration
	// TLSConfig is used for every connection; nil verifies the server
	// against the system roots.
	TLSConfig *tls.Config
	// Stall makes every request read its response head and then nothing,
	// until the run ends, on streams whose receive window is 64 KiB (over
	// HTTP/2, the buffer net/http keeps for each stream), so
	// that the sender stalls at once: a slow-reader attack, for measuring
	// what stalled streams cost the server. Nothing is counted as answered.
	Stall bool
	// PIDs are local processes (the proxy, the backends) whose CPU and
	// memory use over the measured window go into [Result.Processes].
	// Linux only.
	PIDs []int
}

// stallingQUIC takes 64 KiB a stream that nobody reads, so a sender to a
// stalling client is held back at once; the connection's window leaves
// room for every stream's.
var stallingQUIC = &quic.Config{
	InitialStreamReceiveWindow:     64 << 10,
	MaxStreamReceiveWindow:         64 << 10,
	InitialConnectionReceiveWindow: 1 << 30,
	MaxConnectionReceiveWindow:     1 << 30,
}

// Defaults for [Options] fields left zero.
const (
	DefaultConnections = 4
	DefaultStreams     = 16
)

// Result holds the figures of one run. Only requests started inside the
// measured window count; requests still in flight when it ends are dropped.
type Result struct {
	// Requests is the number of requests that got a complete HTTP response,
	// whatever its status.
	Requests int64 `json:"requests"`
	// Duration is the measured wall time; shorter than Options.Duration
	// when the run was cancelled.
	Duration       time.Duration `json:"duration_ns"`
	RequestsPerSec float64       `json:"requests_per_sec"`
	Latency        Latency       `json:"latency"`
	// TransportErrors counts requests that failed below HTTP: no
	// connection, a reset stream, a body cut short.
	TransportErrors int64 `json:"transport_errors"`
	// FirstError describes one transport error, to tell what went wrong.
	FirstError string `json:"first_error,omitempty"`
	// Non2xx counts responses whose status was not 2xx; they are included
	// in Requests.
	Non2xx int64 `json:"non_2xx"`
	// Statuses counts responses by status code.
	Statuses map[int]int64 `json:"statuses"`
	// BytesReceived counts response body bytes.
	BytesReceived int64   `json:"bytes_received"`
	BytesPerSec   float64 `json:"bytes_per_sec"`
	// Backends counts responses by their X-Backend header, so a run through
	// the proxy shows how it spread requests; responses without one are
	// not counted.
	Backends  map[string]int64 `json:"backends"`
	Processes []Process        `json:"processes,omitempty"`
}

// Latency summarises request latencies, measured from sending a request to
// reading the last byte of its response.
type Latency struct {
	P50 time.Duration `json:"p50_ns"`
	P90 time.Duration `json:"p90_ns"`
	P99 time.Duration `json:"p99_ns"`
	Max time.Duration `json:"max_ns"`
}

// Run sends load as opts describes until the warmup and measured duration
// have passed or ctx is done, and returns the figures of the measured part.
// Cancelling ctx ends the run early but still returns what was measured.
func Run(ctx context.Context, opts Options) (Result, error) {
	opts, target, err := opts.withDefaults()
	if err != nil {
		return Result{}, err
	}
	procsIdle, err := sampleProcesses(opts.PIDs)
	if err != nil {
		return Result{}, err
	}
	procsBefore := procsIdle
	peakReset := resetPeakRSS(opts.PIDs)
	body := bytes.Repeat([]byte{'x'}, opts.BodySize)

	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	measureFrom := time.Now().Add(opts.Warmup)
	measureUntil := measureFrom.Add(opts.Duration)

	conns := make([]roundTripCloser, opts.Connections)
	streams := make([]*stream, 0, opts.Connections*opts.Streams)
	latencyCap := latencyCapacity(opts.Connections * opts.Streams)
	var wg sync.WaitGroup
	for i := range conns {
		conns[i] = newConnection(opts, target)
		for range opts.Streams {
			s := &stream{
				conn:         conns[i],
				opts:         &opts,
				target:       target,
				body:         body,
				measureFrom:  measureFrom,
				measureUntil: measureUntil,
				stats:        newStats(latencyCap),
			}
			streams = append(streams, s)
			wg.Go(func() { s.run(runCtx) })
		}
	}

	if waitUntil(ctx, measureFrom) {
		// Re-read at the real start of the window, so warmup CPU is not counted.
		procsBefore, err = sampleProcesses(opts.PIDs)
	}
	waitUntil(ctx, measureUntil)
	end := time.Now()
	if end.After(measureUntil) {
		end = measureUntil
	}
	procsAfter, afterErr := sampleProcesses(opts.PIDs)
	stop()
	wg.Wait()
	for _, c := range conns {
		c.Close()
	}

	n := 0
	for _, s := range streams {
		n += len(s.stats.latencies)
	}
	total := newStats(n)
	for _, s := range streams {
		total.merge(s.stats)
	}
	res := total.result(max(end.Sub(measureFrom), 0))
	if err == nil && afterErr == nil {
		res.Processes = usage(procsIdle, procsBefore, procsAfter, peakReset, res.Duration)
	}
	return res, errors.Join(err, afterErr)
}

// withDefaults fills in defaults and checks opts, returning the parsed URL.
func (opts Options) withDefaults() (Options, *url.URL, error) {
	target, err := url.Parse(opts.URL)
	if err != nil {
		return opts, nil, fmt.Errorf("load: URL: %w", err)
	}
	if target.Scheme != "https" || target.Host == "" {
		return opts, nil, fmt.Errorf("load: URL %q: want https://host[:port]/path", opts.URL)
	}
	if opts.Duration <= 0 {
		return opts, nil, errors.New("load: Duration must be positive")
	}
	if opts.Warmup < 0 || opts.BodySize < 0 || opts.Connections < 0 || opts.Streams < 0 {
		return opts, nil, errors.New("load: Warmup, BodySize, Connections and Streams must not be negative")
	}
	switch opts.Protocol {
	case "":
		opts.Protocol = ProtocolH3
	case ProtocolH3, ProtocolH2:
	default:
		return opts, nil, fmt.Errorf("load: Protocol %q: want %q or %q", opts.Protocol, ProtocolH3, ProtocolH2)
	}
	if opts.Method == "" {
		opts.Method = http.MethodGet
	}
	if opts.Header == nil {
		opts.Header = http.Header{} // http3 refuses requests without one
	}
	if opts.Connections == 0 {
		opts.Connections = DefaultConnections
	}
	if opts.Streams == 0 {
		opts.Streams = DefaultStreams
	}
	return opts, target, nil
}

// waitUntil waits for t and reports whether it came before ctx was done.
func waitUntil(ctx context.Context, t time.Time) bool {
	timer := time.NewTimer(time.Until(t))
	defer timer.Stop()
	select {
	case <-timer.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// stream is one closed loop: it sends a request, waits for the whole
// response, and sends the next. Its stats are its own until run returns.
type stream struct {
	conn         http.RoundTripper
	opts         *Options
	target       *url.URL
	body         []byte
	measureFrom  time.Time
	measureUntil time.Time
	stats        *stats
}

func (s *stream) run(ctx context.Context) {
	for ctx.Err() == nil {
		start := time.Now()
		status, backend, n, err := s.roundTrip(ctx)
		if ctx.Err() != nil || start.Before(s.measureFrom) || start.After(s.measureUntil) {
			// Cut off by the end of the run, warming up, or past the window
			// while the run is being wound down.
			continue
		}
		if err != nil {
			s.stats.transportError(err)
			continue
		}
		s.stats.response(status, backend, n, time.Since(start))
	}
}

// roundTrip sends one request and drains its response, returning the
// status, the X-Backend header and the number of body bytes read.
func (s *stream) roundTrip(ctx context.Context) (status int, backend string, n int64, err error) {
	req := &http.Request{
		Method:        s.opts.Method,
		URL:           s.target,
		Host:          s.opts.Header.Get("Host"),
		Header:        s.opts.Header,
		ContentLength: int64(len(s.body)),
	}
	if len(s.body) > 0 {
		req.Body = io.NopCloser(bytes.NewReader(s.body))
	}
	resp, err := s.conn.RoundTrip(req.WithContext(ctx))
	if err != nil {
		return 0, "", 0, err
	}
	defer resp.Body.Close()
	if s.opts.Stall {
		<-ctx.Done()
		return resp.StatusCode, resp.Header.Get("X-Backend"), 0, nil
	}
	n, err = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, resp.Header.Get("X-Backend"), n, err
}
