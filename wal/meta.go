package wal

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"

	"github.com/stepraft/stepraft/core"
	"github.com/stepraft/stepraft/internal/synclog"
)

// The metadata file holds what is not an entry: hard state, the snapshot
// the log starts after, the point it was compacted at, and the identity of
// the cluster and node. It has two slots of metaSlotSize bytes, written in
// turn with pwrite; a slot is
//
//	[8]byte magic "STPRMETA"
//	uint16  format version (metaVersion)
//	uint64  sequence number (a later write has a higher one)
//	uint32  payload length
//	payload (see encodeMeta)
//	uint32  CRC32C of everything before it
//
// all big endian. On open the valid slot with the higher sequence number
// wins, so a write torn by a crash leaves the other slot in force. A write
// always goes to the slot that does not hold the last synced state, so an
// unsynced write (the commit index, written lazily) can never overwrite
// the only durable copy of a term or vote.

const (
	metaFile     = "meta"
	metaSlotSize = 4096
	metaVersion  = 1
	metaHeader   = 8 + 2 + 8 + 4
	// metaMaxIDs bounds the members a configuration may list, so that a
	// slot always fits.
	metaMaxIDs = (metaSlotSize - metaHeader - 4 - 9*8 - 1 - 4*4) / 8
)

var metaMagic = [8]byte{'S', 'T', 'P', 'R', 'M', 'E', 'T', 'A'}

// meta is the content of a metadata slot.
type meta struct {
	seq       uint64
	clusterID uint64
	nodeID    uint64
	hard      core.HardState
	// snap is the snapshot the log starts after (index, term, config).
	snap core.SnapshotMeta
	// compactIndex/compactTerm are the entry the log was compacted at:
	// FirstIndex()-1. It is at most snap.Index.
	compactIndex core.Index
	compactTerm  core.Term
}

func (m *meta) encode() ([]byte, error) {
	cs := m.snap.ConfState
	if n := len(cs.Voters) + len(cs.VotersOutgoing) + len(cs.Learners) + len(cs.LearnersNext); n > metaMaxIDs {
		return nil, fmt.Errorf("wal: configuration of %d members does not fit the metadata (at most %d)", n, metaMaxIDs)
	}
	b := make([]byte, metaHeader, metaSlotSize)
	copy(b, metaMagic[:])
	binary.BigEndian.PutUint16(b[8:], metaVersion)
	binary.BigEndian.PutUint64(b[10:], m.seq)
	for _, x := range []uint64{m.clusterID, m.nodeID, uint64(m.hard.Term), uint64(m.hard.Vote), uint64(m.hard.Commit),
		uint64(m.snap.Index), uint64(m.snap.Term), uint64(m.compactIndex), uint64(m.compactTerm)} {
		b = binary.BigEndian.AppendUint64(b, x)
	}
	for _, ids := range [][]core.NodeID{cs.Voters, cs.VotersOutgoing, cs.Learners, cs.LearnersNext} {
		b = binary.BigEndian.AppendUint32(b, uint32(len(ids)))
		for _, id := range ids {
			b = binary.BigEndian.AppendUint64(b, uint64(id))
		}
	}
	if cs.AutoLeave {
		b = append(b, 1)
	} else {
		b = append(b, 0)
	}
	binary.BigEndian.PutUint32(b[18:], uint32(len(b)-metaHeader))
	b = binary.BigEndian.AppendUint32(b, crc32.Checksum(b, castagnoli))
	return b, nil
}

