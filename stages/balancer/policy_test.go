package balancer

import (
	"math"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"spooky/config"
	"spooky/upstream"
)

// policyNames lists every policy NewPolicy knows.
var policyNames = []string{
	"round_robin", "weighted_round_robin", "random", "weighted_random",
	"least_request", "peak_ewma", "ring_hash", "maglev", "fallback",
}

// newPool returns endpoints named a, b, c… with the given weights.
func newPool(weights ...int) []*upstream.Endpoint {
	eps := make([]*upstream.Endpoint, len(weights))
	for i, w := range weights {
		eps[i] = upstream.NewEndpoint(string(rune('a'+i)), w, 0, 0)
	}
	return numbered(eps)
}

// without returns fresh endpoints with the addresses and weights of eps
// but the i-th, as a reload that drops that endpoint builds them.
func without(eps []*upstream.Endpoint, i int) []*upstream.Endpoint {
	var rest []*upstream.Endpoint
	for j, ep := range eps {
		if j != i {
			rest = append(rest, upstream.NewEndpoint(ep.Address, ep.Weight, 0, 0))
		}
	}
	return numbered(rest)
}

// numbered puts eps in one group, whose outlier detection ejects an
// endpoint on its first failure.
func numbered(eps []*upstream.Endpoint) []*upstream.Endpoint {
	upstream.NewGroup("test", config.Outlier{ConsecutiveFailures: 1, BaseEjection: time.Minute, MaxEjectionPercent: 100}, eps)
	return eps
}

// ones returns n weights of 1.
func ones(n int) []int {
	w := make([]int, n)
	for i := range w {
		w[i] = 1
	}
	return w
}

func newPolicy(t testing.TB, name string, eps []*upstream.Endpoint) Policy {
	t.Helper()
	pol, err := NewPolicy(name, eps)
	if err != nil {
		t.Fatal(err)
	}
	return pol
}

// keyed is the pick for the i-th test key.
func keyed(i int) *Pick {
	return &Pick{Key: HashKey("key-" + strconv.Itoa(i)), HasKey: true}
}

// sequence is the addresses of n picks for p, "-" for none.
func sequence(pol Policy, eps []*upstream.Endpoint, p *Pick, n int) string {
	var b strings.Builder
	for range n {
		b.WriteString(address(pol.Pick(eps, p)))
	}
	return b.String()
}

func address(ep *upstream.Endpoint) string {
	if ep == nil {
		return "-"
	}
	return ep.Address
}

// measure gives ep a latency sample.
func measure(ep *upstream.Endpoint, now int64, latency time.Duration) {
	ep.Begin()
	ep.End(now, latency, false)
}

func TestPoliciesSkipUnusableEndpoints(t *testing.T) {
	for _, name := range policyNames {
		t.Run(name, func(t *testing.T) {
			eps := newPool(ones(5)...)
			eps[0].ReportHealth(false, 1, 1) // a: unhealthy
			eps[1].Begin()
			eps[1].End(0, time.Millisecond, true) // b: ejected
			eps[2].MaxRequests = 1
			eps[2].Begin()                     // c: at its limit
			tried := uint64(1) << eps[3].Index // d: failed this request before
			pol := newPolicy(t, name, eps)
			for i := range 100 {
				p := keyed(i)
				p.Tried, p.HasKey = tried, i%2 == 0
				if got := pol.Pick(eps, p); got != eps[4] {
					t.Fatalf("pick %d (key %v): got %s, want e, the only usable endpoint", i, p.HasKey, address(got))
				}
			}
			for _, hasKey := range []bool{true, false} {
				p := &Pick{Tried: tried | 1<<eps[4].Index, HasKey: hasKey}
				if got := pol.Pick(eps, p); got != nil {
					t.Fatalf("key %v: got %s with no endpoint usable", hasKey, address(got))
				}
			}
		})
	}
}

