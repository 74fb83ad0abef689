package main

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"spooky/bench/backend"
	"spooky/internal/testkit"
)

// countingBackend is an h2c demo backend that can be killed and brought
// back on the same address, and counts the requests it served and the
// POSTs it received by request ID.
type countingBackend struct {
	t      *testing.T
	name   string
	addr   string
	served atomic.Int64

	mu    sync.Mutex
	srv   *http.Server
	posts map[string]int
}

func startCountingBackend(t *testing.T, name string, posts map[string]int, mu *sync.Mutex) *countingBackend {
	b := &countingBackend{t: t, name: name, posts: posts}
	b.addr = testkit.FreeAddr(t, "tcp")
	b.start(mu)
	t.Cleanup(b.kill)
	return b
}

func (b *countingBackend) start(postsMu *sync.Mutex) {
	ln, err := net.Listen("tcp", b.addr)
	if err != nil {
		b.t.Fatal(err)
	}
	demo := backend.Handler(b.name)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/healthz" {
			b.served.Add(1)
		}
		if r.Method == http.MethodPost {
			postsMu.Lock()
			b.posts[r.Header.Get("X-Request-Id")]++
			postsMu.Unlock()
		}
		demo.ServeHTTP(w, r)
	})
	b.mu.Lock()
	b.srv = backend.ServeH2C(ln, h)
	b.mu.Unlock()
}

func (b *countingBackend) kill() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.srv != nil {
		b.srv.Close()
		b.srv = nil
	}
}

// TestFailoverUnderLoad kills one of three backends under a steady load of
// GETs and POSTs: the failed tries are retried elsewhere so no GET fails,
// the dead endpoint is ejected and marked unhealthy, no POST reaches a
// backend twice, and once the backend is back and passes its health checks
// it takes traffic again.
func TestFailoverUnderLoad(t *testing.T) {
	var postsMu sync.Mutex
	posts := map[string]int{}
	b1 := startCountingBackend(t, "b1", posts, &postsMu)
	b2 := startCountingBackend(t, "b2", posts, &postsMu)
	b3 := startCountingBackend(t, "b3", posts, &postsMu)
	doc := fmt.Sprintf(`listen: { address: "127.0.0.1:0" }
admin: { address: "127.0.0.1:0" }
log: { level: error }
routes:
  - match: { path_prefix: "/" }
    upstream: app
    timeout: 5s
    retries: { attempts: 3, on: [connect-failure, refused-stream, reset-before-response, 502, 503] }
upstreams:
  app:
    policy: round_robin
    health: { path: /healthz, interval: 50ms, timeout: 200ms, healthy: 2, unhealthy: 2 }
    outlier: { consecutive_failures: 2, base_ejection: 300ms, max_ejection_percent: 50 }
    # Every request in flight to b2 fails at once when it dies; the retry
    # budget is not what this test is about, so it has room for them all.
    retry_budget: { min_concurrency: 16 }
    endpoints: [ { address: %q }, { address: %q }, { address: %q } ]
`, b1.addr, b2.addr, b3.addr)
	url, d := startSpooky(t, doc)
	c := h3Client(t)

	gets := steadyLoad(t, c, url+"/bytes?n=64", 5)
	var postErrors atomic.Int64
	stopPosts := make(chan struct{})
	var posting sync.WaitGroup
	posting.Go(func() {
		for i := 0; ; i++ {
			select {
			case <-stopPosts:
				return
			default:
			}
			id := fmt.Sprintf("post-%d", i)
			req, _ := http.NewRequest(http.MethodPost, url+"/echo", strings.NewReader("payload "+id))
			req.Header.Set("X-Request-Id", id)
			resp, err := c.Do(req)
			if err != nil {
				postErrors.Add(1)
				continue
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	})

	delivered := func() int {
		postsMu.Lock()
		defer postsMu.Unlock()
		return len(posts)
	}
	testkit.WaitFor(t, "the load to reach every backend", func() bool {
		return b1.served.Load() >= 10 && b2.served.Load() >= 10 && b3.served.Load() >= 10 && delivered() > 0
	})
	b2.kill()
	ep := func() (healthy, ejected bool) {
		for _, s := range d.balancer.Stats().Endpoints {
			if s.Address == b2.addr {
				return s.Healthy, s.Ejected
			}
		}
		t.Fatal("b2 missing from the balancer's stats")
		return
	}
	testkit.WaitFor(t, "b2 to be marked unhealthy", func() bool { h, _ := ep(); return !h })
	ejections := func() int32 {
		for _, s := range d.balancer.Stats().Endpoints {
			if s.Address == b2.addr {
				return s.Ejections
			}
		}
		return 0
	}
	if ejections() == 0 {
		t.Error("b2 was never ejected by outlier detection")
	}
	// The load goes on without b2 for a while.
	others := func() int64 { return b1.served.Load() + b3.served.Load() }
	before := others()
	testkit.WaitFor(t, "50 more requests served by b1 and b3", func() bool { return others() >= before+50 })
	b2.start(&postsMu)
	testkit.WaitFor(t, "b2 to be healthy and not ejected", func() bool { h, e := ep(); return h && !e })
	before = b2.served.Load()
	testkit.WaitFor(t, "b2 to take traffic again", func() bool { return b2.served.Load() > before+20 })
	close(stopPosts)
	posting.Wait()
	failed, first, served := gets.stop()
	if failed != 0 {
		t.Errorf("%d of %d GETs failed; first: %v", failed, int(failed)+len(served), first)
	}
	postsMu.Lock()
	defer postsMu.Unlock()
	for id, n := range posts {
		if n > 1 {
			t.Errorf("POST %s reached the backends %d times", id, n)
		}
	}
	if len(posts) == 0 {
		t.Error("no POST reached a backend")
	}
	t.Logf("%d GETs served, %d POSTs delivered, %d POST errors, retries %v", len(served), len(posts), postErrors.Load(), d.balancer.Stats().Retries)
}
