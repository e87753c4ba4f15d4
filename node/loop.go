package node

import (
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"runtime"
	"slices"
	"time"

	"github.com/stepraft/stepraft/core"
	"github.com/stepraft/stepraft/transport"
)

// loop is the state of the goroutine that owns the core.
type loop struct {
	n     *Node
	r     *core.Raft
	soft  core.SoftState
	term  core.Term
	ticks uint64 // ticks since start, the loop's clock
	// proposalsTaken counts the proposals handed to core.
	proposalsTaken uint64
	// lastTaken is how many proposals the last round of run that took
	// any took (see gatherBurst).
	lastTaken uint64
	// batchBytes is the proposal bytes taken since the last flush, which
	// MaxBatchBytes bounds.
	batchBytes int

	// Reads waiting for their ReadState, by the context given to core.
	reads    map[uint64]*readRequest
	nextRead uint64
	retry    []*readRequest // dropped reads to ask again at the next tick

	// snapData is the encoded member list of the snapshot the log store
	// records, sent with MsgSnap so the receiver knows the addresses.
	snapData map[Index][]byte
	// conf is the configuration last applied to core; the transport's
	// peers are its members.
	conf core.ConfState
	// out is sendReady's message buffer, reused.
	out []core.Message
	// handoff passes committed work to the applier: Node.handoff, or the
	// simulator's queue.
	handoff func(applyTask)
	// st is core's view of the log store, with its cache of new entries.
	st *coreStorage
	// write starts writing a Ready that must be synced, in the background;
	// the driver calls onSaved with the result, on the loop. While it is
	// under way (writing), the loop goes on stepping messages and taking
	// proposals, sends requests and applies what core's partial Readys
	// hand out. nil writes on the loop, in flush.
	write func(rd core.Ready)
	// writing is set while the write of inflight is under way.
	writing  bool
	inflight core.Ready
	// recordWait is a snapshot to record that came during a write: it is
	// recorded when the write ends, before the next one starts (under
	// steady load one write follows another, and a snapshot waiting for
	// an idle moment could wait for ever, and the log grow).
	recordWait *recordRequest
	// seen holds the forwarded proposals stepped lately.
	seen seenProposals
	// removedAt is the tick at which this node applied its own removal
	// (0: not removed); it stops ElectionTicks later, time enough to hand
	// off leadership.
	removedAt uint64
}

// startLoop creates the loop and starts the goroutines that drive it.
func (n *Node) startLoop(boot bootState) error {
	l, err := n.newLoop(boot)
	if err != nil {
		return err
	}
	// The production wiring of the step functions (the simulator has its
	// own): channels and goroutines.
	l.handoff = n.handoff
	l.write = func(rd core.Ready) {
		n.wg.Add(1)
		go func() {
			defer n.wg.Done()
			// A new goroutine runs next on the loop's processor, ahead
			// of the transport's senders woken by the Ready's messages,
			// and a goroutine in fsync keeps its processor: a leader's
			// appends would wait behind its own write. Let them go
			// first. (A follower's response waits for the write.)
			if sendsRequests(rd.Messages) {
				runtime.Gosched()
			}
			n.savedC <- l.save(rd)
		}()
	}
	n.apply.record = func(rr recordRequest) { n.recordC <- rr }
	n.apply.spawn = func(f func()) {
		n.wg.Add(1)
		go func() {
			defer n.wg.Done()
			f()
		}()
	}
	n.wg.Add(3)
	go func() {
		defer n.wg.Done()
		l.run()
	}()
	go func() {
		defer n.wg.Done()
		n.expiry()
	}()
	go func() {
		defer n.wg.Done()
		n.apply.run()
	}()
	go func() {
		n.wg.Wait()
		n.shutdown()
		close(n.done)
	}()
	return nil
}

