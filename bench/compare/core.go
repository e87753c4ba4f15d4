package main

import (
	"errors"
	"fmt"
	"io"
	"log"
	"runtime"
	"slices"
	"time"

	etcdraft "go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	"github.com/stepraft/stepraft/core"
)

// coreCluster is three in-memory nodes of one implementation, run from one
// goroutine: Ready persisted to the memory storage, messages delivered by
// calling Step directly, committed entries counted as applied.
type coreCluster interface {
	// proposeBatch makes the leader take k proposals of data, then runs
	// Ready cycles until every node has applied them.
	proposeBatch(data []byte, k int) error
	// compact snapshots and compacts what each node has applied.
	compact() error
	applied() [3]uint64
}

var coreImpls = []string{"stepraft-core", "etcd-raft"}

type coreResult struct {
	Impl          string
	Batch         int
	Entries       int
	EntriesPerSec float64
	AllocsPerEnt  float64
	BytesPerEnt   float64
}

func runCore(o options, stdout, stderr io.Writer) error {
	fmt.Fprintf(stdout, "core: 3 in-memory nodes in one goroutine, %d entries of %d B per run, %d rounds, order rotating; %s, %d CPUs\n",
		o.coreEntries, o.coreSize, o.rounds, runtime.Version(), runtime.NumCPU())
	fmt.Fprintf(stdout, "\n%6s %-14s %12s %12s %12s %16s %16s\n", "batch", "impl", "entries/s", "allocs/ent", "bytes/ent", "stepraft/x ent/s", "stepraft/x alloc")
	type agg struct{ eps, allocs, bytes []float64 }
	for _, batch := range o.coreBatches {
		res := map[string]*agg{}
		for _, impl := range coreImpls {
			res[impl] = &agg{}
		}
		for round := range o.rounds {
			order := slices.Clone(coreImpls)
			if round%2 == 1 {
				slices.Reverse(order)
			}
			for _, impl := range order {
				r, err := coreRun(impl, batch, o.coreEntries, o.coreSize)
				if err != nil {
					return fmt.Errorf("%s batch %d: %w", impl, batch, err)
				}
				fmt.Fprintf(stderr, "core batch %3d round %d: %-14s %10.0f entries/s %6.2f allocs/entry\n", batch, round+1, impl, r.EntriesPerSec, r.AllocsPerEnt)
				a := res[impl]
				a.eps, a.allocs, a.bytes = append(a.eps, r.EntriesPerSec), append(a.allocs, r.AllocsPerEnt), append(a.bytes, r.BytesPerEnt)
			}
		}
		s := res["stepraft-core"]
		for _, impl := range coreImpls {
			a := res[impl]
			r1, r2 := "-", "-"
			if impl != "stepraft-core" {
				r1 = fmt.Sprintf("%.2fx", median(s.eps)/median(a.eps))
				r2 = fmt.Sprintf("%.2fx", median(s.allocs)/median(a.allocs))
			}
			fmt.Fprintf(stdout, "%6d %-14s %12.0f %12.2f %12.0f %16s %16s\n", batch, impl, median(a.eps), median(a.allocs), median(a.bytes), r1, r2)
		}
	}
	fmt.Fprintln(stdout, "medians over rounds; allocations and bytes are the whole cluster's (3 nodes) per committed entry")
	return nil
}

