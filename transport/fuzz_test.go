package transport

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"io"
	"math"
	"reflect"
	"runtime"
	"testing"

	"github.com/stepraft/stepraft/core"
)

// The fuzz targets here run their seed corpora as ordinary tests; run one
// for real with
//
//	go test -run '^$' -fuzz '^FuzzReadFrame$' -fuzztime 20s ./transport
//
// FuzzDecodeMessage is in wire_test.go.

// frameSeeds are whole frames for the fuzzers' corpora: valid message and
// handshake frames, and hostile ones.
func frameSeeds() [][]byte {
	var out [][]byte
	for _, g := range goldenFrames() {
		out = append(out, g.encode())
	}
	return append(out,
		nil,
		[]byte{0, 0},                              // cut in the header
		[]byte{0, 0, 0, 0, 1},                     // zero length
		[]byte{0, 0, 0, 1, 1},                     // an empty body
		[]byte{0xff, 0xff, 0xff, 0xff, 1},         // 4 GiB declared
		[]byte{0x7f, 0xff, 0xff, 0xff, 1, 0xc6},   // 2 GiB declared, one byte sent
		[]byte{0, 0, 0x10, 0x01, 1, 0xc0, 0xc0},   // 4 KiB + 1 declared, two sent
		append([]byte{0, 0, 0, 9, 1}, 1, 2, 3, 4), // cut in the body
	)
}

