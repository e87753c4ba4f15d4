package transport

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"reflect"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stepraft/stepraft/core"
)

var errMemoryTest = errors.New("injected by the test")

// memNode is a Handler that records what its transport hands it and plays
// both sides of a snapshot as its fields say.
type memNode struct {
	mu          sync.Mutex
	events      []string // receiving side of snapshots and deliveries, in order
	delivered   []core.Message
	arrivals    []time.Time
	unreachable []core.NodeID
	removed     []core.NodeID
	done        []memDone

	block chan struct{} // when set, Deliver waits until it is closed

	body      []byte // what OpenSnapshot returns
	sizeDelta int64  // added to len(body) for OpenSnapshot's size
	openErr   error
	opened    *memBody
	recvErr   error
	writeErr  error
	commitErr error
	gate      chan struct{} // when set, the first Write waits until it is closed
	writer    *memWriter    // the last one ReceiveSnapshot returned
}

type memDone struct {
	to   core.NodeID
	meta core.SnapshotMeta
	err  error
}

func (n *memNode) Deliver(m core.Message) {
	if n.block != nil {
		<-n.block
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	n.events = append(n.events, "deliver "+m.Type.String())
	n.delivered = append(n.delivered, m)
	n.arrivals = append(n.arrivals, time.Now())
}

func (n *memNode) Unreachable(id core.NodeID) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.unreachable = append(n.unreachable, id)
}

func (n *memNode) SnapshotDone(id core.NodeID, meta core.SnapshotMeta, err error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.done = append(n.done, memDone{id, meta, err})
}

func (n *memNode) Removed(by core.NodeID) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.removed = append(n.removed, by)
}

func (n *memNode) OpenSnapshot(meta core.SnapshotMeta) (io.ReadCloser, int64, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.openErr != nil {
		return nil, 0, n.openErr
	}
	n.opened = &memBody{Reader: bytes.NewReader(n.body)}
	return n.opened, int64(len(n.body)) + n.sizeDelta, nil
}

func (n *memNode) ReceiveSnapshot(from core.NodeID, snap core.Snapshot, size int64) (SnapshotWriter, error) {
	meta := snap.Meta
	n.mu.Lock()
	defer n.mu.Unlock()
	n.events = append(n.events, fmt.Sprintf("receive from %d index %d size %d", from, meta.Index, size))
	if n.recvErr != nil {
		return nil, n.recvErr
	}
	n.writer = &memWriter{n: n, gate: n.gate}
	return n.writer, nil
}

// memWriter is a SnapshotWriter that keeps what it is given.
type memWriter struct {
	n    *memNode
	gate chan struct{}
	buf  bytes.Buffer
}

func (w *memWriter) Write(p []byte) (int, error) {
	if w.gate != nil {
		<-w.gate
	}
	w.n.mu.Lock()
	defer w.n.mu.Unlock()
	if w.n.writeErr != nil {
		return 0, w.n.writeErr
	}
	return w.buf.Write(p)
}

func (w *memWriter) Commit() error {
	w.n.mu.Lock()
	defer w.n.mu.Unlock()
	w.n.events = append(w.n.events, "commit")
	return w.n.commitErr
}

func (w *memWriter) Abort() error {
	w.n.mu.Lock()
	defer w.n.mu.Unlock()
	w.n.events = append(w.n.events, "abort")
	return nil
}

// memBody is a snapshot body that records whether it was closed.
type memBody struct {
	*bytes.Reader
	closed atomic.Bool
}

func (b *memBody) Close() error {
	b.closed.Store(true)
	return nil
}

// memStart starts an endpoint for each id, each with all the others as
// peers.
func memStart(t *testing.T, m *Memory, ids ...core.NodeID) map[core.NodeID]*memNode {
	t.Helper()
	nodes := make(map[core.NodeID]*memNode)
	for _, id := range ids {
		nodes[id] = &memNode{}
		tr := m.Endpoint(id)
		if err := tr.Start(nodes[id]); err != nil {
			t.Fatal(err)
		}
		for _, peer := range ids {
			if peer != id {
				tr.AddPeer(peer, fmt.Sprintf("node-%d", peer))
			}
		}
	}
	return nodes
}

