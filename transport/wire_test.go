package transport

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"math"
	"reflect"
	"runtime"
	"strings"
	"testing"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/stepraft/stepraft/core"
)

func filled(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = seed + byte(i*7)
	}
	return b
}

func ids(n int) []core.NodeID {
	out := make([]core.NodeID, n)
	for i := range out {
		out[i] = core.NodeID(i*1000 + 1)
	}
	return out
}

// testMessages covers every field, every msgpack length form used
// (fix/8/16/32 ints, fixarray/array16, bin8/16/32), nil against empty
// slices, and a snapshot with a joint configuration.
func testMessages() map[string]core.Message {
	entries := make([]core.Entry, 64)
	for i := range entries {
		entries[i] = core.Entry{Term: 7, Index: core.Index(100 + i), Type: core.EntryNormal, Data: filled(128, byte(i))}
	}
	return map[string]core.Message{
		"zero":      {},
		"heartbeat": {Type: core.MsgHeartbeat, To: 2, From: 1, Term: 3, Commit: 9},
		"every field": {
			Type: core.MsgAppResp, To: math.MaxUint64, From: 1 << 32, Term: 1<<32 - 1,
			LogTerm: 1 << 16, Index: 1<<16 - 1, Commit: 200, Reject: true, RejectHint: 128,
			Context: []byte("CampaignTransfer"),
			Entries: []core.Entry{{Term: 1, Index: 2, Type: core.EntryConfChange, Data: []byte{1}}},
			Snapshot: &core.Snapshot{
				Meta: core.SnapshotMeta{Index: 5, Term: 4, ConfState: core.ConfState{
					Voters: []core.NodeID{1, 2, 3}, Learners: []core.NodeID{4},
					VotersOutgoing: []core.NodeID{1, 2, 5}, LearnersNext: []core.NodeID{5}, AutoLeave: true,
				}},
				Data: []byte("snap"),
			},
		},
		"app 64x128": {Type: core.MsgApp, To: 2, From: 1, Term: 7, LogTerm: 7, Index: 99, Commit: 90, Entries: entries},
		"big entries": {Type: core.MsgApp, To: 3, From: 1, Term: 2, Entries: []core.Entry{
			{Term: 2, Index: 1, Type: core.EntryNormal, Data: filled(300, 1)},    // bin16
			{Term: 2, Index: 2, Type: core.EntryNormal, Data: filled(70_000, 2)}, // bin32
			{Term: 2, Index: 3, Type: core.EntryNormal},                          // nil data
			{Term: 2, Index: 4, Type: core.EntryNormal, Data: []byte{}},          // empty data
			{Term: 2, Index: 5, Type: core.EntryNormal, Data: filled(1<<20, 3)},  // 1 MiB
			{Term: math.MaxUint64, Index: math.MaxUint64, Type: math.MaxUint8, Data: filled(255, 4)},
		}},
		"snapshot big conf": {Type: core.MsgSnap, To: 4, From: 1, Term: 9, Snapshot: &core.Snapshot{
			Meta: core.SnapshotMeta{Index: 1 << 40, Term: 9, ConfState: core.ConfState{
				Voters: ids(20), Learners: ids(70_000), VotersOutgoing: []core.NodeID{}, LearnersNext: nil,
			}},
		}},
		"empty slices": {Type: core.MsgProp, Context: []byte{}, Entries: []core.Entry{},
			Snapshot: &core.Snapshot{Data: []byte{}}},
		"empty snapshot": {Type: core.MsgSnap, Snapshot: &core.Snapshot{}},
	}
}

func encodeBody(t testing.TB, m *core.Message) []byte {
	t.Helper()
	frame, err := AppendFrame(nil, Version1, m)
	if err != nil {
		t.Fatal(err)
	}
	return frame[frameHeaderBytes:]
}

func TestRoundTrip(t *testing.T) {
	for name, m := range testMessages() {
		t.Run(name, func(t *testing.T) {
			frame, err := AppendFrame([]byte("prefix"), Version1, &m)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.HasPrefix(frame, []byte("prefix")) {
				t.Fatal("AppendFrame did not append")
			}
			r := bytes.NewReader(frame[len("prefix"):])
			version, body, err := ReadFrame(r, nil, len(frame))
			if err != nil {
				t.Fatal(err)
			}
			if version != Version1 || r.Len() != 0 {
				t.Fatalf("version %d, %d bytes unread", version, r.Len())
			}
			got, err := DecodeMessage(body)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, m) {
				t.Fatalf("round trip changed the message:\n got %+v\nwant %+v", got, m)
			}
		})
	}
}

