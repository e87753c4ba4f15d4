package node

import (
	"bytes"
	"container/heap"
	"errors"
	"flag"
	"fmt"
	"hash/fnv"
	"io"
	"math/rand/v2"
	"os"
	"runtime/debug"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"

	"github.com/stepraft/stepraft/core"
	"github.com/stepraft/stepraft/internal/lincheck"
	"github.com/stepraft/stepraft/transport"
)

// The whole-node simulator: members made of core, the node's loop and
// applier, the simulated disk (simdisk_test.go) and a key-value state
// machine, driven through the loop's step methods by one seeded scheduler
// with a virtual clock. The network drops, delays, duplicates, reorders
// and partitions; nodes crash (sometimes half-way through a write),
// restart, and find their newest snapshot damaged; membership changes and
// leadership transfers run while clients put, delete and get. Every
// history goes through porcupine; agreement on each applied index and
// one leader per term are checked as the run goes; a liveness phase
// after the faults stop requires a leader and new operations to finish.
// One seed fixes the whole run: TestSimulationReplays checks that.

var (
	simSeeds    = flag.Int("sim.seeds", 100, "TestSimulation: how many seeds to run, from -sim.first")
	simFirst    = flag.Uint64("sim.first", 1, "TestSimulation: the first seed")
	simSeed     = flag.Uint64("sim.seed", 0, "TestSimulation: run only this seed (replays a failure)")
	simDuration = flag.Duration("sim.duration", 15*time.Second, "TestSimulation: simulated time of the fault phase")
	simTrace    = flag.Bool("sim.trace", false, "TestSimulation: print every event")
)

const simTick = 10 * time.Millisecond

func TestSimulation(t *testing.T) {
	first, count := *simFirst, uint64(*simSeeds)
	if *simSeed != 0 {
		first, count = *simSeed, 1
	}
	var total simStats
	for seed := first; seed < first+count; seed++ {
		s := runSim(t, seed, *simDuration)
		total.add(s.stats)
		if s.err != nil {
			t.Errorf("seed %d: %v\nreplay: go test ./node -run 'TestSimulation$' -sim.seed %d -sim.duration %v -sim.trace -v\nlast events:\n%s",
				seed, s.err, seed, *simDuration, strings.Join(s.trace, "\n"))
		}
	}
	t.Logf("%d seeds of %v: %s", count, *simDuration, total)
}

// TestSimulationReplays runs one seed twice: the histories and the event
// counts must be identical, or a failure's seed would not replay it.
func TestSimulationReplays(t *testing.T) {
	a := runSim(t, 7, 3*time.Second)
	b := runSim(t, 7, 3*time.Second)
	if a.err != nil || b.err != nil {
		t.Fatalf("seed 7 failed: %v / %v", a.err, b.err)
	}
	if fa, fb := a.fingerprint(), b.fingerprint(); fa != fb {
		t.Fatalf("seed 7 ran two ways: %s / %s", fa, fb)
	}
	if a.stats.acked == 0 {
		t.Fatal("no operation was acknowledged")
	}
	if a.stats.duringWrite == 0 {
		t.Fatal("no entry was applied during its node's write: the background write path went untested")
	}
}

// runSim runs one seed: a fault phase of d, then the liveness phase; the
// history is checked at the end.
func runSim(t *testing.T, seed uint64, d time.Duration) (s *sim) {
	s = newSim(t, seed)
	defer func() {
		if r := recover(); r != nil {
			s.err = fmt.Errorf("panic: %v\n%s", r, debug.Stack())
		}
	}()
	s.faults = true
	s.run(d, nil)
	if s.err == nil {
		s.calm()
		deadline := s.now + 15*time.Second
		mark := s.now
		s.run(deadline, func() bool { return s.live(mark) })
		if s.err == nil && !s.live(mark) {
			s.err = fmt.Errorf("liveness: %v after the faults stopped, leader %d, clients done since: %v\n%s",
				s.now-mark, s.leader(), s.doneSince(mark), s.describe())
		}
	}
	s.finishClients()
	if s.err == nil {
		s.check()
	}
	return s
}

type simStats struct {
	seeds, events, ops, acked, unknown, crashes, torn, damaged, pauses, partitions, confs, transfers, snapsSent, snapsTaken int
	// duringWrite counts the entries handed to the applier while their
	// node's own log write was under way (from core's partial Readys).
	duringWrite int
}

func (a *simStats) add(b simStats) {
	a.seeds++
	a.events += b.events
	a.ops += b.ops
	a.acked += b.acked
	a.unknown += b.unknown
	a.crashes += b.crashes
	a.torn += b.torn
	a.damaged += b.damaged
	a.pauses += b.pauses
	a.partitions += b.partitions
	a.confs += b.confs
	a.transfers += b.transfers
	a.snapsSent += b.snapsSent
	a.snapsTaken += b.snapsTaken
	a.duringWrite += b.duringWrite
}

