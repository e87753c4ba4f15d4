package core

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

// naiveCommitted is the definition: the largest index that at least
// n/2+1 voters have acknowledged (an empty configuration never holds back).
func naiveCommitted(voters []NodeID, acked map[NodeID]Index) Index {
	if len(voters) == 0 {
		return math.MaxUint64
	}
	best := Index(0)
	for _, cand := range voters {
		idx := acked[cand]
		n := 0
		for _, id := range voters {
			if acked[id] >= idx {
				n++
			}
		}
		if n >= len(voters)/2+1 && idx > best {
			best = idx
		}
	}
	return best
}

// naiveWins says whether the granted votes are a strict majority of voters.
func naiveWins(voters []NodeID, granted func(NodeID) bool) bool {
	n := 0
	for _, id := range voters {
		if granted(id) {
			n++
		}
	}
	return 2*n > len(voters) || len(voters) == 0
}

// naiveVote decides an election by its two extreme futures: won if it is
// won even when every missing vote is a rejection, lost if it is lost even
// when every missing vote is a grant, pending otherwise. halves are the
// majority configurations that must all be won.
func naiveVote(halves [][]NodeID, votes map[NodeID]bool) VoteResult {
	all := func(missing bool) bool {
		for _, h := range halves {
			if !naiveWins(h, func(id NodeID) bool {
				v, ok := votes[id]
				return v || !ok && missing
			}) {
				return false
			}
		}
		return true
	}
	switch {
	case all(false):
		return VoteWon
	case !all(true):
		return VoteLost
	}
	return VotePending
}

// randomVoters returns a random set of up to max IDs out of 1..12, in
// random order and possibly with duplicates (the constructor sorts and
// dedups).
func randomVoters(rng *rand.Rand, max int) []NodeID {
	n := rng.IntN(max + 1)
	ids := make([]NodeID, n)
	for i := range ids {
		ids[i] = NodeID(1 + rng.IntN(12))
	}
	return ids
}

func TestQuorumMatchesNaive(t *testing.T) {
	rng := rand.New(rand.NewPCG(20240601, 7))
	for i := range 20000 {
		in := newMajorityConfig(randomVoters(rng, 10))
		out := newMajorityConfig(randomVoters(rng, 10))
		if i%3 == 0 {
			out = nil // not in a joint change
		}
		acked := map[NodeID]Index{}
		votes := map[NodeID]bool{}
		for id := NodeID(1); id <= 12; id++ {
			if rng.IntN(4) > 0 {
				acked[id] = Index(rng.IntN(20))
			}
			switch rng.IntN(3) {
			case 1:
				votes[id] = true
			case 2:
				votes[id] = false
			}
		}
		lookup := func(id NodeID) Index { return acked[id] }

		if got, want := in.committedIndex(lookup), naiveCommitted(in, acked); got != want {
			t.Fatalf("case %d: %v.committedIndex(%v) = %d, naive %d", i, in, acked, got, want)
		}
		if got, want := in.voteResult(votes), naiveVote([][]NodeID{in}, votes); got != want {
			t.Fatalf("case %d: %v.voteResult(%v) = %s, naive %s", i, in, votes, got, want)
		}
		j := jointConfig{in, out}
		wantJoint := min(naiveCommitted(in, acked), naiveCommitted(out, acked))
		if got := j.committedIndex(lookup); got != wantJoint {
			t.Fatalf("case %d: %v.committedIndex(%v) = %d, naive %d", i, j, acked, got, wantJoint)
		}
		if got, want := j.voteResult(votes), naiveVote([][]NodeID{in, out}, votes); got != want {
			t.Fatalf("case %d: %v.voteResult(%v) = %s, naive %s", i, j, votes, got, want)
		}
		if got := j.ids(); !slices.IsSorted(got) || len(slices.Compact(slices.Clone(got))) != len(got) {
			t.Fatalf("case %d: ids %v not sorted and unique", i, got)
		}
		for _, id := range slices.Concat(in, out) {
			if !j.contains(id) || !slices.Contains(j.ids(), id) {
				t.Fatalf("case %d: %v does not contain %d", i, j, id)
			}
		}
	}
}

