// Command coredemo runs three in-memory core.Raft nodes in one process,
// printing what happens as they elect a leader, replicate and commit a few
// entries, lose their leader and elect another. It shows the Ready loop a
// host runs: persist, send, apply, advance.
//
//	go run ./examples/coredemo
package main

import (
	"fmt"
	"os"

	"github.com/stepraft/stepraft/core"
)

type member struct {
	id      core.NodeID
	raft    *core.Raft
	storage *core.MemoryStorage
	down    bool
}

type cluster struct {
	members []*member
	inbox   []core.Message
	lastLog map[core.NodeID]core.SoftState
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "coredemo:", err)
		os.Exit(1)
	}
}

func run() error {
	c := &cluster{lastLog: map[core.NodeID]core.SoftState{}}
	voters := []core.NodeID{1, 2, 3}
	for _, id := range voters {
		s := core.NewMemoryStorage()
		// Bootstrap: every founding member starts from a snapshot at index
		// 1 that names the voters, and hard state {Term: 1, Commit: 1}.
		if err := s.ApplySnapshot(core.Snapshot{Meta: core.SnapshotMeta{
			Index: 1, Term: 1, ConfState: core.ConfState{Voters: voters}}}); err != nil {
			return err
		}
		if err := s.SetHardState(core.HardState{Term: 1, Commit: 1}); err != nil {
			return err
		}
		r, err := core.New(core.Config{ID: id, Storage: s, Seed: 42})
		if err != nil {
			return err
		}
		c.members = append(c.members, &member{id: id, raft: r, storage: s})
	}

	fmt.Println("three nodes start as followers; ticking until one times out and campaigns")
	lead, err := c.tickUntilLeader(100)
	if err != nil {
		return err
	}
	for _, cmd := range []string{"x=1", "y=2", "z=3"} {
		fmt.Printf("propose %q to leader %d\n", cmd, lead)
		if err := c.member(lead).raft.Propose([]byte(cmd)); err != nil {
			return err
		}
	}
	if err := c.settle(); err != nil {
		return err
	}

	fmt.Printf("leader %d stops\n", lead)
	c.member(lead).down = true
	newLead, err := c.tickUntilLeader(200)
	if err != nil {
		return err
	}
	fmt.Printf("propose %q to new leader %d\n", "w=4", newLead)
	if err := c.member(newLead).raft.Propose([]byte("w=4")); err != nil {
		return err
	}
	if err := c.settle(); err != nil {
		return err
	}
	for _, m := range c.members {
		st := m.raft.Status()
		state := st.Role.String()
		if m.down {
			state = "stopped"
		}
		fmt.Printf("node %d: %-9s term %d commit %d applied %d\n", m.id, state, st.Term, st.Commit, st.Applied)
	}
	return nil
}

func (c *cluster) member(id core.NodeID) *member {
	for _, m := range c.members {
		if m.id == id {
			return m
		}
	}
	return nil
}

// tickUntilLeader ticks every live member, running the Ready loop between
// ticks, until a live member leads; at most maxTicks ticks.
func (c *cluster) tickUntilLeader(maxTicks int) (core.NodeID, error) {
	for range maxTicks {
		for _, m := range c.members {
			if !m.down {
				m.raft.Tick()
			}
		}
		if err := c.settle(); err != nil {
			return 0, err
		}
		for _, m := range c.members {
			if !m.down && m.raft.Status().Role == core.RoleLeader {
				return m.id, nil
			}
		}
	}
	return 0, fmt.Errorf("no leader after %d ticks", maxTicks)
}

// settle runs every member's Ready loop and delivers messages until quiet.
func (c *cluster) settle() error {
	for range 1000 {
		busy := false
		for _, m := range c.members {
			if m.down || !m.raft.HasReady() {
				continue
			}
			busy = true
			if err := c.handleReady(m); err != nil {
				return err
			}
		}
		inbox := c.inbox
		c.inbox = nil
		for _, msg := range inbox {
			busy = true
			to := c.member(msg.To)
			if to == nil || to.down {
				continue // lost, as on a real network
			}
			if err := to.raft.Step(msg); err != nil {
				return err
			}
		}
		if !busy {
			return nil
		}
	}
	return fmt.Errorf("cluster did not settle")
}

// handleReady is the host's loop body: persist, send, apply, advance.
func (c *cluster) handleReady(m *member) error {
	rd := m.raft.Ready()
	if rd.SoftState != nil && *rd.SoftState != c.lastLog[m.id] {
		c.lastLog[m.id] = *rd.SoftState
		switch rd.SoftState.Role {
		case core.RoleLeader:
			fmt.Printf("node %d: leader in term %d\n", m.id, m.raft.Status().Term)
		case core.RoleCandidate, core.RolePreCandidate:
			fmt.Printf("node %d: %s\n", m.id, rd.SoftState.Role)
		}
	}
	if err := m.storage.Append(rd.Entries); err != nil {
		return err
	}
	if !rd.HardState.IsEmpty() {
		if err := m.storage.SetHardState(rd.HardState); err != nil {
			return err
		}
	}
	c.inbox = append(c.inbox, rd.Messages...)
	for _, e := range rd.CommittedEntries {
		if len(e.Data) > 0 {
			fmt.Printf("node %d: applied index %d %q\n", m.id, e.Index, e.Data)
		} else {
			fmt.Printf("node %d: applied index %d (leader's empty entry, term %d)\n", m.id, e.Index, e.Term)
		}
	}
	m.raft.Advance(rd)
	return nil
}
