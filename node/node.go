package node

import (
	"cmp"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/stepraft/stepraft/core"
	"github.com/stepraft/stepraft/transport"
	"github.com/stepraft/stepraft/wal"
)

// StateMachine is the application a node replicates.
type StateMachine interface {
	// Apply applies one committed command, in log order. index lets it skip
	// commands it already applied (after a restart, entries past the last
	// snapshot are applied again). The result goes back to Propose's
	// caller on the node that proposed it.
	Apply(index uint64, cmd []byte) any
	// Query answers a read; called after linearizability is established.
	Query(query []byte) (any, error)
	// Snapshot captures the state as of the last applied index and returns
	// a function that writes it; the function may run while later Apply
	// calls proceed, so the capture must not share mutable state with them.
	Snapshot() (write func(w io.Writer) error, err error)
	// Restore replaces the whole state with a snapshot taken at index.
	Restore(index uint64, r io.Reader) error
}

// Bounds of the node's queues.
const (
	// proposalQueue is how many proposals may wait for the loop.
	proposalQueue = 4096
	// readQueue is how many reads may wait for the loop.
	readQueue = 4096
	// messageQueue is how many received messages may wait for the loop;
	// past it the transport's deliveries are dropped (Raft retransmits).
	messageQueue = 4096
	// applyQueue is how many batches of committed entries may wait for the
	// apply goroutine; past it the loop waits (back pressure).
	applyQueue = 64
)

// Node is a running member of a cluster. Its methods are safe for
// concurrent use.
type Node struct {
	cfg   Config
	log   *slog.Logger
	sm    StateMachine
	store LogStore
	snaps SnapshotStore
	tr    transport.Transport

	ownStore, ownSnaps, ownTransport bool

	propC  chan *proposal
	readC  chan *readRequest
	msgC   chan core.Message
	ctlC   chan func() // run on the loop goroutine
	applyC chan applyTask
	// recordC carries a written snapshot from the apply goroutine to the
	// loop; size 1, and the applier asks again only once answered.
	recordC chan recordRequest
	// savedC carries the result of the loop's background write.
	savedC chan error

	reports reports

	stopC    chan struct{} // closed when the node starts stopping
	stopOnce sync.Once
	done     chan struct{} // closed when every goroutine has ended
	wg       sync.WaitGroup
	errMu    sync.Mutex
	err      error // why the node stopped itself; nil after Stop

	// Requests waiting for their entries to apply, by request ID.
	pendMu  sync.Mutex
	pending map[uint64]*proposal
	// clock counts the expiry goroutine's ticks; a proposal or read notes
	// it when submitted, and times out RequestTimeoutTicks later.
	clock atomic.Uint64
	// Reads under way, for the expiry goroutine.
	readMu  sync.Mutex
	reading map[*readRequest]struct{}
	reqBase uint64
	nextReq atomic.Uint64

	// What the loop publishes for other goroutines.
	stateMu sync.Mutex
	soft    core.SoftState
	term    core.Term
	members map[NodeID]string // as the loop applied them

	// What the apply goroutine publishes.
	applyMu   sync.Mutex
	applied   Index
	appliedCh chan struct{} // closed and replaced when applied moves
	smMu      sync.Mutex    // Apply, Query and Restore never overlap

	metrics counters
	ev      events
	// syncsEach: a Save with MustSync makes one fsync (the default wal
	// with SyncEachBatch, or a store the application brought).
	syncsEach bool
	cluster   atomic.Uint64 // the cluster ID, once known

	loopState *loop // owned by the loop goroutine
	apply     *applier
	dropped   atomic.Uint64 // received messages dropped on a full queue
}

