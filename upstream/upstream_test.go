package upstream

import (
	"testing"
	"time"

	"spooky/config"
)

func group(n int, outlier config.Outlier) *Group {
	eps := make([]*Endpoint, n)
	for i := range eps {
		eps[i] = NewEndpoint(string(rune('a'+i))+":1", 1, 0, 0)
	}
	return NewGroup("g", outlier, eps)
}

// fail ends one failed request on ep at now.
func fail(ep *Endpoint, now int64) {
	ep.Begin()
	ep.End(now, time.Millisecond, true)
}

func TestConsecutiveFailuresEjectForGrowingSpans(t *testing.T) {
	g := group(4, config.Outlier{ConsecutiveFailures: 3, BaseEjection: time.Second, MaxEjectionPercent: 50})
	a := g.Endpoints[0]
	now := time.Now().UnixNano()
	fail(a, now)
	fail(a, now)
	if !a.Available(now) {
		t.Fatal("ejected after 2 failures, want 3")
	}
	fail(a, now)
	if a.Available(now) || a.Available(now+int64(999*time.Millisecond)) || !a.Available(now+int64(time.Second)) {
		t.Fatal("first ejection should last BaseEjection")
	}
	later := now + int64(2*time.Second)
	for range 3 {
		fail(a, later)
	}
	if a.Available(later+int64(1999*time.Millisecond)) || !a.Available(later+int64(2*time.Second)) {
		t.Fatal("second ejection should last twice BaseEjection")
	}
}

func TestSuccessResetsTheFailureCount(t *testing.T) {
	g := group(2, config.Outlier{ConsecutiveFailures: 2, BaseEjection: time.Second, MaxEjectionPercent: 100})
	a := g.Endpoints[0]
	now := time.Now().UnixNano()
	fail(a, now)
	a.Begin()
	a.End(now, time.Millisecond, false)
	fail(a, now)
	if !a.Available(now) {
		t.Fatal("failures that were not consecutive ejected the endpoint")
	}
}

func TestMaxEjectionPercentCapsEjections(t *testing.T) {
	for _, tc := range []struct {
		n, percent, wantOut int
	}{
		{4, 50, 2},
		{4, 10, 1}, // at least one may always go
		{10, 30, 3},
		{1, 100, 0}, // the only endpoint stays
	} {
		g := group(tc.n, config.Outlier{ConsecutiveFailures: 1, BaseEjection: time.Minute, MaxEjectionPercent: tc.percent})
		now := time.Now().UnixNano()
		for _, ep := range g.Endpoints {
			fail(ep, now)
		}
		out := 0
		for _, ep := range g.Endpoints {
			if !ep.Available(now) {
				out++
			}
		}
		if out != tc.wantOut {
			t.Errorf("%d endpoints, %d%%: %d ejected, want %d", tc.n, tc.percent, out, tc.wantOut)
		}
	}
}

func TestHealthFlipsAfterThresholds(t *testing.T) {
	ep := group(1, config.Outlier{}).Endpoints[0]
	steps := []struct {
		ok, changed, healthy bool
	}{
		{false, false, true},
		{false, false, true},
		{false, true, false}, // third failure in a row
		{true, false, false},
		{false, false, false}, // a failure breaks the streak of passes
		{true, false, false},
		{true, true, true}, // second pass in a row
	}
	for i, s := range steps {
		if changed := ep.ReportHealth(s.ok, 2, 3); changed != s.changed || ep.Healthy() != s.healthy {
			t.Fatalf("step %d: changed %v healthy %v; want %v %v", i, changed, ep.Healthy(), s.changed, s.healthy)
		}
	}
}

func TestBreakerLimitsInFlight(t *testing.T) {
	ep := NewEndpoint("a:1", 1, 0, 2)
	now := time.Now().UnixNano()
	ep.Begin()
	ep.Begin()
	if ep.Available(now) || !ep.AtLimit() {
		t.Fatal("available at its limit")
	}
	ep.End(now, time.Millisecond, false)
	if !ep.Available(now) {
		t.Fatal("not available below its limit")
	}
}

func TestRetryBudget(t *testing.T) {
	g := group(2, config.Outlier{})
	g.RetryBudget = config.RetryBudget{Percent: 50, MinConcurrency: 1}
	if !g.AcquireRetry() || g.AcquireRetry() {
		t.Fatal("with nothing in flight the budget is MinConcurrency")
	}
	g.ReleaseRetry()
	for range 10 {
		g.Endpoints[0].Begin()
	}
	got := 0
	for g.AcquireRetry() {
		got++
	}
	if got != 5 || g.Retries() != 6 {
		t.Fatalf("%d retries allowed with 10 in flight at 50%%, %d in all", got, g.Retries())
	}
}

func TestEWMAIsPeakSensitiveAndDecays(t *testing.T) {
	ep := NewEndpoint("a:1", 1, 0, 0)
	now := time.Now().UnixNano()
	ep.observeLatency(now, float64(10*time.Millisecond))
	ep.observeLatency(now, float64(100*time.Millisecond))
	if ep.EWMA() != float64(100*time.Millisecond) {
		t.Fatalf("a slower sample did not take over at once: %v", ep.EWMA())
	}
	// A faster sample right after barely moves it; one long after mostly
	// replaces it.
	ep.observeLatency(now+int64(time.Millisecond), float64(10*time.Millisecond))
	if ep.EWMA() < float64(99*time.Millisecond) {
		t.Fatalf("moved too fast: %v", ep.EWMA())
	}
	ep.observeLatency(now+int64(60*time.Second), float64(10*time.Millisecond))
	if ep.EWMA() > float64(11*time.Millisecond) {
		t.Fatalf("did not decay: %v", ep.EWMA())
	}
}

func TestEWMAAtDecaysWithoutTraffic(t *testing.T) {
	ep := NewEndpoint("a:1", 1, 0, 0)
	now := time.Now().UnixNano()
	ep.observeLatency(now, float64(100*time.Millisecond))
	if got := ep.EWMAAt(now + int64(500*time.Millisecond)); got != float64(100*time.Millisecond) {
		t.Fatalf("decayed within a second: %v", got)
	}
	if got := ep.EWMAAt(now + int64(30*time.Second)); got > float64(10*time.Millisecond) || got <= 0 {
		t.Fatalf("after 30 s without traffic the estimate is %v", got)
	}
}
