package core

// tickElection is a follower's or candidate's tick: after a randomized
// election timeout without a leader, campaign.
func (r *Raft) tickElection() {
	r.electionElapsed++
	if r.promotable() && r.electionElapsed >= r.randomizedElectionTimeout {
		r.electionElapsed = 0
		r.hup(false)
	}
}

// tickHeartbeat is a leader's tick: heartbeats every HeartbeatTicks, and
// every ElectionTicks the check-quorum test.
func (r *Raft) tickHeartbeat() {
	r.leaseTick++
	r.heartbeatElapsed++
	r.electionElapsed++
	if r.electionElapsed >= r.cfg.ElectionTicks {
		r.electionElapsed = 0
		if !r.cfg.DisableCheckQuorum && !r.checkQuorumActive() && mutant != "no_checkquorum_stepdown" {
			r.logger.Warn("stepping down: no quorum heard from in an election timeout", "term", uint64(r.Term))
			r.becomeFollower(r.Term, None)
			return
		}
		if r.leadTransferee != None {
			// A transfer that did not finish in an election timeout is
			// abandoned, so that the cluster never wedges.
			r.leadTransferee = None
			if !r.isVoter(r.id) {
				r.logger.Info("stepping down: no longer a voter, and the hand-off did not finish", "term", uint64(r.Term))
				r.becomeFollower(r.Term, None)
				return
			}
		}
	}
	if r.heartbeatElapsed >= r.cfg.HeartbeatTicks {
		r.heartbeatElapsed = 0
		r.bcastHeartbeat()
	}
}

// checkQuorumActive reports whether a quorum was heard from since the last
// check, and clears the marks for the next period.
func (r *Raft) checkQuorumActive() bool {
	active := map[NodeID]bool{}
	for id, pr := range r.progress {
		if id == r.id || pr.RecentActive {
			active[id] = true
		}
		if id != r.id {
			pr.RecentActive = false
		}
	}
	return r.voters.voteResult(active) == VoteWon
}

// hup starts an election: a pre-vote first unless disabled or the election
// follows a leadership transfer.
func (r *Raft) hup(transfer bool) {
	if r.role == RoleLeader {
		r.logger.Debug("ignoring campaign: already leader")
		return
	}
	if !r.promotable() {
		r.logger.Warn("not campaigning: not a voter", "term", uint64(r.Term))
		return
	}
	if (!r.cfg.DisablePreVote || !r.isVoter(r.id)) && !transfer {
		// A removed voter always asks first: it must not raise anyone's
		// term unless it could win.
		r.campaign(RolePreCandidate, false)
		return
	}
	r.campaign(RoleCandidate, transfer)
}

// campaign becomes a (pre-)candidate and asks every other voter. Our own
// vote is a response like any other: it counts once the Ready that
// persists it has been advanced.
func (r *Raft) campaign(role Role, transfer bool) {
	var term Term
	var voteType MessageType
	if role == RolePreCandidate {
		r.becomePreCandidate()
		term, voteType = r.Term+1, MsgPreVote
	} else {
		r.becomeCandidate()
		term, voteType = r.Term, MsgVote
	}
	if mutant == "early_self_vote" {
		r.votes[r.id] = true
	}
	r.send(Message{To: r.id, Term: term, Type: voteRespType(voteType)})
	var ctx []byte
	if transfer {
		ctx = []byte(campaignTransfer)
	}
	lastIndex, lastTerm := r.log.lastIndex(), r.log.lastTerm()
	for _, id := range r.voters.ids() {
		if id == r.id {
			continue
		}
		r.logger.Debug("requesting vote", "to", uint64(id), "term", uint64(term), "msg_type", voteType.String())
		r.send(Message{To: id, Term: term, Type: voteType, Index: lastIndex, LogTerm: lastTerm, Context: ctx})
	}
}

func voteRespType(t MessageType) MessageType {
	if t == MsgPreVote {
		return MsgPreVoteResp
	}
	return MsgVoteResp
}

// handleVote decides a (pre-)vote request (Raft §5.2, §5.4.1). A vote is
// granted if we have not voted for someone else in this term (a pre-vote
// for a later term is always eligible) and the candidate's log is at least
// as up to date as ours.
func (r *Raft) handleVote(m Message) {
	canVote := r.Vote == m.From ||
		(r.Vote == None && r.lead == None) ||
		(m.Type == MsgPreVote && m.Term > r.Term)
	if canVote && (r.log.isUpToDate(m.Index, m.LogTerm) || mutant == "vote_without_uptodate") {
		r.logger.Debug("granting vote", "to", uint64(m.From), "term", uint64(m.Term), "msg_type", m.Type.String())
		// The response carries the request's term: a pre-candidate has not
		// moved to it, and must still recognise the grant as current.
		r.send(Message{To: m.From, Term: m.Term, Type: voteRespType(m.Type)})
		if m.Type == MsgVote {
			r.electionElapsed = 0
			r.Vote = m.From
		}
		return
	}
	r.logger.Debug("rejecting vote", "to", uint64(m.From), "term", uint64(m.Term), "msg_type", m.Type.String())
	r.send(Message{To: m.From, Term: r.Term, Type: voteRespType(m.Type), Reject: true})
}

// poll records a vote and returns the election's result so far.
func (r *Raft) poll(id NodeID, granted bool) VoteResult {
	if _, ok := r.votes[id]; !ok {
		r.votes[id] = granted
	}
	return r.voters.voteResult(r.votes)
}

// maybeLeadOnceDurable makes a candidate that won before its term was
// durable the leader, now that Advance reported it durable.
func (r *Raft) maybeLeadOnceDurable() {
	if r.role == RoleCandidate && r.durableTerm == r.Term && r.voters.voteResult(r.votes) == VoteWon {
		r.becomeLeader()
	}
}

// handleVoteResp counts a (pre-)vote response in a (pre-)candidate.
func (r *Raft) handleVoteResp(m Message) {
	switch r.poll(m.From, !m.Reject) {
	case VoteWon:
		if r.role == RolePreCandidate {
			r.campaign(RoleCandidate, false)
			return
		}
		if r.durableTerm < r.Term {
			// Won on others' votes, but our own term and vote are not
			// durable yet (a host that writes in the background steps
			// the answers meanwhile). A leader that crashed now would
			// come back in the term before, could win this term again
			// and write a second, different entry at an index where its
			// followers keep the first. Advance makes us leader.
			return
		}
		r.becomeLeader()
	case VoteLost:
		// A rejection carrying a later term already made us a follower.
		r.becomeFollower(r.Term, None)
	}
}