// newLoop creates core, the loop that owns it and the applier, and starts
// the transport; it starts no goroutine of its own.
func (n *Node) newLoop(boot bootState) (*loop, error) {
	seed := n.cfg.Seed
	if seed == 0 {
		seed = n.reqBase | uint64(n.cfg.ID)
	}
	l := &loop{n: n, reads: make(map[uint64]*readRequest), snapData: make(map[Index][]byte), conf: boot.conf}
	l.st = &coreStorage{LogStore: n.store, l: l}
	l.st.refresh()
	r, err := core.New(core.Config{
		ID:                        n.cfg.ID,
		ElectionTicks:             n.cfg.ElectionTicks,
		HeartbeatTicks:            n.cfg.HeartbeatTicks,
		Storage:                   l.st,
		Applied:                   boot.applied,
		MaxEntryBytes:             uint64(n.cfg.MaxCommandBytes + envelopeOverhead),
		MaxUncommittedBytes:       uint64(max(64<<20, 4*n.cfg.MaxBatchBytes)),
		DisableProposalForwarding: n.cfg.DisableProposalForwarding,
		Seed:                      seed,
		Logger:                    n.cfg.Logger,
	})
	if err != nil {
		return nil, fmt.Errorf("node: %w", err)
	}
	l.r = r
	n.loopState = l
	if boot.applied > 0 {
		l.snapData[boot.applied] = appendMembers(nil, memberList(boot.members))
	}
	if err := n.startTransport(boot.members, boot.conf); err != nil {
		return nil, err
	}
	n.apply = newApplier(n, boot)
	return l, nil
}

// startTransport creates the default transport if need be, and starts it
// with the members of conf as peers (all of members when conf is empty: a
// node joining, which must answer whoever leads).
func (n *Node) startTransport(members map[NodeID]string, conf core.ConfState) error {
	n.tr = n.cfg.Transport
	if n.tr == nil {
		tcp, err := transport.NewTCP(transport.Config{ID: n.cfg.ID, ClusterID: n.cfg.ClusterID, Listen: n.cfg.Listen, TLS: n.cfg.TLS, Logger: n.cfg.Logger})
		if err != nil {
			return fmt.Errorf("node: %w", err)
		}
		n.tr, n.ownTransport = tcp, true
	}
	n.setMembers(members)
	in := confIDs(conf)
	for id, addr := range members {
		if id != n.cfg.ID && (len(in) == 0 || in[id]) {
			n.tr.AddPeer(id, addr)
		}
	}
	if err := n.tr.Start(handler{n}); err != nil {
		if n.ownTransport {
			n.tr.Close()
		}
		return fmt.Errorf("node: start transport: %w", err)
	}
	return nil
}

// shutdown closes what the node owns, after its goroutines ended.
func (n *Node) shutdown() {
	if n.ownTransport {
		n.tr.Close()
	}
	n.failPending(n.stoppedErr())
	n.closeStores()
	n.emit(Event{Type: EventStopped, Err: n.Err()})
	n.log.Info("node stopped")
}

func (n *Node) setMembers(m map[NodeID]string) {
	n.stateMu.Lock()
	n.members = maps.Clone(m)
	n.stateMu.Unlock()
}

// The loop is a step function. Each input is a method — tick, step,
// propose, read, report, recordSnapshot, onSaved — that changes core's
// state and does no I/O; flush then handles every Ready core has: it writes
// the log (or starts the background write), sends messages and hands
// committed entries to handoff. run drives it
// with goroutines and channels; the simulator in this package's tests
// drives the same methods from one seeded scheduler.

// flush handles each Ready core has.
func (l *loop) flush() error {
	for {
		if l.writing {
			for l.r.HasPartialReady() {
				if err := l.handlePartial(); err != nil {
					return err
				}
			}
			return nil
		}
		if !l.r.HasReady() {
			l.batchBytes = 0 // nothing taken waits for a Ready
			return nil
		}
		if err := l.handleReady(); err != nil {
			return err
		}
	}
}

