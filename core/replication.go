package core

import "errors"

// sendAppend sends to follower `to` the entries after its Next, or a
// snapshot if they were compacted. It sends nothing while the follower is
// paused (probing, or a full inflight window), and an empty append only if
// it carries a commit index the follower has not been sent, or if
// sendIfEmpty (to probe). It reports whether a message was sent.
func (r *Raft) sendAppend(to NodeID, sendIfEmpty bool) bool {
	pr := r.progress[to]
	if pr == nil || to == r.id || pr.isPaused() {
		return false
	}
	prevIndex := pr.Next - 1
	prevTerm, err := r.log.term(prevIndex)
	if err != nil {
		return r.sendSnapshot(to, pr)
	}
	ents, err := r.log.entries(pr.Next, r.cfg.MaxMsgBytes)
	if err != nil {
		return r.sendSnapshot(to, pr)
	}
	if len(ents) == 0 && !sendIfEmpty && !pr.canBumpCommit(r.log.committed) {
		return false
	}
	var bytes uint64
	for i := range ents {
		bytes += ents[i].payloadSize()
	}
	r.send(Message{
		To:      to,
		Type:    MsgApp,
		Index:   prevIndex,
		LogTerm: prevTerm,
		Entries: ents,
		Commit:  r.log.committed,
	})
	pr.sentEntries(len(ents), bytes)
	pr.sentCommit = max(pr.sentCommit, min(r.log.committed, prevIndex+Index(len(ents))))
	return true
}

// sendSnapshot sends the storage's snapshot to a follower whose next entry
// was compacted, and holds replication to it until ReportSnapshot.
func (r *Raft) sendSnapshot(to NodeID, pr *progress) bool {
	if !pr.RecentActive {
		// Do not ship a snapshot to a follower we have not heard from.
		r.logger.Debug("not sending snapshot to inactive follower", "peer", uint64(to))
		return false
	}
	snap, err := r.log.storage.Snapshot()
	if errors.Is(err, ErrUnavailable) {
		r.logger.Debug("snapshot not ready; will retry", "peer", uint64(to))
		return false
	} else if err != nil {
		panicf("storage Snapshot failed: %v", err)
	}
	if snap.IsEmpty() || snap.Meta.Index+1 < r.log.firstIndex() {
		// The storage compacted past its snapshot: no message can bring
		// this follower back. Say so loudly rather than loop.
		r.logger.Error("storage has no snapshot covering its compacted log; follower cannot catch up",
			"peer", uint64(to), "snapshot_index", uint64(snap.Meta.Index), "first_index", uint64(r.log.firstIndex()))
		return false
	}
	r.logger.Info("sending snapshot", "peer", uint64(to), "index", uint64(snap.Meta.Index), "term", uint64(snap.Meta.Term))
	pr.becomeSnapshot(snap.Meta.Index)
	r.send(Message{To: to, Type: MsgSnap, Snapshot: &snap})
	return true
}

// bcastAppend sends appends (new entries, or a commit index that is news) to
// every member that is not paused; a follower in replicate state gets as
// many as its window and MaxMsgBytes allow.
func (r *Raft) bcastAppend() {
	for _, id := range r.members() {
		if id == r.id {
			continue
		}
		for r.sendAppend(id, false) {
		}
	}
}

// bcastHeartbeat sends heartbeats. The commit index each carries is capped
// at what that follower is known to hold, so that a heartbeat never tells
// a follower to commit an entry it may not have.
func (r *Raft) bcastHeartbeat() { r.bcastHeartbeatCtx(nil) }

// bcastHeartbeatCtx sends heartbeats carrying ctx, which the responses
// echo (a read's confirmation round).
func (r *Raft) bcastHeartbeatCtx(ctx []byte) {
	for _, id := range r.members() {
		if id == r.id {
			continue
		}
		commit := min(r.progress[id].Match, r.log.committed)
		if mutant == "heartbeat_commit_uncapped" {
			commit = r.log.committed
		}
		r.send(Message{To: id, Type: MsgHeartbeat, Commit: commit, Context: ctx, Index: Index(r.leaseTick)})
	}
}
