// Package coretest drives clusters of core.Raft nodes in memory, for tests:
// each node has its own MemoryStorage and follows the Ready contract, and
// messages travel through a network the test controls (deliver, drop,
// partition). It is deterministic: the same calls give the same trace.
// RunSim (sim.go) drives such a cluster through random faults from one
// seed and checks Raft's safety properties after every step.
package coretest

import (
	"fmt"
	"slices"

	"github.com/stepraft/stepraft/core"
)

// Node is one member: its Raft, its durable storage, and what it applied.
type Node struct {
	ID      core.NodeID
	Raft    *core.Raft
	Storage *core.MemoryStorage
	// Applied holds the committed entries handed to the application, in
	// order, across restarts (a restarted node resumes after its Applied).
	Applied []core.Entry
	Config  core.Config

	// pending is a Ready whose requests went out early but whose write
	// has not happened yet (see StartReady).
	pending *core.Ready
	// Down marks a crashed node that has not been restarted.
	Down bool
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
	r, err := core.New(cfg)
	if err != nil {
		return err
	}
	c.nodes[id] = &Node{ID: id, Raft: r, Storage: s, Config: cfg}
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
	n.pending = &rd
	return rd, true
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
	if !rd.Snapshot.IsEmpty() {
		if err := n.Storage.ApplySnapshot(rd.Snapshot); err != nil {
			return fmt.Errorf("node %d: apply snapshot: %w", n.ID, err)
		}
	}
	if err := n.Storage.Append(rd.Entries); err != nil {
		return fmt.Errorf("node %d: append: %w", n.ID, err)
	}
	if !rd.HardState.IsEmpty() {
		if err := n.Storage.SetHardState(rd.HardState); err != nil {
			return err
		}
	}
	for _, m := range rd.Messages {
		if m.Type.IsResponse() {
			c.send(m)
		}
	}
	n.Applied = append(n.Applied, rd.CommittedEntries...)
	n.Raft.Advance(rd)
	return nil
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

// Restart brings a crashed node back from its storage, telling core what
// it had applied.
func (c *Cluster) Restart(id core.NodeID) error {
	n := c.nodes[id]
	if n == nil {
		return fmt.Errorf("no node %d", id)
	}
	cfg := n.Config
	if len(n.Applied) > 0 {
		cfg.Applied = n.Applied[len(n.Applied)-1].Index
	}
	r, err := core.New(cfg)
	if err != nil {
		return err
	}
	n.Raft, n.Down, n.pending = r, false, nil
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
