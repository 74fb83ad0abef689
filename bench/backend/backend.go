// Package backend owns the demo and benchmark upstream: the HTTP handlers
// that stand in for a real service behind spooky, and the h2c and HTTP/3
// servers that expose them. The same routes serve the demo command, the
// benchmarks and the end-to-end tests, so what a test checks is what a
// benchmark measures.
//
// Routes (every response carries X-Backend: <name>):
//
//	/                  hello from <name>   (also every unknown path)
//	/echo              the request body, streamed back as it arrives
//	/headers           JSON [Received]: what of the request reached the backend
//	/sse?n=&interval=  n server-sent events "data: 1" … "data: n", one per interval
//	/trailers          gRPC-style response with Grpc-Status and Grpc-Message trailers
//	/bytes?n=          n bytes of a fixed pattern with Content-Length
//	/slow?d=           "slow done" after d
//	/status/{code}     an empty response with that status
//	/healthz           "ok"
//	/cut?n=            n bytes, then the stream is reset mid-body
//
// [InFlight] wraps them to count the requests served at once and answer
// /inflight with the count; the backend command wraps every server so.
package backend

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// Defaults for the query parameters the routes take.
const (
	defaultSSEEvents   = 5
	defaultSSEInterval = 100 * time.Millisecond
	defaultBytes       = 64
	defaultSlow        = time.Second
	defaultCutBytes    = 1024
)

// Handler returns the backend's routes answering as name. Every response
// carries X-Backend: name, so a client can tell which upstream a proxy chose.
func Handler(name string) http.Handler {
	hello := "hello from " + name + "\n"
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		io.WriteString(w, hello)
	})
	mux.HandleFunc("/echo", echo)
	mux.HandleFunc("/headers", headers)
	mux.HandleFunc("/sse", sse)
	mux.HandleFunc("/trailers", trailers)
	mux.HandleFunc("/bytes", bytesBody)
	mux.HandleFunc("/slow", slow)
	mux.HandleFunc("/status/{code}", status)
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		io.WriteString(w, "ok")
	})
	mux.HandleFunc("/cut", cut)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Backend", name)
		mux.ServeHTTP(w, r)
	})
}

// echoBuffers holds the copy buffers of /echo, so a benchmark pushing many
// large bodies does not allocate one per request.
var echoBuffers = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// echo streams the request body back as it arrives. The response headers go
// out before the body is read, so a client that waits for them before
// sending (a bidirectional stream) does not deadlock.
func echo(w http.ResponseWriter, r *http.Request) {
	rc := http.NewResponseController(w)
	// HTTP/1 servers stop reading the request body once the response
	// starts unless full duplex is on; HTTP/2 and HTTP/3 always interleave,
	// and writers that cannot say so return an error we have no use for.
	_ = rc.EnableFullDuplex()
	contentType := r.Header.Get("Content-Type")
	if contentType == "" {
		contentType = "application/octet-stream"
	}
	w.Header().Set("Content-Type", contentType)
	w.WriteHeader(http.StatusOK)
	if rc.Flush() != nil {
		return
	}
	buf := echoBuffers.Get().(*[]byte)
	defer echoBuffers.Put(buf)
	for {
		n, err := r.Body.Read(*buf)
		if n > 0 {
			if _, err := w.Write((*buf)[:n]); err != nil {
				return
			}
			if rc.Flush() != nil {
				return
			}
		}
		// io.EOF ends the echo; any other error means the client is gone.
		if err != nil {
			return
		}
	}
}

// Received is the JSON body of /headers: what of the request reached the
// backend after any proxy in between had its way with it.
type Received struct {
	// Host is the request's authority (Host header or :authority).
	Host string `json:"host"`
	// Proto is the protocol the backend spoke, e.g. "HTTP/2.0".
	Proto string `json:"proto"`
	// Header holds the request header fields, canonicalised by net/http.
	Header http.Header `json:"headers"`
}

func headers(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(Received{Host: r.Host, Proto: r.Proto, Header: r.Header})
}

