package core

import (
	"bytes"
	"encoding/binary"
	"fmt"
)

// maxPendingReads bounds the reads a node holds waiting for an answer (as
// leader, or forwarded to one); past it ReadIndex refuses new ones.
const maxPendingReads = 4096

// readRequest is a read waiting on the leader: the commit index when it
// arrived, who asked, the host's context, and the heartbeat round that
// confirms it.
type readRequest struct {
	index Index
	from  NodeID
	ctx   []byte
	round uint64
}

// readOnly is the leader's state for ReadOnlySafe reads. Each request gets
// its own heartbeat round, named by a number that only grows within the
// term and travels as the heartbeat's Context: only acknowledgements of
// that round, or of a later one, confirm it. A host context used twice, a
// retried request or a late response to an old heartbeat can therefore
// never release a read early.
type readOnly struct {
	// pending reads in arrival order (so in round order).
	pending []readRequest
	// acks[round] is the set of voters that answered that round.
	acks  map[uint64]map[NodeID]bool
	round uint64
	// postponed reads arrived before the leader committed an entry of its
	// term; they start when it does.
	postponed []readRequest
}

// readCtx and parseReadCtx encode a round as a heartbeat Context.
func readCtx(round uint64) []byte { return binary.BigEndian.AppendUint64(nil, round) }

func parseReadCtx(ctx []byte) (uint64, bool) {
	if len(ctx) != 8 {
		return 0, false
	}
	return binary.BigEndian.Uint64(ctx), true
}

// ReadIndex asks for a linearizable read. The answer arrives in a later
// Ready's ReadStates with the same ctx: once the application has applied
// ReadState.Index, it may serve the read. A follower forwards the request
// to its leader; with no known leader, or too many reads waiting, it
// returns ErrProposalDropped. A request the leader could not serve (it
// lost leadership, or the forwarder's leader changed) comes back as a
// ReadState with Dropped set, so no reader waits forever for an answer that
// will not come; one lost on the network is for the host's timeout.
//
// Under ReadOnlySafe (the default) the leader confirms it still leads with
// a heartbeat round answered by a quorum, and answers only once it has
// committed an entry of its own term (before that its commit index may lag
// the previous leader's).
func (r *Raft) ReadIndex(ctx []byte) error {
	return r.step(Message{Type: MsgReadIndex, From: r.id, Context: ctx})
}

// handleReadIndex serves a read request on the leader.
func (r *Raft) handleReadIndex(m Message) error {
	req := readRequest{from: m.From, ctx: m.Context}
	if len(r.reads.pending)+len(r.reads.postponed) >= maxPendingReads {
		return r.dropRead(req, fmt.Sprintf("%d reads pending", maxPendingReads))
	}
	if !r.committedInTerm() && mutant != "read_before_own_commit" {
		r.reads.postponed = append(r.reads.postponed, req)
		return nil
	}
	r.startRead(req)
	return nil
}

// committedInTerm reports whether the leader has committed an entry of its
// own term, so that its commit index is at least every earlier leader's.
func (r *Raft) committedInTerm() bool {
	t, err := r.log.term(r.log.committed)
	return err == nil && t == r.Term
}

// startRead answers a read now if the lease allows or we are the only
// voter, and otherwise starts a heartbeat round to confirm it.
func (r *Raft) startRead(req readRequest) {
	req.index = r.log.committed
	single := len(r.voters.ids()) == 1 && r.voters.contains(r.id)
	if single || (r.cfg.ReadOnly == ReadOnlyLeaseBased && !r.transferStarted && r.leaseValid()) {
		r.answerRead(req)
		return
	}
	r.reads.round++
	req.round = r.reads.round
	r.reads.pending = append(r.reads.pending, req)
	if r.reads.acks == nil {
		r.reads.acks = map[uint64]map[NodeID]bool{}
	}
	r.reads.acks[req.round] = map[NodeID]bool{r.id: true}
	r.bcastHeartbeatCtx(readCtx(req.round))
}

// leaseValid reports whether the leader's lease holds now: a quorum of
// voters acknowledged a heartbeat it sent less than ElectionTicks of its
// ticks ago. Each of them received that heartbeat after it was sent and
// ignores vote requests for ElectionTicks of its own ticks after that, so
// with ticks that run at the same rate no other leader can be elected
// while the lease holds. Without a valid lease a read takes a quorum round.
func (r *Raft) leaseValid() bool {
	q := r.voters.committedIndex(func(id NodeID) Index {
		if id == r.id {
			return Index(r.leaseTick)
		}
		if pr := r.progress[id]; pr != nil {
			return Index(pr.heardTick)
		}
		return 0
	})
	return q > 0 && r.leaseTick-uint64(q) < uint64(r.cfg.ElectionTicks)
}

