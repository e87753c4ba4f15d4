package transport

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/stepraft/stepraft/core"
)

const testCluster = 0x5eed

// node is one TCP transport in a test, with its recorder.
type node struct {
	id  core.NodeID
	tr  *TCP
	rec *recorder
}

// newNode starts a transport for id on a free loopback port.
func newNode(t testing.TB, id core.NodeID, mod func(*Config)) *node {
	t.Helper()
	cfg := Config{ID: id, ClusterID: testCluster, Listen: "127.0.0.1:0", MinBackoff: 5 * time.Millisecond, MaxBackoff: 50 * time.Millisecond}
	if mod != nil {
		mod(&cfg)
	}
	tr, err := NewTCP(cfg)
	if err != nil {
		t.Fatal(err)
	}
	n := &node{id: id, tr: tr, rec: newRecorder()}
	if err := tr.Start(n.rec); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tr.Close() })
	return n
}

// connect makes every node a peer of every other.
func connect(nodes ...*node) {
	for _, a := range nodes {
		for _, b := range nodes {
			if a != b {
				a.tr.AddPeer(b.id, b.tr.Addr().String())
			}
		}
	}
}

func app(from, to core.NodeID, index core.Index, n, size int) core.Message {
	m := core.Message{Type: core.MsgApp, From: from, To: to, Term: 3, LogTerm: 3, Index: index, Commit: index}
	for i := range n {
		m.Entries = append(m.Entries, core.Entry{Term: 3, Index: index + 1 + core.Index(i), Type: core.EntryNormal, Data: bytes.Repeat([]byte{byte(i)}, size)})
	}
	return m
}

func TestTCPDeliversInOrder(t *testing.T) {
	a, b := newNode(t, 1, nil), newNode(t, 2, nil)
	connect(a, b)
	const n = 2000
	for i := range n {
		a.tr.Send([]core.Message{app(1, 2, core.Index(i), i%3, 100)})
		if i%10 == 0 {
			b.tr.Send([]core.Message{{Type: core.MsgHeartbeatResp, From: 2, To: 1, Term: 3, Index: core.Index(i)}})
		}
	}
	b.rec.waitFor(t, "all appends", func() bool { return len(b.rec.msgs) == n })
	a.rec.waitFor(t, "all heartbeat responses", func() bool { return len(a.rec.msgs) == n/10 })
	for i, m := range b.rec.msgs {
		want := app(1, 2, core.Index(i), i%3, 100)
		if m.Index != want.Index || len(m.Entries) != len(want.Entries) || m.From != 1 || m.To != 2 {
			t.Fatalf("message %d: got %+v", i, m)
		}
		for j := range m.Entries {
			if !bytes.Equal(m.Entries[j].Data, want.Entries[j].Data) || m.Entries[j].Index != want.Entries[j].Index {
				t.Fatalf("message %d entry %d differs", i, j)
			}
		}
	}
	if len(a.rec.unreachable) != 0 || len(b.rec.unreachable) != 0 {
		t.Fatalf("unreachable reported: %v %v", a.rec.unreachable, b.rec.unreachable)
	}
}

func TestTCPReconnectsAfterPeerRestart(t *testing.T) {
	a, b := newNode(t, 1, nil), newNode(t, 2, nil)
	connect(a, b)
	addr := b.tr.Addr().String()
	a.tr.Send([]core.Message{app(1, 2, 1, 1, 10)})
	b.rec.waitFor(t, "first message", func() bool { return len(b.rec.msgs) == 1 })

	b.tr.Close()
	// Messages sent while b is down are lost and reported.
	a.rec.waitPoking(t, "an unreachable report while the peer is down",
		func() { a.tr.Send([]core.Message{app(1, 2, 2, 1, 10)}) },
		func() bool { return a.rec.unreachable[2] > 0 })
	b2 := newNode(t, 2, func(c *Config) { c.Listen = addr })
	b2.tr.AddPeer(1, a.tr.Addr().String())
	b2.rec.waitPoking(t, "a message after the restart",
		func() { a.tr.Send([]core.Message{app(1, 2, 3, 1, 10)}) },
		func() bool { return len(b2.rec.msgs) > 0 })
}

