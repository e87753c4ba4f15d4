package wal

// Fail-stop: after a write fails, every later write returns ErrFailed
// until the log is reopened, and the reopened log holds what was
// acknowledged. Failures are made from outside wal.go: the metadata file
// closed under the log, or the entry directory moved away so that the next
// segment cannot be created.

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/stepraft/stepraft/core"
)

// checkRefusesWrites fails t unless every write returns ErrFailed.
func checkRefusesWrites(t *testing.T, l *Log, next core.Index) {
	t.Helper()
	conf := core.ConfState{Voters: []core.NodeID{1}}
	for name, write := range map[string]func() error{
		"Save of the next entry": func() error { return l.Save(core.Ready{Entries: ents(next, next, 9)}) },
		"Save of a hard state":   func() error { return l.Save(core.Ready{HardState: core.HardState{Term: 9, Vote: 2}}) },
		"Save of a snapshot": func() error {
			return l.Save(core.Ready{Snapshot: core.Snapshot{Meta: core.SnapshotMeta{Index: 500, Term: 9}}})
		},
		"ApplySnapshot":            func() error { return l.ApplySnapshot(core.SnapshotMeta{Index: 500, Term: 9, ConfState: conf}) },
		"SetSnapshot":              func() error { return l.SetSnapshot(core.SnapshotMeta{Index: 2, ConfState: conf}) },
		"Compact":                  func() error { return l.Compact(1) },
		"Sync":                     l.Sync,
		"Save retrying the failed": func() error { return l.Save(core.Ready{Entries: ents(next-1, next, 9)}) },
	} {
		if err := write(); !errors.Is(err, ErrFailed) {
			t.Errorf("%s after a failed write: %v, want ErrFailed", name, err)
		}
	}
}

// TestFailStopMetaWrite closes the metadata file under the log: the next
// hard-state write fails, and the log refuses every write until reopened.
// The entries of the failed Save were synced before its metadata write and
// survive; the hard state it failed to write does not.
func TestFailStopMetaWrite(t *testing.T) {
	dir := scratchDir(t)
	l, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	hs := core.HardState{Term: 1, Vote: 1}
	if err := l.Save(core.Ready{Entries: ents(1, 5, 1), HardState: hs}); err != nil {
		t.Fatal(err)
	}
	if err := l.meta.f.Close(); err != nil { // the next metadata write fails
		t.Fatal(err)
	}
	err = l.Save(core.Ready{Entries: ents(6, 8, 2), HardState: core.HardState{Term: 2, Vote: 2, Commit: 3}})
	if err == nil {
		t.Fatal("save with a closed metadata file succeeded")
	}
	checkRefusesWrites(t, l, 9)
	if got, err := l.Entries(1, 9, 1<<20); err != nil || len(got) != 8 {
		t.Fatalf("reads after the failure: %d entries, %v", len(got), err)
	}
	_ = l.Close() // reports the closed file; must still release the directory
	st, err := openAndRead(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	checkEntries(t, "reopened", st.ents, append(ents(1, 5, 1), ents(6, 8, 2)...))
	if st.hard != hs {
		t.Fatalf("reopened: hard state %+v, want %+v (the failed write never happened)", st.hard, hs)
	}
	l, err = Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if err := l.Save(core.Ready{Entries: ents(9, 9, 2), HardState: core.HardState{Term: 2, Vote: 2}}); err != nil {
		t.Fatalf("save after reopen: %v", err)
	}
}

// TestFailStopSegmentRoll moves the entry directory away while the log is
// open: appends to the open tail segment still work, but the segment roll
// cannot create the next file. From then on every write returns ErrFailed;
// once the directory is back, the reopened log holds every acknowledged
// entry (and perhaps the part of the failed batch written before the
// roll), each whole.
func TestFailStopSegmentRoll(t *testing.T) {
	dir := scratchDir(t)
	opts := crashOpts()
	l, err := Open(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Save(core.Ready{Entries: ents(1, 3, 1), HardState: core.HardState{Term: 1, Vote: 1}}); err != nil {
		t.Fatal(err)
	}
	entries, away := filepath.Join(dir, entriesDir), filepath.Join(dir, "entries.away")
	if err := os.Rename(entries, away); err != nil {
		t.Fatal(err)
	}
	acked := core.Index(3)
	for acked < 1000 {
		if err = l.Save(core.Ready{Entries: ents(acked+1, acked+3, 1)}); err != nil {
			break
		}
		acked += 3
	}
	if err == nil {
		t.Fatal("no save failed in 1000 entries")
	}
	t.Logf("save of %d..%d failed: %v", acked+1, acked+3, err)
	checkRefusesWrites(t, l, acked+4)
	_ = l.Close()
	if err := os.Rename(away, entries); err != nil {
		t.Fatal(err)
	}
	st, err := openAndRead(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	if st.last < acked || st.last > acked+3 {
		t.Fatalf("reopened: last %d, want %d acknowledged and at most the failed batch", st.last, acked)
	}
	checkEntries(t, "reopened", st.ents, ents(1, st.last, 1))
	l, err = Open(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if err := l.Save(core.Ready{Entries: ents(st.last+1, st.last+3, 1)}); err != nil {
		t.Fatalf("save after reopen: %v", err)
	}
}

// TestInvalidRequestDoesNotFail: a request refused before anything is
// written (a gap, a stale snapshot) leaves the log usable.
func TestInvalidRequestDoesNotFail(t *testing.T) {
	l, err := Open(scratchDir(t), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if err := l.Save(core.Ready{Entries: ents(1, 3, 1)}); err != nil {
		t.Fatal(err)
	}
	if err := l.Save(core.Ready{Entries: ents(5, 6, 1)}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("save with a gap: %v, want ErrInvalid", err)
	}
	if err := l.SetSnapshot(core.SnapshotMeta{Index: 9}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("snapshot past the log: %v, want ErrInvalid", err)
	}
	if err := l.Save(core.Ready{Entries: ents(4, 4, 1)}); err != nil {
		t.Fatalf("save after refused requests: %v", err)
	}
}
