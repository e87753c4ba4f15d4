package transport

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/stepraft/stepraft/core"
)

// writeChunkBytes is how much encoded data a sender gathers before it
// writes: one syscall for everything queued, up to this much.
const writeChunkBytes = 4 << 20

// peer is one remote node and the goroutine that sends to it.
type peer struct {
	t  *TCP
	id core.NodeID

	mu       sync.Mutex
	addr     string
	queue    []core.Message
	bytes    int  // estimated bytes of queue
	snapping bool // a snapshot stream to this peer is running
	stopped  bool

	wake chan struct{} // size 1: "the queue is not empty"
	done chan struct{} // closed by stop

	// Owned by run.
	conn    net.Conn
	version uint8
	buf     []byte
	batch   []core.Message
	failing bool // the last dial failed (log each outage once)
}

func newPeer(t *TCP, id core.NodeID, addr string) *peer {
	return &peer{t: t, id: id, addr: addr, wake: make(chan struct{}, 1), done: make(chan struct{})}
}

func (p *peer) setAddr(addr string) {
	p.mu.Lock()
	p.addr = addr
	p.mu.Unlock()
}

func (p *peer) address() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.addr
}

func (p *peer) stop() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.stopped {
		p.stopped = true
		close(p.done)
	}
}

// msgBytes estimates what m costs in a queue and on the wire.
func msgBytes(m *core.Message) int {
	n := 64 + len(m.Context)
	for i := range m.Entries {
		n += 16 + len(m.Entries[i].Data)
	}
	return n
}

// enqueue adds m to the queue unless that would pass a bound.
func (p *peer) enqueue(m *core.Message) bool {
	n := msgBytes(m)
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stopped || len(p.queue) >= p.t.cfg.QueueMsgs || p.bytes+n > p.t.cfg.QueueBytes {
		return false
	}
	p.queue = append(p.queue, *m)
	p.bytes += n
	select {
	case p.wake <- struct{}{}:
	default:
	}
	return true
}

// take moves the queue into p.batch.
func (p *peer) take() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.batch, p.queue = p.queue, p.batch[:0]
	p.bytes = 0
}

// run sends until the peer is stopped or the transport closed.
func (p *peer) run() {
	defer func() {
		if p.conn != nil {
			p.conn.Close()
		}
	}()
	backoff := time.Duration(0)
	for {
		select {
		case <-p.done:
			return
		case <-p.t.ctx.Done():
			return
		case <-p.wake:
		}
		p.take()
		if len(p.batch) == 0 {
			continue
		}
		err := p.sendBatch()
		clear(p.batch) // release entries
		if err == nil {
			backoff = 0
			continue
		}
		p.t.handler().Unreachable(p.id)
		if p.conn != nil {
			p.conn.Close()
			p.conn = nil
			p.t.log.Warn("peer connection failed", "peer", uint64(p.id), "err", err)
			continue // redial at once: the peer may just have restarted
		}
		if !p.failing {
			p.failing = true
			p.t.log.Warn("peer unreachable", "peer", uint64(p.id), "err", err)
		}
		backoff = min(max(2*backoff, p.t.cfg.MinBackoff), p.t.cfg.MaxBackoff)
		if !p.t.sleep(p.t.jitter(backoff), p.done) {
			return
		}
	}
}

// sendBatch connects if need be and writes p.batch.
func (p *peer) sendBatch() error {
	if p.conn == nil {
		conn, version, err := p.t.dial(p.t.ctx, p.id, kindMessages)
		if err != nil {
			return err
		}
		if p.failing {
			p.t.log.Info("peer reachable again", "peer", uint64(p.id))
		}
		p.conn, p.version, p.failing = conn, version, false
	}
	buf := p.buf[:0]
	for i := range p.batch {
		start := len(buf)
		var err error
		buf, err = AppendFrame(buf, p.version, &p.batch[i])
		if err == nil && len(buf)-start-4 > p.t.cfg.MaxFrameBytes {
			err = fmt.Errorf("%w: %d bytes > max %d", ErrFrameTooLarge, len(buf)-start-4, p.t.cfg.MaxFrameBytes)
		}
		if err != nil {
			// Not the connection's fault: drop this message only.
			buf = buf[:start]
			p.t.log.Error("message not sent", "peer", uint64(p.id), "msg_type", p.batch[i].Type.String(), "err", err)
			continue
		}
		if len(buf) >= writeChunkBytes {
			if err := p.write(buf); err != nil {
				return err
			}
			buf = buf[:0]
		}
	}
	err := p.write(buf)
	if cap(buf) <= writeChunkBytes*2 {
		p.buf = buf[:0]
	}
	return err
}

func (p *peer) write(b []byte) error {
	if len(b) == 0 {
		return nil
	}
	p.conn.SetWriteDeadline(time.Now().Add(p.t.cfg.WriteTimeout))
	_, err := p.conn.Write(b)
	return err
}

// dial connects to peer id and runs the dialer's side of the handshake.
func (t *TCP) dial(ctx context.Context, id core.NodeID, kind connKind) (net.Conn, uint8, error) {
	addr, ok := t.peerAddr(id)
	if !ok {
		return nil, 0, fmt.Errorf("transport: %d is not a peer", id)
	}
	ctx, cancel := context.WithTimeout(ctx, t.cfg.DialTimeout)
	defer cancel()
	d := net.Dialer{KeepAlive: t.cfg.KeepAlive}
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, 0, err
	}
	hc, version, err := t.handshake(ctx, conn, id, kind)
	if err != nil {
		conn.Close()
		return nil, 0, err
	}
	return hc, version, nil
}

// handshake runs TLS (when configured) and the hello on conn, and returns
// the connection to use (conn, or TLS over it) and the wire version.
func (t *TCP) handshake(ctx context.Context, conn net.Conn, id core.NodeID, kind connKind) (net.Conn, uint8, error) {
	if deadline, ok := ctx.Deadline(); ok {
		conn.SetDeadline(deadline)
	}
	if t.cfg.TLS != nil {
		tc := tls.Client(conn, t.clientConfig(id))
		if err := tc.HandshakeContext(ctx); err != nil {
			return nil, 0, fmt.Errorf("transport: tls with %d: %w", id, err)
		}
		conn = tc
	}
	h := hello{Cluster: t.cluster.Load(), From: t.cfg.ID, To: id, MinVersion: minVersion, MaxVersion: maxVersion, Kind: kind}
	if _, err := conn.Write(appendHello(nil, &h)); err != nil {
		return nil, 0, err
	}
	body, err := readHandshake(conn)
	if err != nil {
		return nil, 0, fmt.Errorf("transport: handshake with %d: %w", id, err)
	}
	r, err := decodeReply(body)
	if err != nil {
		return nil, 0, fmt.Errorf("transport: handshake with %d: %w", id, err)
	}
	if r.Status != statusOK {
		err := fmt.Errorf("%w: %d says %q", ErrRefused, id, r.Reason)
		if r.Status == statusRemoved {
			err = fmt.Errorf("%w: %w", ErrRemoved, err)
			t.handler().Removed(id)
		}
		return nil, 0, err
	}
	if r.From != id {
		return nil, 0, fmt.Errorf("transport: dialed %d, %d answered", id, r.From)
	}
	if r.Version < minVersion || r.Version > maxVersion || r.Version > h.MaxVersion {
		return nil, 0, fmt.Errorf("transport: %d chose wire version %d", id, r.Version)
	}
	conn.SetDeadline(time.Time{})
	return conn, r.Version, nil
}

var errBusy = errors.New("transport: a snapshot to this peer is already being sent")
