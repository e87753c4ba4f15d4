package core

import (
	"fmt"
	"sync"
)

// Storage is the read-only view of the durable log that core consumes. The
// host writes to it (persisting each Ready) and core reads from it; core
// never writes. An implementation must be safe to read while the host
// writes if the host writes from another goroutine.
//
// Index conventions: entries (FirstIndex()-1, LastIndex()] are in storage,
// and Term(FirstIndex()-1) must still answer with its term. The log is
// compacted at FirstIndex()-1, which is at most the index of the last
// snapshot (0 on an empty log): a host may keep some entries behind its
// snapshot for followers that are only a little behind, but must never
// compact past it, or a follower that needs those entries could never
// catch up.
type Storage interface {
	// InitialState returns the persisted HardState and the configuration
	// in force at the last persisted snapshot.
	InitialState() (HardState, ConfState, error)
	// Entries returns entries [lo, hi), at most maxBytes of payload but
	// always at least one if any is in range. ErrCompacted if lo is at or
	// before the snapshot; ErrUnavailable if hi is past LastIndex()+1.
	Entries(lo, hi Index, maxBytes uint64) ([]Entry, error)
	// Term returns the term of entry i, for i in [FirstIndex()-1, LastIndex()].
	Term(i Index) (Term, error)
	// LastIndex returns the index of the last entry (the snapshot's index
	// if there is no entry after it).
	LastIndex() (Index, error)
	// FirstIndex returns the index of the first entry that may still be
	// read; the entries before it have been compacted into a snapshot.
	FirstIndex() (Index, error)
	// Snapshot returns the most recent snapshot; its index is at least
	// FirstIndex()-1 and at most LastIndex(). ErrUnavailable tells core
	// that a snapshot is being made and it should try again later.
	Snapshot() (Snapshot, error)
}

// MemoryStorage is a Storage held in memory, for tests, simulations and
// hosts that keep their own durability elsewhere. It is safe for
// concurrent use.
type MemoryStorage struct {
	mu        sync.Mutex
	hardState HardState
	snapshot  Snapshot
	// ents[0] is a dummy entry standing at the snapshot's (index, term);
	// ents[i] has index ents[0].Index+i.
	ents []Entry
}

// NewMemoryStorage returns an empty MemoryStorage: no snapshot, no entries,
// a zero HardState.
func NewMemoryStorage() *MemoryStorage {
	return &MemoryStorage{ents: make([]Entry, 1)}
}

// InitialState implements Storage.
func (s *MemoryStorage) InitialState() (HardState, ConfState, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.hardState, cloneConfState(s.snapshot.Meta.ConfState), nil
}

// SetHardState saves the current HardState.
func (s *MemoryStorage) SetHardState(hs HardState) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.hardState = hs
	return nil
}

func (s *MemoryStorage) offset() Index { return s.ents[0].Index }
func (s *MemoryStorage) last() Index   { return s.ents[0].Index + Index(len(s.ents)) - 1 }

// Entries implements Storage.
func (s *MemoryStorage) Entries(lo, hi Index, maxBytes uint64) ([]Entry, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if lo <= s.offset() {
		return nil, ErrCompacted
	}
	if hi > s.last()+1 {
		return nil, fmt.Errorf("entries [%d, %d) past last index %d: %w", lo, hi, s.last(), ErrUnavailable)
	}
	if lo >= hi {
		return nil, nil
	}
	ents := limitSize(s.ents[lo-s.offset():hi-s.offset()], maxBytes)
	// The caller may append to what it gets; never let that write into
	// our backing array.
	return ents[:len(ents):len(ents)], nil
}

// Term implements Storage.
func (s *MemoryStorage) Term(i Index) (Term, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if i < s.offset() {
		return 0, ErrCompacted
	}
	if i > s.last() {
		return 0, ErrUnavailable
	}
	return s.ents[i-s.offset()].Term, nil
}

// LastIndex implements Storage.
func (s *MemoryStorage) LastIndex() (Index, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.last(), nil
}

// FirstIndex implements Storage.
func (s *MemoryStorage) FirstIndex() (Index, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.offset() + 1, nil
}

// Snapshot implements Storage.
func (s *MemoryStorage) Snapshot() (Snapshot, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.snapshot, nil
}

