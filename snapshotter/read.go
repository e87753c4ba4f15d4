package snapshotter

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
)

// readBufBytes is the read buffer of a body reader: the most memory one
// open snapshot holds, whatever the body's size.
const readBufBytes = 256 << 10

// OpenFile opens one snapshot file by path, outside any Store (for tools
// that inspect a directory another process owns). It checks the header
// and, if the file has a snapshot's name, that the name matches it; the
// body is checked as it is read, as with OpenSnapshot.
func OpenFile(path string) (Meta, io.ReadCloser, error) {
	var e *entry
	if term, index, ok := parseName(filepath.Base(path)); ok {
		e = &entry{term: term, index: index}
	}
	f, err := os.Open(path)
	if err != nil {
		return Meta{}, nil, fmt.Errorf("snapshotter: %w", err)
	}
	m, r, err := newBodyReader(f, path, e)
	if err != nil {
		f.Close()
		return Meta{}, nil, err
	}
	return m, r, nil
}

// openEntry opens e's file at path and checks its header.
func openEntry(path string, e entry) (Meta, *bodyReader, error) {
	f, err := os.Open(path)
	if err != nil {
		return Meta{}, nil, fmt.Errorf("snapshotter: %w", err)
	}
	m, r, err := newBodyReader(f, path, &e)
	if err != nil {
		f.Close()
		return Meta{}, nil, err
	}
	return m, r, nil
}

// fileError adds path to what the decoder found wrong, keeping its kind.
func fileError(path string, err error) error {
	var fe *formatError
	if errors.As(err, &fe) {
		return fmt.Errorf("%w: %s: %s", fe.kind, path, fe.what)
	}
	return err
}

// readHeader reads and checks f's header and its length against the
// file's, and, if e is not nil, against the file's name. It returns the
// meta and the body's offset. It allocates at most the header's length,
// which it first checks against its limit and the file's size.
func readHeader(f *os.File, path string, e *entry) (Meta, int64, error) {
	fi, err := f.Stat()
	if err != nil {
		return Meta{}, 0, fmt.Errorf("snapshotter: %w", err)
	}
	size := fi.Size()
	var prefix [prefixLen]byte
	n, err := f.ReadAt(prefix[:], 0)
	if err != nil && !errors.Is(err, io.EOF) {
		return Meta{}, 0, fmt.Errorf("snapshotter: reading %s: %w", path, err)
	}
	h, err := decodePrefix(prefix[:n])
	if err != nil {
		return Meta{}, 0, fileError(path, err)
	}
	if int64(h) > size-prefixLen-crcLen {
		return Meta{}, 0, fileError(path, corruptf("header of %d bytes runs past the end of the file (%d bytes)", h, size))
	}
	buf := make([]byte, prefixLen+h+crcLen)
	if _, err := f.ReadAt(buf, 0); err != nil {
		return Meta{}, 0, fmt.Errorf("snapshotter: reading %s: %w", path, err)
	}
	m, off, err := decodeHeader(buf)
	if err != nil {
		return Meta{}, 0, fileError(path, err)
	}
	if e != nil && (m.Index != e.index || m.Term != e.term) {
		return Meta{}, 0, fileError(path, corruptf("the name says term %d index %d, the header term %d index %d",
			e.term, e.index, m.Term, m.Index))
	}
	if want := int64(off) + m.Size + crcLen; size != want {
		if size < want {
			return Meta{}, 0, fileError(path, corruptf("truncated: %d bytes, the header says %d", size, want))
		}
		return Meta{}, 0, fileError(path, corruptf("%d bytes after the body's CRC", size-want))
	}
	return m, int64(off), nil
}

// bodyReader reads a snapshot's body and checks its CRC and length at the
// end. It is not safe for concurrent use.
type bodyReader struct {
	f    *os.File
	path string
	off  int64 // where the body starts
	size int64 // body length
	br   *bufio.Reader
	left int64  // body bytes not yet returned
	crc  uint32 // of the body bytes returned
	err  error  // sticky: io.EOF once verified, or the first failure
}

// newBodyReader checks f's header and returns a reader at the body's
// start; it owns f from then on, if no error.
func newBodyReader(f *os.File, path string, e *entry) (Meta, *bodyReader, error) {
	m, off, err := readHeader(f, path, e)
	if err != nil {
		return Meta{}, nil, err
	}
	r := &bodyReader{f: f, path: path, off: off, size: m.Size,
		br: bufio.NewReaderSize(nil, readBufBytes)}
	r.rewind()
	return m, r, nil
}

// rewind goes back to the start of the body.
func (r *bodyReader) rewind() {
	// The section takes in the trailer, which finish reads through br.
	r.br.Reset(io.NewSectionReader(r.f, r.off, r.size+crcLen))
	r.left, r.crc, r.err = r.size, 0, nil
}

// Read reads the body. At its end it returns io.EOF if the body's length
// and CRC are right, and an error wrapping ErrCorrupt if not.
func (r *bodyReader) Read(p []byte) (int, error) {
	if r.err != nil {
		return 0, r.err
	}
	if r.left == 0 {
		r.err = r.finish()
		return 0, r.err
	}
	if int64(len(p)) > r.left {
		p = p[:r.left]
	}
	n, err := r.br.Read(p)
	r.consumed(p[:n])
	if err != nil {
		r.readFailed(err)
		return n, r.err
	}
	return n, nil
}

// WriteTo writes the rest of the body to w straight from the read buffer,
// and checks the body as Read does: it returns nil once the body has
// verified, and an error wrapping ErrCorrupt if it has not.
func (r *bodyReader) WriteTo(w io.Writer) (int64, error) {
	var total int64
	for r.err == nil {
		if r.left == 0 {
			r.err = r.finish()
			break
		}
		chunk, err := r.br.Peek(int(min(r.left, readBufBytes)))
		r.consumed(chunk)
		r.br.Discard(len(chunk))
		if len(chunk) > 0 {
			n, werr := w.Write(chunk)
			total += int64(n)
			if werr == nil && n < len(chunk) {
				werr = io.ErrShortWrite
			}
			if werr != nil {
				return total, werr
			}
		}
		if err != nil {
			r.readFailed(err)
		}
	}
	if r.err == io.EOF {
		return total, nil
	}
	return total, r.err
}

func (r *bodyReader) consumed(p []byte) {
	r.crc = crc32.Update(r.crc, castagnoli, p)
	r.left -= int64(len(p))
}

// readFailed records a read error met before the body's end.
func (r *bodyReader) readFailed(err error) {
	if errors.Is(err, io.EOF) {
		r.err = fileError(r.path, corruptf("truncated body: %d bytes missing", r.left))
		return
	}
	r.err = fmt.Errorf("snapshotter: reading %s: %w", r.path, err)
}

// finish reads the trailer once the whole body has been read.
func (r *bodyReader) finish() error {
	var trailer [crcLen]byte
	if _, err := io.ReadFull(r.br, trailer[:]); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return fileError(r.path, corruptf("truncated: the body's CRC is missing"))
		}
		return fmt.Errorf("snapshotter: reading %s: %w", r.path, err)
	}
	if want := binary.BigEndian.Uint32(trailer[:]); want != r.crc {
		return fileError(r.path, corruptf("body CRC %#08x, stored %#08x", r.crc, want))
	}
	return io.EOF
}

// Close closes the file. Reads after Close fail with ErrClosed.
func (r *bodyReader) Close() error {
	if r.f == nil {
		return nil
	}
	err := r.f.Close()
	r.f, r.err = nil, ErrClosed
	r.br.Reset(nil)
	return err
}