func (a simStats) String() string {
	return fmt.Sprintf("%d events, %d operations checked (%d writes acknowledged, %d of unknown outcome), %d crashes (%d during a write, %d with the newest snapshot damaged), %d pauses, %d partitions, %d membership changes, %d transfers, %d snapshots sent, %d taken, %d entries applied during their node's write",
		a.events, a.ops, a.acked, a.unknown, a.crashes, a.torn, a.damaged, a.pauses, a.partitions, a.confs, a.transfers, a.snapsSent, a.snapsTaken, a.duringWrite)
}

type simEvent struct {
	at  time.Duration
	seq uint64
	fn  func()
}

type simQueue []simEvent

func (q simQueue) Len() int { return len(q) }
func (q simQueue) Less(i, j int) bool {
	return q[i].at < q[j].at || q[i].at == q[j].at && q[i].seq < q[j].seq
}
func (q simQueue) Swap(i, j int) { q[i], q[j] = q[j], q[i] }
func (q *simQueue) Push(x any)   { *q = append(*q, x.(simEvent)) }
func (q *simQueue) Pop() any {
	old := *q
	e := old[len(old)-1]
	*q = old[:len(old)-1]
	return e
}

type sim struct {
	t     *testing.T
	seed  uint64
	rng   *rand.Rand
	now   time.Duration
	q     simQueue
	seq   uint64
	err   error
	stats simStats

	nodes  map[NodeID]*simNode
	ids    []NodeID // every node ever created, in order
	nextID NodeID
	// The network.
	cut          map[[2]NodeID]bool // from, to
	drop, dup    float64
	faults       bool
	joining      *simNode // started to join, not yet added
	clients      []*simClient
	history      []porcupine.Operation
	appliedAt    map[Index]string // the command applied at each index
	leaderOfTerm map[core.Term]NodeID
	trace        []string // the last events, for a failure's report
}

type simNode struct {
	id    NodeID
	addr  string
	log   *simLog
	snaps *simSnaps
	join  bool

	inc    int // incarnation: events of an older one are void
	n      *Node
	l      *loop
	kv     *simKV
	tr     *simTransport
	applyQ []applyTask

	removed     bool          // removed from the cluster: never restarted
	pausedUntil time.Duration // the node does nothing until then
}

func newSim(t *testing.T, seed uint64) *sim {
	s := &sim{
		t: t, seed: seed, rng: rand.New(rand.NewPCG(seed, 0x5eed)),
		nodes: make(map[NodeID]*simNode), cut: make(map[[2]NodeID]bool),
		appliedAt: make(map[Index]string), leaderOfTerm: make(map[core.Term]NodeID),
		drop: 0.02, dup: 0.01,
	}
	size := 3 + 2*int(seed%2) // odd seeds run five members, even ones three
	for range size {
		s.newNode(false)
	}
	for _, id := range s.ids {
		s.start(s.nodes[id])
	}
	for i := range 5 {
		c := &simClient{id: i}
		s.clients = append(s.clients, c)
		s.after(time.Duration(s.rng.IntN(50))*time.Millisecond, func() { s.issue(c) })
	}
	s.after(time.Second, s.chaos)
	return s
}

func (s *sim) newNode(join bool) *simNode {
	s.nextID++
	sn := &simNode{id: s.nextID, addr: fmt.Sprintf("sim-%d", s.nextID), join: join,
		log: &simLog{}, snaps: &simSnaps{keep: 2}}
	sn.log.tear = func(n int) int { return s.rng.IntN(n + 1) }
	s.nodes[sn.id] = sn
	s.ids = append(s.ids, sn.id)
	return sn
}

func (s *sim) tracef(format string, args ...any) {
	line := fmt.Sprintf("%9.3fs ", s.now.Seconds()) + fmt.Sprintf(format, args...)
	if *simTrace {
		s.t.Log(line)
	}
	if len(s.trace) == 200 {
		s.trace = s.trace[1:]
	}
	s.trace = append(s.trace, line)
}

func (s *sim) failf(format string, args ...any) {
	if s.err == nil {
		s.err = fmt.Errorf(format, args...)
		s.tracef("FAIL %v", s.err)
	}
}

// after schedules fn d from now.
func (s *sim) after(d time.Duration, fn func()) {
	s.seq++
	heap.Push(&s.q, simEvent{at: s.now + d, seq: s.seq, fn: fn})
}

// run takes events until the clock passes until, done says so, or the
// run fails.
func (s *sim) run(until time.Duration, done func() bool) {
	for s.err == nil && len(s.q) > 0 {
		if s.q[0].at > until {
			s.now = until
			return
		}
		ev := heap.Pop(&s.q).(simEvent)
		s.now = ev.at
		s.stats.events++
		ev.fn()
		s.pollClients()
		if done != nil && done() {
			return
		}
	}
}

// --- nodes ---

