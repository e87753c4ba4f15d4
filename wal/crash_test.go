package wal

// Crash and damage tests on the entry log: the last segment cut at every
// byte, a bit flipped in every byte of a record, zeros and garbage after
// the last record. Every case works on a copy of one log written once;
// all randomness is seeded. Damaged layouts are in layout_test.go, the
// metadata in meta_crash_test.go.

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/stepraft/stepraft/core"
)

// TestTornTailEveryOffset cuts the last segment at every byte offset, as a
// crash in the middle of a write leaves it: Open must cut the file back to
// its last whole record and return exactly the entries before the cut
// (part of a batch may survive, each entry whole), and the repaired log
// must take new entries where the cut left it.
func TestTornTailEveryOffset(t *testing.T) {
	opts := crashOpts()
	h := makeCrashHistory(1, crashBatches)
	src := scratchDir(t)
	h.write(t, src, opts)
	seg, rel, data, spans := lastSegment(t, src)
	work := scratchDir(t)
	term := h.hard.Term
	for off := 0; off <= len(data); off++ {
		dir := freshCopy(t, src, work, 0)
		path := filepath.Join(dir, rel)
		if err := os.Truncate(path, int64(off)); err != nil {
			t.Fatal(err)
		}
		whole, boundary := 0, 0
		for _, s := range spans {
			if s.end <= off {
				whole, boundary = whole+1, s.end
			}
		}
		wantLast := seg.first + core.Index(whole) - 1
		st, err := openAndRead(dir, opts)
		if err != nil {
			t.Fatalf("cut at %d of %d: open: %v", off, len(data), err)
		}
		if st.first != 1 || st.last != wantLast {
			t.Fatalf("cut at %d: log [%d, %d], want [1, %d]", off, st.first, st.last, wantLast)
		}
		checkEntries(t, "cut at "+strconv.Itoa(off), st.ents, h.log[:wantLast])
		if st.hard != h.hard {
			t.Fatalf("cut at %d: hard state %+v, want %+v", off, st.hard, h.hard)
		}
		checkSize(t, path, boundary)
		// The repaired log takes new entries where the cut left it
		// (checked at each record boundary and the byte after it, where
		// a cut and a whole record meet, to keep the loop short).
		if off != boundary && off != boundary+1 {
			continue
		}
		l, err := Open(dir, opts)
		if err != nil {
			t.Fatal(err)
		}
		more := ents(wantLast+1, wantLast+2, term)
		if err := l.Save(core.Ready{Entries: more}); err != nil {
			t.Fatalf("cut at %d: save after repair: %v", off, err)
		}
		if err := l.Close(); err != nil {
			t.Fatal(err)
		}
		st, err = openAndRead(dir, opts)
		if err != nil {
			t.Fatalf("cut at %d: reopen after repair: %v", off, err)
		}
		checkEntries(t, "cut at "+strconv.Itoa(off)+", appended", st.ents, append(h.log[:wantLast:wantLast], more...))
	}
}

// flipCase is where a flipped bit lies, and what Open may do about it.
type flipCase struct {
	class string // for reporting: "older segment", "last segment, version byte", ...
	// errEntries are the entries an error may name (with the file);
	// none means Open must not fail.
	errEntries []core.Index
	// cutTo, when cutOK, is the last index Open may return instead of
	// failing: a cut-back tail.
	cutTo core.Index
	cutOK bool
}

const innerLengthClass = "last segment, inner record, length prefix"

