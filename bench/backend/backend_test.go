package backend

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
)

// startH2C serves Handler(name) over h2c on a loopback port and returns its
// base URL and a client that speaks h2c to it.
func startH2C(t *testing.T, name string) (string, *http.Client) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := ServeH2C(ln, Handler(name))
	t.Cleanup(func() { srv.Close() })

	var protocols http.Protocols
	protocols.SetUnencryptedHTTP2(true)
	tr := &http.Transport{Protocols: &protocols}
	t.Cleanup(tr.CloseIdleConnections)
	return "http://" + ln.Addr().String(), &http.Client{Transport: tr}
}

func TestRoutes(t *testing.T) {
	base, client := startH2C(t, "b1")
	tests := []struct {
		name        string
		method      string
		path        string
		body        string
		wantStatus  int
		wantHeader  map[string]string
		wantBody    string
		wantTrailer map[string]string
	}{
		{name: "root", path: "/", wantStatus: 200,
			wantHeader: map[string]string{"Content-Type": "text/plain; charset=utf-8"}, wantBody: "hello from b1\n"},
		{name: "unknown path", path: "/no/such/thing", wantStatus: 200, wantBody: "hello from b1\n"},
		{name: "healthz", path: "/healthz", wantStatus: 200, wantBody: "ok"},
		{name: "echo", method: "POST", path: "/echo", body: "ping", wantStatus: 200, wantBody: "ping"},
		{name: "echo empty", method: "POST", path: "/echo", wantStatus: 200, wantBody: ""},
		{name: "sse", path: "/sse?n=3&interval=1ms", wantStatus: 200,
			wantHeader: map[string]string{"Content-Type": "text/event-stream"},
			wantBody:   "data: 1\n\ndata: 2\n\ndata: 3\n\n"},
		{name: "sse bad interval", path: "/sse?interval=soon", wantStatus: 400},
		{name: "trailers", path: "/trailers", wantStatus: 200,
			wantHeader:  map[string]string{"Content-Type": "application/grpc"},
			wantBody:    string(grpcHello),
			wantTrailer: map[string]string{"Grpc-Status": "0", "Grpc-Message": "ok"}},
		{name: "bytes default", path: "/bytes", wantStatus: 200,
			wantHeader: map[string]string{"Content-Length": "64"}, wantBody: patternAlphabet},
		{name: "bytes zero", path: "/bytes?n=0", wantStatus: 200, wantBody: ""},
		{name: "bytes negative", path: "/bytes?n=-1", wantStatus: 400},
		{name: "slow", path: "/slow?d=1ms", wantStatus: 200, wantBody: "slow done\n"},
		{name: "slow bad", path: "/slow?d=1", wantStatus: 400},
		{name: "status", path: "/status/418", wantStatus: 418, wantBody: ""},
		{name: "status no content", path: "/status/204", wantStatus: 204, wantBody: ""},
		{name: "status interim", path: "/status/101", wantStatus: 400},
		{name: "status not a number", path: "/status/teapot", wantStatus: 400},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			method := tt.method
			if method == "" {
				method = http.MethodGet
			}
			req, err := http.NewRequestWithContext(t.Context(), method, base+tt.path, strings.NewReader(tt.body))
			if err != nil {
				t.Fatal(err)
			}
			resp, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, err := io.ReadAll(resp.Body)
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != tt.wantStatus {
				t.Fatalf("status = %d, want %d (body %q)", resp.StatusCode, tt.wantStatus, body)
			}
			if got := resp.Header.Get("X-Backend"); got != "b1" {
				t.Errorf("X-Backend = %q, want b1", got)
			}
			for k, want := range tt.wantHeader {
				if got := resp.Header.Get(k); got != want {
					t.Errorf("header %s = %q, want %q", k, got, want)
				}
			}
			if tt.wantStatus < 300 && string(body) != tt.wantBody {
				t.Errorf("body = %q, want %q", body, tt.wantBody)
			}
			for k, want := range tt.wantTrailer {
				if got := resp.Trailer.Get(k); got != want {
					t.Errorf("trailer %s = %q, want %q", k, got, want)
				}
			}
		})
	}
}