func FuzzReadFrame(f *testing.F) {
	for _, s := range frameSeeds() {
		f.Add(s, uint16(4096), uint16(0))
		f.Add(s, uint16(16), uint16(64))
	}
	two := append(frameSeeds()[0], frameSeeds()[1]...)
	f.Add(two, uint16(4096), uint16(512))
	f.Add(append(bytes.Clone(two), 0, 0, 0), uint16(4096), uint16(3))
	// A buffer exactly the size of the body.
	f.Add(frameSeeds()[0], uint16(4096), uint16(len(frameSeeds()[0])-frameHeaderBytes))
	// Frames of exactly the maximum (16) and one byte more.
	f.Add(append(append([]byte{0, 0, 0, 16, 1}, make([]byte, 15)...), append([]byte{0, 0, 0, 17, 1}, make([]byte, 16)...)...), uint16(15), uint16(0))
	f.Fuzz(func(t *testing.T, data []byte, maxFrame, bufCap uint16) {
		maxLen := 1 + int(maxFrame)%4096 // small: at most 4 KiB
		buf := make([]byte, 0, int(bufCap)%1024)
		r := bytes.NewReader(data)
		// Each frame read is checked against this model of the layout.
		for off := 0; ; {
			rest := data[off:]
			v, body, err := ReadFrame(r, buf, maxLen)
			consumed := len(data) - r.Len() - off
			if err != nil && body != nil {
				t.Fatalf("error %v with a body of %d bytes", err, len(body))
			}
			switch {
			case len(rest) == 0:
				if err != io.EOF {
					t.Fatalf("at the end of the input: %v, want io.EOF", err)
				}
				return
			case len(rest) < frameHeaderBytes:
				if err != io.ErrUnexpectedEOF {
					t.Fatalf("header cut after %d bytes: %v, want io.ErrUnexpectedEOF", len(rest), err)
				}
				return
			}
			n := binary.BigEndian.Uint32(rest)
			switch {
			case n == 0:
				if !errors.Is(err, ErrMalformed) || consumed != frameHeaderBytes {
					t.Fatalf("zero length: %v after %d bytes, want ErrMalformed after the header", err, consumed)
				}
				return
			case uint64(n) > uint64(maxLen):
				if !errors.Is(err, ErrFrameTooLarge) || consumed != frameHeaderBytes {
					t.Fatalf("length %d > max %d: %v after %d bytes, want ErrFrameTooLarge after the header", n, maxLen, err, consumed)
				}
				return
			case uint64(len(rest)-frameHeaderBytes) < uint64(n-1):
				if err != io.ErrUnexpectedEOF {
					t.Fatalf("body of %d cut after %d bytes: %v, want io.ErrUnexpectedEOF", n-1, len(rest)-frameHeaderBytes, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("frame of length %d (max %d): %v", n, maxLen, err)
			}
			if len(body) != int(n-1) || v != rest[4] || consumed != frameHeaderBytes+len(body) {
				t.Fatalf("declared length %d version %d: got a body of %d bytes, version %d, %d bytes consumed", n, rest[4], len(body), v, consumed)
			}
			if !bytes.Equal(body, rest[frameHeaderBytes:frameHeaderBytes+len(body)]) {
				t.Fatal("body differs from the input")
			}
			if len(body) > 0 && cap(buf) >= max(len(body), frameHeaderBytes) && &body[:1][0] != &buf[:1][0] {
				t.Fatalf("a body of %d bytes was not read into a buffer of capacity %d", len(body), cap(buf))
			}
			off += consumed
			buf = body[:0] // reused, as a connection's reader does
		}
	})
}

// handshakeBody is the body of a handshake frame (what readHandshake
// returns).
func handshakeBody(frame []byte) []byte { return frame[frameHeaderBytes:] }

func FuzzDecodeHello(f *testing.F) {
	for _, g := range goldenHellos {
		f.Add(handshakeBody(appendHello(nil, &g.h)))
	}
	h := hello{Cluster: math.MaxUint64, From: math.MaxUint64, To: 1, MinVersion: 1, MaxVersion: 255, Kind: 255}
	f.Add(handshakeBody(appendHello(nil, &h)))
	valid := handshakeBody(appendHello(nil, &goldenHellos[0].h))
	// Hellos of a later version, with one and two more fields.
	f.Add(append(append([]byte{0x98}, valid[1:]...), 0x92, 0x01, 0x02))
	f.Add(append(append([]byte{0x99}, valid[1:]...), 0xc4, 0x02, 'h', 'i', 0x92, 1, 2))
	for _, hostile := range [][]byte{
		{0xdd, 0xff, 0xff, 0xff, 0xff},                                     // an array of 4G fields
		{0x97, 0xc6, 0xff, 0xff, 0xff, 0xff, 's'},                          // a magic of 4 GiB
		append([]byte{0xdc, 0xff, 0xff}, valid[1:]...),                     // 65535 fields, 7 sent
		append(append([]byte{0x98}, valid[1:]...), 0xdd, 0xff, 0xff, 0xff), // an extra field of 4G elements
		append(append([]byte{0x98}, valid[1:]...), bytes.Repeat([]byte{0x91}, 100)...),
		{0x97, 0xc4, 0x08, 'h', 't', 't', 'p', '/', '1', '.', '1'},
	} {
		f.Add(hostile)
	}
	// Hellos that decode as msgpack but that no dialer sends.
	for _, bad := range []hello{
		{Cluster: 1, From: 0, To: 2, MinVersion: 1, MaxVersion: 1, Kind: kindMessages},
		{Cluster: 1, From: 1, To: 0, MinVersion: 1, MaxVersion: 1, Kind: kindMessages},
		{Cluster: 1, From: 1, To: 2, MinVersion: 0, MaxVersion: 1, Kind: kindMessages},
		{Cluster: 1, From: 1, To: 2, MinVersion: 2, MaxVersion: 1, Kind: kindMessages},
	} {
		f.Add(handshakeBody(appendHello(nil, &bad)))
	}
	for _, hostile := range [][]byte{
		{0x97, 0xc4, 0x08, 's', 't', 'e', 'p', 'r', 'a', 'f', 't', 1, 1, 2, 1, 0xcd, 1, 0, 1}, // max version 256
		{0x97, 0xc4, 0x08, 's', 't', 'e', 'p', 'r', 'a', 'f', 't', 1, 1, 2, 1, 1, 0xcd, 1, 0}, // kind 256
		{0x97, 0xc4, 0x08, 's', 't', 'e', 'p', 'r', 'a', 'f', 't', 1, 0xd0, 0xff, 2, 1, 1, 1}, // from -1
		{0x97, 0xc4, 0x08, 's', 't', 'e', 'p', 'r', 'a', 'f', 't', 1, 0xd0, 0x7f, 2, 1, 1, 1}, // from 127 as an int8
	} {
		f.Add(hostile)
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		h, err := decodeHello(body)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error not ErrMalformed: %v", err)
			}
			return
		}
		if h.From == 0 || h.To == 0 || h.MinVersion == 0 || h.MinVersion > h.MaxVersion {
			t.Fatalf("decoded a hello no dialer sends: %+v", h)
		}
		frame := appendHello(nil, &h)
		if len(frame)-4 > maxHandshakeFrame {
			t.Fatalf("hello re-encoded in %d bytes, more than a handshake frame holds", len(frame)-4)
		}
		body2, err := readHandshake(bytes.NewReader(frame))
		if err != nil {
			t.Fatal(err)
		}
		h2, err := decodeHello(body2)
		if err != nil {
			t.Fatalf("re-encoded hello does not decode: %v", err)
		}
		if h2 != h {
			t.Fatalf("round trip changed the hello:\n got %+v\nwant %+v", h2, h)
		}
		if !bytes.Equal(appendHello(nil, &h2), frame) {
			t.Fatal("encoding is not stable")
		}
	})
}

