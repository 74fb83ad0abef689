package headers_test

import (
	"net/http"
	"reflect"
	"testing"

	"spooky/headers"
)

func TestToUpstream(t *testing.T) {
	for _, tc := range []struct {
		name   string
		in     http.Header
		client string
		want   http.Header
	}{
		{
			name:   "first hop",
			in:     http.Header{"Accept": {"*/*"}},
			client: "192.0.2.1:5000",
			want: http.Header{
				"Accept":            {"*/*"},
				"X-Forwarded-For":   {"192.0.2.1"},
				"X-Forwarded-Proto": {"https"},
				"Via":               {"3 spooky"},
			},
		},
		{
			name: "later hop, hop-by-hop stripped",
			in: http.Header{
				"X-Forwarded-For": {"203.0.113.7", "198.51.100.2"},
				"Via":             {"1.1 edge"},
				"Connection":      {"close, X-Private"},
				"X-Private":       {"secret"},
				"Keep-Alive":      {"timeout=5"},
				"Te":              {"trailers"},
			},
			client: "[2001:db8::1]:443",
			want: http.Header{
				"X-Forwarded-For":   {"203.0.113.7, 198.51.100.2, 2001:db8::1"},
				"X-Forwarded-Proto": {"https"},
				"Via":               {"1.1 edge, 3 spooky"},
				"Te":                {"trailers"},
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			headers.ToUpstream(tc.in, tc.client)
			if !reflect.DeepEqual(tc.in, tc.want) {
				t.Fatalf("got %v\nwant %v", tc.in, tc.want)
			}
		})
	}
}

func BenchmarkToUpstream(b *testing.B) {
	h := http.Header{"Accept": {"*/*"}, "User-Agent": {"bench"}, "Te": {"trailers"}}
	b.ReportAllocs()
	for b.Loop() {
		headers.ToUpstream(h, "192.0.2.1:5000")
		delete(h, "X-Forwarded-For")
		delete(h, "Via")
	}
}
