package balancer

import (
	"math/bits"
	"math/rand/v2"
)

// FNV-1a 64 parameters (FNV spec, draft-eastlake-fnv).
const (
	fnvOffset = 14695981039346656037
	fnvPrime  = 1099511628211
)

// golden is splitmix64's increment, 2^64 divided by the golden ratio.
const golden = 0x9e3779b97f4a7c15

// HashKey hashes s to 64 bits: FNV-1a, then the splitmix64 finaliser.
// FNV-1a alone leaves the high bits of short, similar keys (client IPs,
// "address-1", "address-2") correlated, which skews a ring; the finaliser
// spreads every input bit over the whole word. It has no random seed, so
// every spooky instance maps a key to the same endpoint, and it allocates
// nothing.
func HashKey(s string) uint64 {
	h := uint64(fnvOffset)
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= fnvPrime
	}
	return mix(h)
}

// splitmix returns the i-th value of the splitmix64 sequence seeded by h:
// further hashes of one key, for Maglev's second permutation hash and its
// probes past an unusable endpoint.
func splitmix(h, i uint64) uint64 { return mix(h + i*golden) }

// mix is splitmix64's finaliser (Stafford's variant 13), a bijection.
func mix(h uint64) uint64 {
	h = (h ^ h>>30) * 0xbf58476d1ce4e5b9
	h = (h ^ h>>27) * 0x94d049bb133111eb
	return h ^ h>>31
}

// randoms is a splitmix64 sequence seeded from math/rand/v2, for picks that
// want a random number per endpoint: a call into the runtime's ChaCha8
// generator costs several times the few multiplies of a splitmix64 step,
// and one seed per pick is plenty to spread load (not to keep secrets).
type randoms uint64

func newRandoms() randoms { return randoms(rand.Uint64()) }

// below returns a random number in [0, n), n > 0, by Lemire's multiply
// and shift; its bias, under n / 2^64, is far too small for a load spread
// to show.
func (r *randoms) below(n uint64) uint64 {
	*r += golden
	hi, _ := bits.Mul64(mix(uint64(*r)), n)
	return hi
}