// memApps returns n MsgApp from → to with Index first, first+1, ...
func memApps(from, to core.NodeID, first core.Index, n int) []core.Message {
	msgs := make([]core.Message, n)
	for i := range msgs {
		msgs[i] = core.Message{Type: core.MsgApp, From: from, To: to, Term: 1, Index: first + core.Index(i)}
	}
	return msgs
}

func (n *memNode) indexes() []core.Index {
	n.mu.Lock()
	defer n.mu.Unlock()
	out := make([]core.Index, len(n.delivered))
	for i, m := range n.delivered {
		out[i] = m.Index
	}
	return out
}

// memView is a copy of what a memNode recorded.
type memView struct {
	events      []string
	delivered   []core.Message
	arrivals    []time.Time
	unreachable []core.NodeID
	removed     []core.NodeID
	done        []memDone
	written     []byte // by the last snapshot writer
	opened      bool   // a snapshot body was opened
	bodyClosed  bool   // and closed
}

func (n *memNode) view() memView {
	n.mu.Lock()
	defer n.mu.Unlock()
	v := memView{
		events:      slices.Clone(n.events),
		delivered:   slices.Clone(n.delivered),
		arrivals:    slices.Clone(n.arrivals),
		unreachable: slices.Clone(n.unreachable),
		removed:     slices.Clone(n.removed),
		done:        slices.Clone(n.done),
		opened:      n.opened != nil,
	}
	if n.writer != nil {
		v.written = bytes.Clone(n.writer.buf.Bytes())
	}
	if n.opened != nil {
		v.bodyClosed = n.opened.closed.Load()
	}
	return v
}

func memSeq(first core.Index, n int) []core.Index {
	out := make([]core.Index, n)
	for i := range out {
		out[i] = first + core.Index(i)
	}
	return out
}

// memCheckStats checks that every message sent ended in one count; call it
// when nothing is in flight.
func memCheckStats(t *testing.T, s MemoryStats) {
	t.Helper()
	ended := s.Delivered + s.Dropped + s.Cut + s.QueueFull + s.Refused + s.SnapshotFailed + s.Discarded
	if s.Sent+s.Duplicated != ended {
		t.Fatalf("stats do not add up: %+v", s)
	}
}

func TestMemoryDeliversInOrder(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := NewMemory(1)
		defer m.Close()
		nodes := memStart(t, m, 1, 2, 3)
		m.Endpoint(1).Send(append(memApps(1, 2, 1, 100), memApps(1, 3, 1, 50)...))
		m.Endpoint(2).Send(memApps(2, 1, 1, 10))
		synctest.Wait()
		for id, want := range map[core.NodeID][]core.Index{1: memSeq(1, 10), 2: memSeq(1, 100), 3: memSeq(1, 50)} {
			if got := nodes[id].indexes(); !slices.Equal(got, want) {
				t.Errorf("node %d got indexes %v, want %v", id, got, want)
			}
		}
		if got := nodes[2].view().delivered[0]; got.From != 1 || got.To != 2 || got.Type != core.MsgApp {
			t.Errorf("delivered %+v", got)
		}
		s := m.Stats()
		if s.Sent != 160 || s.Delivered != 160 {
			t.Errorf("stats %+v, want 160 sent and delivered", s)
		}
		memCheckStats(t, s)
	})
}

func TestMemoryDropRateFollowsProbability(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := NewMemory(42)
		defer m.Close()
		nodes := memStart(t, m, 1, 2, 3)
		m.SetAllFaults(LinkFaults{Drop: 0.25})
		m.SetFaults(1, 3, LinkFaults{}) // a later per-link setting overrides
		const batches, batch = 20, 500
		for i := range batches {
			first := core.Index(i*batch + 1)
			m.Endpoint(1).Send(append(memApps(1, 2, first, batch), memApps(1, 3, first, batch)...))
			synctest.Wait() // keep the queues below memoryQueueLen
		}
		got := len(nodes[2].indexes())
		if got < 7300 || got > 7700 {
			t.Errorf("with Drop 0.25, %d of 10000 messages arrived; want 7300..7700", got)
		}
		if !slices.IsSorted(nodes[2].indexes()) {
			t.Error("drops changed the order")
		}
		if got := len(nodes[3].indexes()); got != batches*batch {
			t.Errorf("link 1→3 without faults delivered %d of %d", got, batches*batch)
		}
		s := m.Stats()
		if s.Dropped != uint64(batches*batch-len(nodes[2].indexes())) {
			t.Errorf("stats %+v count the wrong drops", s)
		}
		memCheckStats(t, s)
		if unreachable := nodes[1].view().unreachable; len(unreachable) != 0 {
			t.Errorf("dropped messages reported unreachable: %v", unreachable)
		}
	})
}

