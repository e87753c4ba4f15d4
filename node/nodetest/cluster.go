// Package nodetest runs clusters of nodes in one process, for the tests of
// node and of applications built on it.
package nodetest

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/stepraft/stepraft/node"
	"github.com/stepraft/stepraft/transport"
	"github.com/stepraft/stepraft/wal"
)

// Options adjust a Cluster.
type Options struct {
	// TCP connects the nodes over loopback TCP instead of a Memory
	// network (Partition then is not available).
	TCP bool
	// Seed seeds the Memory network and the nodes' election timeouts.
	Seed uint64
	// Config, when set, adjusts each node's configuration before start.
	Config func(*node.Config)
}

// WaitTimeout bounds every Wait* of a Cluster.
const WaitTimeout = 30 * time.Second

// TickInterval is the nodes' tick: elections time out after 200–400 ms,
// short for tests, long enough that a busy machine running the race
// detector does not see a leader change for every pause.
const TickInterval = 20 * time.Millisecond

// Cluster is n nodes with IDs 1..n, each with its own data directory.
type Cluster struct {
	t     testing.TB
	opts  Options
	newSM func(node.NodeID) node.StateMachine
	// Net is the Memory network, nil with Options.TCP.
	Net *transport.Memory

	clusterID uint64 // of the founding members

	mu     sync.Mutex
	peers  map[node.NodeID]string
	nodes  map[node.NodeID]*node.Node
	sms    map[node.NodeID]node.StateMachine
	stores map[node.NodeID]*FaultyStore
	trs    map[node.NodeID]transport.Transport // Memory endpoints
	dirs   map[node.NodeID]string
}

// NewStateMachine makes a node's state machine: with or without the
// node's ID.
type NewStateMachine interface {
	func() node.StateMachine | func(id node.NodeID) node.StateMachine
}

// NewCluster starts a new cluster of n nodes whose state machines newSM
// makes (it is called again for a node that restarts), and stops it when
// the test ends.
func NewCluster[F NewStateMachine](t testing.TB, n int, newSM F, opts ...Options) *Cluster {
	t.Helper()
	var mk func(node.NodeID) node.StateMachine
	switch f := any(newSM).(type) {
	case func() node.StateMachine:
		mk = func(node.NodeID) node.StateMachine { return f() }
	case func(node.NodeID) node.StateMachine:
		mk = f
	}
	c := &Cluster{t: t, newSM: mk, peers: map[node.NodeID]string{}, nodes: map[node.NodeID]*node.Node{},
		sms: map[node.NodeID]node.StateMachine{}, stores: map[node.NodeID]*FaultyStore{}, dirs: map[node.NodeID]string{},
		trs: map[node.NodeID]transport.Transport{}}
	if len(opts) > 0 {
		c.opts = opts[0]
	}
	if !c.opts.TCP {
		c.Net = transport.NewMemory(c.opts.Seed)
	}
	for i := 1; i <= n; i++ {
		id := node.NodeID(i)
		c.peers[id] = c.newAddr(id)
		c.dirs[id] = filepath.Join(t.TempDir(), strconv.Itoa(i))
	}
	c.clusterID = node.DeriveClusterID(c.peers)
	t.Cleanup(c.Close)
	var wg sync.WaitGroup
	errs := make([]error, n+1)
	for i := 1; i <= n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = c.start(node.NodeID(i), false)
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("start node %d: %v", i, err)
		}
	}
	return c
}

