package transport

import (
	"bytes"
	"container/heap"
	"errors"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/stepraft/stepraft/core"
)

// memoryQueueLen bounds the messages waiting on one directed link of a
// Memory network, delayed ones included, and the reports (Unreachable,
// SnapshotDone) waiting for one endpoint's handler. A message that finds
// its link's queue full is dropped and its recipient reported unreachable,
// as with a full TCP send queue. Unreachable reports are merged per peer,
// so only failed snapshots could fill a report queue, and core keeps at
// most one snapshot in flight per peer.
const memoryQueueLen = 4096

// memoryStream is the second word of the PCG state; the first is the seed.
const memoryStream = 0x9e3779b97f4a7c15

var (
	errMemoryCut         = errors.New("transport: link cut by a partition")
	errMemoryDropped     = errors.New("transport: message lost by an injected fault")
	errMemoryFull        = errors.New("transport: link queue full")
	errMemoryUnreachable = errors.New("transport: peer unreachable")
	errMemoryStarted     = errors.New("transport: already started")
	errMemoryNoSnapshot  = errors.New("transport: MsgSnap without a snapshot")
)

// Memory is an in-process network connecting the Transports of many nodes,
// for node tests and simulations. Faults are injected per directed link:
// loss, duplication, delay with or without reordering, and partitions.
//
// Every random decision is drawn from one PCG generator seeded by
// NewMemory's seed, at the moment a message is sent. A run whose Send
// calls come in the same order (one sending goroutine, or a
// testing/synctest bubble) with the same faults set makes the same
// decisions. Delays use time.Timer, so in a synctest bubble they follow
// its fake clock; create the Memory inside the bubble.
//
// Each directed link has its own queue and goroutine, which delivers in
// the order messages fall due: FIFO unless the link's faults allow
// reordering. A MsgSnap's body is copied on a goroutine of its own, so a
// MsgSnap may be overtaken by messages sent after it, as on TCP, where
// snapshots stream on their own connection.
//
// A partition behaves like a network that loses packets: messages are
// lost silently, both when they are sent across it and when they fall due
// while it stands. The sender's own peer set is checked at Send; the
// recipient (that it exists, is started and not closed, and has the sender
// as a peer) when the message falls due. Refusals are reported to the
// sender with Unreachable, or Removed. Handler methods are only ever called
// from the network's goroutines, never from inside Send.
//
// Handler methods must not call Close, of their endpoint or of the Memory:
// Close waits for them to return.
type Memory struct {
	stats memoryCounters

	// mu is never held together with an endpoint's mu.
	mu          sync.Mutex
	closed      bool
	rng         *rand.Rand
	endpoints   map[core.NodeID]*memEndpoint
	all         LinkFaults
	links       map[memLinkKey]LinkFaults // overrides of all
	partitioned bool
	group       map[core.NodeID]int // partition group of each node; meaningful when partitioned
	isolated    map[core.NodeID]bool
}

// LinkFaults describes what happens to messages on a directed link. The
// zero value delivers every message once, at once, in order.
type LinkFaults struct {
	// Drop is the probability that a message is lost. A lost MsgSnap is
	// reported to its sender with SnapshotDone and an error.
	Drop float64
	// Duplicate is the probability that a message is delivered twice. A
	// MsgSnap is never duplicated: it must end in one SnapshotDone.
	Duplicate float64
	// MinDelay and MaxDelay bound the delay of each message, drawn
	// uniformly in [MinDelay, MaxDelay]. A negative MinDelay counts as 0
	// and a MaxDelay below MinDelay as MinDelay.
	MinDelay, MaxDelay time.Duration
	// Reorder lets each message keep its own delay, so later ones may
	// overtake it. When false the link stays FIFO: a message is never
	// delivered before one sent earlier on the same link.
	Reorder bool
}

// MemoryStats counts what happened to the messages sent on a Memory
// network. When nothing is in flight (every endpoint closed, or every
// queue drained), each message sent, and each duplicate, has ended in
// exactly one of the other counts:
//
//	Sent + Duplicated == Delivered + Dropped + Cut + QueueFull +
//	                     Refused + SnapshotFailed + Discarded
type MemoryStats struct {
	Sent       uint64 // messages passed to Send
	Delivered  uint64 // handed to a Deliver, duplicates included
	Dropped    uint64 // lost to the Drop fault
	Duplicated uint64 // extra copies made by the Duplicate fault
	Cut        uint64 // lost to a partition or an isolation
	QueueFull  uint64 // dropped because their link's queue was full
	// Refused counts messages dropped because the sender was not running,
	// the recipient did not exist or was not running, or one of the two
	// did not have the other as a peer.
	Refused uint64
	// SnapshotFailed counts MsgSnap whose body could not be opened,
	// written or committed, or whose copy was cut short by Close.
	SnapshotFailed uint64
	Discarded      uint64 // still queued when their sender closed
}