// decodeMeta decodes a slot; it never allocates more than the slot holds.
func decodeMeta(b []byte) (meta, error) {
	bad := func(format string, args ...any) (meta, error) {
		return meta{}, fmt.Errorf("%w: metadata slot: %s", ErrCorrupt, fmt.Sprintf(format, args...))
	}
	if len(b) < metaHeader+4 {
		return bad("%d bytes, too short", len(b))
	}
	if !bytes.Equal(b[:8], metaMagic[:]) {
		return bad("bad magic %q", b[:8])
	}
	if v := binary.BigEndian.Uint16(b[8:]); v != metaVersion {
		return bad("unknown format version %d", v)
	}
	n := binary.BigEndian.Uint32(b[18:])
	if uint64(n) > uint64(len(b)-metaHeader-4) {
		return bad("payload of %d bytes in a slot of %d", n, len(b))
	}
	end := metaHeader + int(n)
	if got, want := crc32.Checksum(b[:end], castagnoli), binary.BigEndian.Uint32(b[end:]); got != want {
		return bad("checksum %08x, want %08x", got, want)
	}
	m := meta{seq: binary.BigEndian.Uint64(b[10:])}
	p := b[metaHeader:end]
	u64 := func() uint64 {
		if len(p) < 8 {
			p = nil
			return 0
		}
		x := binary.BigEndian.Uint64(p)
		p = p[8:]
		return x
	}
	if len(p) < 9*8+4*4+1 {
		return bad("payload of %d bytes, too short", len(p))
	}
	m.clusterID, m.nodeID = u64(), u64()
	m.hard = core.HardState{Term: core.Term(u64()), Vote: core.NodeID(u64()), Commit: core.Index(u64())}
	m.snap.Index, m.snap.Term = core.Index(u64()), core.Term(u64())
	m.compactIndex, m.compactTerm = core.Index(u64()), core.Term(u64())
	var lists [4][]core.NodeID
	for i := range lists {
		if len(p) < 4 {
			return bad("truncated configuration")
		}
		k := binary.BigEndian.Uint32(p)
		p = p[4:]
		if uint64(k)*8 > uint64(len(p)) {
			return bad("configuration list of %d members in %d bytes", k, len(p))
		}
		for range k {
			lists[i] = append(lists[i], core.NodeID(u64()))
		}
	}
	if len(p) != 1 || p[0] > 1 {
		return bad("bad tail of %d bytes", len(p))
	}
	m.snap.ConfState = core.ConfState{Voters: lists[0], VotersOutgoing: lists[1], Learners: lists[2],
		LearnersNext: lists[3], AutoLeave: p[0] == 1}
	if m.compactIndex > m.snap.Index {
		return bad("compacted at %d, past the snapshot at %d", m.compactIndex, m.snap.Index)
	}
	return m, nil
}

// metaStore reads and writes the two slots.
type metaStore struct {
	f *os.File
	// synced is the slot holding the last synced state, or -1 if none.
	synced int
	cur    meta
}

var errNoMeta = fmt.Errorf("%w: no valid metadata slot", ErrCorrupt)

// openMeta opens (or creates) the metadata file and loads the newest valid
// slot. fresh reports a file that held nothing yet. With noEntries (the log
// holds no entry), a file whose slots are both invalid is taken for a new
// log torn in its very first write: nothing was promised from it.
func openMeta(path string, noEntries bool) (ms *metaStore, fresh bool, err error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o640)
	if err != nil {
		return nil, false, fmt.Errorf("wal: open metadata: %w", err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, false, fmt.Errorf("wal: stat metadata: %w", err)
	}
	ms = &metaStore{f: f, synced: -1}
	if fi.Size() == 0 {
		return ms, true, nil
	}
	var errs [2]error
	best := -1
	var slots [2]meta
	for i := range 2 {
		buf := make([]byte, metaSlotSize)
		n, err := f.ReadAt(buf, int64(i)*metaSlotSize)
		if err != nil && !errors.Is(err, io.EOF) {
			f.Close()
			return nil, false, fmt.Errorf("wal: read metadata slot %d: %w", i, err)
		}
		slots[i], errs[i] = decodeMeta(buf[:n])
		if errs[i] == nil && (best < 0 || slots[i].seq > slots[best].seq) {
			best = i
		}
	}
	// Only the first write of a log goes to slot 0 without slot 1 ever
	// being written: a file no longer than one slot has seen nothing but
	// that first, empty, write.
	if best < 0 && noEntries && fi.Size() <= metaSlotSize {
		if err := f.Truncate(0); err != nil {
			f.Close()
			return nil, false, fmt.Errorf("wal: reset metadata: %w", err)
		}
		return ms, true, nil
	}
	if best < 0 {
		f.Close()
		return nil, false, fmt.Errorf("%w in %s: slot 0: %v; slot 1: %v", errNoMeta, path, errs[0], errs[1])
	}
	// What was read may still be only in the page cache (a process crash
	// after an unsynced write): make it durable before trusting it as the
	// synced slot.
	if err := fdatasync(f); err != nil {
		f.Close()
		return nil, false, fmt.Errorf("wal: sync metadata: %w", err)
	}
	synced("meta")
	synclog.FileInPlace(f)
	ms.synced, ms.cur = best, slots[best]
	return ms, false, nil
}

// write stores m in the slot that does not hold the last synced state,
// with fdatasync if sync.
func (ms *metaStore) write(m meta, sync bool) error {
	m.seq = ms.cur.seq + 1
	b, err := m.encode()
	if err != nil {
		return err
	}
	slot := 0
	if ms.synced == 0 {
		slot = 1
	}
	if _, err := ms.f.WriteAt(b, int64(slot)*metaSlotSize); err != nil {
		return fmt.Errorf("wal: write metadata slot %d: %w", slot, err)
	}
	if sync {
		if err := fdatasync(ms.f); err != nil {
			return fmt.Errorf("wal: sync metadata: %w", err)
		}
		synced("meta")
		synclog.FileInPlace(ms.f)
		ms.synced = slot
	}
	ms.cur = m
	return nil
}

func (ms *metaStore) close() error { return ms.f.Close() }
