package snapshotter

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/stepraft/stepraft/internal/synclog"
)

// writeBufBytes is the write buffer of a snapshot being saved: the most
// memory one save holds, whatever the body's size.
const writeBufBytes = 256 << 10

// Save writes a snapshot whose body write produces, and returns its meta
// with Size set. write gets a buffered writer; it must not keep it after
// returning. The body goes to a temp file in the directory, which is
// fsynced, renamed to <term>-<index>.snap and made durable by an fsync of
// the directory before Save returns; then snapshots beyond Options.Keep are
// purged. If write returns an error (or panics), or a write to the file
// fails, the temp file is removed and the snapshots already there are left
// untouched. A snapshot with the same index and term as one already stored
// replaces it atomically. A snapshot older than the Keep newest is removed
// by the purge that follows its save.
func (s *Store) Save(meta Meta, write func(w io.Writer) error) (Meta, error) {
	p, err := s.Create(meta)
	if err != nil {
		return Meta{}, err
	}
	defer func() { // also when write panics
		if err := p.Abort(); err != nil {
			s.log.Warn("removing temp snapshot file", "index", uint64(meta.Index), "term", uint64(meta.Term), "err", err)
		}
	}()
	if err := write(bodyWriter{p}); err != nil {
		return Meta{}, fmt.Errorf("snapshotter: snapshot at index %d term %d not saved: %w", meta.Index, meta.Term, err)
	}
	return p.Commit()
}

// bodyWriter hands write only Write, not the Pending's Commit and Abort.
type bodyWriter struct{ p *Pending }

func (w bodyWriter) Write(b []byte) (int, error) { return w.p.Write(b) }

// Pending is a snapshot being written in pieces, for a body that arrives
// in chunks (a transport receiving a snapshot): Write the body, then Commit
// to make it durable, or Abort to drop it. A Pending is not safe for
// concurrent use.
type Pending struct {
	s      *Store
	meta   Meta // a copy, so the caller cannot change the header's length
	tmp    string
	f      *os.File
	bw     *bufio.Writer
	hdrLen int
	crc    uint32 // of the body written
	err    error  // sticky: the first write failure, or ErrClosed once done
	done   bool   // committed or aborted
}

// Create starts a snapshot with meta (whose Size is ignored) and returns it
// to be written. Nothing is visible to List or Load before Commit. Errors
// wrap ErrMeta when meta cannot be stored.
func (s *Store) Create(meta Meta) (*Pending, error) {
	meta = meta.clone()
	meta.Size = 0
	hdr, err := encodeHeader(meta) // a placeholder until the length is known
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	closed := s.closed
	s.mu.Unlock()
	if closed {
		return nil, ErrClosed
	}
	f, err := os.CreateTemp(s.dir, fileName(meta.Term, meta.Index)+".*"+tempSuffix)
	if err != nil {
		return nil, fmt.Errorf("snapshotter: %w", err)
	}
	p := &Pending{s: s, meta: meta, tmp: f.Name(), f: f, bw: bufio.NewWriterSize(f, writeBufBytes), hdrLen: len(hdr)}
	if _, err := p.bw.Write(hdr); err != nil {
		p.Abort()
		return nil, fmt.Errorf("snapshotter: writing %s: %w", p.tmp, err)
	}
	return p, nil
}

// Write appends b to the body. After a failure every later Write and
// Commit fail with the same error.
func (p *Pending) Write(b []byte) (int, error) {
	if p.err != nil {
		return 0, p.err
	}
	n, err := p.bw.Write(b)
	p.crc = crc32.Update(p.crc, castagnoli, b[:n])
	p.meta.Size += int64(n)
	if err != nil {
		p.err = fmt.Errorf("snapshotter: writing %s: %w", p.tmp, err)
		return n, p.err
	}
	return n, nil
}

// Commit makes the snapshot durable under its final name, as Save does,
// purges old snapshots, and returns the meta with Size set. If it fails
// the temp file is removed, unless the rename happened (then the file is
// complete, but its name may not be durable). Commit and Abort end a
// Pending: later calls fail with ErrClosed (Abort returns nil).
func (p *Pending) Commit() (Meta, error) {
	if p.err != nil {
		err := p.err
		p.Abort()
		return Meta{}, err
	}
	if err := p.finishFile(); err != nil {
		p.Abort()
		return Meta{}, err
	}
	renamed, err := p.s.install(p.tmp, p.meta)
	if !renamed {
		p.Abort()
		return Meta{}, err
	}
	p.tmp = "" // it has its final name now
	p.Abort()  // ends the Pending; removes nothing
	if err != nil {
		return Meta{}, err
	}
	return p.meta, nil
}

// finishFile writes the trailer and the final header, fsyncs and closes
// the temp file.
func (p *Pending) finishFile() error {
	var trailer [crcLen]byte
	binary.BigEndian.PutUint32(trailer[:], p.crc)
	hdr, err := encodeHeader(p.meta)
	if err != nil {
		return err
	}
	if len(hdr) != p.hdrLen {
		return fmt.Errorf("snapshotter: header length changed from %d to %d bytes", p.hdrLen, len(hdr))
	}
	if _, err := p.bw.Write(trailer[:]); err != nil {
		return fmt.Errorf("snapshotter: writing %s: %w", p.tmp, err)
	}
	if err := p.bw.Flush(); err != nil {
		return fmt.Errorf("snapshotter: writing %s: %w", p.tmp, err)
	}
	if _, err := p.f.WriteAt(hdr, 0); err != nil {
		return fmt.Errorf("snapshotter: writing %s: %w", p.tmp, err)
	}
	if err := p.f.Sync(); err != nil {
		return fmt.Errorf("snapshotter: fsync of %s: %w", p.tmp, err)
	}
	synclog.File(p.f)
	err = p.f.Close()
	p.f = nil
	if err != nil {
		return fmt.Errorf("snapshotter: closing %s: %w", p.tmp, err)
	}
	return nil
}

// Abort drops the snapshot and removes its temp file. It returns nil if
// the Pending was already committed or aborted, so `defer p.Abort()` is
// safe.
func (p *Pending) Abort() error {
	if p.done {
		return nil
	}
	p.done, p.err = true, ErrClosed
	var err error
	if p.f != nil {
		p.f.Close() // the file is dropped; its close error says nothing useful
		p.f = nil
	}
	if p.tmp != "" {
		if rerr := os.Remove(p.tmp); rerr != nil && !errors.Is(rerr, fs.ErrNotExist) {
			err = fmt.Errorf("snapshotter: %w", rerr)
		}
		p.tmp = ""
	}
	p.bw = nil
	return err
}

// install renames a complete, fsynced temp file to its final name, makes
// the name durable and purges. It says whether the rename happened; it
// renames nothing, failing with ErrClosed, if the Store is closed.
func (s *Store) install(tmp string, meta Meta) (renamed bool, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false, ErrClosed
	}
	final := filepath.Join(s.dir, fileName(meta.Term, meta.Index))
	if err := os.Rename(tmp, final); err != nil {
		return false, fmt.Errorf("snapshotter: %w", err)
	}
	if err := syncDir(s.dir); err != nil {
		return true, err
	}
	s.log.Debug("saved snapshot", "index", uint64(meta.Index), "term", uint64(meta.Term))
	s.purgeLocked()
	return true, nil
}
