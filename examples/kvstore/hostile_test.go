package main

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stepraft/stepraft/node"
)

// rssBoundBytes is how much a member's resident memory may grow under the
// hostile input of TestMemberSurvivesHostileInput.
const rssBoundBytes = 64 << 20

// TestMemberSurvivesHostileInput attacks the leader of a running cluster
// of three processes while two clients write and read through it. On its
// raft port: frames declaring 4 GiB and 60 MiB (1 KiB sent) before and
// after a handshake, random bytes, the hello of another cluster, a
// garbage snapshot stream, frames of another wire version, and 500
// connections at once. On its HTTP port: PUTs far over the value limit
// (sized and chunked, some at once), a header over the limit, a huge
// member JSON. The member must go on serving (every client operation
// succeeds, and the history is linearizable), its resident memory
// (/proc/PID/status) must stay within rssBoundBytes of where it started,
// including its peak, and it must log each refused raft connection once.
func TestMemberSurvivesHostileInput(t *testing.T) {
	if testing.Short() {
		t.Skip("runs processes")
	}
	p := startProcs(t, 3)
	target, err := waitHTTPLeader(p.live(), 0)
	if err != nil {
		t.Fatal(err)
	}
	httpAddr := p.https[target]
	var st statusJSON
	_, body := call(t, "GET", httpAddr, "/status", "")
	if err := json.Unmarshal([]byte(body), &st); err != nil {
		t.Fatal(err)
	}
	cluster, err := strconv.ParseUint(st.ClusterID, 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	peer := target%3 + 1 // a member the target knows, to impersonate
	h := newHistory()
	keys := []string{"h0", "h1", "h2"}
	for i := range 50 { // warm up, so that "before" is a working member's footprint
		if !h.do(client, 99, httpAddr, kvInput{put: true, key: keys[i%3], value: fmt.Sprintf("warm%d", i)}) {
			t.Fatalf("warm-up write %d failed", i)
		}
	}
	pid := p.cmds[target].Process.Pid
	before := memory(t, pid)
	logStart := fileSize(t, p.logPath(target))
	load := startClients(h, 1, 2, keys, []string{httpAddr}, 5*time.Second)

	rng := rand.New(rand.NewPCG(1, 2))
	a := &attack{t: t, addr: p.peers[target], rng: rng}
	var peakRSS int64 // the highest sampled
	sample := func(when string) {
		m := memory(t, pid)
		t.Logf("%s: RSS %d MiB", when, m.rss>>20)
		peakRSS = max(peakRSS, m.rss)
	}
	a.raftBeforeHandshake()
	a.anotherCluster(cluster, peer, target)
	// The member impersonated is paused meanwhile: a peer holds one
	// message connection, and its reconnecting would replace the
	// impersonator's at a moment of its choosing.
	p.pause(peer)
	held := a.raftAfterHandshake(hello(cluster, peer, target, 1), hello(cluster, peer, target, 2))
	sample(fmt.Sprintf("%d impersonating connections holding 60 MiB frames", held))
	a.finishAll()
	p.resume(peer)
	flood := a.flood(500)
	sample(fmt.Sprintf("%d connections at once", flood))
	a.finishAll()
	httpAttack(t, httpAddr, sample)

	duringOK, duringFailed := load.ok.Load(), load.failed.Load()
	load.halt()
	for i := range 20 { // and after
		k := keys[i%3]
		if !h.do(client, 98, httpAddr, kvInput{put: true, key: k, value: fmt.Sprintf("after%d", i)}) ||
			!h.do(client, 98, httpAddr, kvInput{key: k}) {
			t.Fatalf("operation %d after the attack failed", i)
		}
	}
	after := memory(t, pid)
	peakRSS = max(peakRSS, after.rss)
	t.Logf("member %d: RSS %d MiB before, %d MiB after, %d MiB at the highest sample; peak (VmHWM) %d MiB",
		target, before.rss>>20, after.rss>>20, peakRSS>>20, after.hwm>>20)
	t.Logf("clients during the attack: %d operations succeeded, %d failed", duringOK, duringFailed)
	if duringFailed != 0 || duringOK == 0 {
		t.Errorf("the member did not keep serving during the attack: %d operations succeeded, %d failed", duringOK, duringFailed)
	}
	for name, v := range map[string]int64{"RSS after": after.rss, "highest RSS sampled": peakRSS, "peak RSS (VmHWM)": after.hwm} {
		if v-before.rss > rssBoundBytes {
			t.Errorf("%s %d MiB, %d MiB over the %d MiB before: not within %d MiB", name, v>>20, (v-before.rss)>>20, before.rss>>20, rssBoundBytes>>20)
		}
	}
	if code, body := call(t, "GET", httpAddr, "/kv/big", ""); code != 404 {
		t.Errorf("the oversized values left a key: GET /kv/big %d %.100q", code, body)
	}
	a.checkLog(p.logPath(target), logStart)
	p.checkRunning(nil)
	checkHistory(t, h, "hostile input", "go test ./examples/kvstore -run 'TestMemberSurvivesHostileInput$' -v")
}

func hello(cluster uint64, from, to node.NodeID, kind uint8) helloMsg {
	return helloMsg{cluster: cluster, from: uint64(from), to: uint64(to), minVersion: 1, maxVersion: 1, kind: kind}
}

// memoryUse is a process's resident memory now and at its peak.
type memoryUse struct{ rss, hwm int64 }

// memory reads VmRSS and VmHWM from /proc/PID/status.
func memory(t *testing.T, pid int) memoryUse {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	var m memoryUse
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) != 3 || f[2] != "kB" {
			continue
		}
		kb, _ := strconv.ParseInt(f[1], 10, 64)
		switch f[0] {
		case "VmRSS:":
			m.rss = kb << 10
		case "VmHWM:":
			m.hwm = kb << 10
		}
	}
	if m.rss == 0 || m.hwm == 0 {
		t.Fatalf("no VmRSS or VmHWM in /proc/%d/status", pid)
	}
	return m
}

