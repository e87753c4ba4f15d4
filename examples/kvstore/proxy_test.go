package main

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stepraft/stepraft/node"
)

// netProxy stands between the members' raft transports. Each member binds
// its own raft address (-listen) and advertises, in -cluster, the address
// of its proxy listener, so that every connection between members comes
// through here. The transport opens one connection per direction (the
// dialer's messages go to the listener, nothing comes back but the
// handshake's reply), so a link is a (dialer, target) pair: the proxy
// reads the hello that opens each connection to learn its dialer, then
// forwards the connection byte for byte unless the link is cut.
//
// The dialer is read from the hello, not from which address it dialed:
// a snapshot from the leader carries the leader's member addresses, which
// a follower adopts, so per-dialer addresses would not stay per-dialer.
type netProxy struct {
	t       *testing.T
	targets map[node.NodeID]string // the members' listen addresses
	lns     map[node.NodeID]net.Listener
	wg      sync.WaitGroup

	mu     sync.Mutex
	heals  *sync.Cond // broadcast when links heal or connections close
	closed bool
	cuts   map[link]cutMode
	conns  map[*proxyConn]bool
	errs   []string // hellos the proxy could not read: the test fails
	stats  proxyStats
}

// link is the direction from dialer to target.
type link struct{ from, to node.NodeID }

// cutMode is what a cut link does with a new connection.
type cutMode uint8

const (
	// cutRefuse closes it once the hello is read: the dialer fails fast
	// and backs off.
	cutRefuse cutMode = iota + 1
	// cutBlackhole holds it without an answer until the link heals: the
	// dialer waits out its handshake timeout, as behind a dropped route.
	cutBlackhole
	// cutStall holds new connections as cutBlackhole does, and leaves the
	// open ones open but forwards nothing on them until the link heals:
	// what was sent meanwhile arrives late, in one burst.
	cutStall
)

func (m cutMode) String() string {
	return [...]string{"?", "refuse", "blackhole", "stall"}[m]
}

type proxyStats struct {
	forwarded   int // connections forwarded to their target
	refused     int // connections closed because their link was cut
	blackholed  int // connections held unanswered
	closedByCut int // forwarded connections a cut closed
	stalled     int // forwarded connections a cut stalled
}

// proxyConn is one connection through the proxy.
type proxyConn struct {
	l        link
	client   net.Conn
	upstream net.Conn // nil until dialed, and for a blackholed connection
	held     bool     // blackholed
	closed   bool
}

// newNetProxy listens for each member of targets (ID -> listen address)
// on a loopback port of its own; addr gives the address to advertise.
func newNetProxy(t *testing.T, targets map[node.NodeID]string) *netProxy {
	p := &netProxy{t: t, targets: targets, lns: map[node.NodeID]net.Listener{},
		cuts: map[link]cutMode{}, conns: map[*proxyConn]bool{}}
	p.heals = sync.NewCond(&p.mu)
	for id := range targets {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		p.lns[id] = ln
	}
	for id, ln := range p.lns {
		p.wg.Add(1)
		go p.accept(id, ln)
	}
	t.Cleanup(p.close)
	return p
}

// addr is the address the other members dial to reach id.
func (p *netProxy) addr(id node.NodeID) string { return p.lns[id].Addr().String() }

func (p *netProxy) accept(to node.NodeID, ln net.Listener) {
	defer p.wg.Done()
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			p.handle(c, to)
		}()
	}
}

// handle reads the hello of a connection to member to, then forwards,
// refuses or holds the connection as its link says.
func (p *netProxy) handle(c net.Conn, to node.NodeID) {
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	frame, h, err := readHelloFrame(c)
	c.SetReadDeadline(time.Time{})
	if err == nil && h.to != uint64(to) {
		err = fmt.Errorf("hello to %d arrived at the proxy of %d", h.to, to)
	}
	if err != nil {
		c.Close()
		if !errors.Is(err, io.EOF) && !errors.Is(err, syscall.ECONNRESET) { // a dialer killed
			p.mu.Lock()
			p.errs = append(p.errs, fmt.Sprintf("proxy of %d: %v", to, err))
			p.mu.Unlock()
		}
		return
	}
	pc := &proxyConn{l: link{node.NodeID(h.from), to}, client: c}
	p.mu.Lock()
	mode, cut := p.cuts[pc.l]
	switch {
	case p.closed || (cut && mode == cutRefuse):
		p.stats.refused++
		p.mu.Unlock()
		c.Close()
		return
	case cut:
		pc.held = true
		p.stats.blackholed++
		p.conns[pc] = true // closed when the link heals
		p.mu.Unlock()
		return
	}
	p.conns[pc] = true
	p.mu.Unlock()

	u, err := net.DialTimeout("tcp", p.targets[to], 2*time.Second)
	p.mu.Lock()
	if err != nil || pc.closed {
		p.closeLocked(pc)
		p.mu.Unlock()
		if u != nil {
			u.Close()
		}
		return
	}
	pc.upstream = u
	p.stats.forwarded++
	p.mu.Unlock()
	if _, err := u.Write(frame); err != nil {
		p.closeConn(pc)
		return
	}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		io.Copy(c, u) // the handshake's reply
		p.closeConn(pc)
	}()
	p.forward(pc)
	p.closeConn(pc)
}

