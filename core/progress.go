package core

import "fmt"

// ProgressState is how a leader replicates to one follower.
type ProgressState uint8

const (
	// StateProbe: the leader does not know where the follower's log ends.
	// It sends one append at a time and waits for its answer (or the next
	// heartbeat response) before sending another.
	StateProbe ProgressState = iota + 1
	// StateReplicate: the follower is known to match up to Match; appends
	// are pipelined, bounded by the inflight window.
	StateReplicate
	// StateSnapshot: the follower needs a snapshot; nothing else is sent
	// until ReportSnapshot or an acknowledgement past it.
	StateSnapshot
)

func (s ProgressState) String() string {
	switch s {
	case StateProbe:
		return "probe"
	case StateReplicate:
		return "replicate"
	case StateSnapshot:
		return "snapshot"
	}
	return fmt.Sprintf("ProgressState(%d)", uint8(s))
}

// Progress is a leader's view of one member, as reported by Status.
type Progress struct {
	Match, Next     Index
	State           ProgressState
	PendingSnapshot Index
	RecentActive    bool
	Paused          bool
	IsLearner       bool
	InflightMsgs    int
	InflightBytes   uint64
}

// progress is the leader's replication state for one member.
//
// Invariant: Match < Next. In StateSnapshot, PendingSnapshot is the index
// of the snapshot sent.
type progress struct {
	// heardTick is the leader's tick (leaseTick) at which it sent the
	// latest heartbeat this member acknowledged; 0 if none this term.
	heardTick       uint64
	Match, Next     Index
	State           ProgressState
	PendingSnapshot Index
	// RecentActive is set by any message from the member and cleared by
	// check-quorum every election timeout.
	RecentActive bool
	// MsgAppFlowPaused stops further appends in StateProbe until an answer
	// or a heartbeat response arrives.
	MsgAppFlowPaused bool
	Inflights        *inflights
	IsLearner        bool
	// sentCommit is the highest commit index this member can have learned
	// from our appends: an empty append is worth sending only above it.
	sentCommit Index
}

// canBumpCommit reports whether an append would tell the member a commit
// index it has not heard yet. A member only commits entries it holds, so
// what it can learn is capped at Next-1.
func (pr *progress) canBumpCommit(commit Index) bool {
	return pr.sentCommit < min(commit, pr.Next-1)
}

func (pr *progress) resetState(state ProgressState) {
	pr.MsgAppFlowPaused = false
	pr.PendingSnapshot = 0
	pr.State = state
	pr.Inflights.reset()
}

func (pr *progress) becomeProbe() {
	// The member may have restarted and forgotten the commit we told it.
	pr.sentCommit = 0
	if pr.State == StateSnapshot {
		// Resume after the snapshot if it was sent, else after Match.
		pending := pr.PendingSnapshot
		pr.resetState(StateProbe)
		pr.Next = max(pr.Match+1, pending+1)
		return
	}
	pr.resetState(StateProbe)
	pr.Next = pr.Match + 1
}

func (pr *progress) becomeReplicate() {
	pr.resetState(StateReplicate)
	pr.Next = pr.Match + 1
}

func (pr *progress) becomeSnapshot(snapIndex Index) {
	pr.resetState(StateSnapshot)
	pr.PendingSnapshot = snapIndex
}

// sentEntries records that an append of n entries (bytes of payload) after
// Next-1 left.
func (pr *progress) sentEntries(n int, bytes uint64) {
	switch pr.State {
	case StateReplicate:
		if n > 0 {
			pr.Next += Index(n)
			pr.Inflights.add(pr.Next-1, bytes)
		}
	case StateProbe:
		pr.MsgAppFlowPaused = true
	default:
		panicf("sending append in state %s", pr.State)
	}
}

// maybeUpdate records an acknowledgement up to n; it reports whether Match
// moved.
func (pr *progress) maybeUpdate(n Index) bool {
	if n <= pr.Match {
		return false
	}
	pr.Match = n
	pr.Next = max(pr.Next, n+1)
	pr.MsgAppFlowPaused = false
	return true
}

// maybeDecrTo handles a rejection of the append after index rejected. The
// follower hinted its log may match ours up to matchHint. It reports
// whether the rejection was news (not a stale answer to an older append).
func (pr *progress) maybeDecrTo(rejected, matchHint Index) bool {
	if pr.State == StateReplicate {
		if rejected <= pr.Match {
			return false // stale
		}
		pr.Next = pr.Match + 1
		return true
	}
	if pr.Next-1 != rejected {
		return false // stale: not the append we are waiting on
	}
	pr.Next = max(min(rejected, matchHint+1), pr.Match+1)
	pr.MsgAppFlowPaused = false
	return true
}

// isPaused reports whether the leader should hold appends to this member.
func (pr *progress) isPaused() bool {
	switch pr.State {
	case StateProbe:
		return pr.MsgAppFlowPaused
	case StateReplicate:
		return pr.Inflights.full()
	default:
		return true
	}
}

func (pr *progress) public() Progress {
	return Progress{
		Match:           pr.Match,
		Next:            pr.Next,
		State:           pr.State,
		PendingSnapshot: pr.PendingSnapshot,
		RecentActive:    pr.RecentActive,
		Paused:          pr.isPaused(),
		IsLearner:       pr.IsLearner,
		InflightMsgs:    pr.Inflights.count,
		InflightBytes:   pr.Inflights.bytes,
	}
}

// inflights is the window of append messages sent to one follower and not
// yet acknowledged: a ring of (last index, payload bytes), bounded by a
// message count and, if maxBytes > 0, by bytes.
type inflights struct {
	start    int
	count    int
	bytes    uint64
	size     int    // capacity in messages
	maxBytes uint64 // 0: no byte limit
	buffer   []inflight
}

type inflight struct {
	index Index
	bytes uint64
}

func newInflights(size int, maxBytes uint64) *inflights {
	return &inflights{size: size, maxBytes: maxBytes}
}

func (in *inflights) add(index Index, bytes uint64) {
	if in.full() {
		panicf("inflights full: %d messages, %d bytes", in.count, in.bytes)
	}
	next := in.start + in.count
	if next >= in.size {
		next -= in.size
	}
	if next >= len(in.buffer) {
		in.grow()
	}
	in.buffer[next] = inflight{index: index, bytes: bytes}
	in.count++
	in.bytes += bytes
}

// grow doubles the buffer up to size, so an idle follower costs little.
func (in *inflights) grow() {
	n := min(max(2*len(in.buffer), 1), in.size)
	b := make([]inflight, n)
	copy(b, in.buffer)
	in.buffer = b
}

// freeLE frees every inflight message whose last index is <= to.
func (in *inflights) freeLE(to Index) {
	if in.count == 0 || to < in.buffer[in.start].index {
		return
	}
	idx := in.start
	var i int
	var bytes uint64
	for i = 0; i < in.count; i++ {
		if to < in.buffer[idx].index {
			break
		}
		bytes += in.buffer[idx].bytes
		if idx++; idx >= in.size {
			idx -= in.size
		}
	}
	in.count -= i
	in.bytes -= bytes
	in.start = idx
	if in.count == 0 {
		in.start = 0
	}
}

// freeFirstOne frees the oldest inflight message.
func (in *inflights) freeFirstOne() {
	if in.count > 0 {
		in.freeLE(in.buffer[in.start].index)
	}
}

func (in *inflights) full() bool {
	if mutant == "no_inflight_limit" {
		return false
	}
	return in.count == in.size || (in.maxBytes != 0 && in.bytes >= in.maxBytes)
}

func (in *inflights) reset() {
	in.count, in.bytes, in.start = 0, 0, 0
}
