package node

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"io"
	"slices"

	"github.com/stepraft/stepraft/core"
)

// The simulator's disk: a log store and a snapshot store in memory that
// model what the wal and the snapshotter keep through a crash. The wal's
// own tests (crash, power-loss and fuzz) show that its files come back as
// this logical model says; here the model lets thousands of crashes run
// in seconds.
//
// Under SyncEachBatch everything a Save writes is fsynced before it
// returns, except a change of the commit index alone, which the wal
// writes lazily: a crash may take it back. A crash during a Save (the
// "torn last write") keeps a prefix of its work in the wal's order: the
// snapshot record, the suffix truncation, a prefix of the entries; the
// hard state is written last and is lost.

// errCrash is what a store returns once its node has crashed.
var errCrash = errors.New("simulated crash")

// simLog is a LogStore on the simulated disk. It survives its node's
// crashes: crash takes it back to what was durable, and the next
// incarnation opens the same value.
type simLog struct {
	hs         core.HardState
	durableHS  core.HardState // what a crash leaves of hs
	snap       core.SnapshotMeta
	compactIdx core.Index
	compactT   core.Term
	ents       []core.Entry // ents[i].Index == compactIdx+1+i

	// tearNext makes the next Save crash half-way: the node has sent its
	// early messages and dies while writing.
	tearNext bool
	// tear picks how many of a torn Save's entries reach the disk.
	tear func(n int) int
	down bool // crashed: every call fails until reopened
}

func (s *simLog) last() core.Index { return s.compactIdx + core.Index(len(s.ents)) }

// crash takes the store back to what was durable.
func (s *simLog) crash() {
	s.hs = s.durableHS
	s.tearNext = false
	s.down = true
}

// reopen is the store as the next incarnation opens it.
func (s *simLog) reopen() *simLog {
	s.down = false
	return s
}

func (s *simLog) InitialState() (core.HardState, core.ConfState, error) {
	if s.down {
		return core.HardState{}, core.ConfState{}, errCrash
	}
	return s.hs, s.snap.ConfState, nil
}

func (s *simLog) Entries(lo, hi core.Index, maxBytes uint64) ([]core.Entry, error) {
	switch {
	case s.down:
		return nil, errCrash
	case lo <= s.compactIdx:
		return nil, core.ErrCompacted
	case hi > s.last()+1 || lo > hi:
		return nil, core.ErrUnavailable
	}
	ents := s.ents[lo-s.compactIdx-1 : hi-s.compactIdx-1]
	var size uint64
	for i := range ents {
		size += uint64(len(ents[i].Data))
		if i > 0 && size > maxBytes {
			ents = ents[:i]
			break
		}
	}
	return slices.Clip(ents), nil
}

func (s *simLog) Term(i core.Index) (core.Term, error) {
	switch {
	case s.down:
		return 0, errCrash
	case i < s.compactIdx:
		return 0, core.ErrCompacted
	case i == s.compactIdx:
		return s.compactT, nil
	case i > s.last():
		return 0, core.ErrUnavailable
	}
	return s.ents[i-s.compactIdx-1].Term, nil
}

func (s *simLog) LastIndex() (core.Index, error) {
	if s.down {
		return 0, errCrash
	}
	return s.last(), nil
}

func (s *simLog) FirstIndex() (core.Index, error) {
	if s.down {
		return 0, errCrash
	}
	return s.compactIdx + 1, nil
}

func (s *simLog) Snapshot() (core.Snapshot, error) {
	if s.down {
		return core.Snapshot{}, errCrash
	}
	return core.Snapshot{Meta: s.snap}, nil
}

func (s *simLog) Save(rd core.Ready) error {
	if s.down {
		return errCrash
	}
	// The write torn is one that carries entries or a snapshot.
	torn := s.tearNext && (len(rd.Entries) > 0 || !rd.Snapshot.IsEmpty())
	if !rd.Snapshot.IsEmpty() {
		if err := s.installSnapshot(rd.Snapshot.Meta); err != nil {
			return err
		}
	}
	if len(rd.Entries) > 0 {
		ents := rd.Entries
		if torn {
			ents = ents[:s.tear(len(ents))]
		}
		if err := s.append(ents); err != nil {
			return err
		}
	}
	if torn {
		s.crash()
		return errCrash
	}
	if hs := rd.HardState; !hs.IsEmpty() {
		s.hs = hs
		if hs.Term != s.durableHS.Term || hs.Vote != s.durableHS.Vote {
			s.durableHS = hs // written with an fsync; a commit alone is not
		}
	}
	return nil
}

func (s *simLog) installSnapshot(m core.SnapshotMeta) error {
	if m.Index <= s.snap.Index {
		return fmt.Errorf("simlog: snapshot at %d is not past the one at %d", m.Index, s.snap.Index)
	}
	keep := m.Index > s.compactIdx && m.Index <= s.last() && s.ents[m.Index-s.compactIdx-1].Term == m.Term
	s.snap = m
	s.hs.Commit = max(s.hs.Commit, m.Index)
	s.durableHS.Commit = max(s.durableHS.Commit, m.Index)
	if keep {
		s.ents = s.ents[m.Index-s.compactIdx:]
	} else {
		s.ents = nil
	}
	s.compactIdx, s.compactT = m.Index, m.Term
	return nil
}

