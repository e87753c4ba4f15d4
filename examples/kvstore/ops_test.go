package main

import (
	"bytes"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stepraft/stepraft/node"
)

func TestBackupAndRestoreCommands(t *testing.T) {
	c := newCluster(t, 3, nil)
	lead := c.leader()
	for i := range 20 {
		if code, body := call(t, "PUT", c.https[lead], fmt.Sprintf("/kv/k%d", i), fmt.Sprint(i)); code != 204 {
			t.Fatalf("PUT: %d %s", code, body)
		}
	}
	file := filepath.Join(t.TempDir(), "backup.bin")
	var out bytes.Buffer
	if rc := run([]string{"backup", "-http", c.https[lead%3+1], "-out", file}, &out, &out); rc != 0 {
		t.Fatalf("backup exited %d: %s", rc, out.String())
	}
	raft := testAddr(t)
	dir := filepath.Join(t.TempDir(), "restored")
	out.Reset()
	if rc := run([]string{"restore", "-in", file, "-data", dir, "-id", "9", "-raft", raft}, &out, &out); rc != 0 {
		t.Fatalf("restore exited %d: %s", rc, out.String())
	}
	httpAddr := testAddr(t)
	m, err := startMember(memberConfig{Config: node.Config{ID: 9, Peers: map[node.NodeID]string{9: raft}, DataDir: dir,
		TickInterval: 20 * time.Millisecond}, HTTP: httpAddr, Timeout: 3 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer m.stop()
	if _, err := waitHTTPLeader(map[node.NodeID]string{9: httpAddr}, 0); err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		if code, body := call(t, "GET", httpAddr, fmt.Sprintf("/kv/k%d", i), ""); code != 200 || body != fmt.Sprint(i) {
			t.Fatalf("k%d in the restored cluster: %d %q", i, code, body)
		}
	}
}

func TestRecoverCommand(t *testing.T) {
	c := newCluster(t, 3, nil)
	lead := c.leader()
	for i := range 20 {
		if code, body := call(t, "PUT", c.https[lead], fmt.Sprintf("/kv/k%d", i), fmt.Sprint(i)); code != 204 {
			t.Fatalf("PUT: %d %s", code, body)
		}
	}
	// Let member 1 apply everything, then lose the cluster.
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if code, body := call(t, "GET", c.https[1], "/kv/k19?stale=1", ""); code == 200 && body == "19" {
			break
		}
		time.Sleep(10 * time.Millisecond) // polling
	}
	for id := range c.peers {
		c.stop(id)
	}
	var out bytes.Buffer
	members := fmt.Sprintf("1=%s", c.peers[1])
	if rc := run([]string{"recover", "-data", filepath.Join(c.dir, "1"), "-members", members}, &out, &out); rc != 0 {
		t.Fatalf("recover exited %d: %s", rc, out.String())
	}
	if !strings.Contains(out.String(), "recovered member 1") {
		t.Fatalf("recover said:\n%s", out.String())
	}
	c.peers = map[node.NodeID]string{1: c.peers[1]}
	c.start(1)
	if _, err := waitHTTPLeader(map[node.NodeID]string{1: c.https[1]}, 0); err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		if code, body := call(t, "GET", c.https[1], fmt.Sprintf("/kv/k%d", i), ""); code != 200 || body != fmt.Sprint(i) {
			t.Fatalf("k%d after recovery: %d %q", i, code, body)
		}
	}
}
