package core

// unstable holds what core has accepted but the host has not yet reported
// durable: at most one incoming snapshot and the entries after it (or after
// the storage's last entry).
//
// Invariants: offset is the index of entries[0] (or where it would be);
// if snapshot != nil, offset == snapshot.Meta.Index+1; offsetInProgress is
// in [offset, offset+len(entries)]: entries before it were handed out in a
// Ready whose write is still under way.
type unstable struct {
	snapshot           *Snapshot
	entries            []Entry
	offset             Index
	snapshotInProgress bool
	offsetInProgress   Index
}

func (u *unstable) maybeFirstIndex() (Index, bool) {
	if u.snapshot != nil {
		return u.snapshot.Meta.Index + 1, true
	}
	return 0, false
}

func (u *unstable) maybeLastIndex() (Index, bool) {
	if l := len(u.entries); l != 0 {
		return u.offset + Index(l) - 1, true
	}
	if u.snapshot != nil {
		return u.snapshot.Meta.Index, true
	}
	return 0, false
}

func (u *unstable) maybeTerm(i Index) (Term, bool) {
	if i < u.offset {
		if u.snapshot != nil && u.snapshot.Meta.Index == i {
			return u.snapshot.Meta.Term, true
		}
		return 0, false
	}
	last, ok := u.maybeLastIndex()
	if !ok || i > last {
		return 0, false
	}
	return u.entries[i-u.offset].Term, true
}

// nextEntries returns the entries not yet handed out for persisting.
func (u *unstable) nextEntries() []Entry {
	in := int(u.offsetInProgress - u.offset)
	if in == len(u.entries) {
		return nil
	}
	return u.entries[in:]
}

// nextSnapshot returns the snapshot if it has not yet been handed out.
func (u *unstable) nextSnapshot() *Snapshot {
	if u.snapshot == nil || u.snapshotInProgress {
		return nil
	}
	return u.snapshot
}

// acceptInProgress marks everything currently held as handed out.
func (u *unstable) acceptInProgress() {
	if len(u.entries) > 0 {
		u.offsetInProgress = u.offset + Index(len(u.entries))
	}
	if u.snapshot != nil {
		u.snapshotInProgress = true
	}
}

// stableTo drops the entries up to (i, t) once the host reports them
// durable. If the entry at i has since been replaced by another term, the
// durable one is no longer ours to drop and nothing happens.
func (u *unstable) stableTo(i Index, t Term) {
	gt, ok := u.maybeTerm(i)
	if !ok || gt != t || i < u.offset {
		return
	}
	n := int(i + 1 - u.offset)
	u.entries = u.entries[n:]
	if len(u.entries) == 0 {
		// Let the old array go rather than keep it alive through a
		// zero-length slice.
		u.entries = nil
	}
	u.offset = i + 1
	u.offsetInProgress = max(u.offsetInProgress, u.offset)
}

func (u *unstable) stableSnapTo(i Index) {
	if u.snapshot != nil && u.snapshot.Meta.Index == i {
		u.snapshot = nil
		u.snapshotInProgress = false
	}
}

func (u *unstable) restore(s Snapshot) {
	u.offset = s.Meta.Index + 1
	u.offsetInProgress = u.offset
	u.entries = nil
	u.snapshot = &s
	u.snapshotInProgress = false
}

// truncateAndAppend adds ents, which follow on from the log or replace a
// suffix of it starting at ents[0].Index.
func (u *unstable) truncateAndAppend(ents []Entry) {
	from := ents[0].Index
	switch {
	case from == u.offset+Index(len(u.entries)):
		u.entries = append(u.entries, ents...)
	case from <= u.offset:
		// Everything unstable is replaced; the storage part before from
		// stays and the host's write of ents replaces its suffix.
		u.entries = append([]Entry(nil), ents...)
		u.offset = from
		u.offsetInProgress = u.offset
	default:
		// Keep [offset, from) and replace the rest. Copy, so a Ready that
		// handed out the old slice is not changed under the host.
		keep := u.entries[:from-u.offset]
		u.entries = append(append(make([]Entry, 0, len(keep)+len(ents)), keep...), ents...)
		u.offsetInProgress = min(u.offsetInProgress, from)
	}
}

// slice returns unstable entries [lo, hi); the caller checks the bounds.
func (u *unstable) slice(lo, hi Index) []Entry {
	return u.entries[lo-u.offset : hi-u.offset]
}