func fileSize(t *testing.T, name string) int64 {
	fi, err := os.Stat(name)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

// attack opens hostile connections to a member's raft address and
// remembers, for each, the message the member must log about it.
type attack struct {
	t    *testing.T
	addr string
	rng  *rand.Rand
	mu   sync.Mutex
	open []*hostileConn // not finished yet
	done []*hostileConn
}

// hostileConn is one hostile connection.
type hostileConn struct {
	name  string
	c     *net.TCPConn
	local string   // the member logs it as remote=...
	want  []string // what the line the member logs, once, about it holds
}

func (a *attack) dial(name string, want ...string) *hostileConn {
	c, err := net.DialTimeout("tcp", a.addr, 10*time.Second)
	if err != nil {
		a.t.Errorf("%s: %v", name, err) // from the flood's goroutines too: no Fatal
		return &hostileConn{name: name}
	}
	hc := &hostileConn{name: name, c: c.(*net.TCPConn), local: c.LocalAddr().String(), want: want}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.open = append(a.open, hc)
	return hc
}

// send writes b; the member may already have closed the connection, which
// is no failure.
// sendAndWaitClosed sends b and waits until the member closes the
// connection.
func (hc *hostileConn) sendAndWaitClosed(b []byte) {
	hc.send(b)
	if hc.c == nil {
		return
	}
	hc.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	io.Copy(io.Discard, hc.c)
}

func (hc *hostileConn) send(b []byte) {
	if hc.c == nil {
		return // not connected: the test has failed already
	}
	hc.c.SetWriteDeadline(time.Now().Add(10 * time.Second))
	hc.c.Write(b)
}

// finishAll half-closes every open connection and waits until the member
// has closed its side: by then it has logged what it logs about it.
func (a *attack) finishAll() {
	a.mu.Lock()
	conns := a.open
	a.open = nil
	a.done = append(a.done, conns...)
	a.mu.Unlock()
	var wg sync.WaitGroup
	errs := make([]error, len(conns))
	for i, hc := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer hc.c.Close()
			hc.c.CloseWrite()
			hc.c.SetReadDeadline(time.Now().Add(15 * time.Second))
			_, err := io.Copy(io.Discard, hc.c) // nil at EOF
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				errs[i] = fmt.Errorf("%s (%s): the member kept the connection open", hc.name, hc.local)
			}
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			a.t.Error(err)
		}
	}
}

// frameHeader is a frame's length prefix (which counts the version byte)
// and version byte.
func frameHeader(length uint32, version byte) []byte {
	return append(binary.BigEndian.AppendUint32(nil, length), version)
}

// raftBeforeHandshake sends frames of hostile lengths and random bytes
// where the member expects a hello (a frame of at most 1 KiB).
func (a *attack) raftBeforeHandshake() {
	const refused = `msg="handshake refused"`
	const tooLarge = "frame too large"
	a.dial("4 GiB frame", refused, tooLarge).send(append(frameHeader(1<<32-1, 0), make([]byte, 1<<10)...))
	a.dial("60 MiB frame, 1 KiB sent", refused, tooLarge).send(append(frameHeader(60<<20, 0), bytes.Repeat([]byte{0x90}, 1<<10)...))
	a.dial("nothing", refused)
	partial := appendHelloFrame(nil, helloMsg{cluster: 1, from: 1, to: 1, minVersion: 1, maxVersion: 1, kind: 1})
	a.dial("half a hello", refused).send(partial[:len(partial)/2])
	for i := range 16 {
		b := make([]byte, 1+a.rng.IntN(4096))
		for j := range b {
			b[j] = byte(a.rng.Uint32())
		}
		a.dial(fmt.Sprintf("random bytes %d", i), refused).send(b)
	}
	a.finishAll()
}