func TestMemoryDuplicatesAreDeliveredTwice(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := NewMemory(1)
		defer m.Close()
		nodes := memStart(t, m, 1, 2)
		m.SetAllFaults(LinkFaults{Duplicate: 1})
		m.Endpoint(1).Send(memApps(1, 2, 1, 100))
		synctest.Wait()
		var want []core.Index
		for _, i := range memSeq(1, 100) {
			want = append(want, i, i)
		}
		if got := nodes[2].indexes(); !slices.Equal(got, want) {
			t.Errorf("got %v, want each index twice in order", got)
		}
		s := m.Stats()
		if s.Duplicated != 100 || s.Delivered != 200 {
			t.Errorf("stats %+v, want 100 duplicated and 200 delivered", s)
		}
		memCheckStats(t, s)
	})
}

func TestMemoryDelayIsRespected(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := NewMemory(1)
		defer m.Close()
		nodes := memStart(t, m, 1, 2)
		m.SetAllFaults(LinkFaults{MinDelay: 50 * time.Millisecond, MaxDelay: 50 * time.Millisecond})
		start := time.Now()
		m.Endpoint(1).Send(memApps(1, 2, 1, 1))
		time.Sleep(49 * time.Millisecond)
		synctest.Wait()
		if got := nodes[2].indexes(); len(got) != 0 {
			t.Fatalf("delivered %v after 49ms of a 50ms delay", got)
		}
		time.Sleep(time.Millisecond)
		synctest.Wait()
		if got := nodes[2].indexes(); len(got) != 1 {
			t.Fatalf("delivered %v after 50ms", got)
		}
		if d := nodes[2].view().arrivals[0].Sub(start); d != 50*time.Millisecond {
			t.Errorf("arrived after %v, want exactly 50ms", d)
		}
	})
}

func TestMemoryReorderLetsMessagesOvertake(t *testing.T) {
	for _, reorder := range []bool{false, true} {
		t.Run(fmt.Sprintf("reorder=%v", reorder), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				const n = 200
				m := NewMemory(3)
				defer m.Close()
				nodes := memStart(t, m, 1, 2)
				f := LinkFaults{MinDelay: 10 * time.Millisecond, MaxDelay: 100 * time.Millisecond, Reorder: reorder}
				m.SetAllFaults(f)
				start := time.Now()
				m.Endpoint(1).Send(memApps(1, 2, 1, n))
				time.Sleep(f.MaxDelay)
				synctest.Wait()
				got := nodes[2].indexes()
				if len(got) != n {
					t.Fatalf("%d of %d delivered after MaxDelay", len(got), n)
				}
				if sorted := slices.IsSorted(got); sorted == reorder {
					t.Errorf("Reorder %v, delivered in order: %v", reorder, sorted)
				}
				for _, at := range nodes[2].view().arrivals {
					if d := at.Sub(start); d < f.MinDelay || d > f.MaxDelay {
						t.Fatalf("a message arrived after %v, outside [%v, %v]", d, f.MinDelay, f.MaxDelay)
					}
				}
			})
		})
	}
}

func TestMemoryFIFOHoldsWhenDelaysShrink(t *testing.T) {
	for _, reorder := range []bool{false, true} {
		t.Run(fmt.Sprintf("reorder=%v", reorder), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				m := NewMemory(1)
				defer m.Close()
				nodes := memStart(t, m, 1, 2)
				slow := 100 * time.Millisecond
				m.SetFaults(1, 2, LinkFaults{MinDelay: slow, MaxDelay: slow, Reorder: reorder})
				m.Endpoint(1).Send(memApps(1, 2, 1, 1))
				m.SetFaults(1, 2, LinkFaults{Reorder: reorder})
				m.Endpoint(1).Send(memApps(1, 2, 2, 1))
				synctest.Wait()
				want := []core.Index{}
				if reorder {
					want = []core.Index{2}
				}
				if got := nodes[2].indexes(); !slices.Equal(got, want) {
					t.Fatalf("at once: delivered %v, want %v", got, want)
				}
				time.Sleep(slow)
				synctest.Wait()
				want = []core.Index{1, 2}
				if reorder {
					want = []core.Index{2, 1}
				}
				if got := nodes[2].indexes(); !slices.Equal(got, want) {
					t.Fatalf("after %v: delivered %v, want %v", slow, got, want)
				}
			})
		})
	}
}

