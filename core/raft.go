package core

import (
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
)

// Raft is one node's consensus state machine. It is not safe for concurrent
// use: one goroutine owns it. It does no I/O; see the package doc for the
// Ready contract that a host follows.
type Raft struct {
	id NodeID

	// Term and Vote are persisted (with log.committed) as HardState.
	Term Term
	Vote NodeID

	log *raftLog

	role Role
	lead NodeID

	// voters is the configuration that decides commit and elections;
	// learners receive the log but do not vote.
	voters       jointConfig
	learners     []NodeID
	learnersNext []NodeID
	autoLeave    bool
	progress     map[NodeID]*progress
	// memberIDs is every key of progress, sorted: messages to members go
	// out in this order, so that a run is deterministic.
	memberIDs []NodeID
	// votes received in the current (pre-)election: true granted.
	votes map[NodeID]bool

	// leadTransferee is the member a leadership transfer goes to; None when
	// no transfer is under way.
	leadTransferee NodeID
	// pendingConfIndex is the index of the latest configuration change the
	// leader proposed; another may not be proposed until it is applied.
	pendingConfIndex Index
	// uncommittedSize is the payload in the leader's uncommitted tail.
	uncommittedSize uint64
	// bcastPending asks for appends to every follower when the next Ready
	// is built: new entries or a new commit index wait to be sent.
	bcastPending bool

	electionElapsed  int // ticks since the last reset; the leader's check-quorum clock
	heartbeatElapsed int // leader only
	// randomizedElectionTimeout is in [electionTimeout, 2*electionTimeout).
	randomizedElectionTimeout int
	rng                       *rand.Rand

	cfg Config // with defaults

	// msgs go to other nodes with the next Ready. msgsAfterAppend are
	// responses to ourselves (our vote, our append acknowledgement) that
	// count only once the next Ready is durable; Ready moves them to
	// stepsOnAdvance and Advance delivers them.
	msgs            []Message
	msgsAfterAppend []Message
	stepsOnAdvance  []Message
	readStates      []ReadState
	droppedProps    []Entry

	// reads is the leader's state for reads; readsForwarded the contexts
	// of reads this node forwarded to its leader, not yet answered.
	reads          readOnly
	readsForwarded [][]byte
	// leaseTick counts the leader's ticks in its term, from 1; heartbeats
	// carry it, and responses echo it (see leaseValid).
	leaseTick uint64
	// transferStarted is set once this leader sent MsgTimeoutNow in its
	// term: from then on its lease is not to be trusted for reads.
	transferStarted bool
	// removedVoter is set when the configuration this node applied last
	// took away its vote (not to a learner). Such a node may still
	// campaign, by pre-vote only: when a joint configuration is left, the
	// removed voters may hold the longest logs while the remaining ones,
	// not yet knowing the leave committed, still need their votes; if none
	// of them could lead, the cluster would have no leader for good. A
	// leader that is not a voter hands leadership to the best voter as
	// soon as it has committed an entry of its term.
	removedVoter bool

	// What the outstanding Ready handed out, applied by Advance.
	readyOutstanding bool
	inProgressEntry  entryID // last entry handed out for persisting
	inProgressSnap   Index
	inProgressTerm   Term // term of the hard state handed out, 0 if none
	prevSoft         SoftState
	prevHard         HardState
	// durableTerm is the term of the last hard state made durable: found
	// in storage at start, then reported by Advance. A candidate leads only
	// once its term (and the vote for itself written with it) is durable.
	durableTerm Term

	logger *slog.Logger
}

// entryID names an entry by (term, index).
type entryID struct {
	term  Term
	index Index
}

