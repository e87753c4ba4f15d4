package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stepraft/stepraft/node"
)

func TestDemo(t *testing.T) {
	var out bytes.Buffer
	if rc := run([]string{"demo"}, &out, &out); rc != 0 {
		t.Fatalf("demo exited %d:\n%s", rc, out.String())
	}
	if !strings.Contains(out.String(), "every write survived the leader's loss") {
		t.Fatalf("demo output:\n%s", out.String())
	}
}

func TestStoreSnapshotRoundTrip(t *testing.T) {
	s := newStore()
	s.Apply(1, encodePut("a", []byte("1")))
	s.Apply(2, encodePut("empty", []byte{}))
	s.Apply(3, encodeSetHTTP(4, "127.0.0.1:8004"))
	s.Apply(4, encodePut("gone", []byte("x")))
	s.Apply(5, encodeDelete("gone"))
	write, err := s.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	s.Apply(6, encodePut("after", []byte("snapshot"))) // not in the snapshot
	var buf bytes.Buffer
	if err := write(&buf); err != nil {
		t.Fatal(err)
	}
	r := newStore()
	if err := r.Restore(5, bytes.NewReader(buf.Bytes())); err != nil {
		t.Fatal(err)
	}
	if v, _ := r.Query([]byte("a")); string(v.([]byte)) != "1" {
		t.Fatalf("a = %v", v)
	}
	if v, _ := r.Query([]byte("empty")); v == nil || len(v.([]byte)) != 0 {
		t.Fatalf("empty = %#v, want an empty value", v)
	}
	for _, k := range []string{"gone", "after"} {
		if v, _ := r.Query([]byte(k)); v != nil {
			t.Fatalf("%s = %v, want absent", k, v)
		}
	}
	if r.httpAddrs()[4] != "127.0.0.1:8004" {
		t.Fatal("member HTTP address lost")
	}
	if err := r.Restore(5, bytes.NewReader(buf.Bytes()[:buf.Len()-1])); err == nil {
		t.Fatal("restored a truncated snapshot")
	}
}

// cluster runs n members in this process.
type cluster struct {
	t       *testing.T
	peers   map[node.NodeID]string
	https   map[node.NodeID]string
	dir     string
	members map[node.NodeID]*member
	mod     func(*memberConfig)
}

func newCluster(t *testing.T, n int, mod func(*memberConfig)) *cluster {
	c := &cluster{t: t, mod: mod}
	t.Cleanup(func() {
		for _, m := range c.members {
			m.stop()
		}
	})
	// A port testAddr found free may still be taken by another process
	// before the member binds it: start again on other ports.
	for attempt := 1; ; attempt++ {
		c.peers, c.https, c.dir = map[node.NodeID]string{}, map[node.NodeID]string{}, t.TempDir()
		c.members = map[node.NodeID]*member{}
		for id := node.NodeID(1); id <= node.NodeID(n); id++ {
			c.peers[id] = testAddr(t)
			c.https[id] = testAddr(t)
		}
		var err error
		for id := range c.peers {
			if err = c.tryStart(id); err != nil {
				break
			}
		}
		if err == nil {
			return c
		}
		for _, m := range c.members {
			m.stop()
		}
		if !errors.Is(err, syscall.EADDRINUSE) || attempt == 5 {
			t.Fatal(err)
		}
		t.Logf("attempt %d: %v; again on other ports", attempt, err)
	}
}

func (c *cluster) start(id node.NodeID) {
	if err := c.tryStart(id); err != nil {
		c.t.Fatal(err)
	}
}

func (c *cluster) tryStart(id node.NodeID) error {
	mc := memberConfig{Config: node.Config{ID: id, Peers: c.peers, DataDir: filepath.Join(c.dir, fmt.Sprint(id)),
		TickInterval: 20 * time.Millisecond}, HTTP: c.https[id], Timeout: 3 * time.Second}
	if c.mod != nil {
		c.mod(&mc)
	}
	m, err := startMember(mc)
	if err != nil {
		return err
	}
	c.members[id] = m
	return nil
}