// anotherCluster sends a valid hello from another cluster: the member
// must answer "another cluster" and log it.
func (a *attack) anotherCluster(cluster uint64, from, to node.NodeID) {
	hc := a.dial("another cluster's hello", `msg="peer refused"`, `reason="another cluster"`)
	hc.send(appendHelloFrame(nil, hello(cluster+1, from, to, 1)))
	hc.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	status, reason, err := readReply(hc.c)
	if err != nil || status != statusWrongCluster || reason != "another cluster" {
		a.t.Errorf("another cluster's hello: status %d %q, %v; want %d \"another cluster\"", status, reason, err, statusWrongCluster)
	}
	a.finishAll()
}

// raftAfterHandshake passes the handshake as a member (anyone who knows
// the cluster ID can, without TLS), then sends hostile frames on message
// connections (hello msgs) and a snapshot connection (hello snap). It
// leaves open a few connections that declared a 60 MiB frame and sent
// 1 KiB, and returns how many.
func (a *attack) raftAfterHandshake(msgs, snap helloMsg) int {
	open := func(name, want string, h helloMsg) *hostileConn {
		hc := a.dial(name, want, fmt.Sprintf("peer=%d", h.from))
		hc.send(appendHelloFrame(nil, h))
		hc.c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if status, reason, err := readReply(hc.c); err != nil || status != 1 {
			a.t.Fatalf("%s: the hello of member %d was refused: %d %q %v", name, h.from, status, reason, err)
		}
		return hc
	}
	const ended = `msg="connection from peer ended"`
	// Each bad frame closes its connection; the next is opened only then,
	// or it would replace this one (a peer holds one message connection)
	// before its frame is read.
	open("4 GiB frame after the hello", `msg="closing connection: bad frame"`, msgs).
		sendAndWaitClosed(frameHeader(1<<32-1, 1)) // over the 64 MiB limit
	garbage := append(frameHeader(1<<10+1, 1), 0xc1) // 0xc1: never used in msgpack
	for range 1<<10 - 1 {
		garbage = append(garbage, byte(a.rng.Uint32()))
	}
	open("garbage frame after the hello", `msg="closing connection: bad frame"`, msgs).sendAndWaitClosed(garbage)
	open("frame of wire version 9", `msg="closing connection: frame of another wire version"`, msgs).
		sendAndWaitClosed(append(frameHeader(3, 9), 0x91, 0x01))
	open("garbage snapshot header", `msg="snapshot not received"`, snap).send(garbage)
	a.finishAll()
	const held = 16
	for i := range held {
		// A peer holds one message connection: each new one replaces
		// the one before; the last ends when finishAll closes it.
		want := `msg="closing connection: a newer one from the same peer replaces it"`
		if i == held-1 {
			want = ended
		}
		open(fmt.Sprintf("60 MiB frame, 1 KiB sent, after the hello %d", i), want, msgs).
			send(append(frameHeader(60<<20, 1), bytes.Repeat([]byte{0x90}, 1<<10)...))
	}
	open("60 MiB snapshot header, 1 KiB sent", `msg="snapshot not received"`, snap).
		send(append(frameHeader(60<<20, 1), bytes.Repeat([]byte{0x90}, 1<<10)...))
	return held + 1
}

// flood opens n connections at once: some send nothing, some half a
// hello, some random bytes; they stay open until finishAll.
func (a *attack) flood(n int) int {
	partial := appendHelloFrame(nil, helloMsg{cluster: 1, from: 1, to: 1, minVersion: 1, maxVersion: 1, kind: 1})
	payloads := make([][]byte, n)
	for i := range payloads {
		switch i % 3 {
		case 1:
			payloads[i] = partial[:9]
		case 2:
			payloads[i] = make([]byte, 16+a.rng.IntN(256))
			for j := range payloads[i] {
				payloads[i][j] = byte(a.rng.Uint32())
			}
		}
	}
	var wg sync.WaitGroup
	for i, b := range payloads {
		wg.Add(1)
		go func() {
			defer wg.Done()
			a.dial(fmt.Sprintf("flood %d", i), `msg="handshake refused"`).send(b)
		}()
	}
	wg.Wait()
	return n
}