// New returns a Raft for cfg.ID, restored from cfg.Storage: its hard state,
// the configuration of its last snapshot, and its entries. A founding member
// of a new cluster starts from a storage holding a snapshot at index 1, term
// 1 with the initial configuration and hard state {Term: 1, Commit: 1}; a
// member joining later starts from an empty storage.
func New(cfg Config) (*Raft, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	c := cfg.withDefaults()
	log, err := newLog(c.Storage, c.MaxApplyBytes)
	if err != nil {
		return nil, err
	}
	hs, cs, err := c.Storage.InitialState()
	if err != nil {
		return nil, fmt.Errorf("core: storage initial state: %w", err)
	}
	r := &Raft{
		id:       c.ID,
		log:      log,
		cfg:      c,
		logger:   c.Logger.With("node_id", uint64(c.ID)),
		rng:      rand.New(rand.NewPCG(c.Seed, uint64(c.ID))),
		progress: map[NodeID]*progress{},
		votes:    map[NodeID]bool{},
	}
	if err := r.restoreConfState(cs); err != nil {
		return nil, err
	}
	if err := r.loadSnapshotIndex(); err != nil {
		return nil, err
	}
	if err := r.loadHardState(hs); err != nil {
		return nil, err
	}
	snapIndex := r.log.applied
	if err := r.loadApplied(c.Applied); err != nil {
		return nil, err
	}
	if err := r.replayConfChanges(snapIndex, r.log.applied); err != nil {
		return nil, err
	}
	r.becomeFollower(r.Term, None)
	r.prevHard = r.hardState()
	r.durableTerm = r.prevHard.Term
	r.prevSoft = r.softState()
	r.logger.Info("started", "term", uint64(r.Term), "commit", uint64(r.log.committed),
		"applied", uint64(r.log.applied), "last_index", uint64(r.log.lastIndex()),
		"voters", fmt.Sprint(r.voters[0]))
	return r, nil
}

// loadSnapshotIndex starts commit and applied at the storage's snapshot,
// which may stand past the point the log was compacted at.
func (r *Raft) loadSnapshotIndex() error {
	snap, err := r.log.storage.Snapshot()
	if err != nil {
		// Even ErrUnavailable: the configuration InitialState returned is
		// the snapshot's, and which changes to replay on top of it depends
		// on the snapshot's index. Start again once it is there.
		return fmt.Errorf("core: storage snapshot: %w", err)
	}
	i := snap.Meta.Index
	if i <= r.log.committed {
		return nil
	}
	if last := r.log.lastIndex(); i > last {
		return fmt.Errorf("core: storage snapshot at %d is past its last index %d", i, last)
	}
	r.log.committed, r.log.applying, r.log.applied = i, i, i
	return nil
}

// loadApplied takes the host's word for what its state machine applied
// before the restart. Whatever it applied was committed, so a durable
// commit index behind it (written lazily, and lost) moves up to it.
func (r *Raft) loadApplied(applied Index) error {
	if applied == 0 {
		return nil
	}
	if applied < r.log.applied {
		return fmt.Errorf("%w: Applied %d is behind the storage's snapshot at %d: restore the snapshot into the state machine and pass its index",
			ErrConfig, applied, r.log.applied)
	}
	if last := r.log.lastIndex(); applied > last {
		// The state machine is ahead of the log: the entries in between
		// were lost (written without fsync). They are still on a quorum,
		// but core cannot skip what it does not hold; the host will be
		// handed them again and must ignore those it already applied.
		r.logger.Warn("applied index is past the last entry; entries will be handed out again",
			"applied", uint64(applied), "last_index", uint64(last))
		applied = last
	}
	r.log.committed = max(r.log.committed, applied)
	r.log.applied, r.log.applying = applied, applied
	return nil
}

// replayConfChanges brings the configuration from the snapshot's up to
// date with the changes the host applied after it, up to Applied: the
// host will not apply those entries again.
func (r *Raft) replayConfChanges(from, to Index) error {
	for lo := from + 1; lo <= to; {
		ents, err := r.log.slice(lo, to+1, r.cfg.MaxApplyBytes)
		if err != nil || len(ents) == 0 {
			return fmt.Errorf("core: reading entries [%d, %d] to restore the configuration: %v", lo, to, err)
		}
		for _, e := range ents {
			if e.Type != EntryConfChange {
				continue
			}
			var cc ConfChange
			if err := cc.Unmarshal(e.Data); err != nil {
				r.logger.Warn("skipping undecodable conf change", "index", uint64(e.Index), "err", err)
				continue
			}
			cs, err := changeConf(r.confState(), cc)
			if err != nil {
				continue // refused when it was applied, too
			}
			if err := r.restoreConfState(cs); err != nil {
				return err
			}
		}
		lo = ents[len(ents)-1].Index + 1
	}
	return nil
}