func TestTCPFullQueueDropsAndReports(t *testing.T) {
	// The peer accepts connections but never answers the handshake, so
	// the sender stays stuck dialing while messages pile up.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	a := newNode(t, 1, func(c *Config) { c.QueueMsgs = 8; c.DialTimeout = 30 * time.Second })
	a.tr.AddPeer(2, ln.Addr().String())
	for i := range 100 {
		a.tr.Send([]core.Message{app(1, 2, core.Index(i), 1, 10)})
	}
	a.rec.mu.Lock()
	drops := a.rec.unreachable[2]
	a.rec.mu.Unlock()
	// The sender took at most one batch out of the queue before blocking.
	if drops < 100-2*8 {
		t.Fatalf("%d of 100 messages reported dropped, want at least %d", drops, 100-2*8)
	}
	a.tr.Send([]core.Message{app(1, 7, 1, 1, 1)})
	a.rec.mu.Lock()
	unknown := a.rec.unreachable[7]
	a.rec.mu.Unlock()
	if unknown != 1 {
		t.Fatalf("message to an unknown peer: %d reports, want 1", unknown)
	}
}

func TestTCPQueueBytesBound(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	a := newNode(t, 1, func(c *Config) { c.QueueBytes = 1 << 20; c.DialTimeout = 30 * time.Second })
	a.tr.AddPeer(2, ln.Addr().String())
	for i := range 64 {
		a.tr.Send([]core.Message{app(1, 2, core.Index(i), 1, 64<<10)})
	}
	a.rec.mu.Lock()
	drops := a.rec.unreachable[2]
	a.rec.mu.Unlock()
	// 1 MiB holds at most 15 of these; one batch may have left the queue.
	if drops < 64-2*16 {
		t.Fatalf("%d of 64 large messages dropped, want at least %d", drops, 64-2*16)
	}
}

func TestTCPCloseLeavesNoGoroutines(t *testing.T) {
	before := runtime.NumGoroutine()
	func() {
		nodes := []*node{newNode(t, 1, nil), newNode(t, 2, nil), newNode(t, 3, nil)}
		connect(nodes...)
		for _, n := range nodes {
			for _, m := range nodes {
				if n != m {
					n.tr.Send([]core.Message{app(n.id, m.id, 1, 2, 10)})
				}
			}
		}
		for _, n := range nodes {
			n.rec.waitFor(t, "messages from both peers", func() bool { return len(n.rec.msgs) == 2 })
		}
		// A peer that never answers, with a dial in progress.
		ln, _ := net.Listen("tcp", "127.0.0.1:0")
		defer ln.Close()
		nodes[0].tr.AddPeer(9, ln.Addr().String())
		nodes[0].tr.Send([]core.Message{app(1, 9, 1, 1, 1)})
		for _, n := range nodes {
			if err := n.tr.Close(); err != nil {
				t.Fatal(err)
			}
		}
	}()
	deadline := time.Now().Add(10 * time.Second)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("%d goroutines before, %d after Close:\n%s", before, runtime.NumGoroutine(), buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(5 * time.Millisecond) // polling the goroutine count
	}
}

// rawDial connects to n and runs a handshake with the hello given,
// returning the connection and the reply.
func rawDial(t *testing.T, n *node, h hello) (net.Conn, reply) {
	t.Helper()
	conn, err := net.Dial("tcp", n.tr.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := conn.Write(appendHello(nil, &h)); err != nil {
		t.Fatal(err)
	}
	body, err := readHandshake(conn)
	if err != nil {
		t.Fatal(err)
	}
	r, err := decodeReply(body)
	if err != nil {
		t.Fatal(err)
	}
	return conn, r
}

func TestHandshakeRefusals(t *testing.T) {
	b := newNode(t, 2, nil)
	b.tr.AddPeer(1, "127.0.0.1:1")
	b.tr.AddPeer(5, "127.0.0.1:1")
	b.tr.RemovePeer(5)
	good := hello{Cluster: testCluster, From: 1, To: 2, MinVersion: 1, MaxVersion: 1, Kind: kindMessages}
	for _, tc := range []struct {
		name string
		mod  func(*hello)
		want status
	}{
		{"ok", func(*hello) {}, statusOK},
		{"newer peer speaking 1..3", func(h *hello) { h.MaxVersion = 3 }, statusOK},
		{"another cluster", func(h *hello) { h.Cluster++ }, statusWrongCluster},
		{"another receiver", func(h *hello) { h.To = 3 }, statusWrongNode},
		{"unknown sender", func(h *hello) { h.From = 4 }, statusUnknownNode},
		{"removed sender", func(h *hello) { h.From = 5 }, statusRemoved},
		{"no common version", func(h *hello) { h.MinVersion, h.MaxVersion = 2, 3 }, statusNoVersion},
		{"unknown kind", func(h *hello) { h.Kind = 9 }, statusBadKind},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := good
			tc.mod(&h)
			_, r := rawDial(t, b, h)
			if r.Status != tc.want || r.From != 2 {
				t.Fatalf("status %v from %d, want %v from 2", r.Status, r.From, tc.want)
			}
			if tc.want == statusOK && r.Version != 1 {
				t.Fatalf("version %d, want 1", r.Version)
			}
		})
	}
}

