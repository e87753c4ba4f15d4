// Package coretest drives clusters of core.Raft nodes in memory, for tests:
// each node has its own MemoryStorage and follows the Ready contract, and
// messages travel through a network the test controls (deliver, drop,
// partition). It is deterministic: the same calls give the same trace.
// RunSim (sim.go) drives such a cluster through random faults from one
// seed and checks Raft's safety properties after every step.
package coretest

import (
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"slices"

	"github.com/stepraft/stepraft/core"
)

// Node is one member: its Raft, its durable storage, and its application.
type Node struct {
	ID      core.NodeID
	Raft    *core.Raft
	Storage *core.MemoryStorage
	// State is the application's state machine. It is durable: it
	// survives a crash, and a restart passes its index as Config.Applied
	// (RestartFromSnapshot models an application that keeps no state and
	// restores the storage's snapshot instead).
	State State
	// Applied holds the committed entries handed to the application, in
	// order, across restarts and snapshot installs (a snapshot adds
	// nothing to it: its entries were applied elsewhere).
	Applied []core.Entry
	// ConfState is the configuration as the application applied it:
	// from snapshots, and from ApplyConfChange on each committed change.
	// ConfErrs holds the changes core refused, as "index: error".
	ConfState core.ConfState
	ConfErrs  []string
	// ReadStates and DroppedProposals collect what Readys handed over.
	ReadStates       []core.ReadState
	DroppedProposals []core.Entry
	Config           core.Config

	// pending is a Ready whose requests went out early but whose write
	// has not happened yet (see StartReady).
	pending *core.Ready
	// pendingApplied counts the pending Ready's committed entries applied
	// before its write (see ApplyPartial).
	pendingApplied int
	// syncedHard is the hard state as of the last write that was synced;
	// unsynced is set when a later write was not (Ready.MustSync false).
	syncedHard core.HardState
	unsynced   bool
	// Down marks a crashed node that has not been restarted.
	Down bool
}

// State is an application's state machine as tests see it: the index of
// the last entry applied, and a digest chained over every entry applied up
// to it. Two nodes at one index hold equal digests exactly when they
// applied the same entries (up to hash collisions), however they got there:
// a snapshot carries the digest of the state it holds.
type State struct {
	Index  core.Index
	Digest uint64
}

// apply applies e, which must be the entry right after s.Index.
func (s *State) apply(e core.Entry) error {
	if e.Index != s.Index+1 {
		return fmt.Errorf("entry %s handed out for applying after index %d", core.DescribeEntry(e), s.Index)
	}
	h := fnv.New64a()
	var b [25]byte
	binary.BigEndian.PutUint64(b[0:], s.Digest)
	binary.BigEndian.PutUint64(b[8:], uint64(e.Index))
	binary.BigEndian.PutUint64(b[16:], uint64(e.Term))
	b[24] = byte(e.Type)
	h.Write(b[:])
	h.Write(e.Data)
	s.Index, s.Digest = e.Index, h.Sum64()
	return nil
}

// Encode returns the state as snapshot data.
func (s State) Encode() []byte { return fmt.Appendf(nil, "state %d %016x", s.Index, s.Digest) }

func (s State) String() string { return fmt.Sprintf("%d/%016x", s.Index, s.Digest) }

// StateOfSnapshot returns the state a snapshot holds. A snapshot without
// data (the bootstrap snapshot, or one a test made by hand) holds the
// state at its index with a zero digest.
func StateOfSnapshot(snap core.Snapshot) (State, error) {
	st := State{Index: snap.Meta.Index}
	if len(snap.Data) == 0 {
		return st, nil
	}
	var idx core.Index
	if _, err := fmt.Sscanf(string(snap.Data), "state %d %x", &idx, &st.Digest); err != nil {
		return State{}, fmt.Errorf("snapshot %s: data %q: %w", core.DescribeSnapshotMeta(snap.Meta), snap.Data, err)
	}
	if idx != snap.Meta.Index {
		return State{}, fmt.Errorf("snapshot %s holds the state at %d", core.DescribeSnapshotMeta(snap.Meta), idx)
	}
	return st, nil
}