// Start starts a node: it bootstraps a new cluster from cfg.Peers, joins
// one (cfg.Join), or restarts from what cfg.DataDir (or the stores) hold.
// It returns once the node has replayed its log to the last durable commit
// index and is serving.
func Start(cfg Config) (*Node, error) {
	n, boot, err := newNode(cfg)
	if err != nil {
		return nil, err
	}
	if err := n.startLoop(boot); err != nil {
		n.closeStores()
		return nil, err
	}
	if err := n.waitReplay(boot.commit); err != nil {
		n.Stop()
		return nil, err
	}
	n.log.Info("node started", "cluster", n.cfg.ClusterID, "applied", uint64(n.Applied()), "members", len(boot.members))
	return n, nil
}

// newNode checks cfg, opens the stores and recovers what they hold: the
// node is ready for its loop.
func newNode(cfg Config) (*Node, bootState, error) {
	if err := cfg.Validate(); err != nil {
		return nil, bootState{}, err
	}
	clusterGiven := cfg.ClusterID != 0
	cfg = cfg.withDefaults()
	n := &Node{
		cfg:       cfg,
		log:       cfg.Logger.With("node_id", uint64(cfg.ID)),
		sm:        cfg.StateMachine,
		propC:     make(chan *proposal, proposalQueue),
		readC:     make(chan *readRequest, readQueue),
		msgC:      make(chan core.Message, messageQueue),
		ctlC:      make(chan func()),
		applyC:    make(chan applyTask, applyQueue),
		recordC:   make(chan recordRequest, 1),
		savedC:    make(chan error, 1),
		stopC:     make(chan struct{}),
		done:      make(chan struct{}),
		pending:   make(map[uint64]*proposal),
		reading:   make(map[*readRequest]struct{}),
		appliedCh: make(chan struct{}),
		members:   make(map[NodeID]string),
	}
	n.reports.sig = make(chan struct{}, 1)
	n.ev.c = make(chan Event, eventQueue)
	n.metrics.start = time.Now()
	var seed [8]byte
	rand.Read(seed[:])
	n.reqBase = binary.LittleEndian.Uint64(seed[:]) &^ (1<<40 - 1) // room for 2^40 requests
	if err := n.open(clusterGiven); err != nil {
		n.closeStores()
		return nil, bootState{}, err
	}
	boot, err := n.recover()
	if err == nil {
		// A commit index stored past the last entry (its entries were not
		// synced, it was: SyncInterval, SyncNever) is lowered by core to
		// the last entry; replay can go no further.
		var last Index
		if last, err = n.store.LastIndex(); err == nil {
			boot.commit = min(boot.commit, max(last, boot.applied))
		}
	}
	if err != nil {
		n.closeStores()
		return nil, bootState{}, err
	}
	n.syncsEach = !n.ownStore || n.cfg.Sync == wal.SyncEachBatch
	n.cluster.Store(n.cfg.ClusterID)
	n.setApplied(boot.applied)
	return n, boot, nil
}

// open opens the stores, checking the cluster and node IDs on disk.
// clusterGiven says the application set ClusterID:
// an existing log must then hold it; otherwise the stored one is taken.
func (n *Node) open(clusterGiven bool) error {
	c := &n.cfg
	if c.LogStore == nil {
		dir := filepath.Join(c.DataDir, "wal")
		_, statErr := os.Stat(dir)
		fresh := errors.Is(statErr, os.ErrNotExist)
		if fresh && !c.Join {
			// Refuse before anything is written.
			if _, ok := c.Peers[c.ID]; !ok {
				return fmt.Errorf("%w: bootstrapping a new cluster, and this node (%d) is not in Peers", ErrConfig, c.ID)
			}
		}
		cluster := c.ClusterID
		if !fresh && !clusterGiven {
			cluster = 0 // take the stored one
		}
		l, err := wal.Open(dir, wal.Options{Sync: c.Sync, SyncInterval: c.SyncInterval, SegmentSize: logSegmentSize,
			ClusterID: cluster, NodeID: uint64(c.ID), Logger: c.Logger})
		if err != nil {
			return fmt.Errorf("node: open log: %w", err)
		}
		stored, _ := l.Identity()
		if stored != 0 {
			c.ClusterID = stored
		}
		n.store, n.ownStore = l, true
	} else {
		n.store = c.LogStore
	}
	if c.SnapshotStore == nil {
		s, err := openSnapStore(filepath.Join(c.DataDir, "snap"), c.SnapshotsKept, c.Logger)
		if err != nil {
			return fmt.Errorf("node: open snapshots: %w", err)
		}
		n.snaps, n.ownSnaps = s, true
	} else {
		n.snaps = c.SnapshotStore
	}
	return nil
}

