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

// lastSegmentStart returns the first index of the last segment, or 0.
func lastSegmentStart(dir string) uint64 {
	segs, err := segments(dir)
	if err != nil || len(segs) == 0 {
		return 0
	}
	return uint64(segs[len(segs)-1].first)
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

// repairTail cuts the last segment of the entry directory back to the end
// of its last whole record whose checksum verifies, then fsyncs the file
// and the directory. tidwall/wal stores each entry as uvarint(length) and
// the bytes; a crash in the middle of a write leaves a partial one, which
// it refuses to open. Only the last segment is ever repaired: damage in an
// older one is not a torn write.
func repairTail(dir string, logger *slog.Logger) error {
	segs, err := segments(dir)
	if err != nil {
		return err
	}
	if len(segs) == 0 {
		return nil
	}
	seg := segs[len(segs)-1]
	data, err := os.ReadFile(seg.path)
	if err != nil {
		return fmt.Errorf("wal: read %s: %w", seg.path, err)
	}
	good, n := 0, 0
	var why error
	for off := 0; off < len(data); {
		size, k := binary.Uvarint(data[off:])
		if k <= 0 || size > uint64(len(data)-off-k) {
			break // a length or a record cut short: what a torn write leaves
		}
		end := off + k + int(size)
		if _, err := decodeRecord(data[off+k:end], false); err != nil {
			if !errors.Is(err, errUnverified) || (end < len(data) && !allZero(data[end:])) {
				// A whole record that does not verify, with data after
				// it: damage, not a torn write.
				why = err
			}
			break
		}
		off = end
		good, n = off, n+1
	}
	if why != nil {
		return fmt.Errorf("wal: %s: record %d at offset %d (entry %d): %w", seg.path, n, good, uint64(seg.first)+uint64(n), why)
	}
	if good == len(data) {
		return fmt.Errorf("wal: %s: tidwall/wal refuses the log, but every record of the last segment verifies", seg.path)
	}
	logger.Warn("cutting a torn tail", "file", seg.path, "records", n, "offset", good, "size", len(data))
	f, err := os.OpenFile(seg.path, os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("wal: open %s: %w", seg.path, err)
	}
	defer f.Close()
	if err := f.Truncate(int64(good)); err != nil {
		return fmt.Errorf("wal: cut %s at offset %d: %w", seg.path, good, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("wal: sync %s: %w", seg.path, err)
	}
	synced("entries")
	return syncDir(dir)
}
