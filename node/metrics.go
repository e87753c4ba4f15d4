package node

import (
	"expvar"
	"maps"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/stepraft/stepraft/core"
)

// Metrics are the node's counters and gauges. Counters count from the
// node's start; Metrics() copies them, cheaply, at any time.
type Metrics struct {
	// Gauges.
	ID        NodeID
	Term      uint64
	Role      string // "follower", "precandidate", "candidate", "leader"
	Leader    NodeID
	Commit    uint64 // as of the last Ready
	Applied   uint64 // by the state machine
	LastIndex uint64 // of the log

	// Proposals made on this node, by outcome.
	ProposalsAccepted uint64 // applied, result returned
	ProposalsDropped  uint64 // ErrProposalDropped, *NotLeaderError, ErrTooLarge
	ProposalsUnknown  uint64 // ErrOutcomeUnknown

	// The log.
	EntriesWritten uint64 // entries appended
	BytesWritten   uint64 // their payload bytes
	// Fsyncs counts the log writes that had to be durable, each one fsync:
	// under wal.SyncEachBatch, or with an application's LogStore. Under
	// SyncInterval and SyncNever it stays 0.
	Fsyncs uint64
	// FsyncLatency is the duration of those Saves.
	FsyncLatency Histogram
	// EntriesPerFsync is EntriesWritten / Fsyncs.
	EntriesPerFsync float64

	// Messages, per peer.
	Peers map[NodeID]PeerMetrics

	SnapshotsTaken    uint64 // written from this node's state machine
	SnapshotsSent     uint64 // streamed to a follower, completely
	SnapshotsReceived uint64 // installed from a leader
	ElectionsStarted  uint64 // times this node became a (pre-)candidate
	LeaderChanges     uint64 // times the leader this node knows changed
	MessagesDropped   uint64 // received but dropped on a full queue
	EventsDropped     uint64 // events a slow reader of Events() missed
	// ApplyLatency is the time each batch of committed entries took to
	// apply: StateMachine.Apply for each, and answering their proposers.
	ApplyLatency     Histogram
	ReadLatency      Histogram
	FollowerMatchLag map[NodeID]uint64 // leader only: last index - match
	ReadsServed      uint64
	ReadsFailed      uint64
	UptimeSeconds    float64
}

// PeerMetrics count the messages to and from one peer.
type PeerMetrics struct {
	MessagesSent, MessagesReceived uint64
	BytesSent, BytesReceived       uint64 // entry payload and context bytes
	Unreachable                    uint64 // reports that messages to it were dropped
}

// histogramBounds are the upper bounds, in seconds, of the buckets of a
// latency Histogram: 50 µs to 10 s.
var histogramBounds = [...]float64{0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10}

// Histogram is a latency distribution: Counts[i] observations were at most
// Bounds[i] seconds (and above the bound before it); Counts[len(Bounds)]
// were above the last bound.
type Histogram struct {
	Bounds []float64
	Counts []uint64
	Sum    float64 // seconds
	Count  uint64
}

// hist is a histogram updated with atomics.
type hist struct {
	counts [len(histogramBounds) + 1]atomic.Uint64
	sumNs  atomic.Uint64
}

func (h *hist) observe(d time.Duration) {
	s := d.Seconds()
	i := 0
	for i < len(histogramBounds) && s > histogramBounds[i] {
		i++
	}
	h.counts[i].Add(1)
	h.sumNs.Add(uint64(max(d, 0)))
}

func (h *hist) snapshot() Histogram {
	out := Histogram{Bounds: histogramBounds[:], Counts: make([]uint64, len(h.counts))}
	for i := range h.counts {
		out.Counts[i] = h.counts[i].Load()
		out.Count += out.Counts[i] // consistent with the buckets, read one by one
	}
	out.Sum = float64(h.sumNs.Load()) / 1e9
	return out
}

// Quantile estimates the q-quantile (0 < q < 1) from the buckets: the upper
// bound of the bucket that holds it; +Inf when it is above the last.
func (h Histogram) Quantile(q float64) float64 {
	if h.Count == 0 {
		return 0
	}
	rank := uint64(math.Ceil(q * float64(h.Count)))
	var seen uint64
	for i, c := range h.Counts {
		seen += c
		if seen >= rank {
			if i < len(h.Bounds) {
				return h.Bounds[i]
			}
			return math.Inf(1)
		}
	}
	return math.Inf(1)
}

