package load

import (
	"crypto/tls"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"spooky/bench/backend"
	"spooky/certs"
)

// listenH3 opens what a test HTTP/3 server needs: a loopback UDP socket,
// closed at cleanup, and a certificate.
func listenH3(t *testing.T) (net.PacketConn, tls.Certificate) {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	cert, err := certs.Dev()
	if err != nil {
		t.Fatal(err)
	}
	return pc, cert
}

// startH3 serves h over HTTP/3 on a loopback port and returns its base URL.
func startH3(t *testing.T, h http.Handler) string {
	t.Helper()
	pc, cert := listenH3(t)
	srv := backend.ServeH3(pc, h, cert)
	// Registered after pc's, so it runs first: the server stops before its socket closes.
	t.Cleanup(func() { srv.Close() })
	return "https://" + pc.LocalAddr().String()
}

var insecure = &tls.Config{InsecureSkipVerify: true}

func TestRunCountsAreSane(t *testing.T) {
	base := startH3(t, backend.Handler("b1"))
	res, err := Run(t.Context(), Options{
		URL:         base + "/bytes?n=100",
		Connections: 2,
		Streams:     4,
		Warmup:      200 * time.Millisecond,
		Duration:    time.Second,
		TLSConfig:   insecure,
		PIDs:        []int{os.Getpid()},
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Requests == 0 || res.TransportErrors != 0 || res.Non2xx != 0 {
		t.Fatalf("requests %d, transport errors %d (%s), non-2xx %d; want some, 0, 0",
			res.Requests, res.TransportErrors, res.FirstError, res.Non2xx)
	}
	if res.Duration != time.Second {
		t.Errorf("Duration = %v, want 1s", res.Duration)
	}
	if res.BytesReceived != 100*res.Requests {
		t.Errorf("BytesReceived = %d, want 100 per request (%d)", res.BytesReceived, 100*res.Requests)
	}
	if res.Backends["b1"] != res.Requests || len(res.Backends) != 1 {
		t.Errorf("Backends = %v, want all %d from b1", res.Backends, res.Requests)
	}
	if res.Statuses[200] != res.Requests {
		t.Errorf("Statuses = %v, want all %d 200", res.Statuses, res.Requests)
	}
	if got := res.RequestsPerSec; got < float64(res.Requests)*0.99 || got > float64(res.Requests)*1.01 {
		t.Errorf("RequestsPerSec = %.1f over 1s, want about %d", got, res.Requests)
	}
	l := res.Latency
	if l.P50 <= 0 || l.P50 > l.P90 || l.P90 > l.P99 || l.P99 > l.Max {
		t.Errorf("latency percentiles out of order: %+v", l)
	}
	if len(res.Processes) != 1 || res.Processes[0].CPUPercent <= 0 || res.Processes[0].RSSBytes <= 0 {
		t.Fatalf("Processes = %+v, want this process busy and resident", res.Processes)
	}
	// The peak was reset before the load, so it lies between the idle and
	// the final resident set at the least; a process may always write its
	// own clear_refs.
	if p := res.Processes[0]; p.IdleRSSBytes <= 0 || p.PeakRSSBytes < max(p.IdleRSSBytes, p.RSSBytes) {
		t.Errorf("idle %d, peak %d, end %d: want a peak at least the idle and the end figures",
			p.IdleRSSBytes, p.PeakRSSBytes, p.RSSBytes)
	}
}

func TestRunSeparatesNon2xxAndTransportErrors(t *testing.T) {
	base := startH3(t, backend.Handler("b1"))
	res, err := Run(t.Context(), Options{
		URL: base + "/status/503", Connections: 1, Streams: 2,
		Duration: 300 * time.Millisecond, TLSConfig: insecure,
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Requests == 0 || res.Non2xx != res.Requests || res.TransportErrors != 0 {
		t.Errorf("requests %d, non-2xx %d, transport errors %d; want all non-2xx", res.Requests, res.Non2xx, res.TransportErrors)
	}

	cutBase, accepted := startCountingH3(t)
	res, err = Run(t.Context(), Options{
		URL: cutBase + "/cut?n=10", Connections: 2, Streams: 2,
		Duration: 300 * time.Millisecond, TLSConfig: insecure,
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Requests != 0 || res.TransportErrors == 0 || res.FirstError == "" {
		t.Errorf("requests %d, transport errors %d (%q); want only transport errors", res.Requests, res.TransportErrors, res.FirstError)
	}
	if n := accepted.Load(); n != 2 {
		t.Errorf("resets made the run open %d connections, want its 2", n)
	}
}

func TestRunSendsBodies(t *testing.T) {
	base := startH3(t, backend.Handler("b1"))
	res, err := Run(t.Context(), Options{
		URL: base + "/echo", Method: "POST", BodySize: 3000, Connections: 1, Streams: 2,
		Duration: 300 * time.Millisecond, TLSConfig: insecure,
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Requests == 0 || res.TransportErrors != 0 || res.BytesReceived != 3000*res.Requests {
		t.Errorf("requests %d, transport errors %d (%s), bytes %d; want every body echoed",
			res.Requests, res.TransportErrors, res.FirstError, res.BytesReceived)
	}
}

func TestOptionsValidation(t *testing.T) {
	tests := []struct {
		name    string
		opts    Options
		wantErr string
	}{
		{"no duration", Options{URL: "https://127.0.0.1:1/"}, "Duration"},
		{"http URL", Options{URL: "http://127.0.0.1:1/", Duration: time.Second}, "want https"},
		{"no host", Options{URL: "https:///x", Duration: time.Second}, "want https"},
		{"negative streams", Options{URL: "https://127.0.0.1:1/", Duration: time.Second, Streams: -1}, "negative"},
		{"unknown protocol", Options{URL: "https://127.0.0.1:1/", Duration: time.Second, Protocol: "h1"}, "Protocol"},
		{"missing process", Options{URL: "https://127.0.0.1:1/", Duration: time.Second, PIDs: []int{-5}}, "process -5"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Run(t.Context(), tt.opts)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("err = %v, want one mentioning %q", err, tt.wantErr)
			}
		})
	}
}

func TestWithDefaults(t *testing.T) {
	opts, _, err := Options{URL: "https://127.0.0.1:1/", Duration: time.Second}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	if opts.Method != "GET" || opts.Connections != DefaultConnections || opts.Streams != DefaultStreams || opts.Protocol != ProtocolH3 {
		t.Errorf("defaults = %s, %d connections, %d streams, protocol %q", opts.Method, opts.Connections, opts.Streams, opts.Protocol)
	}
}

func TestPercentile(t *testing.T) {
	sorted := make([]time.Duration, 100)
	for i := range sorted {
		sorted[i] = time.Duration(i + 1)
	}
	tests := []struct {
		samples []time.Duration
		p       int
		want    time.Duration
	}{
		{nil, 50, 0},
		{sorted[:1], 50, 1},
		{sorted[:1], 100, 1},
		{sorted, 50, 50},
		{sorted, 90, 90},
		{sorted, 99, 99},
		{sorted, 100, 100},
		{sorted[:10], 99, 10},
		{sorted[:10], 50, 5},
	}
	for _, tt := range tests {
		if got := percentile(tt.samples, tt.p); got != tt.want {
			t.Errorf("p%d of %d samples = %d, want %d", tt.p, len(tt.samples), got, tt.want)
		}
	}
}

func TestParseStatCPU(t *testing.T) {
	tests := []struct {
		name    string
		stat    string
		want    time.Duration
		wantErr bool
	}{
		{name: "plain", stat: "42 (spooky) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 8 0 100 1000 200",
			want: 3 * time.Second},
		{name: "name with spaces and parens", stat: "7 (a) b (c) R 1 7 7 0 -1 0 0 0 0 0 1 2 0 0 20 0 1 0 1 1 1",
			want: 30 * time.Millisecond},
		{name: "truncated", stat: "7 (x) R 1 7", wantErr: true},
		{name: "no name", stat: "7 x R", wantErr: true},
		{name: "not a number", stat: "7 (x) R 1 7 7 0 -1 0 0 0 0 0 u 2 0", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseStatCPU([]byte(tt.stat))
			if (err != nil) != tt.wantErr || got != tt.want {
				t.Errorf("parseStatCPU = %v, %v; want %v, error %v", got, err, tt.want, tt.wantErr)
			}
		})
	}
}

func TestParseStatusKB(t *testing.T) {
	const status = "Name:\tspooky\nVmPeak:\t  9000 kB\nVmHWM:\t    2345 kB\nVmRSS:\t    1234 kB\nThreads:\t8\n"
	tests := []struct {
		name    string
		status  string
		field   string
		want    int64
		wantErr bool
	}{
		{name: "VmRSS", status: status, field: "VmRSS:", want: 1234 << 10},
		{name: "VmHWM", status: status, field: "VmHWM:", want: 2345 << 10},
		{name: "zombie", status: "Name:\tspooky\nState:\tZ (zombie)\n", field: "VmRSS:", want: 0},
		{name: "odd unit", status: "VmRSS:\t1234 MB\n", field: "VmRSS:", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseStatusKB([]byte(tt.status), tt.field)
			if (err != nil) != tt.wantErr || got != tt.want {
				t.Errorf("parseStatusKB(%s) = %v, %v; want %v, error %v", tt.field, got, err, tt.want, tt.wantErr)
			}
		})
	}
}

func TestUsage(t *testing.T) {
	idle := []procSample{{pid: 1, rssBytes: 10}, {pid: 2, rssBytes: 20}}
	before := []procSample{{pid: 1, cpu: time.Second, rssBytes: 15}, {pid: 2, cpu: 0, rssBytes: 25}}
	after := []procSample{
		{pid: 1, cpu: 3 * time.Second, rssBytes: 30, peakBytes: 50},
		{pid: 2, cpu: time.Second, rssBytes: 40, peakBytes: 90},
	}
	got := usage(idle, before, after, []bool{true, false}, 4*time.Second)
	want := []Process{
		{PID: 1, CPUPercent: 50, RSSBytes: 30, IdleRSSBytes: 10, PeakRSSBytes: 50},
		// Its high-water mark was not reset: a lifetime peak is no figure
		// of the run, so none is given.
		{PID: 2, CPUPercent: 25, RSSBytes: 40, IdleRSSBytes: 20},
	}
	if !slices.Equal(got, want) {
		t.Errorf("usage =\n%+v\nwant\n%+v", got, want)
	}
}

func TestResetPeakRSS(t *testing.T) {
	if got := resetPeakRSS([]int{os.Getpid(), -5}); !slices.Equal(got, []bool{true, false}) {
		t.Errorf("resetPeakRSS(self, -5) = %v, want [true false]", got)
	}
}

func TestLatencyCapacity(t *testing.T) {
	for n, want := range map[int]int{0: 4096, 1: 4096, 64: 4096, 128: 2048, 1000: 262, 10000: 26, 100000: 16} {
		if got := latencyCapacity(n); got != want {
			t.Errorf("latencyCapacity(%d) = %d, want %d", n, got, want)
		}
	}
}
