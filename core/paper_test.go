package core_test

// Tests that pin one rule of the Raft paper (§5) or of core's contract
// each, driven through the public API. Every mutant that scripts/mutants.sh
// builds breaks one of these rules, and the test named for the rule fails.

import (
	"errors"
	"maps"
	"slices"
	"testing"

	"github.com/stepraft/stepraft/core"
	"github.com/stepraft/stepraft/core/coretest"
)

var paperVoters = []core.NodeID{1, 2, 3}

// paperStorage returns a storage bootstrapped with voters (snapshot at 1/1),
// then ents appended and hs set (a zero hs leaves {Term: 1, Commit: 1}).
func paperStorage(t testing.TB, voters []core.NodeID, hs core.HardState, ents ...core.Entry) *core.MemoryStorage {
	t.Helper()
	s := core.NewMemoryStorage()
	snap := core.Snapshot{Meta: core.SnapshotMeta{Index: 1, Term: 1, ConfState: core.ConfState{Voters: voters}}}
	if err := s.ApplySnapshot(snap); err != nil {
		t.Fatal(err)
	}
	if hs.IsEmpty() {
		hs = core.HardState{Term: 1, Commit: 1}
	}
	if err := s.SetHardState(hs); err != nil {
		t.Fatal(err)
	}
	if err := s.Append(ents); err != nil {
		t.Fatal(err)
	}
	return s
}

