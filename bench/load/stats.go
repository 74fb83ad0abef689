package load

import (
	"slices"
	"time"
)

// stats accumulates one stream's outcomes. Each stream owns one, so the hot
// loop takes no locks; they are merged once the run is over.
type stats struct {
	latencies       []time.Duration
	transportErrors int64
	firstError      string
	non2xx          int64
	statuses        map[int]int64
	bytes           int64
	backends        map[string]int64
}

// newStats returns empty stats with room for latencyCap latencies before
// the slice grows.
func newStats(latencyCap int) *stats {
	return &stats{
		latencies: make([]time.Duration, 0, latencyCap),
		statuses:  map[int]int64{},
		backends:  map[string]int64{},
	}
}

// latencyCapacity is how many latencies each of n streams makes room for
// up front: enough for a few seconds of a fast closed loop before growing
// (4096 each for up to 64 streams), but no more than about 2 MiB in all,
// so that ten thousand mostly idle streams do not reserve 320 MiB.
func latencyCapacity(n int) int {
	const total = 1 << 18 // latencies, 8 bytes each
	return min(4096, max(16, total/max(n, 1)))
}

func (s *stats) response(status int, backend string, n int64, latency time.Duration) {
	s.latencies = append(s.latencies, latency)
	s.statuses[status]++
	if status < 200 || status > 299 {
		s.non2xx++
	}
	s.bytes += n
	if backend != "" {
		s.backends[backend]++
	}
}

func (s *stats) transportError(err error) {
	if s.transportErrors == 0 {
		s.firstError = err.Error()
	}
	s.transportErrors++
}

func (s *stats) merge(o *stats) {
	s.latencies = append(s.latencies, o.latencies...)
	if s.firstError == "" {
		s.firstError = o.firstError
	}
	s.transportErrors += o.transportErrors
	s.non2xx += o.non2xx
	for k, v := range o.statuses {
		s.statuses[k] += v
	}
	s.bytes += o.bytes
	for k, v := range o.backends {
		s.backends[k] += v
	}
}

// result reduces the merged stats over a measured window of d. It sorts the
// latencies in place.
func (s *stats) result(d time.Duration) Result {
	r := Result{
		Requests:        int64(len(s.latencies)),
		Duration:        d,
		TransportErrors: s.transportErrors,
		FirstError:      s.firstError,
		Non2xx:          s.non2xx,
		Statuses:        s.statuses,
		BytesReceived:   s.bytes,
		Backends:        s.backends,
	}
	if secs := d.Seconds(); secs > 0 {
		r.RequestsPerSec = float64(r.Requests) / secs
		r.BytesPerSec = float64(r.BytesReceived) / secs
	}
	slices.Sort(s.latencies)
	r.Latency = Latency{
		P50: percentile(s.latencies, 50),
		P90: percentile(s.latencies, 90),
		P99: percentile(s.latencies, 99),
		Max: percentile(s.latencies, 100),
	}
	return r
}

// percentile returns the nearest-rank p-th percentile of sorted: the
// smallest value at least p% of the samples are no greater than.
func percentile(sorted []time.Duration, p int) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := (p*len(sorted) + 99) / 100 // ceil(p/100 * n), in integers
	return sorted[max(rank, 1)-1]
}