// loadHardState restores term, vote and commit. A commit past the durable
// log (possible when entries were written without fsync and lost) is cut
// back to the log's end rather than refused: the missing entries are still
// on a quorum, and the leader will send them again.
func (r *Raft) loadHardState(hs HardState) error {
	if hs.IsEmpty() {
		return nil
	}
	r.Term, r.Vote = hs.Term, hs.Vote
	commit := hs.Commit
	if last := r.log.lastIndex(); commit > last {
		r.logger.Warn("persisted commit is past the last entry; entries were lost, the leader will repair them",
			"commit", uint64(commit), "last_index", uint64(last))
		commit = last
	}
	if commit < r.log.committed {
		commit = r.log.committed // never behind the snapshot
	}
	r.log.committed = commit
	return nil
}

// restoreConfState installs a configuration, as found in a snapshot.
func (r *Raft) restoreConfState(cs ConfState) error {
	if err := checkConfState(cs); err != nil {
		return err
	}
	r.setConf(cs)
	r.resetProgress()
	return nil
}

// setConf makes cs the configuration in force (its membership fields only;
// the caller rebuilds progress).
func (r *Raft) setConf(cs ConfState) {
	wasVoter := r.isVoter(r.id)
	r.voters = jointConfig{newMajorityConfig(cs.Voters), newMajorityConfig(cs.VotersOutgoing)}
	r.learners = newMajorityConfig(cs.Learners)
	r.learnersNext = newMajorityConfig(cs.LearnersNext)
	r.autoLeave = cs.AutoLeave
	r.noteMembership(wasVoter)
}

// noteMembership updates removedVoter after a configuration change.
func (r *Raft) noteMembership(wasVoter bool) {
	switch {
	case r.isVoter(r.id) || slices.Contains(r.learners, r.id):
		r.removedVoter = false
	case wasVoter:
		r.removedVoter = true
	}
}

// resetProgress rebuilds the progress of every member as a new leader sees
// it: nothing known to match, next after the last entry.
func (r *Raft) resetProgress() { r.rebuildProgress(nil, false) }

// rebuildProgress gives every member of the configuration in force a
// progress: the one in keep if it has one, else a fresh one (nothing known
// to match, next after the last entry), marked recently active if
// newActive.
func (r *Raft) rebuildProgress(keep map[NodeID]*progress, newActive bool) {
	next := r.log.lastIndex() + 1
	members := slices.Concat(r.voters.ids(), r.learners)
	slices.Sort(members)
	members = slices.Compact(members)
	prs := make(map[NodeID]*progress, len(members))
	for _, id := range members {
		pr := keep[id]
		if pr == nil {
			pr = &progress{
				Next:         next,
				State:        StateProbe,
				Inflights:    newInflights(r.cfg.MaxInflightMsgs, r.cfg.MaxInflightBytes),
				RecentActive: newActive,
			}
		}
		pr.IsLearner = slices.Contains(r.learners, id)
		prs[id] = pr
	}
	r.progress, r.memberIDs = prs, members
}

// members returns every member with progress, sorted, so that messages go
// out in a deterministic order. The caller must not modify it.
func (r *Raft) members() []NodeID { return r.memberIDs }

func (r *Raft) hardState() HardState {
	return HardState{Term: r.Term, Vote: r.Vote, Commit: r.log.committed}
}

func (r *Raft) softState() SoftState { return SoftState{Lead: r.lead, Role: r.role} }

// promotable reports whether this node may campaign: it is a voter, or a
// voter just removed by the configuration it applied last (see
// removedVoter).
func (r *Raft) promotable() bool {
	return r.isVoter(r.id) || (r.removedVoter && len(r.voters[0]) > 0)
}

// Tick advances the logical clock by one tick: followers and candidates
// count towards an election, leaders towards a heartbeat and check-quorum.
func (r *Raft) Tick() {
	if r.role == RoleLeader {
		r.tickHeartbeat()
		return
	}
	r.tickElection()
}

// TransferLeadership asks the leader to hand leadership to voter `to`:
// the leader brings it up to date, then tells it to campaign at once (its
// vote requests get past the leases of members that still hear from the
// leader). Proposals are refused while the transfer runs; one that has not
// finished within an election timeout is abandoned. On a follower it is
// passed to the leader if `to` is this node, and ignored otherwise; the
// outcome shows in SoftState.
func (r *Raft) TransferLeadership(to NodeID) {
	_ = r.step(Message{Type: MsgTransferLeader, From: to})
}

