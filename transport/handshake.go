package transport

import (
	"errors"
	"fmt"
	"io"
	"math"

	"github.com/stepraft/stepraft/core"
)

// The handshake opens every connection, before any message. Its frames use
// the frame layout with version byte handshakeVersion (0), which no message
// frame uses, so that either side can tell a handshake from a message
// whatever wire versions they speak.
//
// The dialer sends a hello:
//
//	[magic, cluster, from, to, min_version, max_version, kind]
//
// and the listener answers:
//
//	[status, version, from, reason]
//
// where version is the highest wire version both speak (when status is
// statusOK) and reason a short text for the dialer's log. Both arrays may
// grow at the end in later versions; decoders skip what they do not know.

const (
	handshakeVersion uint8 = 0
	// maxHandshakeFrame bounds a handshake frame (version byte included):
	// both are a few dozen bytes, with room for later fields.
	maxHandshakeFrame = 1 << 10
	helloFields       = 7
	replyFields       = 4
	// maxReasonBytes bounds the reason text in a reply.
	maxReasonBytes = 256
)

// handshakeMagic names the protocol, so that a stray client (an HTTP
// request, a port scanner) is refused with a clear log line.
var handshakeMagic = []byte("stepraft")

// minVersion and maxVersion are the wire versions this package speaks.
const (
	minVersion = Version1
	maxVersion = Version1
)

// connKind says what a connection carries.
type connKind uint8

const (
	// kindMessages: message frames from the dialer to the listener.
	kindMessages connKind = iota + 1
	// kindSnapshot: one snapshot stream from the dialer, then one status
	// frame back.
	kindSnapshot
)

// hello is the dialer's half of the handshake.
type hello struct {
	Cluster    uint64
	From, To   core.NodeID
	MinVersion uint8
	MaxVersion uint8
	Kind       connKind
}

// status is the listener's verdict on a hello.
type status uint8

const (
	statusOK status = iota + 1
	statusWrongCluster
	statusWrongNode   // the hello's To is not the listener
	statusUnknownNode // the listener does not know the dialer
	statusRemoved     // the dialer was removed from the cluster
	statusNoVersion   // no wire version in common
	statusBadIdentity // the TLS certificate does not name the dialer's ID
	statusBadKind     // unknown connection kind
	statusBusy        // too many connections of this kind
	statusLast        = statusBusy
)

func (s status) String() string {
	switch s {
	case statusOK:
		return "ok"
	case statusWrongCluster:
		return "another cluster"
	case statusWrongNode:
		return "wrong node"
	case statusUnknownNode:
		return "unknown node"
	case statusRemoved:
		return "removed from the cluster"
	case statusNoVersion:
		return "no common wire version"
	case statusBadIdentity:
		return "certificate does not match node ID"
	case statusBadKind:
		return "unknown connection kind"
	case statusBusy:
		return "busy"
	}
	return fmt.Sprintf("status(%d)", uint8(s))
}

// reply is the listener's half of the handshake.
type reply struct {
	Status  status
	Version uint8
	From    core.NodeID
	Reason  string
}

func appendHello(dst []byte, h *hello) []byte {
	start := len(dst)
	dst = append(dst, 0, 0, 0, 0, handshakeVersion)
	dst = appendArrayLen(dst, helloFields)
	dst = appendBytes(dst, handshakeMagic)
	dst = appendUint(dst, h.Cluster)
	dst = appendUint(dst, uint64(h.From))
	dst = appendUint(dst, uint64(h.To))
	dst = appendUint(dst, uint64(h.MinVersion))
	dst = appendUint(dst, uint64(h.MaxVersion))
	dst = appendUint(dst, uint64(h.Kind))
	return putFrameLen(dst, start)
}

func appendReply(dst []byte, r *reply) []byte {
	start := len(dst)
	dst = append(dst, 0, 0, 0, 0, handshakeVersion)
	dst = appendArrayLen(dst, replyFields)
	dst = appendUint(dst, uint64(r.Status))
	dst = appendUint(dst, uint64(r.Version))
	dst = appendUint(dst, uint64(r.From))
	return putFrameLen(appendBytes(dst, []byte(clipReason(r.Reason))), start)
}