// run is the production driver: it takes inputs from the node's channels
// and flushes after each. It ends when the node stops.
func (l *loop) run() {
	n := l.n
	ticker := time.NewTicker(n.cfg.TickInterval)
	defer ticker.Stop()
	defer func() {
		if l.writing {
			<-n.savedC // the store closes after the loop
		}
	}()
	for {
		if err := l.flush(); err != nil {
			n.fail(err)
			return
		}
		start := l.proposalsTaken
		// While a write is under way, proposals wait once MaxBatchBytes
		// are taken for the next Ready.
		propC := n.propC
		if l.writing && l.batchFull() {
			propC = nil
		}
		select {
		case <-n.stopC:
			return
		case err := <-n.savedC:
			if err := l.onSaved(err); err != nil {
				n.fail(err)
				return
			}
		case <-ticker.C:
			l.tick()
		case p := <-propC:
			l.proposeBatch(p)
		case rq := <-n.readC:
			l.read(rq)
		case m := <-n.msgC:
			l.stepAll(m)
		case f := <-n.ctlC:
			f()
		case rr := <-n.recordC:
			l.onRecord(rr)
		case <-n.reports.sig:
			l.report()
		}
		l.gather()
		l.gatherBurst(start)
	}
}

// gatherBurst, after a round of run that began with start proposals
// taken, waits out a burst of proposals before they are written.
// Proposals come in bursts: when the applier answers a batch, its clients
// propose again within microseconds, and the first of them would
// otherwise start a write (and an fsync) of its own, with the rest of the
// burst waiting behind it. If the round took proposals, and proposals have
// been coming more than one at a time, the loop yields the processor so
// that the goroutines made runnable can hand theirs in, and takes them,
// for as long as each yield brings more (at most yieldRounds times). A
// lone proposer is not made to wait for the yield.
func (l *loop) gatherBurst(start uint64) {
	got := l.proposalsTaken - start
	if got == 0 {
		return
	}
	if got > 1 || l.lastTaken > 1 {
		for i := 0; i < yieldRounds && !l.batchFull(); i++ {
			before := l.proposalsTaken
			runtime.Gosched()
			l.gather()
			if l.proposalsTaken == before {
				break
			}
		}
	}
	l.lastTaken = l.proposalsTaken - start
}

// yieldRounds bounds the yields of the loop between taking proposals and
// writing them (see run). Measured with go run ./bench (bench/README.md):
// 16 clients 1.4 to 1.5 times the operations per second without the
// yields, 256 clients with 16-byte commands about 1.35 times; one client
// unchanged, as it does not yield (yielding after each lone proposal cost
// it about 15 %).
const yieldRounds = 16

// gather takes, without waiting, the messages and proposals that are
// already there, so that one Ready carries all of them: acknowledgements
// that commit the last batch go out with the next batch's entries, rather
// than waiting behind its fsync.
func (l *loop) gather() {
	n := l.n
	select {
	case m := <-n.msgC:
		l.stepAll(m)
	default:
	}
	if l.batchFull() {
		return
	}
	select {
	case p := <-n.propC:
		l.proposeBatch(p)
	default:
	}
}

// stepAll steps m and the messages already waiting behind it.
func (l *loop) stepAll(m core.Message) {
	for i := 0; ; i++ {
		l.step(m)
		if i == messageQueue {
			return
		}
		select {
		case m = <-l.n.msgC:
		default:
			return
		}
	}
}

// proposeBatch hands p and the proposals waiting behind it to core, until
// the proposals taken since the last flush reach MaxBatchBytes: they go
// into one Ready.
func (l *loop) proposeBatch(p *proposal) {
	for {
		l.proposalsTaken++
		l.batchBytes += len(p.data)
		l.propose(p)
		if l.batchFull() {
			return
		}
		select {
		case p = <-l.n.propC:
		default:
			return
		}
	}
}

