package core

import (
	"encoding/binary"
	"fmt"
	"slices"
)

// ConfChangeType is one step of a membership change.
type ConfChangeType uint8

const (
	// ConfChangeAddNode adds a voter, or promotes a learner to voter.
	ConfChangeAddNode ConfChangeType = iota + 1
	// ConfChangeRemoveNode removes a voter or a learner.
	ConfChangeRemoveNode
	// ConfChangeAddLearner adds a learner, or demotes a voter to learner.
	ConfChangeAddLearner
)

func (t ConfChangeType) String() string {
	switch t {
	case ConfChangeAddNode:
		return "AddNode"
	case ConfChangeRemoveNode:
		return "RemoveNode"
	case ConfChangeAddLearner:
		return "AddLearner"
	}
	return fmt.Sprintf("ConfChangeType(%d)", uint8(t))
}

// ConfChangeSingle changes one member.
type ConfChangeSingle struct {
	Type   ConfChangeType
	NodeID NodeID
}

// ConfChangeTransition says how a change moves between configurations.
type ConfChangeTransition uint8

const (
	// ConfChangeTransitionAuto applies a change of one voter directly
	// (Raft's single-server change) and a larger one through joint
	// consensus, which is left automatically.
	ConfChangeTransitionAuto ConfChangeTransition = iota
	// ConfChangeTransitionJointImplicit always goes through joint
	// consensus, and leaves it automatically.
	ConfChangeTransitionJointImplicit
	// ConfChangeTransitionJointExplicit always goes through joint
	// consensus, and stays there until the host proposes an empty
	// ConfChange to leave it.
	ConfChangeTransitionJointExplicit
)

// ConfChange is a membership change, proposed with ProposeConfChange and,
// once committed, applied by every member with ApplyConfChange. An empty
// ConfChange (no Changes) leaves a joint configuration. Context is opaque
// to core: it carries what the host needs, such as a new member's address.
type ConfChange struct {
	Transition ConfChangeTransition
	Changes    []ConfChangeSingle
	Context    []byte
}

// LeavesJoint reports whether cc is the change that leaves a joint
// configuration: no changes, and the automatic transition.
func (cc ConfChange) LeavesJoint() bool {
	return len(cc.Changes) == 0 && cc.Transition == ConfChangeTransitionAuto
}

// joint reports whether cc enters a joint configuration, and if so whether
// it is left automatically.
func (cc ConfChange) joint() (joint, autoLeave bool) {
	if cc.Transition != ConfChangeTransitionAuto || len(cc.Changes) > 1 {
		return true, cc.Transition != ConfChangeTransitionJointExplicit
	}
	return false, false
}

const confChangeVersion = 1

// Marshal encodes cc as the Data of an EntryConfChange entry: a version
// byte, the transition, the changes and the context, lengths as uvarints.
func (cc ConfChange) Marshal() []byte {
	b := make([]byte, 0, 4+len(cc.Changes)*(1+binary.MaxVarintLen64)+len(cc.Context))
	b = append(b, confChangeVersion, byte(cc.Transition))
	b = binary.AppendUvarint(b, uint64(len(cc.Changes)))
	for _, c := range cc.Changes {
		b = append(b, byte(c.Type))
		b = binary.AppendUvarint(b, uint64(c.NodeID))
	}
	b = binary.AppendUvarint(b, uint64(len(cc.Context)))
	return append(b, cc.Context...)
}

// Unmarshal decodes what Marshal encoded. It checks every length against
// the bytes left and refuses unknown versions, types and trailing bytes,
// wrapping ErrMalformed.
func (cc *ConfChange) Unmarshal(data []byte) error {
	bad := func(what string) error { return fmt.Errorf("%w: conf change: %s", ErrMalformed, what) }
	if len(data) < 2 {
		return bad("too short")
	}
	if data[0] != confChangeVersion {
		return bad(fmt.Sprintf("unknown version %d", data[0]))
	}
	out := ConfChange{Transition: ConfChangeTransition(data[1])}
	if out.Transition > ConfChangeTransitionJointExplicit {
		return bad(fmt.Sprintf("unknown transition %d", data[1]))
	}
	rest := data[2:]
	uvarint := func() (uint64, bool) {
		v, n := binary.Uvarint(rest)
		if n <= 0 || (n > 1 && rest[n-1] == 0) {
			// Truncated, too long, or not the shortest form: Marshal
			// never writes it, and two spellings of one change would be
			// one too many.
			return 0, false
		}
		rest = rest[n:]
		return v, true
	}
	n, ok := uvarint()
	if !ok || n > uint64(len(rest))/2 { // each change takes at least 2 bytes
		return bad("bad change count")
	}
	if n > 0 {
		out.Changes = make([]ConfChangeSingle, n)
	}
	for i := range out.Changes {
		if len(rest) == 0 {
			return bad("truncated change")
		}
		t := ConfChangeType(rest[0])
		rest = rest[1:]
		if t < ConfChangeAddNode || t > ConfChangeAddLearner {
			return bad(fmt.Sprintf("unknown change type %d", t))
		}
		id, ok := uvarint()
		if !ok {
			return bad("truncated node id")
		}
		out.Changes[i] = ConfChangeSingle{Type: t, NodeID: NodeID(id)}
	}
	l, ok := uvarint()
	if !ok || l != uint64(len(rest)) {
		return bad("bad context length")
	}
	if l > 0 {
		out.Context = slices.Clone(rest)
	}
	*cc = out
	return nil
}

