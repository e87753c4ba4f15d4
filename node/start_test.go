package node_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stepraft/stepraft/core"
	"github.com/stepraft/stepraft/node"
	"github.com/stepraft/stepraft/node/nodetest"
	"github.com/stepraft/stepraft/snapshotter"
	"github.com/stepraft/stepraft/wal"
)

func freeAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// single is the configuration of a one-node cluster on loopback TCP with
// the default wal and snapshotter in dir.
func single(t *testing.T, dir string) node.Config {
	return node.Config{ID: 1, Peers: map[node.NodeID]string{1: freeAddr(t)}, DataDir: dir,
		TickInterval: 10 * time.Millisecond, StateMachine: nodetest.NewKV(), SnapshotEntries: 20, TrailingEntries: 5}
}

func TestRestartFromDataDir(t *testing.T) {
	dir := t.TempDir()
	cfg := single(t, dir)
	n := startLeading(t, cfg)
	for i := range 55 {
		put(t, n, "k"+string(rune('a'+i%26)), strings.Repeat("v", i))
	}
	if err := n.Snapshot(context.Background()); err != nil {
		t.Fatal(err)
	}
	put(t, n, "last", "1")
	applied := n.Applied()
	if err := n.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := n.Stop(); err != nil {
		t.Fatalf("second Stop: %v", err)
	}
	if _, err := n.Propose(context.Background(), nil); !errors.Is(err, node.ErrStopped) {
		t.Fatalf("Propose after Stop: %v", err)
	}

	// Restart with no Peers: everything comes from DataDir, the cluster
	// ID included.
	kv := nodetest.NewKV()
	cfg2 := cfg
	cfg2.Peers, cfg2.Listen, cfg2.StateMachine = nil, freeAddr(t), kv
	n2, err := node.Start(cfg2)
	if err != nil {
		t.Fatal(err)
	}
	defer n2.Stop()
	if n2.Applied() < applied {
		t.Fatalf("restart applied %d, before the stop %d", n2.Applied(), applied)
	}
	if kv.RestoredAt() == 0 {
		t.Fatal("restart did not restore the snapshot")
	}
	if v, _ := kv.Get("last"); v != "1" {
		t.Fatal("restart lost an entry after the snapshot")
	}
	if v, _ := kv.Get("kc"); v != strings.Repeat("v", 54) {
		t.Fatalf("kc = %q after restart", v)
	}
}

func TestStartRefusesBadConfig(t *testing.T) {
	dir := t.TempDir()
	good := single(t, dir)
	for _, tc := range []struct {
		name string
		mod  func(*node.Config)
		want string
	}{
		{"id 0", func(c *node.Config) { c.ID = 0 }, "ID is 0"},
		{"own id not in peers", func(c *node.Config) { c.ID = 7 }, "not in Peers"},
		{"peer id 0", func(c *node.Config) { c.Peers[0] = "127.0.0.1:1" }, "peer ID 0"},
		{"same address twice", func(c *node.Config) { c.Peers[2] = c.Peers[1] }, "same address"},
		{"no state machine", func(c *node.Config) { c.StateMachine = nil }, "StateMachine"},
		{"no data dir", func(c *node.Config) { c.DataDir = "" }, "DataDir"},
		{"heartbeat not below election", func(c *node.Config) { c.ElectionTicks, c.HeartbeatTicks = 3, 3 }, "HeartbeatTicks"},
		{"negative batch", func(c *node.Config) { c.MaxBatchBytes = -1 }, "negative"},
		{"command over batch", func(c *node.Config) { c.MaxBatchBytes, c.MaxCommandBytes = 1000, 2000 }, "MaxCommandBytes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := good
			cfg.Peers = map[node.NodeID]string{1: good.Peers[1]}
			tc.mod(&cfg)
			_, err := node.Start(cfg)
			if !errors.Is(err, node.ErrConfig) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Start: %v, want ErrConfig mentioning %q", err, tc.want)
			}
			if ents, _ := os.ReadDir(dir); len(ents) != 0 {
				t.Fatalf("a refused Start left %d files in DataDir", len(ents))
			}
		})
	}
}

func TestStartRefusesDataDirOfAnotherNodeOrCluster(t *testing.T) {
	dir := t.TempDir()
	cfg := single(t, dir)
	n, err := node.Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	n.Stop()
	before := listing(t, dir)

	other := cfg
	other.StateMachine = nodetest.NewKV()
	other.ClusterID = 12345
	if _, err := node.Start(other); err == nil {
		t.Fatal("started on the DataDir of another cluster")
	}
	other = cfg
	other.StateMachine = nodetest.NewKV()
	other.ID = 2
	other.Peers = map[node.NodeID]string{2: freeAddr(t)}
	if _, err := node.Start(other); err == nil {
		t.Fatal("started on the DataDir of another node")
	}
	if after := listing(t, dir); after != before {
		t.Fatalf("refused starts changed DataDir:\n%s\n---\n%s", before, after)
	}
}

// listing names every file under dir with its size.
func listing(t *testing.T, dir string) string {
	var b strings.Builder
	filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() && fi.Name() != "LOCK" {
			b.WriteString(p + " " + fi.ModTime().String() + "\n")
		}
		return nil
	})
	return b.String()
}

// startLeading starts the one-node cluster of cfg and makes it lead.
func startLeading(t *testing.T, cfg node.Config) *node.Node {
	t.Helper()
	n, err := node.Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Campaign(context.Background()); err != nil {
		t.Fatal(err)
	}
	return n
}

