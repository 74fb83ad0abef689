package envelope_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"sync"
	"testing"
	"time"

	"spooky/config"
	"spooky/envelope"
	"spooky/upstream"
)

// get takes an envelope from the pool and releases it when the test ends.
// A test that uses get must not release the envelope itself.
func get(t *testing.T) *envelope.Envelope {
	t.Helper()
	e := envelope.Get()
	t.Cleanup(e.Release)
	return e
}

// checkZero fails for every exported field of e that is not its zero value.
func checkZero(t *testing.T, e *envelope.Envelope) {
	t.Helper()
	v := reflect.ValueOf(e).Elem()
	for i := range v.NumField() {
		f := v.Type().Field(i)
		if !f.IsExported() {
			continue
		}
		if !v.Field(i).IsZero() {
			t.Errorf("%s = %v, want zero", f.Name, v.Field(i).Interface())
		}
	}
	if e.Finished() {
		t.Error("Finished() = true, want false")
	}
	select {
	case <-e.Done():
		t.Error("Done() has a pending signal, want none")
	default:
	}
}

func TestGetReturnsZeroState(t *testing.T) {
	for range 3 { // fresh from New and, likely, reused from the pool
		e := envelope.Get()
		checkZero(t, e)
		if e.Done() == nil {
			t.Fatal("Done() = nil, want a channel")
		}
		e.Release()
	}
}

func TestReleaseZeroesEveryField(t *testing.T) {
	e := envelope.Get()
	rec := httptest.NewRecorder()
	e.Ctx = context.Background()
	e.SetDeadline(time.Now().Add(time.Hour))
	e.Request = &http.Request{Method: http.MethodGet, URL: &url.URL{Path: "/"}}
	e.Writer = rec
	e.ClientAddr = "192.0.2.1:4433"
	e.Arrived = time.Unix(1700000000, 0)
	e.Route = &config.Route{Upstream: "app"}
	e.Endpoint = upstream.NewEndpoint("127.0.0.1:9001", 1, 0, 0)
	e.Attempt = 2
	e.Tried = 1
	e.ResponseStarted = true
	if !e.Finish(http.StatusBadGateway, errors.New("boom")) {
		t.Fatal("first Finish returned false")
	}
	e.Aborted = true // Finish sets it; say so in case it stops doing that

	// Every exported field is set, so a field added to Envelope without
	// being added here (and to Release) fails this test.
	v := reflect.ValueOf(e).Elem()
	for i := range v.NumField() {
		if f := v.Type().Field(i); f.IsExported() && v.Field(i).IsZero() {
			t.Fatalf("test does not set field %s; set it so Release is checked to zero it", f.Name)
		}
	}

	ctx := e.Ctx
	e.Release()
	// e is in the pool now; nobody else in this test can have taken it.
	checkZero(t, e)
	if ctx.Err() == nil {
		t.Error("the context made by SetDeadline is still live after Release, want it cancelled")
	}

	// Whatever the pool hands out next is in its zero state too.
	e2 := envelope.Get()
	checkZero(t, e2)
	e2.Release()
}

func TestReleaseTwicePanics(t *testing.T) {
	e := envelope.Get()
	e.Release()
	defer func() {
		r := recover()
		if r == nil {
			t.Fatal("second Release did not panic")
		}
		if msg := fmt.Sprint(r); msg != "envelope: released twice" {
			t.Fatalf("panic = %q, want %q", msg, "envelope: released twice")
		}
	}()
	e.Release()
}

func TestReleaseDrainsUnwaitedFinish(t *testing.T) {
	e := envelope.Get()
	e.Finish(http.StatusOK, nil) // nobody reads Done
	e.Release()
	checkZero(t, e)
}

