package headers_test

import (
	"net/http"
	"net/textproto"
	"reflect"
	"strings"
	"testing"

	"spooky/headers"
)

func TestStripHopByHop(t *testing.T) {
	tests := []struct {
		name string
		in   http.Header
		want http.Header
	}{
		{
			name: "end-to-end headers kept",
			in: http.Header{
				"Content-Type":  {"application/json"},
				"Cache-Control": {"no-cache"},
				"Authorization": {"Bearer x"},
				"Trailer":       {"Grpc-Status"},
				"Accept":        {"a", "b"},
			},
			want: http.Header{
				"Content-Type":  {"application/json"},
				"Cache-Control": {"no-cache"},
				"Authorization": {"Bearer x"},
				"Trailer":       {"Grpc-Status"},
				"Accept":        {"a", "b"},
			},
		},
		{
			name: "fixed list removed",
			in: http.Header{
				"Connection":        {"close"},
				"Keep-Alive":        {"timeout=5"},
				"Proxy-Connection":  {"keep-alive"},
				"Transfer-Encoding": {"chunked"},
				"Upgrade":           {"websocket"},
				"X-Request-Id":      {"1"},
			},
			want: http.Header{"X-Request-Id": {"1"}},
		},
		{
			name: "Connection lists names with spaces and odd case",
			in: http.Header{
				"Connection":   {" x-foo ,X-BAR,, keep-alive ,"},
				"X-Foo":        {"1"},
				"X-Bar":        {"2"},
				"Keep-Alive":   {"timeout=5"},
				"X-Foobar":     {"kept"},
				"Content-Type": {"text/plain"},
			},
			want: http.Header{"X-Foobar": {"kept"}, "Content-Type": {"text/plain"}},
		},
		{
			name: "several Connection lines",
			in: http.Header{
				"Connection": {"x-a", "X-B, x-c"},
				"X-A":        {"1"},
				"X-B":        {"2"},
				"X-C":        {"3"},
				"X-D":        {"4"},
			},
			want: http.Header{"X-D": {"4"}},
		},
		{
			name: "Connection names an end-to-end header",
			in:   http.Header{"Connection": {"Cache-Control"}, "Cache-Control": {"no-store"}},
			want: http.Header{},
		},
		{
			name: "Connection names a header that is absent",
			in:   http.Header{"Connection": {"x-missing"}, "Accept": {"*/*"}},
			want: http.Header{"Accept": {"*/*"}},
		},
		{"Keep-Alive alone", http.Header{"Keep-Alive": {"max=5"}}, http.Header{}},
		{"Proxy-Connection alone", http.Header{"Proxy-Connection": {"close"}}, http.Header{}},
		{"Transfer-Encoding alone", http.Header{"Transfer-Encoding": {"gzip, chunked"}}, http.Header{}},
		{"Upgrade alone", http.Header{"Upgrade": {"h2c"}}, http.Header{}},
		{"TE trailers kept", http.Header{"Te": {"trailers"}}, http.Header{"Te": {"trailers"}}},
		{"TE trailers in odd case and spaces kept", http.Header{"Te": {"  Trailers "}}, http.Header{"Te": {"trailers"}}},
		{"TE gzip removed", http.Header{"Te": {"gzip"}}, http.Header{}},
		{"TE trailers, gzip removed", http.Header{"Te": {"trailers, gzip"}}, http.Header{}},
		{"TE trailers with q removed", http.Header{"Te": {"trailers;q=0.5"}}, http.Header{}},
		{"TE on two lines removed", http.Header{"Te": {"trailers", "gzip"}}, http.Header{}},
		{"TE empty removed", http.Header{"Te": {""}}, http.Header{}},
		{"empty header", http.Header{}, http.Header{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := tt.in.Clone()
			headers.StripHopByHop(h)
			if !reflect.DeepEqual(h, tt.want) {
				t.Fatalf("StripHopByHop(%v) = %v, want %v", tt.in, h, tt.want)
			}
		})
	}
}

func TestStripHopByHopNil(t *testing.T) {
	headers.StripHopByHop(nil) // must not panic
}

var hopByHop = []string{"Connection", "Keep-Alive", "Proxy-Connection", "Transfer-Encoding", "Upgrade"}

func FuzzStripHopByHop(f *testing.F) {
	f.Add("keep-alive, x-foo", "trailers", "X-Foo", "1", "Upgrade", "websocket")
	f.Add("close", "gzip", "Content-Type", "text/plain", "Transfer-Encoding", "chunked")
	f.Add(" X-BAR ,,", "trailers, gzip", "x-bar", "2", "Proxy-Connection", "keep-alive")
	f.Add("te", "trailers", "Accept", "*/*", "Keep-Alive", "timeout=5")
	f.Add("", "", "", "", "", "")
	f.Add("a\tb, c d", "Trailers\n gzip", "c d", "v", "a\tb", "w")
	f.Fuzz(func(t *testing.T, connection, te, name1, value1, name2, value2 string) {
		h := http.Header{}
		for line := range strings.SplitSeq(connection, "\n") {
			h.Add("Connection", line)
		}
		if te != "" {
			for line := range strings.SplitSeq(te, "\n") {
				h.Add("Te", line)
			}
		}
		h.Add(name1, value1)
		h.Add(name2, value2)
		h.Add("X-End-To-End", "kept")
		before := h.Clone()

		headers.StripHopByHop(h)

		for _, name := range hopByHop {
			if _, ok := h[name]; ok {
				t.Fatalf("%s survived: %v (from %v)", name, h, before)
			}
		}
		for _, line := range before["Connection"] {
			for tok := range strings.SplitSeq(line, ",") {
				if tok = strings.TrimSpace(tok); tok == "" {
					continue
				}
				if _, ok := h[textproto.CanonicalMIMEHeaderKey(tok)]; ok {
					t.Fatalf("%q is listed in Connection but survived: %v (from %v)", tok, h, before)
				}
			}
		}
		if te, ok := h["Te"]; ok && (len(te) != 1 || te[0] != "trailers") {
			t.Fatalf("Te = %q survived, want only trailers", te)
		}
		// Nothing is added, and what is kept is unchanged (TE aside, which
		// is normalised to "trailers").
		for k, v := range h {
			if k == "Te" {
				continue
			}
			if !reflect.DeepEqual(v, before[k]) {
				t.Fatalf("%s = %q, was %q", k, v, before[k])
			}
		}
		if !listed(before, "X-End-To-End") && h.Get("X-End-To-End") != "kept" {
			t.Fatalf("end-to-end header removed: %v (from %v)", h, before)
		}
	})
}

// listed reports whether Connection in h names name.
func listed(h http.Header, name string) bool {
	for _, line := range h["Connection"] {
		for tok := range strings.SplitSeq(line, ",") {
			if textproto.CanonicalMIMEHeaderKey(strings.TrimSpace(tok)) == name {
				return true
			}
		}
	}
	return false
}