func TestFrameLayout(t *testing.T) {
	m := core.Message{Type: core.MsgHeartbeat, To: 2, From: 1, Term: 300}
	frame, err := AppendFrame(nil, Version1, &m)
	if err != nil {
		t.Fatal(err)
	}
	want := []byte{
		0, 0, 0, 16, Version1, // length counts the version byte and the body
		0x9c, byte(core.MsgHeartbeat), 2, 1, 0xcd, 0x01, 0x2c, 0, 0, 0, 0xc2, 0, 0xc0, 0xc0, 0xc0,
	}
	if !bytes.Equal(frame, want) {
		t.Fatalf("frame\n got % x\nwant % x", frame, want)
	}
}

// TestEncodingIsStandardMsgpack checks the hand-written encoder against the
// msgpack library, decoding trusted bytes it produced into generic values.
func TestEncodingIsStandardMsgpack(t *testing.T) {
	m := testMessages()["every field"]
	var v []any
	if err := msgpack.Unmarshal(encodeBody(t, &m), &v); err != nil {
		t.Fatal(err)
	}
	if len(v) != messageFields {
		t.Fatalf("%d fields", len(v))
	}
	if v[1] != uint64(math.MaxUint64) || v[7] != true || !bytes.Equal(v[9].([]byte), m.Context) {
		t.Fatalf("fields %v", v)
	}
	snap := v[11].([]any)
	conf := snap[2].([]any)
	if len(snap) != snapshotFields || len(conf) != confStateFields || conf[4] != true {
		t.Fatalf("snapshot %v", snap)
	}
}

// TestDecodesLibraryEncoding decodes a body written with the msgpack
// library's primitives, including signed forms for unsigned fields.
func TestDecodesLibraryEncoding(t *testing.T) {
	var buf bytes.Buffer
	enc := msgpack.NewEncoder(&buf)
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(enc.EncodeArrayLen(messageFields))
	must(enc.EncodeUint(uint64(core.MsgApp)))
	must(enc.EncodeInt(2))       // to, as a signed form
	must(enc.EncodeInt64(1))     // from
	must(enc.EncodeUint64(1000)) // term, uint16 form
	must(enc.EncodeUint(6))
	must(enc.EncodeUint(1 << 33))
	must(enc.EncodeInt(70_000)) // commit
	must(enc.EncodeBool(false))
	must(enc.EncodeUint(0))
	must(enc.EncodeNil())
	must(enc.EncodeArrayLen(1))
	must(enc.EncodeArrayLen(entryFields))
	must(enc.EncodeUint(1000))
	must(enc.EncodeUint(1<<33 + 1))
	must(enc.EncodeUint(uint64(core.EntryNormal)))
	must(enc.EncodeBytes([]byte("hello")))
	must(enc.EncodeNil())
	got, err := DecodeMessage(buf.Bytes())
	must(err)
	want := core.Message{Type: core.MsgApp, To: 2, From: 1, Term: 1000, LogTerm: 6, Index: 1 << 33, Commit: 70_000,
		Entries: []core.Entry{{Term: 1000, Index: 1<<33 + 1, Type: core.EntryNormal, Data: []byte("hello")}}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %+v\nwant %+v", got, want)
	}
}

func TestDecodedBytesDoNotAliasBody(t *testing.T) {
	m := testMessages()["every field"]
	m.Entries = append(m.Entries, core.Entry{Term: 1, Index: 3, Type: core.EntryNormal, Data: []byte("next")})
	body := encodeBody(t, &m)
	got, err := DecodeMessage(body)
	if err != nil {
		t.Fatal(err)
	}
	for i := range body {
		body[i] = 0xff
	}
	// Appending to one decoded slice must not write into its neighbour.
	_ = append(got.Entries[0].Data, 'x', 'x', 'x', 'x')
	_ = append(got.Context, 'x')
	if !reflect.DeepEqual(got, m) {
		t.Fatalf("decoded message changed with its body:\n got %+v\nwant %+v", got, m)
	}
}

func TestTruncatedBodiesError(t *testing.T) {
	for name, m := range testMessages() {
		if name == "big entries" || name == "snapshot big conf" {
			continue // megabytes of prefixes; the smaller ones cover every form
		}
		body := encodeBody(t, &m)
		for i := range body {
			if _, err := DecodeMessage(body[:i]); !errors.Is(err, ErrMalformed) {
				t.Fatalf("%s: body cut to %d of %d bytes: err %v", name, i, len(body), err)
			}
		}
		if _, err := DecodeMessage(append(body, 0)); !errors.Is(err, ErrMalformed) {
			t.Fatalf("%s: trailing byte: err %v", name, err)
		}
	}
}