// start starts a new incarnation of sn from its disk.
func (s *sim) start(sn *simNode) {
	sn.inc++
	inc := sn.inc
	peers := map[NodeID]string{}
	if sn.join {
		if lead := s.leaderNode(); lead != nil {
			peers = lead.n.memberMap()
		}
	} else {
		for _, id := range s.ids[:min(len(s.ids), 5)] {
			if !s.nodes[id].join {
				peers[id] = s.nodes[id].addr
			}
		}
	}
	kv := &simKV{s: s, data: map[string]string{}}
	tr := &simTransport{s: s, id: sn.id, removed: map[NodeID]bool{}}
	cfg := Config{
		ID: sn.id, Peers: peers, Join: sn.join, ClusterID: 1, Advertise: sn.addr,
		Transport: tr, LogStore: sn.log.reopen(), SnapshotStore: sn.snaps, StateMachine: kv,
		TickInterval: simTick, ElectionTicks: 10, HeartbeatTicks: 1, RequestTimeoutTicks: 100,
		SnapshotEntries: 40, TrailingEntries: 20, MaxBatchBytes: 64 << 10,
		Seed: s.rng.Uint64() | 1,
	}
	n, boot, err := newNode(cfg)
	if err != nil {
		s.failf("node %d does not start: %v", sn.id, err)
		return
	}
	n.reqBase = s.rng.Uint64() &^ (1<<40 - 1)
	l, err := n.newLoop(boot)
	if err != nil {
		s.failf("node %d: %v", sn.id, err)
		return
	}
	sn.n, sn.l, sn.kv, sn.tr, sn.applyQ = n, l, kv, tr, nil
	s.tracef("start %d (incarnation %d, applied %d, commit %d)", sn.id, inc, boot.applied, boot.commit)
	l.handoff = func(t applyTask) {
		if l.writing {
			s.stats.duringWrite += len(t.entries)
		}
		sn.applyQ = append(sn.applyQ, t)
		if len(sn.applyQ) == 1 {
			s.onNodeAfter(s.applyDelay(), sn, inc, func() { s.applyOne(sn, inc) })
		}
	}
	a := n.apply
	a.spawn = func(f func()) {
		s.onNodeAfter(s.diskDelay(), sn, inc, func() {
			f()
			a.onWritten(<-a.written)
		})
	}
	l.write = func(rd core.Ready) {
		// The write takes disk time, during which the node goes on.
		s.onNodeAfter(s.logWriteDelay(), sn, inc, func() {
			if err := l.onSaved(l.save(rd)); err != nil {
				n.fail(err)
			}
		})
	}
	a.record = func(rr recordRequest) {
		// The loop answers at once, or when its write ends: the applier
		// looks for the answer now and then, as its select would take it.
		var answered func()
		answered = func() {
			select {
			case err := <-a.recording:
				if err := a.onRecorded(err); err != nil {
					n.fail(err)
				} else {
					s.stats.snapsTaken++
				}
			default:
				s.onNodeAfter(s.applyDelay(), sn, inc, answered)
			}
		}
		s.onNodeAfter(s.applyDelay(), sn, inc, func() {
			l.onRecord(rr)
			s.onNodeAfter(s.applyDelay(), sn, inc, answered)
		})
	}
	s.onNodeAfter(0, sn, inc, a.begin)
	s.tick(sn, inc)
}

// onNodeAfter runs f on incarnation inc of sn, d from now, and then
// handles what f made core ready to do.
func (s *sim) onNodeAfter(d time.Duration, sn *simNode, inc int, f func()) {
	s.after(d, func() { s.onNode(sn, inc, f) })
}

func (s *sim) onNode(sn *simNode, inc int, f func()) {
	if sn.n == nil || sn.inc != inc {
		return
	}
	if s.now < sn.pausedUntil {
		// Paused (a long GC, SIGSTOP): everything waits, in order.
		s.after(sn.pausedUntil-s.now, func() { s.onNode(sn, inc, f) })
		return
	}
	f()
	s.settle(sn)
}

// settle flushes sn's loop and notices a node that stopped.
func (s *sim) settle(sn *simNode) {
	if sn.n == nil {
		return
	}
	if err := sn.l.flush(); err != nil {
		sn.n.fail(err)
	}
	if sn.n.stopping() {
		s.stopped(sn, sn.n.Err())
		return
	}
	if sn.l.soft.Role == core.RoleLeader {
		if other, ok := s.leaderOfTerm[sn.l.term]; ok && other != sn.id {
			s.failf("two leaders in term %d: %d and %d", sn.l.term, other, sn.id)
		}
		s.leaderOfTerm[sn.l.term] = sn.id
	}
}

// stopped takes down a node that stopped itself.
func (s *sim) stopped(sn *simNode, err error) {
	switch {
	case errors.Is(err, errCrash):
		s.stats.torn++
		s.crash(sn, "during a write")
	case errors.Is(err, ErrRemoved):
		s.tracef("node %d removed: %v", sn.id, err)
		s.down(sn)
		sn.removed = true
	default:
		s.failf("node %d stopped: %v", sn.id, err)
	}
}

