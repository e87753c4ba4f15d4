package transport

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/stepraft/stepraft/core"
)

// readBufferBytes is the buffered reader of each inbound connection.
const readBufferBytes = 64 << 10

// TCP is a Transport over TCP, optionally with mutual TLS. Each peer has
// one outbound connection, written by its own sender goroutine from a
// bounded queue; each inbound connection has a reader goroutine that
// delivers to the Handler. Snapshots travel on connections of their own.
type TCP struct {
	cfg       Config
	log       *slog.Logger
	ln        net.Listener
	serverTLS *tls.Config // nil without TLS

	cluster atomic.Uint64 // Config.ClusterID, or the one learned

	ctx    context.Context // canceled by Close: ends dials and streams
	cancel context.CancelFunc
	wg     sync.WaitGroup // every goroutine the transport starts
	snaps  chan struct{}  // a token per snapshot being received

	mu      sync.Mutex
	h       Handler // set once by Start
	closed  bool
	peers   map[core.NodeID]*peer
	removed map[core.NodeID]bool
	inbound map[net.Conn]core.NodeID // open inbound connections and their peer (0 before the handshake)
	// awaiting holds the inbound connections that have not finished their
	// handshake, and awaitQ them oldest first (with some that finished
	// since); past maxAwaitingHandshake the oldest is closed.
	awaiting map[net.Conn]bool
	awaitQ   []net.Conn
	// streams is each peer's inbound message connection: a newer one
	// replaces it, so a peer holds at most one.
	streams map[core.NodeID]net.Conn
	// replaced holds the message connections closed because a newer one
	// replaced them, until their reader ends.
	replaced map[net.Conn]bool
	rng      *rand.Rand // backoff jitter
}

// NewTCP checks cfg and listens on cfg.Listen. Nothing is accepted or sent
// before Start.
func NewTCP(cfg Config) (*TCP, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	lc := net.ListenConfig{KeepAlive: cfg.KeepAlive}
	ln, err := lc.Listen(context.Background(), "tcp", cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("transport: listen: %w", err)
	}
	t := &TCP{
		cfg:      cfg,
		log:      cfg.Logger.With("node_id", uint64(cfg.ID)),
		ln:       ln,
		snaps:    make(chan struct{}, cfg.MaxSnapshotStreams),
		peers:    make(map[core.NodeID]*peer),
		removed:  make(map[core.NodeID]bool),
		inbound:  make(map[net.Conn]core.NodeID),
		streams:  make(map[core.NodeID]net.Conn),
		awaiting: make(map[net.Conn]bool),
		replaced: make(map[net.Conn]bool),
		rng:      rand.New(rand.NewPCG(cfg.Seed, 0x7472616e73706f72)),
	}
	if cfg.TLS != nil {
		t.serverTLS = t.serverConfig()
	}
	t.cluster.Store(cfg.ClusterID)
	t.ctx, t.cancel = context.WithCancel(context.Background())
	return t, nil
}

// ClusterID returns the cluster ID the transport checks: Config.ClusterID,
// or the one it learned (0 until then).
func (t *TCP) ClusterID() uint64 { return t.cluster.Load() }

// Addr is the address the transport listens on (with the port chosen
// when Listen asked for port 0).
func (t *TCP) Addr() net.Addr { return t.ln.Addr() }

// Start implements Transport: it begins accepting peers and sending.
func (t *TCP) Start(h Handler) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	switch {
	case t.closed:
		return ErrClosed
	case t.h != nil:
		return errors.New("transport: started twice")
	case h == nil:
		return errors.New("transport: nil handler")
	}
	t.h = h
	for _, p := range t.peers {
		t.startPeer(p)
	}
	t.wg.Add(1)
	go t.acceptLoop()
	return nil
}

// AddPeer implements Transport.
func (t *TCP) AddPeer(id core.NodeID, addr string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed || id == 0 || id == t.cfg.ID {
		return
	}
	delete(t.removed, id)
	if p, ok := t.peers[id]; ok {
		p.setAddr(addr)
		return
	}
	p := newPeer(t, id, addr)
	t.peers[id] = p
	if t.h != nil {
		t.startPeer(p)
	}
}