func TestWeightedPoliciesShareByWeight(t *testing.T) {
	// 2% is eight standard deviations of weighted_random's shares over this
	// many picks, so the test does not flake.
	const picks = 40_000
	for _, name := range []string{"weighted_round_robin", "weighted_random", "least_request"} {
		t.Run(name, func(t *testing.T) {
			eps := newPool(1, 2, 3, 4)
			pol := newPolicy(t, name, eps)
			count := make([]int, len(eps))
			for range picks {
				ep := pol.Pick(eps, &Pick{})
				// Every request stays in flight: an equal, steady load,
				// which least_request spreads by weight.
				ep.Begin()
				count[ep.Index]++
			}
			for i, ep := range eps {
				share, want := float64(count[i])/picks, float64(ep.Weight)/10
				if math.Abs(share-want) > 0.02 {
					t.Errorf("%s: share %.3f, want %.3f ± 0.02", ep.Address, share, want)
				}
			}
		})
	}
}

func TestWeightedRoundRobinIsSmooth(t *testing.T) {
	eps := newPool(5, 1, 1)
	pol := newPolicy(t, "weighted_round_robin", eps)
	steps := []struct {
		name   string
		change func()
		want   string
	}{
		{"weights 5, 1, 1 interleave", func() {}, "aabacaa" + "aabacaa"},
		{"c down: 5, 1 interleave", func() { eps[2].ReportHealth(false, 1, 1) }, "aaabaa" + "aaabaa"},
		{"c back", func() { eps[2].ReportHealth(true, 1, 1) }, "aabacaa"},
	}
	for _, step := range steps {
		step.change()
		if got := sequence(pol, eps, &Pick{}, len(step.want)); got != step.want {
			t.Fatalf("%s: picked %s, want %s", step.name, got, step.want)
		}
	}
}

func TestLeastRequestPrefersFewerInFlightPerWeight(t *testing.T) {
	tests := []struct {
		name     string
		weights  []int
		inFlight []int
		want     string
	}{
		{"fewer in flight", []int{1, 1}, []int{3, 0}, "b"},
		{"more in flight but heavier", []int{4, 1}, []int{2, 0}, "a"},
		{"equal load, heavier", []int{1, 2}, []int{1, 1}, "b"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			eps := newPool(tt.weights...)
			for i, n := range tt.inFlight {
				for range n {
					eps[i].Begin()
				}
			}
			pol := newPolicy(t, "least_request", eps)
			if got, want := sequence(pol, eps, &Pick{}, 20), strings.Repeat(tt.want, 20); got != want {
				t.Fatalf("picked %s, want %s", got, want)
			}
		})
	}
}

func TestPeakEWMAProbesUnmeasuredEndpointsFirst(t *testing.T) {
	eps := newPool(ones(4)...)
	pol := newPolicy(t, "peak_ewma", eps)
	// A fresh group: each pick probes a different endpoint while the
	// probes are out.
	seen := map[*upstream.Endpoint]bool{}
	for range len(eps) {
		ep := pol.Pick(eps, &Pick{})
		ep.Begin()
		seen[ep] = true
	}
	if len(seen) != len(eps) {
		t.Fatalf("first %d picks went to %d endpoints", len(eps), len(seen))
	}

	// Three measured fast endpoints and one never measured: it goes first
	// however fast the others are, then is left alone while its probe is
	// out.
	eps = newPool(ones(4)...)
	for _, ep := range eps[:3] {
		measure(ep, 0, time.Microsecond)
	}
	if got := pol.Pick(eps, &Pick{}); got != eps[3] {
		t.Fatalf("picked %s before unmeasured d", address(got))
	}
	eps[3].Begin()
	for i := range 100 {
		ep := pol.Pick(eps, &Pick{})
		if ep == eps[3] {
			t.Fatalf("pick %d: d again while its probe is out", i)
		}
		measure(ep, 0, time.Microsecond)
	}
}