func (n *Node) closeStores() {
	if n.ownStore && n.store != nil {
		n.store.Close()
	}
	if n.ownSnaps && n.snaps != nil {
		n.snaps.Close()
	}
}

// bootState is what recover found: where core starts.
type bootState struct {
	applied Index
	commit  Index
	conf    core.ConfState
	term    core.Term // of the entry at applied
	members map[NodeID]string
	// rewriteSnapshot: the snapshot at applied could not be loaded; the
	// apply goroutine writes a new one at once.
	rewriteSnapshot bool
}

// recover bootstraps an empty store or restores the state machine from the
// newest snapshot.
func (n *Node) recover() (bootState, error) {
	hs, _, err := n.store.InitialState()
	if err != nil {
		return bootState{}, fmt.Errorf("node: read log: %w", err)
	}
	last, err := n.store.LastIndex()
	if err != nil {
		return bootState{}, fmt.Errorf("node: read log: %w", err)
	}
	if last == 0 && hs.IsEmpty() {
		if n.cfg.Join {
			return bootState{members: n.peerMap()}, nil
		}
		return n.bootstrap()
	}
	return n.restore(hs)
}

func (n *Node) peerMap() map[NodeID]string {
	m := make(map[NodeID]string, len(n.cfg.Peers))
	for id, a := range n.cfg.Peers {
		m[id] = a
	}
	if n.cfg.Advertise != "" {
		m[n.cfg.ID] = n.cfg.Advertise
	}
	return m
}

// bootstrap founds a cluster of cfg.Peers: a snapshot at index 1, term 1
// of the state machine's initial state, naming the founding voters.
func (n *Node) bootstrap() (bootState, error) {
	if _, ok := n.cfg.Peers[n.cfg.ID]; !ok {
		return bootState{}, fmt.Errorf("%w: bootstrapping, and this node (%d) is not in Peers", ErrConfig, n.cfg.ID)
	}
	members := n.peerMap()
	var cs core.ConfState
	for id := range members {
		cs.Voters = append(cs.Voters, id)
	}
	slices.Sort(cs.Voters)
	meta := core.SnapshotMeta{Index: 1, Term: 1, ConfState: cs}
	if err := n.writeSnapshot(meta, members); err != nil {
		return bootState{}, fmt.Errorf("node: bootstrap: %w", err)
	}
	rd := core.Ready{Snapshot: core.Snapshot{Meta: meta}, HardState: core.HardState{Term: 1, Commit: 1}, MustSync: true}
	if err := n.store.Save(rd); err != nil {
		return bootState{}, fmt.Errorf("node: bootstrap: %w", err)
	}
	n.log.Info("bootstrapped a new cluster", "cluster", n.cfg.ClusterID, "voters", fmt.Sprint(cs.Voters))
	return bootState{applied: 1, commit: 1, conf: cs, term: 1, members: members}, nil
}

// writeSnapshot saves the state machine's current state as meta.
func (n *Node) writeSnapshot(meta core.SnapshotMeta, members map[NodeID]string) error {
	write, err := n.sm.Snapshot()
	if err != nil {
		return fmt.Errorf("state machine snapshot: %w", err)
	}
	sink, err := n.snaps.Create(SnapshotInfo{Meta: meta, Members: memberList(members)})
	if err != nil {
		return err
	}
	if err := write(sink); err != nil {
		return errors.Join(fmt.Errorf("write snapshot %d: %w", meta.Index, err), sink.Abort())
	}
	return sink.Commit()
}

