package router

import (
	"context"
	"net/http/httptest"
	"testing"
	"time"

	"spooky/config"
	"spooky/envelope"
	"spooky/headers"
	"spooky/stages"
)

func TestMatch(t *testing.T) {
	routes := []config.Route{
		{Match: config.Match{Host: "api.example.com", PathPrefix: "/v1"}},
		{Match: config.Match{Host: "*.example.com", PathPrefix: "/"}},
		{Match: config.Match{Host: "*", PathPrefix: "/static"}},
	}
	for _, tc := range []struct {
		host, path string
		want       int
	}{
		{"api.example.com", "/v1/users", 0},
		{"API.Example.COM:8443", "/v1", 0},
		{"api.example.com", "/v2", 1},
		{"www.example.com", "/", 1},
		{"example.com", "/", -1}, // the wildcard needs a label before the suffix
		{"other.org", "/static/app.js", 2},
		{"other.org", "/", -1},
		{"[::1]:8443", "/static", 2},
		{"api.example.com.", "/v1", 0},
		{"www.example.com.:8443", "/", 1},
	} {
		if got := Match(routes, tc.host, tc.path); got != tc.want {
			t.Errorf("Match(%q, %q) = %d, want %d", tc.host, tc.path, got, tc.want)
		}
	}
}

func FuzzMatch(f *testing.F) {
	routes := []config.Route{
		{Match: config.Match{Host: "*.example.com", PathPrefix: "/api"}},
		{Match: config.Match{Host: "*", PathPrefix: "/"}},
	}
	f.Add("a.example.com:443", "/api/x")
	f.Add("[::1", "")
	f.Add("", "/")
	f.Fuzz(func(t *testing.T, host, path string) {
		i := Match(routes, host, path)
		if i < -1 || i >= len(routes) {
			t.Fatalf("index %d", i)
		}
		if len(path) > 0 && path[0] == '/' && i == -1 {
			t.Fatalf("%q %q fell through the catch-all route", host, path)
		}
	})
}

// TestHandle drives the stage: a routed envelope reaches the balancer's
// mailbox with the route's deadline; an unrouted one gets 404 at once.
func TestHandle(t *testing.T) {
	cfg := &config.Config{
		Stages: config.Stages{Router: config.Stage{Workers: 1, Queue: 4}},
		Routes: []config.Route{{Name: "api", Match: config.Match{Host: "*", PathPrefix: "/api"}, Upstream: "app", Timeout: time.Second}},
	}
	in, out := stages.NewMailbox(cfg.Stages.Router), stages.NewMailbox(cfg.Stages.Router)
	r := New(cfg, in, out)

	e := newEnvelope("/api/users")
	r.Handle(e)
	msg, err := out.Receive(context.Background())
	if err != nil || msg.Data != e {
		t.Fatalf("balancer got %+v, %v", msg, err)
	}
	if e.Route.Name != "api" || e.Request.Header.Get("Via") != headers.ViaFor(e.Request) {
		t.Fatalf("route %+v headers %v", e.Route, e.Request.Header)
	}
	if dl, ok := e.Ctx.Deadline(); !ok || dl.Sub(e.Arrived) != time.Second {
		t.Fatalf("deadline %v", dl)
	}
	e.Finish(200, nil)
	<-e.Done()
	e.Release()

	e = newEnvelope("/other")
	rec := e.Writer.(*httptest.ResponseRecorder)
	r.Handle(e)
	<-e.Done()
	if rec.Code != 404 || rec.Body.String() != "404 Not Found: no route for this host and path\n" {
		t.Fatalf("got %d %q", rec.Code, rec.Body)
	}
	e.Release()
}

func newEnvelope(path string) *envelope.Envelope {
	e := envelope.Get()
	e.Ctx = context.Background()
	e.Request = httptest.NewRequest("GET", "https://example.com"+path, nil)
	e.Writer = httptest.NewRecorder()
	e.ClientAddr = "127.0.0.1:1234"
	e.Arrived = time.Now()
	return e
}

func TestDotSegmentsAreResolvedBeforeMatching(t *testing.T) {
	routes := []config.Route{
		{Match: config.Match{Host: "*", PathPrefix: "/admin"}},
		{Match: config.Match{Host: "*", PathPrefix: "/public"}},
	}
	for _, tc := range []struct {
		path string
		want int
	}{
		{"/public/../admin/users", 0},
		{"/public/./a", 1},
		{"/public/..", -1},
		{"/public/a/../b/", 1},
		{"/admin/../public/", 1},
		{"/public/.well-known", 1},
	} {
		if got := Match(routes, "example.com", matchPath(tc.path)); got != tc.want {
			t.Errorf("%s matched route %d, want %d", tc.path, got, tc.want)
		}
	}
}
