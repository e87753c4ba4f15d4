package wal

// Golden files: logs written once with a known history, one per record
// format version, and checked in. Opening each must give back every value,
// so a change to the record or metadata format that would strand existing
// logs fails here; and each version's records must be byte for byte what
// that version's encoder makes (today's writer for the current version).
//
// Regenerate the current version's directory (only for a new format
// version: add a directory, keep the old ones) with
//
//	go test ./wal -run TestGolden -update

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/stepraft/stepraft/core"
)

var updateGolden = flag.Bool("update", false, "rewrite the current format version's golden log from its generator")

// goldenLogs are the checked-in logs, the current format version last.
var goldenLogs = []struct {
	dir    string
	encode func([]byte, *core.Entry) []byte
}{
	{"testdata/golden-v1", appendRecordV1}, // metadata version 1, records version 1
	{"testdata/golden-v2", appendRecord},   // metadata version 1, records version 2
}

const (
	goldenCluster = 0x5eed
	goldenNode    = 2
)

var (
	goldenConfFirst = core.ConfState{Voters: []core.NodeID{1, 2, 3}}
	goldenConf      = core.ConfState{Voters: []core.NodeID{1, 2, 3, 4}, Learners: []core.NodeID{5}}
	goldenHard      = core.HardState{Term: 3, Vote: 2, Commit: 75}
	goldenSnap      = core.SnapshotMeta{Index: 70, Term: 3, ConfState: goldenConf}
)

// goldenEntry is entry i of the golden history, in term t: conf changes
// at 2 and 72, the others normal.
func goldenEntry(i core.Index, t core.Term) core.Entry {
	switch i {
	case 2:
		cc := core.ConfChange{Changes: []core.ConfChangeSingle{{Type: core.ConfChangeAddNode, NodeID: 2}}}
		return core.Entry{Index: i, Term: t, Type: core.EntryConfChange, Data: cc.Marshal()}
	case 72:
		cc := core.ConfChange{Changes: []core.ConfChangeSingle{{Type: core.ConfChangeAddLearner, NodeID: 6}}, Context: []byte("10.0.0.6:7000")}
		return core.Entry{Index: i, Term: t, Type: core.EntryConfChange, Data: cc.Marshal()}
	case 77:
		return core.Entry{Index: i, Term: t, Type: core.EntryNormal} // empty, as a new leader's
	}
	return core.Entry{Index: i, Term: t, Type: core.EntryNormal, Data: []byte(fmt.Sprintf("golden entry %d", i))}
}

func goldenEntries(from, to core.Index, t core.Term) []core.Entry {
	var out []core.Entry
	for i := from; i <= to; i++ {
		out = append(out, goldenEntry(i, t))
	}
	return out
}

