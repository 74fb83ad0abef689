package envelope

import (
	"io"
	"net/http"
	"strings"
	"testing"
)

// A late Close of an earlier try's view must not close the body the
// current try is reading.
func TestStaleViewCloseLeavesTheRetrysBody(t *testing.T) {
	pr, pw := io.Pipe()
	go func() { pw.Write([]byte("hello")); pw.Write([]byte("world")); pw.Close() }()
	r, _ := http.NewRequest("PUT", "http://x/", pr)
	e := &Envelope{Request: r}
	v1 := e.UpstreamBody(nil) // try 1: never read, failed
	if !e.ReplaySafe() {
		t.Fatal("not replay safe before any read")
	}
	v2 := e.UpstreamBody(nil) // try 2 (retry)
	buf := make([]byte, 5)
	if _, err := io.ReadFull(v2, buf); err != nil {
		t.Fatal(err)
	}
	v1.Close() // x/net closes try 1's body asynchronously, late
	rest, err := io.ReadAll(v2)
	if err != nil || string(rest) != "world" {
		t.Fatalf("try 2 lost its body after try 1's late Close: %q %v", rest, err)
	}
}

// A stale view, read after the retry started, gets none of the retry's bytes.
func TestStaleViewReadsNothing(t *testing.T) {
	r, _ := http.NewRequest("PUT", "http://x/", io.NopCloser(strings.NewReader("helloworld")))
	e := &Envelope{Request: r}
	v1 := e.UpstreamBody(nil)
	v2 := e.UpstreamBody(nil)
	b := make([]byte, 5)
	io.ReadFull(v2, b)
	n, _ := v1.Read(b) // try 1's writer goroutine, still running
	if n > 0 {
		t.Fatalf("stale try view read %d bytes (%q) meant for the retry", n, b[:n])
	}
}