// down ends sn's incarnation: its pending requests can no longer be
// answered.
func (s *sim) down(sn *simNode) {
	sn.n, sn.l, sn.applyQ = nil, nil, nil
	sn.inc++
	for _, c := range s.clients {
		if c.busy && c.node == sn {
			c.lost(s)
		}
	}
}

// crash takes sn down as a power cut would, and restarts it later.
func (s *sim) crash(sn *simNode, how string) {
	s.stats.crashes++
	sn.log.crash()
	sn.snaps.crash()
	damaged := ""
	if s.faults && s.rng.IntN(6) == 0 && s.damageNewest(sn) {
		damaged = ", newest snapshot damaged"
		s.stats.damaged++
	}
	s.tracef("crash %d %s (durable: commit %d, last %d%s)", sn.id, how, sn.log.hs.Commit, sn.log.last(), damaged)
	s.down(sn)
	s.after(200*time.Millisecond+time.Duration(s.rng.IntN(2000))*time.Millisecond, func() {
		if sn.n == nil && !sn.removed {
			s.start(sn)
		}
	})
}

// damageNewest flips a bit in sn's newest snapshot, if an older one that
// verifies remains and the log goes back to it: the node must restart
// from it and the log. (When the log does not — a snapshot from the
// leader replaced it — the node refuses to start, saying why; a unit test
// covers that.)
func (s *sim) damageNewest(sn *simNode) bool {
	k := len(sn.snaps.snaps)
	if k < 2 || sn.snaps.snaps[k-1].damaged || sn.snaps.snaps[k-2].damaged ||
		sn.snaps.snaps[k-2].info.Meta.Index < sn.log.compactIdx {
		return false
	}
	sn.snaps.snaps[k-1].damaged = true
	return true
}

func (s *sim) tick(sn *simNode, inc int) {
	jitter := time.Duration(s.rng.IntN(int(simTick / 5)))
	s.onNodeAfter(simTick-simTick/10+jitter, sn, inc, func() {
		sn.l.tick()
		s.tick(sn, inc)
	})
}

func (s *sim) applyOne(sn *simNode, inc int) {
	t := sn.applyQ[0]
	sn.applyQ = sn.applyQ[1:]
	if err := sn.n.apply.onTask(t); err != nil {
		sn.n.fail(err)
		return
	}
	if len(sn.applyQ) > 0 {
		s.onNodeAfter(s.applyDelay(), sn, inc, func() { s.applyOne(sn, inc) })
	}
}

func (s *sim) applyDelay() time.Duration {
	return time.Duration(s.rng.IntN(1000)) * time.Microsecond
}

func (s *sim) diskDelay() time.Duration {
	return time.Duration(1+s.rng.IntN(30)) * time.Millisecond
}

// logWriteDelay is how long a log write and its fsync take: mostly a
// fraction of a millisecond, now and then a stall of the disk.
func (s *sim) logWriteDelay() time.Duration {
	if s.rng.IntN(50) == 0 {
		return time.Duration(20+s.rng.IntN(180)) * time.Millisecond
	}
	return time.Duration(100+s.rng.IntN(2900)) * time.Microsecond
}

func (s *sim) netDelay() time.Duration {
	if s.rng.IntN(20) == 0 {
		return time.Duration(20+s.rng.IntN(180)) * time.Millisecond
	}
	return time.Duration(200+s.rng.IntN(4800)) * time.Microsecond
}

// leaderNode is a live node that believes it leads in the highest term.
func (s *sim) leaderNode() *simNode {
	var best *simNode
	for _, id := range s.ids {
		sn := s.nodes[id]
		if sn.n != nil && sn.l.soft.Role == core.RoleLeader && (best == nil || sn.l.term > best.l.term) {
			best = sn
		}
	}
	return best
}

func (s *sim) leader() NodeID {
	if sn := s.leaderNode(); sn != nil {
		return sn.id
	}
	return 0
}

func (s *sim) liveNodes() []*simNode {
	var out []*simNode
	for _, id := range s.ids {
		if sn := s.nodes[id]; sn.n != nil {
			out = append(out, sn)
		}
	}
	return out
}

// --- the network ---

type simTransport struct {
	s       *sim
	id      NodeID
	removed map[NodeID]bool // peers removed from the configuration
}

func (t *simTransport) Start(transport.Handler) error { return nil }
func (t *simTransport) AddPeer(id NodeID, _ string)   { delete(t.removed, id) }
func (t *simTransport) RemovePeer(id NodeID)          { t.removed[id] = true }
func (t *simTransport) Close() error                  { return nil }

func (t *simTransport) Send(msgs []core.Message) {
	for _, m := range msgs {
		t.s.send(cloneMessage(m))
	}
}