// forward copies the dialer's messages to the target, waiting while the
// link is stalled.
func (p *netProxy) forward(pc *proxyConn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := pc.client.Read(buf)
		if n > 0 {
			p.mu.Lock()
			for p.cuts[pc.l] == cutStall && !pc.closed {
				p.heals.Wait()
			}
			closed := pc.closed
			p.mu.Unlock()
			if closed {
				return
			}
			if _, err := pc.upstream.Write(buf[:n]); err != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func (p *netProxy) closeConn(pc *proxyConn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closeLocked(pc)
}

func (p *netProxy) closeLocked(pc *proxyConn) {
	if pc.closed {
		return
	}
	pc.closed = true
	p.heals.Broadcast()
	pc.client.Close()
	if pc.upstream != nil {
		pc.upstream.Close()
	}
	delete(p.conns, pc)
}

// cut cuts the links from each of froms to each of tos (but not a
// member's link to itself) and closes their connections.
func (p *netProxy) cut(froms, tos []node.NodeID, mode cutMode) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, f := range froms {
		for _, to := range tos {
			if f != to {
				p.cuts[link{f, to}] = mode
			}
		}
	}
	for pc := range p.conns {
		switch m, cut := p.cuts[pc.l]; {
		case !cut || pc.held:
		case m == cutStall:
			p.stats.stalled++
		default:
			p.stats.closedByCut++
			p.closeLocked(pc)
		}
	}
}

// cutBoth cuts every link between a member of a and a member of b, both
// ways.
func (p *netProxy) cutBoth(a, b []node.NodeID, mode cutMode) {
	p.cut(a, b, mode)
	p.cut(b, a, mode)
}

// heal restores every link, lets stalled connections go on, and closes
// the connections held unanswered, so that their dialers try again.
func (p *netProxy) heal() {
	p.mu.Lock()
	defer p.mu.Unlock()
	clear(p.cuts)
	p.heals.Broadcast()
	for pc := range p.conns {
		if pc.held {
			p.closeLocked(pc)
		}
	}
}

// cutLinks describes the links cut, for the log.
func (p *netProxy) cutLinks() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var ls []string
	for l := range p.cuts {
		ls = append(ls, fmt.Sprintf("%d->%d", l.from, l.to))
	}
	slices.Sort(ls)
	return fmt.Sprint(ls)
}

func (p *netProxy) statistics() proxyStats {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stats
}

// check fails the test if a connection's hello could not be read: the
// members' transports send nothing else first.
func (p *netProxy) check() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, e := range p.errs {
		p.t.Error(e)
	}
	p.errs = nil
}

func (p *netProxy) close() {
	p.mu.Lock()
	p.closed = true
	for _, ln := range p.lns {
		ln.Close()
	}
	for pc := range p.conns {
		p.closeLocked(pc)
	}
	p.mu.Unlock()
	p.wg.Wait()
}

// The handshake's hello, laid out as in transport/handshake.go: a frame
// (uint32 big-endian length, then version byte 0) whose body is the
// msgpack array [magic "stepraft", cluster, from, to, min_version,
// max_version, kind]. The listener answers with a frame holding
// [status, version, from, reason].
type helloMsg struct {
	cluster, from, to uint64
	minVersion        uint8
	maxVersion        uint8
	kind              uint8 // 1: messages, 2: a snapshot
}

const (
	maxHelloFrameBytes = 1 << 10 // the listener's bound on a handshake frame
	statusWrongCluster = 2       // the reply's status for another cluster's hello
)

func appendMsgpackUint(b []byte, v uint64) []byte {
	switch {
	case v <= 0x7f:
		return append(b, byte(v))
	case v <= 0xff:
		return append(b, 0xcc, byte(v))
	case v <= 0xffff:
		return binary.BigEndian.AppendUint16(append(b, 0xcd), uint16(v))
	case v <= 0xffffffff:
		return binary.BigEndian.AppendUint32(append(b, 0xce), uint32(v))
	}
	return binary.BigEndian.AppendUint64(append(b, 0xcf), v)
}