func TestRemovedNodeIsTold(t *testing.T) {
	a, b := newNode(t, 1, nil), newNode(t, 2, nil)
	connect(a, b)
	b.tr.RemovePeer(1)
	a.rec.waitPoking(t, "a removed report",
		func() { a.tr.Send([]core.Message{app(1, 2, 1, 0, 0)}) },
		func() bool { return len(a.rec.removedBy) > 0 })
	if a.rec.removedBy[0] != 2 || len(b.rec.msgs) != 0 {
		t.Fatalf("removed by %v, %d messages delivered", a.rec.removedBy, len(b.rec.msgs))
	}
}

// goodPeer checks that b still serves a well-behaved peer.
func goodPeer(t *testing.T, b *node, from core.NodeID) {
	t.Helper()
	a := newNode(t, from, nil)
	connect(a, b)
	before := len(b.rec.msgs)
	a.tr.Send([]core.Message{app(from, b.id, 1, 1, 10)})
	b.rec.waitFor(t, "a message from a good peer", func() bool { return len(b.rec.msgs) > before })
}

func TestBadFrameClosesOnlyItsConnection(t *testing.T) {
	b := newNode(t, 2, nil)
	b.tr.AddPeer(1, "127.0.0.1:1")
	b.tr.AddPeer(3, "127.0.0.1:1")
	for name, frame := range map[string][]byte{
		"garbage body":          {0, 0, 0, 4, 1, 0xc1, 0xc1, 0xc1},
		"wrong version":         mustFrame(t, 1, 2, 99),
		"misaddressed":          mustFrame(t, 3, 2, 1),
		"oversize declared len": {0xff, 0xff, 0xff, 0xff, 1},
	} {
		t.Run(name, func(t *testing.T) {
			conn, r := rawDial(t, b, hello{Cluster: testCluster, From: 1, To: 2, MinVersion: 1, MaxVersion: 1, Kind: kindMessages})
			if r.Status != statusOK {
				t.Fatalf("handshake: %v", r.Status)
			}
			conn.Write(frame)
			if _, err := conn.Read(make([]byte, 1)); err == nil {
				t.Fatal("connection still open after a bad frame")
			}
		})
	}
	if len(b.rec.msgs) != 0 {
		t.Fatalf("%d messages delivered from bad frames", len(b.rec.msgs))
	}
	goodPeer(t, b, 3)
}

// mustFrame is a v1 frame of a message from → to, with version byte v.
func mustFrame(t *testing.T, from, to core.NodeID, v uint8) []byte {
	m := app(from, to, 1, 1, 1)
	f, err := AppendFrame(nil, Version1, &m)
	if err != nil {
		t.Fatal(err)
	}
	f[4] = v
	return f
}

func TestHostileFramesStaySmall(t *testing.T) {
	b := newNode(t, 2, nil)
	b.tr.AddPeer(1, "127.0.0.1:1")
	b.tr.AddPeer(3, "127.0.0.1:1")
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	base := ms.HeapAlloc
	hostile := map[string][]byte{
		// A frame declaring a body of 4 GiB.
		"4 GiB frame": {0xff, 0xff, 0xff, 0xfe, 1, 0xc6, 0xff, 0xff, 0xff, 0xf0},
		// A small frame holding a message whose context is a bin32 of
		// 4 GiB.
		"4 GiB bin": rawFrame(0x9c, 1, 2, 1, 1, 1, 1, 1, 0xc2, 0, 0xc6, 0xff, 0xff, 0xff, 0xff, 0, 0),
		// A frame whose entries are an array32 of 4 billion elements.
		"4G-element array": rawFrame(0x9c, 1, 2, 1, 1, 1, 1, 1, 0xc2, 0, 0xc0, 0xdd, 0xff, 0xff, 0xff, 0xff, 0xc0, 0xc0),
		// A frame declaring 60 MiB (under the maximum) that sends 1 KiB
		// and stalls.
		"60 MiB frame, 1 KiB sent": append([]byte{0x03, 0xc0, 0, 0, 1}, make([]byte, 1024)...),
	}
	var peak uint64
	for name, frame := range hostile {
		t.Run(name, func(t *testing.T) {
			conn, r := rawDial(t, b, hello{Cluster: testCluster, From: 1, To: 2, MinVersion: 1, MaxVersion: 1, Kind: kindMessages})
			if r.Status != statusOK {
				t.Fatalf("handshake: %v", r.Status)
			}
			conn.Write(frame)
			conn.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
			conn.Read(make([]byte, 1)) // closed, or stalled mid-frame
			runtime.ReadMemStats(&ms)
			peak = max(peak, ms.HeapAlloc)
			if ms.HeapAlloc > base+16<<20 {
				t.Fatalf("heap grew by %d MiB", (ms.HeapAlloc-base)>>20)
			}
		})
	}
	t.Logf("heap before %d KiB, highest seen %d KiB", base>>10, peak>>10)
	goodPeer(t, b, 3)
}

