package balancer

import (
	"testing"
	"time"

	"spooky/upstream"
)

// benchPool is ten endpoints in steady state: each measured, so peak_ewma
// compares latencies rather than probing, and in two priority groups of
// five for fallback.
func benchPool() []*upstream.Endpoint {
	eps := newPool(ones(10)...)
	for i, ep := range eps {
		ep.Priority = i / 5
		measure(ep, 0, time.Duration(i+1)*time.Millisecond)
	}
	return eps
}

func BenchmarkPick(b *testing.B) {
	for _, name := range policyNames {
		b.Run(name, func(b *testing.B) {
			eps := benchPool()
			pol := newPolicy(b, name, eps)
			p := keyed(0)
			b.ReportAllocs()
			for b.Loop() {
				p.Key += golden
				pol.Pick(eps, p)
			}
		})
	}
}

// BenchmarkPickParallel shows what contention costs: one shared counter
// for the rotations, a mutex for weighted_round_robin.
func BenchmarkPickParallel(b *testing.B) {
	for _, name := range policyNames {
		b.Run(name, func(b *testing.B) {
			eps := benchPool()
			pol := newPolicy(b, name, eps)
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				p := keyed(0)
				for pb.Next() {
					p.Key += golden
					pol.Pick(eps, p)
				}
			})
		})
	}
}

func BenchmarkHashKey(b *testing.B) {
	const key = "203.0.113.195:54321/session-0042" // 32 bytes
	b.ReportAllocs()
	b.SetBytes(int64(len(key)))
	for b.Loop() {
		HashKey(key)
	}
}
