package node

import (
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// EventType says what an Event reports.
type EventType uint8

const (
	// EventLeaderChanged: the leader this node knows changed (Leader; 0
	// when none is known).
	EventLeaderChanged EventType = iota + 1
	// EventMembershipChanged: a configuration change was applied
	// (Members, Index).
	EventMembershipChanged
	// EventSnapshotTaken: a snapshot of this node's state was written and
	// recorded (Index).
	EventSnapshotTaken
	// EventSnapshotInstalled: a snapshot from the leader was restored
	// (Index).
	EventSnapshotInstalled
	// EventPeerUnreachable: messages to Peer are being dropped.
	EventPeerUnreachable
	// EventPeerReachable: Peer is heard from again.
	EventPeerReachable
	// EventStopped: the node stopped; Err says why if it stopped itself.
	// It is the last event.
	EventStopped
)

func (t EventType) String() string {
	switch t {
	case EventLeaderChanged:
		return "leader-changed"
	case EventMembershipChanged:
		return "membership-changed"
	case EventSnapshotTaken:
		return "snapshot-taken"
	case EventSnapshotInstalled:
		return "snapshot-installed"
	case EventPeerUnreachable:
		return "peer-unreachable"
	case EventPeerReachable:
		return "peer-reachable"
	case EventStopped:
		return "stopped"
	}
	return fmt.Sprintf("EventType(%d)", uint8(t))
}

// Event is something that happened to the node.
type Event struct {
	Type    EventType
	Time    time.Time
	Term    uint64
	Leader  NodeID
	Peer    NodeID
	Index   Index
	Members []Member
	Err     error
}

// eventQueue is how many events wait for a reader; past it events are
// dropped and counted (Metrics.EventsDropped).
const eventQueue = 256

// events delivers events without ever blocking the node.
type events struct {
	c chan Event

	mu          sync.Mutex
	stopped     bool
	unreachable map[NodeID]bool // peers reported unreachable, not heard from since
	// nUnreachable is len(unreachable), read without mu on every message
	// received, which then usually skips the lock.
	nUnreachable atomic.Int32
}

// Events returns the node's events. The channel is never closed; a slow
// reader loses events, counted in Metrics().EventsDropped.
func (n *Node) Events() <-chan Event { return n.ev.c }

func (n *Node) emit(e Event) {
	n.ev.mu.Lock()
	defer n.ev.mu.Unlock()
	if n.ev.stopped {
		return
	}
	if e.Type == EventStopped {
		n.ev.stopped = true
	}
	e.Time = time.Now()
	if e.Term == 0 {
		n.stateMu.Lock()
		e.Term = uint64(n.term)
		n.stateMu.Unlock()
	}
	select {
	case n.ev.c <- e:
	default:
		n.metrics.eventsDropped.Add(1)
	}
}

// peerUnreachable emits an event when peer id becomes unreachable.
func (n *Node) peerUnreachable(id NodeID) {
	n.ev.mu.Lock()
	was := n.ev.unreachable[id]
	if n.ev.unreachable == nil {
		n.ev.unreachable = make(map[NodeID]bool)
	}
	n.ev.unreachable[id] = true
	n.ev.nUnreachable.Store(int32(len(n.ev.unreachable)))
	n.ev.mu.Unlock()
	if !was {
		n.emit(Event{Type: EventPeerUnreachable, Peer: id})
	}
}

// peerHeard emits an event when peer id, once unreachable, is heard from.
func (n *Node) peerHeard(id NodeID) {
	if n.ev.nUnreachable.Load() == 0 {
		return
	}
	n.ev.mu.Lock()
	was := n.ev.unreachable[id]
	delete(n.ev.unreachable, id)
	n.ev.nUnreachable.Store(int32(len(n.ev.unreachable)))
	n.ev.mu.Unlock()
	if was {
		n.emit(Event{Type: EventPeerReachable, Peer: id})
	}
}
