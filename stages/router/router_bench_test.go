package router

import (
	"net/http"
	"testing"

	"spooky/config"
)

func BenchmarkMatch(b *testing.B) {
	routes := []config.Route{
		{Match: config.Match{Host: "api.example.com", PathPrefix: "/v1"}},
		{Match: config.Match{Host: "*.example.com", PathPrefix: "/static"}},
		{Match: config.Match{Host: "*", PathPrefix: "/"}},
	}
	b.ReportAllocs()
	for b.Loop() {
		Match(routes, "www.example.com:8443", "/index.html")
	}
}

func BenchmarkNormalize(b *testing.B) {
	h := http.Header{"Accept": {"*/*"}, "User-Agent": {"bench"}, "Te": {"trailers"}}
	b.ReportAllocs()
	for b.Loop() {
		Normalize(h, "192.0.2.1:5000")
		delete(h, "X-Forwarded-For")
		delete(h, "Via")
	}
}
