package main

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stepraft/stepraft/node"
)

// procs runs members as separate kvstore processes.
type procs struct {
	t       *testing.T
	bin     string
	dir     string
	cluster string
	peers   map[node.NodeID]string // raft addresses as the others dial them (-cluster)
	listen  map[node.NodeID]string // raft addresses bound (-listen), when not the advertised ones
	https   map[node.NodeID]string
	net     *netProxy // between the members, with procsOptions.proxy
	cmds    map[node.NodeID]*exec.Cmd
	exited  map[node.NodeID]chan struct{} // closed when the process has exited (and been waited for)
}

// procsOptions vary the members startProcsWith runs.
type procsOptions struct {
	// proxy routes all raft traffic between members through a netProxy:
	// each member binds one address and advertises its proxy's.
	proxy bool
}

// Every member process ticks every tickFlag and holds elections after
// electionTicksFlag ticks: a 300 ms election timeout (randomized up to
// 600 ms), above the fsync stalls of slow disks.
const (
	tickFlag          = "20ms"
	electionTicksFlag = "15"
	// maxElectionTimeout is the longest randomized election timeout.
	maxElectionTimeout = 600 * time.Millisecond
)

func buildKVStore(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "kvstore")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

func (p *procs) start(id node.NodeID) {
	p.t.Helper()
	logf, err := os.OpenFile(p.logPath(id), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		p.t.Fatal(err)
	}
	args := []string{"serve", "-id", fmt.Sprint(id), "-cluster", p.cluster, "-http", p.https[id],
		"-data", filepath.Join(p.dir, fmt.Sprint(id)), "-tick", tickFlag, "-election-ticks", electionTicksFlag}
	if a := p.listen[id]; a != "" {
		args = append(args, "-listen", a)
	}
	cmd := exec.Command(p.bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		p.t.Fatal(err)
	}
	logf.Close()
	p.cmds[id] = cmd
	exited := make(chan struct{})
	if p.exited == nil {
		p.exited = map[node.NodeID]chan struct{}{}
	}
	p.exited[id] = exited
	go func() {
		cmd.Wait()
		close(exited)
	}()
}

func (p *procs) kill(id node.NodeID) {
	if cmd := p.cmds[id]; cmd != nil {
		cmd.Process.Signal(syscall.SIGKILL)
		<-p.exited[id]
		delete(p.cmds, id)
	}
}

// pause stops a member with SIGSTOP; resume continues it.
func (p *procs) pause(id node.NodeID) {
	if cmd := p.cmds[id]; cmd != nil {
		cmd.Process.Signal(syscall.SIGSTOP)
	}
}

func (p *procs) resume(id node.NodeID) {
	if cmd := p.cmds[id]; cmd != nil {
		cmd.Process.Signal(syscall.SIGCONT)
	}
}

// logPath is the file that holds a member's stdout and stderr, across
// restarts.
func (p *procs) logPath(id node.NodeID) string {
	return filepath.Join(p.dir, fmt.Sprintf("%d.log", id))
}

// ids are the members, in order.
func (p *procs) ids() []node.NodeID {
	return slices.Sorted(maps.Keys(p.peers))
}

func (p *procs) live() map[node.NodeID]string {
	m := map[node.NodeID]string{}
	for id := range p.cmds {
		m[id] = p.https[id]
	}
	return m
}

// startProcs builds kvstore and starts n members as processes on free
// loopback ports; they are killed when the test ends, and their logs
// printed if it failed.
func startProcs(t *testing.T, n int) *procs { return startProcsWith(t, n, procsOptions{}) }

// startProcsWith is startProcs with options.
func startProcsWith(t *testing.T, n int, opts procsOptions) *procs {
	p := &procs{t: t, bin: buildKVStore(t), dir: t.TempDir(), peers: map[node.NodeID]string{}, listen: map[node.NodeID]string{},
		https: map[node.NodeID]string{}, cmds: map[node.NodeID]*exec.Cmd{}}
	for id := node.NodeID(1); id <= node.NodeID(n); id++ {
		p.peers[id] = testAddr(t)
		p.https[id] = testAddr(t)
	}
	if opts.proxy {
		p.listen = maps.Clone(p.peers)
		p.net = newNetProxy(t, p.listen)
		for id := range p.peers {
			p.peers[id] = p.net.addr(id)
		}
	}
	var parts []string
	for _, id := range p.ids() {
		parts = append(parts, fmt.Sprintf("%d=%s", id, p.peers[id]))
	}
	p.cluster = strings.Join(parts, ",")
	for id := range p.peers {
		p.start(id)
	}
	t.Cleanup(func() {
		for id := range p.cmds {
			p.kill(id)
		}
		if t.Failed() {
			for _, id := range p.ids() {
				b, _ := os.ReadFile(p.logPath(id))
				t.Logf("member %d log:\n%s", id, b)
			}
		}
	})
	return p
}

func TestProcessesSurviveLeaderKill(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs processes")
	}
	p := startProcs(t, 3)
	lead, err := waitHTTPLeader(p.live(), 0)
	if err != nil {
		t.Fatal(err)
	}
	acked := map[string]string{}
	for i := range 30 {
		k, v := fmt.Sprintf("key%d", i), fmt.Sprintf("value%d", i)
		via := node.NodeID(i%3 + 1)
		if code, body := call(t, "PUT", p.https[via], "/kv/"+k, v); code != 204 {
			t.Fatalf("PUT %s via %d: %d %s", k, via, code, body)
		}
		acked[k] = v
	}
	p.kill(lead)
	next, err := waitHTTPLeader(p.live(), lead)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("killed leader %d; new leader %d", lead, next)
	for k, v := range acked {
		if code, body := call(t, "GET", p.https[next], "/kv/"+k, ""); code != 200 || body != v {
			t.Fatalf("GET %s on the new leader: %d %q, want %q", k, code, body, v)
		}
	}
	if code, body := call(t, "PUT", p.https[next], "/kv/after", "kill"); code != 204 {
		t.Fatalf("PUT after the kill: %d %s", code, body)
	}
	acked["after"] = "kill"
	p.start(lead)
	deadline := time.Now().Add(20 * time.Second)
	for {
		var st statusJSON
		code, body := call2(p.https[lead], "/status")
		if code == 200 && json.Unmarshal([]byte(body), &st) == nil && st.Leader != 0 {
			if code, v := call2(p.https[lead], "/kv/after?stale=1"); code == 200 && v == "kill" {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("restarted member %d did not catch up", lead)
		}
		time.Sleep(20 * time.Millisecond) // polling
	}
	for k, v := range acked {
		if code, body := call(t, "GET", p.https[lead], "/kv/"+k+"?stale=1", ""); code != 200 || body != v {
			t.Fatalf("restarted member: %s = %d %q, want %q", k, code, body, v)
		}
	}
	// SIGTERM stops a member cleanly: exit status 0.
	cmd := p.cmds[lead]
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited[lead]:
		if !cmd.ProcessState.Success() {
			t.Fatalf("member %d after SIGTERM: %v", lead, cmd.ProcessState)
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("member %d did not stop after SIGTERM", lead)
	}
	delete(p.cmds, lead)
}

// call2 is call without failing on a connection error (a process starting).
func call2(addr, path string) (int, string) {
	resp, err := client.Get("http://" + addr + path)
	if err != nil {
		return 0, ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}