// Cluster is a set of nodes and the messages in flight between them.
type Cluster struct {
	nodes map[core.NodeID]*Node
	ids   []core.NodeID
	// Net holds messages sent and not yet delivered or dropped, in order.
	Net []core.Message
	// cut[a][b] drops every message from a to b.
	cut map[[2]core.NodeID]bool
	// Base is the config every node starts from (ID and Storage are set
	// per node).
	Base core.Config
}

// NewCluster returns an empty cluster whose nodes will use base.
func NewCluster(base core.Config) *Cluster {
	return &Cluster{nodes: map[core.NodeID]*Node{}, cut: map[[2]core.NodeID]bool{}, Base: base}
}

// Bootstrap adds founding members ids with a shared initial configuration:
// a snapshot at index 1, term 1 naming ids as voters, and hard state
// {Term: 1, Commit: 1}, as DESIGN.md prescribes.
func (c *Cluster) Bootstrap(ids ...core.NodeID) error {
	for _, id := range ids {
		s, err := BootstrapStorage(ids...)
		if err != nil {
			return err
		}
		if err := c.AddNode(id, s); err != nil {
			return err
		}
	}
	return nil
}

// BootstrapStorage returns the storage a founding member of a cluster of
// voters starts from: a snapshot at index 1, term 1 naming the voters, and
// hard state {Term: 1, Commit: 1}.
func BootstrapStorage(voters ...core.NodeID) (*core.MemoryStorage, error) {
	s := core.NewMemoryStorage()
	snap := core.Snapshot{Meta: core.SnapshotMeta{Index: 1, Term: 1,
		ConfState: core.ConfState{Voters: slices.Clone(voters)}}}
	if err := s.ApplySnapshot(snap); err != nil {
		return nil, err
	}
	if err := s.SetHardState(core.HardState{Term: 1, Commit: 1}); err != nil {
		return nil, err
	}
	return s, nil
}

// AddNode starts node id on storage s.
func (c *Cluster) AddNode(id core.NodeID, s *core.MemoryStorage) error {
	if _, ok := c.nodes[id]; ok {
		return fmt.Errorf("node %d exists", id)
	}
	cfg := c.Base
	cfg.ID = id
	cfg.Storage = s
	snap, err := s.Snapshot()
	if err != nil {
		return err
	}
	st, err := StateOfSnapshot(snap)
	if err != nil {
		return err
	}
	hs, _, err := s.InitialState()
	if err != nil {
		return err
	}
	r, err := core.New(cfg)
	if err != nil {
		return err
	}
	c.nodes[id] = &Node{ID: id, Raft: r, Storage: s, Config: cfg, State: st, syncedHard: hs,
		ConfState: snap.Meta.ConfState}
	c.ids = append(c.ids, id)
	slices.Sort(c.ids)
	return nil
}

// Node returns member id, or nil.
func (c *Cluster) Node(id core.NodeID) *Node { return c.nodes[id] }

// IDs returns the members' IDs, sorted.
func (c *Cluster) IDs() []core.NodeID { return c.ids }

// StartReady takes a node's Ready and sends its requests at once, as the
// contract allows; responses wait for FinishReady. It returns the Ready, or
// false if the node had nothing to do.
func (n *Node) StartReady(c *Cluster) (core.Ready, bool) {
	if n.Down || n.pending != nil || !n.Raft.HasReady() {
		return core.Ready{}, false
	}
	rd := n.Raft.Ready()
	for _, m := range rd.Messages {
		if !m.Type.IsResponse() {
			c.send(m)
		}
	}
	n.pending, n.pendingApplied = &rd, 0
	return rd, true
}

