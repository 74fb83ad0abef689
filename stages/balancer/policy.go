package balancer

import (
	"cmp"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"

	"spooky/upstream"
)

// Pick is what a policy may know of the request it picks for.
type Pick struct {
	// Now is the time of the pick in unix ns, for Endpoint.Available.
	Now int64
	// Tried has bit Index%64 set for each endpoint this request already
	// failed on; a retry avoids them.
	Tried uint64
	// Key is the hash of the request's hash_on value; HasKey is false when
	// the request has none (hash policies then fall back to round robin).
	Key    uint64
	HasKey bool
}

// Usable reports whether ep may take this request: available and not
// already tried.
func (p *Pick) Usable(ep *upstream.Endpoint) bool {
	return p.Tried&(1<<(uint(ep.Index)%64)) == 0 && ep.Available(p.Now)
}

// Policy picks a usable endpoint, or nil when none is. Implementations are
// safe for concurrent use and allocate nothing per pick.
type Policy interface {
	Pick(eps []*upstream.Endpoint, p *Pick) *upstream.Endpoint
}

// NewPolicy returns the policy with config name name for one upstream
// group whose endpoints are eps, in config order (for fallback, sorted by
// Priority). ring_hash, maglev, fallback and weighted_round_robin keep
// state by position in eps, so every Pick must be given this same eps; a
// reload that changes the endpoints makes a new policy.
func NewPolicy(name string, eps []*upstream.Endpoint) (Policy, error) {
	switch name {
	case "round_robin":
		return &RoundRobin{}, nil
	case "weighted_round_robin":
		return &WeightedRoundRobin{}, nil
	case "random":
		return Random{}, nil
	case "weighted_random":
		return WeightedRandom{}, nil
	case "least_request":
		return LeastRequest{}, nil
	case "peak_ewma":
		return PeakEWMA{}, nil
	case "ring_hash":
		return newRingHash(eps), nil
	case "maglev":
		return newMaglev(eps), nil
	case "fallback":
		return newFallback(eps), nil
	}
	return nil, fmt.Errorf("balancer: unknown policy %q", name)
}

// RoundRobin hands out usable endpoints in turn.
type RoundRobin struct{ next atomic.Uint64 }

// Pick returns the next usable endpoint in turn.
func (rr *RoundRobin) Pick(eps []*upstream.Endpoint, p *Pick) *upstream.Endpoint {
	n := uint64(len(eps))
	start := rr.next.Add(1) - 1
	for i := range n {
		if ep := eps[(start+i)%n]; p.Usable(ep) {
			return ep
		}
	}
	return nil
}

// WeightedRoundRobin is nginx's smooth weighted round robin: each pick adds
// every usable endpoint's weight to its running score, takes the highest
// and charges it the total. Weights 5, 1, 1 give a a b a c a a rather than
// a burst of five a, so a heavy endpoint never takes a run of requests.
// The zero value is ready to use.
type WeightedRoundRobin struct {
	mu    sync.Mutex
	score []int64 // by position in eps; sized on the first pick
}

// Pick returns the usable endpoint whose turn it is by weight.
func (w *WeightedRoundRobin) Pick(eps []*upstream.Endpoint, p *Pick) *upstream.Endpoint {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.score) != len(eps) {
		w.score = make([]int64, len(eps))
	}
	best, total := -1, int64(0)
	for i, ep := range eps {
		if !p.Usable(ep) {
			continue
		}
		wt := int64(weight(ep))
		w.score[i] += wt
		total += wt
		if best < 0 || w.score[i] > w.score[best] {
			best = i
		}
	}
	if best < 0 {
		return nil
	}
	w.score[best] -= total
	return eps[best]
}

// Random picks uniformly among usable endpoints.
type Random struct{}

// Pick returns a usable endpoint chosen at random.
func (Random) Pick(eps []*upstream.Endpoint, p *Pick) *upstream.Endpoint {
	// A draw from all endpoints that lands on a usable one is a uniform
	// draw among the usable ones, and with every endpoint up it is the
	// only draw needed.
	if n := uint64(len(eps)); n > 0 {
		if ep := eps[rand.Uint64N(n)]; p.Usable(ep) {
			return ep
		}
	}
	return draw(eps, p, one)
}