// batchFull reports whether the proposals taken since the last flush
// reach MaxBatchBytes.
func (l *loop) batchFull() bool { return l.batchBytes >= l.n.cfg.MaxBatchBytes }

// handoff passes a Ready's committed work to the apply goroutine, waiting
// while its queue is full (back pressure) unless the node stops.
func (n *Node) handoff(t applyTask) {
	select {
	case n.applyC <- t:
	case <-n.stopC:
	}
}

func (l *loop) tick() {
	l.ticks++
	l.r.Tick()
	if l.removedAt != 0 && l.ticks >= l.removedAt+uint64(l.n.cfg.ElectionTicks) {
		l.n.fail(ErrRemoved)
	}
	retry := l.retry
	l.retry = nil
	for _, rq := range retry {
		l.read(rq)
	}
	l.expire()
	if l.soft.Role == core.RoleLeader && l.ticks%10 == 0 {
		l.publishLag()
	} else if l.soft.Role != core.RoleLeader && l.ticks%10 == 0 {
		l.n.metrics.peerMu.Lock()
		l.n.metrics.lag = nil
		l.n.metrics.peerMu.Unlock()
	}
}

// publishLag publishes how far each follower's log is behind the leader's.
func (l *loop) publishLag() {
	st := l.r.Status()
	last := l.n.metrics.lastIndex.Load()
	lag := make(map[NodeID]uint64, len(st.Progress))
	for id, pr := range st.Progress {
		if id != l.n.cfg.ID {
			lag[id] = last - min(last, uint64(pr.Match))
		}
	}
	l.n.metrics.peerMu.Lock()
	l.n.metrics.lag = lag
	l.n.metrics.peerMu.Unlock()
}

// step steps one received message.
func (l *loop) step(m core.Message) {
	if m.Type == core.MsgProp {
		if m.Entries = l.seen.filter(m.Entries); len(m.Entries) == 0 {
			return
		}
	}
	if err := l.r.Step(m); err != nil {
		l.n.log.Debug("message refused", "from", uint64(m.From), "msg_type", m.Type.String(), "err", err)
	}
}

// propose hands one proposal to core, unless its caller gave up.
func (l *loop) propose(p *proposal) {
	if !p.state.CompareAndSwap(propQueued, propTaken) {
		return // its caller gave up
	}
	n := l.n
	if n.cfg.DisableProposalForwarding && l.soft.Role != core.RoleLeader {
		n.finish(p, nil, n.notLeader())
		return
	}
	var err error
	if p.cc != nil {
		err = l.r.ProposeConfChange(*p.cc)
	} else {
		err = l.r.Propose(p.data)
	}
	switch {
	case errors.Is(err, core.ErrTooLarge):
		n.finish(p, nil, ErrTooLarge)
	case err != nil:
		n.finish(p, nil, fmt.Errorf("%w: %w", ErrProposalDropped, err))
	default:
		p.deadline = l.ticks + uint64(n.cfg.RequestTimeoutTicks)
	}
}

// read asks core to confirm a read, with a fresh context.
func (l *loop) read(rq *readRequest) {
	if rq.gaveUp() {
		return
	}
	if rq.deadline == 0 {
		rq.deadline = l.ticks + uint64(l.n.cfg.RequestTimeoutTicks)
	} else if l.ticks >= rq.deadline {
		rq.finish(0, ErrNoLeader) // asked again and again, never taken
		return
	}
	l.nextRead++
	ctx := binary.BigEndian.AppendUint64(nil, l.nextRead)
	l.reads[l.nextRead] = rq
	if err := l.r.ReadIndex(ctx); err != nil {
		delete(l.reads, l.nextRead)
		l.retry = append(l.retry, rq)
	}
}

// expire fails reads and proposals that waited past their deadline.
func (l *loop) expire() {
	for k, rq := range l.reads {
		if rq.gaveUp() || l.ticks >= rq.deadline {
			delete(l.reads, k)
			rq.finish(0, ErrNoLeader)
		}
	}
	l.n.expirePending(l.ticks)
}

