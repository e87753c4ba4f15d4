package core

// Membership changes: changeConf's verdict on every kind of change, the
// same through ApplyConfChange, the ConfChange encoding, and the replay of
// applied changes on restart.

import (
	"bytes"
	"errors"
	"math"
	"reflect"
	"slices"
	"strings"
	"testing"
)

// ccOf builds a ConfChange from its transition and changes.
func ccOf(tr ConfChangeTransition, changes ...ConfChangeSingle) ConfChange {
	return ConfChange{Transition: tr, Changes: changes}
}

func ccAddNode(id NodeID) ConfChangeSingle {
	return ConfChangeSingle{Type: ConfChangeAddNode, NodeID: id}
}

func ccAddLearner(id NodeID) ConfChangeSingle {
	return ConfChangeSingle{Type: ConfChangeAddLearner, NodeID: id}
}

func ccRemoveNode(id NodeID) ConfChangeSingle {
	return ConfChangeSingle{Type: ConfChangeRemoveNode, NodeID: id}
}

// ccCopyConfState deep-copies cs, keeping nil and empty slices apart, so
// that a test can tell whether changeConf modified its input.
func ccCopyConfState(cs ConfState) ConfState {
	return ConfState{
		Voters:         slices.Clone(cs.Voters),
		Learners:       slices.Clone(cs.Learners),
		VotersOutgoing: slices.Clone(cs.VotersOutgoing),
		LearnersNext:   slices.Clone(cs.LearnersNext),
		AutoLeave:      cs.AutoLeave,
	}
}

var (
	ccConfSimple = ConfState{Voters: []NodeID{1, 2, 3}}
	ccConfSingle = ConfState{Voters: []NodeID{1}}
	// ccConfJoint is {1,2,3} being replaced by {2,3,4}, left automatically.
	ccConfJoint = ConfState{Voters: []NodeID{2, 3, 4}, VotersOutgoing: []NodeID{1, 2, 3}, AutoLeave: true}
	// ccConfJointDemote is {1,2,3} in which 3 is being demoted to learner,
	// with learner 4 kept, left explicitly.
	ccConfJointDemote = ConfState{Voters: []NodeID{1, 2}, VotersOutgoing: []NodeID{1, 2, 3},
		Learners: []NodeID{4}, LearnersNext: []NodeID{3}}
)

