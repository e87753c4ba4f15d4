package snapshotter

// The header encoding: round trips, the refusal of every kind of bad
// header, the allocation bound on hostile bytes, and the fuzz target.

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"math"
	"reflect"
	"runtime"
	"runtime/metrics"
	"strings"
	"testing"

	"github.com/stepraft/stepraft/core"
)

// sampleMetas are metas that exercise every field of the header.
func sampleMetas() []Meta {
	ids := make([]core.NodeID, 1000)
	for i := range ids {
		ids[i] = core.NodeID(i + 1)
	}
	return []Meta{
		{Index: 1, Term: 1},
		{Index: 1, Term: 1, ConfState: core.ConfState{Voters: []core.NodeID{1}}, Members: []Member{{1, ""}}},
		{Index: 42, Term: 7, Size: 12345,
			ConfState: core.ConfState{Voters: []core.NodeID{2, 3, 4}, VotersOutgoing: []core.NodeID{1, 2, 3},
				Learners: []core.NodeID{5}, LearnersNext: []core.NodeID{1}, AutoLeave: true},
			Members: []Member{{1, "10.0.0.1:7001"}, {2, "[::1]:7002"}, {3, "node-3.example:7003"},
				{4, "10.0.0.4:7004"}, {5, "10.0.0.5:7005"}}},
		{Index: math.MaxUint64, Term: math.MaxUint64, Size: math.MaxInt64,
			ConfState: core.ConfState{Voters: []core.NodeID{math.MaxUint64}},
			Members:   []Member{{math.MaxUint64, strings.Repeat("a", maxAddrBytes)}}},
		{Index: 9, Term: 3, ConfState: core.ConfState{Voters: ids, Learners: ids[:10]}},
	}
}

func TestHeaderRoundTrip(t *testing.T) {
	for _, m := range sampleMetas() {
		b, err := encodeHeader(m)
		if err != nil {
			t.Fatalf("encodeHeader(%+v): %v", m, err)
		}
		if len(b) != prefixLen+headerLen(&m)+crcLen {
			t.Fatalf("encoded %d bytes, headerLen says %d", len(b), prefixLen+headerLen(&m)+crcLen)
		}
		// Decoding ignores what follows the header (the body).
		got, n, err := decodeHeader(append(b, "body"...))
		if err != nil {
			t.Fatalf("decodeHeader of %+v: %v", m, err)
		}
		if n != len(b) || !reflect.DeepEqual(got, m.clone()) {
			t.Fatalf("decodeHeader = %+v, %d; want %+v, %d", got, n, m, len(b))
		}
	}
}

// rawHeader builds a file prefix with the given version around fields,
// with a correct header CRC, so that a test reaches the field decoder.
func rawHeader(version uint16, fields []byte) []byte {
	b := append([]byte(magic), 0, 0, 0, 0, 0, 0)
	binary.BigEndian.PutUint16(b[8:], version)
	binary.BigEndian.PutUint32(b[10:], uint32(len(fields)))
	b = append(b, fields...)
	return binary.BigEndian.AppendUint32(b, crc32.Checksum(b, castagnoli))
}

// fields is a builder of raw header fields.
type fields []byte

func (f fields) u8(v byte) fields    { return append(f, v) }
func (f fields) u16(v uint16) fields { return binary.BigEndian.AppendUint16(f, v) }
func (f fields) u32(v uint32) fields { return binary.BigEndian.AppendUint32(f, v) }
func (f fields) u64(v uint64) fields { return binary.BigEndian.AppendUint64(f, v) }

// upToMembers is index 5, term 2, empty lists and AutoLeave false.
func upToMembers() fields {
	return fields{}.u64(5).u64(2).u32(0).u32(0).u32(0).u32(0).u8(0)
}

