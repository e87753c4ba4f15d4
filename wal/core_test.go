package wal

import (
	"fmt"
	"testing"

	"github.com/stepraft/stepraft/core"
)

// runReady persists and applies every Ready of r, as a host does, and
// returns the entries applied.
func runReady(t *testing.T, r *core.Raft, l *Log) []core.Entry {
	t.Helper()
	var applied []core.Entry
	for r.HasReady() {
		rd := r.Ready()
		if err := l.Save(rd); err != nil {
			t.Fatal(err)
		}
		applied = append(applied, rd.CommittedEntries...)
		r.Advance(rd)
	}
	return applied
}

// TestCoreRestartsFromTheLog runs a single-voter core on a Log, restarts
// it from the directory (after a snapshot and a compaction), and checks
// that it resumes where it was: same term, vote, commit, entries, and
// configuration.
func TestCoreRestartsFromTheLog(t *testing.T) {
	dir := t.TempDir()
	l, err := Open(dir, Options{ClusterID: 1, NodeID: 1})
	if err != nil {
		t.Fatal(err)
	}
	boot := core.SnapshotMeta{Index: 1, Term: 1, ConfState: core.ConfState{Voters: []core.NodeID{1}}}
	if err := l.Save(core.Ready{Snapshot: core.Snapshot{Meta: boot}, HardState: core.HardState{Term: 1, Commit: 1}}); err != nil {
		t.Fatal(err)
	}
	r, err := core.New(core.Config{ID: 1, Storage: l, Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Campaign(); err != nil {
		t.Fatal(err)
	}
	var applied []core.Entry
	applied = append(applied, runReady(t, r, l)...)
	for i := range 50 {
		if err := r.Propose([]byte(fmt.Sprintf("cmd%d", i))); err != nil {
			t.Fatal(err)
		}
		applied = append(applied, runReady(t, r, l)...)
	}
	st := r.Status()
	last := applied[len(applied)-1].Index
	if st.Role != core.RoleLeader || st.Commit != last || st.Applied != last {
		t.Fatalf("status %+v, last applied %d", st, last)
	}
	if err := l.SetSnapshot(core.SnapshotMeta{Index: 40, ConfState: boot.ConfState}); err != nil {
		t.Fatal(err)
	}
	if err := l.Compact(30); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}

	l, err = Open(dir, Options{ClusterID: 1, NodeID: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	r2, err := core.New(core.Config{ID: 1, Storage: l, Seed: 2, Applied: last})
	if err != nil {
		t.Fatal(err)
	}
	st2 := r2.Status()
	if st2.Term != st.Term || st2.Vote != st.Vote || st2.Commit != st.Commit || st2.Applied != last {
		t.Fatalf("restarted as %+v, was %+v", st2.HardState, st.HardState)
	}
	if got := core.DescribeConfState(st2.Config); got != "Voters:[1]" {
		t.Fatalf("configuration %s", got)
	}
	first, _ := l.FirstIndex()
	ents, err := l.Entries(first, last+1, 1<<30)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		want := applied[e.Index-applied[0].Index]
		if e.Term != want.Term || string(e.Data) != string(want.Data) {
			t.Fatalf("entry %d is %s, was %s", e.Index, core.DescribeEntry(e), core.DescribeEntry(want))
		}
	}
	if first != 31 {
		t.Fatalf("first index %d after compacting at 30", first)
	}
	// It campaigns and commits again on the reopened log.
	if err := r2.Campaign(); err != nil {
		t.Fatal(err)
	}
	runReady(t, r2, l)
	if err := r2.Propose([]byte("after")); err != nil {
		t.Fatal(err)
	}
	more := runReady(t, r2, l)
	if len(more) == 0 || string(more[len(more)-1].Data) != "after" {
		t.Fatalf("after restart applied %s", core.DescribeEntries(more))
	}
}
