package core

import (
	"math"
	"slices"
)

// VoteResult is the outcome of an election as far as it has been counted.
type VoteResult uint8

const (
	VotePending VoteResult = iota + 1
	VoteLost
	VoteWon
)

func (v VoteResult) String() string {
	switch v {
	case VotePending:
		return "pending"
	case VoteLost:
		return "lost"
	case VoteWon:
		return "won"
	}
	return "VoteResult(?)"
}

// majorityConfig is a set of voters, sorted, without duplicates. One
// function decides both commit and elections for it: quorum(n).
type majorityConfig []NodeID

// quorum is the number of voters that make a majority of n: more than half.
// 4 voters need 3.
func quorum(n int) int {
	if mutant == "quorum_half" {
		return (n + 1) / 2
	}
	return n/2 + 1
}

// committedIndex returns the largest index that at least a quorum of voters
// have acknowledged, given each voter's acknowledged index (absent = 0).
// An empty configuration returns the largest index, so that it never holds
// a joint configuration back.
func (c majorityConfig) committedIndex(acked func(NodeID) Index) Index {
	n := len(c)
	if n == 0 {
		return math.MaxUint64
	}
	var stack [7]Index // no allocation for the common sizes
	srt := stack[:0]
	if n > len(stack) {
		srt = make([]Index, 0, n)
	}
	for _, id := range c {
		srt = append(srt, acked(id))
	}
	slices.Sort(srt)
	// Sorted ascending, srt[n-q] is acknowledged by srt[n-q:], q voters.
	return srt[n-quorum(n)]
}

// voteResult counts votes (true granted, false rejected, absent pending).
// An empty configuration wins, for the same reason as above.
func (c majorityConfig) voteResult(votes map[NodeID]bool) VoteResult {
	if len(c) == 0 {
		return VoteWon
	}
	var granted, missing int
	for _, id := range c {
		v, ok := votes[id]
		switch {
		case !ok:
			missing++
		case v:
			granted++
		}
	}
	q := quorum(len(c))
	switch {
	case granted >= q:
		return VoteWon
	case granted+missing >= q:
		return VotePending
	}
	return VoteLost
}

// jointConfig is the incoming and the outgoing voters. Outside a joint
// change the outgoing set is empty. A decision needs a quorum of both.
type jointConfig [2]majorityConfig

func (c jointConfig) committedIndex(acked func(NodeID) Index) Index {
	return min(c[0].committedIndex(acked), c[1].committedIndex(acked))
}

func (c jointConfig) voteResult(votes map[NodeID]bool) VoteResult {
	r0, r1 := c[0].voteResult(votes), c[1].voteResult(votes)
	switch {
	case r0 == r1:
		return r0
	case r0 == VoteLost || r1 == VoteLost:
		return VoteLost
	}
	return VotePending
}

// ids returns every voter of both halves, sorted, once each.
func (c jointConfig) ids() []NodeID {
	ids := append(append([]NodeID(nil), c[0]...), c[1]...)
	slices.Sort(ids)
	return slices.Compact(ids)
}

func (c jointConfig) contains(id NodeID) bool {
	return slices.Contains(c[0], id) || slices.Contains(c[1], id)
}

func newMajorityConfig(ids []NodeID) majorityConfig {
	c := majorityConfig(slices.Clone(ids))
	slices.Sort(c)
	return slices.Compact(c)
}