var remoteRE = regexp.MustCompile(`remote=(\S+)`)

// checkLog requires that the member logged each hostile connection once,
// after offset from in its log, with the expected message.
func (a *attack) checkLog(file string, from int64) {
	b, err := os.ReadFile(file)
	if err != nil {
		a.t.Fatal(err)
	}
	lines := map[string][]string{} // by remote address
	for _, line := range strings.Split(string(b[from:]), "\n") {
		if m := remoteRE.FindStringSubmatch(line); m != nil {
			lines[m[1]] = append(lines[m[1]], line)
		}
	}
	want := map[string][]*hostileConn{}
	for _, hc := range a.done {
		want[hc.local] = append(want[hc.local], hc)
	}
	logged := 0
	for addr, hcs := range want {
		got := lines[addr]
		logged += len(got)
		if len(got) != len(hcs) {
			a.t.Errorf("%s (%s): %d log lines, want %d:\n%s", hcs[0].name, addr, len(got), len(hcs), strings.Join(got, "\n"))
			continue
		}
		for i, hc := range hcs {
			for _, w := range hc.want {
				if !strings.Contains(got[i], w) {
					a.t.Errorf("%s (%s): logged %s, want %s in it", hc.name, addr, got[i], w)
				}
			}
		}
	}
	a.t.Logf("%d hostile raft connections, %d log lines about them", len(a.done), logged)
}

// httpAttack sends requests over the HTTP API's limits and checks the
// answers: 400 for a value over maxValueBytes (sized or chunked), 431 for
// a header over Go's 1 MiB, 400 for a member JSON over 64 KiB.
func httpAttack(t *testing.T, addr string, sample func(string)) {
	const huge = 100 << 20
	expect := func(name string, resp *http.Response, err error, code int, text string) {
		if err != nil {
			t.Errorf("%s: %v", name, err)
			return
		}
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
		if resp.StatusCode != code || !strings.Contains(string(b), text) {
			t.Errorf("%s: %d %.200q, want %d and %q", name, resp.StatusCode, b, code, text)
		}
	}
	valueOver := fmt.Sprintf("value over %d bytes", maxValueBytes)
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			name := fmt.Sprintf("PUT of %d MiB, sized (%d)", huge>>20, i)
			resp, err := rawRequest(addr, fmt.Sprintf("PUT /kv/big HTTP/1.1\r\nHost: kv\r\nContent-Length: %d\r\n\r\n", huge), huge, false)
			expect(name, resp, err, 400, valueOver)
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		resp, err := rawRequest(addr, "PUT /kv/big HTTP/1.1\r\nHost: kv\r\nTransfer-Encoding: chunked\r\n\r\n", huge, true)
		expect(fmt.Sprintf("PUT of %d MiB, chunked", huge>>20), resp, err, 400, valueOver)
	}()
	wg.Wait()
	sample("after PUTs of 100 MiB")
	resp, err := rawRequest(addr, "GET /status HTTP/1.1\r\nHost: kv\r\nX-Big: "+strings.Repeat("x", 2<<20)+"\r\n\r\n", 0, false)
	expect("a header of 2 MiB", resp, err, 431, "")
	member := `{"id":9,"raft":"` + strings.Repeat("x", 10<<20) + `"}`
	resp, err = rawRequest(addr, fmt.Sprintf("POST /members HTTP/1.1\r\nHost: kv\r\nContent-Length: %d\r\n\r\n%s", len(member), member), 0, false)
	expect("a member JSON of 10 MiB", resp, err, 400, "bad JSON")
}

// rawRequest writes head, then (if body > 0) a body of that many bytes,
// sized or chunked, while it reads the answer: a server may answer before
// the body has arrived, and close.
func rawRequest(addr, head string, body int, chunked bool) (*http.Response, error) {
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	done := make(chan struct{})
	go func() {
		defer close(done)
		w := bufio.NewWriterSize(c, 64<<10)
		if _, err := w.WriteString(head); err != nil {
			return
		}
		chunk := bytes.Repeat([]byte("v"), 64<<10)
		for sent := 0; sent < body; sent += len(chunk) {
			if chunked {
				fmt.Fprintf(w, "%x\r\n", len(chunk))
			}
			if _, err := w.Write(chunk); err != nil {
				return
			}
			if chunked {
				w.WriteString("\r\n")
			}
		}
		if chunked {
			w.WriteString("0\r\n\r\n")
		}
		w.Flush()
	}()
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err == nil {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
		resp.Body = io.NopCloser(bytes.NewReader(b))
	}
	c.Close() // ends the body's writer
	<-done
	return resp, err
}
