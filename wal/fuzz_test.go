package wal

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"math"
	"runtime"
	"testing"

	"github.com/stepraft/stepraft/core"
)

// fuzzAllocSlack is what a decoder may allocate besides the bytes its input
// accounts for: an error value and its message.
const fuzzAllocSlack = 1024

// fuzzAllocBytes returns the bytes fn allocates on the heap, as the
// allocator counts them (rounded up to its size classes). runtime.ReadMemStats
// stops the world and flushes every per-P cache, so the count is exact for
// fn; another goroutine allocating at the same moment can only add to it, and
// fuzzCheckAllocs measures again before it blames the decoder.
func fuzzAllocBytes(fn func()) uint64 {
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	fn()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

// fuzzRoundUp is n bytes as the allocator hands them out: append rounds the
// capacity of a new slice up to the size class it takes.
func fuzzRoundUp(n int) uint64 {
	return uint64(cap(append([]byte(nil), make([]byte, n)...)))
}

// fuzzCheckAllocs fails t if fn allocates more than limit bytes in each of
// fuzzAllocTries measurements. TotalAlloc counts the whole process, and the
// fuzzing engine's own goroutines allocate now and then while fn runs; fn's
// own allocation is the same every time, so the smallest measurement is
// fn's (a single retry was not enough: a run failed on noise and its input
// then passed). Measuring stops the world twice, which cut the fuzzing rate about
// fourfold in a trial, so it is done for every input that decodes (where
// the data is copied) and for a fixed quarter of the others, chosen by
// their checksum so that a failing input fails again when the fuzzer
// minimizes it.
func fuzzCheckAllocs(t *testing.T, what string, input []byte, decodes bool, limit uint64, fn func()) {
	t.Helper()
	if !decodes && crc32.ChecksumIEEE(input)%4 != 0 {
		fn()
		return
	}
	got := fuzzAllocBytes(fn)
	for range fuzzAllocTries - 1 {
		if got <= limit {
			return
		}
		got = min(got, fuzzAllocBytes(fn))
	}
	if got > limit {
		t.Fatalf("%s allocated %d bytes, more than the %d its input allows", what, got, limit)
	}
}

const fuzzAllocTries = 5

// fuzzRecordSeeds are records as appendRecord and appendRecordV1 write
// them, one per length form of every field but version 1's bin32 of data
// over 64 KiB, which TestDecodeRecordLarge covers. Seeds stay small: the fuzzer minimizes each
// new interesting input in time quadratic in its length, and a mutant of a
// kilobyte seed stalls it for its whole -fuzzminimizetime.
func fuzzRecordSeeds() [][]byte {
	entries := []core.Entry{
		{Index: 1, Term: 1, Type: core.EntryNormal},
		{Index: 2, Term: 1, Type: core.EntryNormal, Data: []byte("hello")},
		{Index: 0x7f, Term: 0x80, Type: core.EntryConfChange, Data: []byte{0x0a, 0x02, 0x08, 0x03}},
		{Index: 0x100, Term: 0xffff, Type: core.EntryNormal, Data: bytes.Repeat([]byte{0xc4}, 255)},
		{Index: 0x10000, Term: 0x1_0000_0000, Type: core.EntryNormal, Data: bytes.Repeat([]byte("x"), 256)},
		{Index: 1 << 62, Term: 7, Type: core.EntryConfChange, Data: bytes.Repeat([]byte{0}, 300)},
	}
	var out [][]byte
	for i := range entries {
		out = append(out, appendRecord(nil, &entries[i]), appendRecordV1(nil, &entries[i]))
	}
	return out
}

// fuzzFixRecordCRC returns a copy of rec with its checksum made right, so
// that mutations reach the decoder behind the checksum.
func fuzzFixRecordCRC(rec []byte) []byte {
	if len(rec) < 5 {
		return nil
	}
	fixed := bytes.Clone(rec)
	binary.BigEndian.PutUint32(fixed[1:], recordCRC(fixed))
	return fixed
}

func TestDecodeRecordLarge(t *testing.T) {
	for _, n := range []int{1<<16 - 1, 1 << 16, 1<<16 + 1, 1 << 20} {
		e := core.Entry{Index: 9, Term: 3, Type: core.EntryNormal, Data: bytes.Repeat([]byte("ab"), n/2+1)[:n]}
		for _, rec := range [][]byte{appendRecord(nil, &e), appendRecordV1(nil, &e)} {
			fuzzDecodeRecord(t, rec)
			got, err := decodeRecord(rec, true)
			if err != nil || !bytes.Equal(got.Data, e.Data) {
				t.Fatalf("%d bytes, version %d: %v", n, rec[0], err)
			}
			if _, err := decodeRecord(rec[:len(rec)-1], true); err == nil {
				t.Fatalf("%d bytes, version %d: a torn record decodes", n, rec[0])
			}
		}
	}
}

// TestDecodeRecordOneEncoding: version 2's varints are accepted only in
// their shortest form, and its fields must fit the record.
func TestDecodeRecordOneEncoding(t *testing.T) {
	for name, body := range map[string][]byte{
		"index 0":         {0x00, 0x01, 0x01},
		"term 0":          {0x01, 0x00, 0x01},
		"index overlong":  {0x81, 0x00, 0x01, 0x01},
		"term overlong":   {0x01, 0x80, 0x80, 0x00, 0x01},
		"index overflows": {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0x01, 0x01},
		"index cut":       {0x80},
		"no type":         {0x01, 0x01},
		"type 0":          {0x01, 0x01, 0x00},
		"type 3":          {0x01, 0x01, 0x03, 'x'},
	} {
		rec := fuzzFixRecordCRC(append([]byte{recordVersion, 0, 0, 0, 0}, body...))
		e, err := decodeRecord(rec, true)
		if err == nil {
			t.Errorf("%s: %x decodes as %+v", name, rec, e)
		} else if !errors.Is(err, ErrCorrupt) || errors.Is(err, errUnverified) {
			t.Errorf("%s: %v, want a verified record reported corrupt", name, err)
		}
	}
	if _, err := decodeRecord(fuzzFixRecordCRC([]byte{3, 0, 0, 0, 0, 1, 1, 1}), false); err == nil || errors.Is(err, errUnverified) {
		t.Errorf("version 3: %v, want a verified record of an unknown version", err)
	}
	// The largest index and term: varints of ten bytes.
	e := core.Entry{Index: math.MaxUint64, Term: math.MaxUint64, Type: core.EntryConfChange, Data: []byte{0}}
	rec := appendRecord(nil, &e)
	if len(rec) != recordOverhead+1 {
		t.Fatalf("record of %d bytes, want %d", len(rec), recordOverhead+1)
	}
	if got, err := decodeRecord(rec, false); err != nil || got.Index != e.Index || got.Term != e.Term || got.Type != e.Type {
		t.Fatalf("decoded %+v, %v", got, err)
	}
}

func FuzzDecodeRecord(f *testing.F) {
	for _, rec := range fuzzRecordSeeds() {
		f.Add(rec)
		f.Add(rec[:len(rec)/2]) // torn
		f.Add(rec[:len(rec)-1])
		f.Add(append(bytes.Clone(rec), 0)) // a trailing byte
		for _, off := range []int{0, 1, 5, 6, 7, len(rec) - 1} {
			flipped := bytes.Clone(rec)
			flipped[off] ^= 0x10
			f.Add(flipped)
			f.Add(fuzzFixRecordCRC(flipped)) // damage behind a good checksum
		}
	}
	f.Add([]byte{})
	f.Add([]byte{recordVersionV1, 0, 0, 0, 0, 0x94})
	f.Add([]byte{recordVersion, 0, 0, 0, 0, 1, 1, 1})
	// A version 1 bin32 that declares 4 GiB in a 20-byte record.
	f.Add(fuzzFixRecordCRC([]byte{recordVersionV1, 0, 0, 0, 0, 0x94, 1, 1, 1, 0xc6, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 0}))
	// A version 2 index of eleven varint bytes.
	f.Add(fuzzFixRecordCRC([]byte{recordVersion, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01, 1, 1}))
	f.Fuzz(func(t *testing.T, rec []byte) {
		fuzzDecodeRecord(t, rec)
		if fixed := fuzzFixRecordCRC(rec); fixed != nil {
			fuzzDecodeRecord(t, fixed)
		}
	})
}

func fuzzDecodeRecord(t *testing.T, rec []byte) {
	orig := bytes.Clone(rec)
	alias, errAlias := decodeRecord(rec, false)
	if !bytes.Equal(rec, orig) {
		t.Fatalf("decodeRecord changed its input")
	}
	var e core.Entry
	var err error
	fuzzCheckAllocs(t, "decodeRecord(copyData)", rec, errAlias == nil, fuzzRoundUp(len(rec))+fuzzAllocSlack, func() {
		e, err = decodeRecord(rec, true)
	})
	if (err == nil) != (errAlias == nil) {
		t.Fatalf("copyData changes the verdict: %v vs %v", err, errAlias)
	}
	if err != nil {
		return
	}
	// The copy is at most the input, rounded up by the allocator.
	if uint64(cap(e.Data)) > fuzzRoundUp(len(rec)) {
		t.Fatalf("Data of %d bytes has capacity %d, input %d bytes", len(e.Data), cap(e.Data), len(rec))
	}
	if !bytes.Equal(e.Data, alias.Data) || e.Index != alias.Index || e.Term != alias.Term || e.Type != alias.Type {
		t.Fatalf("copyData changes the entry: %+v vs %+v", e, alias)
	}
	if len(e.Data) > 0 && len(rec) > 0 && &e.Data[0] == &rec[len(rec)-len(e.Data)] {
		t.Fatalf("copyData returned Data aliasing the input")
	}
	encode := appendRecord
	if rec[0] == recordVersionV1 {
		encode = appendRecordV1
	}
	if re := encode(nil, &e); !bytes.Equal(re, rec) {
		t.Fatalf("decoded %+v re-encodes differently:\n in  %x\n out %x", e, rec, re)
	}
}

// fuzzMetaSeeds are slots as meta.encode writes them, over configurations
// of every shape, padded like a slot read from the file.
func fuzzMetaSeeds() [][]byte {
	ids := func(from, n int) []core.NodeID {
		var out []core.NodeID
		for i := range n {
			out = append(out, core.NodeID(from+i))
		}
		return out
	}
	metas := []meta{
		{},
		{seq: 1, clusterID: 0xfeed, nodeID: 1},
		{seq: 2, hard: core.HardState{Term: 5, Vote: 2, Commit: 100}},
		{seq: 3, hard: core.HardState{Term: 9, Vote: 0, Commit: 1 << 40}, snap: core.SnapshotMeta{Index: 90, Term: 8,
			ConfState: core.ConfState{Voters: ids(1, 3)}}, compactIndex: 80, compactTerm: 7},
		{seq: 4, snap: core.SnapshotMeta{Index: 5, Term: 2, ConfState: core.ConfState{Voters: ids(1, 3),
			VotersOutgoing: ids(2, 3), Learners: ids(7, 1), LearnersNext: ids(9, 2), AutoLeave: true}}, compactIndex: 5, compactTerm: 2},
		{seq: 1<<64 - 1, clusterID: 1<<64 - 1, nodeID: 1<<64 - 1, snap: core.SnapshotMeta{Index: 1 << 63,
			ConfState: core.ConfState{Voters: ids(1, metaMaxIDs)}}},
	}
	var out [][]byte
	for i := range metas {
		b, err := metas[i].encode()
		if err != nil {
			panic(err)
		}
		out = append(out, b)
	}
	return out
}

// fuzzMetaEnd returns where the payload of slot b ends (the CRC starts),
// or -1 when the slot is too short to say.
func fuzzMetaEnd(b []byte) int {
	if len(b) < metaHeader {
		return -1
	}
	return metaHeader + int(binary.BigEndian.Uint32(b[18:]))
}

// fuzzFixMetaCRC returns a copy of b with the checksum after its declared
// payload made right, when there is room for it.
func fuzzFixMetaCRC(b []byte) []byte {
	end := fuzzMetaEnd(b)
	if end < 0 || end > len(b)-4 {
		return nil
	}
	fixed := bytes.Clone(b)
	binary.BigEndian.PutUint32(fixed[end:], crc32.Checksum(fixed[:end], castagnoli))
	return fixed
}

func FuzzDecodeMeta(f *testing.F) {
	for _, b := range fuzzMetaSeeds() {
		slot := make([]byte, metaSlotSize)
		copy(slot, b)
		f.Add(b)
		f.Add(slot)
		f.Add(b[:len(b)-1]) // torn
		f.Add(b[:metaHeader+4])
		for _, off := range []int{0, 8, 9, 17, 18, 21, metaHeader + 2, len(b) - 6, len(b) - 5, len(b) - 1} {
			flipped := bytes.Clone(b)
			flipped[off] ^= 0x01
			f.Add(flipped)
			f.Add(fuzzFixMetaCRC(flipped))
		}
		// A configuration list declaring 2^32-1 members.
		big := bytes.Clone(b)
		binary.BigEndian.PutUint32(big[metaHeader+9*8:], 0xffff_ffff)
		f.Add(fuzzFixMetaCRC(big))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		// openMeta reads at most one slot.
		b = b[:min(len(b), metaSlotSize)]
		fuzzDecodeMeta(t, b)
		if fixed := fuzzFixMetaCRC(b); fixed != nil {
			fuzzDecodeMeta(t, fixed)
		}
	})
}