func FuzzDecodeReply(f *testing.F) {
	for _, g := range goldenReplies {
		f.Add(handshakeBody(appendReply(nil, &g.r)))
	}
	for st := statusOK; st <= statusLast; st++ {
		r := reply{Status: st, From: math.MaxUint64, Reason: st.String()}
		if st == statusOK {
			r.Version = 255
		}
		f.Add(handshakeBody(appendReply(nil, &r)))
	}
	long := reply{Status: statusBusy, From: 2, Reason: string(bytes.Repeat([]byte("x"), maxReasonBytes))}
	f.Add(handshakeBody(appendReply(nil, &long)))
	valid := handshakeBody(appendReply(nil, &goldenReplies[1].r))
	for _, hostile := range [][]byte{
		{0xdd, 0xff, 0xff, 0xff, 0xff},                                                              // an array of 4G fields
		{0x94, 0x01, 0x01, 0x02, 0xc6, 0xff, 0xff, 0xff, 0xff, 'x'},                                 // a reason of 4 GiB
		{0x94, 0x01, 0x01, 0x02, 0xc5, 0x01, 0x01},                                                  // a reason of 257 bytes, none sent
		append([]byte{0x94, 0x01, 0x01, 0x02, 0xc5, 0x01, 0x01}, bytes.Repeat([]byte{'r'}, 257)...), // and sent
		{0x94, 0x00, 0x01, 0x02, 0xc0},                                                              // status 0
		{0x94, 0x01, 0x00, 0x02, 0xc0},                                                              // ok without a version
		append(append([]byte{0x95}, valid[1:]...), 0xdf, 0xff, 0xff),                                // an extra map of 64K entries
	} {
		f.Add(hostile)
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		r, err := decodeReply(body)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error not ErrMalformed: %v", err)
			}
			return
		}
		if r.Status == 0 || r.Status > statusLast || (r.Status == statusOK && r.Version == 0) || len(r.Reason) > maxReasonBytes {
			t.Fatalf("decoded a reply no listener sends: %+v", r)
		}
		frame := appendReply(nil, &r)
		if len(frame)-4 > maxHandshakeFrame {
			t.Fatalf("reply re-encoded in %d bytes, more than a handshake frame holds", len(frame)-4)
		}
		body2, err := readHandshake(bytes.NewReader(frame))
		if err != nil {
			t.Fatal(err)
		}
		r2, err := decodeReply(body2)
		if err != nil {
			t.Fatalf("re-encoded reply does not decode: %v", err)
		}
		if r2 != r {
			t.Fatalf("round trip changed the reply:\n got %+v\nwant %+v", r2, r)
		}
		if !bytes.Equal(appendReply(nil, &r2), frame) {
			t.Fatal("encoding is not stable")
		}
	})
}

