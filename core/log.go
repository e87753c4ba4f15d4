package core

import (
	"errors"
	"fmt"
)

// raftLog is the log as core sees it: the durable part in storage and the
// unstable tail that the host has yet to persist.
//
// Invariants: applied <= committed <= lastIndex(); firstIndex()-1 <= applied.
type raftLog struct {
	storage  Storage
	unstable unstable
	// committed is the highest index known to be committed by a quorum.
	committed Index
	// applying is the highest index handed out in CommittedEntries;
	// applied is the highest whose Ready the host has advanced past.
	applying Index
	applied  Index
	// maxApplyBytes bounds the committed entries handed out per Ready.
	maxApplyBytes uint64
	// durableTo is, while a Ready is outstanding, the last index whose
	// entry earlier writes made durable and that this log still holds:
	// set by Ready, lowered when an append replaces entries at or below it.
	durableTo Index
}

func newLog(storage Storage, maxApplyBytes uint64) (*raftLog, error) {
	first, err := storage.FirstIndex()
	if err != nil {
		return nil, fmt.Errorf("core: storage first index: %w", err)
	}
	last, err := storage.LastIndex()
	if err != nil {
		return nil, fmt.Errorf("core: storage last index: %w", err)
	}
	if first == 0 || last+1 < first {
		return nil, fmt.Errorf("core: storage holds a broken range: first %d, last %d", first, last)
	}
	l := &raftLog{
		storage:       storage,
		unstable:      unstable{offset: last + 1, offsetInProgress: last + 1},
		committed:     first - 1,
		applying:      first - 1,
		applied:       first - 1,
		maxApplyBytes: maxApplyBytes,
	}
	return l, nil
}

func (l *raftLog) String() string {
	return fmt.Sprintf("committed=%d applied=%d unstable.offset=%d len(unstable)=%d",
		l.committed, l.applied, l.unstable.offset, len(l.unstable.entries))
}

func (l *raftLog) firstIndex() Index {
	if i, ok := l.unstable.maybeFirstIndex(); ok {
		return i
	}
	i, err := l.storage.FirstIndex()
	if err != nil {
		panicf("storage FirstIndex failed: %v", err)
	}
	return i
}

func (l *raftLog) lastIndex() Index {
	if i, ok := l.unstable.maybeLastIndex(); ok {
		return i
	}
	i, err := l.storage.LastIndex()
	if err != nil {
		panicf("storage LastIndex failed: %v", err)
	}
	return i
}

func (l *raftLog) lastTerm() Term {
	t, err := l.term(l.lastIndex())
	if err != nil {
		panicf("term of last index %d: %v", l.lastIndex(), err)
	}
	return t
}

// term returns the term of entry i, or ErrCompacted / ErrUnavailable.
func (l *raftLog) term(i Index) (Term, error) {
	if t, ok := l.unstable.maybeTerm(i); ok {
		return t, nil
	}
	if i+1 < l.firstIndex() {
		return 0, ErrCompacted
	}
	if i > l.lastIndex() {
		return 0, ErrUnavailable
	}
	t, err := l.storage.Term(i)
	if err == nil || errors.Is(err, ErrCompacted) || errors.Is(err, ErrUnavailable) {
		return t, err
	}
	panicf("storage Term(%d) failed: %v", i, err)
	return 0, nil
}

// zeroTermOnOutOfRange turns "no such entry" into term 0, which matches no
// real entry.
func zeroTermOnOutOfRange(t Term, err error) Term {
	if err != nil {
		return 0
	}
	return t
}

func (l *raftLog) matchTerm(i Index, t Term) bool {
	lt, err := l.term(i)
	return err == nil && lt == t
}

// isUpToDate reports whether a log ending at (lasti, term) is at least as
// up to date as ours (Raft §5.4.1): a later last term wins, and on equal
// terms the longer log.
func (l *raftLog) isUpToDate(lasti Index, term Term) bool {
	lt := l.lastTerm()
	return term > lt || (term == lt && lasti >= l.lastIndex())
}

// maybeAppend applies the consistency check of an append: if our entry at
// prevIndex has prevTerm, it appends ents (replacing any conflicting
// suffix), commits up to min(committed, the last new index), and returns
// the last new index. The caller answers appends that start below our
// commit without calling it, so a conflict is always past the commit.
func (l *raftLog) maybeAppend(prevIndex Index, prevTerm Term, committed Index, ents []Entry) (Index, bool) {
	if !l.matchTerm(prevIndex, prevTerm) && (mutant != "no_consistency_check" || prevIndex > l.lastIndex()) {
		return 0, false
	}
	lastNew := prevIndex + Index(len(ents))
	if ci := l.findConflict(ents); ci != 0 {
		l.append(ents[ci-(prevIndex+1):]...)
	}
	l.commitTo(min(committed, lastNew))
	return lastNew, true
}

