package core

import "fmt"

// stepLeader handles a message of the leader's current term (or a local one).
func (r *Raft) stepLeader(m Message) error {
	switch m.Type {
	case MsgBeat:
		r.bcastHeartbeat()
		return nil
	case MsgProp:
		return r.handlePropose(m)
	}
	pr := r.progress[m.From]
	if pr == nil {
		// Only responses reach here; from a node we do not know, drop them.
		r.logger.Debug("ignoring message from unknown node", "from", uint64(m.From), "msg_type", m.Type.String())
		return nil
	}
	switch m.Type {
	case MsgAppResp:
		if m.Index > r.log.lastIndex() && !m.Reject {
			// We never sent past our log in this term, and never cut it.
			return fmt.Errorf("%w: %d acknowledges %d past our last index %d", ErrMalformed, m.From, m.Index, r.log.lastIndex())
		}
		pr.RecentActive = true
		if m.Reject {
			r.handleAppendReject(m, pr)
		} else {
			r.handleAppendAck(m, pr)
		}
	case MsgHeartbeatResp:
		pr.RecentActive = true
		pr.MsgAppFlowPaused = false
		if pr.State == StateReplicate && pr.Inflights.full() {
			// The follower is alive but has not acknowledged a full window:
			// appends may have been lost on the way. Let one more go, so a
			// lossy link that nobody reports as unreachable cannot stall
			// replication; the follower's answer (or rejection) resumes it.
			pr.Inflights.freeFirstOne()
		}
		if pr.Match < r.log.lastIndex() || pr.State == StateProbe {
			r.sendAppend(m.From, true)
		}
	case MsgSnap, MsgApp, MsgHeartbeat:
		// Two leaders in one term would break election safety.
		return fmt.Errorf("%w: %s from %d in our own term %d", ErrMalformed, m.Type, m.From, r.Term)
	default:
		r.logger.Debug("leader ignoring message", "from", uint64(m.From), "msg_type", m.Type.String())
	}
	return nil
}

// handlePropose appends proposals, unless they cannot be taken now.
func (r *Raft) handlePropose(m Message) error {
	if len(m.Entries) == 0 {
		return fmt.Errorf("%w: empty proposal", ErrMalformed)
	}
	if r.progress[r.id] == nil {
		// Removed from the configuration we lead; we only see it out.
		return fmt.Errorf("%w: leader %d is not a member", ErrProposalDropped, r.id)
	}
	if r.leadTransferee != None {
		return fmt.Errorf("%w: leadership transfer to %d under way", ErrProposalDropped, r.leadTransferee)
	}
	if !r.appendEntry(m.Entries...) {
		return fmt.Errorf("%w: uncommitted tail over %d bytes", ErrProposalDropped, r.cfg.MaxUncommittedBytes)
	}
	return nil
}

// handleAppendAck records an acknowledgement and keeps the follower fed.
func (r *Raft) handleAppendAck(m Message, pr *progress) {
	if !pr.maybeUpdate(m.Index) {
		return
	}
	switch {
	case pr.State == StateProbe:
		pr.becomeReplicate()
	case pr.State == StateSnapshot && pr.Match+1 >= r.log.firstIndex():
		// The follower caught up past the snapshot (or from the log).
		pr.becomeProbe()
		pr.becomeReplicate()
	case pr.State == StateReplicate:
		pr.Inflights.freeLE(m.Index)
	}
	if m.From == r.id {
		// Our own acknowledgement: the write it names is durable.
		if r.maybeCommit() {
			r.bcastPending = true
		}
		return
	}
	if r.maybeCommit() {
		// Everyone learns the new commit, this follower included, when
		// the next Ready is built (one message for many acknowledgements).
		r.bcastPending = true
		return
	}
	// Fill the window while there is something to send (entries, or a
	// commit index the follower missed while it was paused).
	for r.sendAppend(m.From, false) {
	}
}

// handleAppendReject backs off the follower's next index using its hint,
// skipping a whole term of conflicting entries per round trip.
func (r *Raft) handleAppendReject(m Message, pr *progress) {
	next := m.RejectHint
	if m.LogTerm > 0 {
		// The follower's entry at RejectHint has term LogTerm; our log can
		// only match at or before the last entry whose term <= LogTerm.
		next, _ = r.log.findConflictByTerm(m.RejectHint, m.LogTerm)
	}
	if !pr.maybeDecrTo(m.Index, next) {
		return
	}
	r.logger.Debug("append rejected", "from", uint64(m.From), "index", uint64(m.Index),
		"hint", uint64(m.RejectHint), "next", uint64(pr.Next))
	if pr.State == StateReplicate {
		pr.becomeProbe()
	}
	r.sendAppend(m.From, true)
}

// maybeCommit moves the commit index to the largest index a quorum has
// durably acknowledged, if that entry is of the current term (Raft §5.4.2:
// older entries commit only through one of ours). It reports whether the
// commit index moved.
func (r *Raft) maybeCommit() bool {
	idx := r.voters.committedIndex(func(id NodeID) Index {
		if pr := r.progress[id]; pr != nil {
			return pr.Match
		}
		return 0
	})
	if idx <= r.log.committed {
		return false
	}
	t, err := r.log.term(idx)
	if err != nil {
		panicf("quorum index %d has no term: %v", idx, err)
	}
	if t != r.Term && mutant != "commit_old_term" {
		return false
	}
	r.log.commitTo(idx)
	return true
}