// Campaign starts an election now (with a pre-vote first unless disabled).
// A node that is not a voter, or is already leader, does nothing.
func (r *Raft) Campaign() error {
	return r.step(Message{Type: MsgHup, From: r.id})
}

// Propose asks the leader to append data. It returns ErrTooLarge for data
// over MaxEntryBytes and ErrProposalDropped when the proposal is not taken;
// nil means the entry is in the leader's log and will be in the next
// Ready's Entries (it may still fail to commit if leadership changes).
func (r *Raft) Propose(data []byte) error {
	if uint64(len(data)) > r.cfg.MaxEntryBytes {
		return fmt.Errorf("%w: %d bytes, limit %d", ErrTooLarge, len(data), r.cfg.MaxEntryBytes)
	}
	return r.step(Message{
		Type:    MsgProp,
		From:    r.id,
		Entries: []Entry{{Type: EntryNormal, Data: data}},
	})
}

// Step feeds in a message from a peer. A message for another node, of a
// local type, or malformed is refused with an error (wrapping ErrMisrouted,
// ErrStepLocalMsg or ErrMalformed) and changes nothing; a stale message is
// ignored, as Raft says.
func (r *Raft) Step(m Message) error {
	if err := r.validate(&m); err != nil {
		return err
	}
	return r.step(m)
}

// validate checks what must hold of any message that came over a network.
func (r *Raft) validate(m *Message) error {
	malformed := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s from %d: %s", ErrMalformed, m.Type, m.From, fmt.Sprintf(format, args...))
	}
	switch {
	case m.Type.IsLocal():
		return fmt.Errorf("%w: %s", ErrStepLocalMsg, m.Type)
	case m.Type == 0 || m.Type >= msgTypeEnd:
		return fmt.Errorf("%w: unknown type %d", ErrMalformed, uint8(m.Type))
	case m.To != r.id:
		return fmt.Errorf("core: %s for %d delivered to %d: %w", m.Type, m.To, r.id, ErrMisrouted)
	case m.From == None || m.From == r.id:
		return malformed("bad sender")
	case m.Term == 0 && m.Type != MsgProp && m.Type != MsgPropDropped:
		return malformed("term 0")
	case m.Term != 0 && (m.Type == MsgProp || m.Type == MsgPropDropped):
		return malformed("a proposal carries no term")
	case (m.Type == MsgProp || m.Type == MsgPropDropped) && len(m.Entries) == 0:
		return malformed("no entries")
	case m.Type == MsgSnap && (m.Snapshot == nil || m.Snapshot.Meta.Index == 0 || m.Snapshot.Meta.Term > m.Term):
		return malformed("bad snapshot")
	}
	for i := range m.Entries {
		e := &m.Entries[i]
		if e.Type != EntryNormal && e.Type != EntryConfChange {
			return malformed("entry %d has unknown type %d", i, uint8(e.Type))
		}
	}
	if m.Type != MsgApp || len(m.Entries) == 0 {
		return nil
	}
	prevTerm := m.LogTerm
	for i := range m.Entries {
		e := &m.Entries[i]
		if e.Index != m.Index+1+Index(i) {
			return malformed("entry %d has index %d after %d", i, e.Index, m.Index)
		}
		if e.Term == 0 || e.Term < prevTerm || e.Term > m.Term {
			return malformed("entry %d term %d out of order (previous %d, message %d)", e.Index, e.Term, prevTerm, m.Term)
		}
		prevTerm = e.Term
	}
	return nil
}