// writeGolden writes the golden history into dir: entries over several
// 128-byte segments, a conf change, hard states, a snapshot recorded and
// the log compacted, a snapshot installed past the log (which empties
// it), more entries, and a second snapshot and compaction. It leaves
// entries 66..80 (term 3), compacted at 65, snapshot at 70.
func writeGolden(t *testing.T, dir string) {
	l, err := Open(dir, Options{SegmentSize: 128, ClusterID: goldenCluster, NodeID: goldenNode})
	if err != nil {
		t.Fatal(err)
	}
	for _, step := range []func() error{
		func() error {
			return l.Save(core.Ready{Entries: goldenEntries(1, 24, 1), HardState: core.HardState{Term: 1, Vote: 1, Commit: 20}})
		},
		func() error {
			return l.Save(core.Ready{Entries: goldenEntries(25, 40, 2), HardState: core.HardState{Term: 2, Vote: 2, Commit: 35}})
		},
		func() error { return l.SetSnapshot(core.SnapshotMeta{Index: 12, ConfState: goldenConfFirst}) },
		func() error { return l.Compact(10) },
		func() error { return l.ApplySnapshot(core.SnapshotMeta{Index: 50, Term: 3, ConfState: goldenConf}) },
		func() error { return l.Save(core.Ready{Entries: goldenEntries(51, 80, 3), HardState: goldenHard}) },
		func() error { return l.SetSnapshot(core.SnapshotMeta{Index: 70, ConfState: goldenConf}) },
		func() error { return l.Compact(65) },
	} {
		if err := step(); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestGolden opens a copy of each golden log and checks every value of its
// history, that each record is byte for byte what its version's encoder
// makes, both metadata slots, and that the old log takes new entries (of
// the current version, after the old ones in the same segment).
func TestGolden(t *testing.T) {
	if *updateGolden {
		current := goldenLogs[len(goldenLogs)-1].dir
		tmp := t.TempDir()
		writeGolden(t, tmp)
		if err := os.RemoveAll(current); err != nil {
			t.Fatal(err)
		}
		if err := os.Remove(filepath.Join(tmp, lockFile)); err != nil {
			t.Fatal(err)
		}
		copyTree(t, tmp, current)
		t.Logf("rewrote %s", current)
	}
	for _, g := range goldenLogs {
		t.Run(filepath.Base(g.dir), func(t *testing.T) { checkGolden(t, g.dir, g.encode) })
	}
}

func checkGolden(t *testing.T, goldenDir string, encode func([]byte, *core.Entry) []byte) {
	dir := t.TempDir()
	copyTree(t, goldenDir, dir)

	// The records, byte for byte.
	segs := segmentFiles(t, dir)
	if len(segs) < 3 || segs[0].first != 66 {
		t.Fatalf("%d segments from %v, want several from 66", len(segs), segs)
	}
	next := core.Index(66)
	for _, s := range segs {
		if s.first != next {
			t.Fatalf("segment %s starts at %d, want %d", s.path, s.first, next)
		}
		data := mustRead(t, s.path)
		spans, ok := parseSegment(data)
		if !ok {
			t.Fatalf("segment %s does not split into records", s.path)
		}
		for _, sp := range spans {
			want := goldenEntry(next, 3)
			if rec := data[sp.body:sp.end]; !bytes.Equal(rec, encode(nil, &want)) {
				t.Fatalf("record of entry %d is %x, the encoder makes %x", next, rec, encode(nil, &want))
			}
			next++
		}
	}
	if next != 81 {
		t.Fatalf("records up to %d, want 80", next-1)
	}

	// The metadata slots: the newest holds the final state.
	b := mustRead(t, filepath.Join(dir, metaFile))
	var slots []meta
	for i := range 2 {
		m, err := decodeMeta(b[i*metaSlotSize : min(len(b), (i+1)*metaSlotSize)])
		if err != nil {
			t.Fatalf("slot %d: %v", i, err)
		}
		slots = append(slots, m)
	}
	newest := slices.MaxFunc(slots, func(a, b meta) int { return int(a.seq) - int(b.seq) })
	if newest.clusterID != goldenCluster || newest.nodeID != goldenNode || newest.hard != goldenHard ||
		newest.snap.Index != goldenSnap.Index || newest.snap.Term != goldenSnap.Term || !sameConf(newest.snap.ConfState, goldenConf) ||
		newest.compactIndex != 65 || newest.compactTerm != 3 {
		t.Fatalf("newest metadata slot %+v", newest)
	}

	// What Open gives back.
	l, err := Open(dir, Options{ClusterID: goldenCluster, NodeID: goldenNode})
	if err != nil {
		t.Fatal(err)
	}
	st, err := readState(l)
	if err != nil {
		t.Fatal(err)
	}
	if st.first != 66 || st.last != 80 || st.edgeTerm != 3 {
		t.Fatalf("log [%d, %d], term(65) %d; want [66, 80], 3", st.first, st.last, st.edgeTerm)
	}
	checkEntries(t, "golden", st.ents, goldenEntries(66, 80, 3))
	if st.hard != goldenHard || !sameConf(st.conf, goldenConf) {
		t.Fatalf("initial state %+v %+v, want %+v %+v", st.hard, st.conf, goldenHard, goldenConf)
	}
	if st.snap.Index != goldenSnap.Index || st.snap.Term != goldenSnap.Term || !sameConf(st.snap.ConfState, goldenConf) {
		t.Fatalf("snapshot %+v, want %+v", st.snap, goldenSnap)
	}
	if c, n := l.Identity(); c != goldenCluster || n != goldenNode {
		t.Fatalf("identity %x %d", c, n)
	}
	for i := core.Index(66); i <= 80; i++ {
		if tm, err := l.Term(i); err != nil || tm != 3 {
			t.Fatalf("term(%d) = %d, %v", i, tm, err)
		}
	}
	if _, err := l.Term(64); err == nil {
		t.Fatal("term(64) answered on a log compacted at 65")
	}
	// The old log takes new entries, and keeps them.
	more := goldenEntries(81, 83, 4)
	if err := l.Save(core.Ready{Entries: more, HardState: core.HardState{Term: 4, Vote: 2, Commit: 80}}); err != nil {
		t.Fatal(err)
	}
	l.Close()
	st, err = openAndRead(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	checkEntries(t, "golden, appended", st.ents, append(goldenEntries(66, 80, 3), more...))
	if _, err := Open(dir, Options{ClusterID: goldenCluster, NodeID: 3}); err == nil {
		t.Fatal("opened the golden log as another node")
	}
}