// report passes transport reports to core.
func (l *loop) report() {
	unreachable, snaps := l.n.reports.take()
	for _, id := range unreachable {
		l.r.ReportUnreachable(id)
		l.n.metrics.unreachable(id)
		l.n.peerUnreachable(id)
	}
	for _, s := range snaps {
		l.r.ReportSnapshot(s.id, s.ok)
	}
}

// handleReady takes one Ready, sends its requests and writes it: on the
// loop, or in the background if it must be synced and write is set (then
// onSaved finishes it).
func (l *loop) handleReady() error {
	rd := l.r.Ready()
	l.batchBytes = 0 // what was taken goes into this Ready
	if rd.HardState.Term != 0 {
		l.setTerm(rd.HardState.Term)
	}
	if rd.SoftState != nil {
		l.softChanged(*rd.SoftState)
	}
	l.sendReady(rd, false)
	if rd.MustSync && l.write != nil {
		// The committed entries below the ones written are durable
		// already (core's contract): they are applied now.
		if err := l.apply(rd.DurableCommitted(), nil); err != nil {
			return err
		}
		l.writing, l.inflight = true, rd
		l.write(rd)
		return nil
	}
	if err := l.save(rd); err != nil {
		return err
	}
	return l.finishReady(rd, 0)
}

// sendReady sends the messages of rd that wait for its write (responses)
// or those that do not.
func (l *loop) sendReady(rd core.Ready, responses bool) {
	out := l.out[:0]
	for _, m := range rd.Messages {
		if m.Type.IsResponse() == responses {
			out = append(out, m)
		}
	}
	l.n.metrics.sent(out)
	l.n.tr.Send(out)
	// Send keeps no reference to the slice: it is reused, cleared so it
	// does not hold entries past this Ready.
	clear(out)
	l.out = out[:0]
}

// sendsRequests says whether msgs hold a message that does not wait for
// its Ready's write.
func sendsRequests(msgs []core.Message) bool {
	for i := range msgs {
		if !msgs[i].Type.IsResponse() {
			return true
		}
	}
	return false
}

// setTerm publishes the term core is in.
func (l *loop) setTerm(t core.Term) {
	if t != l.term {
		l.term = t
		l.n.stateMu.Lock()
		l.n.term = t
		l.n.stateMu.Unlock()
	}
}

// onSaved finishes the Ready whose background write ended with err, and
// records the snapshot that waited for it.
func (l *loop) onSaved(err error) error {
	rd := l.inflight
	l.writing, l.inflight = false, core.Ready{}
	if err != nil {
		return err
	}
	if err := l.finishReady(rd, len(rd.DurableCommitted())); err != nil {
		return err
	}
	if rr := l.recordWait; rr != nil {
		l.recordWait = nil
		l.onRecord(*rr)
	}
	return nil
}

// onRecord answers a request to record a snapshot the applier wrote; during
// a write (recording changes the log store) it waits for the write to end.
func (l *loop) onRecord(rr recordRequest) {
	if l.writing {
		l.recordWait = &rr
		return
	}
	rr.result <- l.recordSnapshot(rr.meta, rr.members)
}

// finishReady does what waits for a Ready's write: it sends the responses,
// installs the snapshot, applies the committed entries (after the first
// early ones, applied already), answers reads and advances core.
func (l *loop) finishReady(rd core.Ready, early int) error {
	l.st.written(rd)
	l.sendReady(rd, true)
	var task applyTask
	if !rd.Snapshot.IsEmpty() {
		if err := l.installSnapshot(rd.Snapshot, &task); err != nil {
			return err
		}
	}
	if err := l.apply(rd.CommittedEntries[early:], &task); err != nil {
		return err
	}
	l.readStates(rd.ReadStates)
	l.dropped(rd.DroppedProposals)
	l.r.Advance(rd)
	return nil
}