// step runs a message through the term rules of Raft, then the role.
func (r *Raft) step(m Message) error {
	switch {
	case m.Term == 0:
		// Local message or proposal.
	case m.Term > r.Term:
		if m.Type == MsgVote || m.Type == MsgPreVote {
			if r.inLease() && !m.isTransferVote() {
				// We hear from a live leader: a vote request now is from a
				// node that is disrupting, not replacing, it.
				r.logger.Debug("ignoring vote request in lease", "from", uint64(m.From),
					"term", uint64(m.Term), "msg_type", m.Type.String())
				return nil
			}
		}
		switch {
		case m.Type == MsgPreVote:
			// Pre-votes never change anyone's term.
		case m.Type == MsgPreVoteResp && !m.Reject:
			// A granted pre-vote carries the term we would campaign in; we
			// move to it when the pre-vote is won, not before.
		case m.Type == MsgApp || m.Type == MsgHeartbeat || m.Type == MsgSnap:
			r.becomeFollower(m.Term, m.From)
		default:
			r.becomeFollower(m.Term, None)
		}
	case m.Term < r.Term && mutant != "accept_stale_term":
		r.stepStale(m)
		return nil
	}

	switch m.Type {
	case MsgHup:
		r.hup(false)
		return nil
	case MsgVote, MsgPreVote:
		r.handleVote(m)
		return nil
	case MsgPropDropped:
		r.logger.Debug("forwarded proposal dropped by the leader", "from", uint64(m.From), "entries", len(m.Entries))
		r.droppedProps = append(r.droppedProps, m.Entries...)
		return nil
	case MsgReadIndexResp:
		r.handleReadIndexResp(m)
		return nil
	}
	switch r.role {
	case RoleLeader:
		return r.stepLeader(m)
	case RoleCandidate, RolePreCandidate:
		return r.stepCandidate(m)
	default:
		return r.stepFollower(m)
	}
}

// stepStale answers a message from an older term where that helps the
// sender catch up; otherwise it drops it.
func (r *Raft) stepStale(m Message) {
	switch {
	case (m.Type == MsgApp || m.Type == MsgHeartbeat) && (!r.cfg.DisableCheckQuorum || !r.cfg.DisablePreVote):
		// A deposed leader that we no longer answer would never learn of
		// the new term if pre-vote or check-quorum keeps everyone else
		// from raising terms; tell it.
		r.send(Message{To: m.From, Type: MsgAppResp})
	case m.Type == MsgPreVote:
		// Rejecting with our term lets the pre-candidate catch up.
		r.send(Message{To: m.From, Term: r.Term, Type: MsgPreVoteResp, Reject: true})
	default:
		r.logger.Debug("ignoring message from older term", "from", uint64(m.From),
			"term", uint64(m.Term), "msg_type", m.Type.String())
	}
}

// inLease reports whether this node heard from a live leader within an
// election timeout, under check-quorum.
func (r *Raft) inLease() bool {
	if mutant == "no_lease" {
		return false
	}
	return !r.cfg.DisableCheckQuorum && r.lead != None && r.electionElapsed < r.cfg.ElectionTicks
}

// send queues m for the next Ready, filling in From and, for all but votes
// and proposals, Term. A response to ourselves is held until the write it
// acknowledges is durable.
func (r *Raft) send(m Message) {
	m.From = r.id
	switch m.Type {
	case MsgVote, MsgVoteResp, MsgPreVote, MsgPreVoteResp:
		if m.Term == 0 {
			panicf("%s sent without a term", m.Type)
		}
	case MsgProp, MsgPropDropped:
	default:
		m.Term = r.Term
	}
	if m.To == r.id {
		if !m.Type.IsResponse() {
			panicf("%s sent to self", m.Type)
		}
		if n := len(r.msgsAfterAppend); n > 0 && m.Type == MsgAppResp {
			// Acknowledgements only grow: the last one of a term says all
			// that the ones before it said.
			if last := &r.msgsAfterAppend[n-1]; last.Type == MsgAppResp && last.Term == m.Term && !last.Reject {
				last.Index = max(last.Index, m.Index)
				return
			}
		}
		r.msgsAfterAppend = append(r.msgsAfterAppend, m)
		return
	}
	r.msgs = append(r.msgs, m)
}

func (r *Raft) reset(term Term) {
	r.dropAllReads()
	r.transferStarted = false
	if r.Term != term {
		r.Term = term
		r.Vote = None
	}
	r.lead = None
	r.electionElapsed = 0
	r.heartbeatElapsed = 0
	r.resetRandomizedElectionTimeout()
	r.leadTransferee = None
	clear(r.votes)
	r.resetProgress()
	r.pendingConfIndex = 0
	r.uncommittedSize = 0
	r.bcastPending = false
}