func (c *cluster) stop(id node.NodeID) {
	if m := c.members[id]; m != nil {
		m.stop()
		delete(c.members, id)
	}
}

func (c *cluster) leader() node.NodeID {
	c.t.Helper()
	live := map[node.NodeID]string{}
	for id := range c.members {
		live[id] = c.https[id]
	}
	id, err := waitHTTPLeader(live, 0)
	if err != nil {
		c.t.Fatal(err)
	}
	return id
}

// call does a request and returns the status and body.
func call(t *testing.T, method, addr, path, body string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(method, "http://"+addr+path, strings.NewReader(body))
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func errorOf(t *testing.T, body string) apiError {
	t.Helper()
	var e apiError
	if err := json.Unmarshal([]byte(body), &e); err != nil || e.Error == "" {
		t.Fatalf("error body %q is not {error, applied}", body)
	}
	return e
}

func TestHTTPAPI(t *testing.T) {
	c := newCluster(t, 3, nil)
	lead := c.leader()
	follower := lead%3 + 1
	a := c.https[follower] // any member serves any request
	if code, body := call(t, "PUT", a, "/kv/k1", "v1"); code != 204 {
		t.Fatalf("PUT: %d %s", code, body)
	}
	if code, body := call(t, "GET", a, "/kv/k1", ""); code != 200 || body != "v1" {
		t.Fatalf("GET: %d %q", code, body)
	}
	if code, body := call(t, "PUT", a, "/kv/empty", ""); code != 204 {
		t.Fatalf("PUT empty: %d %s", code, body)
	}
	if code, body := call(t, "GET", a, "/kv/empty", ""); code != 200 || body != "" {
		t.Fatalf("GET empty: %d %q", code, body)
	}
	if code, body := call(t, "GET", a, "/kv/k1?stale=1", ""); code != 200 || body != "v1" {
		t.Fatalf("stale GET: %d %q", code, body)
	}
	if code, _ := call(t, "DELETE", a, "/kv/k1", ""); code != 204 {
		t.Fatalf("DELETE: %d", code)
	}
	if code, _ := call(t, "DELETE", a, "/kv/never-there", ""); code != 204 {
		t.Fatalf("DELETE of an absent key: %d", code)
	}
	code, body := call(t, "GET", a, "/kv/k1", "")
	if code != 404 || errorOf(t, body).Applied != false {
		t.Fatalf("GET after DELETE: %d %s", code, body)
	}
	for name, req := range map[string][3]string{
		"no key":        {"PUT", "/kv/", "v"},
		"long key":      {"PUT", "/kv/" + strings.Repeat("k", 1025), "v"},
		"long value":    {"PUT", "/kv/big", strings.Repeat("v", 1<<20+1)},
		"bad JSON":      {"POST", "/members", "{not json"},
		"member no id":  {"POST", "/members", `{"raft":"127.0.0.1:1"}`},
		"bad member id": {"DELETE", "/members/x", ""},
	} {
		code, body := call(t, req[0], a, req[1], req[2])
		if code != 400 || errorOf(t, body).Applied != false {
			t.Errorf("%s: %d %s, want 400 with applied false", name, code, body)
		}
	}
	var st statusJSON
	_, body = call(t, "GET", a, "/status", "")
	if err := json.Unmarshal([]byte(body), &st); err != nil {
		t.Fatal(err)
	}
	if st.ID != uint64(follower) || st.Leader != uint64(lead) || st.Role != "follower" || len(st.Members) != 3 || st.Commit == 0 {
		t.Fatalf("status %+v", st)
	}
	if code, body := call(t, "GET", a, "/metrics", ""); code != 200 || !strings.Contains(body, "stepraft_term{node=") {
		t.Fatalf("metrics: %d", code)
	}
}

func TestNoQuorumAnswers503And504(t *testing.T) {
	// A long election timeout keeps the cut-off leader leading for a while:
	// what it appends then has an unknown outcome (504); once it has
	// stepped down, nothing can be proposed (503).
	c := newCluster(t, 3, func(mc *memberConfig) {
		mc.ElectionTicks = 100 // 2 s
		mc.Timeout = 500 * time.Millisecond
	})
	lead := c.leader()
	a := c.https[lead]
	if code, body := call(t, "PUT", a, "/kv/before", "1"); code != 204 {
		t.Fatalf("PUT: %d %s", code, body)
	}
	for id := range c.peers {
		if id != lead {
			c.stop(id)
		}
	}
	code, body := call(t, "PUT", a, "/kv/lost", "x")
	if code != 504 || errorOf(t, body).Applied != "unknown" {
		t.Fatalf("PUT on a leader without quorum: %d %s, want 504 applied unknown", code, body)
	}
	// It steps down after an election timeout without a quorum.
	deadline := time.Now().Add(20 * time.Second)
	for {
		var st statusJSON
		_, body := call(t, "GET", a, "/status", "")
		json.Unmarshal([]byte(body), &st)
		if st.Leader == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the leader never stepped down")
		}
		time.Sleep(20 * time.Millisecond) // polling
	}
	code, body = call(t, "PUT", a, "/kv/lost2", "x")
	if code != 503 || errorOf(t, body).Applied != false {
		t.Fatalf("PUT without a leader: %d %s, want 503 applied false", code, body)
	}
	code, body = call(t, "GET", a, "/kv/before", "")
	if code != 503 {
		t.Fatalf("linearizable GET without a leader: %d %s, want 503", code, body)
	}
	if code, body := call(t, "GET", a, "/kv/before?stale=1", ""); code != 200 || body != "1" {
		t.Fatalf("stale GET without a leader: %d %s", code, body)
	}
	if code, _ := call(t, "GET", a, "/status", ""); code != 200 {
		t.Fatalf("/status without a leader: %d", code)
	}
}