func (s *simLog) append(ents []core.Entry) error {
	if len(ents) == 0 {
		return nil
	}
	first := ents[0].Index
	if first <= s.compactIdx {
		k := int(s.compactIdx + 1 - first)
		if k >= len(ents) {
			return nil
		}
		ents, first = ents[k:], s.compactIdx+1
	}
	if first > s.last()+1 {
		return fmt.Errorf("simlog: entries from %d leave a gap after %d", first, s.last())
	}
	if first <= s.last() {
		// Replace a suffix; core may still hold slices of the old array.
		s.ents = slices.Clone(s.ents[:first-s.compactIdx-1])
	}
	s.ents = append(s.ents, ents...)
	return nil
}

func (s *simLog) SetSnapshot(m core.SnapshotMeta) error {
	if s.down {
		return errCrash
	}
	if m.Index <= s.snap.Index || m.Index <= s.compactIdx || m.Index > s.last() {
		return fmt.Errorf("simlog: snapshot at %d: recorded %d, log (%d, %d]", m.Index, s.snap.Index, s.compactIdx, s.last())
	}
	m.Term = s.ents[m.Index-s.compactIdx-1].Term
	s.snap = m
	s.durableHS = s.hs // a metadata write carries the lazy commit index
	return nil
}

func (s *simLog) Compact(i core.Index) error {
	switch {
	case s.down:
		return errCrash
	case i <= s.compactIdx:
		return core.ErrCompacted
	case i > s.snap.Index || i > s.last():
		return fmt.Errorf("simlog: compact %d past the snapshot at %d", i, s.snap.Index)
	}
	s.compactT = s.ents[i-s.compactIdx-1].Term
	s.ents = s.ents[i-s.compactIdx:]
	s.compactIdx = i
	s.durableHS = s.hs
	return nil
}

func (s *simLog) Close() error { return nil }

// simSnaps is a SnapshotStore on the simulated disk. A snapshot is
// durable once committed (the snapshotter fsyncs the file, renames it and
// fsyncs the directory); one being written when the node crashes is lost.
type simSnaps struct {
	keep  int
	snaps []*simSnap // oldest first
	epoch int        // moves at each crash; sinks of an older epoch fail
}

type simSnap struct {
	info    SnapshotInfo
	body    []byte
	damaged bool // a bit flipped: it no longer verifies
}

type simSink struct {
	s     *simSnaps
	info  SnapshotInfo
	epoch int
	buf   bytes.Buffer
}

func (k *simSink) Write(p []byte) (int, error) { return k.buf.Write(p) }
func (k *simSink) Abort() error                { return nil }

func (k *simSink) Commit() error {
	s := k.s
	if k.epoch != s.epoch {
		return errCrash
	}
	k.info.Size = int64(k.buf.Len())
	s.snaps = slices.DeleteFunc(s.snaps, func(x *simSnap) bool { return x.info.Meta.Index == k.info.Meta.Index })
	s.snaps = append(s.snaps, &simSnap{info: k.info, body: k.buf.Bytes()})
	slices.SortFunc(s.snaps, func(a, b *simSnap) int { return cmp.Compare(a.info.Meta.Index, b.info.Meta.Index) })
	if len(s.snaps) > s.keep {
		s.snaps = slices.Clone(s.snaps[len(s.snaps)-s.keep:])
	}
	return nil
}

func (s *simSnaps) crash() { s.epoch++ }

func (s *simSnaps) Create(info SnapshotInfo) (SnapshotSink, error) {
	return &simSink{s: s, info: info, epoch: s.epoch}, nil
}

func (s *simSnaps) open(x *simSnap) (SnapshotInfo, io.ReadCloser, error) {
	return x.info, io.NopCloser(bytes.NewReader(x.body)), nil
}

func (s *simSnaps) Load() (SnapshotInfo, io.ReadCloser, error) {
	for i := len(s.snaps) - 1; i >= 0; i-- {
		if !s.snaps[i].damaged {
			return s.open(s.snaps[i])
		}
	}
	return SnapshotInfo{}, nil, fmt.Errorf("%w: none verifies", ErrNoSnapshot)
}

func (s *simSnaps) Open(index core.Index, term core.Term) (SnapshotInfo, io.ReadCloser, error) {
	for _, x := range s.snaps {
		if x.info.Meta.Index == index && x.info.Meta.Term == term && !x.damaged {
			return s.open(x)
		}
	}
	return SnapshotInfo{}, nil, fmt.Errorf("%w: %d/%d", ErrNoSnapshot, term, index)
}

func (s *simSnaps) List() ([]SnapshotInfo, error) {
	out := make([]SnapshotInfo, 0, len(s.snaps))
	for i := len(s.snaps) - 1; i >= 0; i-- {
		out = append(out, s.snaps[i].info)
	}
	return out, nil
}

func (s *simSnaps) Close() error { return nil }