// startPostponedReads starts the reads that waited for the leader's first
// commit of its term.
func (r *Raft) startPostponedReads() {
	if len(r.reads.postponed) == 0 || !r.committedInTerm() {
		return
	}
	reqs := r.reads.postponed
	r.reads.postponed = nil
	for _, req := range reqs {
		r.startRead(req)
	}
}

// readAck records a heartbeat response to a read round; a round answered
// by a quorum releases every read up to it.
func (r *Raft) readAck(from NodeID, ctx []byte) {
	round, ok := parseReadCtx(ctx)
	if !ok {
		return
	}
	acks := r.reads.acks[round]
	if acks == nil {
		return // released already, or not ours
	}
	acks[from] = true
	if r.voters.voteResult(acks) != VoteWon {
		return
	}
	n := 0
	for n < len(r.reads.pending) && r.reads.pending[n].round <= round {
		req := r.reads.pending[n]
		delete(r.reads.acks, req.round)
		r.answerRead(req)
		n++
	}
	r.reads.pending = r.reads.pending[n:]
	if len(r.reads.pending) == 0 {
		r.reads.pending = nil
	}
}

// answerRead hands a confirmed read to the host, or to the follower that
// forwarded it.
func (r *Raft) answerRead(req readRequest) {
	if req.from == r.id {
		r.readStates = append(r.readStates, ReadState{Index: req.index, RequestCtx: req.ctx})
		return
	}
	r.send(Message{To: req.from, Type: MsgReadIndexResp, Index: req.index, Context: req.ctx})
}

// dropRead refuses a read: our own with an error, a forwarded one with a
// rejecting answer.
func (r *Raft) dropRead(req readRequest, why string) error {
	if req.from == r.id {
		return fmt.Errorf("%w: read: %s", ErrProposalDropped, why)
	}
	r.logger.Debug("dropping forwarded read", "from", uint64(req.from), "why", why)
	r.send(Message{To: req.from, Type: MsgReadIndexResp, Reject: true, Context: req.ctx})
	return nil
}

// forwardRead sends a read to the leader and remembers it until answered.
func (r *Raft) forwardRead(m Message) error {
	if r.lead == None {
		return r.dropRead(readRequest{from: m.From, ctx: m.Context}, "no leader")
	}
	if m.From != r.id {
		// We are not the leader: a read forwarded to us is refused, not
		// passed on, so that requests never travel in circles.
		return r.dropRead(readRequest{from: m.From, ctx: m.Context}, "not the leader")
	}
	if len(r.readsForwarded) >= maxPendingReads {
		return r.dropRead(readRequest{from: m.From, ctx: m.Context}, fmt.Sprintf("%d reads pending", maxPendingReads))
	}
	r.readsForwarded = append(r.readsForwarded, m.Context)
	r.send(Message{To: r.lead, Type: MsgReadIndex, Context: m.Context})
	return nil
}

// handleReadIndexResp passes the leader's answer to a forwarded read to
// the host.
func (r *Raft) handleReadIndexResp(m Message) {
	i := -1
	for k, ctx := range r.readsForwarded {
		if bytes.Equal(ctx, m.Context) {
			i = k
			break
		}
	}
	if i < 0 {
		r.logger.Debug("ignoring answer to a read we do not wait for", "from", uint64(m.From))
		return
	}
	r.readsForwarded = append(r.readsForwarded[:i], r.readsForwarded[i+1:]...)
	r.readStates = append(r.readStates, ReadState{Index: m.Index, RequestCtx: m.Context, Dropped: m.Reject})
}

// dropAllReads gives up every read this node holds, because its role or
// term is changing: the host hears of each as a dropped ReadState, and a
// follower that forwarded one to us gets a rejecting answer.
func (r *Raft) dropAllReads() {
	for _, reqs := range [][]readRequest{r.reads.pending, r.reads.postponed} {
		for _, req := range reqs {
			if req.from == r.id {
				r.readStates = append(r.readStates, ReadState{RequestCtx: req.ctx, Dropped: true})
			} else {
				r.send(Message{To: req.from, Type: MsgReadIndexResp, Reject: true, Context: req.ctx})
			}
		}
	}
	for _, ctx := range r.readsForwarded {
		r.readStates = append(r.readStates, ReadState{RequestCtx: ctx, Dropped: true})
	}
	r.reads = readOnly{}
	r.readsForwarded = nil
}
