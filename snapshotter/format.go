package snapshotter

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"math"
	"slices"

	"github.com/stepraft/stepraft/core"
)

// The snapshot file, format version 1. Every integer is big-endian.
//
//	offset   size  field
//	0        8     magic "STEPSNAP"
//	8        2     format version, uint16 (1)
//	10       4     header length H, uint32: the bytes of the fields below
//	14       H     header fields:
//	                 index uint64, term uint64
//	                 voters, learners, voters outgoing, learners next: each a
//	                   count uint32 followed by that many node IDs, uint64
//	                 auto leave, uint8 (0 or 1)
//	                 members: a count uint32, then for each member its ID
//	                   uint64, its address length uint16 and the address bytes
//	                 body length L, uint64
//	14+H     4     CRC32C (Castagnoli) of bytes [0, 14+H): magic to body length
//	18+H     L     body
//	18+H+L   4     CRC32C of the body
//
// A file is exactly 22+H+L bytes long; anything else is damage. The
// encoding of a Meta is unique (fixed-width integers, no optional fields),
// so whatever decodes encodes back to the same bytes.
const (
	magic         = "STEPSNAP"
	formatVersion = 1
	prefixLen     = 8 + 2 + 4 // magic, version, header length
	crcLen        = 4

	// maxHeaderBytes bounds H, so that reading a header never allocates
	// more than this, whatever the file says.
	maxHeaderBytes = 1 << 20
	// maxIDs bounds each of the four node ID lists of a ConfState.
	maxIDs = 1 << 16
	// maxMembers bounds Meta.Members.
	maxMembers = 1 << 16
	// maxAddrBytes bounds one member's address.
	maxAddrBytes = 1024
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Member is a member of the cluster and its address as the host knows it.
type Member struct {
	ID   core.NodeID
	Addr string
}

// Meta describes a snapshot: the log prefix it stands for, the
// configuration in force at its last entry, the members' addresses and the
// length of its body.
type Meta struct {
	// Index is the last log index the snapshot stands for; at least 1.
	Index core.Index
	// Term is the term of the entry at Index; at least 1.
	Term core.Term
	// ConfState is the configuration in force at Index. Each of its four
	// lists holds at most 65536 IDs.
	ConfState core.ConfState
	// Members are the addresses of the members as the host knows them, in
	// the order given: at most 65536, no ID zero, each address at most 1024
	// bytes. The snapshotter does not check them against ConfState.
	Members []Member
	// Size is the body length in bytes. Save and Pending.Commit set it;
	// it is ignored on input.
	Size int64
}

// clone returns a copy of m that shares no slice with it. Empty lists
// become nil, as decoding gives them.
func (m Meta) clone() Meta {
	c := m
	c.ConfState.Voters = cloneIDs(m.ConfState.Voters)
	c.ConfState.Learners = cloneIDs(m.ConfState.Learners)
	c.ConfState.VotersOutgoing = cloneIDs(m.ConfState.VotersOutgoing)
	c.ConfState.LearnersNext = cloneIDs(m.ConfState.LearnersNext)
	c.Members = nil
	if len(m.Members) > 0 {
		c.Members = slices.Clone(m.Members)
	}
	return c
}

func cloneIDs(ids []core.NodeID) []core.NodeID {
	if len(ids) == 0 {
		return nil
	}
	return slices.Clone(ids)
}

// validate reports the first rule m breaks: the rules every encoded header
// keeps, checked alike before encoding and after decoding.
func (m *Meta) validate() error {
	switch {
	case m.Index == 0:
		return errors.New("index 0 (a snapshot stands for at least one entry)")
	case m.Term == 0:
		return fmt.Errorf("term 0 at index %d", m.Index)
	case m.Size < 0:
		return fmt.Errorf("negative body length %d", m.Size)
	}
	cs := &m.ConfState
	for _, l := range []struct {
		name string
		n    int
	}{{"voters", len(cs.Voters)}, {"learners", len(cs.Learners)},
		{"voters outgoing", len(cs.VotersOutgoing)}, {"learners next", len(cs.LearnersNext)}} {
		if l.n > maxIDs {
			return fmt.Errorf("%d %s, more than %d", l.n, l.name, maxIDs)
		}
	}
	if len(m.Members) > maxMembers {
		return fmt.Errorf("%d members, more than %d", len(m.Members), maxMembers)
	}
	for i, mb := range m.Members {
		if mb.ID == core.None {
			return fmt.Errorf("member %d has ID 0", i)
		}
		if len(mb.Addr) > maxAddrBytes {
			return fmt.Errorf("member %d has an address of %d bytes, more than %d", mb.ID, len(mb.Addr), maxAddrBytes)
		}
	}
	return nil
}

// headerLen is the length of m's encoded header fields (H).
func headerLen(m *Meta) int {
	cs := &m.ConfState
	n := 8 + 8 + 4*4 + 8*(len(cs.Voters)+len(cs.Learners)+len(cs.VotersOutgoing)+len(cs.LearnersNext)) + 1 + 4 + 8
	for _, mb := range m.Members {
		n += 8 + 2 + len(mb.Addr)
	}
	return n
}

// encodeHeader returns the bytes of a file that precede the body: prefix,
// header fields and header CRC. Errors wrap ErrMeta.
func encodeHeader(m Meta) ([]byte, error) {
	if err := m.validate(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrMeta, err)
	}
	h := headerLen(&m)
	if h > maxHeaderBytes {
		return nil, fmt.Errorf("%w: header of %d bytes, more than %d", ErrMeta, h, maxHeaderBytes)
	}
	be := binary.BigEndian
	b := make([]byte, 0, prefixLen+h+crcLen)
	b = append(b, magic...)
	b = be.AppendUint16(b, formatVersion)
	b = be.AppendUint32(b, uint32(h))
	b = be.AppendUint64(b, uint64(m.Index))
	b = be.AppendUint64(b, uint64(m.Term))
	for _, ids := range [][]core.NodeID{m.ConfState.Voters, m.ConfState.Learners,
		m.ConfState.VotersOutgoing, m.ConfState.LearnersNext} {
		b = be.AppendUint32(b, uint32(len(ids)))
		for _, id := range ids {
			b = be.AppendUint64(b, uint64(id))
		}
	}
	autoLeave := byte(0)
	if m.ConfState.AutoLeave {
		autoLeave = 1
	}
	b = append(b, autoLeave)
	b = be.AppendUint32(b, uint32(len(m.Members)))
	for _, mb := range m.Members {
		b = be.AppendUint64(b, uint64(mb.ID))
		b = be.AppendUint16(b, uint16(len(mb.Addr)))
		b = append(b, mb.Addr...)
	}
	b = be.AppendUint64(b, uint64(m.Size))
	return be.AppendUint32(b, crc32.Checksum(b, castagnoli)), nil
}