// handlePartial sends, applies and answers what core's partial Ready
// holds while a write is under way.
func (l *loop) handlePartial() error {
	n := l.n
	rd := l.r.PartialReady()
	if rd.SoftState != nil {
		// A new leader or role is published at once (a node that won an
		// election during its write leads from now); the term with it.
		l.setTerm(l.r.Term)
		l.softChanged(*rd.SoftState)
	}
	n.metrics.sent(rd.Messages)
	n.tr.Send(rd.Messages)
	if err := l.apply(rd.CommittedEntries, nil); err != nil {
		return err
	}
	l.readStates(rd.ReadStates)
	l.dropped(rd.DroppedProposals)
	return nil
}

// apply hands committed entries to the applier, with task's snapshot if
// task is not nil.
func (l *loop) apply(ents []core.Entry, task *applyTask) error {
	if task == nil {
		task = &applyTask{}
	}
	if err := l.committed(ents, task); err != nil {
		return err
	}
	if task.snap != nil || len(task.entries) > 0 {
		l.handoff(*task)
	}
	return nil
}

// dropped fails the proposals made here that the leader refused.
func (l *loop) dropped(ents []core.Entry) {
	n := l.n
	for i := range ents {
		if origin, req, ok := proposer(&ents[i]); ok && origin == n.cfg.ID {
			n.finishReq(req, nil, fmt.Errorf("%w: the leader refused it", ErrProposalDropped))
		}
	}
}

// save writes rd to the log store and counts what it wrote.
func (l *loop) save(rd core.Ready) error {
	n := l.n
	start := time.Now()
	if err := n.store.Save(rd); err != nil {
		return fmt.Errorf("node: write log: %w", err)
	}
	c := &n.metrics
	if rd.MustSync && n.syncsEach {
		c.fsyncs.Add(1)
		c.fsyncLat.observe(time.Since(start))
	}
	if k := len(rd.Entries); k > 0 {
		var b uint64
		for i := range rd.Entries {
			b += uint64(len(rd.Entries[i].Data))
		}
		c.entries.Add(uint64(k))
		c.bytes.Add(b)
		c.lastIndex.Store(uint64(rd.Entries[k-1].Index))
	} else if !rd.Snapshot.IsEmpty() {
		c.lastIndex.Store(uint64(rd.Snapshot.Meta.Index))
	}
	if rd.HardState.Commit != 0 {
		c.commit.Store(uint64(rd.HardState.Commit))
	}
	return nil
}

// softChanged publishes a new leader or role; proposals waiting on a
// leader that is gone can no longer be known to commit.
func (l *loop) softChanged(s core.SoftState) {
	n := l.n
	old := l.soft
	l.soft = s
	n.stateMu.Lock()
	n.soft = s
	n.stateMu.Unlock()
	if s.Role != old.Role && (s.Role == core.RolePreCandidate || s.Role == core.RoleCandidate) {
		n.metrics.elections.Add(1)
	}
	if old.Lead != s.Lead {
		n.log.Info("leader changed", "leader", uint64(s.Lead), "role", s.Role.String(), "term", uint64(l.term))
		n.metrics.leaderChanges.Add(1)
		n.emit(Event{Type: EventLeaderChanged, Leader: s.Lead, Term: uint64(l.term)})
		if old.Lead != 0 {
			n.abandonPending(l.term)
		}
	}
}

// installSnapshot takes the members of an incoming snapshot and has the
// apply goroutine restore it.
func (l *loop) installSnapshot(s core.Snapshot, task *applyTask) error {
	members, _, err := parseMembers(s.Data)
	if err != nil {
		return fmt.Errorf("node: snapshot %d from the leader: %w", s.Meta.Index, err)
	}
	m := make(map[NodeID]string, len(members))
	for _, x := range members {
		m[x.ID] = x.Addr
	}
	l.snapData[s.Meta.Index] = slices.Clone(s.Data)
	l.n.learnCluster()
	l.followConf(s.Meta.ConfState, m)
	task.snap = &s.Meta
	task.members = m
	return nil
}

