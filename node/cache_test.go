package node

import (
	"bytes"
	"testing"

	"github.com/stepraft/stepraft/core"
)

// cacheEntries returns entries lo..hi of term t, each with size bytes of
// data that name it.
func cacheEntries(lo, hi core.Index, t core.Term, size int) []core.Entry {
	var ents []core.Entry
	for i := lo; i <= hi; i++ {
		d := bytes.Repeat([]byte{byte(i), byte(t)}, size/2)
		ents = append(ents, core.Entry{Index: i, Term: t, Data: d})
	}
	return ents
}

// checkEntries fails unless got holds entries lo.. of term t as
// cacheEntries made them.
func checkEntries(t *testing.T, what string, got []core.Entry, lo core.Index, term core.Term, size int) {
	t.Helper()
	for k, e := range got {
		i := lo + core.Index(k)
		want := bytes.Repeat([]byte{byte(i), byte(term)}, size/2)
		if e.Index != i || e.Term != term || !bytes.Equal(e.Data, want) {
			t.Fatalf("%s: entry %d is now index %d term %d with %d bytes, want index %d term %d", what, k, e.Index, e.Term, len(e.Data), i, term)
		}
	}
}

// The entries the cache hands out go to the transport's queues and to the
// apply goroutine; whatever the cache does next must not change them.
func TestCacheNeverChangesEntriesItHandedOut(t *testing.T) {
	const size = 16 << 10
	s := &coreStorage{known: true, first: 1}
	s.written(core.Ready{Entries: cacheEntries(1, 50, 1, size)})
	old, err := s.Entries(1, 51, 1<<30)
	if err != nil || len(old) != 50 {
		t.Fatalf("Entries(1, 51): %d entries, %v", len(old), err)
	}
	// Past the bound: the oldest are dropped. Before each write, the
	// oldest cached entries are handed out too.
	type handed struct {
		lo   core.Index
		ents []core.Entry
	}
	var hs []handed
	for lo := core.Index(51); lo < 400; lo += 10 {
		first := s.ents[0].Index
		h, err := s.Entries(first, first+10, 1<<30)
		if err != nil || len(h) != 10 {
			t.Fatalf("Entries(%d, %d): %d entries, %v", first, first+10, len(h), err)
		}
		hs = append(hs, handed{first, h})
		s.written(core.Ready{Entries: cacheEntries(lo, lo+9, 1, size)})
	}
	if s.bytes > entryCacheBytes {
		t.Fatalf("cache holds %d bytes, bound %d", s.bytes, entryCacheBytes)
	}
	if _, ok := s.cached(1); ok {
		t.Fatal("entry 1 still cached after 400 entries of 16 KiB")
	}
	checkEntries(t, "after drops", old, 1, 1, size)
	for _, h := range hs {
		checkEntries(t, "after drops", h.ents, h.lo, 1, size)
	}

	// A conflicting suffix replaced: what was handed out stays as it was.
	tail, err := s.Entries(390, 400, 1<<30)
	if err != nil || len(tail) != 10 {
		t.Fatalf("Entries(390, 400): %d entries, %v", len(tail), err)
	}
	s.written(core.Ready{Entries: cacheEntries(390, 395, 2, size)})
	checkEntries(t, "after a truncation", tail, 390, 1, size)
	now, err := s.Entries(390, 396, 1<<30)
	if err != nil {
		t.Fatal(err)
	}
	checkEntries(t, "the new suffix", now, 390, 2, size)
	if _, ok := s.cached(396); ok {
		t.Fatal("entry 396 cached after the log was cut at 395")
	}
}