// cloneMessage copies what a message refers to, as the wire would.
func cloneMessage(m core.Message) core.Message {
	if len(m.Entries) > 0 {
		ents := make([]core.Entry, len(m.Entries))
		for i, e := range m.Entries {
			e.Data = bytes.Clone(e.Data)
			ents[i] = e
		}
		m.Entries = ents
	}
	if m.Snapshot != nil {
		snap := *m.Snapshot
		snap.Data = bytes.Clone(snap.Data)
		snap.Meta.ConfState = core.ConfState{
			Voters: slices.Clone(snap.Meta.ConfState.Voters), Learners: slices.Clone(snap.Meta.ConfState.Learners),
			VotersOutgoing: slices.Clone(snap.Meta.ConfState.VotersOutgoing), LearnersNext: slices.Clone(snap.Meta.ConfState.LearnersNext),
			AutoLeave: snap.Meta.ConfState.AutoLeave,
		}
		m.Snapshot = &snap
	}
	m.Context = bytes.Clone(m.Context)
	return m
}

func (s *sim) send(m core.Message) {
	if s.cut[[2]NodeID{m.From, m.To}] || s.rng.Float64() < s.drop {
		return
	}
	copies := 1
	if s.rng.Float64() < s.dup {
		copies = 2
	}
	for range copies {
		s.after(s.netDelay(), func() { s.deliver(m) })
	}
}

func (s *sim) deliver(m core.Message) {
	to := s.nodes[m.To]
	if to == nil || to.n == nil || s.cut[[2]NodeID{m.From, m.To}] {
		return
	}
	if to.tr.removed[m.From] {
		// The TCP transport refuses a removed node's connection and
		// tells it so.
		if from := s.nodes[m.From]; from != nil && from.n != nil {
			s.onNode(from, from.inc, func() { handler{from.n}.Removed(m.To) })
		}
		return
	}
	if m.Type == core.MsgSnap {
		s.deliverSnapshot(to, m)
		return
	}
	s.onNode(to, to.inc, func() { to.l.step(m) })
}

// deliverSnapshot streams the snapshot's body from the sender's store to
// the receiver's, as the TCP transport does, then delivers the message
// and reports the result to the sender.
func (s *sim) deliverSnapshot(to *simNode, m core.Message) {
	from := s.nodes[m.From]
	if from == nil || from.n == nil {
		return // the stream broke with its sender
	}
	ok := func() bool {
		body, _, err := handler{from.n}.OpenSnapshot(m.Snapshot.Meta)
		if err != nil {
			s.tracef("snapshot %d from %d to %d: %v", m.Snapshot.Meta.Index, m.From, m.To, err)
			return false
		}
		defer body.Close()
		w, err := handler{to.n}.ReceiveSnapshot(m.From, *m.Snapshot, 0)
		if err != nil {
			s.failf("node %d refuses snapshot %d: %v", m.To, m.Snapshot.Meta.Index, err)
			return false
		}
		if _, err := io.Copy(w, body); err != nil {
			w.Abort()
			return false
		}
		return w.Commit() == nil
	}()
	if ok {
		s.stats.snapsSent++
		s.onNode(to, to.inc, func() { to.l.step(m) })
	}
	inc := from.inc
	s.onNodeAfter(s.netDelay(), from, inc, func() { from.l.r.ReportSnapshot(m.To, ok) })
}

// --- faults ---

// chaos injects one fault and schedules the next.
func (s *sim) chaos() {
	if !s.faults {
		return
	}
	defer s.after(time.Duration(100+s.rng.IntN(900))*time.Millisecond, s.chaos)
	live := s.liveNodes()
	switch r := s.rng.IntN(100); {
	case r < 25 && len(live) > 0:
		sn := live[s.rng.IntN(len(live))]
		if lead := s.leaderNode(); lead != nil && s.rng.IntN(2) == 0 {
			sn = lead
		}
		if s.rng.IntN(2) == 0 {
			sn.log.tearNext = true // it dies in its next write
			s.tracef("node %d will crash in its next write", sn.id)
		} else {
			s.crash(sn, "between steps")
		}
	case r < 45:
		s.partition()
	case r < 55:
		s.heal()
	case r < 70:
		s.changeMembers()
	case r < 80:
		if lead := s.leaderNode(); lead != nil {
			voters := lead.l.conf.Voters
			to := voters[s.rng.IntN(len(voters))]
			s.stats.transfers++
			s.tracef("transfer from %d to %d", lead.id, to)
			s.onNode(lead, lead.inc, func() { lead.l.r.TransferLeadership(to) })
		}
	case r < 85 && len(live) > 0:
		sn := live[s.rng.IntN(len(live))]
		s.tracef("snapshot asked of %d", sn.id)
		s.onNode(sn, sn.inc, func() { sn.n.apply.onSnapshotRequest(make(chan error, 1)) })
	case r < 92 && len(live) > 0:
		sn := live[s.rng.IntN(len(live))]
		if lead := s.leaderNode(); lead != nil && s.rng.IntN(2) == 0 {
			sn = lead
		}
		d := time.Duration(200+s.rng.IntN(1800)) * time.Millisecond
		sn.pausedUntil = s.now + d
		s.stats.pauses++
		s.tracef("pause %d for %v", sn.id, d)
	case r < 97 && len(live) > 2:
		// Correlated failures: a member cut off from the leader, another
		// dying in its next write, and the leader crashing a moment
		// later. The two others can then elect a leader without what the
		// leader replicated last: if the torn member acknowledged
		// entries before writing them (or a commit was counted on such
		// an acknowledgement), an acknowledged write is lost here.
		lead := s.leaderNode()
		if lead == nil {
			return
		}
		s.rng.Shuffle(len(live), func(i, j int) { live[i], live[j] = live[j], live[i] })
		var others []*simNode
		for _, sn := range live {
			if sn != lead {
				others = append(others, sn)
			}
		}
		cutOff, torn := others[0], others[1]
		s.cut[[2]NodeID{lead.id, cutOff.id}] = true
		s.cut[[2]NodeID{cutOff.id, lead.id}] = true
		torn.log.tearNext = true
		inc := lead.inc
		s.after(time.Duration(1+s.rng.IntN(20))*time.Millisecond, func() {
			if lead.n != nil && lead.inc == inc {
				s.crash(lead, "with the others")
			}
		})
		s.stats.partitions++
		s.tracef("correlated: %d cut off from the leader, %d will crash in its next write, leader %d crashes soon", cutOff.id, torn.id, lead.id)
	}
}