// formatError is what the decoder finds wrong with a file's bytes: kind is
// ErrCorrupt or ErrVersion, what says the rest. The file layer adds the path.
type formatError struct {
	kind error
	what string
}

func (e *formatError) Error() string { return e.kind.Error() + ": " + e.what }
func (e *formatError) Unwrap() error { return e.kind }

func corruptf(format string, args ...any) error {
	return &formatError{kind: ErrCorrupt, what: fmt.Sprintf(format, args...)}
}

// decodePrefix checks the first prefixLen bytes of a file (magic, version,
// header length against its limit) and returns the header length H.
func decodePrefix(b []byte) (int, error) {
	if len(b) < prefixLen {
		return 0, corruptf("%d bytes, shorter than a header", len(b))
	}
	if string(b[:len(magic)]) != magic {
		return 0, corruptf("bad magic %q", b[:len(magic)])
	}
	if v := binary.BigEndian.Uint16(b[8:]); v != formatVersion {
		return 0, &formatError{kind: ErrVersion, what: fmt.Sprintf("version %d; this build reads version %d", v, formatVersion)}
	}
	h := binary.BigEndian.Uint32(b[10:])
	if h > maxHeaderBytes {
		return 0, corruptf("header length %d, more than %d", h, maxHeaderBytes)
	}
	return int(h), nil
}

// decodeHeader decodes the header at the start of b and returns it with
// the number of bytes it takes (prefix, fields and CRC); the body, if b
// holds any, follows. It allocates nothing before checking a declared
// length against its limit and against the bytes there are, so hostile
// bytes cost at most a small multiple of len(b). Errors are
// *formatError (ErrCorrupt or ErrVersion).
func decodeHeader(b []byte) (Meta, int, error) {
	h, err := decodePrefix(b)
	if err != nil {
		return Meta{}, 0, err
	}
	if h > len(b)-prefixLen-crcLen {
		return Meta{}, 0, corruptf("header of %d bytes runs past the end (%d bytes)", h, len(b))
	}
	end := prefixLen + h
	if want, got := binary.BigEndian.Uint32(b[end:]), crc32.Checksum(b[:end], castagnoli); want != got {
		return Meta{}, 0, corruptf("header CRC %#08x, stored %#08x", got, want)
	}
	m, err := decodeFields(b[prefixLen:end])
	if err != nil {
		return Meta{}, 0, err
	}
	return m, end + crcLen, nil
}