// paperNode starts node id on s; cfg may set options (ID and Storage are
// filled in).
func paperNode(t testing.TB, id core.NodeID, s *core.MemoryStorage, cfg core.Config) *core.Raft {
	t.Helper()
	cfg.ID, cfg.Storage = id, s
	r, err := core.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// paperCycle runs one whole Ready cycle on a lone node: persist to s, then
// Advance. It returns the Ready (zero if there was none).
func paperCycle(t testing.TB, r *core.Raft, s *core.MemoryStorage) core.Ready {
	t.Helper()
	if !r.HasReady() {
		return core.Ready{}
	}
	rd := r.Ready()
	if !rd.Snapshot.IsEmpty() {
		if err := s.ApplySnapshot(rd.Snapshot); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Append(rd.Entries); err != nil {
		t.Fatal(err)
	}
	if !rd.HardState.IsEmpty() {
		if err := s.SetHardState(rd.HardState); err != nil {
			t.Fatal(err)
		}
	}
	r.Advance(rd)
	return rd
}

// paperStep steps m into r and fails the test on an error.
func paperStep(t testing.TB, r *core.Raft, m core.Message) {
	t.Helper()
	if err := r.Step(m); err != nil {
		t.Fatalf("step %s: %v", core.DescribeMessage(m), err)
	}
}

// paperCluster bootstraps a cluster of ids and makes leader win an election.
func paperCluster(t testing.TB, base core.Config, leader core.NodeID, ids ...core.NodeID) *coretest.Cluster {
	t.Helper()
	c := coretest.NewCluster(base)
	if err := c.Bootstrap(ids...); err != nil {
		t.Fatal(err)
	}
	if err := c.Node(leader).Raft.Campaign(); err != nil {
		t.Fatal(err)
	}
	paperStabilize(t, c)
	if got := c.Leader(); got != leader {
		t.Fatalf("leader = %d, want %d", got, leader)
	}
	return c
}

func paperStabilize(t testing.TB, c *coretest.Cluster) {
	t.Helper()
	if err := c.Stabilize(100); err != nil {
		t.Fatal(err)
	}
}

func paperHandle(t testing.TB, c *coretest.Cluster, id core.NodeID) core.Ready {
	t.Helper()
	rd, _, err := c.Node(id).HandleReady(c)
	if err != nil {
		t.Fatal(err)
	}
	return rd
}

func msgsOf(ms []core.Message, typ core.MessageType, to core.NodeID) []core.Message {
	var out []core.Message
	for _, m := range ms {
		if m.Type == typ && m.To == to {
			out = append(out, m)
		}
	}
	return out
}

func toNode(id core.NodeID) func(core.Message) bool {
	return func(m core.Message) bool { return m.To == id }
}

// §5.4.2: a leader commits an entry of an earlier term only by committing
// one of its own term after it (Figure 8). A quorum holding the old entry
// is not enough.
func TestLeaderCommitsOnlyCurrentTermEntries(t *testing.T) {
	s := paperStorage(t, paperVoters, core.HardState{Term: 2, Commit: 1},
		core.Entry{Term: 2, Index: 2, Type: core.EntryNormal, Data: []byte("old")})
	r := paperNode(t, 1, s, core.Config{DisablePreVote: true})
	if err := r.Campaign(); err != nil {
		t.Fatal(err)
	}
	paperCycle(t, r, s) // our own vote is durable
	paperStep(t, r, core.Message{Type: core.MsgVoteResp, From: 2, To: 1, Term: 3})
	if st := r.Status(); st.Role != core.RoleLeader || st.Term != 3 {
		t.Fatalf("want leader in term 3, got %s in %d", st.Role, st.Term)
	}
	paperCycle(t, r, s) // the empty entry 3/3 is durable: our match is 3

	// Follower 2 acknowledges up to the old-term entry only: 1 and 2 hold
	// index 2, a quorum, but it is of term 2.
	paperStep(t, r, core.Message{Type: core.MsgAppResp, From: 2, To: 1, Term: 3, Index: 2})
	if got := r.Status().Commit; got != 1 {
		t.Fatalf("commit = %d after a quorum acknowledged only an entry of term 2, want 1", got)
	}
	// Once our own entry is on a quorum, both commit.
	paperStep(t, r, core.Message{Type: core.MsgAppResp, From: 2, To: 1, Term: 3, Index: 3})
	if got := r.Status().Commit; got != 3 {
		t.Fatalf("commit = %d after a quorum acknowledged 3/3, want 3", got)
	}
	rd := paperCycle(t, r, s)
	if got := core.DescribeEntries(rd.CommittedEntries); got != `[2/2 "old", 3/3]` {
		t.Fatalf("committed entries %s", got)
	}
}

// The Ready contract: a candidate's own vote is a response, counted only
// when the Ready that persists it is advanced. A grant from one peer while
// the write is under way must not make it win (with or without pre-vote).
func TestCandidateSelfVoteCountsOnlyAfterAdvance(t *testing.T) {
	for _, tc := range []struct {
		name    string
		preVote bool
		waiting core.Role // role while only the peer's grant counts
		after   core.Role // role once our own vote counts too
	}{
		{"vote", false, core.RoleCandidate, core.RoleLeader},
		{"prevote", true, core.RolePreCandidate, core.RoleCandidate},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := coretest.NewCluster(core.Config{Seed: 1, DisablePreVote: !tc.preVote})
			if err := c.Bootstrap(paperVoters...); err != nil {
				t.Fatal(err)
			}
			n1 := c.Node(1)
			if err := n1.Raft.Campaign(); err != nil {
				t.Fatal(err)
			}
			rd, ok := n1.StartReady(c) // vote requests leave before our write
			if !ok || !rd.MustSync && !tc.preVote {
				t.Fatalf("campaign Ready: ok=%v MustSync=%v", ok, rd.MustSync)
			}
			c.Deliver(toNode(2))
			paperHandle(t, c, 2) // 2 grants, durably
			for _, d := range c.Deliver(toNode(1)) {
				if d.Err != nil || d.Msg.Reject {
					t.Fatalf("delivering %s: %v", core.DescribeMessage(d.Msg), d.Err)
				}
			}
			if got := n1.Raft.Status().Role; got != tc.waiting {
				t.Fatalf("role %s with a peer's grant and our own vote not yet durable, want %s", got, tc.waiting)
			}
			if err := n1.FinishReady(c); err != nil {
				t.Fatal(err)
			}
			if got := n1.Raft.Status().Role; got != tc.after {
				t.Fatalf("role %s once our own vote is durable, want %s", got, tc.after)
			}
		})
	}
}