type memoryCounters struct {
	sent, delivered, dropped, duplicated, cut, queueFull atomic.Uint64
	refused, snapshotFailed, discarded                   atomic.Uint64
}

type memLinkKey struct{ from, to core.NodeID }

// NewMemory returns a network whose fault decisions all come from seed.
func NewMemory(seed uint64) *Memory {
	return &Memory{
		rng:       rand.New(rand.NewPCG(seed, memoryStream)),
		endpoints: make(map[core.NodeID]*memEndpoint),
		links:     make(map[memLinkKey]LinkFaults),
		isolated:  make(map[core.NodeID]bool),
	}
}

// Endpoint returns the Transport of node id on m, created on the first
// call and the same value afterwards, until it is closed: then the next
// call creates a new one (a node restarting). After m is closed it returns
// a closed Transport.
func (m *Memory) Endpoint(id core.NodeID) Transport {
	m.mu.Lock()
	defer m.mu.Unlock()
	if e, ok := m.endpoints[id]; ok && (m.closed || !e.isClosed()) {
		return e
	}
	e := &memEndpoint{
		net:         m,
		id:          id,
		done:        make(chan struct{}),
		reportWake:  make(chan struct{}, 1),
		peers:       make(map[core.NodeID]string),
		removed:     make(map[core.NodeID]bool),
		links:       make(map[core.NodeID]*memLink),
		unreachable: make(map[core.NodeID]bool),
	}
	if m.closed {
		e.closed = true
		close(e.done)
	}
	m.endpoints[id] = e
	return e
}

// SetFaults sets the faults of the link from → to, overriding SetAllFaults
// until the next SetAllFaults. Messages already queued keep their fate.
func (m *Memory) SetFaults(from, to core.NodeID, f LinkFaults) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.links[memLinkKey{from, to}] = f
}

// SetAllFaults sets the faults of every link, present and future, and
// forgets the links set by SetFaults before.
func (m *Memory) SetAllFaults(f LinkFaults) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.all = f
	clear(m.links)
}

// Partition splits the network: only nodes in the same group can talk,
// and nodes in no group are isolated. It replaces an earlier partition; a
// node listed in several groups belongs to the last.
func (m *Memory) Partition(groups ...[]core.NodeID) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.partitioned = true
	m.group = make(map[core.NodeID]int)
	for i, g := range groups {
		for _, id := range g {
			m.group[id] = i
		}
	}
}

// Isolate cuts id off from every node, itself included, until Heal.
func (m *Memory) Isolate(id core.NodeID) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.isolated[id] = true
}

// Heal removes the partition and every isolation. Link faults stay.
func (m *Memory) Heal() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.partitioned = false
	m.group = nil
	clear(m.isolated)
}

// Stats returns the counts so far.
func (m *Memory) Stats() MemoryStats {
	c := &m.stats
	return MemoryStats{
		Sent: c.sent.Load(), Delivered: c.delivered.Load(), Dropped: c.dropped.Load(),
		Duplicated: c.duplicated.Load(), Cut: c.cut.Load(), QueueFull: c.queueFull.Load(),
		Refused: c.refused.Load(), SnapshotFailed: c.snapshotFailed.Load(), Discarded: c.discarded.Load(),
	}
}

// Close closes every endpoint and returns once all of their goroutines
// have ended. It returns ErrClosed if m was closed already.
func (m *Memory) Close() error {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return ErrClosed
	}
	m.closed = true
	eps := slices.Collect(maps.Values(m.endpoints))
	m.mu.Unlock()
	for _, e := range eps {
		_ = e.Close() // ErrClosed: its node closed it already
	}
	return nil
}

func (m *Memory) endpoint(id core.NodeID) *memEndpoint {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.endpoints[id]
}

func (m *Memory) connected(from, to core.NodeID) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.connectedLocked(from, to)
}