func TestIntegersMustFitTheirTypes(t *testing.T) {
	for name, mutate := range map[string]func(b []byte) []byte{
		"message type 256": func(b []byte) []byte { return append(append(b[:1:1], 0xcd, 0x01, 0x00), b[2:]...) },
		"negative term":    func(b []byte) []byte { return append(append(b[:4:4], 0xd0, 0xff), b[5:]...) },
		"negative fixint":  func(b []byte) []byte { return append(append(b[:4:4], 0xff), b[5:]...) },
		"float term":       func(b []byte) []byte { return append(append(b[:4:4], 0xca, 0, 0, 0, 0), b[5:]...) },
	} {
		m := core.Message{Type: core.MsgVote, To: 1, From: 2, Term: 3}
		body := mutate(encodeBody(t, &m))
		if _, err := DecodeMessage(body); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: err %v", name, err)
		}
	}
	m := core.Message{Entries: []core.Entry{{Type: 1}}}
	body := encodeBody(t, &m)
	i := bytes.Index(body, []byte{0x94, 0, 0, 1}) + 3 // the entry's type
	body = append(append(body[:i:i], 0xcd, 0x01, 0x00), body[i+1:]...)
	if _, err := DecodeMessage(body); !errors.Is(err, ErrMalformed) {
		t.Errorf("entry type 256: err %v", err)
	}
}

// hostileBodies are 20-byte bodies (21 for an entry's data) whose headers declare 2^32-1 elements or
// bytes at each place a length is read.
func hostileBodies() map[string][]byte {
	pad := func(b []byte) []byte {
		for len(b) < 20 {
			b = append(b, 0)
		}
		return b
	}
	max32 := []byte{0xff, 0xff, 0xff, 0xff}
	fields := func(n int) []byte { // the message header and its first n fields
		valid := []byte{0, 0, 0, 0, 0, 0, 0, mpFalse, 0, mpNil, mpNil, mpNil}
		return append([]byte{0x9c}, valid[:n]...)
	}
	cat := func(parts ...[]byte) []byte { return pad(bytes.Join(parts, nil)) }
	return map[string][]byte{
		"message array32":     cat([]byte{mpArray32}, max32),
		"message array16":     cat([]byte{mpArray16, 0xff, 0xff}),
		"context bin32":       cat(fields(9), []byte{mpBin32}, max32),
		"entries array32":     cat(fields(10), []byte{mpArray32}, max32),
		"entry bin32":         cat(fields(10), []byte{0x91, 0x94, 1, 1, 1, mpBin32}, max32),
		"entry array32":       cat(fields(10), []byte{0x91, mpArray32}, max32),
		"snapshot array32":    cat(fields(11), []byte{mpArray32}, max32),
		"voters array32":      cat(fields(11), []byte{0x94, 1, 1, 0x95, mpArray32}, max32),
		"extra field array32": cat([]byte{0xdc, 0, 13}, fields(12)[1:], []byte{mpArray32}, max32),
		"extra field map32":   cat([]byte{0xdc, 0, 13}, fields(12)[1:], []byte{mpMap32}, max32),
		"extra field str32":   cat([]byte{0xdc, 0, 13}, fields(12)[1:], []byte{mpStr32}, max32),
		"extra field ext32":   cat([]byte{0xdc, 0, 13}, fields(12)[1:], []byte{mpExt32}, max32),
	}
}

func TestHostileHeadersFailSmall(t *testing.T) {
	const runs = 100
	for name, body := range hostileBodies() {
		if len(body) > 21 { // 20, or 21 to reach an entry's data
			t.Fatalf("%s: %d bytes", name, len(body))
		}
		_, err := DecodeMessage(body)
		if !errors.Is(err, ErrMalformed) || !strings.ContainsAny(err.Error(), "0123456789") ||
			!strings.Contains(err.Error(), "4294967") && !strings.Contains(err.Error(), "65535") && !strings.Contains(err.Error(), "8589934590") {
			t.Fatalf("%s: err %v, want the declared length refused", name, err)
		}
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		for i := 0; i < runs; i++ {
			_, _ = DecodeMessage(body)
		}
		runtime.ReadMemStats(&after)
		perRun := (after.TotalAlloc - before.TotalAlloc) / runs
		t.Logf("%s: %v; %d bytes allocated per decode", name, err, perRun)
		// The bytes allocated are the error (300-500 bytes, a little more
		// under -race), not what the header claims (4 GiB).
		if perRun > 32*uint64(len(body)) {
			t.Errorf("%s: %d bytes allocated per decode of %d bytes", name, perRun, len(body))
		}
	}
}

