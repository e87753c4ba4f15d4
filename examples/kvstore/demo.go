package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/stepraft/stepraft/node"
)

// demo starts three members in this process on loopback ports, writes,
// stops the leader, and reads the writes back through the new leader, all
// over the HTTP API.
func demo(out io.Writer) error {
	dir, err := os.MkdirTemp("", "kvstore-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	peers := map[node.NodeID]string{}
	https := map[node.NodeID]string{}
	for id := node.NodeID(1); id <= 3; id++ {
		if peers[id], err = freePort(); err != nil {
			return err
		}
		if https[id], err = freePort(); err != nil {
			return err
		}
	}
	members := map[node.NodeID]*member{}
	defer func() {
		for _, m := range members {
			m.stop()
		}
	}()
	for id := node.NodeID(1); id <= 3; id++ {
		m, err := startMember(memberConfig{Config: node.Config{ID: id, Peers: peers, DataDir: filepath.Join(dir, fmt.Sprint(id)),
			TickInterval: 50 * time.Millisecond}, HTTP: https[id], Timeout: 5 * time.Second})
		if err != nil {
			return err
		}
		members[id] = m
	}
	fmt.Fprintf(out, "started 3 members: raft %s %s %s, http %s %s %s\n", peers[1], peers[2], peers[3], https[1], https[2], https[3])
	lead, err := waitHTTPLeader(https, 0)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "leader: member %d\n", lead)
	keys := map[string]string{"greeting": "hello", "language": "Go", "consensus": "Raft"}
	order := []string{"greeting", "language", "consensus"}
	for _, k := range order {
		v := keys[k]
		// Through a member that is not the leader: it forwards.
		via := lead%3 + 1
		if err := httpDo("PUT", https[via], "/kv/"+k, v, http.StatusNoContent); err != nil {
			return err
		}
		fmt.Fprintf(out, "PUT /kv/%s = %q via member %d: 204\n", k, v, via)
	}
	fmt.Fprintf(out, "stopping the leader, member %d\n", lead)
	if err := members[lead].stop(); err != nil {
		return err
	}
	delete(members, lead)
	remaining := map[node.NodeID]string{}
	for id, a := range https {
		if id != lead {
			remaining[id] = a
		}
	}
	next, err := waitHTTPLeader(remaining, lead)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "new leader: member %d\n", next)
	for _, k := range order {
		v, err := httpGet(https[next], "/kv/"+k)
		if err != nil {
			return err
		}
		if v != keys[k] {
			return fmt.Errorf("GET /kv/%s on the new leader: %q, want %q", k, v, keys[k])
		}
		fmt.Fprintf(out, "GET /kv/%s on member %d: %q\n", k, next, v)
	}
	fmt.Fprintln(out, "every write survived the leader's loss")
	return nil
}

func freePort() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

var client = &http.Client{Timeout: 10 * time.Second}

// waitHTTPLeader asks the members' /status until they agree on a leader
// other than not.
func waitHTTPLeader(https map[node.NodeID]string, not node.NodeID) (node.NodeID, error) {
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		var seen node.NodeID
		agree := true
		for _, a := range https {
			var st statusJSON
			resp, err := client.Get("http://" + a + "/status")
			if err == nil {
				err = json.NewDecoder(resp.Body).Decode(&st)
				resp.Body.Close()
			}
			if err != nil || st.Leader == 0 || st.Leader == uint64(not) || (seen != 0 && seen != node.NodeID(st.Leader)) {
				agree = false
				break
			}
			seen = node.NodeID(st.Leader)
		}
		if agree && seen != 0 {
			return seen, nil
		}
		time.Sleep(20 * time.Millisecond) // polling
	}
	return 0, errors.New("no leader elected in 20 s")
}

func httpDo(method, addr, path, body string, want int) error {
	req, err := http.NewRequest(method, "http://"+addr+path, bytes.NewBufferString(body))
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != want {
		msg, _ := io.ReadAll(resp.Body)
		return fmt.Errorf("%s %s: %s %s", method, path, resp.Status, msg)
	}
	return nil
}

func httpGet(addr, path string) (string, error) {
	resp, err := client.Get("http://" + addr + path)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("GET %s: %s %s", path, resp.Status, b)
	}
	return string(b), err
}