// committed applies the configuration changes among ents to core, in log
// order, and adds ents to task for the apply goroutine.
func (l *loop) committed(ents []core.Entry, task *applyTask) error {
	if len(ents) == 0 {
		return nil
	}
	task.entries = ents
	for i := range ents {
		e := &ents[i]
		if e.Type != core.EntryConfChange {
			continue
		}
		var cc core.ConfChange
		if err := cc.Unmarshal(e.Data); err != nil {
			return fmt.Errorf("node: configuration entry %d: %w", e.Index, err)
		}
		res := confResult{index: e.Index}
		var added []Member // the addresses the change carries
		cs, err := l.r.ApplyConfChange(cc)
		res.conf, res.err = cs, err
		if len(cc.Context) > 0 {
			origin, req, ms, perr := parseContext(cc.Context)
			if perr != nil {
				return fmt.Errorf("node: configuration entry %d: %w", e.Index, perr)
			}
			res.origin, res.req, added = origin, req, ms
		}
		if err == nil {
			m := l.n.memberMap()
			for _, x := range added {
				m[x.ID] = x.Addr
			}
			l.followConf(cs, m)
			res.members = l.n.memberMap()
			l.n.emit(Event{Type: EventMembershipChanged, Index: e.Index, Members: memberList(res.members)})
		}
		task.confs = append(task.confs, res)
	}
	return nil
}

// followConf makes the transport's peers the members of cs, with the
// addresses in addrs (or those known before). Only members of the previous
// configuration that cs drops are removed from the transport, which tells
// them they were removed if they call: a node that the log has not yet
// added (during replay, say) is never told it was removed.
func (l *loop) followConf(cs core.ConfState, addrs map[NodeID]string) {
	n := l.n
	prev, next := confIDs(l.conf), confIDs(cs)
	old := n.memberMap()
	members := make(map[NodeID]string, len(next))
	for id := range next {
		addr := addrs[id]
		if addr == "" {
			addr = old[id]
		}
		members[id] = addr
		if id != n.cfg.ID && addr != "" && (!prev[id] || old[id] != addr) {
			n.tr.AddPeer(id, addr)
		}
	}
	for id := range prev {
		if !next[id] && id != n.cfg.ID {
			n.tr.RemovePeer(id)
		}
	}
	if prev[n.cfg.ID] && !next[n.cfg.ID] && l.removedAt == 0 {
		n.log.Info("this node was removed from the cluster; stopping soon")
		l.removedAt = l.ticks + 1
	}
	l.conf = cs
	n.setMembers(members)
}

// confIDs is the set of members of cs.
func confIDs(cs core.ConfState) map[NodeID]bool {
	in := make(map[NodeID]bool)
	for _, ids := range [][]NodeID{cs.Voters, cs.Learners, cs.VotersOutgoing, cs.LearnersNext} {
		for _, id := range ids {
			in[id] = true
		}
	}
	return in
}

func (n *Node) memberMap() map[NodeID]string {
	n.stateMu.Lock()
	defer n.stateMu.Unlock()
	return maps.Clone(n.members)
}

// readStates passes confirmed reads on, and asks again for dropped ones.
func (l *loop) readStates(rss []core.ReadState) {
	for _, rs := range rss {
		if len(rs.RequestCtx) != 8 {
			continue
		}
		k := binary.BigEndian.Uint64(rs.RequestCtx)
		rq, ok := l.reads[k]
		if !ok {
			continue
		}
		delete(l.reads, k)
		if rs.Dropped {
			l.retry = append(l.retry, rq)
			continue
		}
		rq.finish(rs.Index, nil)
	}
}