// counters are the node's metrics as its goroutines update them.
type counters struct {
	start                                   time.Time
	commit, lastIndex                       atomic.Uint64
	accepted, dropped, unknown              atomic.Uint64
	entries, bytes, fsyncs                  atomic.Uint64
	snapsTaken, snapsSent, snapsReceived    atomic.Uint64
	elections, leaderChanges, eventsDropped atomic.Uint64
	readsServed, readsFailed                atomic.Uint64
	fsyncLat, applyLat, readLat             hist
	peerMu                                  sync.Mutex
	peers                                   map[NodeID]*PeerMetrics
	lag                                     map[NodeID]uint64
}

// peer returns the counters of peer id; c.peerMu is held.
func (c *counters) peer(id NodeID) *PeerMetrics {
	if c.peers == nil {
		c.peers = make(map[NodeID]*PeerMetrics)
	}
	p := c.peers[id]
	if p == nil {
		p = &PeerMetrics{}
		c.peers[id] = p
	}
	return p
}

// sent counts messages handed to the transport.
func (c *counters) sent(msgs []core.Message) {
	if len(msgs) == 0 {
		return
	}
	c.peerMu.Lock()
	for i := range msgs {
		p := c.peer(msgs[i].To)
		p.MessagesSent++
		p.BytesSent += uint64(payload(&msgs[i]))
	}
	c.peerMu.Unlock()
}

func (c *counters) received(m *core.Message) {
	c.peerMu.Lock()
	p := c.peer(m.From)
	p.MessagesReceived++
	p.BytesReceived += uint64(payload(m))
	c.peerMu.Unlock()
}

func (c *counters) unreachable(id NodeID) {
	c.peerMu.Lock()
	c.peer(id).Unreachable++
	c.peerMu.Unlock()
}

func payload(m *core.Message) int {
	n := len(m.Context)
	for i := range m.Entries {
		n += len(m.Entries[i].Data)
	}
	return n
}

// Metrics returns the node's metrics now.
func (n *Node) Metrics() Metrics {
	c := &n.metrics
	n.stateMu.Lock()
	soft, term := n.soft, n.term
	n.stateMu.Unlock()
	m := Metrics{
		ID: n.cfg.ID, Term: uint64(term), Role: soft.Role.String(), Leader: soft.Lead,
		Commit: c.commit.Load(), Applied: uint64(n.Applied()), LastIndex: c.lastIndex.Load(),
		ProposalsAccepted: c.accepted.Load(), ProposalsDropped: c.dropped.Load(), ProposalsUnknown: c.unknown.Load(),
		EntriesWritten: c.entries.Load(), BytesWritten: c.bytes.Load(), Fsyncs: c.fsyncs.Load(),
		FsyncLatency:   c.fsyncLat.snapshot(),
		SnapshotsTaken: c.snapsTaken.Load(), SnapshotsSent: c.snapsSent.Load(), SnapshotsReceived: c.snapsReceived.Load(),
		ElectionsStarted: c.elections.Load(), LeaderChanges: c.leaderChanges.Load(),
		MessagesDropped: n.dropped.Load(), EventsDropped: c.eventsDropped.Load(),
		ApplyLatency: c.applyLat.snapshot(), ReadLatency: c.readLat.snapshot(),
		ReadsServed: c.readsServed.Load(), ReadsFailed: c.readsFailed.Load(),
		UptimeSeconds: time.Since(c.start).Seconds(),
	}
	if soft.Role == 0 {
		m.Role = "follower"
	}
	if m.Fsyncs > 0 {
		m.EntriesPerFsync = float64(m.EntriesWritten) / float64(m.Fsyncs)
	}
	c.peerMu.Lock()
	m.Peers = make(map[NodeID]PeerMetrics, len(c.peers))
	for id, p := range c.peers {
		m.Peers[id] = *p
	}
	m.FollowerMatchLag = maps.Clone(c.lag)
	c.peerMu.Unlock()
	return m
}

// Expvar returns an expvar.Var that reads the node's metrics, for the
// application to publish under a name of its choice:
//
//	expvar.Publish("raft", n.Expvar())
func (n *Node) Expvar() expvar.Var {
	return expvar.Func(func() any { return n.Metrics() })
}