// decodeFields decodes the header fields (H bytes, all of them).
func decodeFields(b []byte) (Meta, error) {
	d := fieldDecoder{b: b}
	var m Meta
	m.Index = core.Index(d.u64())
	m.Term = core.Term(d.u64())
	m.ConfState.Voters = d.ids("voters")
	m.ConfState.Learners = d.ids("learners")
	m.ConfState.VotersOutgoing = d.ids("voters outgoing")
	m.ConfState.LearnersNext = d.ids("learners next")
	switch d.u8() {
	case 0:
	case 1:
		m.ConfState.AutoLeave = true
	default:
		d.fail("auto leave flag is neither 0 nor 1")
	}
	m.Members = d.members()
	size := d.u64()
	if size > math.MaxInt64 {
		d.fail(fmt.Sprintf("body length %d, more than %d", size, int64(math.MaxInt64)))
	}
	m.Size = int64(size)
	if d.err == nil && len(d.b) > 0 {
		d.fail(fmt.Sprintf("%d bytes after the last header field", len(d.b)))
	}
	if d.err != nil {
		return Meta{}, d.err
	}
	if err := m.validate(); err != nil {
		return Meta{}, corruptf("%v", err)
	}
	return m, nil
}

// fieldDecoder reads header fields from b. The first failure sticks: later
// reads return zero values and allocate nothing.
type fieldDecoder struct {
	b   []byte
	err error
}

func (d *fieldDecoder) fail(what string) {
	if d.err == nil {
		d.err = corruptf("%s", what)
	}
}

// take returns the next n bytes, or nil (and fails) if there are fewer.
func (d *fieldDecoder) take(n int, what string) []byte {
	if d.err != nil {
		return nil
	}
	if n > len(d.b) {
		d.fail(fmt.Sprintf("header ends inside %s", what))
		return nil
	}
	out := d.b[:n]
	d.b = d.b[n:]
	return out
}

func (d *fieldDecoder) u8() byte {
	if p := d.take(1, "a flag"); p != nil {
		return p[0]
	}
	return 0
}

func (d *fieldDecoder) u16() uint16 {
	if p := d.take(2, "a length"); p != nil {
		return binary.BigEndian.Uint16(p)
	}
	return 0
}

func (d *fieldDecoder) u32() uint32 {
	if p := d.take(4, "a count"); p != nil {
		return binary.BigEndian.Uint32(p)
	}
	return 0
}

func (d *fieldDecoder) u64() uint64 {
	if p := d.take(8, "an integer"); p != nil {
		return binary.BigEndian.Uint64(p)
	}
	return 0
}

// ids decodes a count and that many node IDs; an empty list is nil.
func (d *fieldDecoder) ids(what string) []core.NodeID {
	n := d.u32()
	if d.err != nil || n == 0 {
		return nil
	}
	if n > maxIDs || int(n) > len(d.b)/8 {
		d.fail(fmt.Sprintf("%d %s: more than the limit (%d) or the bytes left (%d)", n, what, maxIDs, len(d.b)))
		return nil
	}
	out := make([]core.NodeID, n)
	for i := range out {
		out[i] = core.NodeID(d.u64())
	}
	return out
}

// members decodes the member list; an empty list is nil.
func (d *fieldDecoder) members() []Member {
	n := d.u32()
	if d.err != nil || n == 0 {
		return nil
	}
	const minBytes = 8 + 2 // ID and address length
	if n > maxMembers || int(n) > len(d.b)/minBytes {
		d.fail(fmt.Sprintf("%d members: more than the limit (%d) or the bytes left (%d)", n, maxMembers, len(d.b)))
		return nil
	}
	out := make([]Member, n)
	for i := range out {
		out[i].ID = core.NodeID(d.u64())
		l := d.u16()
		if l > maxAddrBytes {
			d.fail(fmt.Sprintf("address of %d bytes, more than %d", l, maxAddrBytes))
		}
		out[i].Addr = string(d.take(int(l), "an address"))
		if d.err != nil {
			return nil
		}
	}
	return out
}