// ApplySnapshot installs snap, replacing the log before it. Entries after
// the snapshot are kept only if the log holds the snapshot's last entry
// with the same term (Raft, Figure 13, rule 7); otherwise the whole log is
// discarded. A snapshot not newer than the current one is refused with
// ErrSnapOutOfDate.
func (s *MemoryStorage) ApplySnapshot(snap Snapshot) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	idx := snap.Meta.Index
	if idx <= s.snapshot.Meta.Index {
		return ErrSnapOutOfDate
	}
	var keep []Entry
	if idx > s.offset() && idx <= s.last() && s.ents[idx-s.offset()].Term == snap.Meta.Term {
		keep = s.ents[idx-s.offset()+1:]
	}
	ents := make([]Entry, 1, 1+len(keep))
	ents[0] = Entry{Index: idx, Term: snap.Meta.Term}
	s.ents = append(ents, keep...)
	snap.Meta.ConfState = cloneConfState(snap.Meta.ConfState)
	s.snapshot = snap
	return nil
}

// CreateSnapshot records a snapshot of the state as of index i (which must
// be in the log) with configuration cs (nil keeps the current one) and
// data. It does not compact; call Compact for that.
func (s *MemoryStorage) CreateSnapshot(i Index, cs *ConfState, data []byte) (Snapshot, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if i <= s.snapshot.Meta.Index {
		return Snapshot{}, ErrSnapOutOfDate
	}
	if i > s.last() {
		return Snapshot{}, fmt.Errorf("snapshot at %d past last index %d: %w", i, s.last(), ErrUnavailable)
	}
	if i < s.offset() {
		return Snapshot{}, ErrCompacted
	}
	s.snapshot.Meta.Index = i
	s.snapshot.Meta.Term = s.ents[i-s.offset()].Term
	if cs != nil {
		s.snapshot.Meta.ConfState = cloneConfState(*cs)
	}
	s.snapshot.Data = data
	return s.snapshot, nil
}

// Compact discards every entry before compactIndex; compactIndex itself
// becomes the dummy entry, so its term is still known. compactIndex must
// not be past the snapshot (CreateSnapshot first): those entries would be
// nowhere else.
func (s *MemoryStorage) Compact(compactIndex Index) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if compactIndex <= s.offset() {
		return ErrCompacted
	}
	if compactIndex > s.last() {
		return fmt.Errorf("compact %d past last index %d: %w", compactIndex, s.last(), ErrUnavailable)
	}
	if compactIndex > s.snapshot.Meta.Index {
		return fmt.Errorf("core: compact %d past the snapshot at %d; create a snapshot first",
			compactIndex, s.snapshot.Meta.Index)
	}
	i := compactIndex - s.offset()
	ents := make([]Entry, 1, Index(len(s.ents))-i)
	ents[0] = Entry{Index: s.ents[i].Index, Term: s.ents[i].Term}
	s.ents = append(ents, s.ents[i+1:]...)
	return nil
}

// Append adds entries to the log. The first entry may be at most
// LastIndex()+1; entries that overlap the log replace it from the first
// overlapping index on (the conflicting suffix is removed). Entries at or
// before the snapshot are ignored.
func (s *MemoryStorage) Append(ents []Entry) error {
	if len(ents) == 0 {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := 1; i < len(ents); i++ {
		if ents[i].Index != ents[i-1].Index+1 {
			return fmt.Errorf("core: append: entry %d follows %d", ents[i].Index, ents[i-1].Index)
		}
	}
	first := s.offset() + 1
	lastNew := ents[len(ents)-1].Index
	if lastNew < first {
		return nil
	}
	if ents[0].Index < first {
		ents = ents[first-ents[0].Index:]
	}
	if ents[0].Index > s.last()+1 {
		return fmt.Errorf("core: append: entry %d leaves a gap after last index %d", ents[0].Index, s.last())
	}
	keep := ents[0].Index - s.offset()
	if keep < Index(len(s.ents)) {
		// Replacing a suffix: copy, so that slices handed out by Entries
		// never see their entries change under them.
		s.ents = append(s.ents[:keep:keep], ents...)
		return nil
	}
	s.ents = append(s.ents, ents...)
	return nil
}

// limitSize returns the longest prefix of ents whose payload fits in
// maxBytes, and at least one entry.
func limitSize(ents []Entry, maxBytes uint64) []Entry {
	if len(ents) == 0 {
		return ents
	}
	size := ents[0].payloadSize()
	for i := 1; i < len(ents); i++ {
		size += ents[i].payloadSize()
		if size > maxBytes {
			return ents[:i]
		}
	}
	return ents
}

func cloneConfState(cs ConfState) ConfState {
	return ConfState{
		Voters:         cloneIDs(cs.Voters),
		Learners:       cloneIDs(cs.Learners),
		VotersOutgoing: cloneIDs(cs.VotersOutgoing),
		LearnersNext:   cloneIDs(cs.LearnersNext),
		AutoLeave:      cs.AutoLeave,
	}
}

// cloneIDs copies ids; an empty list comes back nil.
func cloneIDs(ids []NodeID) []NodeID {
	if len(ids) == 0 {
		return nil
	}
	return append([]NodeID(nil), ids...)
}