func TestQuorumSizes(t *testing.T) {
	for _, tc := range []struct{ voters, need int }{
		{1, 1}, {2, 2}, {3, 2}, {4, 3}, {5, 3}, {6, 4}, {7, 4}, {8, 5}, {9, 5},
	} {
		if got := quorum(tc.voters); got != tc.need {
			t.Errorf("quorum(%d) = %d, want %d", tc.voters, got, tc.need)
		}
		ids := make([]NodeID, tc.voters)
		for i := range ids {
			ids[i] = NodeID(i + 1)
		}
		c := newMajorityConfig(ids)
		// need-1 grants (and everyone else rejecting) lose; need grants win.
		votes := map[NodeID]bool{}
		for i, id := range ids {
			votes[id] = i < tc.need-1
		}
		if got := c.voteResult(votes); got != VoteLost {
			t.Errorf("%d voters, %d grants: %s, want lost", tc.voters, tc.need-1, got)
		}
		votes[ids[tc.need-1]] = true
		if got := c.voteResult(votes); got != VoteWon {
			t.Errorf("%d voters, %d grants: %s, want won", tc.voters, tc.need, got)
		}
		// Index i acknowledged by voter i: the quorum-th highest commits.
		idx := c.committedIndex(func(id NodeID) Index { return Index(id) })
		if want := Index(tc.voters - tc.need + 1); idx != want {
			t.Errorf("%d voters acknowledging 1..%d: committed %d, want %d", tc.voters, tc.voters, idx, want)
		}
	}
}

func TestQuorumFourVotersNeedThree(t *testing.T) {
	c := newMajorityConfig([]NodeID{1, 2, 3, 4})
	if got := c.voteResult(map[NodeID]bool{1: true, 2: true}); got != VotePending {
		t.Errorf("2 of 4 granted, 2 missing: %s, want pending", got)
	}
	if got := c.voteResult(map[NodeID]bool{1: true, 2: true, 3: false, 4: false}); got != VoteLost {
		t.Errorf("2 of 4 granted, 2 rejected: %s, want lost", got)
	}
	acked := map[NodeID]Index{1: 9, 2: 9, 3: 4}
	if got := c.committedIndex(func(id NodeID) Index { return acked[id] }); got != 4 {
		t.Errorf("two of four at 9, one at 4: committed %d, want 4", got)
	}
}

func TestQuorumEmptyConfig(t *testing.T) {
	var empty majorityConfig
	if got := empty.committedIndex(func(NodeID) Index { return 0 }); got != math.MaxUint64 {
		t.Errorf("empty committedIndex = %d, want MaxUint64 (never holds back)", got)
	}
	if got := empty.voteResult(nil); got != VoteWon {
		t.Errorf("empty voteResult = %s, want won", got)
	}
	// A joint configuration with an empty outgoing half is the incoming one.
	in := newMajorityConfig([]NodeID{1, 2, 3})
	j := jointConfig{in, nil}
	acked := func(id NodeID) Index { return Index(10 * id) }
	if got, want := j.committedIndex(acked), in.committedIndex(acked); got != want {
		t.Errorf("joint with empty outgoing: committed %d, want %d", got, want)
	}
	for _, votes := range []map[NodeID]bool{{}, {1: true}, {1: true, 2: true}, {1: false, 2: false}} {
		if got, want := j.voteResult(votes), in.voteResult(votes); got != want {
			t.Errorf("joint with empty outgoing, votes %v: %s, want %s", votes, got, want)
		}
	}
	// Both halves empty: nothing to wait for.
	if got := (jointConfig{}).voteResult(nil); got != VoteWon {
		t.Errorf("empty joint voteResult = %s, want won", got)
	}
}

func TestQuorumJointNeedsBothHalves(t *testing.T) {
	j := jointConfig{newMajorityConfig([]NodeID{1, 2, 3}), newMajorityConfig([]NodeID{3, 4, 5})}
	for _, tc := range []struct {
		votes map[NodeID]bool
		want  VoteResult
	}{
		{map[NodeID]bool{1: true, 2: true}, VotePending},
		{map[NodeID]bool{1: true, 2: true, 4: true}, VotePending},
		{map[NodeID]bool{1: true, 3: true}, VotePending},
		{map[NodeID]bool{1: true, 3: true, 4: true}, VoteWon}, // 3 counts in both
		{map[NodeID]bool{1: true, 2: true, 4: false, 5: false}, VoteLost},
		{map[NodeID]bool{1: false, 2: false, 4: true, 5: true}, VoteLost},
	} {
		if got := j.voteResult(tc.votes); got != tc.want {
			t.Errorf("%v: %s, want %s", tc.votes, got, tc.want)
		}
	}
	acked := map[NodeID]Index{1: 7, 2: 7, 3: 2, 4: 5, 5: 5}
	if got := j.committedIndex(func(id NodeID) Index { return acked[id] }); got != 5 {
		t.Errorf("joint committed %d, want 5 (min of 7 and 5)", got)
	}
}
