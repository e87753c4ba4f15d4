package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"path/filepath"
	"sync"
	"time"

	"github.com/stepraft/stepraft/node"
	"github.com/stepraft/stepraft/wal"
)

// counter is the state machine every library gets: it keeps the last
// command and a count, the cheapest Apply an application has.
type counter struct {
	mu    sync.Mutex
	last  []byte
	count uint64
}

func (s *counter) add(cmd []byte) uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.last, s.count = cmd, s.count+1
	return s.count
}

func (s *counter) get() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.count
}

func (s *counter) set(n uint64) {
	s.mu.Lock()
	s.count = n
	s.mu.Unlock()
}

// stepraftSM adapts counter to node.StateMachine.
type stepraftSM struct{ counter }

func (s *stepraftSM) Apply(index uint64, cmd []byte) any { s.add(cmd); return nil }

func (s *stepraftSM) Query([]byte) (any, error) { return s.get(), nil }

func (s *stepraftSM) Snapshot() (func(io.Writer) error, error) {
	n := s.get()
	return func(w io.Writer) error { _, err := fmt.Fprintf(w, "%d", n); return err }, nil
}

func (s *stepraftSM) Restore(index uint64, r io.Reader) error {
	var n uint64
	if _, err := fmt.Fscan(r, &n); err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	s.set(n)
	return nil
}

// stepraftSnapshotEntries is node.Config.SnapshotEntries in the
// comparison: more entries than any run applies.
const stepraftSnapshotEntries = 1 << 40

type stepraftCluster struct {
	nodes  map[node.NodeID]*node.Node
	leader *node.Node
}

// startStepraft starts three nodes with the wal (SyncEachBatch: one fsync
// per Ready before anything that depends on it) and the TCP transport,
// everything else at node's defaults (tick 100 ms, election 10 ticks,
// MaxBatchBytes 4 MiB) but snapshots: none within a run, as for the
// others (dragonboat's are off, hashicorp's first check comes after
// 120 s). At the default of one every 10,000 entries a node would take
// about ten a second here, each with its fsyncs and a compaction.
func startStepraft(dir string) (cluster, error) {
	peers := map[node.NodeID]string{}
	for id := node.NodeID(1); id <= 3; id++ {
		a, err := freeAddr()
		if err != nil {
			return nil, err
		}
		peers[id] = a
	}
	c := &stepraftCluster{nodes: map[node.NodeID]*node.Node{}}
	for id := range peers {
		n, err := node.Start(node.Config{ID: id, Peers: maps.Clone(peers), DataDir: filepath.Join(dir, fmt.Sprint(id)),
			Sync: wal.SyncEachBatch, SnapshotEntries: stepraftSnapshotEntries, StateMachine: &stepraftSM{}})
		if err != nil {
			c.stop()
			return nil, err
		}
		c.nodes[id] = n
	}
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		var lead node.NodeID
		agree := true
		for _, n := range c.nodes {
			l, _ := n.Leader()
			if l == 0 || (lead != 0 && l != lead) {
				agree = false
				break
			}
			lead = l
		}
		if agree && lead != 0 {
			c.leader = c.nodes[lead]
			return c, nil
		}
	}
	c.stop()
	return nil, errors.New("no leader")
}

func (c *stepraftCluster) propose(ctx context.Context, cmd []byte) error {
	_, err := c.leader.Propose(ctx, cmd)
	return err
}

func (c *stepraftCluster) stop() {
	for _, n := range c.nodes {
		n.Stop()
	}
}
