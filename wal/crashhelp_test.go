package wal

// Helpers shared by the crash, power-loss, kill and golden tests: a seeded
// history of Saves, copies of a log directory, and a reader that opens a
// log, reads everything back and never lets a panic escape.

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"runtime/debug"
	"slices"
	"strconv"
	"testing"

	"github.com/stepraft/stepraft/core"
)

// crashSegmentSize keeps segment files small, so that a short history
// spans several of them and the byte-by-byte loops stay short.
const crashSegmentSize = 512

// crashBatches is the length of the seeded history most crash tests write:
// with crashSegmentSize it fills 9 segments and leaves 10 records in the
// tenth, which the tests damage (lastSegment checks that some are there).
const crashBatches = 43

func crashOpts() Options { return Options{SegmentSize: crashSegmentSize} }

// crashHistory is a sequence of Saves and the log and hard state they
// leave.
type crashHistory struct {
	readies []core.Ready
	log     []core.Entry // log[i] has index i+1
	hard    core.HardState
}

// makeCrashHistory returns n Saves of 1–5 entries each, with a hard state.
// Payloads are 0–40 random bytes, and one in ten 120–150 bytes so that its
// record needs a two-byte length prefix; about one entry in eight is a
// conf change; the term rises every few batches, and the vote with it.
// The same seed gives the same history.
func makeCrashHistory(seed uint64, n int) crashHistory {
	rng := rand.New(rand.NewPCG(seed, 0x5eed))
	var h crashHistory
	term := core.Term(1)
	for b := 0; b < n; b++ {
		if b > 0 && rng.IntN(4) == 0 {
			term++
		}
		k := 1 + rng.IntN(5)
		var batch []core.Entry
		for range k {
			e := core.Entry{Index: core.Index(len(h.log) + 1), Term: term, Type: core.EntryNormal}
			if rng.IntN(8) == 0 {
				e.Type = core.EntryConfChange
			}
			size := rng.IntN(41)
			if rng.IntN(10) == 0 {
				size = 120 + rng.IntN(31)
			}
			if size > 0 {
				e.Data = make([]byte, size)
				for i := range e.Data {
					e.Data[i] = byte(rng.Uint32())
				}
			}
			batch = append(batch, e)
			h.log = append(h.log, e)
		}
		h.hard = core.HardState{Term: term, Vote: core.NodeID(1 + uint64(term)%3), Commit: batch[0].Index}
		h.readies = append(h.readies, core.Ready{Entries: batch, HardState: h.hard})
	}
	return h
}

// write opens dir, saves every Ready of h and closes the log.
func (h crashHistory) write(t testing.TB, dir string, opts Options) {
	t.Helper()
	l, err := Open(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	for i, rd := range h.readies {
		if err := l.Save(rd); err != nil {
			t.Fatalf("save %d: %v", i, err)
		}
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
}

// crashState is everything a reopened log says.
type crashState struct {
	first, last core.Index
	ents        []core.Entry // [first, last]
	hard        core.HardState
	conf        core.ConfState
	snap        core.SnapshotMeta
	edgeTerm    core.Term // Term(first-1)
}

// openAndRead opens dir, reads every entry and closes it. A panic comes
// back as an error saying so, with its stack: it is never a valid outcome.
func openAndRead(dir string, opts Options) (st crashState, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("PANIC: %v\n%s", p, debug.Stack())
		}
	}()
	l, err := Open(dir, opts)
	if err != nil {
		return st, err
	}
	defer l.Close()
	return readState(l)
}

func readState(l *Log) (st crashState, err error) {
	if st.first, err = l.FirstIndex(); err != nil {
		return st, err
	}
	if st.last, err = l.LastIndex(); err != nil {
		return st, err
	}
	if st.hard, st.conf, err = l.InitialState(); err != nil {
		return st, err
	}
	snap, err := l.Snapshot()
	if err != nil {
		return st, err
	}
	st.snap = snap.Meta
	if st.edgeTerm, err = l.Term(st.first - 1); err != nil {
		return st, err
	}
	if st.last >= st.first {
		if st.ents, err = l.Entries(st.first, st.last+1, 1<<40); err != nil {
			return st, err
		}
		if got, want := len(st.ents), int(st.last-st.first+1); got != want {
			return st, fmt.Errorf("Entries(%d, %d) returned %d entries, want %d", st.first, st.last+1, got, want)
		}
	}
	return st, nil
}

// sameEntry reports whether a and b are the same entry (nil and empty
// data are the same).
func sameEntry(a, b core.Entry) bool {
	return a.Index == b.Index && a.Term == b.Term && a.Type == b.Type && bytes.Equal(a.Data, b.Data)
}