// The Ready contract: a leader's own match index moves only when its write
// is durable, so one follower's acknowledgement (a minority of 3 without
// the leader) does not commit.
func TestLeaderOwnAckCountsOnlyAfterAdvance(t *testing.T) {
	c := paperCluster(t, core.Config{Seed: 1}, 1, paperVoters...)
	n1 := c.Node(1)
	before := n1.Raft.Status()
	if err := n1.Raft.Propose([]byte("x")); err != nil {
		t.Fatal(err)
	}
	if _, ok := n1.StartReady(c); !ok { // MsgApp leaves before our write
		t.Fatal("no Ready after a proposal")
	}
	c.Deliver(toNode(2))
	paperHandle(t, c, 2)
	c.Deliver(toNode(1)) // 2's acknowledgement
	st := n1.Raft.Status()
	if st.Progress[2].Match != before.Commit+1 {
		t.Fatalf("follower 2 match %d, want %d", st.Progress[2].Match, before.Commit+1)
	}
	if st.Progress[1].Match != before.Progress[1].Match || st.Commit != before.Commit {
		t.Fatalf("before our write is durable: own match %d (was %d), commit %d (was %d)",
			st.Progress[1].Match, before.Progress[1].Match, st.Commit, before.Commit)
	}
	if err := n1.FinishReady(c); err != nil {
		t.Fatal(err)
	}
	if st := n1.Raft.Status(); st.Commit != before.Commit+1 || st.Progress[1].Match != before.Commit+1 {
		t.Fatalf("after Advance: commit %d, own match %d, want both %d", st.Commit, st.Progress[1].Match, before.Commit+1)
	}
}

// Check-quorum (thesis §6.2): a follower that heard from its leader within
// the election timeout ignores vote requests of a higher term; it neither
// answers nor moves to that term.
func TestFollowerInLeaseIgnoresVoteRequest(t *testing.T) {
	for _, typ := range []core.MessageType{core.MsgVote, core.MsgPreVote} {
		t.Run(typ.String(), func(t *testing.T) {
			c := paperCluster(t, core.Config{Seed: 1}, 1, paperVoters...)
			r2 := c.Node(2).Raft
			before := r2.Status()
			last := before.Commit // everything is committed and applied
			paperStep(t, r2, core.Message{Type: typ, From: 3, To: 2, Term: before.Term + 1, Index: last, LogTerm: before.Term})
			if r2.HasReady() {
				rd := r2.Ready()
				t.Fatalf("answered a vote request in lease:\n%s", core.DescribeReady(rd))
			}
			if st := r2.Status(); st.HardState != before.HardState || st.Lead != 1 {
				t.Fatalf("state moved from %+v to %+v", before, st)
			}
		})
	}
}

// Leadership transfer: the vote request that follows MsgTimeoutNow carries
// the transfer mark and gets through the lease of followers (and of the old
// leader) that still hear from the old leader.
func TestTransferVoteGetsThroughLease(t *testing.T) {
	c := paperCluster(t, core.Config{Seed: 1}, 1, paperVoters...)
	term := c.Node(1).Raft.Status().Term
	paperStep(t, c.Node(3).Raft, core.Message{Type: core.MsgTimeoutNow, From: 1, To: 3, Term: term})
	rd := paperHandle(t, c, 3)
	votes := msgsOf(rd.Messages, core.MsgVote, 2)
	if len(votes) != 1 || len(votes[0].Context) == 0 {
		t.Fatalf("want one marked MsgVote to 2, got\n%s", core.DescribeReady(rd))
	}
	paperStabilize(t, c)
	if got := c.Leader(); got != 3 {
		t.Fatalf("leader = %d after the transfer, want 3", got)
	}
	for _, id := range c.IDs() {
		if st := c.Node(id).Raft.Status(); st.Term != term+1 || st.Lead != 3 {
			t.Errorf("node %d: term %d lead %d, want %d and 3", id, st.Term, st.Lead, term+1)
		}
	}
}