// RemovePeer implements Transport. Inbound connections from id are
// closed, and its later handshakes answered with "removed".
func (t *TCP) RemovePeer(id core.NodeID) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return
	}
	t.removed[id] = true
	if p, ok := t.peers[id]; ok {
		delete(t.peers, id)
		p.stop()
	}
	for c, from := range t.inbound {
		if from == id {
			c.Close()
		}
	}
}

// Send implements Transport. Messages sent before Start are dropped.
func (t *TCP) Send(msgs []core.Message) {
	t.mu.Lock()
	h := t.h
	if t.closed || h == nil {
		t.mu.Unlock()
		return
	}
	var unreachable []core.NodeID
	var lostSnaps []core.Message
	for i := range msgs {
		m := &msgs[i]
		p := t.peers[m.To]
		switch {
		case p == nil:
			unreachable = appendOnce(unreachable, m.To)
			if m.Type == core.MsgSnap {
				lostSnaps = append(lostSnaps, *m)
			}
		case m.Type == core.MsgSnap:
			t.startSnapshot(p, *m)
		case !p.enqueue(m):
			unreachable = appendOnce(unreachable, m.To)
		}
	}
	t.mu.Unlock()
	for _, id := range unreachable {
		h.Unreachable(id)
	}
	for i := range lostSnaps {
		h.SnapshotDone(lostSnaps[i].To, snapMeta(&lostSnaps[i]), fmt.Errorf("transport: %d is not a peer", lostSnaps[i].To))
	}
}

// snapMeta is the metadata of a MsgSnap's snapshot, if it has one.
func snapMeta(m *core.Message) core.SnapshotMeta {
	if m.Snapshot == nil {
		return core.SnapshotMeta{}
	}
	return m.Snapshot.Meta
}

func appendOnce(ids []core.NodeID, id core.NodeID) []core.NodeID {
	for _, x := range ids {
		if x == id {
			return ids
		}
	}
	return append(ids, id)
}

// Close implements Transport.
func (t *TCP) Close() error {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return nil
	}
	t.closed = true
	t.cancel()
	err := t.ln.Close()
	for _, p := range t.peers {
		p.stop()
	}
	for c := range t.inbound {
		c.Close()
	}
	t.mu.Unlock()
	t.wg.Wait()
	if err != nil && !errors.Is(err, net.ErrClosed) {
		return fmt.Errorf("transport: close: %w", err)
	}
	return nil
}

// startPeer starts p's sender. t.mu is held.
func (t *TCP) startPeer(p *peer) {
	t.wg.Add(1)
	go func() {
		defer t.wg.Done()
		p.run()
	}()
}

// handler returns the handler; it is set before any goroutine that calls
// this starts.
func (t *TCP) handler() Handler {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.h
}

// peerAddr returns the current address of peer id, if it is a peer.
func (t *TCP) peerAddr(id core.NodeID) (string, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	p, ok := t.peers[id]
	if !ok {
		return "", false
	}
	return p.address(), true
}

// jitter returns a duration in [d/2, d).
func (t *TCP) jitter(d time.Duration) time.Duration {
	t.mu.Lock()
	defer t.mu.Unlock()
	if d < 2 {
		return d
	}
	return d/2 + time.Duration(t.rng.Int64N(int64(d/2)))
}

// sleep waits d or until the transport closes; it reports whether the
// transport is still open.
func (t *TCP) sleep(d time.Duration, stop <-chan struct{}) bool {
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-timer.C:
		return true
	case <-stop:
		return false
	case <-t.ctx.Done():
		return false
	}
}

