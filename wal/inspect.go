package wal

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/stepraft/stepraft/core"
)

// Inspect and InspectMeta read a log directory without changing it: no
// lock, no repair, no file opened for writing. They are for tools
// (cmd/waldump) and for looking at a directory another process holds;
// what they read may be mid-write.

// MaxDamage bounds the damage an Inspection lists; the rest is only
// counted (Inspection.DamageDropped).
const MaxDamage = 100

// MetaSlot is one slot of the metadata file as InspectMeta found it.
type MetaSlot struct {
	// Err says why the slot does not decode; the other fields are set
	// only when it is nil.
	Err               error
	Seq               uint64
	ClusterID, NodeID uint64
	HardState         core.HardState
	Snapshot          core.SnapshotMeta
	CompactIndex      core.Index
	CompactTerm       core.Term
}

// MetaReport is the metadata file of a log directory.
type MetaReport struct {
	Path string
	// Size is the file's size in bytes; -1 when it does not exist.
	Size  int64
	Slots [2]MetaSlot
	// Current is the slot in force (the valid one with the higher
	// sequence number), or -1 when none is valid.
	Current int
}

// SegmentInfo is a segment file of the entry log.
type SegmentInfo struct {
	Path  string
	First core.Index
	// Entries is the number of whole records read from it.
	Entries int
	Size    int64
}

// Damage is something wrong with the files, as Inspect found it.
type Damage struct {
	Path string
	// Offset is the byte offset in Path, or -1.
	Offset int64
	// Index is the entry concerned, or 0; Count is how many consecutive
	// records from it have the same damage (0 when not about records).
	Index core.Index
	Count int
	Err   error
	// TornTail says the damage is what a crash in the middle of a write
	// leaves at the end of the log: Open cuts it off instead of failing.
	TornTail bool
}

func (d Damage) String() string {
	var b strings.Builder
	b.WriteString(d.Path)
	if d.Offset >= 0 {
		fmt.Fprintf(&b, " offset %d", d.Offset)
	}
	switch {
	case d.Count > 1:
		fmt.Fprintf(&b, " entries %d..%d", d.Index, d.Index+core.Index(d.Count)-1)
	case d.Index != 0:
		fmt.Fprintf(&b, " entry %d", d.Index)
	}
	fmt.Fprintf(&b, ": %v", d.Err)
	if d.TornTail {
		b.WriteString(" (a torn tail: Open cuts it off)")
	}
	return b.String()
}

// Inspection is what Inspect found in a log directory.
type Inspection struct {
	Meta     MetaReport
	Segments []SegmentInfo
	// First and Last are the first and last index of the entry log as
	// the files hold it (Last = First-1 when it is empty): Last counts
	// every record, damaged or not, up to a torn tail or to a record
	// length that does not fit its file.
	First, Last core.Index
	// Damage lists at most MaxDamage problems that make Open fail or cut
	// entries off; DamageDropped counts the others.
	Damage        []Damage
	DamageDropped int
	// Notes are states a crash leaves that Open finishes (an unfinished
	// truncation or reset, a compaction to redo, a log to restart after
	// its snapshot).
	Notes []string
}

// Damaged reports whether Inspect found any damage.
func (in *Inspection) Damaged() bool { return len(in.Damage) > 0 || in.DamageDropped > 0 }

func (in *Inspection) damage(d Damage) {
	if len(in.Damage) < MaxDamage {
		in.Damage = append(in.Damage, d)
		return
	}
	in.DamageDropped++
}

