package transport

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"

	"github.com/stepraft/stepraft/core"
)

// Wire layout, version 1.
//
// A frame is
//
//	uint32 length (big endian) | uint8 wire version | one msgpack value
//
// where length counts the version byte and the msgpack value, so it is
// always at least 1. The value of a message frame is a msgpack array whose
// fields come in this fixed order:
//
//	[type, to, from, term, logterm, index, commit, reject, rejecthint,
//	 context, entries, snapshot]
//
//	entries   nil | array of entry
//	entry     [term, index, type, data]
//	snapshot  nil | [index, term, confstate, data]
//	confstate [voters, learners, voters_outgoing, learners_next, autoleave]
//	voters... nil | array of uint
//	context, data  nil | bin
//
// Integers are msgpack unsigned integers in their shortest form (a decoder
// also takes non-negative signed forms); nil and empty slices are kept
// apart. A decoder reads the fields it knows and skips any further fields
// at the end of an array, so a later version may append fields without
// breaking this one; it never accepts fewer fields than listed here.
//
// The decoder is written by hand because reflection decoding in msgpack
// v5.4 allocates whatever length a hostile header declares (see
// notes/dependencies.md). Here every declared array or bin length is
// checked against the bytes left in the body before anything is allocated,
// so decoding a body of n bytes allocates O(n) bytes at most.

// Version1 is the wire version of the layout above, the only one this
// package speaks.
const Version1 uint8 = 1

// frameHeaderBytes is the length prefix plus the version byte.
const frameHeaderBytes = 5

// Minimum encoded sizes, used to refuse a declared array length that the
// bytes left in the body cannot hold, before allocating for it.
const (
	messageFields   = 12
	entryFields     = 4
	snapshotFields  = 4
	confStateFields = 5
	// minEntryBytes is the smallest entry: a fixarray header and four
	// one-byte fields.
	minEntryBytes = 1 + entryFields
	// maxSkipDepth bounds the nesting of unknown values skipped, so that
	// skipping cannot exhaust the stack.
	maxSkipDepth = 32
)

var (
	// ErrFrameTooLarge is returned by ReadFrame for a frame whose declared
	// length exceeds its maximum, and by AppendFrame for a message whose
	// frame would not fit the uint32 length prefix.
	ErrFrameTooLarge = errors.New("transport: frame too large")
	// ErrMalformed is returned for a frame or message body that does not
	// follow the wire layout: truncated, wrong types, lengths that overrun
	// the body, integers out of range, trailing bytes.
	ErrMalformed = errors.New("transport: malformed message")
	// ErrVersion is returned by AppendFrame for a wire version this package
	// cannot encode.
	ErrVersion = errors.New("transport: unsupported wire version")
)

// AppendFrame appends to dst the frame of m in wire version version and
// returns the extended slice; pass buf[:0] to reuse a buffer's capacity.
// On error dst is returned unchanged.
func AppendFrame(dst []byte, version uint8, m *core.Message) ([]byte, error) {
	if version != Version1 {
		return dst, fmt.Errorf("%w: %d", ErrVersion, version)
	}
	start := len(dst)
	dst = append(dst, 0, 0, 0, 0, version)
	dst = appendMessage(dst, m)
	if uint64(len(dst)-start-4) > math.MaxUint32 {
		return dst[:start], fmt.Errorf("%w: %d bytes", ErrFrameTooLarge, len(dst)-start-4)
	}
	return putFrameLen(dst, start), nil
}

// putFrameLen writes the length prefix of the frame that starts at
// dst[start] and runs to the end of dst; the frame is known to fit.
func putFrameLen(dst []byte, start int) []byte {
	binary.BigEndian.PutUint32(dst[start:], uint32(len(dst)-start-4))
	return dst
}

// frameGrowBytes is how much of a frame's body ReadFrame reads before it
// grows its buffer further: a peer that declares a large frame and sends
// little makes it allocate about what was sent, not what was declared.
const frameGrowBytes = 1 << 20

