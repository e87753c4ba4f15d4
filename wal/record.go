package wal

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"math"

	"github.com/stepraft/stepraft/core"
)

// A record is one raft entry as stored in a tidwall/wal entry. Format
// version 2, written since the second release:
//
//	byte    format version (recordVersion)
//	uint32  CRC32C (Castagnoli), big endian, of the version byte and
//	        everything after the checksum
//	uvarint index
//	uvarint term
//	byte    type (1 normal, 2 conf change)
//	...     data: the rest of the tidwall/wal entry, which frames its length
//
// Version 1, still read (logs written before keep opening), had the same
// first five bytes, then a msgpack array of 4: index (uint), term (uint),
// type (uint), data (bin).
//
// Both are written and read by hand: every length is checked against the
// bytes left before anything is allocated, and only the shortest forms
// that the encoder writes are accepted, so one entry has one encoding per
// version.

const (
	recordVersion   = 2 // what appendRecord writes
	recordVersionV1 = 1 // read only
)

// recordOverhead is the most bytes a record adds to its data.
const recordOverhead = 1 + 4 + binary.MaxVarintLen64 + binary.MaxVarintLen64 + 1

// recordMinSize is the size of the smallest record of the current format:
// one-byte index and term, no data.
const recordMinSize = 1 + 4 + 1 + 1 + 1

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// ErrCorrupt is wrapped by every error about damaged data on disk.
var ErrCorrupt = errors.New("wal: corrupt")

// errUnverified marks a record that is short or fails its checksum: what a
// torn write leaves behind (as opposed to a record that verifies but says
// something impossible).
var errUnverified = errors.New("unverified")

// appendRecord appends e's record to dst.
func appendRecord(dst []byte, e *core.Entry) []byte {
	start := len(dst)
	dst = append(dst, recordVersion, 0, 0, 0, 0)
	dst = binary.AppendUvarint(dst, uint64(e.Index))
	dst = binary.AppendUvarint(dst, uint64(e.Term))
	dst = append(dst, byte(e.Type))
	dst = append(dst, e.Data...)
	binary.BigEndian.PutUint32(dst[start+1:], recordCRC(dst[start:]))
	return dst
}

// recordCRC is the checksum of a record: its version byte and payload.
func recordCRC(rec []byte) uint32 {
	seed := crcAfterVersion
	if rec[0] != recordVersion {
		seed = crc32.Update(0, castagnoli, rec[:1])
	}
	return crc32.Update(seed, castagnoli, rec[5:])
}

// crcAfterVersion is the checksum state after the current version byte:
// one call per record instead of two.
var crcAfterVersion = crc32.Update(0, castagnoli, []byte{recordVersion})

// decodeRecord decodes a record of either format version. The entry's Data
// is a copy when copyData, and otherwise aliases rec.
func decodeRecord(rec []byte, copyData bool) (core.Entry, error) {
	bad := func(format string, args ...any) (core.Entry, error) {
		return core.Entry{}, fmt.Errorf("%w: record: %w", ErrCorrupt, fmt.Errorf(format, args...))
	}
	if len(rec) < 6 {
		return bad("%d bytes, too short (%w)", len(rec), errUnverified)
	}
	if got, want := recordCRC(rec), binary.BigEndian.Uint32(rec[1:]); got != want {
		return bad("checksum %08x, want %08x (%w)", got, want, errUnverified)
	}
	var index, term, typ uint64
	var data []byte
	d := decoder{b: rec[5:]}
	switch rec[0] {
	case recordVersion:
		index, term = d.uvarint(), d.uvarint()
		typ = uint64(d.byte())
		data = d.b
		d.b = nil
	case recordVersionV1:
		if d.byte() != 0x94 {
			return bad("not an array of 4")
		}
		index, term, typ = d.uint(), d.uint(), d.uint()
		data = d.bin()
	default:
		return bad("unknown format version %d", rec[0])
	}
	switch {
	case d.err != nil:
		return bad("%v", d.err)
	case len(d.b) != 0:
		return bad("%d trailing bytes", len(d.b))
	case index == 0 || term == 0:
		return bad("index %d term %d", index, term)
	case typ != uint64(core.EntryNormal) && typ != uint64(core.EntryConfChange):
		return bad("unknown entry type %d", typ)
	}
	e := core.Entry{Index: core.Index(index), Term: core.Term(term), Type: core.EntryType(typ)}
	if len(data) > 0 {
		if copyData {
			e.Data = append([]byte(nil), data...)
		} else {
			e.Data = data
		}
	}
	return e, nil
}

// decoder reads the fields of a record from b; the first error sticks.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) fail(format string, args ...any) {
	if d.err == nil {
		d.err = fmt.Errorf(format, args...)
	}
	d.b = nil
}

func (d *decoder) byte() byte {
	if len(d.b) < 1 {
		d.fail("truncated")
		return 0
	}
	c := d.b[0]
	d.b = d.b[1:]
	return c
}

func (d *decoder) take(n int) []byte {
	if n < 0 || len(d.b) < n {
		d.fail("truncated: %d bytes declared, %d left", n, len(d.b))
		return nil
	}
	p := d.b[:n:n]
	d.b = d.b[n:]
	return p
}

// uvarint reads an unsigned varint in its shortest form.
func (d *decoder) uvarint() uint64 {
	x, n := binary.Uvarint(d.b)
	switch {
	case n == 0:
		d.fail("truncated")
		return 0
	case n < 0:
		d.fail("varint overflows 64 bits")
		return 0
	case n > 1 && d.b[n-1] == 0:
		d.fail("varint %d not in its shortest form", x)
		return 0
	}
	d.b = d.b[n:]
	return x
}

// uint reads a msgpack unsigned integer in its shortest form.
func (d *decoder) uint() uint64 {
	c := d.byte()
	var x, min uint64
	switch {
	case c <= 0x7f:
		return uint64(c)
	case c == 0xcc:
		p := d.take(1)
		if p != nil {
			x, min = uint64(p[0]), 0x80
		}
	case c == 0xcd:
		if p := d.take(2); p != nil {
			x, min = uint64(binary.BigEndian.Uint16(p)), math.MaxUint8+1
		}
	case c == 0xce:
		if p := d.take(4); p != nil {
			x, min = uint64(binary.BigEndian.Uint32(p)), math.MaxUint16+1
		}
	case c == 0xcf:
		if p := d.take(8); p != nil {
			x, min = binary.BigEndian.Uint64(p), math.MaxUint32+1
		}
	default:
		d.fail("not an unsigned integer: 0x%02x", c)
	}
	if d.err == nil && x < min {
		d.fail("integer %d not in its shortest form", x)
	}
	return x
}

// bin reads a msgpack bin in its shortest form, without copying.
func (d *decoder) bin() []byte {
	c := d.byte()
	var n, min int
	switch c {
	case 0xc4:
		if p := d.take(1); p != nil {
			n = int(p[0])
		}
	case 0xc5:
		if p := d.take(2); p != nil {
			n, min = int(binary.BigEndian.Uint16(p)), math.MaxUint8+1
		}
	case 0xc6:
		if p := d.take(4); p != nil {
			n, min = int(binary.BigEndian.Uint32(p)), math.MaxUint16+1
		}
	default:
		d.fail("not a bin: 0x%02x", c)
	}
	if d.err != nil {
		return nil
	}
	if n < min {
		d.fail("bin length %d not in its shortest form", n)
		return nil
	}
	return d.take(n)
}