// classifyFlip says what Open must do with a bit flipped at byte off of a
// segment, inside the record spans[p] of entry idx. Only a damaged last
// record of the last segment, with nothing valid after it, may be taken
// for a torn write and cut off; every other flip is an error naming the
// file and the entry. The checksum covers the version byte too. With
// lenient, a flipped length prefix of an inner record of the last segment
// may also be cut back (the bug TestBitFlipInnerLengthPrefix showed, now
// fixed).
func classifyFlip(last bool, spans []recSpan, p int, off int, first core.Index, flipped []byte, lenient bool) flipCase {
	idx := first + core.Index(p)
	sp := spans[p]
	lastRec := p == len(spans)-1
	switch {
	case !last:
		// Open reads every segment itself: the damaged entry fails,
		// whether or not the file still splits into records.
		if _, ok := parseSegment(flipped); !ok {
			return flipCase{class: "older segment, unsplittable", errEntries: []core.Index{idx}}
		}
		return flipCase{class: "older segment", errEntries: []core.Index{idx}}
	case off >= sp.body && lastRec:
		return flipCase{class: "last segment, last record, checksummed bytes", cutTo: idx - 1, cutOK: true}
	case off >= sp.body:
		return flipCase{class: "last segment, inner record, checksummed bytes", errEntries: []core.Index{idx}}
	case lastRec:
		// A bad length of the last record: what follows it is garbage
		// either way, so an error and a cut are both right.
		return flipCase{class: "last segment, last record, length prefix", errEntries: []core.Index{idx}, cutTo: idx - 1, cutOK: true}
	}
	return flipCase{class: innerLengthClass, errEntries: []core.Index{idx}, cutTo: idx - 1, cutOK: lenient}
}

// flipHistory is a log the bit-flip tests damage, and whether to damage an
// older segment besides the last.
type flipHistory struct {
	h     crashHistory
	older bool
}

// flipHistories are the seeded mixed history, and one of small equal
// entries, where a length prefix that grows by 16–128 reaches past the
// records after it in the last segment.
func flipHistories() map[string]flipHistory {
	small := crashHistory{}
	for i := core.Index(1); i <= 94; i += 3 {
		batch := ents(i, i+2, 1)
		small.log = append(small.log, batch...)
		small.hard = core.HardState{Term: 1, Vote: 1, Commit: i}
		small.readies = append(small.readies, core.Ready{Entries: batch, HardState: small.hard})
	}
	return map[string]flipHistory{"mixed": {makeCrashHistory(1, crashBatches), true}, "small": {small, false}}
}

// TestBitFlipEveryRecordByte flips a bit in every byte of every record of
// the last segment and of an older one (one bit per byte, and each of the
// eight bits of a length prefix), opens a copy and reads every entry back.
// The outcome must be the one classifyFlip names: an error wrapping
// ErrCorrupt that names the file and the entry, or for the last record of
// the log a tail cut back to exactly the entries before it. Never a wrong
// entry, never a panic.
func TestBitFlipEveryRecordByte(t *testing.T) {
	for name, fh := range flipHistories() {
		t.Run(name, func(t *testing.T) { testBitFlips(t, fh, true, func(string) bool { return true }) })
	}
}

// TestBitFlipInnerLengthPrefix is the strict form of the bit-flip test for
// the length prefix of a record inside the last segment: valid records
// follow it, so it is damage, not a torn write, and Open must fail.
func TestBitFlipInnerLengthPrefix(t *testing.T) {
	for name, fh := range flipHistories() {
		t.Run(name, func(t *testing.T) {
			testBitFlips(t, fh, false, func(class string) bool { return class == innerLengthClass })
		})
	}
}

