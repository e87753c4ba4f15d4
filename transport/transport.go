package transport

import (
	"errors"
	"io"

	"github.com/stepraft/stepraft/core"
)

// Transport is what a node needs from a network. Implementations are safe
// for concurrent use; none of the methods blocks on the network.
type Transport interface {
	// Start begins delivering to h; it is called once, before Send.
	Start(h Handler) error
	// Send queues msgs for their recipients (m.To) and returns at once.
	// A message that cannot be queued (the peer is unknown or its queue is
	// full) is dropped and the peer reported with h.Unreachable, possibly
	// before Send returns. Send keeps the messages' entries and context
	// until they are written, so the caller must not modify them
	// afterwards (core never does); the msgs slice itself is not kept and
	// may be reused once Send returns. A MsgSnap is sent with its body, read
	// through h.OpenSnapshot, and ends in exactly one h.SnapshotDone
	// unless the transport is closed first. Messages may be lost, delayed
	// or reordered; a transport should not deliver one twice (TCP does
	// not): a node drops a forwarded proposal it saw among its last
	// 16,384, but one duplicated across the receiver's restart would
	// commit twice.
	Send(msgs []core.Message)
	// AddPeer adds peer id at addr, or changes its address.
	AddPeer(id core.NodeID, addr string)
	// RemovePeer forgets peer id: messages to it are dropped, and when it
	// connects it is told that it was removed from the cluster.
	RemovePeer(id core.NodeID)
	// Close stops the transport and returns once all of its goroutines
	// have ended. Queued messages are dropped.
	Close() error
}

// Handler receives what a transport hands to its node. Its methods are
// called from the transport's goroutines, possibly several at once, and
// from within Send; they must not block (a node queues the event, or drops
// it when its queue is full) and must not call the transport's Close.
type Handler interface {
	// Deliver hands over a message for this node. Messages from one peer
	// arrive in the order they were sent (unless a fault injector reorders
	// them), except that a MsgSnap, whose body travels separately, may be
	// overtaken by later messages. A MsgSnap arrives only after its body
	// was committed through ReceiveSnapshot's writer.
	Deliver(m core.Message)
	// Unreachable reports that messages for id were dropped: its queue was
	// full, its connection failed, or it is not a peer.
	Unreachable(id core.NodeID)
	// SnapshotDone reports how sending a snapshot to id ended: err is nil
	// once the receiver has committed the body.
	SnapshotDone(id core.NodeID, meta core.SnapshotMeta, err error)
	// Removed reports that peer by refused this node because it was
	// removed from the cluster; the node should stop.
	Removed(by core.NodeID)
	// OpenSnapshot opens the body of a snapshot this node sends, as named
	// by a MsgSnap's metadata. size is the body length in bytes.
	OpenSnapshot(meta core.SnapshotMeta) (body io.ReadCloser, size int64, err error)
	// ReceiveSnapshot prepares to receive the body (size bytes) of the
	// snapshot of a MsgSnap from peer from: snap is the message's
	// metadata and its (small) Data, which a node uses for what its log
	// store does not hold, such as member addresses. The transport writes
	// the whole body and then commits, or aborts if the stream breaks.
	ReceiveSnapshot(from core.NodeID, snap core.Snapshot, size int64) (SnapshotWriter, error)
}

// SnapshotWriter receives the body of a snapshot from a peer.
type SnapshotWriter interface {
	io.Writer
	// Commit is called after the whole body was written; the snapshot is
	// durable when it returns nil.
	Commit() error
	// Abort discards what was written.
	Abort() error
}

var (
	// ErrClosed is returned by methods of a closed transport.
	ErrClosed = errors.New("transport: closed")
	// ErrRemoved is reported (wrapped) when a peer refuses this node as
	// removed from the cluster.
	ErrRemoved = errors.New("transport: removed from the cluster")
	// ErrRefused is wrapped by errors about a peer refusing a connection:
	// another cluster, an unknown node, no common wire version.
	ErrRefused = errors.New("transport: connection refused by peer")
)
