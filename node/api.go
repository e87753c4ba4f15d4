package node

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/stepraft/stepraft/core"
)

// A proposal's state, moved by compare-and-swap so that the loop and a
// caller that gives up agree on whether core took it.
const (
	propQueued int32 = iota
	propTaken
	propCancelled
)

// proposal is a command or configuration change on its way through core.
type proposal struct {
	req   uint64
	data  []byte           // the envelope, for a command
	cc    *core.ConfChange // for a configuration change
	state atomic.Int32
	ended atomic.Bool // a result was given (or the caller gave up)
	done  chan result // size 1: the one result
	born  uint64      // Node.clock when it was submitted
	// Set by the loop when core takes it.
	deadline uint64 // in loop ticks
}

type result struct {
	val any
	err error
}

// readRequest is a linearizable read waiting for its read index.
type readRequest struct {
	done      chan readResult // size 1
	cancelled atomic.Bool
	born      uint64 // Node.clock when the read began
	// Owned by the loop.
	deadline uint64
}

type readResult struct {
	index Index
	err   error
}

func (rq *readRequest) gaveUp() bool { return rq.cancelled.Load() }

func (rq *readRequest) finish(i Index, err error) {
	select {
	case rq.done <- readResult{i, err}:
	default:
	}
}

// requestTimeout is how long a call waits when its context allows longer.
func (n *Node) requestTimeout() time.Duration {
	return time.Duration(n.cfg.RequestTimeoutTicks) * n.cfg.TickInterval
}

// finish ends p with a result, unless it has ended; it reports whether
// this call ended it.
func (n *Node) finish(p *proposal, val any, err error) bool {
	n.pendMu.Lock()
	delete(n.pending, p.req)
	n.pendMu.Unlock()
	if !p.ended.CompareAndSwap(false, true) {
		return false
	}
	p.done <- result{val, err}
	return true
}

// forget ends p without a result: its caller gave up. It reports false
// when a result was given first (then it is in p.done).
func (n *Node) forget(p *proposal) bool {
	n.pendMu.Lock()
	delete(n.pending, p.req)
	n.pendMu.Unlock()
	return p.ended.CompareAndSwap(false, true)
}

// finishReq ends the proposal with request ID req, if it is waiting here.
func (n *Node) finishReq(req uint64, val any, err error) {
	n.pendMu.Lock()
	p := n.pending[req]
	n.pendMu.Unlock()
	if p != nil {
		n.finish(p, val, err)
	}
}

// abandonPending ends the proposals core took before the leader changed:
// they may or may not commit.
func (n *Node) abandonPending(term core.Term) {
	n.pendMu.Lock()
	var ps []*proposal
	for _, p := range n.pending {
		if p.state.Load() == propTaken {
			ps = append(ps, p)
		}
	}
	n.pendMu.Unlock()
	for _, p := range ps {
		n.finish(p, nil, fmt.Errorf("%w: the leader changed (term %d)", ErrOutcomeUnknown, term))
	}
}

// expirePending ends taken proposals past their deadline in loop ticks.
// The expiry goroutine's clock ends every proposal at about the same
// time; this keeps the deadline with the loop, which the simulator drives
// without that goroutine.
func (n *Node) expirePending(ticks uint64) {
	n.pendMu.Lock()
	var ps []*proposal
	for _, p := range n.pending {
		if p.state.Load() == propTaken && p.deadline != 0 && ticks >= p.deadline {
			ps = append(ps, p)
		}
	}
	n.pendMu.Unlock()
	for _, p := range ps {
		n.finish(p, nil, fmt.Errorf("%w: not applied within %d ticks", ErrOutcomeUnknown, n.cfg.RequestTimeoutTicks))
	}
}

// failPending ends every proposal waiting.
func (n *Node) failPending(err error) {
	n.pendMu.Lock()
	ps := make([]*proposal, 0, len(n.pending))
	for _, p := range n.pending {
		ps = append(ps, p)
	}
	n.pendMu.Unlock()
	for _, p := range ps {
		n.finish(p, nil, err)
	}
}

