package node

import (
	"unsafe"

	"github.com/stepraft/stepraft/core"
)

// entryCacheBytes bounds the memory the entry cache holds: payloads and
// the entries themselves.
const entryCacheBytes = 1 << 20

// cachedSize is what an entry costs the cache.
func cachedSize(e *core.Entry) int { return len(e.Data) + int(unsafe.Sizeof(*e)) }

// coreStorage is the log store as core reads it. Its snapshot carries the
// member addresses in Data, for MsgSnap. It keeps the newest entries
// written, and the first and last index, in memory: core reads them for
// every batch it sends and applies, and the log store would decode them
// again, and would make core wait for the write under way (which holds the
// store) when the loop writes in the background.
type coreStorage struct {
	LogStore
	l *loop

	// first and last are the store's, as of the last write or snapshot
	// recorded; known is false until they are read.
	first, last Index
	known       bool
	// ents are entries the store holds, contiguous from ents[0].Index up
	// to at most last; bytes is their size (cachedSize).
	//
	// Entries hands out sub-slices of ents, which core passes on to the
	// transport's queues and the apply goroutine: an element of the array
	// is never written again once it may have been handed out. Dropped
	// entries are resliced away, not cleared (dead counts them; the array
	// is replaced once they outnumber the live ones, so they hold at most
	// as much memory again as the bound), and appends after a truncation
	// go to a new array.
	ents  []core.Entry
	bytes int
	dead  int
}

// refresh reads the store's first and last index again. The loop calls it
// when no write is under way: at start, after a snapshot is installed or
// recorded, and after compaction.
func (s *coreStorage) refresh() {
	first, err1 := s.LogStore.FirstIndex()
	last, err2 := s.LogStore.LastIndex()
	s.first, s.last, s.known = first, last, err1 == nil && err2 == nil
	if !s.known || len(s.ents) == 0 {
		return
	}
	// Drop what the store no longer holds at either end.
	if s.ents[0].Index < first {
		s.drop(int(min(first-s.ents[0].Index, Index(len(s.ents)))))
	}
	if n := len(s.ents); n > 0 && s.ents[n-1].Index > last {
		s.truncate(last + 1)
	}
}

// written records the entries of a Ready the store has just written; the
// last index is theirs (the first may have replaced a suffix). After a
// snapshot the store says where its log now starts and ends.
func (s *coreStorage) written(rd core.Ready) {
	if !rd.Snapshot.IsEmpty() {
		s.truncate(0)
		s.refresh()
	}
	if len(rd.Entries) == 0 {
		return
	}
	s.last = rd.Entries[len(rd.Entries)-1].Index
	from := rd.Entries[0].Index
	if n := len(s.ents); n == 0 || from < s.ents[0].Index || from > s.ents[n-1].Index+1 {
		s.truncate(0)
	} else {
		s.truncate(from)
	}
	for i := range rd.Entries {
		s.bytes += cachedSize(&rd.Entries[i])
	}
	if need := len(s.ents) + len(rd.Entries); need > cap(s.ents) {
		// Room for as many again: the cache is a window that moves
		// forward, and append's growth of a quarter at a time would copy
		// the whole window every few writes.
		s.realloc(2*need + 16)
	}
	s.ents = append(s.ents, rd.Entries...)
	if s.bytes > entryCacheBytes {
		k, b := 0, s.bytes
		for k < len(s.ents)-1 && b > entryCacheBytes {
			b -= cachedSize(&s.ents[k])
			k++
		}
		s.drop(k)
	}
}

// truncate drops the cached entries from index i on (all for 0). The
// array keeps them (they may have been handed out); the next append goes
// to a new one.
func (s *coreStorage) truncate(i Index) {
	k := 0
	if len(s.ents) > 0 && i > s.ents[0].Index {
		k = int(min(i-s.ents[0].Index, Index(len(s.ents))))
	}
	if k == len(s.ents) {
		return
	}
	for j := k; j < len(s.ents); j++ {
		s.bytes -= cachedSize(&s.ents[j])
	}
	s.ents = s.ents[:k:k]
}

// drop drops the first k cached entries. The array is replaced when the
// dropped entries it still holds outnumber the live ones, so that it does
// not keep old payloads alive for long.
func (s *coreStorage) drop(k int) {
	for j := 0; j < k; j++ {
		s.bytes -= cachedSize(&s.ents[j])
	}
	s.ents = s.ents[k:]
	if s.dead += k; s.dead > len(s.ents) {
		s.realloc(2*len(s.ents) + 16)
	}
}

// realloc moves the live entries to a new array of capacity c.
func (s *coreStorage) realloc(c int) {
	grown := make([]core.Entry, len(s.ents), max(c, len(s.ents)))
	copy(grown, s.ents)
	s.ents, s.dead = grown, 0
}

// cached returns the position of index i in ents, if cached and held.
func (s *coreStorage) cached(i Index) (int, bool) {
	if !s.known || len(s.ents) == 0 || i < s.first || i > s.last || i < s.ents[0].Index {
		return 0, false
	}
	k := int(i - s.ents[0].Index)
	return k, k < len(s.ents)
}

func (s *coreStorage) Entries(lo, hi Index, maxBytes uint64) ([]core.Entry, error) {
	a, ok1 := s.cached(lo)
	_, ok2 := s.cached(hi - 1)
	if !ok1 || !ok2 || hi <= lo {
		return s.LogStore.Entries(lo, hi, maxBytes)
	}
	// The same cut as the store's: the first entry always, then while the
	// payload stays within maxBytes.
	b, size := a, uint64(0)
	for b < a+int(hi-lo) {
		size += uint64(len(s.ents[b].Data))
		if b > a && size > maxBytes {
			break
		}
		b++
	}
	return s.ents[a:b:b], nil
}

func (s *coreStorage) Term(i Index) (core.Term, error) {
	if k, ok := s.cached(i); ok {
		return s.ents[k].Term, nil
	}
	return s.LogStore.Term(i)
}

func (s *coreStorage) FirstIndex() (Index, error) {
	if s.known {
		return s.first, nil
	}
	return s.LogStore.FirstIndex()
}

func (s *coreStorage) LastIndex() (Index, error) {
	if s.known {
		return s.last, nil
	}
	return s.LogStore.LastIndex()
}

func (s *coreStorage) Snapshot() (core.Snapshot, error) {
	snap, err := s.LogStore.Snapshot()
	if err == nil && snap.Data == nil {
		snap.Data = s.l.snapData[snap.Meta.Index]
	}
	return snap, err
}