func TestPeakEWMAAvoidsASlowEndpoint(t *testing.T) {
	// Two simulated seconds of a request every interval, taking 1ms on a
	// fast endpoint and 10ms on the slow one.
	tests := []struct {
		name     string
		interval time.Duration
	}{
		// Nothing is ever in flight at a pick, so only latency tells the
		// slow endpoint apart.
		{"one at a time", 10 * time.Millisecond},
		{"overlapping", 100 * time.Microsecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			eps := newPool(ones(4)...)
			slow := eps[3]
			pol := newPolicy(t, "peak_ewma", eps)
			type exchange struct {
				ep      *upstream.Endpoint
				latency time.Duration
				done    int64
			}
			var out []exchange
			picks, onSlow := 0, 0
			for now := int64(0); now < int64(2*time.Second); now += int64(tt.interval) {
				still := out[:0]
				for _, x := range out {
					if x.done > now {
						still = append(still, x)
						continue
					}
					x.ep.End(x.done, x.latency, false)
				}
				out = still
				ep := pol.Pick(eps, &Pick{Now: now})
				latency := time.Millisecond
				if ep == slow {
					latency *= 10
					onSlow++
				}
				ep.Begin()
				out = append(out, exchange{ep, latency, now + int64(latency)})
				picks++
			}
			share := float64(onSlow) / float64(picks)
			t.Logf("slow endpoint took %.1f%% of %d picks", 100*share, picks)
			if share > 0.2 {
				t.Fatalf("slow endpoint took %.1f%% of picks, want at most 20%%", 100*share)
			}
		})
	}
}

func TestHashPoliciesKeepAKeyInPlace(t *testing.T) {
	for _, name := range []string{"ring_hash", "maglev"} {
		t.Run(name, func(t *testing.T) {
			eps := newPool(ones(10)...)
			// A second build stands for a second spooky instance.
			pol, other := newPolicy(t, name, eps), newPolicy(t, name, newPool(ones(10)...))
			for i := range 1000 {
				p := keyed(i)
				first := pol.Pick(eps, p)
				if again, elsewhere := pol.Pick(eps, p), other.Pick(eps, p); again != first || elsewhere != first {
					t.Fatalf("key %d went to %s, then %s, and %s on another instance",
						i, address(first), address(again), address(elsewhere))
				}
				// A retry avoiding the first endpoint lands in one place too.
				p.Tried = 1 << first.Index
				retry := pol.Pick(eps, p)
				if retry == first || retry == nil || pol.Pick(eps, p) != retry {
					t.Fatalf("key %d: retry went to %s, then %s", i, address(retry), address(pol.Pick(eps, p)))
				}
			}
		})
	}
}

func TestHashPoliciesMoveFewKeysWhenAnEndpointGoes(t *testing.T) {
	const keys = 10_000
	tests := []struct {
		name     string
		maxMoved float64 // of all keys, including the tenth that must move
	}{
		{"ring_hash", 0.15},
		{"maglev", 0.12},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			eps := newPool(ones(10)...)
			rest := without(eps, 3)
			before, after := newPolicy(t, tt.name, eps), newPolicy(t, tt.name, rest)
			moved := 0
			for i := range keys {
				if before.Pick(eps, keyed(i)).Address != after.Pick(rest, keyed(i)).Address {
					moved++
				}
			}
			share := float64(moved) / keys
			t.Logf("%.1f%% of keys moved", 100*share)
			if share > tt.maxMoved {
				t.Fatalf("%.1f%% of keys moved, want at most %.0f%%", 100*share, 100*tt.maxMoved)
			}
		})
	}
}

func TestHashPoliciesShareByWeight(t *testing.T) {
	const keys = 10_000
	for _, name := range []string{"ring_hash", "maglev"} {
		t.Run(name, func(t *testing.T) {
			eps := newPool(1, 3)
			pol := newPolicy(t, name, eps)
			onA := 0
			for i := range keys {
				if pol.Pick(eps, keyed(i)) == eps[0] {
					onA++
				}
			}
			share := float64(onA) / keys
			t.Logf("a (weight 1 of 4) took %.1f%% of keys", 100*share)
			if math.Abs(share-0.25) > 0.03 {
				t.Fatalf("a took %.1f%% of keys, want 25 ± 3%%", 100*share)
			}
		})
	}
}

func TestHashPoliciesWithoutKeyTakeTurns(t *testing.T) {
	for _, name := range []string{"ring_hash", "maglev"} {
		t.Run(name, func(t *testing.T) {
			eps := newPool(ones(3)...)
			if got := sequence(newPolicy(t, name, eps), eps, &Pick{}, 6); got != "abcabc" {
				t.Fatalf("picked %s without a key, want abcabc", got)
			}
		})
	}
}