func TestConfChangeRefused(t *testing.T) {
	for _, tc := range []struct {
		name    string
		cs      ConfState
		cc      ConfChange
		wantErr string
	}{
		{"leave when not joint", ccConfSimple, ConfChange{}, "is not joint"},
		{"leave with context when not joint", ccConfSimple, ConfChange{Context: []byte("bye")}, "is not joint"},
		{"joint transition with no changes", ccConfSimple, ConfChange{Transition: ConfChangeTransitionJointExplicit}, "no changes"},
		{"joint transition with no changes while joint", ccConfJoint, ConfChange{Transition: ConfChangeTransitionJointImplicit}, "no changes"},
		{"add while joint", ccConfJoint, ccOf(ConfChangeTransitionAuto, ccAddNode(5)), "is joint"},
		{"remove while joint", ccConfJoint, ccOf(ConfChangeTransitionAuto, ccRemoveNode(4)), "is joint"},
		{"learner while joint", ccConfJointDemote, ccOf(ConfChangeTransitionAuto, ccAddLearner(5)), "is joint"},
		{"joint implicit while joint", ccConfJoint, ccOf(ConfChangeTransitionJointImplicit, ccAddNode(5)), "is joint"},
		{"joint explicit while joint", ccConfJoint, ccOf(ConfChangeTransitionJointExplicit, ccAddNode(5)), "is joint"},
		{"several changes while joint", ccConfJoint, ccOf(ConfChangeTransitionAuto, ccAddNode(5), ccRemoveNode(4)), "is joint"},
		{"remove the only voter", ccConfSingle, ccOf(ConfChangeTransitionAuto, ccRemoveNode(1)), "every voter"},
		{"demote the only voter", ccConfSingle, ccOf(ConfChangeTransitionAuto, ccAddLearner(1)), "every voter"},
		{"remove every voter jointly", ccConfSimple,
			ccOf(ConfChangeTransitionJointImplicit, ccRemoveNode(1), ccRemoveNode(2), ccRemoveNode(3)), "every voter"},
		{"remove every voter, auto", ccConfSimple,
			ccOf(ConfChangeTransitionAuto, ccRemoveNode(1), ccRemoveNode(2), ccRemoveNode(3)), "every voter"},
		{"demote every voter jointly", ccConfSimple,
			ccOf(ConfChangeTransitionJointExplicit, ccAddLearner(1), ccAddLearner(2), ccAddLearner(3)), "every voter"},
		{"add node 0", ccConfSimple, ccOf(ConfChangeTransitionAuto, ccAddNode(None)), "node 0"},
		{"add learner 0", ccConfSimple, ccOf(ConfChangeTransitionAuto, ccAddLearner(None)), "node 0"},
		{"remove node 0", ccConfSimple, ccOf(ConfChangeTransitionAuto, ccRemoveNode(None)), "node 0"},
		{"node 0 among valid changes", ccConfSimple,
			ccOf(ConfChangeTransitionJointImplicit, ccAddNode(4), ccAddNode(None)), "node 0"},
		{"type 0", ccConfSimple, ccOf(ConfChangeTransitionAuto, ConfChangeSingle{Type: 0, NodeID: 4}), "unknown type 0"},
		{"type past the last", ccConfSimple,
			ccOf(ConfChangeTransitionAuto, ConfChangeSingle{Type: ConfChangeAddLearner + 1, NodeID: 4}), "unknown type 4"},
		{"unknown type after valid changes", ccConfSimple,
			ccOf(ConfChangeTransitionJointImplicit, ccAddNode(4), ConfChangeSingle{Type: 200, NodeID: 5}), "unknown type 200"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := ccCopyConfState(tc.cs)
			got, err := changeConf(tc.cs, tc.cc)
			if err == nil {
				t.Fatalf("changeConf(%s, %+v) = %s, want an error", DescribeConfState(tc.cs), tc.cc, DescribeConfState(got))
			}
			if !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("error %q, want it to mention %q", err, tc.wantErr)
			}
			if !reflect.DeepEqual(got, before) {
				t.Errorf("refused change returned %s, want the input %s", DescribeConfState(got), DescribeConfState(before))
			}
			if !reflect.DeepEqual(tc.cs, before) {
				t.Errorf("refused change modified its input: %s, was %s", DescribeConfState(tc.cs), DescribeConfState(before))
			}
		})
	}
}