// Propose replicates cmd and returns what StateMachine.Apply returned for
// it on this node. It always ends: with Apply's result, ErrProposalDropped
// (the command was not and will not be committed), ErrOutcomeUnknown (it
// may still commit; wrapping ctx's error if that ended the wait),
// *NotLeaderError (a follower with DisableProposalForwarding), ErrTooLarge
// or ErrStopped. It waits at most RequestTimeoutTicks (and up to one tick
// more), whatever ctx allows.
func (n *Node) Propose(ctx context.Context, cmd []byte) (any, error) {
	if len(cmd) > n.cfg.MaxCommandBytes {
		return nil, fmt.Errorf("%w: %d bytes > %d", ErrTooLarge, len(cmd), n.cfg.MaxCommandBytes)
	}
	res, err := n.submit(ctx, n.commandProposal(cmd))
	n.countProposal(err)
	return res, err
}

// countProposal counts a proposal's outcome.
func (n *Node) countProposal(err error) {
	c := &n.metrics
	switch {
	case err == nil:
		c.accepted.Add(1)
	case errors.Is(err, ErrOutcomeUnknown):
		c.unknown.Add(1)
	case errors.Is(err, ErrStopped):
	default:
		c.dropped.Add(1)
	}
}

func (n *Node) newProposal() *proposal {
	return &proposal{req: n.reqBase + n.nextReq.Add(1), done: make(chan result, 1)}
}

// commandProposal wraps cmd in its envelope.
func (n *Node) commandProposal(cmd []byte) *proposal {
	p := n.newProposal()
	p.data = appendEnvelope(make([]byte, 0, len(cmd)+envelopeOverhead), n.cfg.ID, p.req, cmd)
	return p
}

// confProposal is a configuration change carrying the new member's
// address, if any.
func (n *Node) confProposal(typ core.ConfChangeType, id NodeID, addr string) *proposal {
	p := n.newProposal()
	var ms []Member
	if addr != "" {
		ms = []Member{{ID: id, Addr: addr}}
	}
	p.cc = &core.ConfChange{
		Changes: []core.ConfChangeSingle{{Type: typ, NodeID: id}},
		Context: appendContext(nil, n.cfg.ID, p.req, ms),
	}
	return p
}

// track registers p as waiting for its entry to apply.
func (n *Node) track(p *proposal) {
	n.pendMu.Lock()
	n.pending[p.req] = p
	n.pendMu.Unlock()
}

// submit queues p for the loop and waits for its result.
//
// The wait is on p.done and ctx alone: a caller does not set a timer of
// its own or watch the node's stop channel (with hundreds of callers, a
// timer each and a channel they all lock cost a good part of a
// proposal's CPU). The expiry goroutine ends a proposal that waited
// RequestTimeoutTicks, and every proposal when the node stops.
func (n *Node) submit(ctx context.Context, p *proposal) (any, error) {
	if n.stopping() {
		return nil, n.stoppedErr()
	}
	p.born = n.clock.Load()
	n.track(p)
	if n.stopping() {
		// The node began to stop after the first check; its proposals
		// may have been ended before p was tracked.
		if n.forget(p) {
			return nil, n.stoppedErr()
		}
		r := <-p.done
		return r.val, r.err
	}
	select {
	case n.propC <- p:
	default:
		// The queue is full: wait for room, a time-out or a stop (both
		// come through p.done), or the caller.
		select {
		case n.propC <- p:
		case r := <-p.done:
			return r.val, r.err
		case <-ctx.Done():
			n.forget(p)
			return nil, fmt.Errorf("%w: %w", ErrProposalDropped, ctx.Err())
		}
	}
	var cause error
	select {
	case r := <-p.done:
		return r.val, r.err
	case <-ctx.Done():
		cause = ctx.Err()
	}
	if !n.forget(p) {
		r := <-p.done // it ended just now
		return r.val, r.err
	}
	if p.state.CompareAndSwap(propQueued, propCancelled) {
		// The loop never took it: it cannot commit.
		return nil, fmt.Errorf("%w: %w", ErrProposalDropped, cause)
	}
	return nil, fmt.Errorf("%w: %w", ErrOutcomeUnknown, cause)
}