// partition cuts the members into two groups, or one node off, possibly
// in one direction only.
func (s *sim) partition() {
	ids := slices.Clone(s.ids)
	s.rng.Shuffle(len(ids), func(i, j int) { ids[i], ids[j] = ids[j], ids[i] })
	k := 1 + s.rng.IntN(max(1, len(ids)/2))
	a, b := ids[:k], ids[k:]
	oneWay := s.rng.IntN(4) == 0
	for _, x := range a {
		for _, y := range b {
			s.cut[[2]NodeID{x, y}] = true
			if !oneWay {
				s.cut[[2]NodeID{y, x}] = true
			}
		}
	}
	s.stats.partitions++
	s.tracef("partition %v | %v (one way: %v)", a, b, oneWay)
}

func (s *sim) heal() {
	clear(s.cut)
	s.tracef("heal")
}

// changeMembers adds a node (as a voter or a learner), promotes a learner
// or removes a member, keeping three to five voters.
func (s *sim) changeMembers() {
	lead := s.leaderNode()
	if lead == nil {
		return
	}
	cs := lead.l.conf
	if len(cs.VotersOutgoing) > 0 {
		return // a joint configuration is being left
	}
	var p *proposal
	switch r := s.rng.IntN(3); {
	case r == 0 && len(cs.Voters)+len(cs.Learners) < 5:
		if s.joining == nil || s.joining.removed {
			s.joining = s.newNode(true)
			s.start(s.joining)
		}
		typ := core.ConfChangeAddNode
		if s.rng.IntN(3) == 0 {
			typ = core.ConfChangeAddLearner
		}
		p = lead.n.confProposal(typ, s.joining.id, s.joining.addr)
		s.tracef("add %d (%v)", s.joining.id, typ)
	case r == 1 && len(cs.Learners) > 0:
		id := cs.Learners[s.rng.IntN(len(cs.Learners))]
		p = lead.n.confProposal(core.ConfChangeAddNode, id, s.nodes[id].addr)
		s.tracef("promote %d", id)
	case r == 2 && len(cs.Voters) > 3:
		id := cs.Voters[s.rng.IntN(len(cs.Voters))]
		p = lead.n.confProposal(core.ConfChangeRemoveNode, id, "")
		s.tracef("remove %d", id)
	default:
		return
	}
	s.stats.confs++
	lead.n.track(p)
	s.onNode(lead, lead.inc, func() { lead.l.propose(p) })
	if s.joining != nil && slices.Contains(cs.Voters, s.joining.id) {
		s.joining = nil
	}
}

// calm ends the faults: the network heals and every node that crashed
// restarts.
func (s *sim) calm() {
	s.faults = false
	s.heal()
	s.drop, s.dup = 0, 0
	for _, id := range s.ids {
		sn := s.nodes[id]
		sn.log.tearNext = false
		sn.pausedUntil = 0
		if sn.n == nil && !sn.removed {
			s.start(sn)
		}
	}
	s.tracef("faults stop")
}

// live says whether, since mark, a leader is there and every client has
// finished an operation it issued after mark.
func (s *sim) live(mark time.Duration) bool {
	if s.leaderNode() == nil {
		return false
	}
	for _, c := range s.clients {
		if c.lastOK <= mark {
			return false
		}
	}
	return true
}