// ReadFrame reads one frame from r and returns its version and body. The
// declared length is checked against maxFrame (the largest length accepted,
// version byte included) before any allocation or read of the body, and a
// body longer than a MiB is read into a buffer that grows as the bytes
// arrive. The body is read into buf when its capacity suffices, so it is
// valid only until buf is reused. A clean end of stream before a frame
// gives io.EOF; one inside a frame gives io.ErrUnexpectedEOF.
func ReadFrame(r io.Reader, buf []byte, maxFrame int) (version uint8, body []byte, err error) {
	if maxFrame < 1 {
		return 0, nil, fmt.Errorf("transport: maxFrame %d < 1", maxFrame)
	}
	if cap(buf) < frameHeaderBytes {
		buf = make([]byte, frameHeaderBytes, 64)
	}
	hdr := buf[:frameHeaderBytes] // the body may overwrite it later
	if _, err := io.ReadFull(r, hdr); err != nil {
		return 0, nil, err // io.EOF only when no byte was read
	}
	n := binary.BigEndian.Uint32(hdr)
	version = hdr[4]
	if n == 0 {
		return 0, nil, fmt.Errorf("%w: zero frame length", ErrMalformed)
	}
	if uint64(n) > uint64(maxFrame) {
		return 0, nil, fmt.Errorf("%w: %d bytes > max %d", ErrFrameTooLarge, n, maxFrame)
	}
	size := int(n - 1)
	if cap(buf) >= size {
		body = buf[:size]
		_, err = io.ReadFull(r, body)
	} else {
		body, err = readGrowing(r, buf[:0], size)
	}
	if err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return 0, nil, err
	}
	return version, body, nil
}

// readGrowing appends size bytes from r to buf, growing buf by at most
// frameGrowBytes beyond what has arrived.
func readGrowing(r io.Reader, buf []byte, size int) ([]byte, error) {
	for len(buf) < size {
		want := min(size, len(buf)+frameGrowBytes)
		if cap(buf) < want {
			nb := make([]byte, len(buf), min(size, max(want, 2*cap(buf))))
			copy(nb, buf)
			buf = nb
		}
		k, err := io.ReadFull(r, buf[len(buf):want])
		buf = buf[:len(buf)+k]
		if err != nil {
			return nil, err
		}
	}
	return buf, nil
}

// DecodeMessage decodes a version 1 message body, as returned by ReadFrame.
// The []byte fields of the result never alias body: they are carved, with
// their capacity clipped, out of one fresh allocation no larger than body.
// DecodeMessage checks only the encoding; whether the message makes sense
// (its type, its terms) is for core to judge.
func DecodeMessage(body []byte) (core.Message, error) {
	d := decoder{b: body}
	m, err := d.message()
	if err == nil && len(d.b) != 0 {
		err = fmt.Errorf("%d trailing bytes", len(d.b))
	}
	if err != nil {
		return core.Message{}, &pathError{name: "transport: malformed message", i: -1, err: err}
	}
	return m, nil
}

// pathError says where in a message decoding failed. It is formatted only
// when printed, so that refusing hostile input costs a few small
// allocations, not a string per nesting level.
type pathError struct {
	name string // field or array name; "" for an unnamed element
	i    int    // element index, or -1
	err  error
}

func at(name string, i int, err error) error { return &pathError{name: name, i: i, err: err} }

func (e *pathError) Error() string {
	s := e.name
	if e.i >= 0 {
		s = strings.TrimSpace(s + " " + strconv.Itoa(e.i))
	}
	return s + ": " + e.err.Error()
}

func (e *pathError) Unwrap() error { return e.err }

// Is makes every decoding error match ErrMalformed.
func (e *pathError) Is(target error) bool { return target == ErrMalformed }

