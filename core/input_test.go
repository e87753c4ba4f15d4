package core_test

// Bad input from outside: Step refuses what is misrouted, local or
// malformed with an error and changes nothing; what Raft calls stale or
// unknown is ignored; nothing a peer sends makes core panic.

import (
	"errors"
	"reflect"
	"testing"

	"github.com/stepraft/stepraft/core"
)

// inputFollower returns node 1 of {1,2,3} in term 2 with log [1/1, 2/2],
// commit 1, following no one yet.
func inputFollower(t *testing.T) (*core.Raft, *core.MemoryStorage) {
	t.Helper()
	s := paperStorage(t, paperVoters, core.HardState{Term: 2, Commit: 1},
		core.Entry{Term: 2, Index: 2, Type: core.EntryNormal})
	return paperNode(t, 1, s, core.Config{}), s
}

// assertUnchanged fails if r has work to hand out or its status differs
// from before.
func assertUnchanged(t *testing.T, r *core.Raft, before core.Status) {
	t.Helper()
	if r.HasReady() {
		t.Errorf("node has work after refused input:\n%s", core.DescribeReady(r.Ready()))
	}
	if after := r.Status(); !reflect.DeepEqual(after, before) {
		t.Errorf("status changed:\n before %+v\n after  %+v", before, after)
	}
}

func TestStepRefusesMisroutedMessage(t *testing.T) {
	r, _ := inputFollower(t)
	before := r.Status()
	err := r.Step(core.Message{Type: core.MsgHeartbeat, From: 2, To: 3, Term: 5, Commit: 2})
	if !errors.Is(err, core.ErrMisrouted) {
		t.Fatalf("Step = %v, want ErrMisrouted", err)
	}
	assertUnchanged(t, r, before)
}

func TestStepRefusesLocalMessages(t *testing.T) {
	r, _ := inputFollower(t)
	before := r.Status()
	for _, typ := range []core.MessageType{core.MsgHup, core.MsgBeat} {
		err := r.Step(core.Message{Type: typ, From: 2, To: 1, Term: 2})
		if !errors.Is(err, core.ErrStepLocalMsg) {
			t.Errorf("Step(%s) = %v, want ErrStepLocalMsg", typ, err)
		}
	}
	assertUnchanged(t, r, before)
}

func TestStepRefusesMalformedMessages(t *testing.T) {
	ent := func(term core.Term, index core.Index) core.Entry {
		return core.Entry{Term: term, Index: index, Type: core.EntryNormal}
	}
	for _, tc := range []struct {
		name string
		m    core.Message
	}{
		{"zero type", core.Message{From: 2, To: 1, Term: 3}},
		{"unknown type", core.Message{Type: 99, From: 2, To: 1, Term: 3}},
		{"no sender", core.Message{Type: core.MsgHeartbeat, To: 1, Term: 3}},
		{"from self", core.Message{Type: core.MsgHeartbeat, From: 1, To: 1, Term: 3}},
		{"term 0", core.Message{Type: core.MsgApp, From: 2, To: 1, Index: 2, LogTerm: 2}},
		{"snapshot missing", core.Message{Type: core.MsgSnap, From: 2, To: 1, Term: 3}},
		{"entry index gap", core.Message{Type: core.MsgApp, From: 2, To: 1, Term: 3, Index: 2, LogTerm: 2,
			Entries: []core.Entry{ent(3, 4)}}},
		{"entry indexes out of order", core.Message{Type: core.MsgApp, From: 2, To: 1, Term: 3, Index: 2, LogTerm: 2,
			Entries: []core.Entry{ent(3, 3), ent(3, 3)}}},
		{"entry term past message term", core.Message{Type: core.MsgApp, From: 2, To: 1, Term: 3, Index: 2, LogTerm: 2,
			Entries: []core.Entry{ent(4, 3)}}},
		{"entry terms decrease", core.Message{Type: core.MsgApp, From: 2, To: 1, Term: 3, Index: 2, LogTerm: 2,
			Entries: []core.Entry{ent(3, 3), ent(2, 4)}}},
		{"entry term below previous", core.Message{Type: core.MsgApp, From: 2, To: 1, Term: 3, Index: 2, LogTerm: 2,
			Entries: []core.Entry{ent(1, 3)}}},
		{"entry of unknown type", core.Message{Type: core.MsgApp, From: 2, To: 1, Term: 3, Index: 2, LogTerm: 2,
			Entries: []core.Entry{{Term: 3, Index: 3, Type: 9}}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, _ := inputFollower(t)
			before := r.Status()
			if err := r.Step(tc.m); !errors.Is(err, core.ErrMalformed) {
				t.Fatalf("Step(%s) = %v, want ErrMalformed", core.DescribeMessage(tc.m), err)
			}
			assertUnchanged(t, r, before)
		})
	}
}