func (r *Raft) resetRandomizedElectionTimeout() {
	r.randomizedElectionTimeout = r.cfg.ElectionTicks + r.rng.IntN(r.cfg.ElectionTicks)
	if mutant == "fixed_election_timeout" {
		r.randomizedElectionTimeout = r.cfg.ElectionTicks
	}
}

func (r *Raft) becomeFollower(term Term, lead NodeID) {
	r.reset(term)
	r.role = RoleFollower
	r.lead = lead
	r.logger.Debug("became follower", "term", uint64(term), "lead", uint64(lead))
}

func (r *Raft) becomePreCandidate() {
	if r.role == RoleLeader {
		panicf("leader cannot become pre-candidate")
	}
	// A pre-candidate keeps its term and vote and only asks.
	r.role = RolePreCandidate
	r.lead = None
	clear(r.votes)
	r.logger.Info("became pre-candidate", "term", uint64(r.Term))
}

func (r *Raft) becomeCandidate() {
	if r.role == RoleLeader {
		panicf("leader cannot become candidate")
	}
	r.reset(r.Term + 1)
	r.Vote = r.id
	r.role = RoleCandidate
	r.logger.Info("became candidate", "term", uint64(r.Term))
}

func (r *Raft) becomeLeader() {
	if r.role == RoleFollower {
		panicf("follower cannot become leader without an election")
	}
	r.reset(r.Term)
	r.role = RoleLeader
	r.lead = r.id
	r.leaseTick = 1
	// Our own progress: nothing counts until a write of ours is durable;
	// the empty entry below is acknowledged after its Ready is advanced.
	if pr := r.progress[r.id]; pr != nil {
		pr.becomeReplicate()
		pr.RecentActive = true
	}
	// Entries of older terms may be committed only through one of ours.
	r.pendingConfIndex = r.log.lastIndex()
	if !r.appendEntry(Entry{Type: EntryNormal}) {
		panicf("empty entry refused")
	}
	r.logger.Info("became leader", "term", uint64(r.Term), "last_index", uint64(r.log.lastIndex()))
}

// appendEntry adds proposals to the leader's log; it refuses (false) when
// the uncommitted tail is over MaxUncommittedBytes. The leader's own
// acknowledgement waits for the write.
func (r *Raft) appendEntry(es ...Entry) bool {
	var size uint64
	for i := range es {
		size += es[i].payloadSize()
	}
	if max := r.cfg.MaxUncommittedBytes; max > 0 && mutant != "uncommitted_unbounded" && r.uncommittedSize > 0 && r.uncommittedSize+size > max {
		// An empty tail always takes one proposal, however large, so that
		// a limit below MaxEntryBytes cannot wedge the leader.
		return false
	}
	r.uncommittedSize += size
	last := r.log.lastIndex()
	for i := range es {
		es[i].Term = r.Term
		es[i].Index = last + 1 + Index(i)
	}
	last = r.log.append(es...)
	// Appends go out when the Ready is built, so that every proposal taken
	// until then travels in one message per follower.
	r.bcastPending = true
	if mutant == "early_self_ack" {
		r.progress[r.id].maybeUpdate(last)
	}
	r.send(Message{To: r.id, Type: MsgAppResp, Index: last})
	return true
}

// ReportUnreachable tells the leader that the last message to id did not
// arrive; replication to it falls back to probing.
func (r *Raft) ReportUnreachable(id NodeID) {
	if r.role != RoleLeader {
		return
	}
	pr := r.progress[id]
	if pr == nil || id == r.id {
		return
	}
	r.logger.Debug("peer unreachable", "peer", uint64(id))
	if pr.State == StateReplicate {
		pr.becomeProbe()
	}
}

// ReportSnapshot tells the leader whether the snapshot sent to id arrived.
// Either way the follower is probed again (after a success, from the
// snapshot on); after a failure, the next heartbeat response resumes it.
func (r *Raft) ReportSnapshot(id NodeID, ok bool) {
	if r.role != RoleLeader {
		return
	}
	pr := r.progress[id]
	if pr == nil || pr.State != StateSnapshot {
		return
	}
	if !ok {
		pr.PendingSnapshot = 0
	}
	pr.becomeProbe()
	// Wait for a heartbeat response (or the answer to the snapshot) before
	// sending more, so a follower that lost it is not flooded.
	pr.MsgAppFlowPaused = true
}