// Heartbeats carry min(commit, the follower's match): a follower must never
// be told to commit an index it may hold a different entry at.
func TestHeartbeatCommitCappedAtMatch(t *testing.T) {
	c := paperCluster(t, core.Config{Seed: 1}, 1, paperVoters...)
	c.Partition([]core.NodeID{1, 2}, []core.NodeID{3})
	n1 := c.Node(1)
	if err := n1.Raft.Propose([]byte("x")); err != nil {
		t.Fatal(err)
	}
	paperStabilize(t, c)
	st := n1.Raft.Status()
	if st.Commit != 3 || st.Progress[3].Match != 2 {
		t.Fatalf("commit %d, match of 3 %d; want 3 and 2", st.Commit, st.Progress[3].Match)
	}
	n1.Raft.Tick() // HeartbeatTicks is 1
	rd := paperHandle(t, c, 1)
	for to, want := range map[core.NodeID]core.Index{2: 3, 3: 2} {
		hb := msgsOf(rd.Messages, core.MsgHeartbeat, to)
		if len(hb) != 1 || hb[0].Commit != want {
			t.Errorf("heartbeat to %d: %v, want one with Commit %d", to, hb, want)
		}
	}
}

// §5.3: when an append conflicts with the follower's log (same index,
// different term), the follower deletes the entry and all that follow it.
func TestConflictingSuffixTruncated(t *testing.T) {
	s := paperStorage(t, paperVoters, core.HardState{Term: 2, Commit: 1},
		core.Entry{Term: 2, Index: 2, Type: core.EntryNormal},
		core.Entry{Term: 2, Index: 3, Type: core.EntryNormal})
	r := paperNode(t, 1, s, core.Config{})
	paperStep(t, r, core.Message{Type: core.MsgApp, From: 2, To: 1, Term: 3, Index: 1, LogTerm: 1, Commit: 1,
		Entries: []core.Entry{{Term: 3, Index: 2, Type: core.EntryNormal, Data: []byte("new")}}})
	rd := paperCycle(t, r, s)
	if got := core.DescribeEntries(rd.Entries); got != `[3/2 "new"]` {
		t.Fatalf("entries to persist %s, want [3/2 \"new\"]", got)
	}
	if acks := msgsOf(rd.Messages, core.MsgAppResp, 2); len(acks) != 1 || acks[0].Reject || acks[0].Index != 2 {
		t.Fatalf("want an acknowledgement of 2, got\n%s", core.DescribeReady(rd))
	}
	last, _ := s.LastIndex()
	term, _ := s.Term(2)
	if last != 2 || term != 3 {
		t.Fatalf("stored log ends at %d with term %d at 2; want 2 and 3", last, term)
	}
	// The truncated entry is gone from core's view too: an append after it
	// is refused.
	paperStep(t, r, core.Message{Type: core.MsgApp, From: 2, To: 1, Term: 3, Index: 3, LogTerm: 2, Commit: 1})
	rd = paperCycle(t, r, s)
	if rej := msgsOf(rd.Messages, core.MsgAppResp, 2); len(rej) != 1 || !rej[0].Reject {
		t.Fatalf("append after the removed 2/3 not rejected:\n%s", core.DescribeReady(rd))
	}
}

// §5.3: a follower refuses an append whose previous (index, term) it does
// not hold, even when it holds an entry at that index.
func TestFollowerRejectsAppendWithMismatchedPrevious(t *testing.T) {
	s := paperStorage(t, paperVoters, core.HardState{Term: 2, Commit: 1},
		core.Entry{Term: 2, Index: 2, Type: core.EntryNormal})
	r := paperNode(t, 1, s, core.Config{})
	paperStep(t, r, core.Message{Type: core.MsgApp, From: 2, To: 1, Term: 3, Index: 2, LogTerm: 3, Commit: 1,
		Entries: []core.Entry{{Term: 3, Index: 3, Type: core.EntryNormal}}})
	rd := paperCycle(t, r, s)
	if len(rd.Entries) != 0 {
		t.Fatalf("appended %s after a mismatched previous entry", core.DescribeEntries(rd.Entries))
	}
	rej := msgsOf(rd.Messages, core.MsgAppResp, 2)
	if len(rej) != 1 || !rej[0].Reject || rej[0].Index != 2 || rej[0].RejectHint != 2 || rej[0].LogTerm != 2 {
		t.Fatalf("want a rejection of 2 hinting 2/2, got\n%s", core.DescribeReady(rd))
	}
}