func TestDecodeHeaderRefusesBadBytes(t *testing.T) {
	good, err := encodeHeader(sampleMetas()[2])
	if err != nil {
		t.Fatal(err)
	}
	flipped := bytes.Clone(good)
	flipped[20] ^= 1
	badMagic := bytes.Clone(good)
	badMagic[0] = 'X'
	for _, tc := range []struct {
		name string
		b    []byte
		want string // in the error
		kind error
	}{
		{"empty", nil, "shorter than a header", ErrCorrupt},
		{"bad magic", badMagic, "bad magic", ErrCorrupt},
		{"version 0", rawHeader(0, upToMembers().u32(0).u64(0)), "version 0", ErrVersion},
		{"version 2", rawHeader(2, upToMembers().u32(0).u64(0)), "version 2; this build reads version 1", ErrVersion},
		{"header length over the limit", append([]byte(magic), 0, 1, 0xff, 0xff, 0xff, 0xff), "header length 4294967295", ErrCorrupt},
		{"header length past the end", good[:len(good)-1], "runs past the end", ErrCorrupt},
		{"header CRC", flipped, "header CRC", ErrCorrupt},
		{"index 0", rawHeader(1, fields{}.u64(0).u64(2).u32(0).u32(0).u32(0).u32(0).u8(0).u32(0).u64(0)), "index 0", ErrCorrupt},
		{"term 0", rawHeader(1, fields{}.u64(5).u64(0).u32(0).u32(0).u32(0).u32(0).u8(0).u32(0).u64(0)), "term 0", ErrCorrupt},
		{"voter count past the bytes", rawHeader(1, fields{}.u64(5).u64(2).u32(2).u64(1)), "2 voters", ErrCorrupt},
		{"voter count over the limit", rawHeader(1, fields{}.u64(5).u64(2).u32(math.MaxUint32)), "4294967295 voters", ErrCorrupt},
		{"learner count past the bytes", rawHeader(1, fields{}.u64(5).u64(2).u32(0).u32(1)), "1 learners", ErrCorrupt},
		{"auto leave 2", rawHeader(1, fields{}.u64(5).u64(2).u32(0).u32(0).u32(0).u32(0).u8(2).u32(0).u64(0)), "auto leave", ErrCorrupt},
		{"member count over the limit", rawHeader(1, upToMembers().u32(math.MaxUint32)), "4294967295 members", ErrCorrupt},
		{"member count past the bytes", rawHeader(1, upToMembers().u32(3).u64(1).u16(0).u64(0)), "3 members", ErrCorrupt},
		{"member ID 0", rawHeader(1, upToMembers().u32(1).u64(0).u16(0).u64(0)), "ID 0", ErrCorrupt},
		{"address over the limit", rawHeader(1, append(upToMembers().u32(1).u64(1).u16(maxAddrBytes+1), make([]byte, maxAddrBytes+9)...)), "address of 1025 bytes", ErrCorrupt},
		{"address past the bytes", rawHeader(1, upToMembers().u32(1).u64(1).u16(100).u64(0)), "inside an address", ErrCorrupt},
		{"no body length", rawHeader(1, upToMembers().u32(0)), "inside an integer", ErrCorrupt},
		{"body length over MaxInt64", rawHeader(1, upToMembers().u32(0).u64(1<<63)), "body length", ErrCorrupt},
		{"trailing field bytes", rawHeader(1, upToMembers().u32(0).u64(0).u8(0)), "1 bytes after the last header field", ErrCorrupt},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := decodeHeader(tc.b)
			if err == nil || !errors.Is(err, tc.kind) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("decodeHeader = %v; want an error wrapping %v that says %q", err, tc.kind, tc.want)
			}
		})
	}
}

func TestEncodeHeaderRefusesInvalidMeta(t *testing.T) {
	many := make([]core.NodeID, maxIDs+1)
	members := make([]Member, maxMembers+1)
	for i := range members {
		members[i].ID = core.NodeID(i + 1)
	}
	big := make([]Member, 2000)
	for i := range big {
		big[i] = Member{ID: core.NodeID(i + 1), Addr: strings.Repeat("x", maxAddrBytes)}
	}
	for _, tc := range []struct {
		name string
		m    Meta
		want string
	}{
		{"index 0", Meta{Term: 1}, "index 0"},
		{"term 0", Meta{Index: 1}, "term 0"},
		{"member ID 0", Meta{Index: 1, Term: 1, Members: []Member{{0, "a"}}}, "ID 0"},
		{"long address", Meta{Index: 1, Term: 1, Members: []Member{{1, strings.Repeat("a", maxAddrBytes+1)}}}, "address of 1025 bytes"},
		{"too many voters", Meta{Index: 1, Term: 1, ConfState: core.ConfState{Voters: many}}, "65537 voters"},
		{"too many learners next", Meta{Index: 1, Term: 1, ConfState: core.ConfState{LearnersNext: many}}, "65537 learners next"},
		{"too many members", Meta{Index: 1, Term: 1, Members: members}, "65537 members"},
		{"header too long", Meta{Index: 1, Term: 1, Members: big}, "more than 1048576"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := encodeHeader(tc.m)
			if !errors.Is(err, ErrMeta) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("encodeHeader = %v; want ErrMeta saying %q", err, tc.want)
			}
		})
	}
}

// allocSlackBytes absorbs what the runtime and the test framework may
// allocate while a decode is measured; far below what an allocation driven
// by a hostile count (up to 2^32 × 8 bytes) would take.
const allocSlackBytes = 64 << 10

// decodeMeasured decodes b and returns what it allocated, in bytes.
func decodeMeasured(b []byte) (Meta, int, error, uint64) {
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	m, n, err := decodeHeader(b)
	runtime.ReadMemStats(&after)
	return m, n, err, after.TotalAlloc - before.TotalAlloc
}

// allocBound is the most decoding b may allocate: each decoded ID takes 8
// input bytes and 8 allocated ones; each member at least 10 input bytes
// and 24 allocated ones plus its address (rounded to a size class).
func allocBound(b []byte) uint64 { return 4*uint64(len(b)) + allocSlackBytes }