func TestExtraTrailingFieldsAreSkipped(t *testing.T) {
	m := testMessages()["every field"]
	// Extra values of every kind a later version might append.
	extra := [][]byte{
		{0x05}, {0xe0}, {mpNil}, {mpTrue}, {0xa3, 'a', 'b', 'c'}, {mpBin8, 2, 9, 9},
		{mpFloat64, 0, 0, 0, 0, 0, 0, 0, 0}, {mpInt16, 0xff, 0xfe}, {0xd5, 1, 2, 3},
		{mpExt8, 1, 7, 0}, {0x82, 1, 0x91, 2, 0xa1, 'k', mpNil}, {mpArray16, 0, 2, 0x90, 0x80},
		{mpStr16, 0, 1, 'z'}, {mpMap16, 0, 0},
	}
	var b []byte
	b = appendArrayLen(b, messageFields+len(extra))
	full := encodeBody(t, &m)
	fields := full[1:]
	// Split the message body before the entries field to splice extra
	// fields into each nested array as well.
	head := fields[:bytes.Index(fields, []byte{0x91, 0x94})]
	b = append(b, head...)
	b = append(b, 0x91, 0x95, 1, 2, byte(core.EntryConfChange), mpBin8, 1, 1, 0xa2, 'n', 'u') // entry of 5 fields
	b = append(b, 0x95, 5, 4)                                                                 // snapshot of 5 fields
	b = append(b, 0x96, 0x93, 1, 2, 3, 0x91, 4, 0x93, 1, 2, 5, 0x91, 5, mpTrue, 0x90)         // confstate of 6
	b = appendBytes(b, []byte("snap"))
	b = append(b, mpFalse) // the snapshot's extra field
	for _, x := range extra {
		b = append(b, x...)
	}
	got, err := DecodeMessage(b)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, m) {
		t.Fatalf("got %+v\nwant %+v", got, m)
	}
}

func TestSkipDepthIsBounded(t *testing.T) {
	b := []byte{0x9d}
	b = append(b, make([]byte, 12)...) // twelve zero fields...
	b[10], b[11], b[12] = mpNil, mpNil, mpNil
	b[8] = mpFalse
	for i := 0; i < maxSkipDepth+2; i++ {
		b = append(b, 0x91)
	}
	b = append(b, 0)
	if _, err := DecodeMessage(b); !errors.Is(err, ErrMalformed) {
		t.Fatalf("err %v", err)
	}
	b = b[:13]
	for i := 0; i < maxSkipDepth; i++ {
		b = append(b, 0x91)
	}
	b = append(b, 0)
	if _, err := DecodeMessage(b); err != nil {
		t.Fatalf("nesting within the bound: %v", err)
	}
}

// countingReader counts the bytes read through it.
type countingReader struct {
	r io.Reader
	n int
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += n
	return n, err
}

func TestReadFrameRefusesOversizeBeforeReadingBody(t *testing.T) {
	for _, declared := range []uint32{1<<20 + 1, math.MaxUint32} {
		frame := binary.BigEndian.AppendUint32(nil, declared)
		frame = append(frame, Version1)
		frame = append(frame, make([]byte, 64)...)
		cr := &countingReader{r: bytes.NewReader(frame)}
		_, _, err := ReadFrame(cr, nil, 1<<20)
		if !errors.Is(err, ErrFrameTooLarge) {
			t.Fatalf("declared %d: err %v", declared, err)
		}
		if cr.n != frameHeaderBytes {
			t.Fatalf("declared %d: read %d bytes, want only the %d-byte header", declared, cr.n, frameHeaderBytes)
		}
	}
	m := core.Message{Type: core.MsgHeartbeat}
	frame, _ := AppendFrame(nil, Version1, &m)
	if _, _, err := ReadFrame(bytes.NewReader(frame), nil, len(frame)-5); !errors.Is(err, ErrFrameTooLarge) {
		t.Fatalf("one byte over: err %v", err)
	}
	if _, _, err := ReadFrame(bytes.NewReader(frame), nil, len(frame)-4); err != nil {
		t.Fatalf("exactly the max: err %v", err)
	}
}