func TestMemoryPartitionCutsAndHealRestores(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := NewMemory(1)
		defer m.Close()
		nodes := memStart(t, m, 1, 2, 3)
		sendAll := func(index core.Index) {
			for from := core.NodeID(1); from <= 3; from++ {
				for to := core.NodeID(1); to <= 3; to++ {
					if from != to {
						m.Endpoint(from).Send(memApps(from, to, index, 1))
					}
				}
			}
			synctest.Wait()
		}
		m.Partition([]core.NodeID{1}, []core.NodeID{2, 3})
		sendAll(1)
		m.Heal()
		sendAll(2)
		m.Isolate(3)
		sendAll(3)
		m.Heal()
		m.Partition([]core.NodeID{1, 2}) // 3 in no group
		sendAll(4)
		m.Heal()
		want := map[core.NodeID][]core.Index{
			1: {2, 2, 3, 4},
			2: {1, 2, 2, 3, 4},
			3: {1, 2, 2},
		}
		for id, w := range want {
			got := nodes[id].indexes()
			slices.Sort(got)
			if !slices.Equal(got, w) {
				t.Errorf("node %d got %v, want %v", id, got, w)
			}
			if unreachable := nodes[id].view().unreachable; len(unreachable) != 0 {
				t.Errorf("node %d told unreachable %v across a partition", id, unreachable)
			}
		}
		if s := m.Stats(); s.Cut != 4+4+4 {
			t.Errorf("stats %+v, want 12 cut", s)
		}
		memCheckStats(t, m.Stats())
	})
}

func TestMemoryPartitionCutsMessagesInFlight(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := NewMemory(1)
		defer m.Close()
		nodes := memStart(t, m, 1, 2)
		m.SetAllFaults(LinkFaults{MinDelay: 10 * time.Millisecond, MaxDelay: 10 * time.Millisecond})
		m.Endpoint(1).Send(memApps(1, 2, 1, 5))
		time.Sleep(5 * time.Millisecond)
		m.Isolate(2)
		time.Sleep(10 * time.Millisecond)
		synctest.Wait()
		m.Heal()
		time.Sleep(10 * time.Millisecond)
		synctest.Wait()
		if got := nodes[2].indexes(); len(got) != 0 {
			t.Errorf("delivered %v that were in flight while 2 was isolated", got)
		}
		if s := m.Stats(); s.Cut != 5 {
			t.Errorf("stats %+v, want 5 cut", s)
		}
	})
}

func TestMemoryRefusalsReportUnreachable(t *testing.T) {
	cases := map[string]func(m *Memory){
		"recipient not a peer of the sender": func(m *Memory) {
			m.Endpoint(1).RemovePeer(2)
		},
		"recipient has no endpoint": func(m *Memory) {},
		"recipient not started": func(m *Memory) {
			m.Endpoint(2)
		},
		"recipient closed": func(m *Memory) {
			memStartOne(m, 2, 1)
			m.Endpoint(2).Close()
		},
		"sender unknown to recipient": func(m *Memory) {
			memStartOne(m, 2)
		},
	}
	for name, setup := range cases {
		t.Run(name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				m := NewMemory(1)
				defer m.Close()
				sender := memStartOne(m, 1, 2)
				setup(m)
				m.Endpoint(1).Send(memApps(1, 2, 1, 3))
				synctest.Wait()
				v := sender.view()
				unreachable, removed := v.unreachable, v.removed
				if len(unreachable) == 0 || slices.ContainsFunc(unreachable, func(id core.NodeID) bool { return id != 2 }) {
					t.Errorf("Unreachable got %v, want 2", unreachable)
				}
				if len(removed) != 0 {
					t.Errorf("Removed got %v", removed)
				}
				if s := m.Stats(); s.Refused != 3 || s.Delivered != 0 {
					t.Errorf("stats %+v, want 3 refused", s)
				}
			})
		})
	}
}