func coreRun(impl string, batch, n, size int) (coreResult, error) {
	var c coreCluster
	var err error
	switch impl {
	case "stepraft-core":
		c, err = newStepraftCore()
	case "etcd-raft":
		c, err = newEtcdCore()
	}
	if err != nil {
		return coreResult{}, err
	}
	data := make([]byte, size)
	for i := range data {
		data[i] = byte('a' + i%26)
	}
	// warm up: a few batches, not measured
	for range 100 {
		if err := c.proposeBatch(data, batch); err != nil {
			return coreResult{}, err
		}
	}
	start := c.applied()
	runtime.GC()
	var m0, m1 runtime.MemStats
	runtime.ReadMemStats(&m0)
	t0 := time.Now()
	for done := 0; done < n; {
		k := min(batch, n-done)
		if err := c.proposeBatch(data, k); err != nil {
			return coreResult{}, err
		}
		done += k
		if done%(16*1024) < k {
			if err := c.compact(); err != nil {
				return coreResult{}, err
			}
		}
	}
	el := time.Since(t0)
	runtime.ReadMemStats(&m1)
	end := c.applied()
	for i := range end {
		if end[i]-start[i] != uint64(n) {
			return coreResult{}, fmt.Errorf("node %d applied %d entries, want %d", i+1, end[i]-start[i], n)
		}
	}
	return coreResult{Impl: impl, Batch: batch, Entries: n, EntriesPerSec: float64(n) / el.Seconds(),
		AllocsPerEnt: float64(m1.Mallocs-m0.Mallocs) / float64(n), BytesPerEnt: float64(m1.TotalAlloc-m0.TotalAlloc) / float64(n)}, nil
}

// stepraftCore is three core.Raft on core.MemoryStorage.
type stepraftCore struct {
	nodes    [3]*core.Raft
	storages [3]*core.MemoryStorage
	app      [3]uint64
	net      []core.Message
	spare    []core.Message
}

func newStepraftCore() (*stepraftCore, error) {
	c := &stepraftCore{}
	voters := []core.NodeID{1, 2, 3}
	for i := range 3 {
		s := core.NewMemoryStorage()
		if err := s.ApplySnapshot(core.Snapshot{Meta: core.SnapshotMeta{Index: 1, Term: 1, ConfState: core.ConfState{Voters: voters}}}); err != nil {
			return nil, err
		}
		if err := s.SetHardState(core.HardState{Term: 1, Commit: 1}); err != nil {
			return nil, err
		}
		r, err := core.New(core.Config{ID: core.NodeID(i + 1), Storage: s, Seed: 1})
		if err != nil {
			return nil, err
		}
		c.nodes[i], c.storages[i] = r, s
	}
	if err := c.nodes[0].Campaign(); err != nil {
		return nil, err
	}
	if err := c.stabilize(); err != nil {
		return nil, err
	}
	if c.nodes[0].Status().Role != core.RoleLeader {
		return nil, errors.New("stepraft core: node 1 did not become leader")
	}
	return c, nil
}

func (c *stepraftCore) stabilize() error {
	for round := 0; ; round++ {
		if round > 1000 {
			return errors.New("stepraft core: no quiet after 1000 rounds")
		}
		busy := false
		for i, r := range c.nodes {
			for r.HasReady() {
				busy = true
				rd := r.Ready()
				s := c.storages[i]
				if !rd.Snapshot.IsEmpty() {
					if err := s.ApplySnapshot(rd.Snapshot); err != nil {
						return err
					}
				}
				if err := s.Append(rd.Entries); err != nil {
					return err
				}
				if !rd.HardState.IsEmpty() {
					if err := s.SetHardState(rd.HardState); err != nil {
						return err
					}
				}
				c.net = append(c.net, rd.Messages...)
				if k := len(rd.CommittedEntries); k > 0 {
					c.app[i] = uint64(rd.CommittedEntries[k-1].Index)
				}
				r.Advance(rd)
			}
		}
		if len(c.net) == 0 && !busy {
			return nil
		}
		msgs := c.net
		c.net = c.spare[:0]
		for _, m := range msgs {
			if err := c.nodes[m.To-1].Step(m); err != nil {
				return err
			}
		}
		clear(msgs)
		c.spare = msgs
	}
}

func (c *stepraftCore) proposeBatch(data []byte, k int) error {
	for range k {
		if err := c.nodes[0].Propose(data); err != nil {
			return err
		}
	}
	return c.stabilize()
}

func (c *stepraftCore) compact() error {
	for i, s := range c.storages {
		first, _ := s.FirstIndex()
		if a := core.Index(c.app[i]); a > first+1024 {
			if _, err := s.CreateSnapshot(a, nil, nil); err != nil {
				return err
			}
			if err := s.Compact(a); err != nil {
				return err
			}
		}
	}
	return nil
}