// msgpackUint reads an unsigned integer in any of its forms.
func msgpackUint(b []byte) (uint64, []byte, error) {
	if len(b) == 0 {
		return 0, nil, io.ErrUnexpectedEOF
	}
	c := b[0]
	if c <= 0x7f {
		return uint64(c), b[1:], nil
	}
	size := map[byte]int{0xcc: 1, 0xcd: 2, 0xce: 4, 0xcf: 8}[c]
	if size == 0 || len(b) < 1+size {
		return 0, nil, fmt.Errorf("not a msgpack uint: %#x", c)
	}
	var v uint64
	for _, x := range b[1 : 1+size] {
		v = v<<8 | uint64(x)
	}
	return v, b[1+size:], nil
}

// msgpackBin8 reads a bin of at most 255 bytes.
func msgpackBin8(b []byte) ([]byte, []byte, error) {
	if len(b) < 2 || b[0] != 0xc4 || len(b) < 2+int(b[1]) {
		return nil, nil, errors.New("not a msgpack bin8")
	}
	return b[2 : 2+int(b[1])], b[2+int(b[1]):], nil
}

// appendHelloFrame appends the frame of h.
func appendHelloFrame(dst []byte, h helloMsg) []byte {
	start := len(dst)
	dst = append(dst, 0, 0, 0, 0, 0, 0x97, 0xc4, 8)
	dst = append(dst, "stepraft"...)
	for _, v := range []uint64{h.cluster, h.from, h.to, uint64(h.minVersion), uint64(h.maxVersion), uint64(h.kind)} {
		dst = appendMsgpackUint(dst, v)
	}
	binary.BigEndian.PutUint32(dst[start:], uint32(len(dst)-start-4))
	return dst
}

// readHandshakeFrame reads one handshake frame and returns it whole and
// its msgpack array's elements' bytes (after the array header).
func readHandshakeFrame(r io.Reader) (frame, fields []byte, n int, err error) {
	var hdr [5]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, nil, 0, err
	}
	size := binary.BigEndian.Uint32(hdr[:4])
	if size < 2 || size > maxHelloFrameBytes || hdr[4] != 0 {
		return nil, nil, 0, fmt.Errorf("not a handshake frame: length %d, version %d", size, hdr[4])
	}
	frame = make([]byte, 4+size)
	copy(frame, hdr[:])
	if _, err := io.ReadFull(r, frame[5:]); err != nil {
		return nil, nil, 0, err
	}
	body := frame[5:]
	if body[0]&0xf0 != 0x90 {
		return nil, nil, 0, fmt.Errorf("handshake body starts with %#x, not a fixarray", body[0])
	}
	return frame, body[1:], int(body[0] & 0x0f), nil
}

// readHelloFrame reads a hello; it returns the frame's bytes too, to
// forward them.
func readHelloFrame(r io.Reader) ([]byte, helloMsg, error) {
	var h helloMsg
	frame, b, n, err := readHandshakeFrame(r)
	if err != nil {
		return nil, h, err
	}
	if n < 7 {
		return nil, h, fmt.Errorf("hello of %d fields", n)
	}
	magic, b, err := msgpackBin8(b)
	if err != nil || string(magic) != "stepraft" {
		return nil, h, fmt.Errorf("hello without the magic: %v", err)
	}
	var f [6]uint64
	for i := range f {
		if f[i], b, err = msgpackUint(b); err != nil {
			return nil, h, fmt.Errorf("hello field %d: %w", i+1, err)
		}
	}
	h = helloMsg{cluster: f[0], from: f[1], to: f[2], minVersion: uint8(f[3]), maxVersion: uint8(f[4]), kind: uint8(f[5])}
	return frame, h, nil
}

// readReply reads the listener's answer to a hello: its status and
// reason.
func readReply(r io.Reader) (status uint64, reason string, err error) {
	_, b, n, err := readHandshakeFrame(r)
	if err != nil {
		return 0, "", err
	}
	if n < 4 {
		return 0, "", fmt.Errorf("reply of %d fields", n)
	}
	if status, b, err = msgpackUint(b); err != nil {
		return 0, "", err
	}
	for range 2 { // version, from
		if _, b, err = msgpackUint(b); err != nil {
			return 0, "", err
		}
	}
	if len(b) > 0 && b[0] == 0xc0 { // nil: no reason
		return status, "", nil
	}
	text, _, err := msgpackBin8(b)
	return status, string(text), err
}