// memStartOne starts the endpoint of id with peers and returns its handler.
func memStartOne(m *Memory, id core.NodeID, peers ...core.NodeID) *memNode {
	n := &memNode{}
	tr := m.Endpoint(id)
	if err := tr.Start(n); err != nil {
		panic(err)
	}
	for _, p := range peers {
		tr.AddPeer(p, "")
	}
	return n
}

func TestMemoryRemovedSenderIsTold(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := NewMemory(1)
		defer m.Close()
		nodes := memStart(t, m, 1, 2)
		m.Endpoint(2).RemovePeer(1)
		m.Endpoint(1).Send(memApps(1, 2, 1, 1))
		synctest.Wait()
		v := nodes[1].view()
		unreachable, removed := v.unreachable, v.removed
		if !slices.Equal(removed, []core.NodeID{2}) || len(unreachable) != 0 {
			t.Errorf("Removed %v, Unreachable %v; want Removed by 2 only", removed, unreachable)
		}
		if got := nodes[2].indexes(); len(got) != 0 {
			t.Errorf("a removed node's messages were delivered: %v", got)
		}
		m.Endpoint(2).AddPeer(1, "back")
		m.Endpoint(1).Send(memApps(1, 2, 2, 1))
		synctest.Wait()
		if got := nodes[2].indexes(); !slices.Equal(got, []core.Index{2}) {
			t.Errorf("after AddPeer, delivered %v, want [2]", got)
		}
	})
}

func TestMemoryFullQueueReportsUnreachable(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := NewMemory(1)
		defer m.Close()
		nodes := memStart(t, m, 1, 2)
		m.SetAllFaults(LinkFaults{MinDelay: time.Second, MaxDelay: time.Second})
		m.Endpoint(1).Send(memApps(1, 2, 1, memoryQueueLen+10))
		synctest.Wait()
		unreachable := nodes[1].view().unreachable
		if len(unreachable) == 0 || slices.ContainsFunc(unreachable, func(id core.NodeID) bool { return id != 2 }) {
			t.Errorf("Unreachable got %v, want 2", unreachable)
		}
		if s := m.Stats(); s.QueueFull != 10 {
			t.Errorf("stats %+v, want 10 queue-full drops", s)
		}
		time.Sleep(time.Second)
		synctest.Wait()
		if got := nodes[2].indexes(); !slices.Equal(got, memSeq(1, memoryQueueLen)) {
			t.Errorf("delivered %d messages, want the first %d in order", len(got), memoryQueueLen)
		}
		memCheckStats(t, m.Stats())
	})
}

func memSnapMsg(from, to core.NodeID) core.Message {
	return core.Message{Type: core.MsgSnap, From: from, To: to, Term: 3, Snapshot: &core.Snapshot{
		Meta: core.SnapshotMeta{Index: 10, Term: 3, ConfState: core.ConfState{Voters: []core.NodeID{1, 2}}},
		Data: []byte("in-band data"),
	}}
}

func memPattern(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i * 31)
	}
	return b
}

func TestMemorySnapshotCommittedBeforeDelivery(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := NewMemory(1)
		defer m.Close()
		nodes := memStart(t, m, 1, 2)
		nodes[1].body = memPattern(300 << 10)
		sent := memSnapMsg(1, 2)
		m.Endpoint(1).Send([]core.Message{sent})
		synctest.Wait()
		recv := nodes[2].view()
		events := recv.events
		want := []string{fmt.Sprintf("receive from 1 index 10 size %d", 300<<10), "commit", "deliver MsgSnap"}
		if !slices.Equal(events, want) {
			t.Errorf("receiver saw %q, want %q", events, want)
		}
		if !bytes.Equal(recv.written, nodes[1].body) {
			t.Error("the body written differs from the body opened")
		}
		if !reflect.DeepEqual(recv.delivered, []core.Message{sent}) {
			t.Errorf("delivered %+v, want %+v", recv.delivered, sent)
		}
		send := nodes[1].view()
		done := send.done
		if len(done) != 1 || done[0].err != nil || done[0].to != 2 || !reflect.DeepEqual(done[0].meta, sent.Snapshot.Meta) {
			t.Errorf("SnapshotDone got %+v, want one for 2 without error", done)
		}
		if !send.bodyClosed {
			t.Error("the body was not closed")
		}
		memCheckStats(t, m.Stats())
	})
}