// WeightedRandom picks among usable endpoints in proportion to Weight.
type WeightedRandom struct{}

// Pick returns a usable endpoint chosen at random by weight.
func (WeightedRandom) Pick(eps []*upstream.Endpoint, p *Pick) *upstream.Endpoint {
	return draw(eps, p, weight)
}

// LeastRequest sends a request to whichever of two random usable endpoints
// has fewer requests in flight per unit of weight, so a heavier endpoint
// carries proportionally more concurrent requests.
type LeastRequest struct{}

// Pick returns the less loaded of two random usable endpoints.
func (LeastRequest) Pick(eps []*upstream.Endpoint, p *Pick) *upstream.Endpoint {
	return p2c(eps, p, func(ep *upstream.Endpoint, _ int64) float64 { return load(ep) })
}

// PeakEWMA is Finagle's peak EWMA: of two random usable endpoints it picks
// the one with the lower latency EWMA × (in flight + 1) / weight, so it
// steers away from an endpoint as soon as it slows down. An endpoint with
// no latency sample and nothing in flight is tried before any other, so a
// new endpoint gets measured at once; while its first request is out it
// costs as if very slow, so a burst does not pile onto an unknown.
type PeakEWMA struct{}

// Pick returns an unmeasured idle endpoint if there is one, else the
// cheaper of two random usable endpoints.
func (PeakEWMA) Pick(eps []*upstream.Endpoint, p *Pick) *upstream.Endpoint {
	if ep := draw(eps, p, unmeasured); ep != nil {
		return ep
	}
	return p2c(eps, p, latencyCost)
}

// unmeasuredLatency is the latency, in ns, assumed for an endpoint whose
// first request is still out: Finagle's penalty, far above any real
// latency yet finite, so two such endpoints still compare by load.
const unmeasuredLatency = float64(math.MaxInt64 >> 16)

// latencyCost is PeakEWMA's cost of sending ep one more request at now.
func latencyCost(ep *upstream.Endpoint, now int64) float64 {
	latency := ep.EWMAAt(now)
	if latency == 0 {
		latency = unmeasuredLatency
	}
	return latency * load(ep)
}

// unmeasured is 1 for an endpoint PeakEWMA should probe first: no latency
// sample yet and no request out that would bring one.
func unmeasured(ep *upstream.Endpoint) uint64 {
	if ep.EWMA() == 0 && ep.InFlight() == 0 {
		return 1
	}
	return 0
}

// load is ep's requests in flight, counting the one being placed, per unit
// of weight.
func load(ep *upstream.Endpoint) float64 {
	return float64(ep.InFlight()+1) / float64(weight(ep))
}

// weight is ep's share for weighted policies. The config makes it at least
// 1; an endpoint built by hand with 0 counts as 1 rather than owning no
// ring points or Maglev slots (a group of such could never fill a table).
func weight(ep *upstream.Endpoint) uint64 { return uint64(max(ep.Weight, 1)) }

// one gives every endpoint the same share.
func one(*upstream.Endpoint) uint64 { return 1 }

// draw returns a usable endpoint chosen with probability share(ep) over the
// sum of the usable endpoints' shares, or nil when none has a share. It is
// weighted reservoir sampling of one: a single pass, so an endpoint that
// changes state mid-pick cannot leave the draw pointing past the end.
func draw(eps []*upstream.Endpoint, p *Pick, share func(*upstream.Endpoint) uint64) *upstream.Endpoint {
	rnd := newRandoms()
	var chosen *upstream.Endpoint
	var total uint64
	for _, ep := range eps {
		s := share(ep)
		if s == 0 || !p.Usable(ep) {
			continue
		}
		total += s
		if rnd.below(total) < s {
			chosen = ep
		}
	}
	return chosen
}

