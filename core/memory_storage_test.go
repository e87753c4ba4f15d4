package core_test

import (
	"errors"
	"testing"

	"github.com/stepraft/stepraft/core"
)

// msLog returns a MemoryStorage holding entries 1..len(terms) with the given
// terms, each with 10 bytes of data.
func msLog(t *testing.T, terms ...core.Term) *core.MemoryStorage {
	t.Helper()
	s := core.NewMemoryStorage()
	var ents []core.Entry
	for i, term := range terms {
		ents = append(ents, core.Entry{Term: term, Index: core.Index(i + 1), Type: core.EntryNormal, Data: make([]byte, 10)})
	}
	if err := s.Append(ents); err != nil {
		t.Fatal(err)
	}
	return s
}

// msTerms returns the terms of entries [first, last] of s.
func msTerms(t *testing.T, s *core.MemoryStorage) (first core.Index, terms []core.Term) {
	t.Helper()
	first, err := s.FirstIndex()
	if err != nil {
		t.Fatal(err)
	}
	last, err := s.LastIndex()
	if err != nil {
		t.Fatal(err)
	}
	for i := first; i <= last; i++ {
		term, err := s.Term(i)
		if err != nil {
			t.Fatalf("Term(%d): %v", i, err)
		}
		terms = append(terms, term)
	}
	return first, terms
}

// msCompact snapshots s at i and compacts it there.
func msCompact(t *testing.T, s *core.MemoryStorage, i core.Index) {
	t.Helper()
	if _, err := s.CreateSnapshot(i, nil, nil); err != nil {
		t.Fatal(err)
	}
	if err := s.Compact(i); err != nil {
		t.Fatal(err)
	}
}

func wantTerms(t *testing.T, s *core.MemoryStorage, wantFirst core.Index, want ...core.Term) {
	t.Helper()
	first, terms := msTerms(t, s)
	if first != wantFirst || len(terms) != len(want) {
		t.Fatalf("log from %d with terms %v, want from %d with %v", first, terms, wantFirst, want)
	}
	for i := range want {
		if terms[i] != want[i] {
			t.Fatalf("log from %d with terms %v, want from %d with %v", first, terms, wantFirst, want)
		}
	}
}

func TestMemoryStorageEmpty(t *testing.T) {
	s := core.NewMemoryStorage()
	first, _ := s.FirstIndex()
	last, _ := s.LastIndex()
	if first != 1 || last != 0 {
		t.Fatalf("empty storage: first %d last %d, want 1 and 0", first, last)
	}
	if term, err := s.Term(0); err != nil || term != 0 {
		t.Fatalf("Term(0) = %d, %v", term, err)
	}
	hs, cs, err := s.InitialState()
	if err != nil || !hs.IsEmpty() || len(cs.Voters) != 0 {
		t.Fatalf("InitialState = %+v %+v %v", hs, cs, err)
	}
}