func (m *Memory) connectedLocked(from, to core.NodeID) bool {
	if m.isolated[from] || m.isolated[to] {
		return false
	}
	if !m.partitioned {
		return true
	}
	gf, okf := m.group[from]
	gt, okt := m.group[to]
	return okf && okt && gf == gt
}

// memDecision is the fate drawn for one message at Send.
type memDecision struct {
	lost    error // errMemoryCut or errMemoryDropped; nil when it goes on
	copies  int   // 1, or 2 for a duplicate
	delays  [2]time.Duration
	reorder bool
}

// decide draws the fate of a message sent from → to. It draws nothing for
// a message cut by a partition.
func (m *Memory) decide(from, to core.NodeID, snapshot bool) memDecision {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.connectedLocked(from, to) {
		return memDecision{lost: errMemoryCut}
	}
	f, ok := m.links[memLinkKey{from, to}]
	if !ok {
		f = m.all
	}
	if f.Drop > 0 && m.rng.Float64() < f.Drop {
		return memDecision{lost: errMemoryDropped}
	}
	d := memDecision{copies: 1, reorder: f.Reorder}
	if !snapshot && f.Duplicate > 0 && m.rng.Float64() < f.Duplicate {
		d.copies = 2
	}
	for i := range d.copies {
		d.delays[i] = f.delay(m.rng)
	}
	return d
}

func (f LinkFaults) delay(rng *rand.Rand) time.Duration {
	lo := max(f.MinDelay, 0)
	if f.MaxDelay <= lo {
		return lo
	}
	return lo + time.Duration(rng.Uint64N(uint64(f.MaxDelay-lo)+1))
}

// memEndpoint is one node's Transport on a Memory network. The goroutines
// it starts (one per link it sends on, its reporter, its snapshot copies)
// call its own handler directly, and Close waits for them through wg. They
// call another endpoint's handler only between that endpoint's enter and
// calls.Done, so that its Close can wait for those calls too.
type memEndpoint struct {
	net  *Memory
	id   core.NodeID
	done chan struct{} // closed by Close: the endpoint's goroutines exit
	// reportWake has room for one signal: a pending wake-up is enough, as
	// the reporter takes every queued report when it wakes.
	reportWake chan struct{}
	wg         sync.WaitGroup // the endpoint's goroutines
	calls      sync.WaitGroup // calls into h from other endpoints' goroutines
	// h is set by Start under mu, before any goroutine that reads it starts.
	h Handler

	mu          sync.Mutex
	started     bool
	closed      bool
	peers       map[core.NodeID]string
	removed     map[core.NodeID]bool // peers removed by RemovePeer and not added back
	links       map[core.NodeID]*memLink
	reports     []memReport          // at most memoryQueueLen
	unreachable map[core.NodeID]bool // peers with an Unreachable in reports
}

// memLink is the queue of one directed link, guarded by its sender's mu.
type memLink struct {
	to core.NodeID
	// wake has room for one signal, as reportWake.
	wake  chan struct{}
	queue memQueue // at most memoryQueueLen items
	seq   uint64   // of the last item queued
	// last is the latest due time queued, which a FIFO message may not
	// precede.
	last time.Time
}

// memReport is a call to the sender's handler queued by Send: Unreachable,
// or SnapshotDone when snapshot is set.
type memReport struct {
	to       core.NodeID
	snapshot bool
	meta     core.SnapshotMeta
	err      error
}

// Start begins delivering to h. It returns an error if called twice, and
// ErrClosed after Close.
func (e *memEndpoint) Start(h Handler) error {
	if h == nil {
		return errors.New("transport: Start with a nil handler")
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	switch {
	case e.closed:
		return ErrClosed
	case e.started:
		return errMemoryStarted
	}
	e.h = h
	e.started = true
	e.wg.Add(1)
	go e.runReports()
	return nil
}

// AddPeer adds peer id; addr is kept but not used.
func (e *memEndpoint) AddPeer(id core.NodeID, addr string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.peers[id] = addr
	delete(e.removed, id)
}

// RemovePeer forgets peer id. Messages from id are refused from then on
// and id's handler told Removed, whether or not id was a peer before.
func (e *memEndpoint) RemovePeer(id core.NodeID) {
	e.mu.Lock()
	defer e.mu.Unlock()
	delete(e.peers, id)
	e.removed[id] = true
}

// isClosed reports whether Close was called, without e.mu (Endpoint
// holds m.mu).
func (e *memEndpoint) isClosed() bool {
	select {
	case <-e.done:
		return true
	default:
		return false
	}
}

// Close stops the endpoint, drops what it has queued, and returns once its
// goroutines have ended and no other endpoint is calling its handler.
func (e *memEndpoint) Close() error {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return ErrClosed
	}
	e.closed = true
	n := 0
	for _, l := range e.links {
		n += len(l.queue)
		l.queue = nil
	}
	e.reports = nil
	close(e.done)
	e.mu.Unlock()
	e.net.stats.discarded.Add(uint64(n))
	e.wg.Wait()
	e.calls.Wait()
	return nil
}