// msgpack format bytes used here (https://github.com/msgpack/msgpack/blob/master/spec.md).
const (
	mpNil      = 0xc0
	mpNeverUse = 0xc1
	mpFalse    = 0xc2
	mpTrue     = 0xc3
	mpBin8     = 0xc4
	mpBin16    = 0xc5
	mpBin32    = 0xc6
	mpExt8     = 0xc7
	mpExt16    = 0xc8
	mpExt32    = 0xc9
	mpFloat32  = 0xca
	mpFloat64  = 0xcb
	mpUint8    = 0xcc
	mpUint16   = 0xcd
	mpUint32   = 0xce
	mpUint64   = 0xcf
	mpInt8     = 0xd0
	mpInt16    = 0xd1
	mpInt32    = 0xd2
	mpInt64    = 0xd3
	mpFixExt1  = 0xd4
	mpFixExt16 = 0xd8
	mpStr8     = 0xd9
	mpStr16    = 0xda
	mpStr32    = 0xdb
	mpArray16  = 0xdc
	mpArray32  = 0xdd
	mpMap16    = 0xde
	mpMap32    = 0xdf
)

func appendMessage(b []byte, m *core.Message) []byte {
	b = appendArrayLen(b, messageFields)
	b = appendUint(b, uint64(m.Type))
	b = appendUint(b, uint64(m.To))
	b = appendUint(b, uint64(m.From))
	b = appendUint(b, uint64(m.Term))
	b = appendUint(b, uint64(m.LogTerm))
	b = appendUint(b, uint64(m.Index))
	b = appendUint(b, uint64(m.Commit))
	b = appendBool(b, m.Reject)
	b = appendUint(b, uint64(m.RejectHint))
	b = appendBytes(b, m.Context)
	if m.Entries == nil {
		b = append(b, mpNil)
	} else {
		b = appendArrayLen(b, len(m.Entries))
		for i := range m.Entries {
			e := &m.Entries[i]
			b = appendArrayLen(b, entryFields)
			b = appendUint(b, uint64(e.Term))
			b = appendUint(b, uint64(e.Index))
			b = appendUint(b, uint64(e.Type))
			b = appendBytes(b, e.Data)
		}
	}
	if m.Snapshot == nil {
		return append(b, mpNil)
	}
	s := m.Snapshot
	b = appendArrayLen(b, snapshotFields)
	b = appendUint(b, uint64(s.Meta.Index))
	b = appendUint(b, uint64(s.Meta.Term))
	cs := &s.Meta.ConfState
	b = appendArrayLen(b, confStateFields)
	b = appendIDs(b, cs.Voters)
	b = appendIDs(b, cs.Learners)
	b = appendIDs(b, cs.VotersOutgoing)
	b = appendIDs(b, cs.LearnersNext)
	b = appendBool(b, cs.AutoLeave)
	return appendBytes(b, s.Data)
}

func appendIDs(b []byte, ids []core.NodeID) []byte {
	if ids == nil {
		return append(b, mpNil)
	}
	b = appendArrayLen(b, len(ids))
	for _, id := range ids {
		b = appendUint(b, uint64(id))
	}
	return b
}

// decoder reads msgpack values from the front of b. Every method checks a
// declared length against len(b) before it allocates (msgpack.go).
type decoder struct {
	b []byte
	// copied is a copy of the body from the first non-empty bin on,
	// which the []byte results point into (msgpack.go, bytes).
	copied []byte
}

func (d *decoder) message() (m core.Message, err error) {
	n, err := d.arrayLen(messageFields, 1)
	if err != nil {
		return m, at("message", -1, err)
	}
	var typ uint64
	if typ, err = d.uint(math.MaxUint8); err != nil {
		return m, at("type", -1, err)
	}
	m.Type = core.MessageType(typ)
	for _, f := range [...]struct {
		name string
		p    *uint64
	}{
		{"to", (*uint64)(&m.To)},
		{"from", (*uint64)(&m.From)},
		{"term", (*uint64)(&m.Term)},
		{"logterm", (*uint64)(&m.LogTerm)},
		{"index", (*uint64)(&m.Index)},
		{"commit", (*uint64)(&m.Commit)},
	} {
		if *f.p, err = d.uint(math.MaxUint64); err != nil {
			return m, at(f.name, -1, err)
		}
	}
	if m.Reject, err = d.bool(); err != nil {
		return m, at("reject", -1, err)
	}
	var hint uint64
	if hint, err = d.uint(math.MaxUint64); err != nil {
		return m, at("rejecthint", -1, err)
	}
	m.RejectHint = core.Index(hint)
	if m.Context, err = d.bytes(); err != nil {
		return m, at("context", -1, err)
	}
	if m.Entries, err = d.entries(); err != nil {
		return m, err
	}
	if m.Snapshot, err = d.snapshot(); err != nil {
		return m, err
	}
	return m, d.skipN(n-messageFields, "message")
}