// append adds ents, which start at most at lastIndex()+1, and returns the
// new last index. Callers have checked they do not replace committed ones.
func (l *raftLog) append(ents ...Entry) Index {
	if len(ents) == 0 {
		return l.lastIndex()
	}
	if after := ents[0].Index - 1; after < l.committed {
		panicf("append after %d is below commit %d", after, l.committed)
	}
	l.durableTo = min(l.durableTo, ents[0].Index-1)
	l.unstable.truncateAndAppend(ents)
	return l.lastIndex()
}

// findConflict returns the index of the first entry of ents that is not in
// the log with the same term (a conflict or a new entry), or 0 if all are.
func (l *raftLog) findConflict(ents []Entry) Index {
	for _, e := range ents {
		if mutant == "keep_conflicting_suffix" && e.Index <= l.lastIndex() {
			continue
		}
		if !l.matchTerm(e.Index, e.Term) {
			return e.Index
		}
	}
	return 0
}

// findConflictByTerm returns the largest index <= index whose term is at
// most term, with that term: the follower's best guess at where its log may
// agree with a leader that has term at index. Stops at the compacted edge.
func (l *raftLog) findConflictByTerm(index Index, term Term) (Index, Term) {
	for ; index > 0; index-- {
		t, err := l.term(index)
		if err != nil {
			return index, 0
		}
		if t <= term {
			return index, t
		}
	}
	return 0, 0
}

// slice returns entries [lo, hi) with at most maxBytes of payload (but at
// least one entry).
func (l *raftLog) slice(lo, hi Index, maxBytes uint64) ([]Entry, error) {
	if lo >= hi {
		return nil, nil
	}
	if lo < l.firstIndex() {
		return nil, ErrCompacted
	}
	if hi > l.lastIndex()+1 {
		panicf("slice [%d, %d) past last index %d", lo, hi, l.lastIndex())
	}
	var ents []Entry
	if lo < l.unstable.offset {
		stored, err := l.storage.Entries(lo, min(hi, l.unstable.offset), maxBytes)
		if errors.Is(err, ErrCompacted) {
			return nil, err
		} else if err != nil {
			panicf("storage Entries(%d, %d) failed: %v", lo, min(hi, l.unstable.offset), err)
		}
		if Index(len(stored)) < min(hi, l.unstable.offset)-lo {
			return stored, nil // cut by maxBytes
		}
		ents = stored
	}
	if hi > l.unstable.offset {
		u := l.unstable.slice(max(lo, l.unstable.offset), hi)
		if len(ents) > 0 {
			// Copy: appending to the storage's slice must not write into it.
			ents = append(append(make([]Entry, 0, len(ents)+len(u)), ents...), u...)
		} else {
			ents = u
		}
	}
	return limitSize(ents, maxBytes), nil
}

func (l *raftLog) entries(lo Index, maxBytes uint64) ([]Entry, error) {
	if lo > l.lastIndex() {
		return nil, nil
	}
	return l.slice(lo, l.lastIndex()+1, maxBytes)
}

// commitTo moves the commit index forward to i; it never moves back. The
// caller guarantees i <= lastIndex().
func (l *raftLog) commitTo(i Index) {
	if i <= l.committed {
		return
	}
	if i > l.lastIndex() {
		panicf("commit %d is past last index %d", i, l.lastIndex())
	}
	l.committed = i
}

// hasNextCommittedEnts reports whether committed entries wait to be applied.
func (l *raftLog) hasNextCommittedEnts() bool {
	return l.committed > l.applying && l.applying+1 >= l.firstIndex()
}

// nextCommittedEnts returns the committed entries not yet handed out,
// bounded by maxApplyBytes. Entries the host is persisting in the same
// Ready are included: the contract persists before it applies.
func (l *raftLog) nextCommittedEnts() []Entry { return l.committedEntsTo(l.committed) }

// committedEntsTo returns the committed entries not yet handed out up to
// index hi, bounded by maxApplyBytes.
func (l *raftLog) committedEntsTo(hi Index) []Entry {
	if hi <= l.applying || l.applying+1 < l.firstIndex() {
		return nil
	}
	ents, err := l.slice(l.applying+1, hi+1, l.maxApplyBytes)
	if err != nil {
		panicf("committed entries [%d, %d] unavailable: %v", l.applying+1, hi, err)
	}
	return ents
}

// stableCommitted returns, while a Ready is outstanding, the last
// committed index whose entry earlier writes made durable (the write under
// way does not count), or 0 while an incoming snapshot is not in place.
func (l *raftLog) stableCommitted() Index {
	if l.unstable.snapshot != nil || l.applying+1 < l.firstIndex() {
		return 0
	}
	return min(l.committed, l.durableTo)
}

func (l *raftLog) appliedTo(i Index) {
	if i < l.applied || i > l.committed {
		panicf("applied %d out of range [%d, %d]", i, l.applied, l.committed)
	}
	l.applied = i
}

// restore makes the log start after snapshot s; what was unstable is gone.
func (l *raftLog) restore(s Snapshot) {
	l.committed = s.Meta.Index
	l.unstable.restore(s)
}