// streamHandler is the Handler of FuzzSnapshotStream: it keeps no body,
// only what the checks need about the one stream being received.
type streamHandler struct {
	opened int
	w      *streamWriter
}

type streamWriter struct {
	snap            core.Snapshot // as given to ReceiveSnapshot
	size            int64         // as given to ReceiveSnapshot
	n               int64         // bytes written
	commits, aborts int
	committedLen    int64
	writeAfterEnd   bool
	overrun         bool // more than size bytes were written
}

func (h *streamHandler) Deliver(core.Message)                               {}
func (h *streamHandler) Unreachable(core.NodeID)                            {}
func (h *streamHandler) SnapshotDone(core.NodeID, core.SnapshotMeta, error) {}
func (h *streamHandler) Removed(core.NodeID)                                {}
func (h *streamHandler) OpenSnapshot(core.SnapshotMeta) (io.ReadCloser, int64, error) {
	return nil, 0, errors.New("not a sender")
}

func (h *streamHandler) ReceiveSnapshot(from core.NodeID, snap core.Snapshot, size int64) (SnapshotWriter, error) {
	h.opened++
	h.w = &streamWriter{snap: snap, size: size}
	return h.w, nil
}

func (w *streamWriter) Write(p []byte) (int, error) {
	if w.commits+w.aborts > 0 {
		w.writeAfterEnd = true
	}
	if w.n += int64(len(p)); w.n > w.size {
		w.overrun = true
	}
	return len(p), nil
}

func (w *streamWriter) Commit() error {
	w.commits++
	w.committedLen = w.n
	return nil
}

func (w *streamWriter) Abort() error {
	w.aborts++
	return nil
}

// snapStream is a whole snapshot stream from node 1 to node 2 as the
// sender writes it: header, body in chunks of chunk bytes, end frame.
func snapStream(m core.Message, body []byte, chunk int) []byte {
	s := appendSnapHeader(nil, Version1, &m, uint64(len(body)))
	for rest := body; len(rest) > 0; {
		n := min(chunk, len(rest))
		s = appendChunk(s, Version1, rest[:n])
		rest = rest[n:]
	}
	return appendStreamEnd(s, Version1, crc32.Checksum(body, castagnoli))
}

// streamMaxFrame is the MaxFrameBytes of FuzzSnapshotStream's receiver:
// the smallest allowed, so that a frame cut short costs little to fuzz.
const streamMaxFrame = 64 << 10

// streamAllocBound is the most that receiving a stream of n bytes may
// allocate. The stream ends at the first error, so at most one frame is
// cut short, and ReadFrame allocates for it at most streamMaxFrame (the
// largest length it accepts, below the MiB it reads ahead of the arriving
// bytes). Every complete frame costs at most its own size, once: the
// chunk buffer is reused and grows only for a larger frame. Decoding the
// header allocates at most 48/5 of its bytes for an entries array (a
// 48-byte core.Entry per 5-byte minimal entry the body could hold), 8 per
// byte for node ID arrays, and its bytes once more for the copied byte
// slices; these arrays cover disjoint parts of the header. So 16 bytes per
// input byte cover the worst case with room to spare, and a constant
// covers the frame cut short and fixed costs: the 64-byte header buffers,
// the writer, error values, and caches a GC emptied (fmt's printers)
// filled again, with room for the size classes allocations round up to.
// A receiver that trusted a declared length (a 4 GiB frame or bin, a
// 4G-element array, a body of 2^63 bytes) would pass this bound by orders
// of magnitude.
func streamAllocBound(n int) uint64 {
	return 16*uint64(n) + streamMaxFrame + 512<<10
}

