package h2

import (
	"bytes"
	"context"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	"golang.org/x/net/http2"
)

func TestInvalidRequests(t *testing.T) {
	c, f := startFake(t, Config{}, http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: 1})
	for _, tc := range []struct {
		name string
		edit func(*Request)
	}{
		{"empty method", func(r *Request) { r.Method = "" }},
		{"method with space", func(r *Request) { r.Method = "GE T" }},
		{"empty path", func(r *Request) { r.Path = "" }},
		{"header name", func(r *Request) { r.Header["Bad Name"] = []string{"v"} }},
		{"header value", func(r *Request) { r.Header.Set("X-A", "a\r\nb") }},
		{"trailer name", func(r *Request) { r.Trailer = http.Header{"Bad:Name": nil} }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := getReq("/")
			var closed atomic.Bool
			req.Method, req.ContentLength = "POST", 1
			req.Body = closeFunc{strings.NewReader("x"), func() { closed.Store(true) }}
			tc.edit(req)
			reserve(t, c)
			if _, err := c.RoundTrip(context.Background(), req); err == nil {
				t.Fatal("invalid request sent")
			}
			if !closed.Load() {
				t.Errorf("body not closed")
			}
		})
	}
	ch := goRoundTrip(context.Background(), c, getReq("/ok"))
	h := f.readRequest()
	if h.StreamID != 1 || h.PseudoValue("path") != "/ok" {
		t.Fatalf("stream %d path %q", h.StreamID, h.PseudoValue("path"))
	}
	f.respond(1, "ok")
	if r := await(t, ch); r.err != nil {
		t.Fatal(r.err)
	} else {
		readAll(t, r.resp)
	}
}

func TestRequestHeaderContinuation(t *testing.T) {
	c, f := startFake(t, Config{}, http2.Setting{ID: http2.SettingMaxFrameSize, Val: 16384})
	rnd := rand.New(rand.NewPCG(1, 2))
	const alnum = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
	big := make([]byte, 40<<10)
	for i := range big {
		big[i] = alnum[rnd.IntN(len(alnum))]
	}
	req := getReq("/")
	req.Header.Set("X-Big", string(big))
	ch := goRoundTrip(context.Background(), c, req)

	// Read the raw frames to see how the block was cut.
	f.fr.ReadMetaHeaders = nil
	hf := expect[*http2.HeadersFrame](f)
	frames, block := 1, bytes.Clone(hf.HeaderBlockFragment())
	if hf.Length > 16384 || hf.HeadersEnded() || !hf.StreamEnded() {
		t.Fatalf("HEADERS: length %d, END_HEADERS %v, END_STREAM %v", hf.Length, hf.HeadersEnded(), hf.StreamEnded())
	}
	for ended := false; !ended; {
		cf := expect[*http2.ContinuationFrame](f)
		if cf.Length > 16384 || cf.StreamID != hf.StreamID {
			t.Fatalf("CONTINUATION of %d bytes on stream %d", cf.Length, cf.StreamID)
		}
		frames++
		block = append(block, cf.HeaderBlockFragment()...)
		ended = cf.HeadersEnded()
	}
	f.fr.ReadMetaHeaders = f.dec
	fields, err := f.dec.DecodeFull(block)
	if err != nil {
		t.Fatal(err)
	}
	var got string
	for _, hf := range fields {
		if hf.Name == "x-big" {
			got = hf.Value
		}
	}
	if got != string(big) || frames < 2 {
		t.Fatalf("x-big: %d bytes in %d frames", len(got), frames)
	}
	respondOK(t, f, ch, hf.StreamID)
}

// TestConnectionSpecificResponseFields: a response with a
// connection-specific field is malformed (RFC 9113 §8.2.2).
func TestConnectionSpecificResponseFields(t *testing.T) {
	for _, field := range [][2]string{
		{"connection", "close"},
		{"keep-alive", "timeout=5"},
		{"proxy-connection", "keep-alive"},
		{"transfer-encoding", "chunked"},
		{"upgrade", "websocket"},
		{"te", "trailers"},
	} {
		t.Run(field[0], func(t *testing.T) {
			c, f := startFake(t, Config{})
			ch := goRoundTrip(context.Background(), c, getReq("/"))
			h := f.readRequest()
			f.headers(h.StreamID, false, ":status", "200", field[0], field[1])
			f.data(h.StreamID, true, []byte("body"))
			r := await(t, ch)
			if r.err == nil {
				r.resp.Body.Close()
				t.Fatalf("response with %s: %s accepted", field[0], field[1])
			}
			streamErr(t, r.err, http2.ErrCodeProtocol)
		})
	}
}
