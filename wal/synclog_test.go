package wal

import (
	"sync"
	"testing"
	"time"

	"github.com/stepraft/stepraft/core"
)

// TestFirstSaveSyncsNewLogSegmentName: in an empty entry directory
// tidwall/wal creates the first segment file when the log is opened. Like
// a segment created at a roll (TestSaveSyncsNewSegmentNames), its name is
// durable only once the directory is fsynced, so the first Save that makes
// entries in it durable must fsync the directory before it returns, or a
// power cut can take the file, and the acknowledged entries in it, away.
// Found while emulating power cuts of whole kvstore processes with
// POSIX's rules for names (examples/kvstore, TestPowerLoss).
func TestFirstSaveSyncsNewLogSegmentName(t *testing.T) {
	var mu sync.Mutex
	var syncs []string
	prev := testHookSynced
	testHookSynced = func(what string) {
		mu.Lock()
		defer mu.Unlock()
		syncs = append(syncs, what)
	}
	defer func() { testHookSynced = prev }()
	dir := scratchDir(t)
	l, err := Open(dir, crashOpts())
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	mu.Lock()
	syncs = nil
	mu.Unlock()
	if err := l.Save(core.Ready{Entries: ents(1, 3, 1), HardState: core.HardState{Term: 1, Commit: 1}}); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	entries := -1
	for i, what := range syncs {
		if what == "entries" && entries < 0 {
			entries = i
		}
		if what == "dir" && entries >= 0 {
			return
		}
	}
	t.Fatalf("the first Save fsynced %v: no directory after the entries", syncs)
}

// TestSyncedMetaNotPastSyncedEntries: under SyncInterval and SyncNever a
// commit index is kept in memory and carried into the next metadata
// write, and SetSnapshot fsyncs the metadata. The entries must be fsynced
// first, or a power cut leaves a commit index past the entries on disk —
// and a node that waits to replay up to it never finishes starting when no
// member has those entries any more (found with kvstore processes under
// -sync never, TestPowerLoss in examples/kvstore).
func TestSyncedMetaNotPastSyncedEntries(t *testing.T) {
	for _, opts := range []Options{
		{Sync: SyncInterval, SyncInterval: time.Hour},
		{Sync: SyncNever},
	} {
		t.Run(opts.Sync.String(), func(t *testing.T) {
			dir := scratchDir(t)
			pl := startPowerLoss(t, dir)
			l, err := Open(dir, opts)
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			if err := l.Save(core.Ready{Entries: ents(1, 20, 1), HardState: core.HardState{Term: 1, Vote: 1}}); err != nil {
				t.Fatal(err)
			}
			if err := l.Save(core.Ready{Entries: ents(21, 40, 1), HardState: core.HardState{Term: 1, Vote: 1, Commit: 40}}); err != nil {
				t.Fatal(err)
			}
			if err := l.SetSnapshot(core.SnapshotMeta{Index: 30}); err != nil {
				t.Fatal(err)
			}
			st := cutPowerAndOpen(t, pl, opts)
			if st.hard.Commit > st.last {
				t.Fatalf("after a power cut: commit %d past the last entry %d", st.hard.Commit, st.last)
			}
		})
	}
}

// TestOpenMakesEntriesDurable: after a process crash the entries written
// and not yet fsynced are still in the page cache, and Open reads them;
// core takes every entry the log holds as durable (a follower
// acknowledges them to a leader without writing anything), so Open must
// fsync them, as it does the metadata, before a power cut can take them.
func TestOpenMakesEntriesDurable(t *testing.T) {
	dir := scratchDir(t)
	pl := startPowerLoss(t, dir)
	opts := Options{Sync: SyncNever}
	l, err := Open(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Save(core.Ready{Entries: ents(1, 10, 1), HardState: core.HardState{Term: 1, Vote: 1}}); err != nil {
		t.Fatal(err)
	}
	if err := l.Save(core.Ready{Entries: ents(11, 20, 1)}); err != nil {
		t.Fatal(err)
	}
	// The process dies: its lock goes, nothing is synced.
	l.lock.Close()
	l.lock = nil
	defer l.closeFiles()
	l2, err := Open(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer l2.Close()
	if last, _ := l2.LastIndex(); last != 20 {
		t.Fatalf("reopened log ends at %d, want 20", last)
	}
	st := cutPowerAndOpen(t, pl, opts)
	if st.last != 20 {
		t.Fatalf("a power cut after the reopen leaves the log ending at %d; the reopened log held 20", st.last)
	}
}