// expiry runs the clock that times proposals and reads out, on a
// goroutine of its own: the loop may be held up (by a slow state machine,
// through the apply queue), and a caller must still get an answer. When
// the node stops it ends every proposal and read at once.
func (n *Node) expiry() {
	t := time.NewTicker(n.cfg.TickInterval)
	defer t.Stop()
	for {
		select {
		case <-n.stopC:
			n.failPending(n.stoppedErr())
			n.endReads(0, n.stoppedErr())
			n.wakeApplied()
			return
		case <-t.C:
			now := n.clock.Add(1)
			n.timeOutPending(now)
			n.endReads(now, fmt.Errorf("%w: no answer within %v", ErrNoLeader, n.requestTimeout()))
		}
	}
}

// timeOutPending ends the proposals submitted more than
// RequestTimeoutTicks ticks of the clock before now.
func (n *Node) timeOutPending(now uint64) {
	limit := uint64(n.cfg.RequestTimeoutTicks)
	n.pendMu.Lock()
	var ps []*proposal
	for _, p := range n.pending {
		if now-p.born > limit {
			ps = append(ps, p)
		}
	}
	for _, p := range ps {
		delete(n.pending, p.req)
	}
	n.pendMu.Unlock()
	for _, p := range ps {
		if !p.ended.CompareAndSwap(false, true) {
			continue // a result or the caller came first
		}
		if p.state.CompareAndSwap(propQueued, propCancelled) {
			// Never taken by core: it cannot commit.
			p.done <- result{nil, fmt.Errorf("%w: not taken within %v (the node is too busy, or finds no leader)", ErrProposalDropped, n.requestTimeout())}
			continue
		}
		p.done <- result{nil, fmt.Errorf("%w: no result within %v", ErrOutcomeUnknown, n.requestTimeout())}
	}
}

// Read runs query on the state machine once it reflects every write
// acknowledged before Read was called (linearizable, by ReadIndex). It
// fails with ErrNoLeader if no leader confirms the read, or this node does
// not apply up to it, within RequestTimeoutTicks (and up to one tick
// more); or with ctx's error, or ErrStopped.
func (n *Node) Read(ctx context.Context, query []byte) (any, error) {
	start := time.Now()
	v, err := n.read(ctx, query)
	if err != nil {
		n.metrics.readsFailed.Add(1)
	} else {
		n.metrics.readsServed.Add(1)
		n.metrics.readLat.observe(time.Since(start))
	}
	return v, err
}

// read confirms the read index with the loop, waits until it is applied
// and queries the state machine. Like submit, it waits on its own
// request, the applied signal and ctx, with no timer and no stop channel:
// the expiry goroutine ends a read that waited RequestTimeoutTicks
// (through rq.done) and, when the node stops, ends every read and wakes
// those waiting for the applied index.
func (n *Node) read(ctx context.Context, query []byte) (any, error) {
	if err := n.barrier(ctx); err != nil {
		return nil, err
	}
	return n.query(query)
}