func FuzzSnapshotStream(f *testing.F) {
	hdr := goldenSnapHeader.m
	for _, c := range []struct {
		size, chunk int
	}{{0, 1}, {1, 1}, {100, 7}, {600, 250}} {
		// Small: each exec stops the world twice (ReadMemStats), and
		// the fuzzer minimizes a new input one byte at a time.
		f.Add(snapStream(hdr, goldenBody(c.size), c.chunk))
	}
	valid := snapStream(hdr, goldenBody(100), 40)
	headerLen := len(appendSnapHeader(nil, Version1, &hdr, 100))
	lie := func(size uint64) []byte { // a header announcing size, then valid's body
		return append(appendSnapHeader(nil, Version1, &hdr, size), valid[headerLen:]...)
	}
	for _, s := range [][]byte{
		lie(99),            // a body longer than announced
		lie(101),           // a body shorter than announced
		lie(math.MaxInt64), // a body of 2^63 - 1 bytes announced
		append(bytes.Clone(valid[:len(valid)-1]), 0), // a wrong checksum
		valid[:len(valid)-20],                        // cut in a chunk
		valid[:headerLen],                            // the header only
		// Chunk frames declaring 4 GiB, 60 MiB, 64 KiB (all but the
		// first under the Config default), of which a few bytes come.
		append(valid[:headerLen:headerLen], 0xff, 0xff, 0xff, 0xff, 1, 0xc6),
		append(valid[:headerLen:headerLen], 0x03, 0xc0, 0, 0, 1, 0xc6, 0, 0x3f, 0xff, 0xf0, 1, 2, 3),
		append(valid[:headerLen:headerLen], 0, 1, 0, 0, 1, 0xc5, 0xff, 0xfa, 1, 2, 3),
		// A small chunk frame holding a bin32 of 4 GiB.
		append(valid[:headerLen:headerLen], 0, 0, 0, 7, 1, 0xc6, 0xff, 0xff, 0xff, 0xff, 1),
		// Header frames declaring 64 MiB and 64 KiB, cut short.
		{0x04, 0, 0, 0, 1, 0x92},
		{0, 1, 0, 0, 1, 0x92},
		// A header whose message declares 4G entries.
		rawFrame(0x92, 0x9c, 10, 2, 1, 8, 0, 0, 0, 0xc2, 0, 0xc0, 0xdd, 0xff, 0xff, 0xff, 0xff, 0xc0, 100),
		// A header whose snapshot declares 4G voters.
		rawFrame(0x92, 0x9c, 10, 2, 1, 8, 0, 0, 0, 0xc2, 0, 0xc0, 0xc0, 0x94, 1, 1, 0x95, 0xdd, 0xff, 0xff, 0xff, 0xff),
	} {
		f.Add(s)
	}
	other := hdr
	other.From = 3
	f.Add(snapStream(other, goldenBody(10), 10)) // from another node than the connection's
	other = hdr
	other.Type = core.MsgApp
	f.Add(snapStream(other, goldenBody(10), 10)) // not a MsgSnap

	const self, from = 2, 1
	h := &streamHandler{}
	tr, err := NewTCP(Config{ID: self, ClusterID: testCluster, Listen: "127.0.0.1:0", MaxFrameBytes: streamMaxFrame})
	if err != nil {
		f.Fatal(err)
	}
	if err := tr.Start(h); err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { tr.Close() })

	// receive runs the receiving side over stream and returns what it
	// allocated.
	receive := func(stream []byte) (core.Message, uint64, error) {
		h.opened, h.w = 0, nil
		// A small buffer, so that frames straddle its refills.
		br := bufio.NewReaderSize(bytes.NewReader(stream), 64)
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		m, err := tr.receiveBody(br, from, Version1)
		runtime.ReadMemStats(&after)
		return m, after.TotalAlloc - before.TotalAlloc, err
	}
	f.Fuzz(func(t *testing.T, stream []byte) {
		m, alloc, err := receive(stream)
		// TotalAlloc counts the whole process, and the fuzzing engine's
		// own goroutines allocate now and then while the receiver runs.
		// The receiver allocates the same for the same input, so the
		// least of a few measurements is its own.
		bound := streamAllocBound(len(stream))
		for try := 1; try < 5 && alloc > bound; try++ {
			var again uint64
			m, again, err = receive(stream)
			alloc = min(alloc, again)
		}
		if alloc > bound {
			t.Fatalf("receiving a stream of %d bytes allocated %d bytes, bound %d", len(stream), alloc, bound)
		}
		if h.opened > 1 {
			t.Fatalf("ReceiveSnapshot called %d times for one stream", h.opened)
		}
		w := h.w
		if w != nil && w.writeAfterEnd {
			t.Fatal("body written after Commit or Abort")
		}
		if w != nil && w.overrun {
			// ReceiveSnapshot promises size bytes: a handler may have
			// allocated just that.
			t.Fatalf("%d bytes written to a writer prepared for %d", w.n, w.size)
		}
		if err != nil {
			if w != nil && (w.commits != 0 || w.aborts != 1) {
				t.Fatalf("stream failed (%v) after %d commits and %d aborts, want 0 and 1", err, w.commits, w.aborts)
			}
			return
		}
		if w == nil || w.commits != 1 || w.aborts != 0 {
			t.Fatalf("stream accepted without exactly one commit: %+v", w)
		}
		if m.Type != core.MsgSnap || m.Snapshot == nil || m.From != from || m.To != self {
			t.Fatalf("accepted a header holding %+v", m)
		}
		if !reflect.DeepEqual(w.snap, *m.Snapshot) {
			t.Fatalf("ReceiveSnapshot was given %+v, the header holds %+v", w.snap, *m.Snapshot)
		}
		// The size given to ReceiveSnapshot, read from the header again.
		_, body, err := ReadFrame(bytes.NewReader(stream), nil, len(stream))
		if err != nil {
			t.Fatal(err)
		}
		d := decoder{b: body}
		var size uint64
		_, err = d.arrayLen(2, 1)
		if err == nil {
			_, err = d.message()
		}
		if err == nil {
			size, err = d.uint(math.MaxInt64)
		}
		if err != nil {
			t.Fatalf("accepted a header that does not decode: %v", err)
		}
		if w.size != int64(size) || w.committedLen != w.size {
			t.Fatalf("committed %d bytes; ReceiveSnapshot was told %d, the header says %d", w.committedLen, w.size, size)
		}
	})
}

// FuzzDecodeVerdict: a receiver's answer to a snapshot stream. Whatever
// the bytes, no panic; only a well-formed [true, reason] is a success.
func FuzzDecodeVerdict(f *testing.F) {
	for _, ok := range []bool{true, false} {
		b := appendArrayLen(nil, 2)
		b = appendBool(b, ok)
		f.Add(appendBytes(b, []byte("reason")))
	}
	f.Add([]byte{0x92, mpTrue, mpBin32, 0xff, 0xff, 0xff, 0xff})
	f.Add([]byte{0xdd, 0xff, 0xff, 0xff, 0xff})
	f.Add([]byte{})
	f.Add([]byte{mpArray16, 0, 2, mpTrue, mpNil})
	f.Fuzz(func(t *testing.T, body []byte) {
		if decodeVerdict(body) != nil {
			return
		}
		// A success must say true in its first field.
		d := decoder{b: body}
		if _, err := d.arrayLen(2, 1); err != nil {
			t.Fatalf("% x accepted, but it is not an array of 2 or more: %v", body, err)
		}
		if ok, err := d.bool(); err != nil || !ok {
			t.Fatalf("% x accepted as a success, first field %v %v", body, ok, err)
		}
	})
}