func memberList(m map[NodeID]string) []Member {
	out := make([]Member, 0, len(m))
	for id, a := range m {
		out = append(out, Member{ID: id, Addr: a})
	}
	slices.SortFunc(out, func(a, b Member) int { return cmp.Compare(a.ID, b.ID) })
	return out
}

// restore loads the newest snapshot into the state machine.
func (n *Node) restore(hs core.HardState) (bootState, error) {
	recorded, err := n.store.Snapshot()
	if err != nil {
		return bootState{}, fmt.Errorf("node: read log: %w", err)
	}
	info, body, err := n.snaps.Load()
	if errors.Is(err, ErrNoSnapshot) && recorded.Meta.Index == 0 {
		// A node that joined and crashed before its first snapshot.
		return bootState{commit: hs.Commit, members: n.peerMap()}, nil
	}
	if errors.Is(err, ErrNoSnapshot) && recorded.Meta.Index == 1 && recorded.Meta.Term == 1 {
		// The only snapshot was the one at index 1, which is always the
		// state machine's initial state (bootstrap writes it from a fresh
		// state machine; a joining node receives a leader's): a fresh
		// state machine holds it, and the log holds all the rest. The
		// member addresses it held come from Peers.
		n.log.Warn("the bootstrap snapshot is missing or damaged: starting from the initial state and the whole log", "err", err)
		return bootState{applied: 1, commit: hs.Commit, conf: recorded.Meta.ConfState, term: 1,
			members: n.peerMap(), rewriteSnapshot: true}, nil
	}
	if err != nil {
		return bootState{}, fmt.Errorf("node: load snapshot: %w", err)
	}
	defer body.Close()
	n.smMu.Lock()
	err = n.sm.Restore(uint64(info.Meta.Index), body)
	n.smMu.Unlock()
	if err != nil {
		return bootState{}, fmt.Errorf("node: restore snapshot %d: %w", info.Meta.Index, err)
	}
	members := n.peerMap()
	for _, m := range info.Members {
		members[m.ID] = m.Addr
	}
	if info.Meta.Index < recorded.Meta.Index {
		// The newer snapshot files are missing or damaged (Load skipped
		// them). Compaction never passes the oldest snapshot kept, so
		// the log still holds what lies between: replay it up to the
		// snapshot the log starts after.
		n.log.Warn("newest snapshot unusable: replaying the log from an older one",
			"snapshot", uint64(info.Meta.Index), "log_snapshot", uint64(recorded.Meta.Index))
		n.smMu.Lock()
		err := replayEntries(n.store, info.Meta.Index, recorded.Meta.Index, n.sm, members)
		n.smMu.Unlock()
		if err != nil {
			return bootState{}, fmt.Errorf("node: the newest usable snapshot is at %d, the log's at %d, and the log between cannot be replayed: %w",
				info.Meta.Index, recorded.Meta.Index, err)
		}
		in := confIDs(recorded.Meta.ConfState)
		for id := range members {
			if !in[id] && id != n.cfg.ID {
				delete(members, id)
			}
		}
		n.setApplied(recorded.Meta.Index)
		return bootState{applied: recorded.Meta.Index, commit: hs.Commit, conf: recorded.Meta.ConfState, term: recorded.Meta.Term,
			members: members, rewriteSnapshot: true}, nil
	}
	if info.Meta.Index > recorded.Meta.Index {
		// The snapshot was made but the log did not record it (a crash in
		// between): record it now.
		if err := n.store.SetSnapshot(info.Meta); err != nil {
			return bootState{}, fmt.Errorf("node: record snapshot %d: %w", info.Meta.Index, err)
		}
	}
	n.setApplied(info.Meta.Index)
	return bootState{applied: info.Meta.Index, commit: hs.Commit, conf: info.Meta.ConfState, term: info.Meta.Term, members: members}, nil
}