// ApplyPartial does what the contract allows while the pending Ready's
// write is under way: it applies that Ready's committed entries below its
// Entries (durable already), then takes the node's PartialReady, sends its
// requests, applies its committed entries and collects its read states and
// dropped proposals. It reports false if there was no partial Ready.
func (n *Node) ApplyPartial(c *Cluster) (core.Ready, bool, error) {
	if n.Down || n.pending == nil || !n.Raft.HasPartialReady() {
		return core.Ready{}, false, nil
	}
	early := len(n.pending.DurableCommitted())
	if err := n.applyDurable(n.pending.CommittedEntries[n.pendingApplied:early]); err != nil {
		return core.Ready{}, true, err
	}
	n.pendingApplied = early
	rd := n.Raft.PartialReady()
	if len(rd.Entries) > 0 || !rd.HardState.IsEmpty() || !rd.Snapshot.IsEmpty() || rd.MustSync {
		return rd, true, fmt.Errorf("node %d: a partial Ready asks for a write or a state change:\n%s", n.ID, core.DescribeReady(rd))
	}
	for _, m := range rd.Messages {
		if m.Type.IsResponse() {
			return rd, true, fmt.Errorf("node %d: a partial Ready sends the response %s before its write", n.ID, core.DescribeMessage(m))
		}
		c.send(m)
	}
	if err := n.applyDurable(rd.CommittedEntries); err != nil {
		return rd, true, err
	}
	n.ReadStates = append(n.ReadStates, rd.ReadStates...)
	n.DroppedProposals = append(n.DroppedProposals, rd.DroppedProposals...)
	return rd, true, nil
}

// applyDurable applies entries that the contract says are durable here
// already, and checks that the storage does hold them.
func (n *Node) applyDurable(ents []core.Entry) error {
	for _, e := range ents {
		if t, err := n.Storage.Term(e.Index); err != nil || t != e.Term {
			return fmt.Errorf("node %d: entry %s applied during a write, before storage holds it (term %d, %v)",
				n.ID, core.DescribeEntry(e), t, err)
		}
	}
	return n.apply(ents)
}

// Pending returns the Ready taken by StartReady whose write has not
// happened yet, if there is one.
func (n *Node) Pending() (core.Ready, bool) {
	if n.pending == nil {
		return core.Ready{}, false
	}
	return *n.pending, true
}

// FinishReady persists the pending Ready, sends its responses, applies its
// committed entries and advances.
func (n *Node) FinishReady(c *Cluster) error {
	if n.pending == nil {
		return nil
	}
	rd := *n.pending
	n.pending = nil
	if !rd.MustSync && (len(rd.Entries) > 0 || !rd.Snapshot.IsEmpty()) {
		return fmt.Errorf("node %d: a Ready with entries or a snapshot does not ask for a sync", n.ID)
	}
	if !rd.Snapshot.IsEmpty() {
		st, err := StateOfSnapshot(rd.Snapshot)
		if err != nil {
			return fmt.Errorf("node %d: %w", n.ID, err)
		}
		if err := n.Storage.ApplySnapshot(rd.Snapshot); err != nil {
			return fmt.Errorf("node %d: apply snapshot: %w", n.ID, err)
		}
		if st.Index <= n.State.Index {
			return fmt.Errorf("node %d: handed snapshot %s with its state at %d", n.ID,
				core.DescribeSnapshotMeta(rd.Snapshot.Meta), n.State.Index)
		}
		n.State = st
		n.ConfState = rd.Snapshot.Meta.ConfState
	}
	if err := n.Storage.Append(rd.Entries); err != nil {
		return fmt.Errorf("node %d: append: %w", n.ID, err)
	}
	if !rd.HardState.IsEmpty() {
		if err := n.Storage.SetHardState(rd.HardState); err != nil {
			return err
		}
	}
	if rd.MustSync {
		// An fsync makes every earlier write durable too.
		n.syncedHard, n.unsynced = n.storageHard(), false
	} else if !rd.HardState.IsEmpty() {
		n.unsynced = true
	}
	for _, m := range rd.Messages {
		if m.Type.IsResponse() {
			c.send(m)
		}
	}
	if err := n.apply(rd.CommittedEntries[n.pendingApplied:]); err != nil {
		return err
	}
	n.pendingApplied = 0
	n.ReadStates = append(n.ReadStates, rd.ReadStates...)
	n.DroppedProposals = append(n.DroppedProposals, rd.DroppedProposals...)
	n.Raft.Advance(rd)
	return nil
}