// sse sends server-sent events, flushing each one so a proxy that buffers
// responses shows up as events arriving late or all at once.
func sse(w http.ResponseWriter, r *http.Request) {
	n, err := intParam(r, "n", defaultSSEEvents)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	interval, err := durationParam(r, "interval", defaultSSEInterval)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	rc := http.NewResponseController(w)
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	for i := 1; i <= n; i++ {
		if i > 1 && !sleep(r, interval) {
			return
		}
		fmt.Fprintf(w, "data: %d\n\n", i)
		if rc.Flush() != nil {
			return
		}
	}
}

// grpcHello is one Length-Prefixed-Message as gRPC's PROTOCOL-HTTP2.md
// defines it (an uncompressed flag byte, a 4-byte big-endian length, the
// payload), so gRPC-aware clients can parse the body.
var grpcHello = []byte{0, 0, 0, 0, 5, 'h', 'e', 'l', 'l', 'o'}

// trailers answers like a gRPC server: the status arrives in trailers after
// the body, which is what a proxy most often drops.
func trailers(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/grpc")
	w.Header().Set("Trailer", "Grpc-Status, Grpc-Message")
	w.WriteHeader(http.StatusOK)
	w.Write(grpcHello)
	w.Header().Set("Grpc-Status", "0")
	w.Header().Set("Grpc-Message", "ok")
}

func bytesBody(w http.ResponseWriter, r *http.Request) {
	n, err := intParam(r, "n", defaultBytes)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Length", strconv.Itoa(n))
	writePattern(w, n)
}

func slow(w http.ResponseWriter, r *http.Request) {
	d, err := durationParam(r, "d", defaultSlow)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	if !sleep(r, d) {
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	io.WriteString(w, "slow done\n")
}

func status(w http.ResponseWriter, r *http.Request) {
	code, err := strconv.Atoi(r.PathValue("code"))
	// 1xx are interim responses, not answers, and net/http panics outside 100-999.
	if err != nil || code < 200 || code > 599 {
		http.Error(w, "status: want a code from 200 to 599", http.StatusBadRequest)
		return
	}
	w.WriteHeader(code)
}

// cut simulates an upstream dying mid-body: it sends n bytes, makes sure
// they left, then aborts, which resets the HTTP/2 or HTTP/3 stream.
func cut(w http.ResponseWriter, r *http.Request) {
	n, err := intParam(r, "n", defaultCutBytes)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	writePattern(w, n)
	http.NewResponseController(w).Flush()
	panic(http.ErrAbortHandler)
}

// patternAlphabet repeats through every /bytes and /cut body, so a client
// can check that the bytes it got are the ones sent, in order.
const patternAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"

// patternChunk is computed once and written over and over, so a 1 GiB body
// costs no allocation. Its length is a multiple of the alphabet's, so the
// pattern runs on unbroken across chunks.
var patternChunk = func() []byte {
	b := make([]byte, 64<<10)
	for i := range b {
		b[i] = patternAlphabet[i%len(patternAlphabet)]
	}
	return b
}()

// writePattern writes the first n bytes of the pattern, stopping early if
// the client goes away.
func writePattern(w io.Writer, n int) {
	for n > 0 {
		chunk := patternChunk[:min(n, len(patternChunk))]
		if _, err := w.Write(chunk); err != nil {
			return
		}
		n -= len(chunk)
	}
}

// sleep waits d and reports whether it did; it returns false as soon as the
// request is cancelled, so abandoned requests do not hold a goroutine.
func sleep(r *http.Request, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-r.Context().Done():
		return false
	}
}

// intParam reads a non-negative integer query parameter, or def when absent.
func intParam(r *http.Request, name string, def int) (int, error) {
	return queryParam(r, name, def, strconv.Atoi)
}

// durationParam reads a non-negative duration query parameter such as
// "250ms", or def when absent.
func durationParam(r *http.Request, name string, def time.Duration) (time.Duration, error) {
	return queryParam(r, name, def, time.ParseDuration)
}

func queryParam[T int | time.Duration](r *http.Request, name string, def T, parse func(string) (T, error)) (T, error) {
	s := r.URL.Query().Get(name)
	if s == "" {
		return def, nil
	}
	v, err := parse(s)
	if err == nil && v < 0 {
		err = errors.New("must not be negative")
	}
	if err != nil {
		return 0, fmt.Errorf("query %s=%q: %w", name, s, err)
	}
	return v, nil
}