// ClusterID returns the cluster's ID; 0 for a joining node that has not
// heard from the cluster yet.
func (n *Node) ClusterID() uint64 { return n.cluster.Load() }

// learnCluster stores the cluster ID a joining node's transport learned.
// It runs on the loop goroutine, which owns the log store's writes.
func (n *Node) learnCluster() {
	if n.cluster.Load() != 0 {
		return
	}
	tr, ok := n.tr.(interface{ ClusterID() uint64 })
	if !ok {
		return
	}
	id := tr.ClusterID()
	if id == 0 {
		return
	}
	if s, ok := n.store.(interface {
		SetIdentity(cluster, node uint64) error
	}); ok {
		if err := s.SetIdentity(id, uint64(n.cfg.ID)); err != nil {
			n.log.Warn("could not store the cluster ID", "cluster", id, "err", err)
			return
		}
	}
	n.cluster.Store(id)
	n.log.Info("joined cluster", "cluster", id)
}

// stopping reports whether the node is stopping or stopped.
func (n *Node) stopping() bool {
	select {
	case <-n.stopC:
		return true
	default:
		return false
	}
}

// fail stops the node because of err; the first reason sticks.
func (n *Node) fail(err error) {
	n.errMu.Lock()
	if n.err == nil && !n.stopping() {
		n.err = err
		n.log.Error("node stopping", "err", err)
	}
	n.errMu.Unlock()
	n.stopOnce.Do(func() { close(n.stopC) })
}

// Err says why the node stopped itself; nil while it runs and after Stop.
func (n *Node) Err() error {
	n.errMu.Lock()
	defer n.errMu.Unlock()
	return n.err
}

// Done is closed when the node has stopped, by Stop or by itself.
func (n *Node) Done() <-chan struct{} { return n.done }

// stoppedErr is what calls on a stopped node return.
func (n *Node) stoppedErr() error {
	if err := n.Err(); err != nil {
		return fmt.Errorf("%w: %w", ErrStopped, err)
	}
	return ErrStopped
}

// Stop stops the node and returns once every goroutine has ended and the
// stores are closed. It returns the reason the node had stopped itself,
// if it had. Calling it again is harmless.
func (n *Node) Stop() error {
	n.stopOnce.Do(func() { close(n.stopC) })
	<-n.done
	return n.Err()
}

// Applied is the index of the last entry the state machine applied.
func (n *Node) Applied() Index {
	n.applyMu.Lock()
	defer n.applyMu.Unlock()
	return n.applied
}

// wakeApplied wakes whoever waits for the applied index to move (when
// the node stops).
func (n *Node) wakeApplied() {
	n.applyMu.Lock()
	n.signalAppliedLocked()
	n.applyMu.Unlock()
}

func (n *Node) setApplied(i Index) {
	n.applyMu.Lock()
	if i > n.applied {
		n.applied = i
		n.signalAppliedLocked()
	}
	n.applyMu.Unlock()
}

// signalAppliedLocked wakes the waiters on appliedCh and gives later ones
// a new channel; applyMu is held.
func (n *Node) signalAppliedLocked() {
	close(n.appliedCh)
	n.appliedCh = make(chan struct{})
}

// appliedSignal returns the applied index and a channel closed when it
// next moves.
func (n *Node) appliedSignal() (Index, <-chan struct{}) {
	n.applyMu.Lock()
	defer n.applyMu.Unlock()
	return n.applied, n.appliedCh
}

// waitReplay waits until the entries committed before the start are
// applied, or the node fails.
func (n *Node) waitReplay(commit Index) error {
	for {
		applied, ch := n.appliedSignal()
		if applied >= commit {
			return nil
		}
		select {
		case <-ch:
		case <-n.stopC:
			return n.stoppedErr()
		}
	}
}