func TestReadFrameEnds(t *testing.T) {
	m := core.Message{Type: core.MsgHeartbeat}
	frame, _ := AppendFrame(nil, Version1, &m)
	for _, tc := range []struct {
		name string
		in   []byte
		want error
	}{
		{"empty stream", nil, io.EOF},
		{"cut header", frame[:3], io.ErrUnexpectedEOF},
		{"cut before body", frame[:5], io.ErrUnexpectedEOF},
		{"cut body", frame[:len(frame)-1], io.ErrUnexpectedEOF},
		{"zero length", []byte{0, 0, 0, 0, 1}, ErrMalformed},
	} {
		if _, _, err := ReadFrame(bytes.NewReader(tc.in), nil, 1<<20); !errors.Is(err, tc.want) {
			t.Errorf("%s: err %v, want %v", tc.name, err, tc.want)
		}
	}
	if _, _, err := ReadFrame(bytes.NewReader(frame), nil, 0); err == nil {
		t.Error("maxFrame 0 accepted")
	}
}

func TestBuffersAreReused(t *testing.T) {
	m := testMessages()["app 64x128"]
	buf := make([]byte, 0, 64<<10)
	frame, err := AppendFrame(buf, Version1, &m)
	if err != nil {
		t.Fatal(err)
	}
	if &frame[0] != &buf[:1][0] {
		t.Fatal("AppendFrame did not use dst's capacity")
	}
	if n := testing.AllocsPerRun(20, func() { _, _ = AppendFrame(buf[:0], Version1, &m) }); n != 0 {
		t.Errorf("AppendFrame into a big enough buffer: %v allocs", n)
	}
	rbuf := make([]byte, 64<<10)
	r := bytes.NewReader(frame)
	_, body, err := ReadFrame(r, rbuf, len(frame))
	if err != nil {
		t.Fatal(err)
	}
	if &body[0] != &rbuf[0] {
		t.Fatal("ReadFrame did not read into buf")
	}
	if n := testing.AllocsPerRun(20, func() {
		r.Reset(frame)
		_, _, _ = ReadFrame(r, rbuf, len(frame))
	}); n != 0 {
		t.Errorf("ReadFrame into a big enough buffer: %v allocs", n)
	}
}

func TestAppendFrameRefusesUnknownVersion(t *testing.T) {
	dst := []byte("keep")
	out, err := AppendFrame(dst, 2, &core.Message{})
	if !errors.Is(err, ErrVersion) || string(out) != "keep" {
		t.Fatalf("out %q, err %v", out, err)
	}
}

func FuzzDecodeMessage(f *testing.F) {
	for _, m := range testMessages() {
		if len(m.Entries) > 8 || m.Snapshot != nil && len(m.Snapshot.Meta.ConfState.Learners) > 8 {
			continue // keep the corpus small
		}
		f.Add(encodeBody(f, &m))
	}
	for _, b := range hostileBodies() {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		m, err := DecodeMessage(body)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error not ErrMalformed: %v", err)
			}
			return
		}
		enc := encodeBody(t, &m)
		m2, err := DecodeMessage(enc)
		if err != nil {
			t.Fatalf("re-encoded message does not decode: %v", err)
		}
		if !reflect.DeepEqual(m, m2) {
			t.Fatalf("re-encoding changed the message:\n%+v\n%+v", m, m2)
		}
		if enc2 := encodeBody(t, &m2); !bytes.Equal(enc, enc2) {
			t.Fatal("encoding is not stable")
		}
	})
}

// BenchmarkEncodeDecode measures a MsgApp of 64 entries of 128 bytes, the
// batch shape of notes/dependencies.md.
func BenchmarkEncodeDecode(b *testing.B) {
	m := testMessages()["app 64x128"]
	frame, err := AppendFrame(nil, Version1, &m)
	if err != nil {
		b.Fatal(err)
	}
	b.Run("encode", func(b *testing.B) {
		buf := make([]byte, 0, len(frame))
		b.ReportAllocs()
		b.SetBytes(int64(len(frame)))
		for b.Loop() {
			buf, _ = AppendFrame(buf[:0], Version1, &m)
		}
	})
	b.Run("decode", func(b *testing.B) {
		body := frame[frameHeaderBytes:]
		b.ReportAllocs()
		b.SetBytes(int64(len(frame)))
		for b.Loop() {
			if _, err := DecodeMessage(body); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("roundtrip", func(b *testing.B) {
		buf := make([]byte, 0, len(frame))
		rbuf := make([]byte, len(frame))
		r := bytes.NewReader(nil)
		b.ReportAllocs()
		b.SetBytes(int64(len(frame)))
		for b.Loop() {
			buf, _ = AppendFrame(buf[:0], Version1, &m)
			r.Reset(buf)
			_, body, err := ReadFrame(r, rbuf, len(buf))
			if err != nil {
				b.Fatal(err)
			}
			if _, err := DecodeMessage(body); err != nil {
				b.Fatal(err)
			}
		}
	})
}
