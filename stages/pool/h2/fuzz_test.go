package h2

import (
	"context"
	"io"
	"net/http"
	"strconv"
	"testing"
	"time"

	"golang.org/x/net/http2"
)

// FuzzResponseHead answers a request with a fuzzed status and header
// field: the client must neither panic nor hang, and a response it takes
// must have a well-formed status.
func FuzzResponseHead(f *testing.F) {
	f.Add("200", "content-type", "text/plain", []byte("hello"))
	f.Add("204", "content-length", "0", []byte(nil))
	f.Add("200", "content-length", "3", []byte("abcdef"))
	f.Add("404", "x-empty", "", []byte("x"))
	f.Add("abc", "x-a", "b", []byte(nil))
	f.Add("2000", "x-a", "b", []byte(nil))
	f.Add("200", "X-Upper", "v", []byte(nil))
	f.Add("200", ":path", "/", []byte(nil))
	f.Add("200", "x-a", "line\nbreak", []byte(nil))
	f.Add("103", "link", "</a>", []byte("x"))
	f.Add("200", "trailer", "x-t", []byte("body"))
	f.Fuzz(func(t *testing.T, status, name, value string, body []byte) {
		c, fk := startFake(t, Config{})
		fk.lenient = true
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		defer cancel()
		ch := goRoundTrip(ctx, c, getReq("/"))
		h := fk.readRequest()
		fk.fr.WriteHeaders(http2.HeadersFrameParam{
			StreamID:      h.StreamID,
			BlockFragment: fk.block(":status", status, name, value),
			EndStream:     len(body) == 0,
			EndHeaders:    true,
		})
		if len(body) > 0 {
			fk.fr.WriteData(h.StreamID, true, body)
		}
		var r rtResult
		select {
		case r = <-ch:
		case <-time.After(5 * time.Second):
			t.Fatal("RoundTrip hangs")
		}
		if r.err != nil {
			if r.resp != nil {
				t.Fatalf("both a response and an error %v", r.err)
			}
			return
		}
		if r.resp == nil {
			t.Fatal("neither a response nor an error")
		}
		if strconv.Itoa(r.resp.StatusCode) != status || r.resp.StatusCode < 200 {
			t.Errorf("status %q taken as %d", status, r.resp.StatusCode)
		}
		read := make(chan error, 1)
		go func() {
			_, err := io.Copy(io.Discard, r.resp.Body)
			read <- err
		}()
		select {
		case <-read:
		case <-time.After(5 * time.Second):
			t.Fatal("reading the body hangs")
		}
		r.resp.Body.Close()
	})
}

// BenchmarkRoundTrip measures a GET of 64 bytes over one connection to
// net/http's HTTP/2 server.
func BenchmarkRoundTrip(b *testing.B) {
	payload := make([]byte, 64)
	addr := startH2C(b, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write(payload) }), 0)
	c := dialH2(b, addr, Config{})
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			for !c.Reserve() {
				time.Sleep(10 * time.Microsecond)
			}
			resp, err := c.RoundTrip(context.Background(), getReq("/"))
			if err != nil {
				b.Error(err)
				return
			}
			n, err := io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if err != nil || n != 64 {
				b.Errorf("body: %d bytes, %v", n, err)
				return
			}
		}
	})
}