// TestDecodeHeaderAllocationBound: declared counts and lengths of up to
// 2^32 cost nothing before they are checked, and a large valid header
// allocates about its own size.
func TestDecodeHeaderAllocationBound(t *testing.T) {
	ids := make([]core.NodeID, maxIDs)
	for i := range ids {
		ids[i] = core.NodeID(i + 1)
	}
	large, err := encodeHeader(Meta{Index: 1, Term: 1, ConfState: core.ConfState{Voters: ids, Learners: ids[:maxIDs/2]}})
	if err != nil {
		t.Fatal(err)
	}
	inputs := map[string][]byte{
		"huge header length":                    append([]byte(magic), 0, 1, 0, 0x10, 0, 0),
		"huge voter count":                      rawHeader(1, fields{}.u64(5).u64(2).u32(math.MaxUint32)),
		"huge member count":                     rawHeader(1, upToMembers().u32(math.MaxUint32)),
		"voter count at the limit, no IDs":      rawHeader(1, fields{}.u64(5).u64(2).u32(maxIDs)),
		"member count at the limit, no members": rawHeader(1, upToMembers().u32(maxMembers)),
		"huge address":                          rawHeader(1, upToMembers().u32(1).u64(1).u16(math.MaxUint16)),
		"large valid header":                    large,
	}
	for name, b := range inputs {
		var most uint64
		for range 20 {
			_, _, _, allocated := decodeMeasured(b)
			most = max(most, allocated)
		}
		t.Logf("%s: %d input bytes, at most %d bytes allocated", name, len(b), most)
		if most > allocBound(b) {
			t.Errorf("%s: decoding %d bytes allocated %d bytes, more than %d", name, len(b), most, allocBound(b))
		}
	}
}

// fixedUp returns a copy of b with the magic, version and header CRC made
// right, so that the fuzzer explores the field decoder and not only the
// CRC check; nil if b's header length does not fit in b.
func fixedUp(b []byte) []byte {
	if len(b) < prefixLen {
		return nil
	}
	h := int64(binary.BigEndian.Uint32(b[10:]))
	if h > maxHeaderBytes || prefixLen+h+crcLen > int64(len(b)) {
		return nil
	}
	c := bytes.Clone(b)
	copy(c, magic)
	binary.BigEndian.PutUint16(c[8:], formatVersion)
	end := prefixLen + h
	binary.BigEndian.PutUint32(c[end:], crc32.Checksum(c[:end], castagnoli))
	return c
}

// FuzzDecodeHeader feeds arbitrary bytes to the header decoder, as they
// are and with their CRC made right: it never panics, never allocates more
// than a small multiple of the input, fails only with ErrCorrupt or
// ErrVersion, and what it accepts encodes back to the same bytes.
func FuzzDecodeHeader(f *testing.F) {
	for _, m := range sampleMetas()[:4] {
		b, err := encodeHeader(m)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
		f.Add(append(bytes.Clone(b), 1, 2, 3))
		f.Add(b[:len(b)-1])
		f.Add(b[:prefixLen])
	}
	f.Add([]byte{})
	f.Add([]byte(magic))
	f.Add(rawHeader(2, upToMembers().u32(0).u64(0)))
	f.Add(rawHeader(1, fields{}.u64(5).u64(2).u32(math.MaxUint32)))
	f.Add(rawHeader(1, fields{}.u64(5).u64(2).u32(maxIDs)))
	f.Add(rawHeader(1, upToMembers().u32(maxMembers)))
	f.Add(rawHeader(1, upToMembers().u32(2).u64(1).u16(3).u64(7)))
	f.Add(rawHeader(1, upToMembers().u32(1).u64(1).u16(math.MaxUint16)))
	f.Fuzz(func(t *testing.T, b []byte) {
		checkDecode(t, b)
		if c := fixedUp(b); c != nil {
			checkDecode(t, c)
		}
	})
}

// fuzzSlackBytes is checkDecode's first allowance on top of 4× the input.
// checkDecode reads the heap's allocation counter from runtime/metrics,
// because runtime.ReadMemStats stops the world and would make each
// execution ~20× slower. That counter is cheap but loose: it takes in
// small objects a span at a time, some allocated before the decode. So an
// excess is confirmed by decoding again under ReadMemStats, exactly;
// decoding is deterministic, so a real excess shows again.
const fuzzSlackBytes = 256 << 10

func checkDecode(t *testing.T, b []byte) {
	sample := []metrics.Sample{{Name: "/gc/heap/allocs:bytes"}}
	metrics.Read(sample)
	before := sample[0].Value.Uint64()
	m, n, err := decodeHeader(b)
	metrics.Read(sample)
	if sample[0].Value.Uint64()-before > 4*uint64(len(b))+fuzzSlackBytes {
		if _, _, _, allocated := decodeMeasured(b); allocated > allocBound(b) {
			t.Fatalf("decoding %d bytes allocated %d bytes, more than %d", len(b), allocated, allocBound(b))
		}
	}
	if err != nil {
		var fe *formatError
		if !errors.As(err, &fe) || !isDamage(err) {
			t.Fatalf("decodeHeader(%q) = %v, not a format error", b, err)
		}
		return
	}
	again, err := encodeHeader(m)
	if err != nil {
		t.Fatalf("decodeHeader(%q) = %+v, which does not encode: %v", b, m, err)
	}
	if !bytes.Equal(again, b[:n]) {
		t.Fatalf("decodeHeader(%q) = %+v (%d bytes), which encodes to %q", b, m, n, again)
	}
}
