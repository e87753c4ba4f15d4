package transport

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/stepraft/stepraft/core"
)

// recorder is a Handler that records what it is given. Snapshots it sends
// come from snaps (by index); snapshots it receives are kept in received.
type recorder struct {
	mu          sync.Mutex
	msgs        []core.Message
	unreachable map[core.NodeID]int
	snapDone    []snapResult
	removedBy   []core.NodeID
	snaps       map[core.Index]func() (io.ReadCloser, int64, error)
	received    map[core.Index][]byte
	aborted     int
	changed     chan struct{} // size 1: something was recorded
}

type snapResult struct {
	to   core.NodeID
	meta core.SnapshotMeta
	err  error
}

func newRecorder() *recorder {
	return &recorder{
		unreachable: map[core.NodeID]int{},
		snaps:       map[core.Index]func() (io.ReadCloser, int64, error){},
		received:    map[core.Index][]byte{},
		changed:     make(chan struct{}, 1),
	}
}

func (r *recorder) notify() {
	select {
	case r.changed <- struct{}{}:
	default:
	}
}

func (r *recorder) Deliver(m core.Message) {
	r.mu.Lock()
	r.msgs = append(r.msgs, m)
	r.mu.Unlock()
	r.notify()
}

func (r *recorder) Unreachable(id core.NodeID) {
	r.mu.Lock()
	r.unreachable[id]++
	r.mu.Unlock()
	r.notify()
}

func (r *recorder) SnapshotDone(id core.NodeID, meta core.SnapshotMeta, err error) {
	r.mu.Lock()
	r.snapDone = append(r.snapDone, snapResult{id, meta, err})
	r.mu.Unlock()
	r.notify()
}

func (r *recorder) Removed(by core.NodeID) {
	r.mu.Lock()
	r.removedBy = append(r.removedBy, by)
	r.mu.Unlock()
	r.notify()
}

func (r *recorder) OpenSnapshot(meta core.SnapshotMeta) (io.ReadCloser, int64, error) {
	r.mu.Lock()
	open := r.snaps[meta.Index]
	r.mu.Unlock()
	if open == nil {
		return nil, 0, fmt.Errorf("no snapshot at %d", meta.Index)
	}
	return open()
}

// ReceiveSnapshot keeps bodies of up to 1 MiB and hashes larger ones.
func (r *recorder) ReceiveSnapshot(from core.NodeID, snap core.Snapshot, size int64) (SnapshotWriter, error) {
	return &recWriter{r: r, index: snap.Meta.Index, keep: size <= 1<<20}, nil
}

type recWriter struct {
	r     *recorder
	index core.Index
	keep  bool
	buf   bytes.Buffer
	n     int64
	sum   uint64 // FNV-1a of the body
}

func (w *recWriter) Write(p []byte) (int, error) {
	if w.keep {
		w.buf.Write(p)
	}
	if w.n == 0 {
		w.sum = 14695981039346656037
	}
	for _, b := range p {
		w.sum = (w.sum ^ uint64(b)) * 1099511628211
	}
	w.n += int64(len(p))
	return len(p), nil
}

func (w *recWriter) Commit() error {
	w.r.mu.Lock()
	if w.keep {
		w.r.received[w.index] = bytes.Clone(w.buf.Bytes())
	} else {
		w.r.received[w.index] = []byte(fmt.Sprintf("%d bytes fnv %x", w.n, w.sum))
	}
	w.r.mu.Unlock()
	return nil
}

func (w *recWriter) Abort() error {
	w.r.mu.Lock()
	w.r.aborted++
	w.r.mu.Unlock()
	return nil
}

// waitFor polls cond (under r.mu) until it holds or the deadline passes.
func (r *recorder) waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	r.waitPoking(t, what, nil, cond)
}

// waitPoking is waitFor calling poke (without r.mu held) before each poll:
// to resend something that may have been lost.
func (r *recorder) waitPoking(t testing.TB, what string, poke func(), cond func() bool) {
	t.Helper()
	deadline := time.After(20 * time.Second)
	for {
		if poke != nil {
			poke()
		}
		r.mu.Lock()
		ok := cond()
		r.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-r.changed:
		case <-time.After(10 * time.Millisecond):
		case <-deadline:
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// errBodyBroken is what a failing snapshot body returns.
var errBodyBroken = errors.New("body broken")