func fuzzDecodeMeta(t *testing.T, b []byte) {
	orig := bytes.Clone(b)
	_, errFirst := decodeMeta(b)
	var m meta
	var err error
	// The lists grow by append: their final and discarded arrays together
	// stay under about twice the bytes the members take in the input.
	fuzzCheckAllocs(t, "decodeMeta", b, errFirst == nil, 3*fuzzRoundUp(len(b))+fuzzAllocSlack, func() {
		m, err = decodeMeta(b)
	})
	if !bytes.Equal(b, orig) {
		t.Fatalf("decodeMeta changed its input")
	}
	if err != nil {
		return
	}
	cs := m.snap.ConfState
	members := len(cs.Voters) + len(cs.VotersOutgoing) + len(cs.Learners) + len(cs.LearnersNext)
	if members*8 > len(b) {
		t.Fatalf("%d members decoded from %d bytes", members, len(b))
	}
	if m.compactIndex > m.snap.Index {
		t.Fatalf("decoded compaction point %d past the snapshot at %d", m.compactIndex, m.snap.Index)
	}
	re, err := m.encode()
	if err != nil {
		t.Fatalf("decoded %+v does not re-encode: %v", m, err)
	}
	end := fuzzMetaEnd(b) + 4
	if !bytes.Equal(re, b[:end]) {
		t.Fatalf("decoded %+v re-encodes differently:\n in  %x\n out %x", m, b[:end], re)
	}
}
