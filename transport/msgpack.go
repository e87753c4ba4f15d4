package transport

import (
	"encoding/binary"
	"fmt"
	"io"
	"math"
)

// The msgpack forms the wire codec uses, written and read by hand: every
// length a decoder meets is checked against the bytes left before
// anything is allocated.

func appendUint(b []byte, v uint64) []byte {
	switch {
	case v <= 0x7f:
		return append(b, byte(v))
	case v <= math.MaxUint8:
		return append(b, mpUint8, byte(v))
	case v <= math.MaxUint16:
		return binary.BigEndian.AppendUint16(append(b, mpUint16), uint16(v))
	case v <= math.MaxUint32:
		return binary.BigEndian.AppendUint32(append(b, mpUint32), uint32(v))
	}
	return binary.BigEndian.AppendUint64(append(b, mpUint64), v)
}

func appendBool(b []byte, v bool) []byte {
	if v {
		return append(b, mpTrue)
	}
	return append(b, mpFalse)
}

// appendArrayLen appends an array header. n never exceeds MaxUint32 for a
// slice that fits in memory next to its encoding.
func appendArrayLen(b []byte, n int) []byte {
	switch {
	case n < 16:
		return append(b, 0x90|byte(n))
	case n <= math.MaxUint16:
		return binary.BigEndian.AppendUint16(append(b, mpArray16), uint16(n))
	}
	return binary.BigEndian.AppendUint32(append(b, mpArray32), uint32(n))
}

// appendBytes appends nil for a nil slice and a bin otherwise.
func appendBytes(b []byte, v []byte) []byte {
	switch n := len(v); {
	case v == nil:
		return append(b, mpNil)
	case n <= math.MaxUint8:
		b = append(b, mpBin8, byte(n))
	case n <= math.MaxUint16:
		b = binary.BigEndian.AppendUint16(append(b, mpBin16), uint16(n))
	default:
		b = binary.BigEndian.AppendUint32(append(b, mpBin32), uint32(n))
	}
	return append(b, v...)
}

func (d *decoder) isNil() bool {
	if len(d.b) > 0 && d.b[0] == mpNil {
		d.b = d.b[1:]
		return true
	}
	return false
}

// arrayLen reads an array header of at least minLen elements, each of which
// takes at least minElemBytes, and checks that the body still holds them.
func (d *decoder) arrayLen(minLen int, minElemBytes uint64) (int, error) {
	if len(d.b) == 0 {
		return 0, io.ErrUnexpectedEOF
	}
	c := d.b[0]
	var n uint64
	switch {
	case c&0xf0 == 0x90:
		n, d.b = uint64(c&0x0f), d.b[1:]
	case c == mpArray16 || c == mpArray32:
		v, err := d.lenField(c == mpArray32)
		if err != nil {
			return 0, err
		}
		n = v
	default:
		return 0, fmt.Errorf("0x%02x is not an array", c)
	}
	if n < uint64(minLen) {
		return 0, fmt.Errorf("array of %d, want at least %d", n, minLen)
	}
	if n*minElemBytes > uint64(len(d.b)) { // n < 2^32 and minElemBytes small: no overflow
		return 0, fmt.Errorf("array of %d cannot fit in %d bytes", n, len(d.b))
	}
	return int(n), nil
}

// lenField consumes a format byte and the 16- or 32-bit length after it.
func (d *decoder) lenField(wide bool) (uint64, error) {
	size := 3
	if wide {
		size = 5
	}
	if len(d.b) < size {
		return 0, io.ErrUnexpectedEOF
	}
	var n uint64
	if wide {
		n = uint64(binary.BigEndian.Uint32(d.b[1:]))
	} else {
		n = uint64(binary.BigEndian.Uint16(d.b[1:]))
	}
	d.b = d.b[size:]
	return n, nil
}

// uint reads an unsigned integer no larger than max. Non-negative signed
// forms are accepted too, since some encoders use them for small values.
func (d *decoder) uint(max uint64) (uint64, error) {
	if len(d.b) == 0 {
		return 0, io.ErrUnexpectedEOF
	}
	c := d.b[0]
	if c <= 0x7f {
		d.b = d.b[1:]
		return uint64(c), nil
	}
	var size int
	switch c {
	case mpUint8, mpInt8:
		size = 1
	case mpUint16, mpInt16:
		size = 2
	case mpUint32, mpInt32:
		size = 4
	case mpUint64, mpInt64:
		size = 8
	default:
		return 0, fmt.Errorf("0x%02x is not an unsigned integer", c)
	}
	if len(d.b) < 1+size {
		return 0, io.ErrUnexpectedEOF
	}
	p := d.b[1 : 1+size]
	var v uint64
	for _, x := range p {
		v = v<<8 | uint64(x)
	}
	if c >= mpInt8 && p[0]&0x80 != 0 {
		return 0, fmt.Errorf("negative integer")
	}
	if v > max {
		return 0, fmt.Errorf("%d overflows its type (max %d)", v, max)
	}
	d.b = d.b[1+size:]
	return v, nil
}

func (d *decoder) bool() (bool, error) {
	if len(d.b) == 0 {
		return false, io.ErrUnexpectedEOF
	}
	switch d.b[0] {
	case mpFalse:
		d.b = d.b[1:]
		return false, nil
	case mpTrue:
		d.b = d.b[1:]
		return true, nil
	}
	return false, fmt.Errorf("0x%02x is not a bool", d.b[0])
}

