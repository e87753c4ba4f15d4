package transport

import (
	"bytes"
	"io"
	"net"
	"sync"
	"testing"

	"github.com/stepraft/stepraft/core"
)

// counter is a Handler that counts deliveries and lets a sender wait for
// them.
type counter struct {
	mu        sync.Mutex
	cond      sync.Cond
	delivered int
	dropped   int
}

func newCounter() *counter {
	c := &counter{}
	c.cond.L = &c.mu
	return c
}

func (c *counter) Deliver(core.Message) {
	c.mu.Lock()
	c.delivered++
	c.mu.Unlock()
	c.cond.Broadcast()
}

func (c *counter) Unreachable(core.NodeID) {
	c.mu.Lock()
	c.dropped++
	c.mu.Unlock()
	c.cond.Broadcast()
}

// waitUntil waits until delivered+dropped reaches n.
func (c *counter) waitUntil(n int) {
	c.mu.Lock()
	for c.delivered+c.dropped < n {
		c.cond.Wait()
	}
	c.mu.Unlock()
}

func (c *counter) SnapshotDone(core.NodeID, core.SnapshotMeta, error) {}
func (c *counter) Removed(core.NodeID)                                {}
func (c *counter) OpenSnapshot(core.SnapshotMeta) (io.ReadCloser, int64, error) {
	return nil, 0, io.EOF
}
func (c *counter) ReceiveSnapshot(core.NodeID, core.Snapshot, int64) (SnapshotWriter, error) {
	return nil, io.EOF
}

// BenchmarkTCP sends messages from one TCP transport to another over
// loopback, in Sends of benchBatch messages (one Ready's worth) with at
// most benchWindow messages in flight, and reports messages/s and payload
// MB/s (entry data only).
func BenchmarkTCP(b *testing.B) {
	heartbeat := core.Message{Type: core.MsgHeartbeat, From: 1, To: 2, Term: 5, Commit: 100}
	appendMsg := core.Message{Type: core.MsgApp, From: 1, To: 2, Term: 5, LogTerm: 5, Index: 100, Commit: 99}
	for i := range 64 {
		appendMsg.Entries = append(appendMsg.Entries, core.Entry{Term: 5, Index: core.Index(101 + i), Type: core.EntryNormal, Data: bytes.Repeat([]byte{'x'}, 128)})
	}
	for _, tc := range []struct {
		name  string
		m     core.Message
		batch int
	}{
		{"heartbeat", heartbeat, 1},
		{"heartbeat/batch=64", heartbeat, 64},
		{"append64x128B", appendMsg, 1},
		{"append64x128B/batch=16", appendMsg, 16},
	} {
		b.Run(tc.name, func(b *testing.B) { benchTCP(b, tc.m, tc.batch) })
	}
}

const benchWindow = 2048

func benchTCP(b *testing.B, m core.Message, batch int) {
	recv := newCounter()
	a, err := NewTCP(Config{ID: 1, ClusterID: 1, Listen: "127.0.0.1:0"})
	if err != nil {
		b.Fatal(err)
	}
	defer a.Close()
	c, err := NewTCP(Config{ID: 2, ClusterID: 1, Listen: "127.0.0.1:0"})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	// One counter for both sides: a message is either delivered by c or
	// reported dropped by a, so waiting never hangs on a drop.
	a.Start(recv)
	c.Start(recv)
	a.AddPeer(2, c.Addr().String())
	c.AddPeer(1, a.Addr().String())
	msgs := make([]core.Message, batch)
	for i := range msgs {
		msgs[i] = m
	}
	payload := 0
	for _, e := range m.Entries {
		payload += len(e.Data)
	}
	b.SetBytes(int64(payload * batch))
	b.ReportAllocs()
	sent := 0
	for b.Loop() {
		a.Send(msgs)
		sent += batch
		recv.waitUntil(sent - benchWindow)
	}
	recv.waitUntil(sent)
	recv.mu.Lock()
	dropped := recv.dropped
	recv.mu.Unlock()
	if dropped > 0 {
		b.Fatalf("%d messages dropped", dropped)
	}
	b.ReportMetric(float64(sent)/b.Elapsed().Seconds(), "msgs/s")
}

// BenchmarkLoopbackRaw is the ceiling BenchmarkTCP is compared with: one
// TCP connection over loopback, 1 MiB written per op, read into a 64 KiB
// buffer on the other side, nothing encoded or decoded.
func BenchmarkLoopbackRaw(b *testing.B) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	got := make(chan int64, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			got <- 0
			return
		}
		defer c.Close()
		n, _ := io.CopyBuffer(io.Discard, c, make([]byte, readBufferBytes))
		got <- n
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	buf := make([]byte, 1<<20)
	b.SetBytes(int64(len(buf)))
	for b.Loop() {
		if _, err := c.Write(buf); err != nil {
			b.Fatal(err)
		}
	}
	c.Close()
	<-got
}
