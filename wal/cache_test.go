package wal

import (
	"bytes"
	"errors"
	"testing"

	"github.com/stepraft/stepraft/core"
)

// TestEntryCacheFollowsTheLog: entries served from memory are those the
// disk holds, after a suffix is replaced, a snapshot resets the log and
// the cache overflows; and they match a fresh read from the disk.
func TestEntryCacheFollowsTheLog(t *testing.T) {
	dir := t.TempDir()
	l, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { l.Close() }()
	ents := func(from, to core.Index, term core.Term, size int) []core.Entry {
		var out []core.Entry
		for i := from; i <= to; i++ {
			out = append(out, core.Entry{Index: i, Term: term, Type: core.EntryNormal,
				Data: bytes.Repeat([]byte{byte(i)}, size)})
		}
		return out
	}
	save := func(rd core.Ready) {
		t.Helper()
		rd.MustSync = true
		if err := l.Save(rd); err != nil {
			t.Fatal(err)
		}
	}
	check := func(lo, hi core.Index, terms ...core.Term) {
		t.Helper()
		got, err := l.Entries(lo, hi, 1<<40)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != len(terms) {
			t.Fatalf("Entries(%d, %d): %d entries, want %d", lo, hi, len(got), len(terms))
		}
		for k, e := range got {
			if e.Index != lo+core.Index(k) || e.Term != terms[k] || !bytes.Equal(e.Data, bytes.Repeat([]byte{byte(e.Index)}, len(e.Data))) {
				t.Fatalf("Entries(%d, %d)[%d] = index %d term %d, want index %d term %d", lo, hi, k, e.Index, e.Term, lo+core.Index(k), terms[k])
			}
			disk, err := l.readLocked(e.Index)
			if err != nil || disk.Term != e.Term || !bytes.Equal(disk.Data, e.Data) {
				t.Fatalf("entry %d: cache term %d, disk term %d (%v)", e.Index, e.Term, disk.Term, err)
			}
		}
	}
	save(core.Ready{HardState: core.HardState{Term: 2, Vote: 1}, Entries: ents(1, 10, 1, 8)})
	check(1, 11, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1)
	// A new leader replaces 5..10 with 5..7.
	save(core.Ready{Entries: ents(5, 7, 2, 8)})
	check(1, 8, 1, 1, 1, 1, 2, 2, 2)
	if _, err := l.Entries(1, 11, 1<<40); !errors.Is(err, core.ErrUnavailable) {
		t.Fatalf("Entries past the new last index: %v", err)
	}
	// A snapshot past the log starts it again after 20.
	save(core.Ready{Snapshot: core.Snapshot{Meta: core.SnapshotMeta{Index: 20, Term: 3, ConfState: core.ConfState{Voters: []core.NodeID{1}}}}})
	if _, err := l.Entries(5, 8, 1<<40); !errors.Is(err, core.ErrCompacted) {
		t.Fatalf("Entries before the snapshot: %v", err)
	}
	save(core.Ready{Entries: ents(21, 25, 3, 8)})
	check(21, 26, 3, 3, 3, 3, 3)
	// More than the cache holds: the oldest come from the disk again.
	big := ents(26, 26+core.Index(2*entryCacheBytes/(64<<10)), 3, 64<<10)
	save(core.Ready{Entries: big})
	if l.cacheBytes > entryCacheBytes {
		t.Fatalf("cache holds %d bytes, bound %d", l.cacheBytes, entryCacheBytes)
	}
	if l.cacheFrom <= 26 {
		t.Fatalf("cache starts at %d: nothing was let go", l.cacheFrom)
	}
	last := big[len(big)-1].Index
	terms := make([]core.Term, last-21+1)
	for k := range terms {
		terms[k] = 3
	}
	check(21, last+1, terms...)
	// maxBytes holds from the cache too: at least one entry, then up to it.
	got, err := l.Entries(last-3, last+1, 100<<10)
	if err != nil || len(got) != 1 {
		t.Fatalf("Entries with maxBytes 100 KiB: %d entries, %v; want 1", len(got), err)
	}
}