func TestFallbackUsesALaterGroupOnlyWhileEarlierOnesAreDown(t *testing.T) {
	eps := newPool(ones(5)...)
	for i, priority := range []int{0, 0, 1, 1, 2} {
		eps[i].Priority = priority
	}
	a, b, c, d := eps[0], eps[1], eps[2], eps[3]
	pol := newPolicy(t, "fallback", eps)
	health := func(ok bool, eps ...*upstream.Endpoint) func() {
		return func() {
			for _, ep := range eps {
				ep.ReportHealth(ok, 1, 1)
			}
		}
	}
	steps := []struct {
		name   string
		change func()
		want   string
	}{
		{"all up: first group takes turns", func() {}, "abab"},
		{"a down: b alone", health(false, a), "bbbb"},
		{"first group down: second takes turns", health(false, b), "cdcd"},
		{"second group down: third", health(false, c, d), "eeee"},
		{"c back: second again", health(true, c), "cccc"},
		{"a back: first again", health(true, a), "aaaa"},
		{"all down", health(false, eps...), "----"},
	}
	for _, step := range steps {
		step.change()
		if got := sequence(pol, eps, &Pick{}, len(step.want)); got != step.want {
			t.Fatalf("%s: picked %s, want %s", step.name, got, step.want)
		}
	}
}

func TestNewPolicyNamesAnUnknownPolicy(t *testing.T) {
	_, err := NewPolicy("least_conn", newPool(1))
	if err == nil || !strings.Contains(err.Error(), `"least_conn"`) {
		t.Fatalf("got error %v, want one naming \"least_conn\"", err)
	}
}

func TestPoliciesPickAllocatesNothing(t *testing.T) {
	for _, name := range policyNames {
		t.Run(name, func(t *testing.T) {
			eps := newPool(ones(10)...)
			pol := newPolicy(t, name, eps)
			p := keyed(0)
			allocs := testing.AllocsPerRun(1000, func() {
				p.Key += golden
				p.HasKey = !p.HasKey
				pol.Pick(eps, p)
			})
			if allocs != 0 {
				t.Fatalf("%v allocations per pick", allocs)
			}
		})
	}
}

func TestPoliciesAreSafeForConcurrentUse(t *testing.T) {
	for _, name := range policyNames {
		t.Run(name, func(t *testing.T) {
			eps := newPool(ones(10)...)
			pol := newPolicy(t, name, eps)
			var wg sync.WaitGroup
			stop := make(chan struct{})
			// a flaps while the others pick; someone is always usable.
			go func() {
				for ok := false; ; ok = !ok {
					select {
					case <-stop:
						return
					default:
						eps[0].ReportHealth(ok, 1, 1)
					}
				}
			}()
			for g := range 8 {
				wg.Go(func() {
					for i := range 500 {
						p := keyed(g*1000 + i)
						p.HasKey = i%2 == 0
						ep := pol.Pick(eps, p)
						if ep == nil {
							t.Error("no endpoint picked while nine are usable")
							return
						}
						measure(ep, int64(i), time.Millisecond)
					}
				})
			}
			wg.Wait()
			close(stop)
		})
	}
}

// TestPeakEWMAProbesASlowEndpointAgainAfterAWhile: an endpoint that lost
// every comparison gets no samples; its estimate decays until it is tried
// again, so a recovered endpoint is not shunned forever.
func TestPeakEWMAProbesASlowEndpointAgainAfterAWhile(t *testing.T) {
	eps := newPool(1, 1)
	pol := newPolicy(t, "peak_ewma", eps)
	now := time.Now().UnixNano()
	measure(eps[0], now, time.Millisecond)
	measure(eps[1], now, 100*time.Millisecond)
	for range 20 {
		if ep := pol.Pick(eps, &Pick{Now: now}); ep != eps[0] {
			t.Fatal("the slow endpoint was picked while its sample was fresh")
		}
	}
	later := now + int64(time.Minute)
	measure(eps[0], later, time.Millisecond) // the fast one kept getting traffic
	if ep := pol.Pick(eps, &Pick{Now: later}); ep != eps[1] {
		t.Fatal("a minute on, the endpoint with the stale slow sample was not probed")
	}
}