func TestConfChangeApplied(t *testing.T) {
	for _, tc := range []struct {
		name string
		cs   ConfState
		cc   ConfChange
		want ConfState
	}{
		{"add voter", ccConfSimple, ccOf(ConfChangeTransitionAuto, ccAddNode(4)),
			ConfState{Voters: []NodeID{1, 2, 3, 4}}},
		{"add voter to the empty configuration", ConfState{}, ccOf(ConfChangeTransitionAuto, ccAddNode(1)),
			ConfState{Voters: []NodeID{1}}},
		{"add voter already there", ccConfSimple, ccOf(ConfChangeTransitionAuto, ccAddNode(2)), ccConfSimple},
		{"add learner", ccConfSimple, ccOf(ConfChangeTransitionAuto, ccAddLearner(4)),
			ConfState{Voters: []NodeID{1, 2, 3}, Learners: []NodeID{4}}},
		{"promote learner", ConfState{Voters: []NodeID{1, 2, 3}, Learners: []NodeID{4, 5}},
			ccOf(ConfChangeTransitionAuto, ccAddNode(4)),
			ConfState{Voters: []NodeID{1, 2, 3, 4}, Learners: []NodeID{5}}},
		{"demote voter directly", ccConfSimple, ccOf(ConfChangeTransitionAuto, ccAddLearner(3)),
			ConfState{Voters: []NodeID{1, 2}, Learners: []NodeID{3}}},
		{"demote voter through joint", ccConfSimple, ccOf(ConfChangeTransitionJointExplicit, ccAddLearner(3)),
			ConfState{Voters: []NodeID{1, 2}, VotersOutgoing: []NodeID{1, 2, 3}, LearnersNext: []NodeID{3}}},
		{"demote voter through joint, learners kept",
			ConfState{Voters: []NodeID{1, 2, 3}, Learners: []NodeID{4}},
			ccOf(ConfChangeTransitionJointExplicit, ccAddLearner(3)), ccConfJointDemote},
		{"remove voter", ccConfSimple, ccOf(ConfChangeTransitionAuto, ccRemoveNode(2)),
			ConfState{Voters: []NodeID{1, 3}}},
		{"remove learner", ConfState{Voters: []NodeID{1, 2, 3}, Learners: []NodeID{4}},
			ccOf(ConfChangeTransitionAuto, ccRemoveNode(4)), ccConfSimple},
		{"remove a node that is not a member", ccConfSimple, ccOf(ConfChangeTransitionAuto, ccRemoveNode(9)), ccConfSimple},
		{"two auto changes go joint, left automatically", ccConfSimple,
			ccOf(ConfChangeTransitionAuto, ccAddNode(4), ccRemoveNode(1)), ccConfJoint},
		{"joint implicit leaves automatically", ccConfSimple,
			ccOf(ConfChangeTransitionJointImplicit, ccAddNode(4), ccRemoveNode(1)), ccConfJoint},
		{"joint implicit with one change", ccConfSimple, ccOf(ConfChangeTransitionJointImplicit, ccAddNode(4)),
			ConfState{Voters: []NodeID{1, 2, 3, 4}, VotersOutgoing: []NodeID{1, 2, 3}, AutoLeave: true}},
		{"joint explicit is left explicitly", ccConfSimple,
			ccOf(ConfChangeTransitionJointExplicit, ccAddNode(4), ccRemoveNode(1)),
			ConfState{Voters: []NodeID{2, 3, 4}, VotersOutgoing: []NodeID{1, 2, 3}}},
		{"replace every voter jointly", ccConfSimple,
			ccOf(ConfChangeTransitionJointImplicit, ccAddNode(4), ccAddNode(5), ccAddNode(6),
				ccRemoveNode(1), ccRemoveNode(2), ccRemoveNode(3)),
			ConfState{Voters: []NodeID{4, 5, 6}, VotersOutgoing: []NodeID{1, 2, 3}, AutoLeave: true}},
		{"joint: demote then promote again", ccConfSimple,
			ccOf(ConfChangeTransitionJointImplicit, ccAddLearner(3), ccAddNode(3)),
			ConfState{Voters: []NodeID{1, 2, 3}, VotersOutgoing: []NodeID{1, 2, 3}, AutoLeave: true}},
		{"joint: demote then remove", ccConfSimple,
			ccOf(ConfChangeTransitionJointImplicit, ccAddLearner(3), ccRemoveNode(3)),
			ConfState{Voters: []NodeID{1, 2}, VotersOutgoing: []NodeID{1, 2, 3}, AutoLeave: true}},
		{"joint: new learner that was no voter", ccConfSimple,
			ccOf(ConfChangeTransitionJointImplicit, ccAddLearner(5), ccRemoveNode(1)),
			ConfState{Voters: []NodeID{2, 3}, VotersOutgoing: []NodeID{1, 2, 3}, Learners: []NodeID{5}, AutoLeave: true}},
		{"leave joint", ccConfJoint, ConfChange{}, ConfState{Voters: []NodeID{2, 3, 4}}},
		{"leave joint with context", ccConfJoint, ConfChange{Context: []byte("bye")}, ConfState{Voters: []NodeID{2, 3, 4}}},
		{"leave joint moves LearnersNext into Learners", ccConfJointDemote, ConfChange{},
			ConfState{Voters: []NodeID{1, 2}, Learners: []NodeID{3, 4}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := ccCopyConfState(tc.cs)
			got, err := changeConf(tc.cs, tc.cc)
			if err != nil {
				t.Fatalf("changeConf(%s, %+v): %v", DescribeConfState(tc.cs), tc.cc, err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("changeConf(%s, %+v)\n got  %s (%#v)\n want %s (%#v)", DescribeConfState(tc.cs), tc.cc,
					DescribeConfState(got), got, DescribeConfState(tc.want), tc.want)
			}
			if err := checkConfState(got); err != nil {
				t.Errorf("result does not pass checkConfState: %v", err)
			}
			if !reflect.DeepEqual(tc.cs, before) {
				t.Errorf("changeConf modified its input: %s, was %s", DescribeConfState(tc.cs), DescribeConfState(before))
			}
		})
	}
}

// TestConfChangeDemoteThroughJoint follows a voter demoted through a joint
// configuration: it keeps voting in the outgoing half, waits in
// LearnersNext, and becomes a learner when the joint configuration is left.
func TestConfChangeDemoteThroughJoint(t *testing.T) {
	joint, err := changeConf(ccConfSimple, ccOf(ConfChangeTransitionJointImplicit, ccAddLearner(3), ccAddNode(4)))
	if err != nil {
		t.Fatal(err)
	}
	want := ConfState{Voters: []NodeID{1, 2, 4}, VotersOutgoing: []NodeID{1, 2, 3}, LearnersNext: []NodeID{3}, AutoLeave: true}
	if !reflect.DeepEqual(joint, want) {
		t.Fatalf("joint: got %s, want %s", DescribeConfState(joint), DescribeConfState(want))
	}
	left, err := changeConf(joint, ConfChange{})
	if err != nil {
		t.Fatal(err)
	}
	want = ConfState{Voters: []NodeID{1, 2, 4}, Learners: []NodeID{3}}
	if !reflect.DeepEqual(left, want) {
		t.Fatalf("left: got %s, want %s", DescribeConfState(left), DescribeConfState(want))
	}
	if _, err := changeConf(left, ConfChange{}); err == nil {
		t.Fatalf("a second leave was taken")
	}
}

// ccBootstrap starts node id of a fresh cluster of voters on a
// MemoryStorage, as core/doc.go describes.
func ccBootstrap(t *testing.T, id NodeID, voters ...NodeID) (*Raft, *MemoryStorage) {
	t.Helper()
	s := NewMemoryStorage()
	if err := s.ApplySnapshot(Snapshot{Meta: SnapshotMeta{Index: 1, Term: 1,
		ConfState: ConfState{Voters: voters}}}); err != nil {
		t.Fatal(err)
	}
	if err := s.SetHardState(HardState{Term: 1, Commit: 1}); err != nil {
		t.Fatal(err)
	}
	r, err := New(Config{ID: id, Storage: s})
	if err != nil {
		t.Fatal(err)
	}
	return r, s
}

func TestApplyConfChange(t *testing.T) {
	r, _ := ccBootstrap(t, 1, 1)
	want := ConfState{Voters: []NodeID{1}}
	if got := r.Status().Config; !reflect.DeepEqual(got, want) {
		t.Fatalf("bootstrapped config %s, want %s", DescribeConfState(got), DescribeConfState(want))
	}
	// Refused changes return an error and the configuration in force, and
	// change nothing.
	for _, cc := range []ConfChange{
		{},
		ccOf(ConfChangeTransitionAuto, ccRemoveNode(1)),
		ccOf(ConfChangeTransitionAuto, ccAddLearner(1)),
		ccOf(ConfChangeTransitionAuto, ccAddNode(None)),
		ccOf(ConfChangeTransitionAuto, ConfChangeSingle{Type: 9, NodeID: 2}),
		ccOf(ConfChangeTransitionJointImplicit, ccAddNode(2), ccAddNode(None)),
	} {
		got, err := r.ApplyConfChange(cc)
		if err == nil {
			t.Fatalf("ApplyConfChange(%+v) = %s, want an error", cc, DescribeConfState(got))
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("refused ApplyConfChange(%+v) returned %s, want %s", cc, DescribeConfState(got), DescribeConfState(want))
		}
		if st := r.Status().Config; !reflect.DeepEqual(st, want) {
			t.Fatalf("refused ApplyConfChange(%+v) changed the config to %s", cc, DescribeConfState(st))
		}
	}
	// Valid changes return the new configuration, which is in force.
	for _, step := range []struct {
		cc   ConfChange
		want ConfState
	}{
		{ccOf(ConfChangeTransitionAuto, ccAddLearner(2)), ConfState{Voters: []NodeID{1}, Learners: []NodeID{2}}},
		{ccOf(ConfChangeTransitionAuto, ccAddNode(2)), ConfState{Voters: []NodeID{1, 2}}},
		{ccOf(ConfChangeTransitionJointExplicit, ccAddNode(3), ccAddLearner(2)),
			ConfState{Voters: []NodeID{1, 3}, VotersOutgoing: []NodeID{1, 2}, LearnersNext: []NodeID{2}}},
		{ConfChange{}, ConfState{Voters: []NodeID{1, 3}, Learners: []NodeID{2}}},
		{ccOf(ConfChangeTransitionAuto, ccRemoveNode(2)), ConfState{Voters: []NodeID{1, 3}}},
	} {
		got, err := r.ApplyConfChange(step.cc)
		if err != nil {
			t.Fatalf("ApplyConfChange(%+v): %v", step.cc, err)
		}
		if !reflect.DeepEqual(got, step.want) {
			t.Fatalf("ApplyConfChange(%+v) = %s, want %s", step.cc, DescribeConfState(got), DescribeConfState(step.want))
		}
		if st := r.Status().Config; !reflect.DeepEqual(st, got) {
			t.Fatalf("ApplyConfChange(%+v) returned %s, but Status().Config is %s", step.cc,
				DescribeConfState(got), DescribeConfState(st))
		}
	}
}

// ccSamples are ConfChanges that Unmarshal must give back exactly
// (empty slices as nil, as Unmarshal returns them).
func ccSamples() []ConfChange {
	many := make([]ConfChangeSingle, 300) // a change count of two varint bytes
	for i := range many {
		many[i] = ConfChangeSingle{Type: ConfChangeType(1 + i%3), NodeID: NodeID(i + 1)}
	}
	ctx := make([]byte, 200) // a context length of two varint bytes
	for i := range ctx {
		ctx[i] = byte(255 - i)
	}
	return []ConfChange{
		{},
		{Context: []byte("bye")},
		{Transition: ConfChangeTransitionJointImplicit},
		ccOf(ConfChangeTransitionAuto, ccAddNode(4)),
		{Transition: ConfChangeTransitionAuto, Changes: []ConfChangeSingle{ccAddNode(4)}, Context: []byte("addr=127.0.0.1:7004")},
		ccOf(ConfChangeTransitionJointImplicit, ccAddNode(4), ccAddNode(5), ccAddNode(6), ccRemoveNode(1), ccRemoveNode(2), ccRemoveNode(3)),
		ccOf(ConfChangeTransitionJointExplicit, ccAddLearner(3)),
		{Transition: ConfChangeTransitionJointExplicit, Changes: many, Context: ctx},
		ccOf(ConfChangeTransitionAuto, ccAddNode(math.MaxUint64), ccRemoveNode(1<<63), ccAddLearner(1<<56), ccAddNode(127), ccAddNode(128)),
		{Changes: []ConfChangeSingle{ccRemoveNode(None)}, Context: []byte{0, 1, 0xff, 0x80, 0}},
	}
}

func TestConfChangeMarshalRoundTrip(t *testing.T) {
	for i, cc := range ccSamples() {
		data := cc.Marshal()
		if again := cc.Marshal(); !bytes.Equal(data, again) {
			t.Errorf("%d: Marshal is not deterministic: %q then %q", i, data, again)
		}
		var got ConfChange
		if err := got.Unmarshal(data); err != nil {
			t.Errorf("%d: Unmarshal(%q): %v", i, data, err)
			continue
		}
		if !reflect.DeepEqual(got, cc) {
			t.Errorf("%d: round trip of %+v gave %+v", i, cc, got)
		}
		if got.LeavesJoint() != cc.LeavesJoint() {
			t.Errorf("%d: LeavesJoint changed in the round trip", i)
		}
	}
}

// TestConfChangeEncoding pins the encoding: it is stored in logs, and the
// interaction scripts show it.
func TestConfChangeEncoding(t *testing.T) {
	for _, tc := range []struct {
		cc   ConfChange
		want string
	}{
		{ConfChange{}, "\x01\x00\x00\x00"},
		{ConfChange{Context: []byte("bye")}, "\x01\x00\x00\x03bye"},
		{ccOf(ConfChangeTransitionAuto, ccAddNode(5)), "\x01\x00\x01\x01\x05\x00"},
		{ccOf(ConfChangeTransitionJointExplicit, ccAddNode(4)), "\x01\x02\x01\x01\x04\x00"},
		{ccOf(ConfChangeTransitionJointImplicit, ccRemoveNode(1), ccRemoveNode(2), ccRemoveNode(3)),
			"\x01\x01\x03\x02\x01\x02\x02\x02\x03\x00"},
		{ccOf(ConfChangeTransitionAuto, ccAddLearner(300)), "\x01\x00\x01\x03\xac\x02\x00"},
	} {
		if got := string(tc.cc.Marshal()); got != tc.want {
			t.Errorf("Marshal(%+v) = %q, want %q", tc.cc, got, tc.want)
		}
	}
}

func TestConfChangeUnmarshalRefuses(t *testing.T) {
	for _, tc := range []struct {
		name string
		data string
	}{
		{"nil", ""},
		{"version only", "\x01"},
		{"unknown version", "\x02\x00\x00\x00"},
		{"version 0", "\x00\x00\x00\x00"},
		{"unknown transition", "\x01\x03\x00\x00"},
		{"no change count", "\x01\x00"},
		{"no context length", "\x01\x00\x00"},
		{"change count past the data", "\x01\x00\x05\x01\x01\x00"},
		{"huge change count", "\x01\x00\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01\x00"},
		{"change count overflows", "\x01\x00\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x00"},
		{"change type 0", "\x01\x00\x01\x00\x05\x00"},
		{"change type 4", "\x01\x00\x01\x04\x05\x00"},
		{"truncated node id", "\x01\x00\x01\x01\x85"},
		{"truncated change", "\x01\x00\x02\x01\x05\x00"},
		{"context shorter than its length", "\x01\x00\x00\x05bye"},
		{"trailing bytes", "\x01\x00\x00\x00\x00"},
		{"trailing bytes after context", "\x01\x00\x00\x03byee"},
		{"context length overflows", "\x01\x00\x00\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cc := ConfChange{Context: []byte("kept")}
			err := cc.Unmarshal([]byte(tc.data))
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("Unmarshal(%q) = %v (%+v), want ErrMalformed", tc.data, err, cc)
			}
			if want := (ConfChange{Context: []byte("kept")}); !reflect.DeepEqual(cc, want) {
				t.Errorf("refused Unmarshal modified its receiver: %+v", cc)
			}
		})
	}
}

