package wal

import (
	"errors"
	"fmt"
	"testing"

	"github.com/stepraft/stepraft/core"
)

func ents(from, to core.Index, term core.Term) []core.Entry {
	var out []core.Entry
	for i := from; i <= to; i++ {
		out = append(out, core.Entry{Index: i, Term: term, Type: core.EntryNormal, Data: []byte(fmt.Sprintf("e%d", i))})
	}
	return out
}

func TestSmokeWriteReopen(t *testing.T) {
	dir := t.TempDir()
	l, err := Open(dir, Options{ClusterID: 7, NodeID: 1})
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Save(core.Ready{Entries: ents(1, 10, 1), HardState: core.HardState{Term: 1, Vote: 1, Commit: 5}}); err != nil {
		t.Fatal(err)
	}
	if err := l.Save(core.Ready{Entries: ents(8, 12, 2), HardState: core.HardState{Term: 2, Vote: 1, Commit: 9}}); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	l, err = Open(dir, Options{ClusterID: 7, NodeID: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	hs, _, _ := l.InitialState()
	first, _ := l.FirstIndex()
	last, _ := l.LastIndex()
	got, err := l.Entries(1, 13, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	if hs != (core.HardState{Term: 2, Vote: 1, Commit: 9}) || first != 1 || last != 12 || len(got) != 12 || got[7].Term != 2 || got[6].Term != 1 {
		t.Fatalf("hs %v first %d last %d ents %s", hs, first, last, core.DescribeEntries(got))
	}
	if _, err := Open(dir, Options{}); err == nil {
		t.Fatal("second open succeeded")
	}
	if err := l.SetSnapshot(core.SnapshotMeta{Index: 9, ConfState: core.ConfState{Voters: []core.NodeID{1, 2, 3}}}); err != nil {
		t.Fatal(err)
	}
	if err := l.Compact(7); err != nil {
		t.Fatal(err)
	}
	if tm, err := l.Term(7); err != nil || tm != 1 {
		t.Fatalf("term 7: %d %v", tm, err)
	}
	if err := l.Save(core.Ready{Snapshot: core.Snapshot{Meta: core.SnapshotMeta{Index: 20, Term: 3}}}); err != nil {
		t.Fatal(err)
	}
	first, _ = l.FirstIndex()
	last, _ = l.LastIndex()
	if first != 21 || last != 20 {
		t.Fatalf("after snapshot install: first %d last %d", first, last)
	}
	if err := l.Save(core.Ready{Entries: ents(21, 22, 3)}); err != nil {
		t.Fatal(err)
	}
	l.Close()
	l, err = Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	first, _ = l.FirstIndex()
	last, _ = l.LastIndex()
	tm, _ := l.Term(20)
	if first != 21 || last != 22 || tm != 3 {
		t.Fatalf("reopened: first %d last %d term(20) %d", first, last, tm)
	}
}

func TestSetIdentity(t *testing.T) {
	dir := t.TempDir()
	l, err := Open(dir, Options{NodeID: 4})
	if err != nil {
		t.Fatal(err)
	}
	if c, n := l.Identity(); c != 0 || n != 4 {
		t.Fatalf("identity %x %d", c, n)
	}
	if err := l.SetIdentity(0xabc, 4); err != nil {
		t.Fatal(err)
	}
	if err := l.SetIdentity(0xabc, 4); err != nil {
		t.Fatalf("setting the same identity again: %v", err)
	}
	if err := l.SetIdentity(0xdef, 4); !errors.Is(err, ErrIdentity) {
		t.Fatalf("changing the cluster: %v, want ErrIdentity", err)
	}
	l.Close()
	if _, err := Open(dir, Options{ClusterID: 0xdef, NodeID: 4}); !errors.Is(err, ErrIdentity) {
		t.Fatalf("reopening as another cluster: %v, want ErrIdentity", err)
	}
	l, err = Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if c, n := l.Identity(); c != 0xabc || n != 4 {
		t.Fatalf("identity after reopening: %x %d", c, n)
	}
}