// acceptLoop accepts connections until the listener closes.
func (t *TCP) acceptLoop() {
	defer t.wg.Done()
	var delay time.Duration
	for {
		conn, err := t.ln.Accept()
		if err != nil {
			if t.ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of file descriptors and the like: wait and retry.
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			t.log.Warn("accept failed", "err", err)
			if !t.sleep(delay, nil) {
				return
			}
			continue
		}
		delay = 0
		if !t.trackNew(conn) {
			conn.Close()
			return
		}
		t.wg.Add(1)
		go func() {
			defer t.wg.Done()
			defer t.untrack(conn)
			t.serve(conn)
		}()
	}
}

// maxAwaitingHandshake bounds the inbound connections that have not
// finished their handshake (each has DialTimeout to do it): a flood of
// connections costs at most this many goroutines and small buffers. Past
// it the oldest is closed, so a flood must outpace a real peer's
// handshake (one round trip) to keep it out.
const maxAwaitingHandshake = 256

// handshakeBufferBytes is the buffered reader of a connection until its
// handshake is done (a hello is at most maxHandshakeFrame bytes).
const handshakeBufferBytes = 2 << 10

// trackNew records a connection just accepted, closing the oldest one
// awaiting its handshake if too many do. It reports false when the
// transport is closed.
func (t *TCP) trackNew(c net.Conn) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return false
	}
	for len(t.awaiting) >= maxAwaitingHandshake {
		old := t.awaitQ[0]
		t.awaitQ = t.awaitQ[1:]
		if t.awaiting[old] {
			delete(t.awaiting, old)
			old.Close() // its serve logs the refusal
		}
	}
	if len(t.awaitQ) >= 4*maxAwaitingHandshake {
		t.awaitQ = slices.DeleteFunc(t.awaitQ, func(x net.Conn) bool { return !t.awaiting[x] })
	}
	t.inbound[c] = 0
	t.awaiting[c] = true
	t.awaitQ = append(t.awaitQ, c)
	return true
}

// track records the peer of an inbound connection whose handshake
// succeeded; it reports false when the transport is closed, the peer
// removed, or the connection closed as the oldest awaiting. A peer's
// newer message connection closes its older one.
func (t *TCP) track(c net.Conn, from core.NodeID, kind connKind) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed || t.removed[from] || !t.awaiting[c] {
		return false
	}
	delete(t.awaiting, c)
	t.inbound[c] = from
	if kind == kindMessages {
		if old := t.streams[from]; old != nil {
			t.replaced[old] = true // its reader logs it
			old.Close()
		}
		t.streams[from] = c
	}
	return true
}

func (t *TCP) wasReplaced(c net.Conn) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.replaced[c]
}

func (t *TCP) untrack(c net.Conn) {
	c.Close()
	t.mu.Lock()
	if from, ok := t.inbound[c]; ok {
		delete(t.awaiting, c)
		if from != 0 && t.streams[from] == c {
			delete(t.streams, from)
		}
		delete(t.replaced, c)
		delete(t.inbound, c)
	}
	t.mu.Unlock()
}

// serve runs the listener's side of one inbound connection.
func (t *TCP) serve(conn net.Conn) {
	raw := conn // what the transport tracks, under TLS too
	log := t.log.With("remote", conn.RemoteAddr().String())
	conn.SetDeadline(time.Now().Add(t.cfg.DialTimeout))
	var certID core.NodeID
	if t.serverTLS != nil {
		tc := tls.Server(conn, t.serverTLS)
		if err := tc.HandshakeContext(t.ctx); err != nil {
			log.Warn("tls handshake refused", "err", err)
			return
		}
		id, err := t.certID(tc.ConnectionState())
		if err != nil {
			log.Warn("tls peer refused", "err", err)
			return
		}
		certID, conn = id, tc
	}
	hr := bufio.NewReaderSize(conn, handshakeBufferBytes)
	body, err := readHandshake(hr)
	if err != nil {
		log.Warn("handshake refused", "err", err)
		return
	}
	h, err := decodeHello(body)
	if err != nil {
		log.Warn("handshake refused", "err", err)
		return
	}
	st, version, release := t.admit(&h, certID)
	defer release()
	// Tracked before the reply: a peer's connections replace each other
	// in the order their handshakes finish.
	if st == statusOK && !t.track(raw, h.From, h.Kind) {
		return // closed, or the peer removed meanwhile
	}
	r := reply{Status: st, Version: version, From: t.cfg.ID}
	if st != statusOK {
		r.Reason = st.String()
	}
	if _, err := conn.Write(appendReply(nil, &r)); err != nil {
		log.Warn("handshake reply failed", "peer", uint64(h.From), "err", err)
		return
	}
	if st != statusOK {
		log.Warn("peer refused", "peer", uint64(h.From), "cluster", h.Cluster, "versions", fmt.Sprintf("%d..%d", h.MinVersion, h.MaxVersion), "reason", st.String())
		return
	}
	conn.SetDeadline(time.Time{})
	// The larger buffer only now; reads bigger than it pass hr's through.
	br := bufio.NewReaderSize(hr, readBufferBytes)
	log = log.With("peer", uint64(h.From))
	if h.Kind == kindSnapshot {
		t.receiveSnapshot(conn, br, h.From, version, log)
		return
	}
	t.readMessages(raw, br, h.From, version, log)
}