func TestMemoryStorageAppendReplacesConflictingSuffix(t *testing.T) {
	s := msLog(t, 1, 1, 1, 1)
	held, err := s.Entries(1, 5, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Append([]core.Entry{{Term: 2, Index: 3}}); err != nil {
		t.Fatal(err)
	}
	wantTerms(t, s, 1, 1, 1, 2)
	if held[2].Term != 1 || len(held) != 4 {
		t.Fatalf("a slice handed out by Entries changed under its holder: %s", core.DescribeEntries(held))
	}
	// Appending the same entries again changes nothing.
	if err := s.Append([]core.Entry{{Term: 1, Index: 2}, {Term: 2, Index: 3}}); err != nil {
		t.Fatal(err)
	}
	wantTerms(t, s, 1, 1, 1, 2)
	// Following on.
	if err := s.Append([]core.Entry{{Term: 2, Index: 4}, {Term: 3, Index: 5}}); err != nil {
		t.Fatal(err)
	}
	wantTerms(t, s, 1, 1, 1, 2, 2, 3)
}

func TestMemoryStorageAppendRefusesGapsAndDisorder(t *testing.T) {
	s := msLog(t, 1, 1, 1)
	if err := s.Append([]core.Entry{{Term: 1, Index: 5}}); err == nil {
		t.Error("append leaving a gap succeeded")
	}
	if err := s.Append([]core.Entry{{Term: 1, Index: 4}, {Term: 1, Index: 6}}); err == nil {
		t.Error("append of non-contiguous entries succeeded")
	}
	wantTerms(t, s, 1, 1, 1, 1)
}

func TestMemoryStorageAppendIgnoresCompactedPrefix(t *testing.T) {
	s := msLog(t, 1, 1, 1, 1)
	msCompact(t, s, 3)
	if err := s.Append([]core.Entry{{Term: 1, Index: 1}, {Term: 1, Index: 2}}); err != nil {
		t.Fatal(err)
	}
	wantTerms(t, s, 4, 1)
	if err := s.Append([]core.Entry{{Term: 1, Index: 2}, {Term: 1, Index: 3}, {Term: 2, Index: 4}, {Term: 2, Index: 5}}); err != nil {
		t.Fatal(err)
	}
	wantTerms(t, s, 4, 2, 2)
	if term, _ := s.Term(3); term != 1 {
		t.Fatalf("term of the compacted edge 3 = %d, want 1", term)
	}
}

func TestMemoryStorageEntriesBounds(t *testing.T) {
	s := msLog(t, 1, 1, 2, 2, 3)
	msCompact(t, s, 2)
	for _, tc := range []struct {
		lo, hi   core.Index
		maxBytes uint64
		want     int
		err      error
	}{
		{lo: 1, hi: 4, maxBytes: 1 << 20, err: core.ErrCompacted},
		{lo: 2, hi: 4, maxBytes: 1 << 20, err: core.ErrCompacted},
		{lo: 3, hi: 7, maxBytes: 1 << 20, err: core.ErrUnavailable},
		{lo: 3, hi: 6, maxBytes: 1 << 20, want: 3},
		{lo: 3, hi: 6, maxBytes: 20, want: 2},
		{lo: 3, hi: 6, maxBytes: 29, want: 2},
		{lo: 3, hi: 6, maxBytes: 30, want: 3},
		{lo: 3, hi: 6, maxBytes: 0, want: 1}, // always at least one
		{lo: 4, hi: 5, maxBytes: 1 << 20, want: 1},
		{lo: 4, hi: 4, maxBytes: 1 << 20, want: 0},
	} {
		ents, err := s.Entries(tc.lo, tc.hi, tc.maxBytes)
		if tc.err != nil {
			if !errors.Is(err, tc.err) {
				t.Errorf("Entries(%d, %d, %d) error %v, want %v", tc.lo, tc.hi, tc.maxBytes, err, tc.err)
			}
			continue
		}
		if err != nil || len(ents) != tc.want {
			t.Errorf("Entries(%d, %d, %d) = %s, %v; want %d entries", tc.lo, tc.hi, tc.maxBytes, core.DescribeEntries(ents), err, tc.want)
			continue
		}
		for i, e := range ents {
			if e.Index != tc.lo+core.Index(i) {
				t.Errorf("Entries(%d, ...)[%d] has index %d", tc.lo, i, e.Index)
			}
		}
	}
	// What a caller appends to a returned slice never lands in storage.
	ents, _ := s.Entries(3, 5, 1<<20)
	_ = append(ents, core.Entry{Term: 9, Index: 5})
	if term, _ := s.Term(5); term != 3 {
		t.Fatalf("appending to a returned slice changed entry 5 to term %d", term)
	}
}

func TestMemoryStorageTermBounds(t *testing.T) {
	s := msLog(t, 1, 2, 3)
	msCompact(t, s, 2)
	if _, err := s.Term(1); !errors.Is(err, core.ErrCompacted) {
		t.Errorf("Term(1) error %v, want ErrCompacted", err)
	}
	if term, err := s.Term(2); err != nil || term != 2 {
		t.Errorf("Term(2) at the compacted edge = %d, %v; want 2", term, err)
	}
	if _, err := s.Term(4); !errors.Is(err, core.ErrUnavailable) {
		t.Errorf("Term(4) error %v, want ErrUnavailable", err)
	}
}

func TestMemoryStorageCompact(t *testing.T) {
	s := msLog(t, 1, 1, 2, 2, 3)
	if err := s.Compact(3); err == nil {
		t.Fatal("compacting past the snapshot (there is none) succeeded")
	}
	wantTerms(t, s, 1, 1, 1, 2, 2, 3)
	if _, err := s.CreateSnapshot(4, nil, nil); err != nil {
		t.Fatal(err)
	}
	if err := s.Compact(5); err == nil {
		t.Fatal("compacting past the snapshot at 4 succeeded")
	}
	// Entries behind the snapshot may be kept.
	if err := s.Compact(3); err != nil {
		t.Fatal(err)
	}
	wantTerms(t, s, 4, 2, 3)
	if err := s.Compact(3); !errors.Is(err, core.ErrCompacted) {
		t.Errorf("compacting again at 3: %v, want ErrCompacted", err)
	}
	if err := s.Compact(2); !errors.Is(err, core.ErrCompacted) {
		t.Errorf("compacting at 2: %v, want ErrCompacted", err)
	}
	if err := s.Compact(6); !errors.Is(err, core.ErrUnavailable) {
		t.Errorf("compacting past the end: %v, want ErrUnavailable", err)
	}
	msCompact(t, s, 5)
	first, _ := s.FirstIndex()
	last, _ := s.LastIndex()
	if first != 6 || last != 5 {
		t.Fatalf("after compacting everything: first %d last %d, want 6 and 5", first, last)
	}
	if err := s.Append([]core.Entry{{Term: 3, Index: 6}}); err != nil {
		t.Fatalf("append after compacting everything: %v", err)
	}
	wantTerms(t, s, 6, 3)
}

func TestMemoryStorageCreateSnapshot(t *testing.T) {
	s := msLog(t, 1, 1, 2, 2)
	cs := core.ConfState{Voters: []core.NodeID{1, 2, 3}}
	snap, err := s.CreateSnapshot(3, &cs, []byte("state@3"))
	if err != nil {
		t.Fatal(err)
	}
	if snap.Meta.Index != 3 || snap.Meta.Term != 2 || string(snap.Data) != "state@3" {
		t.Fatalf("snapshot %s %q", core.DescribeSnapshotMeta(snap.Meta), snap.Data)
	}
	cs.Voters[0] = 9 // the storage keeps its own copy
	got, _ := s.Snapshot()
	if got.Meta.ConfState.Voters[0] != 1 || got.Meta.Index != 3 {
		t.Fatalf("stored snapshot %s", core.DescribeSnapshotMeta(got.Meta))
	}
	wantTerms(t, s, 1, 1, 1, 2, 2) // creating does not compact

	if _, err := s.CreateSnapshot(3, nil, nil); !errors.Is(err, core.ErrSnapOutOfDate) {
		t.Errorf("snapshot at the same index: %v, want ErrSnapOutOfDate", err)
	}
	if _, err := s.CreateSnapshot(2, nil, nil); !errors.Is(err, core.ErrSnapOutOfDate) {
		t.Errorf("older snapshot: %v, want ErrSnapOutOfDate", err)
	}
	if _, err := s.CreateSnapshot(5, nil, nil); !errors.Is(err, core.ErrUnavailable) {
		t.Errorf("snapshot past the end: %v, want ErrUnavailable", err)
	}
	snap, err = s.CreateSnapshot(4, nil, []byte("state@4"))
	if err != nil {
		t.Fatal(err)
	}
	if len(snap.Meta.ConfState.Voters) != 3 || snap.Meta.Term != 2 {
		t.Fatalf("nil ConfState should keep the configuration: %s", core.DescribeSnapshotMeta(snap.Meta))
	}
	if _, cs, _ := s.InitialState(); len(cs.Voters) != 3 {
		t.Fatalf("InitialState configuration %s", core.DescribeConfState(cs))
	}
}

// Raft Figure 13, rule 7: if the log holds the snapshot's last entry with
// its term, the entries after it are kept; otherwise the whole log goes.
func TestMemoryStorageApplySnapshotKeepsMatchingSuffix(t *testing.T) {
	cs := core.ConfState{Voters: []core.NodeID{1, 2, 3}}
	for _, tc := range []struct {
		name      string
		index     core.Index
		term      core.Term
		wantFirst core.Index
		wantTerms []core.Term
	}{
		{"matching entry keeps suffix", 3, 2, 4, []core.Term{2, 3}},
		{"matching last entry", 5, 3, 6, nil},
		{"term mismatch discards log", 3, 3, 4, nil},
		{"past the end discards log", 8, 4, 9, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := msLog(t, 1, 2, 2, 2, 3)
			snap := core.Snapshot{Meta: core.SnapshotMeta{Index: tc.index, Term: tc.term, ConfState: cs}, Data: []byte("x")}
			if err := s.ApplySnapshot(snap); err != nil {
				t.Fatal(err)
			}
			wantTerms(t, s, tc.wantFirst, tc.wantTerms...)
			if term, err := s.Term(tc.index); err != nil || term != tc.term {
				t.Fatalf("Term(%d) at the snapshot = %d, %v; want %d", tc.index, term, err, tc.term)
			}
			got, _ := s.Snapshot()
			if got.Meta.Index != tc.index || string(got.Data) != "x" {
				t.Fatalf("Snapshot() = %s", core.DescribeSnapshotMeta(got.Meta))
			}
			if _, gotCS, _ := s.InitialState(); len(gotCS.Voters) != 3 {
				t.Fatalf("InitialState configuration %s", core.DescribeConfState(gotCS))
			}
			if err := s.ApplySnapshot(snap); !errors.Is(err, core.ErrSnapOutOfDate) {
				t.Fatalf("applying the same snapshot again: %v, want ErrSnapOutOfDate", err)
			}
		})
	}
}