// rawFrame is a version 1 frame around body.
func rawFrame(body ...byte) []byte {
	return putFrameLen(append([]byte{0, 0, 0, 0, 1}, body...), 0)
}

// bodyOf returns a function that opens a deterministic pseudo-random body
// of size bytes, failing with errBodyBroken after failAt bytes if
// failAt >= 0.
func bodyOf(size, failAt int64) func() (io.ReadCloser, int64, error) {
	return func() (io.ReadCloser, int64, error) {
		return io.NopCloser(&prngReader{r: rand.New(rand.NewPCG(uint64(size), 1)), left: size, failAt: failAt}), size, nil
	}
}

type prngReader struct {
	r      *rand.Rand
	left   int64
	read   int64
	failAt int64
}

func (p *prngReader) Read(b []byte) (int, error) {
	if p.failAt >= 0 && p.read >= p.failAt {
		return 0, errBodyBroken
	}
	if p.left == 0 {
		return 0, io.EOF
	}
	n := int(min(int64(len(b)), p.left))
	if p.failAt >= 0 {
		n = int(min(int64(n), p.failAt-p.read))
	}
	for i := 0; i < n; i += 8 {
		v := p.r.Uint64()
		for j := 0; j < 8 && i+j < n; j++ {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	p.left -= int64(n)
	p.read += int64(n)
	return n, nil
}

func snapMsg(from, to core.NodeID, index core.Index) core.Message {
	return core.Message{Type: core.MsgSnap, From: from, To: to, Term: 4, Snapshot: &core.Snapshot{
		Meta: core.SnapshotMeta{Index: index, Term: 4, ConfState: core.ConfState{Voters: []core.NodeID{1, 2}}},
		Data: []byte("members"),
	}}
}

func TestSnapshotStreams(t *testing.T) {
	a, b := newNode(t, 1, nil), newNode(t, 2, nil)
	connect(a, b)
	body := bytes.Repeat([]byte("snapshot body "), 50000)
	a.rec.snaps[10] = func() (io.ReadCloser, int64, error) {
		return io.NopCloser(bytes.NewReader(body)), int64(len(body)), nil
	}
	a.tr.Send([]core.Message{snapMsg(1, 2, 10)})
	a.rec.waitFor(t, "snapshot done", func() bool { return len(a.rec.snapDone) == 1 })
	if err := a.rec.snapDone[0].err; err != nil {
		t.Fatal(err)
	}
	b.rec.mu.Lock()
	defer b.rec.mu.Unlock()
	if !bytes.Equal(b.rec.received[10], body) {
		t.Fatalf("received %d bytes, sent %d", len(b.rec.received[10]), len(body))
	}
	if len(b.rec.msgs) != 1 || b.rec.msgs[0].Type != core.MsgSnap || string(b.rec.msgs[0].Snapshot.Data) != "members" {
		t.Fatalf("delivered %+v", b.rec.msgs)
	}
}

func TestBrokenSnapshotStreamIsReportedAndRetried(t *testing.T) {
	a, b := newNode(t, 1, nil), newNode(t, 2, nil)
	connect(a, b)
	const size = 3<<20 + 17
	a.rec.snaps[10] = bodyOf(size, 1<<20+5)
	a.tr.Send([]core.Message{snapMsg(1, 2, 10)})
	a.rec.waitFor(t, "a failed send", func() bool { return len(a.rec.snapDone) == 1 })
	if !errors.Is(a.rec.snapDone[0].err, errBodyBroken) {
		t.Fatalf("snapshot result %v, want the body's error", a.rec.snapDone[0].err)
	}
	b.rec.waitFor(t, "the receiver to abort", func() bool { return b.rec.aborted == 1 })
	if len(b.rec.msgs) != 0 || len(b.rec.received) != 0 {
		t.Fatal("a broken snapshot was delivered")
	}
	// The node tries again (core resends after ReportSnapshot failure).
	a.rec.mu.Lock()
	a.rec.snaps[10] = bodyOf(size, -1)
	a.rec.mu.Unlock()
	a.tr.Send([]core.Message{snapMsg(1, 2, 10)})
	a.rec.waitFor(t, "a second result", func() bool { return len(a.rec.snapDone) == 2 })
	if err := a.rec.snapDone[1].err; err != nil {
		t.Fatal(err)
	}
	b.rec.waitFor(t, "delivery", func() bool { return len(b.rec.msgs) == 1 })
}

func TestSnapshotOfWrongSizeFails(t *testing.T) {
	a, b := newNode(t, 1, nil), newNode(t, 2, nil)
	connect(a, b)
	for i, lie := range []int64{-1, +1} {
		index := core.Index(20 + i)
		a.rec.snaps[index] = func() (io.ReadCloser, int64, error) {
			return io.NopCloser(bytes.NewReader(make([]byte, 1000))), 1000 + lie, nil
		}
		a.tr.Send([]core.Message{snapMsg(1, 2, index)})
		a.rec.waitFor(t, "a result", func() bool { return len(a.rec.snapDone) == i+1 })
		if a.rec.snapDone[i].err == nil {
			t.Fatalf("body of 1000 bytes sent as %d: no error", 1000+lie)
		}
	}
	if len(b.rec.msgs) != 0 {
		t.Fatal("delivered a snapshot of the wrong size")
	}
}

func TestLargeSnapshotInBoundedMemory(t *testing.T) {
	size := int64(256 << 20)
	if testing.Short() {
		size = 32 << 20
	}
	a, b := newNode(t, 1, nil), newNode(t, 2, nil)
	connect(a, b)
	a.rec.snaps[100] = bodyOf(size, -1)
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	start := time.Now()
	a.tr.Send([]core.Message{snapMsg(1, 2, 100)})
	a.rec.waitFor(t, "the snapshot", func() bool { return len(a.rec.snapDone) == 1 })
	elapsed := time.Since(start)
	runtime.ReadMemStats(&after)
	if err := a.rec.snapDone[0].err; err != nil {
		t.Fatal(err)
	}
	// What the receiver saw must be what the sender's body holds.
	w := &recWriter{keep: false}
	rc, _, _ := bodyOf(size, -1)()
	io.Copy(w, bufio.NewReaderSize(rc, 1<<20))
	if got, want := string(b.rec.received[100]), fmt.Sprintf("%d bytes fnv %x", w.n, w.sum); got != want {
		t.Fatalf("received %q, want %q", got, want)
	}
	alloc := after.TotalAlloc - before.TotalAlloc
	t.Logf("%d MiB in %v (%.0f MB/s), %d KiB allocated, heap in use %d -> %d KiB", size>>20, elapsed.Round(time.Millisecond),
		float64(size)/elapsed.Seconds()/1e6, alloc>>10, before.HeapInuse>>10, after.HeapInuse>>10)
	if alloc > 8<<20 {
		t.Fatalf("%d KiB allocated to stream %d MiB", alloc>>10, size>>20)
	}
}

// proxy forwards TCP connections from its own address to target, until
// closed; it stands for a NAT or load balancer between peers.
type proxy struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	conns  []net.Conn
	wg     sync.WaitGroup
}

func newProxy(t *testing.T, target string) *proxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{ln: ln, target: target}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.close)
	return p
}