func TestFinishFirstCallWins(t *testing.T) {
	e := get(t)
	if !e.Finish(http.StatusOK, nil) {
		t.Fatal("first Finish = false, want true")
	}
	if e.Finish(http.StatusBadGateway, errors.New("late")) {
		t.Fatal("second Finish = true, want false")
	}
	if e.Finish(http.StatusGatewayTimeout, nil) {
		t.Fatal("third Finish = true, want false")
	}
	if e.Status != http.StatusOK || e.Err != nil || !e.Finished() {
		t.Fatalf("Status, Err, Finished = %d, %v, %v; want 200, nil, true (the first call's)", e.Status, e.Err, e.Finished())
	}
	<-e.Done()
	select {
	case <-e.Done():
		t.Fatal("Done received twice")
	default:
	}
}

func TestFinishConcurrentExactlyOnce(t *testing.T) {
	const callers = 100
	e := get(t)
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		wins  int
		start = make(chan struct{})
	)
	for i := range callers {
		wg.Go(func() {
			<-start
			if e.Finish(200+i, nil) {
				mu.Lock()
				wins++
				mu.Unlock()
			}
		})
	}
	close(start)
	wg.Wait()
	if wins != 1 {
		t.Fatalf("%d Finish calls returned true, want exactly 1", wins)
	}
	<-e.Done()
	select {
	case <-e.Done():
		t.Fatal("Done received more than once")
	default:
	}
}

func TestFinishWritesErrorResponse(t *testing.T) {
	tests := []struct {
		status     int
		err        error
		wantBody   string
		retryAfter string
	}{
		{http.StatusBadGateway, errors.New("connection refused"), "502 Bad Gateway: connection refused\n", ""},
		{http.StatusServiceUnavailable, errors.New("no endpoint available"), "503 Service Unavailable: no endpoint available\n", "1"},
		{http.StatusGatewayTimeout, errors.New("route timeout"), "504 Gateway Timeout: route timeout\n", ""},
		{http.StatusNotFound, errors.New("no route"), "404 Not Found: no route\n", ""},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.status), func(t *testing.T) {
			rec := httptest.NewRecorder()
			e := get(t)
			e.Writer = rec
			if !e.Finish(tt.status, tt.err) {
				t.Fatal("Finish = false")
			}
			if rec.Code != tt.status {
				t.Errorf("status = %d, want %d", rec.Code, tt.status)
			}
			if got := rec.Body.String(); got != tt.wantBody {
				t.Errorf("body = %q, want %q", got, tt.wantBody)
			}
			if got := rec.Header().Get("Retry-After"); got != tt.retryAfter {
				t.Errorf("Retry-After = %q, want %q", got, tt.retryAfter)
			}
			if got := rec.Header().Get("Content-Type"); got != "text/plain; charset=utf-8" {
				t.Errorf("Content-Type = %q", got)
			}
			if got := rec.Header().Get("X-Content-Type-Options"); got != "nosniff" {
				t.Errorf("X-Content-Type-Options = %q", got)
			}
			if e.Aborted {
				t.Error("Aborted = true, want false: the error response was written")
			}
			if e.Status != tt.status || e.Err != tt.err {
				t.Errorf("Status, Err = %d, %v; want %d, %v", e.Status, e.Err, tt.status, tt.err)
			}
		})
	}
}

// refusingWriter fails the test on any use: nothing may be written.
type refusingWriter struct{ t *testing.T }

func (w refusingWriter) Header() http.Header {
	w.t.Error("Header called")
	return http.Header{}
}

func (w refusingWriter) Write(p []byte) (int, error) {
	w.t.Errorf("Write(%q) called", p)
	return len(p), nil
}

func (w refusingWriter) WriteHeader(status int) { w.t.Errorf("WriteHeader(%d) called", status) }

func TestFinishAfterResponseStartedAborts(t *testing.T) {
	e := get(t)
	e.Writer = refusingWriter{t}
	e.ResponseStarted = true
	if !e.Finish(http.StatusBadGateway, errors.New("upstream reset")) {
		t.Fatal("Finish = false")
	}
	if !e.Aborted {
		t.Fatal("Aborted = false, want true: the body was cut short")
	}
}

