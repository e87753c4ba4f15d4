package transport

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"math"
	"net"
	"time"

	"github.com/stepraft/stepraft/core"
)

// A snapshot travels on a connection of its own (kind snapshot), as frames
// of the agreed wire version:
//
//	header  [message, size]   the MsgSnap (metadata only) and the body length
//	chunk   bin               the body, in order, any number of chunks
//	end     [crc32c]          Castagnoli checksum of the whole body
//
// and the receiver answers with one frame, [ok, reason], once it has
// committed the body (and delivered the MsgSnap) or given up.

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// chunkHeaderBytes is a frame header plus a bin32 header.
const chunkHeaderBytes = frameHeaderBytes + 5

// errStreamBroken wraps failures of a snapshot stream.
var errStreamBroken = errors.New("transport: snapshot stream failed")

// startSnapshot starts sending the snapshot of m to p. t.mu is held.
func (t *TCP) startSnapshot(p *peer, m core.Message) {
	meta := snapMeta(&m)
	h := t.h
	p.mu.Lock()
	busy := p.snapping
	p.snapping = true
	p.mu.Unlock()
	t.wg.Add(1)
	go func() {
		defer t.wg.Done()
		if busy {
			h.SnapshotDone(p.id, meta, errBusy)
			return
		}
		err := t.sendSnapshot(p.id, &m)
		p.mu.Lock()
		p.snapping = false
		p.mu.Unlock()
		if err != nil {
			t.log.Warn("snapshot not sent", "peer", uint64(p.id), "index", uint64(meta.Index), "err", err)
			h.Unreachable(p.id)
		} else {
			t.log.Info("snapshot sent", "peer", uint64(p.id), "index", uint64(meta.Index))
		}
		h.SnapshotDone(p.id, meta, err)
	}()
}

