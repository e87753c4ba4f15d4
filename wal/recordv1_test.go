package wal

import (
	"encoding/binary"
	"math"

	"github.com/stepraft/stepraft/core"
)

// appendRecordV1 appends e's record in format version 1, which the log
// no longer writes but must keep reading (testdata/golden-v1).
func appendRecordV1(dst []byte, e *core.Entry) []byte {
	start := len(dst)
	dst = append(dst, recordVersionV1, 0, 0, 0, 0)
	dst = append(dst, 0x94) // fixarray of 4
	dst = appendUint(dst, uint64(e.Index))
	dst = appendUint(dst, uint64(e.Term))
	dst = appendUint(dst, uint64(e.Type))
	dst = appendBin(dst, e.Data)
	binary.BigEndian.PutUint32(dst[start+1:], recordCRC(dst[start:]))
	return dst
}

// appendUint appends x as the shortest msgpack unsigned integer.
func appendUint(dst []byte, x uint64) []byte {
	switch {
	case x <= 0x7f:
		return append(dst, byte(x))
	case x <= math.MaxUint8:
		return append(dst, 0xcc, byte(x))
	case x <= math.MaxUint16:
		return binary.BigEndian.AppendUint16(append(dst, 0xcd), uint16(x))
	case x <= math.MaxUint32:
		return binary.BigEndian.AppendUint32(append(dst, 0xce), uint32(x))
	}
	return binary.BigEndian.AppendUint64(append(dst, 0xcf), x)
}

// appendBin appends b as the shortest msgpack bin.
func appendBin(dst, b []byte) []byte {
	switch n := len(b); {
	case n <= math.MaxUint8:
		dst = append(dst, 0xc4, byte(n))
	case n <= math.MaxUint16:
		dst = binary.BigEndian.AppendUint16(append(dst, 0xc5), uint16(n))
	default:
		dst = binary.BigEndian.AppendUint32(append(dst, 0xc6), uint32(n))
	}
	return append(dst, b...)
}