// snapshotFiles lists the snapshot files in a data directory, oldest first.
func snapshotFiles(dir string) []string {
	snaps, _ := filepath.Glob(filepath.Join(dir, "snap", "*.snap"))
	slices.Sort(snaps)
	return snaps
}

// flipBits flips the bits of mask in the byte back bytes before the end of
// file (in a snapshot's body or trailer).
func flipBits(t *testing.T, file string, back int, mask byte) {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)-back] ^= mask
	if err := os.WriteFile(file, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// restartWith starts cfg again with a fresh KV and a new address.
func restartWith(t *testing.T, cfg node.Config) (*node.Node, *nodetest.KV) {
	t.Helper()
	kv := nodetest.NewKV()
	cfg.StateMachine, cfg.Listen = kv, freeAddr(t)
	n, err := node.Start(cfg)
	if err != nil {
		t.Fatalf("restart: %v", err)
	}
	t.Cleanup(func() { n.Stop() })
	return n, kv
}

// waitSnapshotWhole polls until file is a snapshot whose body verifies.
func waitSnapshotWhole(t *testing.T, file string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, body, err := snapshotter.OpenFile(file); err == nil {
			_, rerr := io.Copy(io.Discard, body)
			body.Close()
			if rerr == nil {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s was not written again", filepath.Base(file))
		}
		time.Sleep(10 * time.Millisecond) // polling
	}
}

// checkKeys checks that kv holds k0..k(n-1) = 0..n-1.
func checkKeys(t *testing.T, kv *nodetest.KV, n int) {
	t.Helper()
	for i := range n {
		if v, _ := kv.Get(fmt.Sprintf("k%d", i)); v != fmt.Sprint(i) {
			t.Fatalf("k%d = %q", i, v)
		}
	}
}

func TestRestartFallsBackPastDamagedSnapshot(t *testing.T) {
	dir := t.TempDir()
	cfg := single(t, dir)
	n := startLeading(t, cfg)
	for i := range 60 {
		put(t, n, fmt.Sprintf("k%d", i), fmt.Sprint(i))
	}
	if err := n.Snapshot(context.Background()); err != nil {
		t.Fatal(err)
	}
	newestIndex := n.Applied()
	put(t, n, "last", "1")
	n.Stop()
	snaps := snapshotFiles(dir)
	if len(snaps) < 2 {
		t.Fatalf("%d snapshot files, want at least 2", len(snaps))
	}
	newest := snaps[len(snaps)-1]
	flipBits(t, newest, 10, 0xff) // in the body
	_, kv := restartWith(t, cfg)
	if at := kv.RestoredAt(); at == 0 || at >= uint64(newestIndex) {
		t.Fatalf("restored the snapshot at %d; the damaged one is at %d", at, newestIndex)
	}
	checkKeys(t, kv, 60)
	if v, _ := kv.Get("last"); v != "1" {
		t.Fatal("lost the entry after the snapshot")
	}
	waitSnapshotWhole(t, newest)
}

func TestRestartPastDamagedBootstrapSnapshot(t *testing.T) {
	dir := t.TempDir()
	cfg := single(t, dir)
	cfg.SnapshotEntries = 1000 // only the bootstrap snapshot
	n := startLeading(t, cfg)
	for i := range 20 {
		put(t, n, fmt.Sprintf("k%d", i), fmt.Sprint(i))
	}
	n.Stop()
	snaps := snapshotFiles(dir)
	if len(snaps) != 1 {
		t.Fatalf("%d snapshot files, want only the bootstrap one", len(snaps))
	}
	flipBits(t, snaps[0], 6, 0x10)
	n2, kv := restartWith(t, cfg)
	checkKeys(t, kv, 20)
	put(t, n2, "after", "restart")
	waitSnapshotWhole(t, snaps[0])
}

// commitPastLog is a log store whose stored commit index lies past its
// last entry, as after a power cut under SyncInterval or SyncNever: the
// metadata reached the disk, the entries did not.
type commitPastLog struct{ node.LogStore }

func (s commitPastLog) InitialState() (core.HardState, core.ConfState, error) {
	hs, cs, err := s.LogStore.InitialState()
	hs.Commit += 100
	return hs, cs, err
}

// TestRestartWithCommitPastTheLog: Start replays to the last entry and
// serves; it does not wait for entries that are gone.
func TestRestartWithCommitPastTheLog(t *testing.T) {
	dir := t.TempDir()
	cfg := single(t, dir)
	n := startLeading(t, cfg)
	for i := range 10 {
		put(t, n, fmt.Sprint("k", i), "v")
	}
	if err := n.Stop(); err != nil {
		t.Fatal(err)
	}
	l, err := wal.Open(filepath.Join(dir, "wal"), wal.Options{})
	if err != nil {
		t.Fatal(err)
	}
	cfg.LogStore = commitPastLog{l}
	kv := nodetest.NewKV()
	cfg.StateMachine, cfg.Listen = kv, freeAddr(t)
	started := make(chan error, 1)
	go func() {
		var err error
		n, err = node.Start(cfg)
		started <- err
	}()
	select {
	case err := <-started:
		if err != nil {
			t.Fatalf("restart: %v", err)
		}
		t.Cleanup(func() { n.Stop() })
	case <-time.After(10 * time.Second):
		t.Fatal("Start waits for entries past the last one")
	}
	if kv.Len() != 10 {
		t.Fatalf("replayed %d keys, want 10", kv.Len())
	}
	if err := n.Campaign(context.Background()); err != nil {
		t.Fatal(err)
	}
	put(t, n, "after", "1")
	if v, ok := kv.Get("after"); !ok || v != "1" {
		t.Fatalf("after the restart: %q %v", v, ok)
	}
}