// Flow control: in replicate state a leader pipelines at most
// MaxInflightMsgs appends to a follower that has not answered, then
// resumes as acknowledgements free the window.
func TestInflightWindowBoundsPipelining(t *testing.T) {
	c := paperCluster(t, core.Config{Seed: 1, MaxInflightMsgs: 2}, 1, paperVoters...)
	n1 := c.Node(1)
	// One proposal per Ready, and no answers: each Ready may carry one more
	// append per follower until the window is full.
	for i := range 5 {
		if err := n1.Raft.Propose([]byte{byte('a' + i)}); err != nil {
			t.Fatal(err)
		}
		paperHandle(t, c, 1)
	}
	for _, to := range []core.NodeID{2, 3} {
		if apps := msgsOf(c.Net, core.MsgApp, to); len(apps) != 2 {
			t.Errorf("%d appends to %d in flight with a window of 2", len(apps), to)
		}
		if pr := n1.Raft.Status().Progress[to]; !pr.Paused || pr.InflightMsgs != 2 || pr.State != core.StateReplicate {
			t.Errorf("progress of %d: %+v, want replicate, paused, 2 in flight", to, pr)
		}
	}
	paperStabilize(t, c)
	for _, id := range c.IDs() {
		if st := c.Node(id).Raft.Status(); st.Commit != 7 || st.Applied != 7 {
			t.Errorf("node %d: commit %d applied %d, want 7", id, st.Commit, st.Applied)
		}
	}
}

// A leader refuses proposals while its uncommitted tail is over
// MaxUncommittedBytes (an empty tail takes one of any size), and takes them
// again once the tail commits.
func TestMaxUncommittedBytesDropsProposals(t *testing.T) {
	c := paperCluster(t, core.Config{Seed: 1, MaxUncommittedBytes: 100}, 1, paperVoters...)
	c.Partition([]core.NodeID{1}, []core.NodeID{2, 3})
	r := c.Node(1).Raft
	p := func(n int) error { return r.Propose(make([]byte, n)) }
	if err := p(150); err != nil {
		t.Fatalf("first proposal over the limit on an empty tail: %v", err)
	}
	if err := p(1); !errors.Is(err, core.ErrProposalDropped) {
		t.Fatalf("proposal past the limit: %v, want ErrProposalDropped", err)
	}
	paperStabilize(t, c)
	c.Heal()
	r.Tick() // a heartbeat; its answer makes the leader resend
	paperStabilize(t, c)
	if got := r.Status().Commit; got != 3 {
		t.Fatalf("commit %d, want 3", got)
	}
	if err := p(60); err != nil {
		t.Fatalf("proposal after the tail committed: %v", err)
	}
	if err := p(40); err != nil {
		t.Fatalf("proposal up to the limit: %v", err)
	}
	if err := p(1); !errors.Is(err, core.ErrProposalDropped) {
		t.Fatalf("proposal past the limit: %v, want ErrProposalDropped", err)
	}
}

// §5.4.1: a vote (and a pre-vote) is refused to a candidate whose log is
// less up to date: an older last term, or the same last term and shorter.
func TestVoteRejectedForStaleLog(t *testing.T) {
	for _, tc := range []struct {
		name        string
		typ         core.MessageType
		index       core.Index
		logTerm     core.Term
		wantGranted bool
	}{
		{"older last term", core.MsgVote, 5, 1, false},
		{"same term shorter", core.MsgVote, 2, 2, false},
		{"same log", core.MsgVote, 3, 2, true},
		{"longer", core.MsgVote, 4, 2, true},
		{"newer last term", core.MsgVote, 2, 3, true},
		{"prevote older last term", core.MsgPreVote, 5, 1, false},
		{"prevote same term shorter", core.MsgPreVote, 2, 2, false},
		{"prevote same log", core.MsgPreVote, 3, 2, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := paperStorage(t, paperVoters, core.HardState{Term: 2, Commit: 1},
				core.Entry{Term: 2, Index: 2, Type: core.EntryNormal},
				core.Entry{Term: 2, Index: 3, Type: core.EntryNormal})
			r := paperNode(t, 1, s, core.Config{})
			paperStep(t, r, core.Message{Type: tc.typ, From: 2, To: 1, Term: 4, Index: tc.index, LogTerm: tc.logTerm})
			rd := paperCycle(t, r, s)
			resp := rd.Messages
			if len(resp) != 1 || resp[0].To != 2 || resp[0].Reject == tc.wantGranted {
				t.Fatalf("want granted=%v, got\n%s", tc.wantGranted, core.DescribeReady(rd))
			}
			wantVote := core.None
			if tc.wantGranted && tc.typ == core.MsgVote {
				wantVote = 2
			}
			if got := r.Status().Vote; got != wantVote {
				t.Fatalf("vote %d, want %d", got, wantVote)
			}
		})
	}
}