// FuzzConfChangeUnmarshal: Unmarshal never panics, and what it accepts is
// exactly what Marshal writes, so a decoded change encodes back to the same
// bytes.
func FuzzConfChangeUnmarshal(f *testing.F) {
	for _, cc := range ccSamples() {
		data := cc.Marshal()
		f.Add(data)
		f.Add(data[:len(data)-1])
		f.Add(append(slices.Clone(data), 0))
	}
	for _, s := range []string{
		"", "\x01", "\x02\x00\x00\x00", "\x01\x03\x00\x00", "\x01\x00\x05\x01\x01\x00",
		"\x01\x00\x01\x04\x05\x00", "\x01\x00\x01\x01\x85", "\x01\x00\x00\x05bye",
		"\x01\x00\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x00", "\xff\xff\xff\xff",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var cc ConfChange
		if err := cc.Unmarshal(data); err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("Unmarshal(%q) = %v, not ErrMalformed", data, err)
			}
			return
		}
		if again := cc.Marshal(); !bytes.Equal(again, data) {
			t.Fatalf("Unmarshal(%q) = %+v, which Marshals to %q", data, cc, again)
		}
	})
}

// ccReplayStorage returns a MemoryStorage as a restarting member of {1,2,3}
// finds it: the bootstrap snapshot at 1, then ents (of term 2, from index
// 2), all committed.
func ccReplayStorage(t *testing.T, ents ...Entry) *MemoryStorage {
	t.Helper()
	s := NewMemoryStorage()
	if err := s.ApplySnapshot(Snapshot{Meta: SnapshotMeta{Index: 1, Term: 1,
		ConfState: ConfState{Voters: []NodeID{1, 2, 3}}}}); err != nil {
		t.Fatal(err)
	}
	for i := range ents {
		ents[i].Term, ents[i].Index = 2, Index(2+i)
	}
	if err := s.Append(ents); err != nil {
		t.Fatal(err)
	}
	if err := s.SetHardState(HardState{Term: 2, Vote: 1, Commit: Index(1 + len(ents))}); err != nil {
		t.Fatal(err)
	}
	return s
}