// p2c returns the cheaper of two distinct usable endpoints drawn uniformly,
// ties broken by a coin: the power of two choices (Mitzenmacher), nearly as
// good as the cheapest of all without every picker herding onto the same
// endpoint before its load shows. With one usable endpoint it returns that
// one, with none nil.
func p2c(eps []*upstream.Endpoint, p *Pick, cost func(ep *upstream.Endpoint, now int64) float64) *upstream.Endpoint {
	rnd := newRandoms()
	a, b := twoUsable(eps, p, &rnd)
	if b == nil {
		return a
	}
	// The coin also keeps a, which tends to sit earlier in eps when most
	// endpoints are down, from winning every tie.
	if ca, cb := cost(a, p.Now), cost(b, p.Now); cb < ca || cb == ca && rnd.below(2) == 0 {
		return b
	}
	return a
}

// twoUsable returns two distinct usable endpoints, every such pair equally
// likely; b is nil when only a is usable.
func twoUsable(eps []*upstream.Endpoint, p *Pick, rnd *randoms) (a, b *upstream.Endpoint) {
	// A pair drawn from all endpoints that are both usable is a uniform
	// pair of usable ones, and with every endpoint up it is the only draw
	// needed: two endpoints looked at instead of all.
	if n := uint64(len(eps)); n >= 2 {
		i, j := rnd.below(n), rnd.below(n-1)
		if j >= i {
			j++
		}
		if a, b = eps[i], eps[j]; p.Usable(a) && p.Usable(b) {
			return a, b
		}
	}
	// Otherwise reservoir sampling of two, in one pass for the same reason
	// as draw.
	a, b = nil, nil
	var n uint64
	for _, ep := range eps {
		if !p.Usable(ep) {
			continue
		}
		n++
		switch {
		case n == 1:
			a = ep
		case n == 2:
			b = ep
		default:
			switch rnd.below(n) {
			case 0:
				a = ep
			case 1:
				b = ep
			}
		}
	}
	return a, b
}

// hashProbes is how many endpoints a hash policy tries for a key before it
// gives up on keeping the key in place and takes turns: enough that a key
// rarely loses its place unless most of the group is down, few enough that
// a group that is all down costs a pick little.
const hashProbes = 16

// ringPoints is how many ring points RingHash gives an endpoint per unit of
// weight; 100 keeps an endpoint's share within a few percent of its due.
const ringPoints = 100

// RingHash is consistent hashing on a ring (Karger et al.): an endpoint owns
// ringPoints × Weight points, hashed from "address-i", and a key goes to the
// owner of the first point at or after it. Removing an endpoint moves only
// the keys it owned. A key whose owner is not usable walks on to the next
// points' owners, so it too lands in the same place every time. Requests
// without a key take turns.
type RingHash struct {
	points []uint64 // sorted
	owners []uint32 // owners[i] is the position in eps of the owner of points[i]
	rr     RoundRobin
}

func newRingHash(eps []*upstream.Endpoint) *RingHash {
	type point struct {
		hash  uint64
		owner uint32
	}
	var pts []point
	for i, ep := range eps {
		for v := range ringPoints * weight(ep) {
			pts = append(pts, point{HashKey(ep.Address + "-" + strconv.FormatUint(v, 10)), uint32(i)})
		}
	}
	// Ordering collisions by owner keeps the ring the same on every instance.
	slices.SortFunc(pts, func(a, b point) int {
		return cmp.Or(cmp.Compare(a.hash, b.hash), cmp.Compare(a.owner, b.owner))
	})
	r := &RingHash{points: make([]uint64, len(pts)), owners: make([]uint32, len(pts))}
	for i, pt := range pts {
		r.points[i], r.owners[i] = pt.hash, pt.owner
	}
	return r
}

// Pick returns the usable endpoint that owns p.Key on the ring.
func (r *RingHash) Pick(eps []*upstream.Endpoint, p *Pick) *upstream.Endpoint {
	if !p.HasKey {
		return r.rr.Pick(eps, p)
	}
	i, _ := slices.BinarySearch(r.points, p.Key)
	last, tried := uint32(math.MaxUint32), 0
	for range r.owners { // one lap at most
		if i == len(r.owners) {
			i = 0
		}
		// A run of points of one endpoint counts as one try.
		if owner := r.owners[i]; owner != last {
			if ep := eps[owner]; p.Usable(ep) {
				return ep
			}
			if tried++; tried == hashProbes {
				break
			}
			last = owner
		}
		i++
	}
	return r.rr.Pick(eps, p)
}