func (d *decoder) entries() ([]core.Entry, error) {
	if d.isNil() {
		return nil, nil
	}
	n, err := d.arrayLen(0, minEntryBytes)
	if err != nil {
		return nil, at("entries", -1, err)
	}
	es := make([]core.Entry, n)
	for i := range es {
		if err := d.entry(&es[i]); err != nil {
			return nil, at("entry", i, err)
		}
	}
	return es, nil
}

func (d *decoder) entry(e *core.Entry) error {
	n, err := d.arrayLen(entryFields, 1)
	if err != nil {
		return err
	}
	var term, index, typ uint64
	if term, err = d.uint(math.MaxUint64); err != nil {
		return at("term", -1, err)
	}
	if index, err = d.uint(math.MaxUint64); err != nil {
		return at("index", -1, err)
	}
	if typ, err = d.uint(math.MaxUint8); err != nil {
		return at("type", -1, err)
	}
	if e.Data, err = d.bytes(); err != nil {
		return at("data", -1, err)
	}
	e.Term, e.Index, e.Type = core.Term(term), core.Index(index), core.EntryType(typ)
	return d.skipN(n-entryFields, "entry")
}

func (d *decoder) snapshot() (*core.Snapshot, error) {
	if d.isNil() {
		return nil, nil
	}
	n, err := d.arrayLen(snapshotFields, 1)
	if err != nil {
		return nil, at("snapshot", -1, err)
	}
	s := &core.Snapshot{}
	var index, term uint64
	if index, err = d.uint(math.MaxUint64); err != nil {
		return nil, at("snapshot index", -1, err)
	}
	if term, err = d.uint(math.MaxUint64); err != nil {
		return nil, at("snapshot term", -1, err)
	}
	s.Meta.Index, s.Meta.Term = core.Index(index), core.Term(term)
	if err := d.confState(&s.Meta.ConfState); err != nil {
		return nil, at("confstate", -1, err)
	}
	if s.Data, err = d.bytes(); err != nil {
		return nil, at("snapshot data", -1, err)
	}
	return s, d.skipN(n-snapshotFields, "snapshot")
}

func (d *decoder) confState(cs *core.ConfState) error {
	n, err := d.arrayLen(confStateFields, 1)
	if err != nil {
		return err
	}
	for _, f := range [...]struct {
		name string
		p    *[]core.NodeID
	}{
		{"voters", &cs.Voters},
		{"learners", &cs.Learners},
		{"voters_outgoing", &cs.VotersOutgoing},
		{"learners_next", &cs.LearnersNext},
	} {
		if *f.p, err = d.ids(); err != nil {
			return at(f.name, -1, err)
		}
	}
	if cs.AutoLeave, err = d.bool(); err != nil {
		return at("autoleave", -1, err)
	}
	return d.skipN(n-confStateFields, "confstate")
}

func (d *decoder) ids() ([]core.NodeID, error) {
	if d.isNil() {
		return nil, nil
	}
	n, err := d.arrayLen(0, 1)
	if err != nil {
		return nil, err
	}
	ids := make([]core.NodeID, n)
	for i := range ids {
		v, err := d.uint(math.MaxUint64)
		if err != nil {
			return nil, at("", i, err)
		}
		ids[i] = core.NodeID(v)
	}
	return ids, nil
}

// isNil consumes a msgpack nil if one is next.