// apply applies committed entries to the state machine, in order, calling
// ApplyConfChange for each conf change.
func (n *Node) apply(ents []core.Entry) error {
	for _, e := range ents {
		if err := n.State.apply(e); err != nil {
			return fmt.Errorf("node %d: %w", n.ID, err)
		}
		if e.Type == core.EntryConfChange {
			var cc core.ConfChange
			if err := cc.Unmarshal(e.Data); err != nil {
				return fmt.Errorf("node %d: committed conf change %s: %w", n.ID, core.DescribeEntry(e), err)
			}
			cs, err := n.Raft.ApplyConfChange(cc)
			if err != nil {
				n.ConfErrs = append(n.ConfErrs, fmt.Sprintf("%d: %v", e.Index, err))
			} else {
				n.ConfState = cs
			}
		}
	}
	n.Applied = append(n.Applied, ents...)
	return nil
}

func (n *Node) storageHard() core.HardState {
	hs, _, _ := n.Storage.InitialState()
	return hs
}

// TakeSnapshot snapshots the application's state into the storage, at
// the index it has applied, keeping the storage's configuration.
func (n *Node) TakeSnapshot() (core.Snapshot, error) {
	cs := n.ConfState
	return n.Storage.CreateSnapshot(n.State.Index, &cs, n.State.Encode())
}

// HandleReady runs one whole Ready cycle; it reports whether there was one.
func (n *Node) HandleReady(c *Cluster) (core.Ready, bool, error) {
	rd, ok := n.StartReady(c)
	if !ok {
		return rd, false, nil
	}
	return rd, true, n.FinishReady(c)
}

// Crash stops a node: its Raft and any Ready not yet persisted are lost;
// its storage keeps what was written.
func (n *Node) Crash() {
	n.Down = true
	n.pending = nil
	n.Raft = nil
}

// CrashLosingUnsynced crashes the node as a power failure would: on top of
// what Crash loses, writes made since the last synced one are undone. It
// returns the hard state those writes had left, and whether it was lost.
func (n *Node) CrashLosingUnsynced() (core.HardState, bool) {
	n.Crash()
	if !n.unsynced {
		return core.HardState{}, false
	}
	lost := n.storageHard()
	n.unsynced = false
	if err := n.Storage.SetHardState(n.syncedHard); err != nil {
		panic(err) // MemoryStorage does not fail
	}
	return lost, true
}

// Restart brings a crashed node back from its storage, telling core what
// its application had applied.
func (c *Cluster) Restart(id core.NodeID) error {
	return c.restart(id, false)
}

// RestartFromSnapshot brings a crashed node back as an application that
// keeps no state of its own does: it restores the storage's snapshot and
// lets core hand out every committed entry after it.
func (c *Cluster) RestartFromSnapshot(id core.NodeID) error {
	return c.restart(id, true)
}

func (c *Cluster) restart(id core.NodeID, fromSnapshot bool) error {
	n := c.nodes[id]
	if n == nil {
		return fmt.Errorf("no node %d", id)
	}
	if !n.Down {
		return fmt.Errorf("node %d is up", id)
	}
	cfg := n.Config
	cfg.Applied = n.State.Index
	st, conf := n.State, n.ConfState
	if fromSnapshot {
		snap, err := n.Storage.Snapshot()
		if err != nil {
			return err
		}
		if st, err = StateOfSnapshot(snap); err != nil {
			return fmt.Errorf("node %d: %w", id, err)
		}
		cfg.Applied = 0
		conf = snap.Meta.ConfState
	}
	r, err := core.New(cfg)
	if err != nil {
		return err
	}
	n.Raft, n.Down, n.pending, n.State, n.ConfState = r, false, nil, st, conf
	n.syncedHard, n.unsynced = n.storageHard(), false
	return nil
}

func (c *Cluster) send(m core.Message) {
	c.Net = append(c.Net, m)
}

// Partition cuts every link between the groups; nodes not named keep their
// links.
func (c *Cluster) Partition(groups ...[]core.NodeID) {
	for i, g := range groups {
		for j, h := range groups {
			if i == j {
				continue
			}
			for _, a := range g {
				for _, b := range h {
					c.cut[[2]core.NodeID{a, b}] = true
				}
			}
		}
	}
}