// Send queues a deep copy of each message on its link and returns at once.
func (e *memEndpoint) Send(msgs []core.Message) {
	for i := range msgs {
		e.send(&msgs[i])
	}
}

func (e *memEndpoint) send(m *core.Message) {
	st := &e.net.stats
	st.sent.Add(1)
	if !e.routable(m) {
		return
	}
	d := e.net.decide(e.id, m.To, m.Type == core.MsgSnap)
	if d.lost != nil {
		if d.lost == errMemoryCut {
			st.cut.Add(1)
		} else {
			st.dropped.Add(1)
		}
		e.mu.Lock()
		e.snapshotFailedLocked(m, d.lost)
		e.mu.Unlock()
		return
	}
	if d.copies == 2 {
		st.duplicated.Add(1)
	}
	var items [2]*memItem
	now := time.Now()
	for i := range d.copies {
		items[i] = &memItem{due: now.Add(d.delays[i]), m: memCloneMessage(m)}
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, it := range items[:d.copies] {
		e.enqueueLocked(it, d.reorder)
	}
}

// routable reports whether e may send m: e is running and m.To is its
// peer. When not, it counts m as refused and reports it.
func (e *memEndpoint) routable(m *core.Message) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	if !e.started || e.closed {
		e.net.stats.refused.Add(1) // no handler to report to
		return false
	}
	if _, ok := e.peers[m.To]; !ok {
		e.net.stats.refused.Add(1)
		e.unreachableLocked(m.To)
		e.snapshotFailedLocked(m, errMemoryUnreachable)
		return false
	}
	return true
}

func (e *memEndpoint) enqueueLocked(it *memItem, reorder bool) {
	st := &e.net.stats
	if e.closed {
		st.discarded.Add(1)
		return
	}
	to := it.m.To
	l := e.links[to]
	if l == nil {
		l = &memLink{to: to, wake: make(chan struct{}, 1)}
		e.links[to] = l
		e.wg.Add(1)
		go e.runLink(l)
	}
	if len(l.queue) >= memoryQueueLen {
		st.queueFull.Add(1)
		e.unreachableLocked(to)
		e.snapshotFailedLocked(&it.m, errMemoryFull)
		return
	}
	if !reorder && it.due.Before(l.last) {
		it.due = l.last
	}
	if it.due.After(l.last) {
		l.last = it.due
	}
	l.seq++
	it.seq = l.seq
	heap.Push(&l.queue, it)
	memSignal(l.wake)
}

func (e *memEndpoint) unreachableLocked(to core.NodeID) {
	if e.unreachable[to] {
		return
	}
	if e.queueReportLocked(memReport{to: to}) {
		e.unreachable[to] = true
	}
}

// snapshotFailedLocked queues SnapshotDone(err) if m is a MsgSnap.
func (e *memEndpoint) snapshotFailedLocked(m *core.Message, err error) {
	if m.Type == core.MsgSnap {
		e.queueReportLocked(memReport{to: m.To, snapshot: true, meta: memSnapMeta(m), err: err})
	}
}

func (e *memEndpoint) queueReportLocked(r memReport) bool {
	if e.closed || len(e.reports) >= memoryQueueLen {
		return false
	}
	e.reports = append(e.reports, r)
	memSignal(e.reportWake)
	return true
}

// runReports makes the handler calls that Send queued. It exits when e
// closes.
func (e *memEndpoint) runReports() {
	defer e.wg.Done()
	for {
		e.mu.Lock()
		batch := e.reports
		e.reports = nil
		clear(e.unreachable)
		e.mu.Unlock()
		for _, r := range batch {
			if r.snapshot {
				e.h.SnapshotDone(r.to, r.meta, r.err)
			} else {
				e.h.Unreachable(r.to)
			}
		}
		if len(batch) > 0 {
			continue
		}
		select {
		case <-e.reportWake:
		case <-e.done:
			return
		}
	}
}