// confState returns the configuration in force.
func (r *Raft) confState() ConfState {
	return ConfState{
		Voters:         cloneIDs(r.voters[0]),
		VotersOutgoing: cloneIDs(r.voters[1]),
		Learners:       cloneIDs(r.learners),
		LearnersNext:   cloneIDs(r.learnersNext),
		AutoLeave:      r.autoLeave,
	}
}

// changeConf computes the configuration cc leads to from cs, or says why
// it cannot be applied there. It is a pure function of its inputs, so every
// member applying the same committed change to the same configuration
// reaches the same answer.
func changeConf(cs ConfState, cc ConfChange) (ConfState, error) {
	isJoint := len(cs.VotersOutgoing) > 0
	set := func(ids []NodeID) map[NodeID]bool {
		m := make(map[NodeID]bool, len(ids))
		for _, id := range ids {
			m[id] = true
		}
		return m
	}
	oldVoters := set(cs.Voters)
	incoming, outgoing := set(cs.Voters), set(cs.VotersOutgoing)
	learners, next := set(cs.Learners), set(cs.LearnersNext)
	auto := cs.AutoLeave

	if cc.LeavesJoint() {
		if !isJoint {
			return cs, fmt.Errorf("core: conf change: leaving a joint configuration, but %s is not joint", DescribeConfState(cs))
		}
		clear(outgoing)
		for id := range next {
			learners[id] = true
		}
		clear(next)
		auto = false
	} else {
		if len(cc.Changes) == 0 {
			return cs, fmt.Errorf("core: conf change: a joint transition with no changes")
		}
		joint, autoLeave := cc.joint()
		if isJoint {
			return cs, fmt.Errorf("core: conf change: %s is joint; leave it before another change", DescribeConfState(cs))
		}
		if joint {
			for id := range incoming {
				outgoing[id] = true
			}
			auto = autoLeave
		}
		for _, c := range cc.Changes {
			id := c.NodeID
			if id == None {
				return cs, fmt.Errorf("core: conf change: %s of node 0", c.Type)
			}
			switch c.Type {
			case ConfChangeAddNode:
				incoming[id] = true
				delete(learners, id)
				delete(next, id)
			case ConfChangeAddLearner:
				delete(incoming, id)
				if outgoing[id] {
					// Still a voter of the outgoing half: it becomes a
					// learner when the joint configuration is left.
					next[id] = true
				} else {
					learners[id] = true
				}
			case ConfChangeRemoveNode:
				delete(incoming, id)
				delete(learners, id)
				delete(next, id)
			default:
				return cs, fmt.Errorf("core: conf change: unknown type %d", uint8(c.Type))
			}
		}
		if !joint {
			// A direct change may move at most one voter, or the old and
			// new majorities need not overlap.
			diff := 0
			for id := range incoming {
				if !oldVoters[id] {
					diff++
				}
			}
			for _, id := range cs.Voters {
				if !incoming[id] {
					diff++
				}
			}
			if diff > 1 {
				return cs, fmt.Errorf("core: conf change: a direct change moves %d voters; use joint consensus", diff)
			}
		}
	}
	if len(incoming) == 0 {
		return cs, fmt.Errorf("core: conf change: would remove every voter")
	}
	sorted := func(m map[NodeID]bool) []NodeID {
		if len(m) == 0 {
			return nil
		}
		out := make([]NodeID, 0, len(m))
		for id := range m {
			out = append(out, id)
		}
		slices.Sort(out)
		return out
	}
	out := ConfState{Voters: sorted(incoming), VotersOutgoing: sorted(outgoing),
		Learners: sorted(learners), LearnersNext: sorted(next), AutoLeave: auto && len(outgoing) > 0}
	if err := checkConfState(out); err != nil {
		return cs, err
	}
	return out, nil
}

// checkConfState checks what must hold of any configuration.
func checkConfState(cs ConfState) error {
	voter := map[NodeID]bool{}
	for _, id := range slices.Concat(cs.Voters, cs.VotersOutgoing) {
		if id == None {
			return fmt.Errorf("core: configuration %s names node 0", DescribeConfState(cs))
		}
		voter[id] = true
	}
	for _, id := range cs.Learners {
		if id == None || voter[id] {
			return fmt.Errorf("core: configuration %s: node %d is both voter and learner", DescribeConfState(cs), id)
		}
	}
	outgoing := map[NodeID]bool{}
	for _, id := range cs.VotersOutgoing {
		outgoing[id] = true
	}
	for _, id := range cs.LearnersNext {
		if !outgoing[id] || slices.Contains(cs.Voters, id) {
			return fmt.Errorf("core: configuration %s: node %d is a pending learner but not only an outgoing voter", DescribeConfState(cs), id)
		}
	}
	if len(cs.VotersOutgoing) == 0 && (len(cs.LearnersNext) > 0 || cs.AutoLeave) {
		return fmt.Errorf("core: configuration %s has joint fields but is not joint", DescribeConfState(cs))
	}
	return nil
}

