package core_test

import (
	"testing"

	"github.com/stepraft/stepraft/core"
	"github.com/stepraft/stepraft/core/coretest"
)

func TestThreeNodesElectAndCommit(t *testing.T) {
	c := coretest.NewCluster(core.Config{Seed: 1})
	if err := c.Bootstrap(1, 2, 3); err != nil {
		t.Fatal(err)
	}
	if err := c.Node(1).Raft.Campaign(); err != nil {
		t.Fatal(err)
	}
	if err := c.Stabilize(100); err != nil {
		t.Fatal(err)
	}
	if got := c.Leader(); got != 1 {
		t.Fatalf("leader = %d, want 1", got)
	}
	for i := range 5 {
		if err := c.Node(1).Raft.Propose([]byte{byte('a' + i)}); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Stabilize(100); err != nil {
		t.Fatal(err)
	}
	for _, id := range c.IDs() {
		n := c.Node(id)
		if st := n.Raft.Status(); st.Commit != 7 || st.Applied != 7 {
			t.Errorf("node %d: commit %d applied %d, want 7/7", id, st.Commit, st.Applied)
		}
		if len(n.Applied) != 6 { // the leader's empty entry and 5 proposals
			t.Errorf("node %d applied %s", id, core.DescribeEntries(n.Applied))
		}
	}
}