func TestFinishWithoutErrorWritesNothing(t *testing.T) {
	for _, started := range []bool{false, true} {
		e := get(t)
		e.Writer = refusingWriter{t}
		e.ResponseStarted = started
		e.Finish(http.StatusOK, nil)
		if e.Aborted {
			t.Errorf("ResponseStarted=%v: Aborted = true after a clean finish", started)
		}
	}
}

func TestFinishWithoutWriter(t *testing.T) {
	e := get(t)
	if !e.Finish(http.StatusBadGateway, errors.New("boom")) {
		t.Fatal("Finish = false")
	}
	<-e.Done()
}

func TestSetDeadlineNarrowsCtx(t *testing.T) {
	parent, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	e := get(t)
	e.Ctx = parent
	at := time.Now().Add(time.Hour)
	e.SetDeadline(at)
	if got, ok := e.Ctx.Deadline(); !ok || !got.Equal(at) {
		t.Fatalf("Ctx.Deadline() = %v, %v; want %v", got, ok, at)
	}
	if err := e.Ctx.Err(); err != nil {
		t.Fatalf("Ctx.Err() = %v before the deadline", err)
	}
	cancel()
	if err := e.Ctx.Err(); !errors.Is(err, context.Canceled) {
		t.Fatalf("Ctx.Err() = %v after the parent ended, want Canceled", err)
	}
}

func TestSetDeadlinePassed(t *testing.T) {
	e := get(t)
	e.Ctx = context.Background()
	e.SetDeadline(time.Now().Add(-time.Second))
	if err := e.Ctx.Err(); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Ctx.Err() = %v, want DeadlineExceeded", err)
	}
}

// A second SetDeadline (the listener sets the client deadline, a later
// stage narrows it to the route timeout) must leave a live context.
func TestSetDeadlineTwice(t *testing.T) {
	e := get(t)
	e.Ctx = context.Background()
	first := time.Now().Add(time.Hour)
	second := time.Now().Add(30 * time.Minute)
	e.SetDeadline(first)
	e.SetDeadline(second)
	if err := e.Ctx.Err(); err != nil {
		t.Fatalf("BUG(envelope.go SetDeadline): after a second SetDeadline, Ctx.Err() = %v, want nil: "+
			"SetDeadline cancels the context made by the first call and then derives the new one from it, "+
			"so the new context is born cancelled", err)
	}
	if got, ok := e.Ctx.Deadline(); !ok || !got.Equal(second) {
		t.Fatalf("Ctx.Deadline() = %v, %v; want %v", got, ok, second)
	}
}

func TestGetReleaseDoesNotAllocate(t *testing.T) {
	if raceEnabled {
		t.Skip("sync.Pool drops a random share of Puts under the race detector")
	}
	// Warm the pool.
	envelope.Get().Release()
	allocs := testing.AllocsPerRun(1000, func() {
		e := envelope.Get()
		e.Finish(http.StatusOK, nil)
		<-e.Done()
		e.Release()
	})
	if allocs != 0 {
		t.Fatalf("Get+Finish+Done+Release allocates %v times per run, want 0", allocs)
	}
}

func BenchmarkGetRelease(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		e := envelope.Get()
		e.Finish(http.StatusOK, nil)
		<-e.Done()
		e.Release()
	}
}

func Example() {
	e := envelope.Get()
	e.Writer = httptest.NewRecorder()

	fmt.Println(e.Finish(http.StatusServiceUnavailable, errors.New("no endpoint available")))
	fmt.Println(e.Finish(http.StatusOK, nil)) // too late: the first call won
	<-e.Done()
	rec := e.Writer.(*httptest.ResponseRecorder)
	fmt.Print(rec.Code, " ", rec.Header().Get("Retry-After"), " ", rec.Body.String())
	e.Release()
	// Output:
	// true
	// false
	// 503 1 503 Service Unavailable: no endpoint available
}