// newAddr is an address for node id: a free loopback port with TCP.
func (c *Cluster) newAddr(id node.NodeID) string {
	if !c.opts.TCP {
		return fmt.Sprintf("mem-%d", id)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		c.t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// config is node id's configuration.
func (c *Cluster) config(id node.NodeID, join bool) (node.Config, *FaultyStore, error) {
	dir := c.dirs[id]
	cfg := node.Config{
		ID: id, Peers: c.peerCopy(), Join: join, DataDir: dir, ClusterID: c.clusterID,
		TickInterval: TickInterval, Seed: c.opts.Seed + uint64(id),
		StateMachine: c.newSM(id), Logger: nil,
	}
	if !c.opts.TCP {
		cfg.Transport = c.Net.Endpoint(id)
	}
	if c.opts.Config != nil {
		c.opts.Config(&cfg)
	}
	l, err := wal.Open(filepath.Join(dir, "wal"), wal.Options{Sync: cfg.Sync, NodeID: uint64(id)})
	if err != nil {
		return cfg, nil, err
	}
	fs := NewFaultyStore(l)
	cfg.LogStore = fs
	return cfg, fs, nil
}

func (c *Cluster) peerCopy() map[node.NodeID]string {
	c.mu.Lock()
	defer c.mu.Unlock()
	m := make(map[node.NodeID]string, len(c.peers))
	for id, a := range c.peers {
		m[id] = a
	}
	return m
}

func (c *Cluster) start(id node.NodeID, join bool) error {
	cfg, fs, err := c.config(id, join)
	if err != nil {
		return err
	}
	n, err := node.Start(cfg)
	if err != nil {
		fs.Close()
		return err
	}
	c.mu.Lock()
	c.nodes[id], c.sms[id], c.stores[id], c.trs[id] = n, cfg.StateMachine, fs, cfg.Transport
	c.mu.Unlock()
	return nil
}

// Node returns node id (nil when it is stopped).
func (c *Cluster) Node(id node.NodeID) *node.Node {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.nodes[id]
}

// StateMachine returns node id's current state machine.
func (c *Cluster) StateMachine(id node.NodeID) node.StateMachine {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.sms[id]
}

// Store returns node id's fault-injecting log store.
func (c *Cluster) Store(id node.NodeID) *FaultyStore {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.stores[id]
}

// IDs returns the IDs of the running nodes.
func (c *Cluster) IDs() []node.NodeID {
	c.mu.Lock()
	defer c.mu.Unlock()
	var ids []node.NodeID
	for id := range c.nodes {
		ids = append(ids, id)
	}
	return ids
}

// Leader returns the running node that leads in the highest term any
// running node knows, or nil.
func (c *Cluster) Leader() *node.Node {
	var best *node.Node
	var bestTerm uint64
	for _, id := range c.IDs() {
		n := c.Node(id)
		if n == nil {
			continue
		}
		st := n.Status()
		if st.Leader == id && uint64(st.Term) >= bestTerm {
			best, bestTerm = n, uint64(st.Term)
		}
	}
	return best
}

// WaitLeader waits until a running node leads and every other running
// node agrees, and returns it.
func (c *Cluster) WaitLeader() *node.Node {
	c.t.Helper()
	var lead *node.Node
	c.WaitFor("a leader all running nodes agree on", func() bool {
		lead = c.Leader()
		if lead == nil {
			return false
		}
		id := lead.Status().ID
		for _, other := range c.IDs() {
			if n := c.Node(other); n != nil {
				if l, _ := n.Leader(); l != id {
					return false
				}
			}
		}
		return true
	})
	return lead
}

// WaitFor polls cond until it holds, failing the test after WaitTimeout.
func (c *Cluster) WaitFor(what string, cond func() bool) {
	c.t.Helper()
	deadline := time.Now().Add(WaitTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			c.t.Fatalf("nodetest: timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond) // polling interval
	}
}

// WaitApplied waits until every running node has applied index.
func (c *Cluster) WaitApplied(index node.Index) {
	c.t.Helper()
	c.WaitFor(fmt.Sprintf("every node to apply %d", index), func() bool {
		for _, id := range c.IDs() {
			if n := c.Node(id); n != nil && n.Applied() < index {
				return false
			}
		}
		return true
	})
}

// Stop stops node id; its data stays for Restart.
func (c *Cluster) Stop(id node.NodeID) {
	c.t.Helper()
	c.mu.Lock()
	n, fs, tr := c.nodes[id], c.stores[id], c.trs[id]
	delete(c.nodes, id)
	c.mu.Unlock()
	if n == nil {
		return
	}
	n.Stop()
	if tr != nil {
		tr.Close()
	}
	if err := fs.Close(); err != nil {
		c.t.Logf("nodetest: close log of %d: %v", id, err)
	}
}

// Restart starts node id again from its data directory, with a new state
// machine.
func (c *Cluster) Restart(id node.NodeID) *node.Node {
	c.t.Helper()
	if err := c.start(id, false); err != nil {
		c.t.Fatalf("restart %d: %v", id, err)
	}
	return c.Node(id)
}

// Add starts a new node with the next free ID, joining the cluster, after
// asking the leader to add it (as a voter, or a learner).
func (c *Cluster) Add(ctx context.Context, learner bool) (node.NodeID, error) {
	c.mu.Lock()
	id := node.NodeID(len(c.dirs) + 1)
	c.mu.Unlock()
	addr := c.newAddr(id)
	lead := c.WaitLeader()
	var err error
	if learner {
		err = lead.AddLearner(ctx, id, addr)
	} else {
		err = lead.AddVoter(ctx, id, addr)
	}
	if err != nil {
		return 0, err
	}
	c.mu.Lock()
	c.peers[id] = addr
	c.dirs[id] = filepath.Join(c.t.TempDir(), strconv.Itoa(int(id)))
	c.mu.Unlock()
	return id, c.start(id, true)
}

// Partition splits the Memory network into groups.
func (c *Cluster) Partition(groups ...[]node.NodeID) {
	c.t.Helper()
	if c.Net == nil {
		c.t.Fatal("nodetest: Partition needs the Memory network")
	}
	c.Net.Partition(groups...)
}

// Heal removes partitions.
func (c *Cluster) Heal() {
	if c.Net != nil {
		c.Net.Heal()
	}
}

// Close stops every node.
func (c *Cluster) Close() {
	for _, id := range c.IDs() {
		c.Stop(id)
	}
	if c.Net != nil {
		c.Net.Close()
	}
}