func testBitFlips(t *testing.T, fh flipHistory, lenient bool, include func(class string) bool) {
	h := fh.h
	opts := crashOpts()
	src := scratchDir(t)
	h.write(t, src, opts)
	segs := segmentFiles(t, src)
	if len(segs) < 3 {
		t.Fatalf("%d segments, want at least 3", len(segs))
	}
	work := scratchDir(t)
	type failure struct {
		n        int
		examples []string
	}
	failures := map[string]*failure{}
	fail := func(class, format string, args ...any) {
		f := failures[class]
		if f == nil {
			f = &failure{}
			failures[class] = f
		}
		f.n++
		if len(f.examples) < 3 {
			f.examples = append(f.examples, fmt.Sprintf(format, args...))
		}
	}
	cases := map[string]int{}
	ks := []int{len(segs) - 1}
	if fh.older {
		ks = append(ks, 1)
	}
	for _, k := range ks {
		seg := segs[k]
		last := k == len(segs)-1
		rel, _ := filepath.Rel(src, seg.path)
		data := mustRead(t, seg.path)
		spans, ok := parseSegment(data)
		if !ok || len(spans) < 3 {
			t.Fatalf("segment %s: %d records, parsed %v", rel, len(spans), ok)
		}
		for p, sp := range spans {
			for off := sp.start; off < sp.end; off++ {
				bits := []uint{uint(off % 8)}
				if off < sp.body {
					bits = []uint{0, 1, 2, 3, 4, 5, 6, 7}
				}
				for _, bit := range bits {
					flipped := slices.Clone(data)
					flipped[off] ^= 1 << bit
					fc := classifyFlip(last, spans, p, off, seg.first, flipped, lenient)
					if !include(fc.class) {
						continue
					}
					cases[fc.class]++
					dir := freshCopy(t, src, work, 0)
					path := filepath.Join(dir, rel)
					mustWrite(t, path, flipped)
					where := fmt.Sprintf("%s byte %d bit %d (entry %d)", rel, off, bit, seg.first+core.Index(p))
					st, err := openAndRead(dir, opts)
					switch {
					case err != nil && strings.HasPrefix(err.Error(), "PANIC"):
						fail(fc.class, "%s: %v", where, err)
					case err != nil && len(fc.errEntries) == 0:
						fail(fc.class, "%s: error %v, want the log cut back to %d", where, err, fc.cutTo)
					case err != nil && !errors.Is(err, ErrCorrupt):
						fail(fc.class, "%s: error %v does not wrap ErrCorrupt", where, err)
					case err != nil && !errorNames(err, path, fc.errEntries...):
						fail(fc.class, "%s: error %q does not name %s and entry %v", where, err, path, fc.errEntries)
					case err != nil:
					case !isPrefix(st.ents, h.log) || st.first != 1:
						fail(fc.class, "%s: WRONG ENTRIES: log [%d, %d] is not a prefix of what was written", where, st.first, st.last)
					case !fc.cutOK:
						fail(fc.class, "%s: opened with entries [1, %d] of %d, want an error naming entry %v", where, st.last, len(h.log), fc.errEntries)
					case st.last != fc.cutTo:
						fail(fc.class, "%s: cut back to %d, want %d", where, st.last, fc.cutTo)
					}
				}
			}
		}
	}
	for class, f := range failures {
		t.Errorf("%s: %d of %d flips fail, e.g.:\n  %s", class, f.n, cases[class], strings.Join(f.examples, "\n  "))
	}
	t.Logf("flips per class: %v", cases)
}

// isPrefix reports whether got is want[:len(got)], entry by entry.
func isPrefix(got, want []core.Entry) bool {
	if len(got) > len(want) {
		return false
	}
	for i := range got {
		if !sameEntry(got[i], want[i]) {
			return false
		}
	}
	return true
}

// TestAppendedZerosAreCut appends zeros to the last segment, as a file
// system that extended the file but never wrote the data leaves it
// (tidwall/wal alone reads each zero as an empty entry): Open must cut
// them off and return exactly the entries written.
func TestAppendedZerosAreCut(t *testing.T) {
	opts := crashOpts()
	h := makeCrashHistory(1, crashBatches)
	src := scratchDir(t)
	h.write(t, src, opts)
	_, rel, data, _ := lastSegment(t, src)
	work := scratchDir(t)
	for _, n := range []int{1, 2, 3, 16, 127, 128, 129, 1000, 4096} {
		dir := freshCopy(t, src, work, n)
		path := filepath.Join(dir, rel)
		mustWrite(t, path, append(slices.Clone(data), make([]byte, n)...))
		st, err := openAndRead(dir, opts)
		if err != nil {
			t.Fatalf("%d zeros: %v", n, err)
		}
		checkEntries(t, fmt.Sprintf("%d zeros", n), st.ents, h.log)
		checkSize(t, path, len(data))
		l, err := Open(dir, opts)
		if err != nil {
			t.Fatal(err)
		}
		more := ents(core.Index(len(h.log)+1), core.Index(len(h.log)+3), h.hard.Term)
		if err := l.Save(core.Ready{Entries: more}); err != nil {
			t.Fatal(err)
		}
		l.Close()
		st, err = openAndRead(dir, opts)
		if err != nil {
			t.Fatalf("%d zeros, then appended: %v", n, err)
		}
		checkEntries(t, fmt.Sprintf("%d zeros, then appended", n), st.ents, append(slices.Clone(h.log), more...))
	}
}