// InspectMeta reads both slots of the metadata file in dir.
func InspectMeta(dir string) (MetaReport, error) {
	r := MetaReport{Path: filepath.Join(dir, metaFile), Size: -1, Current: -1}
	f, err := os.Open(r.Path)
	if errors.Is(err, os.ErrNotExist) {
		return r, nil
	}
	if err != nil {
		return r, fmt.Errorf("wal: open metadata: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return r, fmt.Errorf("wal: stat metadata: %w", err)
	}
	r.Size = fi.Size()
	buf := make([]byte, metaSlotSize)
	for i := range r.Slots {
		n, err := f.ReadAt(buf, int64(i)*metaSlotSize)
		if err != nil && !errors.Is(err, io.EOF) {
			return r, fmt.Errorf("wal: read metadata slot %d: %w", i, err)
		}
		m, err := decodeMeta(buf[:n])
		if err != nil {
			r.Slots[i] = MetaSlot{Err: err}
			continue
		}
		r.Slots[i] = MetaSlot{Seq: m.seq, ClusterID: m.clusterID, NodeID: m.nodeID, HardState: m.hard,
			Snapshot: m.snap, CompactIndex: m.compactIndex, CompactTerm: m.compactTerm}
		if r.Current < 0 || m.seq > r.Slots[r.Current].Seq {
			r.Current = i
		}
	}
	return r, nil
}

// Inspect reads the log in dir, verifying every record as Open does, and
// calls fn (when not nil) with each valid entry in order until fn returns
// false; it goes on reading for damage after that. The entry's Data is
// only valid during the call. An error means dir could not be read;
// damage is reported in the Inspection.
func Inspect(dir string, fn func(core.Entry) bool) (*Inspection, error) {
	if _, err := os.Stat(dir); err != nil {
		return nil, fmt.Errorf("wal: %w", err)
	}
	in := &Inspection{}
	var err error
	if in.Meta, err = InspectMeta(dir); err != nil {
		return nil, err
	}
	edir := filepath.Join(dir, entriesDir)
	if _, err := os.Stat(edir); errors.Is(err, os.ErrNotExist) {
		if _, err := os.Stat(edir + ".new"); err == nil {
			// Open's finishReset puts it in place.
			in.Notes = append(in.Notes, fmt.Sprintf("%s: a reset a crash interrupted; Open puts %s.new in its place", edir, edir))
			edir += ".new"
		}
	}
	for _, side := range []string{filepath.Join(dir, entriesDir) + ".new", filepath.Join(dir, entriesDir) + ".old"} {
		if _, err := os.Stat(side); err == nil && side != edir {
			in.Notes = append(in.Notes, fmt.Sprintf("%s: left by a crash while the log was reset; Open removes it", side))
		}
	}
	segs, err := inspectSegments(edir, in)
	if err != nil {
		return nil, err
	}
	hasEntries := false
	for _, seg := range segs {
		if fi, err := os.Stat(seg.path); err == nil && (fi.Size() > 0 || seg.first > 1) {
			hasEntries = true
		}
	}
	switch {
	case in.Meta.Size <= 0:
		if hasEntries {
			// Open would start a fresh metadata file: term and vote lost.
			in.damage(Damage{Path: in.Meta.Path, Offset: -1, Err: fmt.Errorf(
				"%w: the metadata file is missing or empty, but the log holds entries", ErrCorrupt)})
		}
	case in.Meta.Current >= 0:
	case !hasEntries && in.Meta.Size <= metaSlotSize:
		in.Notes = append(in.Notes, fmt.Sprintf("%s: no valid slot, but no entry either: a new log torn in its first write; Open starts it afresh",
			in.Meta.Path))
	default:
		in.damage(Damage{Path: in.Meta.Path, Offset: -1, Err: fmt.Errorf("%w: slot 0: %v; slot 1: %v",
			errNoMeta, in.Meta.Slots[0].Err, in.Meta.Slots[1].Err)})
	}
	in.First, in.Last = 1, 0
	if len(segs) > 0 {
		in.First = segs[0].first
		in.Last = in.First - 1
	}
	// snapTerm is the term of the snapshot's entry, if the log holds it.
	var snapIndex core.Index
	var snapTerm core.Term
	if in.Meta.Current >= 0 {
		snapIndex = in.Meta.Slots[in.Meta.Current].Snapshot.Index
	}
	visit := func(e core.Entry) {
		if e.Index == snapIndex {
			snapTerm = e.Term
		}
		if fn != nil && !fn(e) {
			fn = nil
		}
	}
	var prev core.Term
	for k, seg := range segs {
		if seg.first != in.Last+1 {
			in.damage(Damage{Path: seg.path, Offset: -1, Index: seg.first,
				Err: fmt.Errorf("%w: segment starts at %d, after entry %d", ErrCorrupt, seg.first, in.Last)})
		}
		info, err := inspectSegment(seg, k == len(segs)-1, &prev, in, visit)
		if err != nil {
			return nil, err
		}
		in.Segments = append(in.Segments, info)
		in.Last = seg.first + core.Index(info.Entries) - 1
	}
	inspectAgainstMeta(in, edir, snapTerm)
	return in, nil
}

// inspectSegments lists the segments tidwall/wal would open, noting the
// files of a truncation a crash left unfinished (which tidwall/wal
// finishes when it opens the log).
func inspectSegments(edir string, in *Inspection) ([]segment, error) {
	des, err := os.ReadDir(edir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("wal: read %s: %w", edir, err)
	}
	var segs []segment
	start, end := -1, -1
	for _, de := range des { // sorted by name, as tidwall/wal reads them
		name := de.Name()
		if de.IsDir() || len(name) < 20 {
			continue
		}
		i, err := strconv.ParseUint(name[:20], 10, 64)
		if err != nil || i == 0 {
			continue
		}
		switch suffix := name[20:]; suffix {
		case "":
		case ".START":
			start = len(segs)
		case ".END":
			if end < 0 {
				end = len(segs)
			}
		default:
			in.Notes = append(in.Notes, fmt.Sprintf("%s: not a segment, ignored", filepath.Join(edir, name)))
			continue
		}
		segs = append(segs, segment{path: filepath.Join(edir, name), first: core.Index(i)})
	}
	switch {
	case start >= 0 && end >= 0:
		in.damage(Damage{Path: edir, Offset: -1, Err: fmt.Errorf("%w: both a .START and an .END segment", ErrCorrupt)})
	case start >= 0:
		in.Notes = append(in.Notes, fmt.Sprintf("%s: a front truncation a crash interrupted; Open finishes it, removing %d segments before it",
			segs[start].path, start))
		segs = segs[start:]
	case end >= 0:
		in.Notes = append(in.Notes, fmt.Sprintf("%s: a back truncation a crash interrupted; Open finishes it, removing %d segments after it",
			segs[end].path, len(segs)-1-end))
		segs = segs[:end+1]
		if n := len(segs); n > 1 && segs[n-2].first == segs[n-1].first {
			segs = append(segs[:n-2], segs[n-1])
		}
	}
	return segs, nil
}

// inspectSegment reads one segment's records, calls visit with the valid
// ones and reports the damage as
// Open's checkSegments judges it: in the last segment, a record that does
// not verify with no record that does after it starts a torn tail, which
// Open cuts off; anything else makes Open fail. Unlike Open it goes on
// past the first damage, to list it all. info.Entries does not count a
// torn tail.
func inspectSegment(seg segment, last bool, prev *core.Term, in *Inspection, visit func(core.Entry)) (SegmentInfo, error) {
	info := SegmentInfo{Path: seg.path, First: seg.first}
	data, err := os.ReadFile(seg.path)
	if err != nil {
		return info, fmt.Errorf("wal: read %s: %w", seg.path, err)
	}
	info.Size = int64(len(data))
	next := seg.first
	var run *Damage // the damage being extended over consecutive records
	flush := func() {
		if run != nil {
			in.damage(*run)
			run = nil
		}
	}
	for off := 0; off < len(data); next++ {
		e, end, err := parseRecordAt(data, off)
		switch {
		case err != nil:
		case e.Index != next:
			err = fmt.Errorf("%w: record holds entry %d", ErrCorrupt, e.Index)
		case e.Term < *prev:
			err = fmt.Errorf("%w: term %d after term %d", ErrCorrupt, e.Term, *prev)
		}
		if err == nil {
			flush()
			*prev = e.Term
			visit(e)
			off = end
			continue
		}
		if last && errors.Is(err, errUnverified) && !verifiesAfter(data, off+1, next) {
			flush()
			in.damage(Damage{Path: seg.path, Offset: int64(off), Index: next, TornTail: true, Err: fmt.Errorf(
				"the last %d bytes hold no record that verifies: %w", len(data)-off, err)})
			break
		}
		if run != nil && run.Err.Error() == err.Error() && run.Index+core.Index(run.Count) == next {
			run.Count++
		} else {
			flush()
			run = &Damage{Path: seg.path, Offset: int64(off), Index: next, Count: 1, Err: err}
		}
		if end == 0 {
			// The record's length does not fit: the rest of the file
			// cannot be split into records.
			break
		}
		off = end
	}
	flush()
	info.Entries = int(next - seg.first)
	return info, nil
}

// inspectAgainstMeta checks the entry log against the metadata in force,
// as Open's reconciliation does; snapTerm is the term of the log's entry
// at the snapshot's index (0 if it holds none).
func inspectAgainstMeta(in *Inspection, edir string, snapTerm core.Term) {
	if in.Meta.Current < 0 {
		return
	}
	m := in.Meta.Slots[in.Meta.Current]
	snap := m.Snapshot.Index
	switch {
	case snap > in.Last || (snap >= in.First && snapTerm != m.Snapshot.Term):
		if snap > 0 && (in.Last >= in.First || in.First != snap+1) {
			in.Notes = append(in.Notes, fmt.Sprintf("the log [%d, %d] does not hold the snapshot's entry %d (term %d): Open empties it to start at %d",
				in.First, in.Last, snap, m.Snapshot.Term, snap+1))
		}
		return
	case m.CompactIndex >= in.First:
		in.Notes = append(in.Notes, fmt.Sprintf("entries %d..%d are compacted in the metadata: Open removes them",
			in.First, m.CompactIndex))
		return
	}
	if want := m.CompactIndex + 1; in.First > want && !(in.First == snap+1 && snap > 0) {
		in.damage(Damage{Path: edir, Offset: -1, Index: want, Err: fmt.Errorf(
			"%w: the log starts at %d, but was compacted at %d and the snapshot is at %d: entries are missing",
			ErrCorrupt, in.First, m.CompactIndex, snap)})
	}
	if in.First > snap+1 && snap > 0 {
		in.damage(Damage{Path: edir, Offset: -1, Index: snap + 1, Err: fmt.Errorf(
			"%w: the log starts at %d, past the snapshot at %d: a gap", ErrCorrupt, in.First, snap)})
	}
}