// checkEntries fails t unless got is exactly want.
func checkEntries(t testing.TB, what string, got, want []core.Entry) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d entries %s, want %d ending at %d", what, len(got), describeEnds(got), len(want), lastIndexOf(want))
	}
	for i := range got {
		if !sameEntry(got[i], want[i]) {
			t.Fatalf("%s: entry %d is %s, want %s", what, want[i].Index,
				core.DescribeEntry(got[i]), core.DescribeEntry(want[i]))
		}
	}
}

func lastIndexOf(ents []core.Entry) core.Index {
	if len(ents) == 0 {
		return 0
	}
	return ents[len(ents)-1].Index
}

func describeEnds(ents []core.Entry) string {
	if len(ents) == 0 {
		return "[]"
	}
	return fmt.Sprintf("[%d..%d]", ents[0].Index, ents[len(ents)-1].Index)
}

// copyTree copies the regular files and directories under src to dst,
// which must not exist or be empty.
func copyTree(t testing.TB, src, dst string) {
	t.Helper()
	err := filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, path)
		if err != nil {
			return err
		}
		target := filepath.Join(dst, rel)
		if d.IsDir() {
			return os.MkdirAll(target, 0o750)
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		return os.WriteFile(target, b, 0o640)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// freshCopy copies src to a new directory under base and returns it.
func freshCopy(t testing.TB, src, base string, n int) string {
	t.Helper()
	dst := filepath.Join(base, strconv.Itoa(n))
	if err := os.RemoveAll(dst); err != nil {
		t.Fatal(err)
	}
	copyTree(t, src, dst)
	return dst
}

// segmentFiles lists the entry segments of the log in dir, in order.
func segmentFiles(t testing.TB, dir string) []segment {
	t.Helper()
	segs, err := segments(filepath.Join(dir, entriesDir))
	if err != nil {
		t.Fatal(err)
	}
	return segs
}

// recSpan is where one tidwall/wal entry lies in a segment file: its
// uvarint length at start, the record (version, CRC, msgpack) in
// [body, end).
type recSpan struct{ start, body, end int }

// parseSegment splits a segment file the way tidwall/wal does; ok is
// false if the bytes do not split into whole entries.
func parseSegment(data []byte) (spans []recSpan, ok bool) {
	for off := 0; off < len(data); {
		size, k := binary.Uvarint(data[off:])
		if k <= 0 || size > uint64(len(data)-off-k) {
			return spans, false
		}
		spans = append(spans, recSpan{start: off, body: off + k, end: off + k + int(size)})
		off += k + int(size)
	}
	return spans, true
}

// lastSegment returns the last segment of the log in src, its path
// relative to src, its bytes and its records, and fails t unless the log
// has at least 3 segments and the last holds at least 3 records: the crash
// tests damage that segment, and a history that leaves it empty (a roll
// right after the last write) would let them pass testing nothing.
func lastSegment(t *testing.T, src string) (segment, string, []byte, []recSpan) {
	t.Helper()
	segs := segmentFiles(t, src)
	if len(segs) < 3 {
		t.Fatalf("%d segments, want at least 3", len(segs))
	}
	seg := segs[len(segs)-1]
	rel, err := filepath.Rel(src, seg.path)
	if err != nil {
		t.Fatal(err)
	}
	data := mustRead(t, seg.path)
	spans, ok := parseSegment(data)
	if !ok || len(spans) < 3 {
		t.Fatalf("last segment: %d records, parsed %v; want a history that leaves at least 3", len(spans), ok)
	}
	return seg, rel, data, spans
}

func mustRead(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func mustWrite(t testing.TB, path string, b []byte) {
	t.Helper()
	if err := os.WriteFile(path, b, 0o640); err != nil {
		t.Fatal(err)
	}
}

var entryInError = regexp.MustCompile(`entry (\d+)\b`)

// errorNames reports whether err mentions path and one of the entries.
func errorNames(err error, path string, entries ...core.Index) bool {
	msg := err.Error()
	if !bytes.Contains([]byte(msg), []byte(path)) {
		return false
	}
	for _, m := range entryInError.FindAllStringSubmatch(msg, -1) {
		n, _ := strconv.ParseUint(m[1], 10, 64)
		if slices.Contains(entries, core.Index(n)) {
			return true
		}
	}
	return false
}

// scratchDir returns a directory for the many copies a crash test opens.
// Opening a fresh copy fsyncs what was just written to it, which costs
// milliseconds on a disk and nothing on tmpfs: no test here depends on
// what an fsync really makes durable (the power-loss tests record that
// themselves), so the copies go to /dev/shm where it exists.
func scratchDir(t testing.TB) string {
	t.Helper()
	if fi, err := os.Stat("/dev/shm"); err == nil && fi.IsDir() {
		if dir, err := os.MkdirTemp("/dev/shm", "stepraft-wal-test-"); err == nil {
			t.Cleanup(func() { os.RemoveAll(dir) })
			return dir
		}
	}
	return t.TempDir()
}