// runLink delivers l's messages as they fall due, in order of due time and
// then of sending. It exits when e closes.
func (e *memEndpoint) runLink(l *memLink) {
	defer e.wg.Done()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		it, wait := e.nextDue(l)
		if it != nil {
			e.deliver(it.m)
			continue
		}
		timer.Stop()
		var due <-chan time.Time
		if wait > 0 {
			timer.Reset(wait)
			due = timer.C
		}
		select {
		case <-due:
		case <-l.wake:
		case <-e.done:
			return
		}
	}
}

// nextDue pops l's first message if it is due, or else returns how long
// until it is (0 when the queue is empty).
func (e *memEndpoint) nextDue(l *memLink) (*memItem, time.Duration) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(l.queue) == 0 {
		return nil, 0
	}
	if wait := time.Until(l.queue[0].due); wait > 0 {
		return nil, wait
	}
	return heap.Pop(&l.queue).(*memItem), 0
}

// deliver hands m to its recipient, or reports to e's handler why not.
func (e *memEndpoint) deliver(m core.Message) {
	st := &e.net.stats
	if !e.net.connected(e.id, m.To) {
		st.cut.Add(1)
		e.failSnapshot(&m, errMemoryCut)
		return
	}
	r, err := e.enterRecipient(m.To)
	switch {
	case errors.Is(err, ErrRemoved):
		st.refused.Add(1)
		e.h.Removed(m.To)
		e.failSnapshot(&m, err)
		return
	case err != nil:
		st.refused.Add(1)
		e.h.Unreachable(m.To)
		e.failSnapshot(&m, err)
		return
	}
	if m.Type == core.MsgSnap {
		e.wg.Add(1) // e.wg counts this goroutine, so it is above zero
		go e.sendSnapshot(r, m)
		return
	}
	r.h.Deliver(m)
	r.calls.Done()
	st.delivered.Add(1)
}

// enterRecipient returns the endpoint of to, entered for a call from e,
// if e and to are both running and have each other as peers.
func (e *memEndpoint) enterRecipient(to core.NodeID) (*memEndpoint, error) {
	e.mu.Lock()
	_, ok := e.peers[to]
	e.mu.Unlock()
	r := e.net.endpoint(to)
	if !ok || r == nil {
		return nil, errMemoryUnreachable
	}
	return r, r.enter(e.id)
}

// enter reports whether e accepts a message from peer from; when it does
// (nil), the caller calls e.h and then e.calls.Done.
func (e *memEndpoint) enter(from core.NodeID) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	switch {
	case !e.started || e.closed:
		return errMemoryUnreachable
	case e.removed[from]:
		return fmt.Errorf("transport: node %d: %w", e.id, ErrRemoved)
	}
	if _, ok := e.peers[from]; !ok {
		return errMemoryUnreachable
	}
	// Close sets closed under mu before it waits, so this Add happens
	// before that Wait.
	e.calls.Add(1)
	return nil
}

func (e *memEndpoint) failSnapshot(m *core.Message, err error) {
	if m.Type == core.MsgSnap {
		e.h.SnapshotDone(m.To, memSnapMeta(m), err)
	}
}

// sendSnapshot copies the body of MsgSnap m from e's handler into r's and
// delivers m once r has committed it; then it reports the outcome to e. It
// runs on a goroutine of its own, inside a call into r (enter).
func (e *memEndpoint) sendSnapshot(r *memEndpoint, m core.Message) {
	defer e.wg.Done()
	meta := memSnapMeta(&m) // e's own copy: r gets m
	err := e.copySnapshot(r, &m, meta)
	if err == nil {
		r.h.Deliver(m)
		e.net.stats.delivered.Add(1)
	} else {
		e.net.stats.snapshotFailed.Add(1)
	}
	r.calls.Done()
	e.h.SnapshotDone(m.To, meta, err)
}