// describe says where each node and client stands.
func (s *sim) describe() string {
	var b strings.Builder
	for _, id := range s.ids {
		sn := s.nodes[id]
		if sn.n == nil {
			fmt.Fprintf(&b, "node %d down (removed %v)\n", id, sn.removed)
			continue
		}
		st := sn.l.r.Status()
		fmt.Fprintf(&b, "node %d %v term %d lead %d commit %d applied %d last %d conf %+v queued applies %d\n",
			id, sn.l.soft.Role, sn.l.term, sn.l.soft.Lead, st.Commit, sn.n.Applied(), sn.log.last(), sn.l.conf, len(sn.applyQ))
		for pid, pr := range st.Progress {
			fmt.Fprintf(&b, "  progress %d: %+v\n", pid, pr)
		}
	}
	for _, c := range s.clients {
		fmt.Fprintf(&b, "client %d busy %v op %c %s on %d (incarnation %d/%d) since %v, read at %d\n",
			c.id, c.busy, c.in.op, c.in.key, c.node.id, c.inc, c.node.inc, c.call, c.readAt)
	}
	return b.String()
}

func (s *sim) doneSince(mark time.Duration) []bool {
	var out []bool
	for _, c := range s.clients {
		out = append(out, c.lastOK > mark)
	}
	return out
}

// --- clients ---

type simInput struct {
	op         byte // 'p'ut, 'd'elete, 'g'et
	key, value string
}

type simOutput struct {
	value   string
	found   bool
	unknown bool
	// Where it ran, for a person reading a failure: the node and, for a
	// get, the read index.
	node NodeID
	at   Index
}

type simClient struct {
	id     int
	seq    int
	busy   bool
	in     simInput
	call   time.Duration
	node   *simNode
	inc    int
	p      *proposal
	rq     *readRequest
	readAt Index // a get's read index, once confirmed
	waitTo time.Duration
	lastOK time.Duration // when an operation issued after the faults last finished well
}

// issue starts the client's next operation on a live node: the leader
// most of the time, any node otherwise (followers forward proposals).
func (s *sim) issue(c *simClient) {
	live := s.liveNodes()
	if len(live) == 0 {
		s.after(10*time.Millisecond, func() { s.issue(c) })
		return
	}
	sn := live[s.rng.IntN(len(live))]
	if lead := s.leaderNode(); lead != nil && s.rng.IntN(3) > 0 {
		sn = lead
	}
	c.seq++
	in := simInput{key: fmt.Sprintf("k%d", s.rng.IntN(4))}
	switch r := s.rng.IntN(10); {
	case r < 4:
		in.op, in.value = 'p', fmt.Sprintf("c%d.%d", c.id, c.seq)
	case r < 6:
		in.op = 'd'
	default:
		in.op = 'g'
	}
	c.busy, c.in, c.call, c.node, c.inc, c.readAt = true, in, s.now, sn, sn.inc, 0
	c.p, c.rq = nil, nil
	if in.op == 'g' {
		c.rq = &readRequest{done: make(chan readResult, 1)}
		s.onNode(sn, sn.inc, func() { sn.l.read(c.rq) })
		return
	}
	c.p = sn.n.commandProposal(encodeSimCmd(in))
	sn.n.track(c.p)
	s.onNode(sn, sn.inc, func() { sn.l.propose(c.p) })
}

// pollClients collects the results that arrived.
func (s *sim) pollClients() {
	for _, c := range s.clients {
		if c.busy {
			s.poll(c)
		}
	}
}

func (s *sim) poll(c *simClient) {
	if c.p != nil {
		select {
		case r := <-c.p.done:
			switch {
			case r.err == nil:
				c.end(s, simOutput{}, true)
			case errors.Is(r.err, ErrProposalDropped), errors.Is(r.err, ErrNotLeader), errors.Is(r.err, ErrTooLarge):
				c.end(s, simOutput{}, false) // it will never apply
			default:
				c.end(s, simOutput{unknown: true}, true)
			}
		default:
		}
		return
	}
	if c.readAt == 0 {
		select {
		case r := <-c.rq.done:
			if r.err != nil {
				c.end(s, simOutput{}, false)
				return
			}
			c.readAt, c.waitTo = r.index, s.now+time.Second
		default:
			return
		}
	}
	sn := c.node
	if sn.n == nil || sn.inc != c.inc || s.now > c.waitTo {
		c.end(s, simOutput{}, false)
		return
	}
	if sn.n.Applied() >= c.readAt {
		v, found := sn.kv.get(c.in.key)
		c.end(s, simOutput{value: v, found: found, node: sn.id, at: c.readAt}, true)
	}
}

// lost ends the operation of a client whose node went down.
func (c *simClient) lost(s *sim) {
	if c.p != nil {
		c.end(s, simOutput{unknown: true}, true)
	} else {
		c.end(s, simOutput{}, false)
	}
}

// end records the operation (keep: it may have taken effect) and
// schedules the next.
func (c *simClient) end(s *sim, out simOutput, keep bool) {
	c.busy = false
	out.node = c.node.id
	if keep {
		ret := int64(s.now)
		if out.unknown {
			ret = 1 << 62 // it may take effect at any time after the call
			s.stats.unknown++
		} else {
			c.lastOK = s.now
			if c.in.op != 'g' {
				s.stats.acked++
			}
		}
		s.history = append(s.history, porcupine.Operation{ClientId: c.id, Input: c.in, Call: int64(c.call), Output: out, Return: ret})
		s.stats.ops++
	}
	if s.err == nil {
		s.after(time.Duration(s.rng.IntN(20))*time.Millisecond, func() { s.issue(c) })
	}
}

