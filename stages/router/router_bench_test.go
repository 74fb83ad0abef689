package router

import (
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