func (e *memEndpoint) copySnapshot(r *memEndpoint, m *core.Message, meta core.SnapshotMeta) error {
	if m.Snapshot == nil {
		return errMemoryNoSnapshot
	}
	body, size, err := e.h.OpenSnapshot(meta)
	if err != nil {
		return fmt.Errorf("transport: opening snapshot %d: %w", meta.Index, err)
	}
	if body == nil {
		return fmt.Errorf("transport: snapshot %d opened without a body", meta.Index)
	}
	defer body.Close()
	if size < 0 {
		return fmt.Errorf("transport: snapshot %d has size %d", meta.Index, size)
	}
	w, err := r.h.ReceiveSnapshot(e.id, *m.Snapshot, size)
	if err != nil {
		return fmt.Errorf("transport: node %d refused snapshot %d: %w", m.To, meta.Index, err)
	}
	if err := memCopyBody(w, &memStopReader{r: body, stops: [2]<-chan struct{}{e.done, r.done}}, size); err != nil {
		_ = w.Abort() // the copy's error is the one to report
		return fmt.Errorf("transport: snapshot %d: %w", meta.Index, err)
	}
	if err := w.Commit(); err != nil {
		_ = w.Abort()
		return fmt.Errorf("transport: committing snapshot %d: %w", meta.Index, err)
	}
	return nil
}

// memCopyBody copies exactly size bytes from body to w: a body that
// is shorter or longer is an error.
func memCopyBody(w io.Writer, body io.Reader, size int64) error {
	n, err := io.CopyN(w, body, size)
	if errors.Is(err, io.EOF) {
		return fmt.Errorf("body ended after %d of %d bytes: %w", n, size, io.ErrUnexpectedEOF)
	}
	if err != nil {
		return err
	}
	var extra [1]byte
	if _, err := io.ReadFull(body, extra[:]); err == nil {
		return fmt.Errorf("body longer than its size %d", size)
	}
	return nil
}

// memStopReader fails once either end of a snapshot copy closes, so that
// Close does not wait for a whole body to be copied.
type memStopReader struct {
	r     io.Reader
	stops [2]<-chan struct{}
}

func (s *memStopReader) Read(p []byte) (int, error) {
	for _, c := range s.stops {
		select {
		case <-c:
			return 0, ErrClosed
		default:
		}
	}
	return s.r.Read(p)
}

// memItem is a message queued on a link, due at due.
type memItem struct {
	due time.Time
	seq uint64
	m   core.Message
}

// memQueue is a min-heap of items by due time, then by order of sending.
type memQueue []*memItem

func (q memQueue) Len() int { return len(q) }
func (q memQueue) Less(i, j int) bool {
	if !q[i].due.Equal(q[j].due) {
		return q[i].due.Before(q[j].due)
	}
	return q[i].seq < q[j].seq
}
func (q memQueue) Swap(i, j int) { q[i], q[j] = q[j], q[i] }
func (q *memQueue) Push(x any)   { *q = append(*q, x.(*memItem)) }
func (q *memQueue) Pop() any {
	old := *q
	it := old[len(old)-1]
	old[len(old)-1] = nil
	*q = old[:len(old)-1]
	return it
}

// memSignal wakes the goroutine waiting on c, which has room for one
// signal, unless a wake-up is pending already.
func memSignal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

func memSnapMeta(m *core.Message) core.SnapshotMeta {
	if m.Snapshot == nil {
		return core.SnapshotMeta{}
	}
	return memCloneMeta(m.Snapshot.Meta)
}

// memCloneMessage returns a copy of m that shares no memory with it.
func memCloneMessage(m *core.Message) core.Message {
	c := *m
	if m.Entries != nil {
		c.Entries = make([]core.Entry, len(m.Entries))
		for i, ent := range m.Entries {
			ent.Data = bytes.Clone(ent.Data)
			c.Entries[i] = ent
		}
	}
	c.Context = bytes.Clone(m.Context)
	if m.Snapshot != nil {
		c.Snapshot = &core.Snapshot{Meta: memCloneMeta(m.Snapshot.Meta), Data: bytes.Clone(m.Snapshot.Data)}
	}
	return c
}

func memCloneMeta(meta core.SnapshotMeta) core.SnapshotMeta {
	cs := &meta.ConfState
	cs.Voters = slices.Clone(cs.Voters)
	cs.Learners = slices.Clone(cs.Learners)
	cs.VotersOutgoing = slices.Clone(cs.VotersOutgoing)
	cs.LearnersNext = slices.Clone(cs.LearnersNext)
	return meta
}