// finishClients ends the operations still running: writes of unknown
// outcome, reads that never returned.
func (s *sim) finishClients() {
	for _, c := range s.clients {
		if c.busy {
			c.lost(s)
		}
	}
}

var simModel = porcupine.Model{
	Partition: lincheck.ByKey(func(in any) string { return in.(simInput).key }),
	Init:      func() any { return simOutput{} },
	Step: func(state, input, output any) (bool, any) {
		in, out, st := input.(simInput), output.(simOutput), state.(simOutput)
		switch in.op {
		case 'p':
			return true, simOutput{value: in.value, found: true}
		case 'd':
			return true, simOutput{}
		}
		return out.found == st.found && out.value == st.value, st
	},
	DescribeOperation: func(input, output any) string {
		in, out := input.(simInput), output.(simOutput)
		q := ""
		if out.unknown {
			q = " -> ?"
		}
		switch in.op {
		case 'p':
			return fmt.Sprintf("put(%s, %s)%s on %d", in.key, in.value, q, out.node)
		case 'd':
			return fmt.Sprintf("delete(%s)%s on %d", in.key, q, out.node)
		}
		if !out.found {
			return fmt.Sprintf("get(%s) -> absent on %d at %d", in.key, out.node, out.at)
		}
		return fmt.Sprintf("get(%s) -> %s on %d at %d", in.key, out.value, out.node, out.at)
	},
}

// check runs porcupine over the history; a failure writes its
// visualization.
func (s *sim) check() {
	res, info := porcupine.CheckOperationsVerbose(simModel, s.history, time.Minute)
	switch res {
	case porcupine.Ok:
		return
	case porcupine.Unknown:
		s.failf("porcupine timed out on %d operations", len(s.history))
		return
	}
	f, err := os.CreateTemp("", "stepraft-sim-*.html")
	where := ""
	if err == nil {
		f.Close()
		if porcupine.VisualizePath(simModel, info, f.Name()) == nil {
			where = "; visualization in " + f.Name()
		}
	}
	s.failf("the history of %d operations is not linearizable%s", len(s.history), where)
}

// fingerprint sums up a run, to compare two runs of one seed.
func (s *sim) fingerprint() string {
	h := fnv.New64a()
	for _, op := range s.history {
		fmt.Fprintf(h, "%d %v %d %v %d\n", op.ClientId, op.Input, op.Call, op.Output, op.Return)
	}
	return fmt.Sprintf("%x/%d events/%d ops", h.Sum64(), s.stats.events, len(s.history))
}

// --- the state machine ---

func encodeSimCmd(in simInput) []byte {
	b := []byte{in.op, byte(len(in.key))}
	b = append(b, in.key...)
	return append(b, in.value...)
}

// simKV is the key-value state machine. It checks, across all nodes, that
// each index applies one command.
type simKV struct {
	s    *sim
	data map[string]string
}

func (k *simKV) Apply(index uint64, cmd []byte) any {
	if prev, ok := k.s.appliedAt[Index(index)]; ok && prev != string(cmd) {
		k.s.failf("index %d applied as %q on one node and %q on another", index, prev, cmd)
	}
	k.s.appliedAt[Index(index)] = string(cmd)
	if len(cmd) < 2 || len(cmd) < 2+int(cmd[1]) {
		k.s.failf("index %d: malformed command %q", index, cmd)
		return nil
	}
	key, value := string(cmd[2:2+int(cmd[1])]), string(cmd[2+int(cmd[1]):])
	if cmd[0] == 'p' {
		k.data[key] = value
	} else {
		delete(k.data, key)
	}
	return nil
}

func (k *simKV) get(key string) (string, bool) {
	v, ok := k.data[key]
	return v, ok
}

func (k *simKV) Query(q []byte) (any, error) {
	v, _ := k.get(string(q))
	return v, nil
}

func (k *simKV) Snapshot() (func(io.Writer) error, error) {
	keys := make([]string, 0, len(k.data))
	for key := range k.data {
		keys = append(keys, key)
	}
	slices.Sort(keys)
	var b []byte
	for _, key := range keys {
		b = fmt.Appendf(b, "%s=%s\n", key, k.data[key])
	}
	return func(w io.Writer) error { _, err := w.Write(b); return err }, nil
}

func (k *simKV) Restore(_ uint64, r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	clear(k.data)
	for line := range strings.SplitSeq(strings.TrimSuffix(string(b), "\n"), "\n") {
		if line == "" {
			continue
		}
		key, value, ok := strings.Cut(line, "=")
		if !ok {
			return fmt.Errorf("simkv: bad line %q", line)
		}
		k.data[key] = value
	}
	return nil
}