func ccEntry(cc ConfChange) Entry { return Entry{Type: EntryConfChange, Data: cc.Marshal()} }

func TestReplayConfChanges(t *testing.T) {
	s := ccReplayStorage(t,
		Entry{Type: EntryNormal, Data: []byte("a")},
		ccEntry(ccOf(ConfChangeTransitionAuto, ccAddLearner(4))),
		Entry{Type: EntryNormal, Data: []byte("b")},
	)
	for _, tc := range []struct {
		applied Index
		want    ConfState
	}{
		{0, ConfState{Voters: []NodeID{1, 2, 3}}},
		{1, ConfState{Voters: []NodeID{1, 2, 3}}},
		{2, ConfState{Voters: []NodeID{1, 2, 3}}},
		{3, ConfState{Voters: []NodeID{1, 2, 3}, Learners: []NodeID{4}}},
		{4, ConfState{Voters: []NodeID{1, 2, 3}, Learners: []NodeID{4}}},
	} {
		r, err := New(Config{ID: 1, Storage: s, Applied: tc.applied})
		if err != nil {
			t.Fatalf("Applied %d: %v", tc.applied, err)
		}
		st := r.Status()
		if !reflect.DeepEqual(st.Config, tc.want) {
			t.Errorf("Applied %d: config %s, want %s", tc.applied, DescribeConfState(st.Config), DescribeConfState(tc.want))
		}
		if wantApplied := max(tc.applied, 1); st.Applied != wantApplied || st.Commit != 4 {
			t.Errorf("Applied %d: status applied %d commit %d, want %d and 4", tc.applied, st.Applied, st.Commit, wantApplied)
		}
		// What was not replayed is handed out to apply.
		rd := r.Ready()
		if n := len(rd.CommittedEntries); n != int(4-st.Applied) || n > 0 && rd.CommittedEntries[0].Index != st.Applied+1 {
			t.Errorf("Applied %d: committed entries %s", tc.applied, DescribeEntries(rd.CommittedEntries))
		}
	}
}