// Maglev table sizes: the table is prime-sized and has at least
// maglevSlots slots per endpoint, and never fewer than maglevMinSize.
const (
	maglevSlots   = 100
	maglevMinSize = 65537 // prime
)

// Maglev is Google's Maglev consistent hashing (Eisenbud et al., NSDI 2016):
// a prime-sized lookup table that endpoints fill in turn, each along its own
// permutation of the slots drawn from two hashes of its address, Weight
// slots a turn. A key goes to table[key % size] in O(1), shares match the
// weights to within a slot, and removing an endpoint moves little more than
// its own keys. A key whose endpoint is not usable tries the slots of
// further hashes of itself, so it too lands in the same place every time.
// Requests without a key take turns.
type Maglev struct {
	table []uint32 // slot → position in eps; empty when eps is
	rr    RoundRobin
}

func newMaglev(eps []*upstream.Endpoint) *Maglev {
	m := &Maglev{}
	if len(eps) == 0 {
		return m
	}
	size := uint64(nextPrime(max(maglevSlots*len(eps), maglevMinSize)))
	// Endpoint i's permutation visits slot (offset + j × skip) % size at
	// step j; size is prime, so every skip in [1, size) visits every slot.
	slot := make([]uint64, len(eps))
	skip := make([]uint64, len(eps))
	for i, ep := range eps {
		h := HashKey(ep.Address)
		slot[i] = h % size
		skip[i] = splitmix(h, 1)%(size-1) + 1
	}
	const free = math.MaxUint32
	m.table = make([]uint32, size)
	for i := range m.table {
		m.table[i] = free
	}
	for filled := uint64(0); ; {
		for i, ep := range eps {
			for range weight(ep) {
				for m.table[slot[i]] != free {
					slot[i] = (slot[i] + skip[i]) % size
				}
				m.table[slot[i]] = uint32(i)
				if filled++; filled == size {
					return m
				}
			}
		}
	}
}

// Pick returns the usable endpoint that p.Key maps to in the table.
func (m *Maglev) Pick(eps []*upstream.Endpoint, p *Pick) *upstream.Endpoint {
	if !p.HasKey || len(m.table) == 0 {
		return m.rr.Pick(eps, p)
	}
	size := uint64(len(m.table))
	key := p.Key
	for i := range uint64(hashProbes) {
		if ep := eps[m.table[key%size]]; p.Usable(ep) {
			return ep
		}
		key = splitmix(p.Key, i+1)
	}
	return m.rr.Pick(eps, p)
}

// nextPrime returns the smallest prime ≥ n, for n ≥ 2. Trial division is
// plenty for table sizes, and runs once per reload.
func nextPrime(n int) int {
	for ; ; n++ {
		prime := true
		for d := 2; d*d <= n && prime; d++ {
			prime = n%d != 0
		}
		if prime {
			return n
		}
	}
}

// Fallback sends traffic to the first priority group that has a usable
// endpoint, taking turns within it. A later group takes traffic only while
// every group before it has none usable, and gives it back as soon as one
// has. It reads the groups from Endpoint.Priority: eps sorted by it.
type Fallback struct {
	ends []int        // ends[g] is one past group g's last position in eps
	rr   []RoundRobin // one rotation per group
}

func newFallback(eps []*upstream.Endpoint) *Fallback {
	var ends []int
	for i := 1; i <= len(eps); i++ {
		if i == len(eps) || eps[i].Priority != eps[i-1].Priority {
			ends = append(ends, i)
		}
	}
	return &Fallback{ends: ends, rr: make([]RoundRobin, len(ends))}
}

// Pick returns the next usable endpoint in turn in the first group that
// has one.
func (f *Fallback) Pick(eps []*upstream.Endpoint, p *Pick) *upstream.Endpoint {
	start := 0
	for g, end := range f.ends {
		if ep := f.rr[g].Pick(eps[start:end], p); ep != nil {
			return ep
		}
		start = end
	}
	return nil
}