// An append that starts below our commit index cannot be news (a delayed
// or duplicated message): it never touches committed entries, even ones it
// disagrees with, and is answered with our commit index.
func TestAppendBelowCommitLeavesCommittedEntries(t *testing.T) {
	r, s := inputFollower(t)
	paperStep(t, r, core.Message{Type: core.MsgHeartbeat, From: 2, To: 1, Term: 2, Commit: 2})
	paperCycle(t, r, s)
	paperStep(t, r, core.Message{Type: core.MsgApp, From: 2, To: 1, Term: 2, Index: 1, LogTerm: 1, Commit: 2,
		Entries: []core.Entry{{Term: 1, Index: 2, Type: core.EntryNormal}}})
	rd := paperCycle(t, r, s)
	if len(rd.Entries) != 0 {
		t.Fatalf("rewrote committed entries: %s", core.DescribeEntries(rd.Entries))
	}
	if acks := msgsOf(rd.Messages, core.MsgAppResp, 2); len(acks) != 1 || acks[0].Reject || acks[0].Index != 2 {
		t.Fatalf("want an acknowledgement of our commit 2, got\n%s", core.DescribeReady(rd))
	}
	if term, _ := s.Term(2); term != 2 {
		t.Fatalf("committed entry 2 now has term %d", term)
	}
}

func TestLeaderIgnoresResponseFromUnknownNode(t *testing.T) {
	c := paperCluster(t, core.Config{Seed: 1}, 1, paperVoters...)
	r := c.Node(1).Raft
	term := r.Status().Term
	before := r.Status()
	for _, m := range []core.Message{
		{Type: core.MsgAppResp, From: 9, To: 1, Term: term, Index: 2},
		{Type: core.MsgAppResp, From: 9, To: 1, Term: term, Index: 2, Reject: true, RejectHint: 1},
		{Type: core.MsgHeartbeatResp, From: 9, To: 1, Term: term},
		{Type: core.MsgVoteResp, From: 9, To: 1, Term: term},
	} {
		if err := r.Step(m); err != nil {
			t.Errorf("Step(%s) = %v, want nil", core.DescribeMessage(m), err)
		}
	}
	assertUnchanged(t, r, before)
}

func TestCandidateIgnoresVoteFromUnknownNode(t *testing.T) {
	s := paperStorage(t, paperVoters, core.HardState{})
	r := paperNode(t, 1, s, core.Config{DisablePreVote: true})
	if err := r.Campaign(); err != nil {
		t.Fatal(err)
	}
	paperCycle(t, r, s)
	term := r.Status().Term
	for _, from := range []core.NodeID{7, 8, 9} {
		paperStep(t, r, core.Message{Type: core.MsgVoteResp, From: from, To: 1, Term: term})
	}
	if got := r.Status().Role; got != core.RoleCandidate {
		t.Fatalf("role %s after grants from non-members, want candidate", got)
	}
}

// A commit index past our log (possible after losing unsynced entries)
// commits what we have, without a panic.
func TestCommitPastLastIndexDoesNotPanic(t *testing.T) {
	r, s := inputFollower(t)
	paperStep(t, r, core.Message{Type: core.MsgHeartbeat, From: 2, To: 1, Term: 2, Commit: 100})
	if got := r.Status().Commit; got != 2 {
		t.Fatalf("commit %d after a heartbeat with commit 100, want our last index 2", got)
	}
	paperCycle(t, r, s)
	paperStep(t, r, core.Message{Type: core.MsgApp, From: 2, To: 1, Term: 2, Index: 2, LogTerm: 2, Commit: 100,
		Entries: []core.Entry{{Term: 2, Index: 3, Type: core.EntryNormal}}})
	if got := r.Status().Commit; got != 3 {
		t.Fatalf("commit %d after an append up to 3 with commit 100, want 3", got)
	}
	paperCycle(t, r, s)
	if err := r.CheckInvariants(); err != nil {
		t.Fatal(err)
	}
}

func TestProposeTooLarge(t *testing.T) {
	c := paperCluster(t, core.Config{Seed: 1, MaxEntryBytes: 10}, 1, paperVoters...)
	for _, id := range c.IDs() {
		r := c.Node(id).Raft
		if err := r.Propose(make([]byte, 11)); !errors.Is(err, core.ErrTooLarge) {
			t.Errorf("node %d: Propose(11 bytes) = %v, want ErrTooLarge", id, err)
		}
		if r.HasReady() {
			t.Errorf("node %d has work after a refused proposal", id)
		}
	}
	if err := c.Node(1).Raft.Propose(make([]byte, 10)); err != nil {
		t.Fatalf("Propose(10 bytes) on the leader = %v", err)
	}
}

func TestProposeOnNonLeaderDropped(t *testing.T) {
	c := paperCluster(t, core.Config{Seed: 1, DisableProposalForwarding: true}, 1, paperVoters...)
	r := c.Node(2).Raft
	if err := r.Propose([]byte("x")); !errors.Is(err, core.ErrProposalDropped) {
		t.Fatalf("Propose on a follower = %v, want ErrProposalDropped", err)
	}
	if r.HasReady() {
		t.Fatalf("follower has work after a dropped proposal:\n%s", core.DescribeReady(r.Ready()))
	}

	for _, preVote := range []bool{true, false} {
		s := paperStorage(t, paperVoters, core.HardState{})
		r := paperNode(t, 1, s, core.Config{DisablePreVote: !preVote, DisableProposalForwarding: true})
		if err := r.Campaign(); err != nil {
			t.Fatal(err)
		}
		if err := r.Propose([]byte("x")); !errors.Is(err, core.ErrProposalDropped) {
			t.Errorf("Propose on a %s = %v, want ErrProposalDropped", r.Status().Role, err)
		}
		if rd := paperCycle(t, r, s); len(rd.Entries) != 0 {
			t.Errorf("%s appended %s", r.Status().Role, core.DescribeEntries(rd.Entries))
		}
	}
}
