package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"testing/iotest"
	"time"

	"spooky/internal/testkit"
)

// TestMixedFaultsGetOneHonestAnswerEach sends a mix of requests that end
// well and badly, at once, over few connections: whole answers, upstreams
// dying mid-body, a dead upstream, route timeouts, uploads cut off,
// clients giving up. Every request must end in exactly one of a complete
// response or an error (a reset stream), never in a success that is not
// one: a 2xx with a short or wrong body, or a 2xx for a request whose body
// never arrived whole. spooky must record each request exactly once.
func TestMixedFaultsGetOneHonestAnswerEach(t *testing.T) {
	b := startBackend(t, "b1")
	routes := "  - { match: { host: \"*\", path_prefix: \"/down\" }, upstream: down }\n" +
		"  - { match: { host: \"*\", path_prefix: \"/slow\" }, upstream: app, timeout: 100ms }\n" +
		allRoute
	url, d := startSpooky(t, spookyConfig(routes, map[string][]string{"app": {b.addr}, "down": {testkit.FreeAddr(t, "tcp")}}))
	clients := []*http.Client{h3Client(t), h3Client(t), h3Client(t)}

	const size = 100_000
	pattern := func(n int) []byte {
		const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
		p := make([]byte, n)
		for i := range p {
			p[i] = alphabet[i%len(alphabet)]
		}
		return p
	}(size)
	kinds := []struct {
		name string
		do   func(c *http.Client) outcome
	}{
		{"whole", func(c *http.Client) outcome {
			return fetch(c, http.MethodGet, url+"/bytes?n="+strconv.Itoa(size), nil, func(b []byte) bool { return bytes.Equal(b, pattern) })
		}},
		{"cut mid-body", func(c *http.Client) outcome {
			return fetch(c, http.MethodGet, url+"/cut?n="+strconv.Itoa(size), nil, func([]byte) bool { return false })
		}},
		{"dead upstream", func(c *http.Client) outcome {
			return fetch(c, http.MethodGet, url+"/down", nil, func(b []byte) bool { return strings.Contains(string(b), "connect failed") })
		}},
		{"route timeout", func(c *http.Client) outcome {
			return fetch(c, http.MethodGet, url+"/slow?d=5s", nil, func(b []byte) bool { return strings.Contains(string(b), "route timeout") })
		}},
		{"upload cut", func(c *http.Client) outcome {
			body := io.MultiReader(strings.NewReader(strings.Repeat("x", 32<<10)), iotest.ErrReader(errors.New("cut")))
			return fetch(c, http.MethodPost, url+"/echo", body, func([]byte) bool { return false })
		}},
		{"client gives up", func(c *http.Client) outcome {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
			defer cancel()
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url+"/slow?d=5s", nil)
			resp, err := c.Do(req)
			if err != nil {
				return outcome{err: err}
			}
			resp.Body.Close()
			return outcome{status: resp.StatusCode}
		}},
	}
	const perKind = 12
	results := make(chan outcome, perKind*len(kinds))
	var wg sync.WaitGroup
	for i := range perKind {
		for _, k := range kinds {
			c := clients[i%len(clients)]
			wg.Go(func() {
				o := k.do(c)
				o.kind = k.name
				results <- o
			})
		}
	}
	wg.Wait()
	close(results)
	counts := map[string]int{}
	for o := range results {
		ok := o.status/100 == 2
		switch {
		case ok && !o.whole:
			t.Errorf("%s: a %d success that is not one (short or wrong body, or an upload that never arrived)", o.kind, o.status)
		case o.kind == "whole" && !(ok && o.whole):
			t.Errorf("whole: %d, %v; want the whole body", o.status, o.err)
		case o.kind == "dead upstream" && o.status != http.StatusBadGateway,
			o.kind == "route timeout" && o.status != http.StatusGatewayTimeout:
			t.Errorf("%s: %d, %v", o.kind, o.status, o.err)
		case o.kind == "cut mid-body" || o.kind == "upload cut":
			if o.err == nil && ok {
				t.Errorf("%s: answered %d", o.kind, o.status)
			}
		}
		counts[fmt.Sprintf("%s %d", o.kind, o.status)]++
	}
	t.Logf("outcomes: %v", counts)

	// spooky records each request it took once, when its handler ends,
	// and telemetry counts it a moment later. A request whose client
	// gave up before its head arrived was never taken; every other one
	// was. Only the whole answers are successes.
	sent, mayVanish := perKind*len(kinds), perKind
	testkit.WaitFor(t, "telemetry to count the requests spooky took", func() bool { return total(recorded(t, d)) >= sent-mayVanish })
	testkit.WaitFor(t, "every handler to end", func() bool { return d.listener.Inspect().InFlight == 0 })
	byClass := recorded(t, d)
	if n := total(byClass); n < sent-mayVanish || n > sent {
		t.Fatalf("spooky recorded %d requests (%v); %d were sent, %d of which may have been given up before spooky saw them", n, byClass, sent, mayVanish)
	}
	if byClass["2xx"] != perKind {
		t.Fatalf("spooky recorded %d successes (%v); the clients got %d whole answers", byClass["2xx"], byClass, perKind)
	}
}

// outcome is how one request of the mix ended, as its client saw it.
type outcome struct {
	kind   string
	status int // 0: the request failed (a reset, or the client gave up)
	err    error
	whole  bool // the body is exactly what a whole answer carries
}

// fetch does one request and reads its whole body; whole judges the body.
func fetch(c *http.Client, method, url string, body io.Reader, whole func([]byte) bool) (o outcome) {
	req, _ := http.NewRequest(method, url, body)
	resp, err := c.Do(req)
	if err != nil {
		o.err = err
		return o
	}
	defer resp.Body.Close()
	got, err := io.ReadAll(resp.Body)
	if err != nil {
		// A reset after the head: the request failed, whatever its
		// status said.
		o.err = err
		return o
	}
	o.status, o.whole = resp.StatusCode, whole(got)
	return o
}

// recorded sums spooky_requests_total from the admin server's /metrics by
// status class.
func recorded(t *testing.T, d *daemon) map[string]int {
	t.Helper()
	resp, err := http.Get(d.telemetry.AdminURL() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	text, _ := io.ReadAll(resp.Body)
	byClass := map[string]int{}
	for line := range strings.Lines(string(text)) {
		if !strings.HasPrefix(line, "spooky_requests_total{") {
			continue
		}
		_, class, _ := strings.Cut(line, `status_class="`)
		class, _, _ = strings.Cut(class, `"`)
		v, err := strconv.Atoi(strings.TrimSpace(line[strings.LastIndexByte(line, ' ')+1:]))
		if err != nil {
			t.Fatalf("metrics line %q", line)
		}
		byClass[class] += v
	}
	return byClass
}

func total(byClass map[string]int) int {
	n := 0
	for _, v := range byClass {
		n += v
	}
	return n
}
