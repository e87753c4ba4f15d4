package wal

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strconv"

	"github.com/stepraft/stepraft/core"
	"github.com/stepraft/stepraft/internal/synclog"
)

// segments lists the segment files of an entry directory (20-digit names,
// as tidwall/wal writes them) with their first indexes, in order.
func segments(dir string) ([]segment, error) {
	des, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("wal: read %s: %w", dir, err)
	}
	var out []segment
	for _, de := range des {
		name := de.Name()
		if de.IsDir() || len(name) != 20 {
			continue
		}
		i, err := strconv.ParseUint(name, 10, 64)
		if err != nil || i == 0 {
			continue
		}
		out = append(out, segment{path: filepath.Join(dir, name), first: core.Index(i)})
	}
	sort.Slice(out, func(a, b int) bool { return out[a].first < out[b].first })
	return out, nil
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

type segment struct {
	path  string
	first core.Index
}

// segmentPath names the segment file that holds (or would hold) entry i of
// the log in dir, for error messages.
func segmentPath(dir string, i core.Index) string {
	edir := filepath.Join(dir, entriesDir)
	segs, err := segments(edir)
	if err != nil || len(segs) == 0 {
		return edir
	}
	k := sort.Search(len(segs), func(k int) bool { return segs[k].first > i }) - 1
	if k < 0 {
		return edir
	}
	return segs[k].path
}

// scanned is what checkSegments learned of a log.
type scanned struct {
	first, last core.Index // last = first-1 when empty
	// terms of the newest entries, for the term cache.
	terms     []core.Term
	termsFrom core.Index
	tailBytes int // size of the last segment file
}

// checkSegments reads every segment file of dir before tidwall/wal opens
// them. tidwall/wal stores each entry as uvarint(length) and the bytes,
// with no checksum, and trusts file names: a missing or shortened segment
// would make it read the wrong entries, or panic. So each file must split
// into whole records that verify, carrying consecutive indexes from the
// one its name gives and terms that never decrease, and end where the next
// file begins.
//
// The last file may end in a torn tail, what a crash in the middle of a
// write leaves: from some offset on, nothing verifies. That tail is cut off
// (file and directory fsynced). If a record that verifies follows the
// first one that does not, the damage is not a torn write, and it is an
// error naming the file, the entry and the offset.
func checkSegments(dir string, logger *slog.Logger) (scanned, error) {
	segs, err := segments(dir)
	if err != nil {
		return scanned{}, err
	}
	var sc scanned
	if len(segs) == 0 {
		sc.first, sc.last = 1, 0
		return sc, nil
	}
	sc.first = segs[0].first
	next := segs[0].first
	var prevTerm core.Term
	for k, seg := range segs {
		last := k == len(segs)-1
		if seg.first != next {
			return sc, fmt.Errorf("%w: %s ends at entry %d, but the next segment %s starts at %d: entries are missing or out of place",
				ErrCorrupt, segs[k-1].path, next-1, seg.path, seg.first)
		}
		data, err := os.ReadFile(seg.path)
		if err != nil {
			return sc, fmt.Errorf("wal: read %s: %w", seg.path, err)
		}
		off := 0
		for off < len(data) {
			e, end, err := parseRecordAt(data, off)
			if err == nil && e.Index != next {
				err = fmt.Errorf("%w: record holds entry %d", ErrCorrupt, e.Index)
			}
			if err == nil && e.Term < prevTerm {
				err = fmt.Errorf("%w: term %d after term %d", ErrCorrupt, e.Term, prevTerm)
			}
			if err != nil {
				torn := last && errors.Is(err, errUnverified) && !verifiesAfter(data, off+1, next)
				if !torn {
					return sc, fmt.Errorf("wal: %s: entry %d at offset %d: %w", seg.path, next, off, err)
				}
				logger.Warn("cutting a torn tail", "file", seg.path, "from_entry", uint64(next), "offset", off, "size", len(data), "err", err)
				if err := cutFile(seg.path, off); err != nil {
					return sc, err
				}
				data = data[:off]
				break
			}
			prevTerm = e.Term
			if next != sc.termsFrom+core.Index(len(sc.terms)) {
				sc.terms, sc.termsFrom = sc.terms[:0], next
			}
			if len(sc.terms) == 2*termCacheSize {
				n := copy(sc.terms, sc.terms[termCacheSize:])
				sc.terms, sc.termsFrom = sc.terms[:n], sc.termsFrom+termCacheSize
			}
			sc.terms = append(sc.terms, e.Term)
			next++
			off = end
		}
		if last {
			sc.tailBytes = len(data)
		}
	}
	sc.last = next - 1
	return sc, nil
}

// parseRecordAt reads the tidwall/wal entry at off: uvarint(length), then a
// record. A length past the end is an unverified (torn) record.
func parseRecordAt(data []byte, off int) (core.Entry, int, error) {
	size, k := binary.Uvarint(data[off:])
	if k <= 0 || size > uint64(len(data)-off-k) {
		return core.Entry{}, 0, fmt.Errorf("%w: record: length cut short or past the end (%w)", ErrCorrupt, errUnverified)
	}
	end := off + k + int(size)
	e, err := decodeRecord(data[off+k:end], false)
	return e, end, err
}

// verifiesAfter reports whether some record that verifies starts at or
// after off, for an entry after next-1: evidence that the bytes before it
// are damage, not a torn write. Candidates are screened cheaply (a
// plausible length and header) before their checksum is computed, so that
// a long tail of garbage does not take quadratic time.
func verifiesAfter(data []byte, off int, next core.Index) bool {
	for p := off; p < len(data); p++ {
		size, k := binary.Uvarint(data[p:])
		if k <= 0 || size < recordMinSize || size > uint64(len(data)-p-k) {
			continue
		}
		rec := data[p+k : p+k+int(size)]
		if !plausibleHeader(rec) {
			continue
		}
		if e, err := decodeRecord(rec, false); err == nil && e.Index >= next {
			return true
		}
	}
	return false
}

// plausibleHeader reports whether rec, at least recordMinSize bytes, starts
// like a record: a known version and, behind the checksum, version 1's
// array header or version 2's index, term and entry type.
func plausibleHeader(rec []byte) bool {
	switch rec[0] {
	case recordVersionV1:
		return rec[5] == 0x94
	case recordVersion:
		p := rec[5:]
		for range 2 { // index, term
			_, n := binary.Uvarint(p)
			if n <= 0 || n >= len(p) {
				return false
			}
			p = p[n:]
		}
		return core.EntryType(p[0]) == core.EntryNormal || core.EntryType(p[0]) == core.EntryConfChange
	}
	return false
}

// cutFile truncates path to size and makes that durable.
func cutFile(path string, size int) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("wal: open %s: %w", path, err)
	}
	defer f.Close()
	if err := f.Truncate(int64(size)); err != nil {
		return fmt.Errorf("wal: cut %s at offset %d: %w", path, size, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("wal: sync %s: %w", path, err)
	}
	synced("entries")
	synclog.File(f)
	return syncDir(filepath.Dir(path))
}