// bytes reads nil or a bin and returns a copy that does not alias the body.
// The first non-empty bin copies the body from its header to the end, in
// one allocation and one move (no zeroing, no copy per bin); it and every
// later bin are carved out of that copy at their own offsets. Decoded
// bytes never alias the body, and together cost at most its size.
func (d *decoder) bytes() ([]byte, error) {
	if d.isNil() {
		return nil, nil
	}
	tail := d.b
	v, err := d.binView()
	if err != nil {
		return nil, err
	}
	n := len(v)
	if n == 0 {
		return []byte{}, nil
	}
	if d.copied == nil {
		d.copied = append([]byte(nil), tail...)
	}
	end := len(d.copied) - len(d.b) // v ends where d.b begins
	return d.copied[end-n : end : end], nil
}

// binView reads a bin and returns it without copying: it aliases the body.
func (d *decoder) binView() ([]byte, error) {
	if len(d.b) == 0 {
		return nil, io.ErrUnexpectedEOF
	}
	var n uint64
	switch c := d.b[0]; c {
	case mpBin8:
		if len(d.b) < 2 {
			return nil, io.ErrUnexpectedEOF
		}
		n, d.b = uint64(d.b[1]), d.b[2:]
	case mpBin16, mpBin32:
		v, err := d.lenField(c == mpBin32)
		if err != nil {
			return nil, err
		}
		n = v
	default:
		return nil, fmt.Errorf("0x%02x is not bin", c)
	}
	if n > uint64(len(d.b)) {
		return nil, fmt.Errorf("bin of %d bytes, %d left", n, len(d.b))
	}
	out := d.b[:n:n]
	d.b = d.b[n:]
	return out, nil
}

// skipN skips n values that follow the fields a decoder knows: fields a
// later wire version appended to the array named what.
func (d *decoder) skipN(n int, what string) error {
	for i := 0; i < n; i++ {
		if err := d.skip(0); err != nil {
			return at(what+" extra field", i, err)
		}
	}
	return nil
}

// skip consumes one msgpack value of any kind without allocating. Every
// value takes at least one byte and containers are checked against the
// bytes left, so the work is bounded by len(d.b); depth bounds recursion.
func (d *decoder) skip(depth int) error {
	if depth > maxSkipDepth {
		return fmt.Errorf("nested deeper than %d", maxSkipDepth)
	}
	if len(d.b) == 0 {
		return io.ErrUnexpectedEOF
	}
	c := d.b[0]
	var head, payload, elems uint64 // bytes of header, bytes of payload, values inside
	switch {
	case c <= 0x7f || c >= 0xe0 || c == mpNil || c == mpFalse || c == mpTrue:
		head = 1
	case c&0xe0 == 0xa0: // fixstr
		head, payload = 1, uint64(c&0x1f)
	case c&0xf0 == 0x90: // fixarray
		head, elems = 1, uint64(c&0x0f)
	case c&0xf0 == 0x80: // fixmap
		head, elems = 1, 2*uint64(c&0x0f)
	case c == mpNeverUse:
		return fmt.Errorf("0xc1 is never used")
	case c == mpUint8 || c == mpInt8:
		head = 2
	case c == mpUint16 || c == mpInt16:
		head = 3
	case c == mpUint32 || c == mpInt32 || c == mpFloat32:
		head = 5
	case c == mpUint64 || c == mpInt64 || c == mpFloat64:
		head = 9
	case c >= mpFixExt1 && c <= mpFixExt16: // type byte + 1, 2, 4, 8, 16 bytes
		head, payload = 2, 1<<(c-mpFixExt1)
	case c == mpBin8 || c == mpStr8 || c == mpExt8:
		head = 2
	case c == mpBin16 || c == mpStr16 || c == mpExt16 || c == mpArray16 || c == mpMap16:
		head = 3
	case c == mpBin32 || c == mpStr32 || c == mpExt32 || c == mpArray32 || c == mpMap32:
		head = 5
	default:
		return fmt.Errorf("format 0x%02x", c) // cannot happen: every byte is covered
	}
	if uint64(len(d.b)) < head {
		return io.ErrUnexpectedEOF
	}
	switch c {
	case mpBin8, mpStr8, mpExt8:
		payload = uint64(d.b[1])
	case mpBin16, mpStr16, mpExt16:
		payload = uint64(binary.BigEndian.Uint16(d.b[1:]))
	case mpBin32, mpStr32, mpExt32:
		payload = uint64(binary.BigEndian.Uint32(d.b[1:]))
	case mpArray16:
		elems = uint64(binary.BigEndian.Uint16(d.b[1:]))
	case mpArray32:
		elems = uint64(binary.BigEndian.Uint32(d.b[1:]))
	case mpMap16:
		elems = 2 * uint64(binary.BigEndian.Uint16(d.b[1:]))
	case mpMap32:
		elems = 2 * uint64(binary.BigEndian.Uint32(d.b[1:]))
	}
	if c == mpExt8 || c == mpExt16 || c == mpExt32 {
		payload++ // the ext type byte
	}
	if uint64(len(d.b))-head < payload+elems {
		return fmt.Errorf("value of %d bytes and %d elements, %d bytes left", payload, elems, uint64(len(d.b))-head)
	}
	d.b = d.b[head+payload:]
	for i := uint64(0); i < elems; i++ {
		if err := d.skip(depth + 1); err != nil {
			return err
		}
	}
	return nil
}