func TestMemorySnapshotDoesNotHoldUpLink(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := NewMemory(1)
		defer m.Close()
		nodes := memStart(t, m, 1, 2)
		nodes[1].body = memPattern(1 << 10)
		nodes[2].gate = make(chan struct{})
		m.Endpoint(1).Send(append([]core.Message{memSnapMsg(1, 2)}, memApps(1, 2, 1, 3)...))
		synctest.Wait()
		if got := nodes[2].indexes(); !slices.Equal(got, []core.Index{1, 2, 3}) {
			t.Errorf("while the snapshot is being written, delivered %v, want [1 2 3]", got)
		}
		close(nodes[2].gate)
		synctest.Wait()
		// A MsgSnap's Index is 0: its index is in the snapshot's metadata.
		if got := nodes[2].indexes(); !slices.Equal(got, []core.Index{1, 2, 3, 0}) {
			t.Errorf("after the snapshot, delivered %v, want the MsgSnap last", got)
		}
	})
}

func TestMemorySnapshotFailuresAreReported(t *testing.T) {
	cases := map[string]struct {
		setup func(m *Memory, sender, receiver *memNode)
		abort bool // whether a writer existed and must be aborted
	}{
		"open fails":              {setup: func(m *Memory, s, r *memNode) { s.openErr = errMemoryTest }},
		"receiver refuses":        {setup: func(m *Memory, s, r *memNode) { r.recvErr = errMemoryTest }},
		"write fails":             {setup: func(m *Memory, s, r *memNode) { r.writeErr = errMemoryTest }, abort: true},
		"commit fails":            {setup: func(m *Memory, s, r *memNode) { r.commitErr = errMemoryTest }, abort: true},
		"body shorter than size":  {setup: func(m *Memory, s, r *memNode) { s.sizeDelta = 10 }, abort: true},
		"body longer than size":   {setup: func(m *Memory, s, r *memNode) { s.sizeDelta = -10 }, abort: true},
		"dropped by fault":        {setup: func(m *Memory, s, r *memNode) { m.SetAllFaults(LinkFaults{Drop: 1}) }},
		"partitioned":             {setup: func(m *Memory, s, r *memNode) { m.Partition([]core.NodeID{1}, []core.NodeID{2}) }},
		"receiver removed sender": {setup: func(m *Memory, s, r *memNode) { m.Endpoint(2).RemovePeer(1) }},
		"not a peer":              {setup: func(m *Memory, s, r *memNode) { m.Endpoint(1).RemovePeer(2) }},
		"queue full": {setup: func(m *Memory, s, r *memNode) {
			m.SetAllFaults(LinkFaults{MinDelay: time.Second, MaxDelay: time.Second})
			m.Endpoint(1).Send(memApps(1, 2, 1, memoryQueueLen))
		}},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				m := NewMemory(1)
				defer m.Close()
				nodes := memStart(t, m, 1, 2)
				nodes[1].body = memPattern(4 << 10)
				c.setup(m, nodes[1], nodes[2])
				sent := memSnapMsg(1, 2)
				m.Endpoint(1).Send([]core.Message{sent})
				synctest.Wait()
				send := nodes[1].view()
				done := send.done
				if len(done) != 1 || done[0].err == nil || done[0].to != 2 || !reflect.DeepEqual(done[0].meta, sent.Snapshot.Meta) {
					t.Fatalf("SnapshotDone got %+v, want one for 2 with an error", done)
				}
				events := nodes[2].view().events
				if slices.Contains(events, "deliver MsgSnap") {
					t.Error("the MsgSnap was delivered")
				}
				if aborted := slices.Contains(events, "abort"); aborted != c.abort {
					t.Errorf("aborted %v, want %v (events %q)", aborted, c.abort, events)
				}
				if send.opened && !send.bodyClosed {
					t.Error("the body was not closed")
				}
			})
		})
	}
}