// §5.1: a message from an older term is ignored: a stale leader's append
// changes neither the log nor who we follow. (We tell it our term, so it
// steps down.)
func TestStaleTermMessagesIgnored(t *testing.T) {
	s := paperStorage(t, paperVoters, core.HardState{})
	r := paperNode(t, 1, s, core.Config{})
	paperStep(t, r, core.Message{Type: core.MsgHeartbeat, From: 2, To: 1, Term: 3, Commit: 1})
	paperCycle(t, r, s)
	paperStep(t, r, core.Message{Type: core.MsgApp, From: 3, To: 1, Term: 2, Index: 1, LogTerm: 1, Commit: 1,
		Entries: []core.Entry{{Term: 2, Index: 2, Type: core.EntryNormal}}})
	rd := paperCycle(t, r, s)
	if len(rd.Entries) != 0 || rd.SoftState != nil || !rd.HardState.IsEmpty() {
		t.Fatalf("a stale append changed state:\n%s", core.DescribeReady(rd))
	}
	resp := msgsOf(rd.Messages, core.MsgAppResp, 3)
	if len(resp) != 1 || resp[0].Term != 3 {
		t.Fatalf("want one MsgAppResp carrying term 3 to the stale leader, got\n%s", core.DescribeReady(rd))
	}
	if st := r.Status(); st.Term != 3 || st.Lead != 2 {
		t.Fatalf("term %d lead %d, want 3 and 2", st.Term, st.Lead)
	}
	// A stale vote response does not count either.
	r2 := paperNode(t, 1, paperStorage(t, paperVoters, core.HardState{Term: 5, Commit: 1}), core.Config{DisablePreVote: true})
	if err := r2.Campaign(); err != nil { // candidate in term 6
		t.Fatal(err)
	}
	paperStep(t, r2, core.Message{Type: core.MsgVoteResp, From: 2, To: 1, Term: 5})
	paperStep(t, r2, core.Message{Type: core.MsgVoteResp, From: 3, To: 1, Term: 5})
	if got := r2.Status().Role; got != core.RoleCandidate {
		t.Fatalf("role %s after stale grants, want candidate", got)
	}
}

// Term and vote must be durable before anything depending on them leaves
// the node (a node that forgets its vote can elect two leaders in a term):
// MustSync is set when they change, even with no entries. A change of the
// commit index alone may be written lazily.
func TestMustSyncOnTermOrVoteChange(t *testing.T) {
	s := paperStorage(t, paperVoters, core.HardState{})
	r := paperNode(t, 1, s, core.Config{})

	paperStep(t, r, core.Message{Type: core.MsgVote, From: 2, To: 1, Term: 2, Index: 1, LogTerm: 1})
	rd := paperCycle(t, r, s)
	if want := (core.HardState{Term: 2, Vote: 2, Commit: 1}); rd.HardState != want || len(rd.Entries) != 0 || !rd.MustSync {
		t.Fatalf("after granting a vote, want HardState %+v with MustSync, got\n%s", want, core.DescribeReady(rd))
	}

	paperStep(t, r, core.Message{Type: core.MsgApp, From: 2, To: 1, Term: 2, Index: 1, LogTerm: 1, Commit: 1,
		Entries: []core.Entry{{Term: 2, Index: 2, Type: core.EntryNormal}}})
	if rd = paperCycle(t, r, s); len(rd.Entries) != 1 || !rd.MustSync {
		t.Fatalf("entries without MustSync:\n%s", core.DescribeReady(rd))
	}

	paperStep(t, r, core.Message{Type: core.MsgHeartbeat, From: 2, To: 1, Term: 2, Commit: 2})
	if rd = paperCycle(t, r, s); rd.HardState.Commit != 2 || rd.MustSync {
		t.Fatalf("commit-only change: want HardState commit 2 without MustSync, got\n%s", core.DescribeReady(rd))
	}

	paperStep(t, r, core.Message{Type: core.MsgHeartbeat, From: 3, To: 1, Term: 3, Commit: 2})
	if rd = paperCycle(t, r, s); rd.HardState.Term != 3 || rd.HardState.Vote != core.None || !rd.MustSync {
		t.Fatalf("term change: want HardState term 3 with MustSync, got\n%s", core.DescribeReady(rd))
	}
}

