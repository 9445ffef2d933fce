package balance

import (
	"math"
	"time"
)

// Key hashing. The values are a contract between processes: several
// portcullis instances in front of the same servers, and one instance
// before and after a restart, must send a key to the same server. So the
// hash has no per-process seed and must never change.

const (
	fnvOffset64 = 14695981039346656037
	fnvPrime64  = 1099511628211
)

// HashString returns a stable 64-bit hash of s for hash balancing: FNV-1a
// 64 followed by the MurmurHash3 finalizer, which spreads FNV's weak low
// bits. It is the same in every process on every platform, with no random
// seed, so that instances agree.
func HashString(s string) uint64 {
	h := uint64(fnvOffset64)
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= fnvPrime64
	}
	return mix64(h)
}

// HashBytes is HashString of a byte slice: HashBytes([]byte(s)) ==
// HashString(s).
func HashBytes(b []byte) uint64 {
	h := uint64(fnvOffset64)
	for _, c := range b {
		h ^= uint64(c)
		h *= fnvPrime64
	}
	return mix64(h)
}

// mix64 is the MurmurHash3 64-bit finalizer (fmix64): a bijection with full
// avalanche.
func mix64(x uint64) uint64 {
	x ^= x >> 33
	x *= 0xff51afd7ed558ccd
	x ^= x >> 33
	x *= 0xc4ceb9fe1a85ec53
	x ^= x >> 33
	return x
}

// rendezvous is consistent hashing by weighted rendezvous hashing (highest
// random weight): for a key, every member gets the score
// weight / -ln(u), with u in (0,1) a hash of the key and the member, and the
// eligible member with the highest score wins. A member therefore wins a
// share of keys proportional to its weight; removing a member moves only
// its own keys, each to the runner-up for that key, and adding one takes
// about weight/total of the keys from the others and moves nothing else.
// A member that is not eligible (down, full, tried) is skipped, so its keys
// fall back to their runner-up and return when it does.
//
// See Thaler and Ravishankar, "Using name-based mappings to increase hit
// rates" (1998), and Schindelhauer and Schomaker, "Weighted distributed
// hash tables" (2005), for the -ln(u) weighting.
//
// Slow start scales the weight, so a member that just came back regains its
// keys gradually, and a raised weight only ever moves keys toward it.
type rendezvous struct {
	members []*Member
	seeds   []uint64 // per member: HashString of ID, or of the address
	now     func() time.Time
	// equal: every member has the same weight and no slow start, so the
	// highest score is the highest u and no logarithm is needed.
	equal bool
}

func newRendezvous(members []*Member, now func() time.Time) *rendezvous {
	b := &rendezvous{members: members, seeds: make([]uint64, len(members)), now: now, equal: true}
	for i, m := range members {
		b.seeds[i] = memberSeed(m)
		b.equal = b.equal && m.SlowStart <= 0 && m.Weight == members[0].Weight
	}
	return b
}

// memberSeed identifies a member for hashing: its ID when it has one, else
// its address, so a member keeps its keys across reloads and processes.
func memberSeed(m *Member) uint64 {
	if m.ID != "" {
		return HashString(m.ID)
	}
	return HashString(m.State.Address)
}

func (b *rendezvous) Pick(hash uint64, tried []*Member) *Member {
	if b.equal {
		return b.pickEqual(hash, tried)
	}
	now := b.now()
	var best *Member
	var bestScore float64
	for i, m := range b.members {
		if !m.Eligible(tried) {
			continue
		}
		score := float64(m.EffectiveWeight(now)) / -math.Log(unit(mix64(hash^b.seeds[i])))
		if best == nil || score > bestScore {
			best, bestScore = m, score
		}
	}
	return best
}

// pickEqual is Pick when all weights are equal: w/-ln(u) grows with u, and
// u with the top 53 bits of the mix, so comparing those picks the same
// member as the scores would.
func (b *rendezvous) pickEqual(hash uint64, tried []*Member) *Member {
	var best *Member
	var bestU uint64
	for i, m := range b.members {
		if !m.Eligible(tried) {
			continue
		}
		if u := mix64(hash^b.seeds[i]) >> 11; best == nil || u > bestU {
			best, bestU = m, u
		}
	}
	return best
}

// unit maps x to the open interval (0,1), so that -ln of it is finite and
// positive.
func unit(x uint64) float64 {
	return (float64(x>>11) + 0.5) * 0x1p-53
}
