package core

import (
	"errors"
	"fmt"
)

// stepLeader handles a message of the leader's current term (or a local one).
func (r *Raft) stepLeader(m Message) error {
	switch m.Type {
	case MsgBeat:
		r.bcastHeartbeat()
		return nil
	case MsgProp:
		return r.handlePropose(m)
	case MsgReadIndex:
		return r.handleReadIndex(m)
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
		if t := uint64(m.Index); t > pr.heardTick && t <= r.leaseTick {
			pr.heardTick = t
		}
		if len(m.Context) > 0 {
			r.readAck(m.From, m.Context)
		}
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
	case MsgTransferLeader:
		r.handleTransferLeader(m.From, pr)
	case MsgSnap, MsgApp, MsgHeartbeat:
		// Two leaders in one term would break election safety.
		return fmt.Errorf("%w: %s from %d in our own term %d", ErrMalformed, m.Type, m.From, r.Term)
	default:
		r.logger.Debug("leader ignoring message", "from", uint64(m.From), "msg_type", m.Type.String())
	}
	return nil
}

// handlePropose appends proposals, unless they cannot be taken now. A
// proposal forwarded by a follower that cannot be taken goes back to it.
func (r *Raft) handlePropose(m Message) error {
	err := r.takeProposal(m)
	if err != nil && m.From != r.id && (errors.Is(err, ErrProposalDropped) || errors.Is(err, ErrTooLarge)) {
		return r.dropProp(m, err.Error())
	}
	return err
}

func (r *Raft) takeProposal(m Message) error {
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
	conf := -1
	var next ConfState
	for i := range m.Entries {
		e := &m.Entries[i]
		if uint64(len(e.Data)) > r.cfg.MaxEntryBytes {
			return fmt.Errorf("%w: %d bytes, limit %d", ErrTooLarge, len(e.Data), r.cfg.MaxEntryBytes)
		}
		if e.Type != EntryConfChange {
			continue
		}
		var cc ConfChange
		if err := cc.Unmarshal(e.Data); err != nil {
			return err
		}
		var err error
		switch {
		case conf >= 0:
			return fmt.Errorf("%w: more than one conf change in a proposal", ErrProposalDropped)
		case r.pendingConfIndex > r.log.applied:
			return fmt.Errorf("%w: conf change: another one (up to index %d) is not applied yet (applied %d)",
				ErrProposalDropped, r.pendingConfIndex, r.log.applied)
		}
		if next, err = changeConf(r.confState(), cc); err != nil {
			return fmt.Errorf("%w: %v", ErrProposalDropped, err)
		}
		conf = i
	}
	if !r.appendEntry(m.Entries...) {
		return fmt.Errorf("%w: uncommitted tail over %d bytes", ErrProposalDropped, r.cfg.MaxUncommittedBytes)
	}
	if conf >= 0 {
		r.pendingConfIndex = m.Entries[conf].Index
		if mutant == "confchange_at_propose" {
			r.switchConf(next)
		}
	}
	return nil
}

// dropProp refuses a proposal: our own with an error, a forwarded one by
// giving it back to the node that forwarded it.
func (r *Raft) dropProp(m Message, why string) error {
	if m.From == r.id {
		return fmt.Errorf("%w: %s", ErrProposalDropped, why)
	}
	r.logger.Debug("giving back a forwarded proposal", "from", uint64(m.From), "why", why)
	r.send(Message{To: m.From, Type: MsgPropDropped, Entries: m.Entries})
	return nil
}

// handleTransferLeader starts handing leadership to target: it is caught
// up first if it lags, then told to campaign at once. Proposals are
// refused meanwhile; a transfer that has not finished within an election
// timeout is abandoned (tickHeartbeat).
func (r *Raft) handleTransferLeader(target NodeID, pr *progress) {
	switch {
	case target == r.id:
		r.logger.Debug("ignoring transfer to ourselves: already leader")
		return
	case !r.isVoter(target):
		r.logger.Info("ignoring transfer to a node that is not a voter", "to", uint64(target))
		return
	case r.leadTransferee == target:
		r.logger.Debug("transfer already under way", "to", uint64(target))
		return
	case r.leadTransferee != None:
		r.logger.Info("abandoning transfer for a new one", "from_target", uint64(r.leadTransferee), "to", uint64(target))
	}
	r.leadTransferee = target
	r.electionElapsed = 0
	r.logger.Info("transferring leadership", "to", uint64(target), "match", uint64(pr.Match), "last_index", uint64(r.log.lastIndex()))
	if pr.Match == r.log.lastIndex() {
		r.sendTimeoutNow(target)
		return
	}
	r.sendAppend(target, true)
}

// sendTimeoutNow tells the transfer's target to campaign now. Its vote
// requests get past the other members' leases, so from now on our own
// lease proves nothing and lease-based reads stop.
func (r *Raft) sendTimeoutNow(to NodeID) {
	r.transferStarted = true
	r.send(Message{To: to, Type: MsgTimeoutNow})
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
	if m.From == r.leadTransferee && pr.Match == r.log.lastIndex() {
		r.logger.Info("transfer target caught up", "to", uint64(m.From))
		r.sendTimeoutNow(m.From)
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
	// Reads that waited for our first commit of the term may start.
	r.startPostponedReads()
	r.maybeHandOff()
	return true
}