func (c *stepraftCore) applied() [3]uint64 { return c.app }

// etcdCore is three etcd raft RawNodes on raft.MemoryStorage, configured
// like stepraft's core defaults: pre-vote and check-quorum on, 1 MiB per
// message, 256 messages in flight.
type etcdCore struct {
	nodes    [3]*etcdraft.RawNode
	storages [3]*etcdraft.MemoryStorage
	app      [3]uint64
	net      []*raftpb.Message
	spare    []*raftpb.Message
}

func newEtcdCore() (*etcdCore, error) {
	c := &etcdCore{}
	quiet := &etcdraft.DefaultLogger{Logger: log.New(io.Discard, "", 0)}
	for i := range 3 {
		s := etcdraft.NewMemoryStorage()
		if err := s.ApplySnapshot(&raftpb.Snapshot{Metadata: &raftpb.SnapshotMetadata{Index: proto.Uint64(1), Term: proto.Uint64(1),
			ConfState: &raftpb.ConfState{Voters: []uint64{1, 2, 3}}}}); err != nil {
			return nil, err
		}
		if err := s.SetHardState(&raftpb.HardState{Term: proto.Uint64(1), Commit: proto.Uint64(1)}); err != nil {
			return nil, err
		}
		rn, err := etcdraft.NewRawNode(&etcdraft.Config{ID: uint64(i + 1), ElectionTick: 10, HeartbeatTick: 1, Storage: s,
			MaxSizePerMsg: 1 << 20, MaxInflightMsgs: 256, MaxCommittedSizePerReady: 64 << 20,
			CheckQuorum: true, PreVote: true, Logger: quiet})
		if err != nil {
			return nil, err
		}
		c.nodes[i], c.storages[i] = rn, s
	}
	if err := c.nodes[0].Campaign(); err != nil {
		return nil, err
	}
	if err := c.stabilize(); err != nil {
		return nil, err
	}
	if c.nodes[0].Status().RaftState != etcdraft.StateLeader {
		return nil, errors.New("etcd raft: node 1 did not become leader")
	}
	return c, nil
}

func (c *etcdCore) stabilize() error {
	for round := 0; ; round++ {
		if round > 1000 {
			return errors.New("etcd raft: no quiet after 1000 rounds")
		}
		busy := false
		for i, rn := range c.nodes {
			for rn.HasReady() {
				busy = true
				rd := rn.Ready()
				s := c.storages[i]
				if !etcdraft.IsEmptySnap(rd.Snapshot) {
					if err := s.ApplySnapshot(rd.Snapshot); err != nil {
						return err
					}
				}
				if err := s.Append(rd.Entries); err != nil {
					return err
				}
				if rd.HardState != nil && !etcdraft.IsEmptyHardState(rd.HardState) {
					if err := s.SetHardState(rd.HardState); err != nil {
						return err
					}
				}
				c.net = append(c.net, rd.Messages...)
				if k := len(rd.CommittedEntries); k > 0 {
					c.app[i] = rd.CommittedEntries[k-1].GetIndex()
				}
				rn.Advance(rd)
			}
		}
		if len(c.net) == 0 && !busy {
			return nil
		}
		msgs := c.net
		c.net = c.spare[:0]
		for _, m := range msgs {
			if err := c.nodes[m.GetTo()-1].Step(m); err != nil {
				return err
			}
		}
		clear(msgs)
		c.spare = msgs
	}
}

func (c *etcdCore) proposeBatch(data []byte, k int) error {
	for range k {
		if err := c.nodes[0].Propose(data); err != nil {
			return err
		}
	}
	return c.stabilize()
}

func (c *etcdCore) compact() error {
	for i, s := range c.storages {
		first, _ := s.FirstIndex()
		if a := c.app[i]; a > first+1024 {
			if _, err := s.CreateSnapshot(a, nil, nil); err != nil {
				return err
			}
			if err := s.Compact(a); err != nil {
				return err
			}
		}
	}
	return nil
}

func (c *etcdCore) applied() [3]uint64 { return c.app }