// barrier returns once this node has applied every write acknowledged
// before it was called (the first half of a linearizable read).
func (n *Node) barrier(ctx context.Context) error {
	if n.stopping() {
		return n.stoppedErr()
	}
	rq := &readRequest{done: make(chan readResult, 1), born: n.clock.Load()}
	n.trackRead(rq)
	defer n.untrackRead(rq)
	if n.stopping() {
		return n.stoppedErr() // the expiry's sweep may have missed rq
	}
	select {
	case n.readC <- rq:
	default:
		select {
		case n.readC <- rq:
		case r := <-rq.done: // timed out or stopped before the loop took it
			rq.cancelled.Store(true)
			return r.err
		case <-ctx.Done():
			rq.cancelled.Store(true)
			return ctx.Err()
		}
	}
	var index Index
	select {
	case r := <-rq.done:
		if r.err != nil {
			rq.cancelled.Store(true)
			return r.err
		}
		index = r.index
	case <-ctx.Done():
		rq.cancelled.Store(true)
		return ctx.Err()
	}
	for {
		if n.stopping() {
			return n.stoppedErr()
		}
		applied, ch := n.appliedSignal()
		if applied >= index {
			return nil
		}
		if testHookWaitApplied != nil {
			testHookWaitApplied()
		}
		select {
		case <-ch:
		case r := <-rq.done:
			if r.err != nil { // timed out or stopped
				return r.err
			}
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// testHookWaitApplied, if set, is called when a read goes to wait for
// its index to apply.
var testHookWaitApplied func()

func (n *Node) trackRead(rq *readRequest) {
	n.readMu.Lock()
	n.reading[rq] = struct{}{}
	n.readMu.Unlock()
}

func (n *Node) untrackRead(rq *readRequest) {
	n.readMu.Lock()
	delete(n.reading, rq)
	n.readMu.Unlock()
}

// endReads ends the reads that began more than RequestTimeoutTicks ticks of
// the clock before now (all of them when now is 0) with err. A read
// whose answer from the loop is still unread gets err at the next tick.
func (n *Node) endReads(now uint64, err error) {
	limit := uint64(n.cfg.RequestTimeoutTicks)
	n.readMu.Lock()
	defer n.readMu.Unlock()
	for rq := range n.reading {
		if now == 0 || now-rq.born > limit {
			rq.cancelled.Store(true)
			rq.finish(0, err)
		}
	}
}

func (n *Node) query(q []byte) (any, error) {
	n.smMu.Lock()
	defer n.smMu.Unlock()
	return n.sm.Query(q)
}

// StaleRead runs query on this node's state machine as it is, without
// asking anyone: it may miss recent writes.
func (n *Node) StaleRead(query []byte) (any, error) {
	if n.stopping() {
		return nil, n.stoppedErr()
	}
	return n.query(query)
}

// AddVoter adds node id, reachable at addr, as a voter (or promotes a
// learner), and returns once the change is applied here.
func (n *Node) AddVoter(ctx context.Context, id NodeID, addr string) error {
	return n.changeConf(ctx, core.ConfChangeAddNode, id, addr)
}

// AddLearner adds node id, reachable at addr, as a learner: it receives
// the log but does not vote.
func (n *Node) AddLearner(ctx context.Context, id NodeID, addr string) error {
	return n.changeConf(ctx, core.ConfChangeAddLearner, id, addr)
}

// RemoveMember removes node id from the cluster.
func (n *Node) RemoveMember(ctx context.Context, id NodeID) error {
	return n.changeConf(ctx, core.ConfChangeRemoveNode, id, "")
}

func (n *Node) changeConf(ctx context.Context, typ core.ConfChangeType, id NodeID, addr string) error {
	if id == 0 {
		return fmt.Errorf("%w: node ID 0", ErrConfig)
	}
	if typ != core.ConfChangeRemoveNode && (addr == "" || len(addr) > maxAddrBytes) {
		return fmt.Errorf("%w: address %q", ErrConfig, addr)
	}
	_, err := n.submit(ctx, n.confProposal(typ, id, addr))
	return err
}

// onLoop runs f on the loop goroutine and waits for it.
func (n *Node) onLoop(ctx context.Context, f func()) error {
	done := make(chan struct{})
	select {
	case n.ctlC <- func() { f(); close(done) }:
	case <-ctx.Done():
		return ctx.Err()
	case <-n.stopC:
		return n.stoppedErr()
	}
	select {
	case <-done:
		return nil
	case <-n.stopC:
		return n.stoppedErr()
	}
}

// TransferLeadership asks the leader (this node) to hand leadership to
// id, and waits until id leads or ctx ends.
func (n *Node) TransferLeadership(ctx context.Context, id NodeID) error {
	if err := n.onLoop(ctx, func() { n.loopState.r.TransferLeadership(id) }); err != nil {
		return err
	}
	return n.waitLeader(ctx, id)
}

// Campaign makes this node start an election now, and waits until it
// leads or ctx ends.
func (n *Node) Campaign(ctx context.Context) error {
	var err error
	if e := n.onLoop(ctx, func() { err = n.loopState.r.Campaign() }); e != nil {
		return e
	}
	if err != nil {
		return fmt.Errorf("node: campaign: %w", err)
	}
	return n.waitLeader(ctx, n.cfg.ID)
}

// waitLeader polls, every tick, until id leads.
func (n *Node) waitLeader(ctx context.Context, id NodeID) error {
	t := time.NewTicker(n.cfg.TickInterval)
	defer t.Stop()
	for {
		if lead, _ := n.Leader(); lead == id {
			return nil
		}
		select {
		case <-t.C:
		case <-ctx.Done():
			return ctx.Err()
		case <-n.stopC:
			return n.stoppedErr()
		}
	}
}

// Snapshot takes a snapshot now (unless nothing was applied since the
// last) and returns once it is written and recorded.
func (n *Node) Snapshot(ctx context.Context) error {
	w := make(chan error, 1)
	select {
	case n.apply.snapReq <- w:
	case <-ctx.Done():
		return ctx.Err()
	case <-n.stopC:
		return n.stoppedErr()
	}
	select {
	case err := <-w:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Leader returns the leader this node knows of and its address; 0 and ""
// when none is known.
func (n *Node) Leader() (NodeID, string) {
	n.stateMu.Lock()
	defer n.stateMu.Unlock()
	return n.soft.Lead, n.members[n.soft.Lead]
}

// Status describes the node.
type Status struct {
	ID      NodeID
	Role    core.Role
	Term    core.Term
	Leader  NodeID
	Commit  Index
	Applied Index // by the state machine
	// Members are the members in the configuration core applied.
	Members []MemberStatus
	// Progress is the leader's view of each follower; nil elsewhere.
	Progress map[NodeID]Progress
}

// MemberStatus is a member and its role in the configuration.
type MemberStatus struct {
	ID      NodeID
	Addr    string
	Learner bool
}

// Progress is what a leader knows of a follower's log.
type Progress struct {
	Match, Next Index
	State       string
}

// Status returns the node's state; after the node stopped, what it last
// published.
func (n *Node) Status() Status {
	var cs core.Status
	err := n.onLoop(context.Background(), func() { cs = n.loopState.r.Status() })
	st := Status{ID: n.cfg.ID, Applied: n.Applied()}
	n.stateMu.Lock()
	st.Role, st.Term, st.Leader = n.soft.Role, n.term, n.soft.Lead
	members := n.members
	n.stateMu.Unlock()
	if err != nil {
		return st
	}
	st.Role, st.Term, st.Leader, st.Commit = cs.Role, cs.Term, cs.Lead, cs.Commit
	learners := map[NodeID]bool{}
	for _, id := range cs.Config.Learners {
		learners[id] = true
	}
	for _, ids := range [][]NodeID{cs.Config.Voters, cs.Config.Learners, cs.Config.VotersOutgoing} {
		for _, id := range ids {
			if !containsMember(st.Members, id) {
				st.Members = append(st.Members, MemberStatus{ID: id, Addr: members[id], Learner: learners[id]})
			}
		}
	}
	if cs.Progress != nil {
		st.Progress = make(map[NodeID]Progress, len(cs.Progress))
		for id, pr := range cs.Progress {
			st.Progress[id] = Progress{Match: pr.Match, Next: pr.Next, State: pr.State.String()}
		}
	}
	return st
}

func containsMember(ms []MemberStatus, id NodeID) bool {
	for _, m := range ms {
		if m.ID == id {
			return true
		}
	}
	return false
}