// §5.2: election timeouts are randomized in [ElectionTicks,
// 2*ElectionTicks), drawn from Config.Seed (mixed with ID), so that the same
// inputs give the same timeout and split votes are rare.
func TestElectionTimeoutRandomizedFromSeed(t *testing.T) {
	const et = 10
	ticksToCampaign := func(seed uint64, id core.NodeID) int {
		r := paperNode(t, id, paperStorage(t, paperVoters, core.HardState{}), core.Config{Seed: seed, ElectionTicks: et})
		for n := 1; n <= 3*et; n++ {
			r.Tick()
			if r.Status().Role != core.RoleFollower {
				return n
			}
		}
		t.Fatalf("seed %d node %d did not campaign in %d ticks", seed, id, 3*et)
		return 0
	}
	seen := map[int]bool{}
	byID := 0
	for seed := uint64(1); seed <= 30; seed++ {
		n := ticksToCampaign(seed, 1)
		if n < et || n >= 2*et {
			t.Fatalf("seed %d: campaigned after %d ticks, want [%d, %d)", seed, n, et, 2*et)
		}
		if again := ticksToCampaign(seed, 1); again != n {
			t.Fatalf("seed %d: %d ticks, then %d with the same seed", seed, n, again)
		}
		if ticksToCampaign(seed, 2) != n {
			byID++
		}
		seen[n] = true
	}
	if len(seen) < 3 {
		t.Fatalf("30 seeds drew only the timeouts %v", slices.Sorted(maps.Keys(seen)))
	}
	if byID == 0 {
		t.Fatalf("nodes 1 and 2 drew the same timeout for every seed")
	}
}

// Check-quorum: a leader that has not heard from a quorum within an
// election timeout steps down; one that has stays.
func TestLeaderStepsDownWithoutQuorum(t *testing.T) {
	c := paperCluster(t, core.Config{Seed: 1}, 1, paperVoters...)
	r := c.Node(1).Raft
	for range 3 * core.DefaultElectionTicks {
		r.Tick()
		paperStabilize(t, c)
	}
	if st := r.Status(); st.Role != core.RoleLeader {
		t.Fatalf("leader stepped down while hearing from a quorum: %s", st.Role)
	}
	c.Partition([]core.NodeID{1, 2}, []core.NodeID{3})
	for range 2 * core.DefaultElectionTicks {
		r.Tick()
		paperStabilize(t, c)
	}
	if st := r.Status(); st.Role != core.RoleLeader {
		t.Fatalf("leader with 2 of 3 stepped down: %s", st.Role)
	}
	// The check runs every election timeout over what was heard since the
	// last one, so a leader steps down within two timeouts.
	c.Partition([]core.NodeID{1}, []core.NodeID{2, 3})
	for range 2 * core.DefaultElectionTicks {
		r.Tick()
		paperStabilize(t, c)
	}
	if st := r.Status(); st.Role != core.RoleFollower || st.Lead != core.None {
		t.Fatalf("leader cut off from a quorum for two election timeouts is %s (lead %d), want follower", st.Role, st.Lead)
	}
}

