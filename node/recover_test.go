package node_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stepraft/stepraft/node"
	"github.com/stepraft/stepraft/node/nodetest"
	"github.com/stepraft/stepraft/transport"
)

// memNode starts a node on the Memory network net.
func memNode(t *testing.T, net *transport.Memory, cfg node.Config) *node.Node {
	t.Helper()
	cfg.Transport = net.Endpoint(cfg.ID)
	if cfg.TickInterval == 0 {
		cfg.TickInterval = 10 * time.Millisecond
	}
	n, err := node.Start(cfg)
	if err != nil {
		t.Fatalf("start %d: %v", cfg.ID, err)
	}
	t.Cleanup(func() { n.Stop(); cfg.Transport.Close() })
	return n
}

func waitLeaderOf(t *testing.T, nodes ...*node.Node) *node.Node {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		for _, n := range nodes {
			if st := n.Status(); st.Leader == st.ID {
				return n
			}
		}
		time.Sleep(5 * time.Millisecond) // polling
	}
	t.Fatal("no leader")
	return nil
}

func TestRecoverFromLostQuorum(t *testing.T) {
	net := transport.NewMemory(1)
	defer net.Close()
	peers := map[node.NodeID]string{1: "m1", 2: "m2", 3: "m3"}
	dirs := map[node.NodeID]string{}
	var nodes []*node.Node
	for id := range peers {
		dirs[id] = filepath.Join(t.TempDir(), fmt.Sprint(id))
	}
	for id := node.NodeID(1); id <= 3; id++ {
		nodes = append(nodes, memNode(t, net, node.Config{ID: id, Peers: peers, DataDir: dirs[id], StateMachine: nodetest.NewKV(),
			SnapshotEntries: 40, TrailingEntries: 10}))
	}
	lead := waitLeaderOf(t, nodes...)
	for i := range 100 {
		put(t, lead, fmt.Sprintf("k%d", i), fmt.Sprint(i))
	}
	committed := lead.Status().Commit
	// Node 1 is the survivor: wait until it has everything committed.
	deadline := time.Now().Add(10 * time.Second)
	for nodes[0].Applied() < committed && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond) // polling
	}
	for i, n := range nodes {
		n.Stop()
		net.Endpoint(node.NodeID(i + 1)).Close()
	}
	os.RemoveAll(dirs[2])
	os.RemoveAll(dirs[3])

	members := map[node.NodeID]string{1: "m1", 4: "m4", 5: "m5"}
	rep, err := node.Recover(node.RecoverConfig{DataDir: dirs[1], ID: 1, StateMachine: nodetest.NewKV(), Members: members})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("recovered: %+v", rep)
	if rep.LastIndex < committed || rep.ClusterID == 0 {
		t.Fatalf("report %+v; %d was committed", rep, committed)
	}
	survivor := memNode(t, net, node.Config{ID: 1, Peers: members, DataDir: dirs[1], StateMachine: nodetest.NewKV()})
	var joined []*node.Node
	for _, id := range []node.NodeID{4, 5} {
		joined = append(joined, memNode(t, net, node.Config{ID: id, Peers: members, Join: true, ClusterID: rep.ClusterID,
			DataDir: filepath.Join(t.TempDir(), fmt.Sprint(id)), StateMachine: nodetest.NewKV()}))
	}
	lead = waitLeaderOf(t, append(joined, survivor)...)
	for i := range 100 {
		v, err := lead.Read(context.Background(), []byte(fmt.Sprintf("k%d", i)))
		if err != nil || v != fmt.Sprint(i) {
			t.Fatalf("k%d after recovery: %v, %v", i, v, err)
		}
	}
	last := put(t, lead, "after", "recovery")
	for _, n := range append(joined, survivor) {
		deadline := time.Now().Add(10 * time.Second)
		for n.Applied() < last && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond) // polling
		}
		if n.Applied() < last {
			t.Fatalf("node %d applied %d < %d", n.Status().ID, n.Applied(), last)
		}
	}
	if st := lead.Status(); len(st.Members) != 3 {
		t.Fatalf("members after recovery: %+v", st.Members)
	}
}

func TestBackupRestoresIntoNewCluster(t *testing.T) {
	c := nodetest.NewCluster(t, 3, newKV)
	lead := c.WaitLeader()
	for i := range 50 {
		put(t, lead, fmt.Sprintf("k%d", i), fmt.Sprint(i))
	}
	var buf bytes.Buffer
	info, err := lead.Backup(context.Background(), &buf)
	if err != nil {
		t.Fatal(err)
	}
	if info.Meta.Index == 0 || len(info.Members) != 3 {
		t.Fatalf("backup info %+v", info)
	}
	// A damaged backup is refused and installs nothing.
	bad := bytes.Clone(buf.Bytes())
	bad[len(bad)-10] ^= 1
	badDir := filepath.Join(t.TempDir(), "bad")
	if _, err := node.RestoreBackup(badDir, 1, "r1", bytes.NewReader(bad)); !errors.Is(err, node.ErrBadBackup) {
		t.Fatalf("damaged backup: %v, want ErrBadBackup", err)
	}
	dir := filepath.Join(t.TempDir(), "restored")
	binfo, err := node.RestoreBackup(dir, 7, "r7", bytes.NewReader(buf.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	if binfo.Index != info.Meta.Index {
		t.Fatalf("restored index %d, backup of %d", binfo.Index, info.Meta.Index)
	}
	net := transport.NewMemory(2)
	defer net.Close()
	kv := nodetest.NewKV()
	n := memNode(t, net, node.Config{ID: 7, Peers: map[node.NodeID]string{7: "r7"}, DataDir: dir, StateMachine: kv})
	waitLeaderOf(t, n)
	for i := range 50 {
		v, err := n.Read(context.Background(), []byte(fmt.Sprintf("k%d", i)))
		if err != nil || v != fmt.Sprint(i) {
			t.Fatalf("k%d in the restored cluster: %v, %v", i, v, err)
		}
	}
	put(t, n, "new", "write")
}