// ProposeConfChange proposes a membership change, as Propose does a
// command (forwarded from a follower). The leader takes one change at a
// time: while one is proposed and not yet applied, another is refused
// with ErrProposalDropped, as is one that cannot be applied to the
// configuration in force. Whatever is taken is checked again when it is
// applied.
func (r *Raft) ProposeConfChange(cc ConfChange) error {
	data := cc.Marshal()
	if uint64(len(data)) > r.cfg.MaxEntryBytes {
		return fmt.Errorf("%w: conf change of %d bytes, limit %d", ErrTooLarge, len(data), r.cfg.MaxEntryBytes)
	}
	return r.step(Message{Type: MsgProp, From: r.id, Entries: []Entry{{Type: EntryConfChange, Data: data}}})
}

// ApplyConfChange applies a committed configuration change, in log order,
// on every member, and returns the configuration now in force. A change
// that cannot be applied to the configuration in force (a leave of a
// configuration that is not joint, a second change during a joint one, a
// direct change of more than one voter, removing every voter) returns an
// error and changes nothing; every member reaches the same verdict.
//
// A leader that is no longer a voter hands leadership to the voter that
// matches most of its log (a leadership transfer; it steps down if that
// does not finish within an election timeout). A leader proposes the
// automatic leave of a joint configuration as soon as it applies it.
func (r *Raft) ApplyConfChange(cc ConfChange) (ConfState, error) {
	cs, err := changeConf(r.confState(), cc)
	if err != nil {
		r.logger.Warn("conf change refused", "err", err)
		return r.confState(), err
	}
	r.switchConf(cs)
	r.logger.Info("conf change applied", "config", DescribeConfState(cs))
	return r.confState(), nil
}

// switchConf installs cs as the configuration in force, keeping the
// progress of members that stay.
func (r *Raft) switchConf(cs ConfState) {
	r.setConf(cs)
	// A new member has had no chance to answer yet: it is not counted
	// against check-quorum before it could.
	r.rebuildProgress(r.progress, true)
	if r.role != RoleLeader {
		return
	}
	if r.leadTransferee != None && !r.isVoter(r.leadTransferee) {
		r.logger.Info("abandoning transfer: target is no longer a voter", "to", uint64(r.leadTransferee))
		r.leadTransferee = None
	}
	// The quorum changed: commit may move, and new members need the log.
	r.maybeCommit()
	r.bcastPending = true
	r.maybeHandOff()
}

// maybeHandOff has a leader that is not a voter (removed by the change it
// applied, or elected as a removed voter) pass leadership on: once it has
// committed an entry of its term, so that the voters learn every commit it
// knows, it transfers leadership to the voter that matches the most of its
// log. It refuses proposals meanwhile (it has no progress of its own), and
// steps down if the transfer does not finish within an election timeout.
func (r *Raft) maybeHandOff() {
	if r.role != RoleLeader || r.isVoter(r.id) || r.leadTransferee != None || !r.committedInTerm() {
		return
	}
	var best NodeID
	for _, id := range r.voters.ids() {
		if pr := r.progress[id]; pr != nil && id != r.id && (best == None || pr.Match > r.progress[best].Match) {
			best = id
		}
	}
	if best == None {
		r.becomeFollower(r.Term, None)
		return
	}
	r.logger.Info("no longer a voter: handing leadership on", "to", uint64(best), "term", uint64(r.Term))
	if r.bcastPending {
		// The commit index goes out ahead of MsgTimeoutNow, so that the
		// target campaigns knowing it.
		r.bcastPending = false
		r.bcastAppend()
	}
	r.handleTransferLeader(best, r.progress[best])
}

// isVoter reports whether id votes in the configuration in force.
func (r *Raft) isVoter(id NodeID) bool {
	return r.voters.contains(id) && !slices.Contains(r.learners, id)
}

// maybeAutoLeave proposes the leave of a joint configuration that asked
// for it, once the change that entered it is applied on the leader.
func (r *Raft) maybeAutoLeave() {
	if r.role != RoleLeader || !r.autoLeave || len(r.voters[1]) == 0 || r.pendingConfIndex > r.log.applied {
		return
	}
	if !r.appendEntry(Entry{Type: EntryConfChange, Data: ConfChange{}.Marshal()}) {
		return // uncommitted tail full; try again after the next Advance
	}
	r.pendingConfIndex = r.log.lastIndex()
	r.logger.Info("leaving joint configuration automatically", "index", uint64(r.pendingConfIndex))
}