func TestMemorySendCopiesMessages(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := NewMemory(1)
		defer m.Close()
		nodes := memStart(t, m, 1, 2)
		m.SetAllFaults(LinkFaults{MinDelay: time.Millisecond, MaxDelay: time.Millisecond, Duplicate: 1})
		msg := func() core.Message {
			return core.Message{Type: core.MsgApp, From: 1, To: 2, Index: 5, Context: []byte("ctx"),
				Entries: []core.Entry{{Index: 6, Data: []byte("abc")}, {Index: 7, Data: []byte{}}, {Index: 8}}}
		}
		sent := []core.Message{msg()}
		m.Endpoint(1).Send(sent)
		sent[0].Entries[0].Data[0] = 'X'
		sent[0].Context[0] = 'X'
		sent[0].Entries[1].Index = 99
		time.Sleep(time.Millisecond)
		synctest.Wait()
		got := nodes[2].view().delivered
		if len(got) != 2 || !reflect.DeepEqual(got[0], msg()) || !reflect.DeepEqual(got[1], msg()) {
			t.Fatalf("delivered %+v, want twice %+v", got, msg())
		}
		got[0].Entries[0].Data[0] = 'Y'
		if got[1].Entries[0].Data[0] != 'a' {
			t.Error("the two copies of a duplicate share memory")
		}
	})
}

func TestMemoryCloneSharesNothing(t *testing.T) {
	orig := memSnapMsg(1, 2)
	orig.Context = []byte("ctx")
	orig.Entries = []core.Entry{{Data: []byte("abc")}, {Data: []byte{}}, {}}
	orig.Snapshot.Meta.ConfState = core.ConfState{Voters: []core.NodeID{1}, Learners: []core.NodeID{2},
		VotersOutgoing: []core.NodeID{3}, LearnersNext: []core.NodeID{4}}
	c := memCloneMessage(&orig)
	if !reflect.DeepEqual(c, orig) {
		t.Fatalf("clone %+v differs from %+v", c, orig)
	}
	c.Context[0]++
	c.Entries[0].Data[0]++
	c.Entries[2].Index++
	c.Snapshot.Data[0]++
	c.Snapshot.Meta.Index++
	cs := &c.Snapshot.Meta.ConfState
	cs.Voters[0]++
	cs.Learners[0]++
	cs.VotersOutgoing[0]++
	cs.LearnersNext[0]++
	if reflect.DeepEqual(c, orig) || !reflect.DeepEqual(orig, func() core.Message {
		o := memSnapMsg(1, 2)
		o.Context = []byte("ctx")
		o.Entries = []core.Entry{{Data: []byte("abc")}, {Data: []byte{}}, {}}
		o.Snapshot.Meta.ConfState = core.ConfState{Voters: []core.NodeID{1}, Learners: []core.NodeID{2},
			VotersOutgoing: []core.NodeID{3}, LearnersNext: []core.NodeID{4}}
		return o
	}()) {
		t.Fatalf("changing the clone changed the original: %+v", orig)
	}
}

// memRun sends n messages 1 → 2 on a faulty network seeded with seed and
// returns the indexes delivered, in order.
func memRun(t *testing.T, seed uint64, n int) []core.Index {
	var got []core.Index
	synctest.Test(t, func(t *testing.T) {
		m := NewMemory(seed)
		defer m.Close()
		nodes := memStart(t, m, 1, 2)
		m.SetAllFaults(LinkFaults{Drop: 0.3, Duplicate: 0.2, MaxDelay: 20 * time.Millisecond, Reorder: true})
		for i := range n {
			m.Endpoint(1).Send(memApps(1, 2, core.Index(i+1), 1))
		}
		time.Sleep(20 * time.Millisecond)
		synctest.Wait()
		got = nodes[2].indexes()
	})
	return got
}

func TestMemorySameSeedSameDecisions(t *testing.T) {
	a, b, other := memRun(t, 7, 1000), memRun(t, 7, 1000), memRun(t, 8, 1000)
	if !slices.Equal(a, b) {
		t.Error("seed 7 twice delivered different sequences")
	}
	if slices.Equal(a, other) {
		t.Error("seeds 7 and 8 delivered the same sequence")
	}
	if len(a) < 700 || len(a) > 1000 {
		t.Errorf("delivered %d of 1000 with Drop 0.3 and Duplicate 0.2", len(a))
	}
}

