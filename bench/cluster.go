package main

import (
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"path/filepath"
	"sync"
	"time"

	"github.com/stepraft/stepraft/node"
	"github.com/stepraft/stepraft/wal"
)

// kv is the benchmark's state machine: it keeps the last command and a
// count, so applying costs what an application's cheapest Apply does.
type kv struct {
	mu    sync.Mutex
	last  []byte
	count uint64
}

func (s *kv) Apply(index uint64, cmd []byte) any {
	s.mu.Lock()
	s.last, s.count = cmd, s.count+1
	s.mu.Unlock()
	return nil
}

func (s *kv) Query([]byte) (any, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.count, nil
}

func (s *kv) Snapshot() (func(io.Writer) error, error) {
	s.mu.Lock()
	n := s.count
	s.mu.Unlock()
	return func(w io.Writer) error { _, err := fmt.Fprintf(w, "%d", n); return err }, nil
}

func (s *kv) Restore(index uint64, r io.Reader) error {
	var n uint64
	if _, err := fmt.Fscan(r, &n); err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	s.mu.Lock()
	s.count = n
	s.mu.Unlock()
	return nil
}

// cluster is the nodes of a 3-node cluster on loopback TCP that one
// process holds: all three, or (with -procs) one.
type cluster struct {
	nodes map[node.NodeID]*node.Node
}

func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// loopbackPeers picks an address for each of the three members.
func loopbackPeers() (map[node.NodeID]string, error) {
	peers := map[node.NodeID]string{}
	for id := node.NodeID(1); id <= 3; id++ {
		a, err := freeAddr()
		if err != nil {
			return nil, err
		}
		peers[id] = a
	}
	return peers, nil
}

// startNodes starts the members ids of the cluster peers, each with its
// wal in dir/ID.
func startNodes(ids []node.NodeID, peers map[node.NodeID]string, dir string, policy wal.SyncPolicy, maxBatch int, snapEntries uint64, tick time.Duration) (*cluster, error) {
	c := &cluster{nodes: map[node.NodeID]*node.Node{}}
	var mu sync.Mutex
	var wg sync.WaitGroup
	var firstErr error
	for _, id := range ids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n, err := node.Start(node.Config{ID: id, Peers: maps.Clone(peers), DataDir: filepath.Join(dir, fmt.Sprint(id)),
				Sync: policy, MaxBatchBytes: maxBatch, SnapshotEntries: snapEntries, TickInterval: tick, StateMachine: &kv{}})
			mu.Lock()
			defer mu.Unlock()
			if err != nil && firstErr == nil {
				firstErr = fmt.Errorf("node %d: %w", id, err)
			}
			if n != nil {
				c.nodes[id] = n
			}
		}()
	}
	wg.Wait()
	if firstErr != nil {
		c.stop()
		return nil, firstErr
	}
	return c, nil
}

// leaders is the leader each node knows of (0: none).
func (c *cluster) leaders() map[node.NodeID]node.NodeID {
	m := map[node.NodeID]node.NodeID{}
	for id, n := range c.nodes {
		m[id], _ = n.Leader()
	}
	return m
}

func (c *cluster) stop() {
	for _, n := range c.nodes {
		n.Stop()
	}
}