// sendSnapshot streams the body of m's snapshot to id and waits for the
// receiver's verdict.
func (t *TCP) sendSnapshot(id core.NodeID, m *core.Message) error {
	if m.Snapshot == nil {
		return fmt.Errorf("%w: MsgSnap without a snapshot", errStreamBroken)
	}
	ctx, cancel := context.WithTimeout(t.ctx, t.cfg.SnapshotTimeout)
	defer cancel()
	body, size, err := t.handler().OpenSnapshot(m.Snapshot.Meta)
	if err != nil {
		return fmt.Errorf("%w: open: %w", errStreamBroken, err)
	}
	defer body.Close()
	conn, version, err := t.dial(ctx, id, kindSnapshot)
	if err != nil {
		return fmt.Errorf("%w: %w", errStreamBroken, err)
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	deadline, _ := ctx.Deadline()
	conn.SetDeadline(deadline)

	hdr := append(make([]byte, 0, 256), 0, 0, 0, 0, version)
	hdr = appendArrayLen(hdr, 2)
	hdr = appendMessage(hdr, m)
	hdr = appendUint(hdr, uint64(size))
	if len(hdr)-4 > t.cfg.MaxFrameBytes {
		return fmt.Errorf("%w: MsgSnap of %d bytes", ErrFrameTooLarge, len(hdr)-4)
	}
	if _, err := conn.Write(putFrameLen(hdr, 0)); err != nil {
		return fmt.Errorf("%w: %w", errStreamBroken, err)
	}
	sum, err := t.writeChunks(conn, body, size, version)
	if err != nil {
		return err
	}
	end := append(make([]byte, 0, 16), 0, 0, 0, 0, version)
	end = appendUint(appendArrayLen(end, 1), uint64(sum))
	if _, err := conn.Write(putFrameLen(end, 0)); err != nil {
		return fmt.Errorf("%w: %w", errStreamBroken, err)
	}
	return readVerdict(conn, version)
}

// writeChunks copies size bytes of body to conn as chunk frames and
// returns their checksum. The body must be exactly size bytes long.
func (t *TCP) writeChunks(conn net.Conn, body io.Reader, size int64, version uint8) (uint32, error) {
	buf := make([]byte, chunkHeaderBytes+t.cfg.SnapshotChunkBytes)
	var sum uint32
	for left := size; left > 0; {
		n := int(min(left, int64(t.cfg.SnapshotChunkBytes)))
		chunk := buf[chunkHeaderBytes : chunkHeaderBytes+n]
		if _, err := io.ReadFull(body, chunk); err != nil {
			return 0, fmt.Errorf("%w: read body: %w", errStreamBroken, err)
		}
		sum = crc32.Update(sum, castagnoli, chunk)
		binary.BigEndian.PutUint32(buf, uint32(1+5+n))
		buf[4] = version
		buf[5] = mpBin32
		binary.BigEndian.PutUint32(buf[6:], uint32(n))
		if _, err := conn.Write(buf[:chunkHeaderBytes+n]); err != nil {
			return 0, fmt.Errorf("%w: %w", errStreamBroken, err)
		}
		left -= int64(n)
	}
	// The body must end where its size said.
	var one [1]byte
	if n, _ := body.Read(one[:]); n != 0 {
		return 0, fmt.Errorf("%w: body longer than its size %d", errStreamBroken, size)
	}
	return sum, nil
}

// readVerdict reads the receiver's answer to a stream.
func readVerdict(conn net.Conn, version uint8) error {
	v, body, err := ReadFrame(conn, nil, maxHandshakeFrame)
	if err != nil {
		return fmt.Errorf("%w: no answer: %w", errStreamBroken, err)
	}
	if v != version {
		return fmt.Errorf("%w: answer in wire version %d: %w", errStreamBroken, v, ErrMalformed)
	}
	return decodeVerdict(body)
}

// decodeVerdict decodes the body of a receiver's answer: nil when it
// committed the snapshot.
func decodeVerdict(body []byte) error {
	d := decoder{b: body}
	n, err := d.arrayLen(2, 1)
	var ok bool
	var reason []byte
	if err == nil {
		ok, err = d.bool()
	}
	if err == nil {
		reason, err = d.bytes()
	}
	if err == nil {
		err = d.skipN(n-2, "snapshot answer")
	}
	if err == nil && len(d.b) != 0 {
		err = fmt.Errorf("%d trailing bytes", len(d.b))
	}
	if err != nil {
		return fmt.Errorf("%w: bad answer: %w: %w", errStreamBroken, ErrMalformed, err)
	}
	if !ok {
		return fmt.Errorf("%w: receiver: %s", errStreamBroken, reason)
	}
	return nil
}

func writeVerdict(conn net.Conn, version uint8, err error) {
	b := append(make([]byte, 0, 64), 0, 0, 0, 0, version)
	b = appendArrayLen(b, 2)
	b = appendBool(b, err == nil)
	reason := ""
	if err != nil {
		reason = clipReason(err.Error())
	}
	b = appendBytes(b, []byte(reason))
	conn.Write(putFrameLen(b, 0))
}

// receiveSnapshot runs the receiving side of a snapshot stream.
func (t *TCP) receiveSnapshot(conn net.Conn, br *bufio.Reader, from core.NodeID, version uint8, log *slog.Logger) {
	conn.SetDeadline(time.Now().Add(t.cfg.SnapshotTimeout))
	m, err := t.receiveBody(br, from, version)
	if err != nil {
		log.Warn("snapshot not received", "err", err)
		writeVerdict(conn, version, err)
		return
	}
	t.handler().Deliver(m)
	log.Info("snapshot received", "index", uint64(m.Snapshot.Meta.Index))
	writeVerdict(conn, version, nil)
}

// receiveBody reads a stream's header and body and commits the body.
func (t *TCP) receiveBody(br *bufio.Reader, from core.NodeID, version uint8) (core.Message, error) {
	v, body, err := ReadFrame(br, nil, t.cfg.MaxFrameBytes)
	if err != nil {
		return core.Message{}, err
	}
	d := decoder{b: body}
	n, err := d.arrayLen(2, 1)
	var m core.Message
	var size uint64
	if err == nil {
		m, err = d.message()
	}
	if err == nil {
		size, err = d.uint(math.MaxInt64)
	}
	if err == nil {
		err = d.skipN(n-2, "snapshot header")
	}
	switch {
	case err == nil && v != version:
		err = fmt.Errorf("wire version %d, want %d", v, version)
	case err == nil && len(d.b) != 0:
		err = fmt.Errorf("%d trailing bytes", len(d.b))
	}
	switch {
	case err != nil:
		return m, fmt.Errorf("%w: snapshot header: %w", ErrMalformed, err)
	case m.Type != core.MsgSnap || m.Snapshot == nil || m.From != from || m.To != t.cfg.ID:
		return m, fmt.Errorf("%w: snapshot header holds %s from %d to %d", ErrMalformed, m.Type, m.From, m.To)
	}
	w, err := t.handler().ReceiveSnapshot(from, *m.Snapshot, int64(size))
	if err != nil {
		return m, fmt.Errorf("transport: receive snapshot: %w", err)
	}
	if err := t.copyChunks(br, w, int64(size), version); err != nil {
		return m, errors.Join(err, w.Abort())
	}
	if err := w.Commit(); err != nil {
		return m, fmt.Errorf("transport: commit snapshot: %w", err)
	}
	return m, nil
}

// copyChunks writes the chunks of a stream to w and checks the end frame.
func (t *TCP) copyChunks(br *bufio.Reader, w io.Writer, size int64, version uint8) error {
	var buf []byte
	var sum uint32
	var got int64
	for {
		v, body, err := ReadFrame(br, buf, t.cfg.MaxFrameBytes)
		if err != nil {
			return fmt.Errorf("%w: %w", errStreamBroken, err)
		}
		buf = body[:0]
		if v != version || len(body) == 0 {
			return fmt.Errorf("%w: bad snapshot frame", ErrMalformed)
		}
		if body[0]&0xf0 == 0x90 { // the end frame
			d := decoder{b: body}
			n, err := d.arrayLen(1, 1)
			var want uint64
			if err == nil {
				want, err = d.uint(math.MaxUint32)
			}
			if err == nil {
				err = d.skipN(n-1, "snapshot end")
			}
			switch {
			case err != nil:
				return fmt.Errorf("%w: snapshot end: %w", ErrMalformed, err)
			case got != size:
				return fmt.Errorf("%w: body of %d bytes, %d announced", errStreamBroken, got, size)
			case uint32(want) != sum:
				return fmt.Errorf("%w: body checksum %08x, sender says %08x", errStreamBroken, sum, want)
			}
			return nil
		}
		d := decoder{b: body}
		chunk, err := d.binView()
		if err == nil && len(d.b) != 0 {
			err = fmt.Errorf("%d trailing bytes", len(d.b))
		}
		if err != nil {
			return fmt.Errorf("%w: snapshot chunk: %w", ErrMalformed, err)
		}
		if got += int64(len(chunk)); got > size {
			return fmt.Errorf("%w: body longer than the %d bytes announced", errStreamBroken, size)
		}
		sum = crc32.Update(sum, castagnoli, chunk)
		if _, err := w.Write(chunk); err != nil {
			return fmt.Errorf("transport: write snapshot: %w", err)
		}
	}
}