// TestZeroedTail zeroes the end of the last segment from offsets around
// every record boundary and inside every record: data the file system
// never wrote although the file has its size (each zero reads as an empty
// entry to tidwall/wal). Open must return exactly the records before the
// zeroed bytes.
func TestZeroedTail(t *testing.T) {
	opts := crashOpts()
	h := makeCrashHistory(1, crashBatches)
	src := scratchDir(t)
	h.write(t, src, opts)
	seg, rel, data, spans := lastSegment(t, src)
	var froms []int
	for _, s := range spans {
		froms = append(froms, s.start, s.start+1, s.body, s.body+1, s.body+5, (s.body+s.end)/2, s.end-1)
	}
	work := scratchDir(t)
	for _, from := range froms {
		dir := freshCopy(t, src, work, 0)
		zeroed := slices.Clone(data)
		clear(zeroed[from:])
		mustWrite(t, filepath.Join(dir, rel), zeroed)
		whole := 0
		for _, s := range spans {
			if s.end <= from {
				whole++
			}
		}
		want := seg.first + core.Index(whole) - 1
		st, err := openAndRead(dir, opts)
		if err != nil {
			t.Fatalf("zeroed from byte %d: %v", from, err)
		}
		checkEntries(t, fmt.Sprintf("zeroed from byte %d", from), st.ents, h.log[:want])
	}
}

// TestAppendedGarbageIsCutOrReported appends seeded random bytes, and
// crafted ones, to the last segment: Open may cut them off or fail with
// ErrCorrupt naming the file and the entry after the last one, but never
// return them as entries.
func TestAppendedGarbageIsCutOrReported(t *testing.T) {
	opts := crashOpts()
	h := makeCrashHistory(1, crashBatches)
	src := scratchDir(t)
	h.write(t, src, opts)
	_, rel, data, spans := lastSegment(t, src)
	lastRec := data[spans[len(spans)-1].start:]
	next := core.Index(len(h.log) + 1)
	rng := rand.New(rand.NewPCG(3, 3))
	random := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		return b
	}
	// A record of the next entry with a bad checksum.
	badCRC := appendRecord(nil, &core.Entry{Index: next, Term: h.hard.Term, Data: []byte("x")})
	badCRC[2] ^= 1
	type garbageCase struct {
		name string
		g    []byte
	}
	garbage := []garbageCase{
		{"copy of the last record", lastRec},
		{"next record, bad checksum", append([]byte{byte(len(badCRC))}, badCRC...)},
		{"next record, bad checksum, more", append(append([]byte{byte(len(badCRC))}, badCRC...), 1, 2, 3)},
		{"length past the end", []byte{0x7f, 1, 2}},
		{"zeros then garbage", append(make([]byte, 20), random(20)...)},
		{"garbage then zeros", append(random(20), make([]byte, 20)...)},
	}
	for i := range 60 {
		garbage = append(garbage, garbageCase{fmt.Sprintf("random %d", i), random(1 + rng.IntN(300))})
	}
	work := scratchDir(t)
	outcomes := map[string]int{}
	for n, c := range garbage {
		dir := freshCopy(t, src, work, n)
		path := filepath.Join(dir, rel)
		mustWrite(t, path, append(slices.Clone(data), c.g...))
		st, err := openAndRead(dir, opts)
		switch {
		case err != nil && strings.HasPrefix(err.Error(), "PANIC"):
			t.Errorf("%s: %v", c.name, err)
		case err != nil && (!errors.Is(err, ErrCorrupt) || !errorNames(err, path, next)):
			t.Errorf("%s: error %q does not wrap ErrCorrupt or name %s and entry %d", c.name, err, path, next)
		case err != nil:
			outcomes["reported"]++
		case !isPrefix(st.ents, h.log) || len(st.ents) != len(h.log):
			t.Errorf("%s: log [%d, %d], want exactly the %d entries written", c.name, st.first, st.last, len(h.log))
		default:
			outcomes["cut"]++
			checkSize(t, path, len(data))
		}
	}
	t.Logf("outcomes: %v", outcomes)
}

// checkSize fails t unless the file at path has size bytes: a repaired
// tail is cut on disk, not only skipped.
func checkSize(t *testing.T, path string, size int) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Size() != int64(size) {
		t.Fatalf("%s has %d bytes, want it cut back to %d", path, fi.Size(), size)
	}
}
