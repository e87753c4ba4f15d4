package core

import "fmt"

// stepFollower handles a message of the follower's current term.
func (r *Raft) stepFollower(m Message) error {
	switch m.Type {
	case MsgProp:
		return r.forwardProp(m)
	case MsgReadIndex:
		return r.forwardRead(m)
	case MsgTransferLeader:
		if m.From == r.id && r.lead != None {
			// A request that we take over: the leader decides.
			r.send(Message{To: r.lead, Type: MsgTransferLeader})
		} else {
			r.logger.Info("ignoring transfer request: not the leader", "to", uint64(m.From), "lead", uint64(r.lead))
		}
	case MsgApp:
		r.electionElapsed = 0
		r.lead = m.From
		return r.handleAppend(m)
	case MsgHeartbeat:
		r.electionElapsed = 0
		r.lead = m.From
		r.handleHeartbeat(m)
	case MsgSnap:
		r.electionElapsed = 0
		r.lead = m.From
		r.handleSnapshot(m)
	case MsgTimeoutNow:
		r.logger.Info("campaigning at once: leadership transferred to us", "from", uint64(m.From), "term", uint64(r.Term))
		r.hup(true)
	default:
		r.logger.Debug("follower ignoring message", "from", uint64(m.From), "msg_type", m.Type.String())
	}
	return nil
}

// forwardProp passes a local proposal on to the leader. A proposal that
// another node forwarded to us is given back rather than passed on, so
// that proposals never travel in circles.
func (r *Raft) forwardProp(m Message) error {
	switch {
	case m.From != r.id:
		return r.dropProp(m, fmt.Sprintf("%d is not the leader", r.id))
	case r.lead == None:
		return r.dropProp(m, fmt.Sprintf("%d knows no leader", r.id))
	case r.cfg.DisableProposalForwarding:
		return r.dropProp(m, fmt.Sprintf("%d is a follower (leader %d) and does not forward", r.id, r.lead))
	}
	m.To = r.lead
	r.send(m)
	return nil
}

// stepCandidate handles a message of the (pre-)candidate's current term.
// For a pre-candidate, granted pre-votes arrive with the next term.
func (r *Raft) stepCandidate(m Message) error {
	myVoteResp := MsgVoteResp
	if r.role == RolePreCandidate {
		myVoteResp = MsgPreVoteResp
	}
	switch m.Type {
	case MsgProp:
		return r.dropProp(m, fmt.Sprintf("%d is a %s", r.id, r.role))
	case MsgReadIndex:
		return r.dropRead(readRequest{from: m.From, ctx: m.Context}, fmt.Sprintf("%d is a %s", r.id, r.role))
	case MsgApp:
		// A leader of our term exists; it won.
		r.becomeFollower(m.Term, m.From)
		return r.handleAppend(m)
	case MsgHeartbeat:
		r.becomeFollower(m.Term, m.From)
		r.handleHeartbeat(m)
	case MsgSnap:
		r.becomeFollower(m.Term, m.From)
		r.handleSnapshot(m)
	case myVoteResp:
		if _, known := r.progress[m.From]; !known {
			r.logger.Debug("ignoring vote from unknown node", "from", uint64(m.From))
			return nil
		}
		r.handleVoteResp(m)
	default:
		r.logger.Debug("candidate ignoring message", "from", uint64(m.From), "msg_type", m.Type.String())
	}
	return nil
}

// handleAppend runs the consistency check on an append (Raft §5.3) and
// answers it: an acknowledgement of the last new index, or a rejection with
// a hint of where our logs may agree.
func (r *Raft) handleAppend(m Message) error {
	if m.Index < r.log.committed {
		// Everything up to our commit already matches the leader.
		r.send(Message{To: m.From, Type: MsgAppResp, Index: r.log.committed})
		return nil
	}
	if last, ok := r.log.maybeAppend(m.Index, m.LogTerm, m.Commit, m.Entries); ok {
		r.send(Message{To: m.From, Type: MsgAppResp, Index: last})
		return nil
	}
	// Our log does not hold (Index, LogTerm). Offer the last index at or
	// below it whose term is <= LogTerm: the leader can skip everything
	// between, whole terms at a time.
	hintIndex := min(m.Index, r.log.lastIndex())
	hintIndex, hintTerm := r.log.findConflictByTerm(hintIndex, m.LogTerm)
	r.logger.Debug("rejecting append", "from", uint64(m.From), "index", uint64(m.Index),
		"term", uint64(m.LogTerm), "hint", uint64(hintIndex))
	r.send(Message{To: m.From, Type: MsgAppResp, Index: m.Index, Reject: true,
		RejectHint: hintIndex, LogTerm: hintTerm})
	return nil
}

// handleHeartbeat learns the leader's commit index. A leader never tells a
// follower to commit past what it matched, but a follower that lost
// unsynced entries may hear a commit past its log: it commits what it has
// and the leader repairs the rest.
func (r *Raft) handleHeartbeat(m Message) {
	r.log.commitTo(min(m.Commit, r.log.lastIndex()))
	// Index echoes the leader's send tick, for its lease.
	r.send(Message{To: m.From, Type: MsgHeartbeatResp, Index: m.Index, Context: m.Context})
}

// handleSnapshot installs a snapshot from the leader if it is news, and
// answers with the index we now hold.
func (r *Raft) handleSnapshot(m Message) {
	s := *m.Snapshot
	if r.restore(s) {
		r.logger.Info("installed snapshot", "index", uint64(s.Meta.Index), "term", uint64(s.Meta.Term))
		r.send(Message{To: m.From, Type: MsgAppResp, Index: r.log.lastIndex()})
		return
	}
	r.send(Message{To: m.From, Type: MsgAppResp, Index: r.log.committed})
}

// restore installs snapshot s unless it is older than our commit. If our log
// holds the snapshot's last entry with its term, the log is kept and only
// the commit moves (Raft Figure 13, rule 7); otherwise the log is replaced.
func (r *Raft) restore(s Snapshot) bool {
	if s.Meta.Index <= r.log.committed {
		return false
	}
	if r.log.matchTerm(s.Meta.Index, s.Meta.Term) {
		r.log.commitTo(s.Meta.Index)
		return false
	}
	if err := r.restoreConfState(s.Meta.ConfState); err != nil {
		r.logger.Warn("refusing snapshot with a bad configuration", "index", uint64(s.Meta.Index), "err", err)
		return false
	}
	r.log.restore(s)
	return true
}
