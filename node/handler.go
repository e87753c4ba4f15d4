package node

import (
	"fmt"
	"io"
	"sync"

	"github.com/stepraft/stepraft/core"
	"github.com/stepraft/stepraft/transport"
)

// handler is the node as the transport sees it. Its methods never block:
// what does not fit the node's queues is dropped (messages) or merged
// (reports).
type handler struct{ n *Node }

func (h handler) Deliver(m core.Message) {
	h.n.metrics.received(&m)
	h.n.peerHeard(m.From)
	select {
	case h.n.msgC <- m:
	default:
		h.n.dropped.Add(1)
	}
}

func (h handler) Unreachable(id core.NodeID) { h.n.reports.unreachable(id) }

func (h handler) SnapshotDone(id core.NodeID, meta core.SnapshotMeta, err error) {
	if err != nil {
		h.n.log.Warn("snapshot not delivered", "peer", uint64(id), "index", uint64(meta.Index), "err", err)
	} else {
		h.n.metrics.snapsSent.Add(1)
	}
	h.n.reports.snapshot(id, err == nil)
}

func (h handler) Removed(by core.NodeID) {
	h.n.fail(fmt.Errorf("%w (told by %d)", ErrRemoved, by))
}

func (h handler) OpenSnapshot(meta core.SnapshotMeta) (io.ReadCloser, int64, error) {
	info, body, err := h.n.snaps.Open(meta.Index, meta.Term)
	if err != nil {
		return nil, 0, err
	}
	return body, info.Size, nil
}

func (h handler) ReceiveSnapshot(from core.NodeID, snap core.Snapshot, size int64) (transport.SnapshotWriter, error) {
	members, _, err := parseMembers(snap.Data)
	if err != nil {
		return nil, fmt.Errorf("snapshot %d from %d: %w", snap.Meta.Index, from, err)
	}
	return h.n.snaps.Create(SnapshotInfo{Meta: snap.Meta, Members: members})
}

// reports collects the transport's reports for the loop: unreachable peers
// (merged) and the ends of snapshot sends.
type reports struct {
	mu    sync.Mutex
	peers map[core.NodeID]bool
	snaps []snapReport
	sig   chan struct{} // size 1: "there are reports"
}

type snapReport struct {
	id core.NodeID
	ok bool
}

func (r *reports) unreachable(id core.NodeID) {
	r.mu.Lock()
	if r.peers == nil {
		r.peers = make(map[core.NodeID]bool)
	}
	r.peers[id] = true
	r.mu.Unlock()
	r.signal()
}

func (r *reports) snapshot(id core.NodeID, ok bool) {
	r.mu.Lock()
	r.snaps = append(r.snaps, snapReport{id, ok})
	r.mu.Unlock()
	r.signal()
}

func (r *reports) signal() {
	select {
	case r.sig <- struct{}{}:
	default:
	}
}

func (r *reports) take() ([]core.NodeID, []snapReport) {
	r.mu.Lock()
	defer r.mu.Unlock()
	ids := make([]core.NodeID, 0, len(r.peers))
	for id := range r.peers {
		ids = append(ids, id)
	}
	clear(r.peers)
	snaps := r.snaps
	r.snaps = nil
	return ids, snaps
}
