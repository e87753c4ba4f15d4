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

// cluster is three nodes on loopback TCP.
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

func startCluster(dir string, policy wal.SyncPolicy, maxBatch int, tick time.Duration) (*cluster, error) {
	peers := map[node.NodeID]string{}
	for id := node.NodeID(1); id <= 3; id++ {
		a, err := freeAddr()
		if err != nil {
			return nil, err
		}
		peers[id] = a
	}
	c := &cluster{nodes: map[node.NodeID]*node.Node{}}
	var mu sync.Mutex
	var wg sync.WaitGroup
	var firstErr error
	for id := range peers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n, err := node.Start(node.Config{ID: id, Peers: maps.Clone(peers), DataDir: filepath.Join(dir, fmt.Sprint(id)),
				Sync: policy, MaxBatchBytes: maxBatch, TickInterval: tick, StateMachine: &kv{}})
			mu.Lock()
			defer mu.Unlock()
			if err != nil && firstErr == nil {
				firstErr = err
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

// waitLeader waits until a node leads and the others agree.
func (c *cluster) waitLeader(timeout time.Duration) (*node.Node, error) {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
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
			return c.nodes[lead], nil
		}
		time.Sleep(10 * time.Millisecond) // polling
	}
	return nil, errors.New("no leader")
}

func (c *cluster) stop() {
	for _, n := range c.nodes {
		n.Stop()
	}
}
