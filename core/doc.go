// Package core is stepraft's Raft consensus state machine. It is pure: it
// does no I/O, reads no clock, starts no goroutine and draws all its
// randomness from Config.Seed, so the same inputs always give the same
// outputs. A host owns one *Raft per node and calls it from one goroutine.
//
// Inputs are Tick (the logical clock), Step (a message from a peer),
// Campaign, Propose, ProposeConfChange, ApplyConfChange, ReadIndex,
// TransferLeadership and the Report* calls. Outputs come as a Ready batch.
//
// # The Ready contract
//
// When HasReady reports work, the host takes rd := r.Ready() and then, in
// this order:
//
//  1. Persists rd.Snapshot (if not empty), rd.Entries (the first may replace
//     a suffix of the stored log) and rd.HardState (if not empty) to the
//     Storage it gave core, fsyncing if rd.MustSync.
//  2. Sends rd.Messages.
//  3. Applies rd.CommittedEntries to its state machine, in order (after
//     restoring rd.Snapshot, if any). For an EntryConfChange it decodes
//     the ConfChange (ConfChange.Unmarshal) and calls ApplyConfChange,
//     at that point of the order. It serves the reads of rd.ReadStates
//     once it has applied up to each one's Index, and fails those marked
//     Dropped and the proposals in rd.DroppedProposals.
//  4. Calls r.Advance(rd).
//
// A host may go faster where it is safe, as the Raft thesis (§10.2.1)
// allows: messages that are requests (MsgApp, MsgSnap, MsgHeartbeat,
// MsgVote, MsgPreVote, ...) may be sent before step 1 completes, in
// parallel with the write, and so may the answers to heartbeats and to
// forwarded reads (MsgHeartbeatResp, MsgReadIndexResp), which promise
// nothing durable. Messages for which Type.IsResponse() is true
// (MsgAppResp, MsgVoteResp, MsgPreVoteResp) must wait until the write is
// durable: they promise that it is.
//
// A node's own vote and its own append acknowledgement are responses too.
// Core counts a candidate's vote for itself, and a leader's match of its own
// log, only when Advance reports the Ready that carried them durable; and a
// candidate that the others' votes elect while its own term is not yet
// durable becomes leader only at that Advance. So a leader never commits,
// and a candidate never leads, on state a crash could take back.
//
// Between Ready and Advance the host may keep calling Step, Tick and
// Propose (the node package overlaps the next batch with the write), but
// must not call Ready again.
//
// # Writing off the loop
//
// A host that writes in the background goes further. The committed entries
// of rd below rd.Entries[0].Index (all of them if rd.Entries is empty and
// there is no snapshot; rd.DurableCommitted) are already durable here,
// from earlier writes, so it may apply them before the write completes.
// While the write is under way, HasPartialReady and PartialReady hand out what does not depend on
// it: requests to send, read states, dropped proposals, a new leader or
// role, and entries that became committed meanwhile and that an earlier
// write made durable (a leader learns of a follower's acknowledgement
// during its own next write, and applies without waiting for it).
// Responses produced meanwhile wait for the next Ready, whose write they
// promise.
//
// # Bootstrap and restart
//
// A founding member starts from a Storage holding a snapshot at index 1,
// term 1 whose ConfState names the initial voters, and hard state
// {Term: 1, Commit: 1}. On a MemoryStorage:
//
//	s := core.NewMemoryStorage()
//	s.ApplySnapshot(core.Snapshot{Meta: core.SnapshotMeta{Index: 1, Term: 1,
//		ConfState: core.ConfState{Voters: []core.NodeID{1, 2, 3}}}})
//	s.SetHardState(core.HardState{Term: 1, Commit: 1})
//	r, err := core.New(core.Config{ID: 1, Storage: s})
//
// A member joining an existing cluster starts from an empty Storage and an
// empty configuration, and takes entries and snapshots from the leader.
// A restarting member passes the Storage it persisted to and
// Config.Applied, the last index its state machine applied.
//
// # Reads, transfers and membership
//
// ReadIndex is linearizable by default (ReadOnlySafe): the leader answers
// only after it has committed an entry of its own term, and confirms that
// it still leads with a heartbeat round of its own for each request,
// answered by a quorum. ReadOnlyLeaseBased answers at once while the
// leader's check-quorum lease holds; it is linearizable only if no node's
// ticks run faster than the leader's by enough to let a new election time
// out before the leader's check-quorum notices (in practice: tick rates
// within a few percent of each other), and a leader stops using it for the
// rest of its term once it has started a leadership transfer, whose vote
// requests pass the leases. Followers forward reads and proposals to the
// leader (unless DisableProposalForwarding) and hear when the leader
// drops one.
//
// Membership changes take effect when applied, on every member alike; a
// change that the configuration in force then cannot take is refused by
// ApplyConfChange with an error, on every member alike. A leader takes one
// change at a time. A joint configuration entered with an automatic leave
// is left by the leader as soon as it has applied it. A leader that is no
// longer a voter hands leadership to the best voter once it applies the
// change. A removed voter may still ask for pre-votes (when a joint
// configuration is left it may hold the longest log, which the others
// need), but cannot disrupt a live leader. On restart core
// re-applies the changes between the storage's snapshot and Config.Applied
// from the log.
//
// # Errors and panics
//
// Anything that arrives from outside (a message, a stored state) is checked:
// a malformed or misrouted message is refused by Step with an error and
// changes nothing; a stale one is ignored as Raft prescribes. Core panics
// only on a broken invariant of its own or a failing Storage read, which the
// host cannot safely continue past.
package core