// A quorum is a strict majority: with 4 voters, 2 (half) neither elect a
// leader nor commit an entry; 3 do.
func TestQuorumOfFourIsThree(t *testing.T) {
	ids := []core.NodeID{1, 2, 3, 4}
	c := coretest.NewCluster(core.Config{Seed: 1})
	if err := c.Bootstrap(ids...); err != nil {
		t.Fatal(err)
	}
	c.Partition([]core.NodeID{1, 2}, []core.NodeID{3, 4})
	if err := c.Node(1).Raft.Campaign(); err != nil {
		t.Fatal(err)
	}
	paperStabilize(t, c)
	if got := c.Leader(); got != core.None {
		t.Fatalf("node %d won an election with 2 votes of 4", got)
	}

	c = paperCluster(t, core.Config{Seed: 1}, 1, ids...)
	c.Partition([]core.NodeID{1, 2}, []core.NodeID{3, 4})
	r := c.Node(1).Raft
	commit := r.Status().Commit
	if err := r.Propose([]byte("x")); err != nil {
		t.Fatal(err)
	}
	paperStabilize(t, c)
	if got := r.Status().Commit; got != commit {
		t.Fatalf("commit moved from %d to %d with 2 of 4 holding the entry", commit, got)
	}
	c.Heal()
	c.Partition([]core.NodeID{1, 2, 3}, []core.NodeID{4})
	r.Tick()
	paperStabilize(t, c)
	if got := r.Status().Commit; got != commit+1 {
		t.Fatalf("commit %d with 3 of 4 holding the entry, want %d", got, commit+1)
	}
}

// Figure 13, rule 7: a snapshot whose last (index, term) the follower's log
// already holds only moves the commit; the entries after it are kept.
// Otherwise the whole log is replaced by the snapshot.
func TestSnapshotKeepsMatchingLogSuffix(t *testing.T) {
	newFollower := func() (*core.Raft, *core.MemoryStorage) {
		s := paperStorage(t, paperVoters, core.HardState{Term: 2, Commit: 1},
			core.Entry{Term: 2, Index: 2, Type: core.EntryNormal},
			core.Entry{Term: 2, Index: 3, Type: core.EntryNormal})
		return paperNode(t, 1, s, core.Config{}), s
	}
	snap := func(index core.Index, term core.Term) *core.Snapshot {
		return &core.Snapshot{Meta: core.SnapshotMeta{Index: index, Term: term,
			ConfState: core.ConfState{Voters: paperVoters}}, Data: []byte("image")}
	}

	r, s := newFollower()
	paperStep(t, r, core.Message{Type: core.MsgSnap, From: 2, To: 1, Term: 2, Snapshot: snap(2, 2)})
	rd := paperCycle(t, r, s)
	if !rd.Snapshot.IsEmpty() || rd.HardState.Commit != 2 {
		t.Fatalf("matching snapshot: want no snapshot to install and commit 2, got\n%s", core.DescribeReady(rd))
	}
	if last, _ := s.LastIndex(); last != 3 {
		t.Fatalf("matching snapshot: log ends at %d, want 3 (suffix kept)", last)
	}
	if acks := msgsOf(rd.Messages, core.MsgAppResp, 2); len(acks) != 1 || acks[0].Reject || acks[0].Index < 2 {
		t.Fatalf("matching snapshot: want an acknowledgement, got\n%s", core.DescribeReady(rd))
	}

	r, s = newFollower()
	paperStep(t, r, core.Message{Type: core.MsgSnap, From: 2, To: 1, Term: 3, Snapshot: snap(3, 3)})
	rd = paperCycle(t, r, s)
	if rd.Snapshot.Meta.Index != 3 || !rd.MustSync {
		t.Fatalf("conflicting snapshot: want snapshot 3 to install, got\n%s", core.DescribeReady(rd))
	}
	first, _ := s.FirstIndex()
	last, _ := s.LastIndex()
	term, _ := s.Term(3)
	if first != 4 || last != 3 || term != 3 {
		t.Fatalf("conflicting snapshot: log first %d last %d term(3) %d, want 4, 3, 3", first, last, term)
	}
	if st := r.Status(); st.Commit != 3 || st.Applied != 3 {
		t.Fatalf("conflicting snapshot: commit %d applied %d, want 3", st.Commit, st.Applied)
	}
	if acks := msgsOf(rd.Messages, core.MsgAppResp, 2); len(acks) != 1 || acks[0].Index != 3 {
		t.Fatalf("conflicting snapshot: want an acknowledgement of 3, got\n%s", core.DescribeReady(rd))
	}
}