// readHandshake reads one handshake frame and returns its body.
func readHandshake(r io.Reader) ([]byte, error) {
	v, body, err := ReadFrame(r, nil, maxHandshakeFrame)
	if err != nil {
		return nil, err
	}
	if v != handshakeVersion {
		return nil, fmt.Errorf("%w: handshake frame has version %d", ErrMalformed, v)
	}
	return body, nil
}

// decodeHello decodes a hello body.
func decodeHello(body []byte) (hello, error) {
	var h hello
	d := decoder{b: body}
	n, err := d.arrayLen(helloFields, 1)
	if err != nil {
		return h, malformed("hello", err)
	}
	magic, err := d.bytes()
	if err != nil || string(magic) != string(handshakeMagic) {
		return h, malformed("hello", errors.New("not a stepraft handshake"))
	}
	var f [6]uint64
	for i, max := range [6]uint64{math.MaxUint64, math.MaxUint64, math.MaxUint64, math.MaxUint8, math.MaxUint8, math.MaxUint8} {
		if f[i], err = d.uint(max); err != nil {
			return h, malformed("hello", err)
		}
	}
	if err := d.skipN(n-helloFields, "hello"); err != nil {
		return h, malformed("hello", err)
	}
	if len(d.b) != 0 {
		return h, malformed("hello", fmt.Errorf("%d trailing bytes", len(d.b)))
	}
	h = hello{Cluster: f[0], From: core.NodeID(f[1]), To: core.NodeID(f[2]),
		MinVersion: uint8(f[3]), MaxVersion: uint8(f[4]), Kind: connKind(f[5])}
	if h.From == 0 || h.To == 0 || h.MinVersion == 0 || h.MinVersion > h.MaxVersion {
		return h, malformed("hello", fmt.Errorf("from %d to %d versions %d..%d", h.From, h.To, h.MinVersion, h.MaxVersion))
	}
	return h, nil
}

// decodeReply decodes a reply body.
func decodeReply(body []byte) (reply, error) {
	var r reply
	d := decoder{b: body}
	n, err := d.arrayLen(replyFields, 1)
	if err != nil {
		return r, malformed("handshake reply", err)
	}
	var f [3]uint64
	for i, max := range [3]uint64{math.MaxUint8, math.MaxUint8, math.MaxUint64} {
		if f[i], err = d.uint(max); err != nil {
			return r, malformed("handshake reply", err)
		}
	}
	reason, err := d.bytes()
	if err == nil && len(reason) > maxReasonBytes {
		err = fmt.Errorf("reason of %d bytes", len(reason))
	}
	if err == nil {
		err = d.skipN(n-replyFields, "handshake reply")
	}
	if err == nil && len(d.b) != 0 {
		err = fmt.Errorf("%d trailing bytes", len(d.b))
	}
	if err != nil {
		return r, malformed("handshake reply", err)
	}
	r = reply{Status: status(f[0]), Version: uint8(f[1]), From: core.NodeID(f[2]), Reason: string(reason)}
	if r.Status == 0 || r.Status > statusLast || (r.Status == statusOK && r.Version == 0) {
		return r, malformed("handshake reply", fmt.Errorf("status %d version %d", f[0], f[1]))
	}
	return r, nil
}

// commonVersion returns the highest wire version in both ranges, or 0.
func commonVersion(lo, hi uint8) uint8 {
	hi = min(hi, maxVersion)
	if hi < minVersion || hi < lo {
		return 0
	}
	return hi
}

// clipReason cuts a reason text to maxReasonBytes.
func clipReason(s string) string {
	if len(s) > maxReasonBytes {
		return s[:maxReasonBytes]
	}
	return s
}

func malformed(what string, err error) error {
	return fmt.Errorf("%w: %s: %w", ErrMalformed, what, err)
}