func TestJoinLearnsTheClusterID(t *testing.T) {
	c := newCluster(t, 3, nil)
	lead := c.leader()
	if code, body := call(t, "PUT", c.https[lead], "/kv/before", "join"); code != 204 {
		t.Fatalf("PUT: %d %s", code, body)
	}
	raft := testAddr(t)
	httpAddr := testAddr(t)
	member := fmt.Sprintf(`{"id":4,"raft":%q,"http":%q,"learner":false}`, raft, httpAddr)
	if code, body := call(t, "POST", c.https[lead%3+1], "/members", member); code != 204 {
		t.Fatalf("POST /members: %d %s", code, body)
	}
	peers := map[node.NodeID]string{4: raft}
	for id, a := range c.peers {
		peers[id] = a
	}
	m, err := startMember(memberConfig{Config: node.Config{ID: 4, Peers: peers, Join: true, DataDir: filepath.Join(c.dir, "4"),
		TickInterval: 20 * time.Millisecond}, HTTP: httpAddr, Timeout: 3 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer m.stop()
	deadline := time.Now().Add(20 * time.Second)
	for {
		if code, body := call2(httpAddr, "/kv/before?stale=1"); code == 200 && body == "join" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the joined member never caught up")
		}
		time.Sleep(20 * time.Millisecond) // polling
	}
	var st4, st1 statusJSON
	_, b4 := call(t, "GET", httpAddr, "/status", "")
	_, b1 := call(t, "GET", c.https[1], "/status", "")
	json.Unmarshal([]byte(b4), &st4)
	json.Unmarshal([]byte(b1), &st1)
	if st4.ClusterID == "0" || st4.ClusterID != st1.ClusterID || len(st1.Members) != 4 {
		t.Fatalf("joined member's cluster %s, member 1's %s; members %+v", st4.ClusterID, st1.ClusterID, st1.Members)
	}
	var http4 string
	for _, mb := range st1.Members {
		if mb.ID == 4 {
			http4 = mb.HTTP
		}
	}
	if http4 != httpAddr {
		t.Fatalf("member 4's HTTP address in /status: %q, want %q", http4, httpAddr)
	}
}