// TestReplayConfChangesSkipsRefused replays a log of changes that were
// refused when they were applied (a leave when not joint, a change during a
// joint configuration, an undecodable one) among taken ones: the replay
// reaches the configuration that applying them did, at every Applied.
func TestReplayConfChangesSkipsRefused(t *testing.T) {
	s := ccReplayStorage(t,
		ccEntry(ConfChange{}), // 2: refused: not joint
		ccEntry(ccOf(ConfChangeTransitionJointExplicit, ccAddNode(4), ccAddLearner(3))), // 3: joint
		ccEntry(ccOf(ConfChangeTransitionAuto, ccAddNode(5))),                           // 4: refused: joint
		Entry{Type: EntryConfChange, Data: []byte("\x09garbage")},                       // 5: undecodable
		ccEntry(ConfChange{Context: []byte("bye")}),                                     // 6: leave
		ccEntry(ccOf(ConfChangeTransitionAuto, ccRemoveNode(1))),                        // 7: remove 1
	)
	joint := ConfState{Voters: []NodeID{1, 2, 4}, VotersOutgoing: []NodeID{1, 2, 3}, LearnersNext: []NodeID{3}}
	left := ConfState{Voters: []NodeID{1, 2, 4}, Learners: []NodeID{3}}
	wants := map[Index]ConfState{
		1: {Voters: []NodeID{1, 2, 3}},
		2: {Voters: []NodeID{1, 2, 3}},
		3: joint,
		4: joint,
		5: joint,
		6: left,
		7: {Voters: []NodeID{2, 4}, Learners: []NodeID{3}},
	}
	for applied := Index(1); applied <= 7; applied++ {
		r, err := New(Config{ID: 1, Storage: s, Applied: applied})
		if err != nil {
			t.Fatalf("Applied %d: %v", applied, err)
		}
		if got := r.Status().Config; !reflect.DeepEqual(got, wants[applied]) {
			t.Errorf("Applied %d: config %s, want %s", applied, DescribeConfState(got), DescribeConfState(wants[applied]))
		}
	}
}

// ccSnapshotBeingMade is a storage whose snapshot is still being made.
type ccSnapshotBeingMade struct{ *MemoryStorage }

func (ccSnapshotBeingMade) Snapshot() (Snapshot, error) { return Snapshot{}, ErrUnavailable }

// TestNewWaitsForTheSnapshot: which configuration changes core replays on
// top of the snapshot's configuration depends on the snapshot's index, so
// New refuses to start while the storage cannot say it.
func TestNewWaitsForTheSnapshot(t *testing.T) {
	s := NewMemoryStorage()
	if err := s.ApplySnapshot(Snapshot{Meta: SnapshotMeta{Index: 1, Term: 1, ConfState: ConfState{Voters: []NodeID{1}}}}); err != nil {
		t.Fatal(err)
	}
	if err := s.SetHardState(HardState{Term: 1, Commit: 1}); err != nil {
		t.Fatal(err)
	}
	if _, err := New(Config{ID: 1, Storage: ccSnapshotBeingMade{s}}); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("New with the snapshot unavailable: %v, want ErrUnavailable", err)
	}
	if _, err := New(Config{ID: 1, Storage: s}); err != nil {
		t.Fatalf("New once it is available: %v", err)
	}
}
