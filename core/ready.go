package core

// Ready is a batch of work for the host: what to persist, send and apply.
// See the package doc for the order in which a host does it.
type Ready struct {
	// SoftState is the new leader and role; nil when unchanged.
	SoftState *SoftState
	// HardState is the term, vote and commit to persist; zero when
	// unchanged.
	HardState HardState
	// Snapshot is an incoming snapshot to persist and restore; zero when
	// none. It comes before any committed entry past it.
	Snapshot Snapshot
	// Entries are to be appended to storage. The first may replace a suffix
	// of the stored log: everything from its index on is overwritten.
	Entries []Entry
	// CommittedEntries are to be applied, in order.
	CommittedEntries []Entry
	// Messages are to be sent. Those whose Type.IsResponse() may leave only
	// after this Ready's write is durable; the others may leave at once.
	Messages []Message
	// ReadStates answer read requests.
	ReadStates []ReadState
	// DroppedProposals are proposals this node forwarded that the leader
	// did not take; they will not commit, and the host can fail them now.
	DroppedProposals []Entry
	// MustSync says that the write must be fsynced before anything that
	// depends on it: term, vote or entries changed.
	MustSync bool
}

// HasReady reports whether Ready would return any work.
func (r *Raft) HasReady() bool {
	if r.readyOutstanding {
		return false
	}
	if r.softState() != r.prevSoft || r.bcastPending {
		return true
	}
	if r.hardState() != r.prevHard {
		return true
	}
	return r.log.unstable.nextSnapshot() != nil ||
		len(r.log.unstable.nextEntries()) > 0 ||
		len(r.msgs) > 0 || len(r.msgsAfterAppend) > 0 ||
		len(r.readStates) > 0 || len(r.droppedProps) > 0 ||
		(r.log.unstable.snapshot == nil && r.log.hasNextCommittedEnts())
}

// Ready returns the work accumulated since the last Ready and marks it as
// handed out. The host must call Advance before the next Ready; in between
// it may keep calling Step, Tick and Propose.
func (r *Raft) Ready() Ready {
	if r.readyOutstanding {
		panicf("Ready called again before Advance")
	}
	if r.bcastPending {
		r.bcastPending = false
		r.bcastAppend()
	}
	rd := Ready{
		Entries:          r.log.unstable.nextEntries(),
		Messages:         r.msgs,
		ReadStates:       r.readStates,
		DroppedProposals: r.droppedProps,
	}
	if ss := r.softState(); ss != r.prevSoft {
		rd.SoftState = &ss
		r.prevSoft = ss
	}
	hs := r.hardState()
	if hs != r.prevHard {
		rd.HardState = hs
		rd.MustSync = (hs.Term != r.prevHard.Term || hs.Vote != r.prevHard.Vote) && mutant != "no_mustsync_hardstate"
		r.prevHard = hs
		r.inProgressTerm = hs.Term
	}
	if s := r.log.unstable.nextSnapshot(); s != nil {
		rd.Snapshot = *s
		r.inProgressSnap = s.Meta.Index
		rd.MustSync = true
	} else {
		// Committed entries wait until an incoming snapshot is in place.
		rd.CommittedEntries = r.log.nextCommittedEnts()
	}
	// What earlier writes made durable: everything before this Ready's
	// entries (all handed out before were written), nothing with a
	// snapshot.
	r.log.durableTo = r.log.lastIndex()
	if n := len(rd.Entries); n > 0 {
		last := rd.Entries[n-1]
		r.inProgressEntry = entryID{term: last.Term, index: last.Index}
		rd.MustSync = true
		r.log.durableTo = rd.Entries[0].Index - 1
	}
	if !rd.Snapshot.IsEmpty() {
		r.log.durableTo = 0
	}
	r.handOut(rd.CommittedEntries)
	r.log.unstable.acceptInProgress()
	r.msgs = nil
	r.readStates = nil
	r.droppedProps = nil
	r.stepsOnAdvance = r.msgsAfterAppend
	r.msgsAfterAppend = nil
	r.readyOutstanding = true
	return rd
}

// Advance tells core that the host has done what the last Ready asked:
// persisted it (durably, if MustSync), sent its messages and handed its
// committed entries to the application. Only now do our own vote and our
// own append acknowledgement count. rd must be that Ready; core remembers
// what it handed out and does not trust rd's contents.
func (r *Raft) Advance(rd Ready) {
	_ = rd
	if !r.readyOutstanding {
		panicf("Advance without an outstanding Ready")
	}
	r.readyOutstanding = false
	if r.inProgressSnap != 0 {
		r.log.unstable.stableSnapTo(r.inProgressSnap)
		r.log.applying = max(r.log.applying, r.inProgressSnap)
		r.log.applied = max(r.log.applied, r.inProgressSnap)
		r.inProgressSnap = 0
	}
	if r.inProgressEntry.index != 0 {
		r.log.unstable.stableTo(r.inProgressEntry.index, r.inProgressEntry.term)
		r.inProgressEntry = entryID{}
	}
	if r.log.applying > r.log.applied {
		r.log.appliedTo(r.log.applying)
	}
	if r.inProgressTerm != 0 {
		r.durableTerm, r.inProgressTerm = r.inProgressTerm, 0
	}
	steps := r.stepsOnAdvance
	r.stepsOnAdvance = nil
	for _, m := range steps {
		if err := r.step(m); err != nil {
			panicf("stepping our own %s: %v", m.Type, err)
		}
	}
	r.maybeLeadOnceDurable()
	r.maybeAutoLeave()
}