// admit decides on a hello. release gives back what admission took (a
// snapshot stream token).
func (t *TCP) admit(h *hello, certID core.NodeID) (st status, version uint8, release func()) {
	release = func() {}
	t.mu.Lock()
	_, known := t.peers[h.From]
	removed := t.removed[h.From]
	t.mu.Unlock()
	cluster := t.cluster.Load()
	switch {
	case h.Cluster == 0 || (cluster != 0 && h.Cluster != cluster):
		return statusWrongCluster, 0, release
	case h.To != t.cfg.ID:
		return statusWrongNode, 0, release
	case t.serverTLS != nil && certID != h.From:
		return statusBadIdentity, 0, release
	case removed:
		return statusRemoved, 0, release
	case !known:
		return statusUnknownNode, 0, release
	case h.Kind != kindMessages && h.Kind != kindSnapshot:
		return statusBadKind, 0, release
	}
	version = commonVersion(h.MinVersion, h.MaxVersion)
	if version == 0 {
		return statusNoVersion, 0, release
	}
	if cluster == 0 && !t.cluster.CompareAndSwap(0, h.Cluster) && t.cluster.Load() != h.Cluster {
		return statusWrongCluster, 0, release // another peer taught another ID meanwhile
	}
	if h.Kind == kindSnapshot {
		select {
		case t.snaps <- struct{}{}:
			release = func() { <-t.snaps }
		default:
			return statusBusy, 0, release
		}
	}
	return statusOK, version, release
}

// readMessages delivers the messages of an inbound connection until it
// fails or closes.
func (t *TCP) readMessages(conn net.Conn, br *bufio.Reader, from core.NodeID, version uint8, log *slog.Logger) {
	h := t.handler()
	var buf []byte
	for {
		v, body, err := ReadFrame(br, buf, t.cfg.MaxFrameBytes)
		if err != nil {
			switch {
			case t.ctx.Err() != nil:
			case errors.Is(err, net.ErrClosed):
				if t.wasReplaced(conn) {
					log.Info("closing connection: a newer one from the same peer replaces it")
				}
			case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET):
				log.Info("connection from peer ended", "err", err)
			default:
				log.Warn("closing connection: bad frame", "err", err)
			}
			return
		}
		if cap(body) <= readBufferBytes*4 {
			buf = body[:0]
		}
		if v != version {
			log.Warn("closing connection: frame of another wire version", "version", v, "want", version)
			return
		}
		m, err := DecodeMessage(body)
		if err != nil {
			log.Warn("closing connection: bad frame", "err", err)
			return
		}
		if m.From != from || m.To != t.cfg.ID || m.Type == core.MsgSnap {
			log.Warn("closing connection: misaddressed message", "from", uint64(m.From), "to", uint64(m.To), "msg_type", m.Type.String())
			return
		}
		h.Deliver(m)
	}
}
