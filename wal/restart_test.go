package wal

// A plain restart, and a snapshot install, on a log longer than the term
// cache (termCacheSize): the terms of old entries are no longer in memory
// and must be read from disk.

import (
	"testing"

	"github.com/stepraft/stepraft/core"
)

// longLog writes entries 1..n of term 1 (no payload) in large batches.
func longLog(t *testing.T, n core.Index) (*Log, string) {
	dir := scratchDir(t)
	l, err := Open(dir, Options{Sync: SyncNever})
	if err != nil {
		t.Fatal(err)
	}
	const batch = 8192
	buf := make([]core.Entry, 0, batch)
	for i := core.Index(1); i <= n; i++ {
		buf = append(buf, core.Entry{Index: i, Term: 1, Type: core.EntryNormal})
		if len(buf) == batch || i == n {
			if err := l.Save(core.Ready{Entries: buf, HardState: core.HardState{Term: 1, Vote: 1, Commit: i}}); err != nil {
				t.Fatal(err)
			}
			buf = buf[:0]
		}
	}
	return l, dir
}

// longLogSize puts entry 10 out of the term cache.
const longLogSize = 2*termCacheSize + 10

// TestReopenKeepsEntriesFarPastTheSnapshot records a snapshot at 10 on a
// log of longLogSize entries, closes and reopens it: every entry must be
// there.
func TestReopenKeepsEntriesFarPastTheSnapshot(t *testing.T) {
	l, dir := longLog(t, longLogSize)
	if err := l.SetSnapshot(core.SnapshotMeta{Index: 10, ConfState: core.ConfState{Voters: []core.NodeID{1}}}); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	l, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	first, _ := l.FirstIndex()
	last, _ := l.LastIndex()
	if first != 1 || last != longLogSize {
		t.Fatalf("reopened: log [%d, %d], want [1, %d]", first, last, longLogSize)
	}
}

// TestApplySnapshotKeepsEntriesFarPastIt installs a snapshot at 10 whose
// term matches entry 10 of a log of longLogSize entries: the entries after
// it must be kept (Raft, Figure 13, rule 6), as they are for a snapshot
// near the end of the log.
func TestApplySnapshotKeepsEntriesFarPastIt(t *testing.T) {
	l, _ := longLog(t, longLogSize)
	defer l.Close()
	if err := l.ApplySnapshot(core.SnapshotMeta{Index: 10, Term: 1}); err != nil {
		t.Fatal(err)
	}
	first, _ := l.FirstIndex()
	last, _ := l.LastIndex()
	if first != 11 || last != longLogSize {
		t.Fatalf("after the install: log [%d, %d], want [11, %d]", first, last, longLogSize)
	}
}

// TestApplySnapshotKeepsEntriesNearIt is the same install with entry 10
// in the cache: the entries after it are kept.
func TestApplySnapshotKeepsEntriesNearIt(t *testing.T) {
	l, _ := longLog(t, 1000)
	defer l.Close()
	if err := l.ApplySnapshot(core.SnapshotMeta{Index: 10, Term: 1}); err != nil {
		t.Fatal(err)
	}
	first, _ := l.FirstIndex()
	last, _ := l.LastIndex()
	if first != 11 || last != 1000 {
		t.Fatalf("after the install: log [%d, %d], want [11, 1000]", first, last)
	}
}