func (n *Node) notLeader() error {
	n.stateMu.Lock()
	lead := n.soft.Lead
	addr := n.members[lead]
	n.stateMu.Unlock()
	return &NotLeaderError{LeaderID: lead, LeaderAddr: addr}
}

// recordSnapshot records in the log store a snapshot the apply goroutine
// wrote, and compacts the log: keeping TrailingEntries behind it, and never
// past the oldest snapshot kept (so falling back to it leaves no gap).
func (l *loop) recordSnapshot(meta core.SnapshotMeta, members []byte) error {
	n := l.n
	defer l.st.refresh() // the first index may move
	cur, err := n.store.Snapshot()
	if err != nil {
		return fmt.Errorf("node: read log: %w", err)
	}
	first, err := n.store.FirstIndex()
	if err != nil {
		return fmt.Errorf("node: read log: %w", err)
	}
	if meta.Index <= cur.Meta.Index || meta.Index < first {
		return nil // a newer snapshot was installed meanwhile
	}
	if err := n.store.SetSnapshot(meta); err != nil {
		return fmt.Errorf("node: record snapshot %d: %w", meta.Index, err)
	}
	l.snapData[meta.Index] = members
	for i := range l.snapData {
		if i < meta.Index {
			delete(l.snapData, i)
		}
	}
	kept, err := n.snaps.List()
	if err != nil || len(kept) == 0 {
		return nil // compact next time
	}
	to := kept[len(kept)-1].Meta.Index
	if meta.Index > Index(n.cfg.TrailingEntries) {
		to = min(to, meta.Index-Index(n.cfg.TrailingEntries))
	} else {
		to = 0
	}
	if to < first {
		return nil
	}
	if err := n.store.Compact(to); err != nil {
		return fmt.Errorf("node: compact log to %d: %w", to, err)
	}
	n.log.Debug("snapshot recorded", "index", uint64(meta.Index), "compacted_to", uint64(to))
	return nil
}

// proposer returns the origin and request ID of an entry a node proposed.
func proposer(e *core.Entry) (NodeID, uint64, bool) {
	if e.Type == core.EntryConfChange {
		var cc core.ConfChange
		if cc.Unmarshal(e.Data) != nil || len(cc.Context) == 0 {
			return 0, 0, false
		}
		origin, req, _, err := parseContext(cc.Context)
		return origin, req, err == nil
	}
	origin, req, _, err := parseEnvelope(e.Data)
	return origin, req, err == nil
}

// seenProposals remembers the last seenCap forwarded proposals a node
// stepped, by origin and request ID. A transport that delivers a message
// twice (TCP does not; a datagram or queue transport may) would otherwise
// make a command commit, and apply, twice — or commit after its proposer
// was told it was dropped.
type seenProposals struct {
	set  map[propKey]struct{}
	ring []propKey
	next int
}

type propKey struct {
	origin NodeID
	req    uint64
}

const seenCap = 1 << 14

// filter returns ents without the proposals seen before, and remembers
// the rest. It copies ents only when it drops one.
func (s *seenProposals) filter(ents []core.Entry) []core.Entry {
	if s.set == nil {
		s.set = make(map[propKey]struct{}, seenCap)
		s.ring = make([]propKey, seenCap)
	}
	var out []core.Entry
	for i := range ents {
		origin, req, ok := proposer(&ents[i])
		k := propKey{origin, req}
		if _, dup := s.set[k]; ok && dup {
			if out == nil {
				out = append(make([]core.Entry, 0, len(ents)), ents[:i]...)
			}
			continue
		}
		if ok {
			if old := s.ring[s.next]; old != (propKey{}) {
				delete(s.set, old)
			}
			s.ring[s.next], s.next = k, (s.next+1)%seenCap
			s.set[k] = struct{}{}
		}
		if out != nil {
			out = append(out, ents[i])
		}
	}
	if out == nil {
		return ents
	}
	return out
}