// HasPartialReady reports whether PartialReady would return any work.
func (r *Raft) HasPartialReady() bool {
	if !r.readyOutstanding {
		return false
	}
	if r.bcastPending || len(r.readStates) > 0 || len(r.droppedProps) > 0 || r.softState() != r.prevSoft {
		return true
	}
	for i := range r.msgs {
		if !r.msgs[i].Type.IsResponse() {
			return true
		}
	}
	return r.log.stableCommitted() > r.log.applying
}

// PartialReady returns, while the last Ready's write is under way, the work
// that does not depend on that write: messages that may leave at once (not
// responses: those wait for the next Ready and its write), read states,
// dropped proposals, a new leader or role, and committed entries that an
// earlier write already made durable here. It never holds entries to
// persist, a hard state or a snapshot; those come in the next Ready.
//
// The host sends the messages and applies the committed entries at once,
// after any committed entries of the outstanding Ready that lie below that
// Ready's Entries (those are durable too; see the package doc); there is no
// Advance for a partial Ready. The entries it hands out, and those of the
// outstanding Ready that were durable already, count as applied when it
// returns. A host that writes synchronously never needs it.
func (r *Raft) PartialReady() Ready {
	if !r.readyOutstanding {
		panicf("PartialReady without an outstanding Ready")
	}
	// The host applied the outstanding Ready's committed entries that were
	// durable already before it asked (see the package doc).
	if a := min(r.log.applying, r.log.durableTo); a > r.log.applied {
		r.log.appliedTo(a)
	}
	if r.bcastPending {
		r.bcastPending = false
		r.bcastAppend()
	}
	rd := Ready{ReadStates: r.readStates, DroppedProposals: r.droppedProps}
	if ss := r.softState(); ss != r.prevSoft {
		rd.SoftState = &ss
		r.prevSoft = ss
	}
	// Responses stay, in order, for the next Ready.
	keep := r.msgs[:0]
	for _, m := range r.msgs {
		if m.Type.IsResponse() {
			keep = append(keep, m)
		} else {
			rd.Messages = append(rd.Messages, m)
		}
	}
	clear(r.msgs[len(keep):])
	r.msgs = keep
	if ents := r.log.committedEntsTo(r.log.stableCommitted()); len(ents) > 0 {
		rd.CommittedEntries = ents
		r.handOut(ents)
		r.log.appliedTo(r.log.applying)
		r.maybeAutoLeave()
	}
	r.readStates = nil
	r.droppedProps = nil
	return rd
}

// DurableCommitted returns the committed entries of rd that earlier writes
// made durable: those below rd.Entries[0].Index, all of them if rd carries
// no entries. A host that writes in the background may apply them before
// rd's write completes (see the package doc).
func (rd *Ready) DurableCommitted() []Entry {
	c := rd.CommittedEntries
	if len(rd.Entries) == 0 || len(c) == 0 {
		return c
	}
	// Committed entries are contiguous: the prefix is found by index.
	k := max(0, min(len(c), int(rd.Entries[0].Index)-int(c[0].Index)))
	return c[:k]
}

// handOut marks committed entries as handed to the host for applying.
func (r *Raft) handOut(ents []Entry) {
	if n := len(ents); n > 0 {
		r.log.applying = ents[n-1].Index
		if r.role == RoleLeader {
			r.reduceUncommittedSize(ents)
		}
	}
}

// LogTerm returns the term of entry i of this node's log as core holds it:
// written, being written, or not yet handed out for writing (a host that
// writes in the background keeps stepping, and a node may campaign on
// entries it holds only in memory, as it may send them). It returns
// ErrCompacted below the log and ErrUnavailable past it.
func (r *Raft) LogTerm(i Index) (Term, error) { return r.log.term(i) }

// reduceUncommittedSize releases the payload of committed entries from the
// leader's uncommitted budget. Only entries of our term were counted in it.
func (r *Raft) reduceUncommittedSize(ents []Entry) {
	var size uint64
	for i := range ents {
		if ents[i].Term == r.Term {
			size += ents[i].payloadSize()
		}
	}
	r.uncommittedSize -= min(size, r.uncommittedSize)
}

// Status is a snapshot of a node's state for observation.
type Status struct {
	ID NodeID
	HardState
	SoftState
	Applied Index
	// Config is the configuration in force (as applied).
	Config ConfState
	// Progress is the leader's view of each member; nil on non-leaders.
	Progress map[NodeID]Progress
	// LeadTransferee is the target of a leadership transfer under way on
	// this leader, or None.
	LeadTransferee NodeID
}

// Status returns the node's current state. It allocates; do not call it
// on a hot path.
func (r *Raft) Status() Status {
	s := Status{
		ID:        r.id,
		HardState: r.hardState(),
		SoftState: r.softState(),
		Applied:   r.log.applied,
		Config:    r.confState(),
	}
	if r.role == RoleLeader {
		s.LeadTransferee = r.leadTransferee
		s.Progress = make(map[NodeID]Progress, len(r.progress))
		for id, pr := range r.progress {
			s.Progress[id] = pr.public()
		}
	}
	return s
}