// Cut drops messages from a to b (one direction).
func (c *Cluster) Cut(a, b core.NodeID) { c.cut[[2]core.NodeID{a, b}] = true }

// Heal restores every link.
func (c *Cluster) Heal() { clear(c.cut) }

// Deliver delivers (or, across a cut or to a crashed node, drops) every
// message in flight that matches keep (nil: all), in order, and returns
// them with the error each Step returned.
func (c *Cluster) Deliver(keep func(core.Message) bool) []Delivery {
	var out []Delivery
	var rest []core.Message
	for _, m := range c.Net {
		if keep != nil && !keep(m) {
			rest = append(rest, m)
			continue
		}
		out = append(out, c.DeliverMsg(m))
	}
	c.Net = rest
	return out
}

// Blocked says why m cannot be delivered now ("partitioned", "node down"),
// or returns "" if it can.
func (c *Cluster) Blocked(m core.Message) string {
	to := c.nodes[m.To]
	switch {
	case c.cut[[2]core.NodeID{m.From, m.To}]:
		return "partitioned"
	case to == nil || to.Down:
		return "node down"
	}
	return ""
}

// DeliverMsg steps m into its receiver now, or drops it if it is Blocked.
// The caller has taken m off Net (or made it up).
func (c *Cluster) DeliverMsg(m core.Message) Delivery {
	d := Delivery{Msg: m, Dropped: c.Blocked(m)}
	if d.Dropped == "" {
		d.Err = c.nodes[m.To].Raft.Step(m)
	}
	return d
}

// Delivery is one message taken off the network.
type Delivery struct {
	Msg     core.Message
	Dropped string // why it was dropped, or ""
	Err     error  // what Step returned
}

// Drop removes matching messages from the network without delivering them.
func (c *Cluster) Drop(match func(core.Message) bool) []core.Message {
	var dropped, rest []core.Message
	for _, m := range c.Net {
		if match(m) {
			dropped = append(dropped, m)
		} else {
			rest = append(rest, m)
		}
	}
	c.Net = rest
	return dropped
}

// Stabilize handles Readys and delivers messages until nothing is left to
// do, or maxRounds rounds have run (it returns an error then: a livelock).
func (c *Cluster) Stabilize(maxRounds int) error {
	for range maxRounds {
		busy := false
		for _, id := range c.ids {
			n := c.nodes[id]
			for !n.Down {
				_, ok, err := n.HandleReady(c)
				if err != nil {
					return err
				}
				if !ok {
					break
				}
				busy = true
			}
		}
		if len(c.Net) > 0 {
			busy = true
			for _, d := range c.Deliver(nil) {
				if d.Err != nil {
					return fmt.Errorf("step %s: %w", core.DescribeMessage(d.Msg), d.Err)
				}
			}
		}
		if !busy {
			return nil
		}
	}
	return fmt.Errorf("cluster did not stabilize in %d rounds", maxRounds)
}

// Leader returns the node that is leader in the highest term, or 0.
func (c *Cluster) Leader() core.NodeID {
	var lead core.NodeID
	var term core.Term
	for _, id := range c.ids {
		n := c.nodes[id]
		if n.Down {
			continue
		}
		st := n.Raft.Status()
		if st.Role == core.RoleLeader && st.Term >= term {
			lead, term = id, st.Term
		}
	}
	return lead
}

// RestartWithApplied brings a crashed node back from its storage telling
// core that its application applied up to applied, whatever State says:
// it is for tests of what core accepts as Config.Applied. If core refuses,
// the node stays down and nothing changes. If core accepts an applied
// other than State.Index, State is left as it was, and the next committed
// entry handed out will not follow on from it (FinishReady says so).
func (c *Cluster) RestartWithApplied(id core.NodeID, applied core.Index) error {
	n := c.nodes[id]
	if n == nil {
		return fmt.Errorf("no node %d", id)
	}
	if !n.Down {
		return fmt.Errorf("node %d is up", id)
	}
	cfg := n.Config
	cfg.Applied = applied
	r, err := core.New(cfg)
	if err != nil {
		return err
	}
	n.Raft, n.Down, n.pending = r, false, nil
	n.syncedHard, n.unsynced = n.storageHard(), false
	return nil
}