func TestHeadersReportsWhatArrived(t *testing.T) {
	base, client := startH2C(t, "b1")
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, base+"/headers", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Host = "example.test"
	req.Header.Add("X-Test", "one")
	req.Header.Add("X-Test", "two")
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var got Received
	if err := json.NewDecoder(resp.Body).Decode(&got); err != nil {
		t.Fatal(err)
	}
	if got.Host != "example.test" || got.Proto != "HTTP/2.0" {
		t.Errorf("host, proto = %q, %q; want example.test, HTTP/2.0", got.Host, got.Proto)
	}
	if vals := got.Header["X-Test"]; len(vals) != 2 || vals[0] != "one" || vals[1] != "two" {
		t.Errorf("X-Test = %q, want [one two]", vals)
	}
}

func TestBytesLargeBodyKeepsPattern(t *testing.T) {
	base, client := startH2C(t, "b1")
	const n = 1<<20 + 7 // not a multiple of the chunk, to cover the tail
	resp, err := client.Get(base + "/bytes?n=1048583")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if len(body) != n || resp.ContentLength != n {
		t.Fatalf("got %d bytes, Content-Length %d; want %d", len(body), resp.ContentLength, n)
	}
	for i, b := range body {
		if b != patternAlphabet[i%len(patternAlphabet)] {
			t.Fatalf("byte %d = %q, want %q", i, b, patternAlphabet[i%len(patternAlphabet)])
		}
	}
}

// TestEchoFullDuplex sends 10 MiB while reading the echo: a backend that
// buffered the whole body before answering would deadlock on flow control.
func TestEchoFullDuplex(t *testing.T) {
	base, client := startH2C(t, "b1")
	const size = 10 << 20
	pr, pw := io.Pipe()
	sentSum := make(chan []byte, 1)
	go func() {
		sent := sha256.New()
		chunk := bytes.Repeat([]byte("0123456789abcdef"), 4096)
		for written := 0; written < size; written += len(chunk) {
			sent.Write(chunk)
			if _, err := pw.Write(chunk); err != nil {
				pw.CloseWithError(err)
				sentSum <- nil
				return
			}
		}
		pw.Close()
		sentSum <- sent.Sum(nil)
	}()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, base+"/echo", pr)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	got := sha256.New()
	n, err := io.Copy(got, resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if n != size || !bytes.Equal(got.Sum(nil), <-sentSum) {
		t.Fatalf("echoed %d bytes, want %d identical bytes", n, size)
	}
}

// TestSSEFlushesEachEvent reads the first event while the second is an hour
// away: it only arrives if the backend flushed it.
func TestSSEFlushesEachEvent(t *testing.T) {
	base, client := startH2C(t, "b1")
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/sse?n=2&interval=1h", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	first := make([]byte, len("data: 1\n\n"))
	if _, err := io.ReadFull(resp.Body, first); err != nil {
		t.Fatal(err)
	}
	if string(first) != "data: 1\n\n" {
		t.Errorf("first event = %q", first)
	}
	if resp.ContentLength != -1 {
		t.Errorf("Content-Length = %d, want none", resp.ContentLength)
	}
}

func TestCutResetsMidBody(t *testing.T) {
	base, client := startH2C(t, "b1")
	resp, err := client.Get(base + "/cut?n=100")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err == nil {
		t.Fatalf("read %d bytes and a clean end; want a stream reset", len(body))
	}
	if len(body) > 100 {
		t.Errorf("read %d bytes before the reset, want at most 100", len(body))
	}
}

func BenchmarkBytes1MiB(b *testing.B) {
	h := Handler("bench")
	req, err := http.NewRequest(http.MethodGet, "/bytes?n=1048576", nil)
	if err != nil {
		b.Fatal(err)
	}
	w := discardWriter{header: http.Header{}}
	b.ReportAllocs()
	b.SetBytes(1 << 20)
	for b.Loop() {
		h.ServeHTTP(w, req)
	}
}

// discardWriter is a ResponseWriter that drops the body, so the benchmark
// measures the handler rather than a recorder's buffer.
type discardWriter struct{ header http.Header }

func (w discardWriter) Header() http.Header         { return w.header }
func (w discardWriter) Write(p []byte) (int, error) { return len(p), nil }
func (w discardWriter) WriteHeader(int)             {}