func TestMemoryCloseWaitsForHandlers(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := NewMemory(1)
		defer m.Close()
		nodes := memStart(t, m, 1, 2)
		nodes[2].block = make(chan struct{})
		m.Endpoint(1).Send(memApps(1, 2, 1, 1))
		synctest.Wait()
		var closed atomic.Bool
		go func() {
			m.Endpoint(2).Close()
			closed.Store(true)
		}()
		synctest.Wait()
		if closed.Load() {
			t.Fatal("Close returned while Deliver was running")
		}
		close(nodes[2].block)
		synctest.Wait()
		if !closed.Load() {
			t.Fatal("Close did not return after Deliver did")
		}
	})
}

func TestMemoryCloseDiscardsQueued(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := NewMemory(1)
		defer m.Close()
		nodes := memStart(t, m, 1, 2)
		m.SetAllFaults(LinkFaults{MinDelay: time.Second, MaxDelay: time.Second})
		m.Endpoint(1).Send(memApps(1, 2, 1, 10))
		if err := m.Endpoint(1).Close(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(2 * time.Second)
		synctest.Wait()
		if got := nodes[2].indexes(); len(got) != 0 {
			t.Errorf("delivered %v after the sender closed", got)
		}
		if s := m.Stats(); s.Discarded != 10 {
			t.Errorf("stats %+v, want 10 discarded", s)
		}
		memCheckStats(t, m.Stats())
	})
}

func TestMemoryCloseLeavesNoGoroutines(t *testing.T) {
	before := runtime.NumGoroutine()
	m := NewMemory(1)
	ids := []core.NodeID{1, 2, 3, 4, 5}
	nodes := memStart(t, m, ids...)
	m.SetAllFaults(LinkFaults{MaxDelay: time.Millisecond, Reorder: true})
	for _, from := range ids {
		nodes[from].body = memPattern(64 << 10)
		for _, to := range ids {
			if from != to {
				m.Endpoint(from).Send(append(memApps(from, to, 1, 100), memSnapMsg(from, to)))
			}
		}
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	memCheckStats(t, m.Stats())
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			t.Fatalf("%d goroutines after Close, %d before", runtime.NumGoroutine(), before)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestMemoryErrors(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := NewMemory(1)
		tr := m.Endpoint(1)
		if m.Endpoint(1) != tr {
			t.Error("Endpoint returned a new Transport for the same id")
		}
		if err := tr.Start(nil); err == nil {
			t.Error("Start(nil) succeeded")
		}
		if err := tr.Start(&memNode{}); err != nil {
			t.Fatal(err)
		}
		if err := tr.Start(&memNode{}); err == nil {
			t.Error("a second Start succeeded")
		}
		if err := tr.Close(); err != nil {
			t.Fatal(err)
		}
		if err := tr.Close(); !errors.Is(err, ErrClosed) {
			t.Errorf("second Close: %v, want ErrClosed", err)
		}
		tr.Send(memApps(1, 2, 1, 1)) // dropped, without a handler to call
		tr.AddPeer(2, "")
		tr.RemovePeer(2)
		e2 := m.Endpoint(2)
		if err := e2.Close(); err != nil {
			t.Fatal(err)
		}
		if err := e2.Start(&memNode{}); !errors.Is(err, ErrClosed) {
			t.Errorf("Start after Close: %v, want ErrClosed", err)
		}
		// A closed endpoint is replaced: the node restarts.
		if fresh := m.Endpoint(2); fresh == e2 {
			t.Error("Endpoint returned a closed endpoint again")
		} else if err := fresh.Start(&memNode{}); err != nil {
			t.Errorf("Start of a restarted endpoint: %v", err)
		}
		if err := m.Close(); err != nil {
			t.Fatal(err)
		}
		if err := m.Close(); !errors.Is(err, ErrClosed) {
			t.Errorf("second Memory.Close: %v, want ErrClosed", err)
		}
		if err := m.Endpoint(3).Start(&memNode{}); !errors.Is(err, ErrClosed) {
			t.Errorf("Start of an endpoint made after Memory.Close: %v, want ErrClosed", err)
		}
		memCheckStats(t, m.Stats())
	})
}