func (p *proxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		u, err := net.Dial("tcp", p.target)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, c, u)
		p.mu.Unlock()
		p.wg.Add(2)
		go func() { defer p.wg.Done(); io.Copy(u, c); u.Close() }()
		go func() { defer p.wg.Done(); io.Copy(c, u); c.Close() }()
	}
}

// cut closes every connection through the proxy.
func (p *proxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

func (p *proxy) close() {
	p.ln.Close()
	p.cut()
	p.wg.Wait()
}

func TestTCPPeerBehindProxy(t *testing.T) {
	a, b := newNode(t, 1, nil), newNode(t, 2, nil)
	px := newProxy(t, b.tr.Addr().String())
	a.tr.AddPeer(2, px.ln.Addr().String()) // the advertised address is the proxy's
	b.tr.AddPeer(1, a.tr.Addr().String())
	a.tr.Send([]core.Message{app(1, 2, 1, 1, 10)})
	b.rec.waitFor(t, "a message through the proxy", func() bool { return len(b.rec.msgs) == 1 })
	px.cut()
	b.rec.waitPoking(t, "a message after the proxy cut the connection",
		func() { a.tr.Send([]core.Message{app(1, 2, 2, 1, 10)}) },
		func() bool { return len(b.rec.msgs) > 1 })
}

func TestTCPLearnsClusterIDFromFirstPeer(t *testing.T) {
	a := newNode(t, 1, nil)
	b := newNode(t, 2, func(c *Config) { c.ClusterID = 0 }) // joining: knows no cluster yet
	connect(a, b)
	if b.tr.ClusterID() != 0 {
		t.Fatalf("ClusterID before any peer: %d", b.tr.ClusterID())
	}
	a.tr.Send([]core.Message{app(1, 2, 1, 1, 10)})
	b.rec.waitFor(t, "a message from the cluster", func() bool { return len(b.rec.msgs) == 1 })
	if got := b.tr.ClusterID(); got != testCluster {
		t.Fatalf("learned cluster %x, want %x", got, testCluster)
	}
	// From then on another cluster is refused, and b's own hellos carry
	// the learned ID.
	_, r := rawDial(t, b, hello{Cluster: testCluster + 1, From: 1, To: 2, MinVersion: 1, MaxVersion: 1, Kind: kindMessages})
	if r.Status != statusWrongCluster {
		t.Fatalf("another cluster after learning: %v", r.Status)
	}
	b.tr.Send([]core.Message{{Type: core.MsgAppResp, From: 2, To: 1, Term: 3, Index: 2}})
	a.rec.waitFor(t, "b's answer", func() bool { return len(a.rec.msgs) == 1 })
	// A peer that knows no cluster either is refused by one that does.
	_, r = rawDial(t, a, hello{Cluster: 0, From: 2, To: 1, MinVersion: 1, MaxVersion: 1, Kind: kindMessages})
	if r.Status != statusWrongCluster {
		t.Fatalf("cluster 0 dialing a member: %v", r.Status)
	}
}

// TestHandshakeFloodIsBounded opens three times maxAwaitingHandshake
// connections that never say hello: at most maxAwaitingHandshake are
// kept (the oldest are closed), and a real peer still gets through.
func TestHandshakeFloodIsBounded(t *testing.T) {
	b := newNode(t, 2, func(c *Config) { c.DialTimeout = time.Minute })
	b.tr.AddPeer(3, "127.0.0.1:1")
	var conns []net.Conn
	for range 3 * maxAwaitingHandshake {
		c, err := net.Dial("tcp", b.tr.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	t.Cleanup(func() {
		for _, c := range conns {
			c.Close()
		}
	})
	// The first ones are closed as the later ones arrive.
	conns[0].SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := conns[0].Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
		t.Fatalf("the oldest idle connection: %v, want it closed", err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		b.tr.mu.Lock()
		n := len(b.tr.awaiting)
		b.tr.mu.Unlock()
		if n <= maxAwaitingHandshake && n > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d connections await their handshake, limit %d", n, maxAwaitingHandshake)
		}
		time.Sleep(5 * time.Millisecond) // polling
	}
	goodPeer(t, b, 3)
}

// TestPeerHoldsOneMessageConnection: a peer's second message connection
// closes its first.
func TestPeerHoldsOneMessageConnection(t *testing.T) {
	b := newNode(t, 2, nil)
	b.tr.AddPeer(1, "127.0.0.1:1")
	h := hello{Cluster: testCluster, From: 1, To: 2, MinVersion: 1, MaxVersion: 1, Kind: kindMessages}
	first, r := rawDial(t, b, h)
	if r.Status != statusOK {
		t.Fatalf("handshake: %v", r.Status)
	}
	second, r := rawDial(t, b, h)
	if r.Status != statusOK {
		t.Fatalf("second handshake: %v", r.Status)
	}
	first.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := first.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
		t.Fatalf("first connection: %v, want it closed", err)
	}
	second.Write(mustFrame(t, 1, 2, 1))
	b.rec.waitFor(t, "a message on the second connection", func() bool { return len(b.rec.msgs) == 1 })
}
