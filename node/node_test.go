package node_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stepraft/stepraft/node"
	"github.com/stepraft/stepraft/node/nodetest"
)

func newKV(node.NodeID) node.StateMachine { return nodetest.NewKV() }

func kvOf(c *nodetest.Cluster, id node.NodeID) *nodetest.KV {
	return c.StateMachine(id).(*nodetest.KV)
}

func TestProposeAndRead(t *testing.T) {
	c := nodetest.NewCluster(t, 3, newKV)
	lead := c.WaitLeader()
	ctx := context.Background()
	res, err := lead.Propose(ctx, nodetest.EncodePut("a", "1"))
	if err != nil {
		t.Fatal(err)
	}
	index, ok := res.(uint64)
	if !ok || index == 0 {
		t.Fatalf("Propose returned %v", res)
	}
	for _, id := range c.IDs() {
		v, err := c.Node(id).Read(ctx, []byte("a"))
		if err != nil || v != "1" {
			t.Fatalf("read on %d: %v, %v", id, v, err)
		}
	}
}

func TestProposalsFromManyGoroutinesApplyIdentically(t *testing.T) {
	c := nodetest.NewCluster(t, 3, newKV)
	c.WaitLeader()
	const writers, each = 50, 200
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n := c.Node(node.NodeID(1 + w%3))
			for i := range each {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				_, err := n.Propose(ctx, nodetest.EncodePut(fmt.Sprintf("w%d-%d", w, i), "x"))
				cancel()
				if err != nil {
					errs <- fmt.Errorf("writer %d op %d: %w", w, i, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	var applied node.Index
	for _, id := range c.IDs() {
		applied = max(applied, c.Node(id).Applied())
	}
	c.WaitApplied(applied)
	want := kvOf(c, 1).Data()
	if len(want) != writers*each {
		t.Fatalf("node 1 has %d keys, want %d", len(want), writers*each)
	}
	for _, id := range c.IDs() {
		if got := kvOf(c, id).Data(); len(got) != len(want) {
			t.Fatalf("node %d has %d keys, node 1 %d", id, len(got), len(want))
		}
	}
}

func TestFailedFsyncStopsTheNode(t *testing.T) {
	c := nodetest.NewCluster(t, 3, newKV)
	lead := c.WaitLeader()
	id := lead.Status().ID
	c.Store(id).FailNextSync()
	_, err := lead.Propose(context.Background(), nodetest.EncodePut("k", "v"))
	if err == nil {
		t.Fatal("Propose succeeded on a node whose fsync failed")
	}
	select {
	case <-lead.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("node did not stop after a failed fsync")
	}
	if !errors.Is(lead.Err(), nodetest.ErrInjected) {
		t.Fatalf("Err() = %v, want the injected failure", lead.Err())
	}
	if _, err := lead.Propose(context.Background(), nil); !errors.Is(err, node.ErrStopped) {
		t.Fatalf("Propose after the failure: %v, want ErrStopped", err)
	}
}
