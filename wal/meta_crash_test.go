package wal

// Damaged and torn metadata: the two slots of the meta file (meta.go).

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/stepraft/stepraft/core"
)

// metaLog writes a log whose meta file holds hard state {2,2,3} in slot 0
// (sequence 3) and {3,3,5}, the newest, in slot 1 (sequence 4); it returns
// the directory and both hard states.
func metaLog(t *testing.T) (dir string, older, newest core.HardState) {
	dir = scratchDir(t)
	l, err := Open(dir, Options{}) // slot 0, sequence 1
	if err != nil {
		t.Fatal(err)
	}
	older, newest = core.HardState{Term: 2, Vote: 2, Commit: 3}, core.HardState{Term: 3, Vote: 3, Commit: 5}
	for _, rd := range []core.Ready{
		{Entries: ents(1, 5, 1), HardState: core.HardState{Term: 1, Vote: 1}}, // slot 1, sequence 2
		{Entries: ents(6, 8, 2), HardState: older},                            // slot 0, sequence 3
		{HardState: newest}, // slot 1, sequence 4
	} {
		if err := l.Save(rd); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	b := mustRead(t, filepath.Join(dir, metaFile))
	for slot, want := range []uint64{3, 4} {
		if seq := binary.BigEndian.Uint64(b[slot*metaSlotSize+10:]); seq != want {
			t.Fatalf("slot %d holds sequence %d, want %d", slot, seq, want)
		}
	}
	return dir, older, newest
}

// slotLen is the length of the slot written at off of b (header, payload,
// checksum), read from its header.
func slotLen(b []byte, off int) int {
	return metaHeader + int(binary.BigEndian.Uint32(b[off+18:])) + 4
}

// metaDamage damages the slot at off of meta file b in place.
type metaDamage struct {
	name string
	do   func(b []byte, off int) []byte
}

var metaDamages = []metaDamage{
	{"magic", func(b []byte, off int) []byte { b[off] ^= 0x20; return b }},
	{"version", func(b []byte, off int) []byte { b[off+9] ^= 1; return b }},
	{"sequence", func(b []byte, off int) []byte { b[off+17] ^= 1; return b }},
	{"length", func(b []byte, off int) []byte { b[off+21] ^= 4; return b }},
	{"term", func(b []byte, off int) []byte { b[off+metaHeader+23] ^= 1; return b }},
	{"checksum", func(b []byte, off int) []byte { b[off+slotLen(b, off)-1] ^= 0x80; return b }},
	{"zeroed", func(b []byte, off int) []byte { clear(b[off:min(len(b), off+metaSlotSize)]); return b }},
}

// TestMetaOneSlotDamaged damages slot 0, then slot 1, in each of several
// ways: Open must use the other, valid slot, even when the damaged one was
// the newest (a torn write of it leaves the previous state in force), and
// write the next state into the damaged slot, never over the good one.
// With both slots damaged, Open fails naming the file.
func TestMetaOneSlotDamaged(t *testing.T) {
	src, older, newest := metaLog(t)
	work := scratchDir(t)
	orig := mustRead(t, filepath.Join(src, metaFile))
	n := 0
	for _, d := range metaDamages {
		// Damage slot 0 (older): the newest is used; damage slot 1
		// (newest): the older one is.
		for slot, want := range []core.HardState{newest, older} {
			n++
			name := fmt.Sprintf("slot %d %s", slot, d.name)
			dir := freshCopy(t, src, work, n)
			path := filepath.Join(dir, metaFile)
			b := d.do(slices.Clone(orig), slot*metaSlotSize)
			mustWrite(t, path, b)
			st, err := openAndRead(dir, Options{})
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			if st.hard != want {
				t.Fatalf("%s: hard state %+v, want %+v from the other slot", name, st.hard, want)
			}
			checkEntries(t, name, st.ents, append(ents(1, 5, 1), ents(6, 8, 2)...))
			// The next write goes to the damaged slot.
			l, err := Open(dir, Options{})
			if err != nil {
				t.Fatal(err)
			}
			next := core.HardState{Term: 7, Vote: 1, Commit: 8}
			if err := l.Save(core.Ready{HardState: next}); err != nil {
				t.Fatalf("%s: save: %v", name, err)
			}
			l.Close()
			good := 1 - slot
			after := mustRead(t, path)
			if !bytes.Equal(after[good*metaSlotSize:good*metaSlotSize+slotLen(orig, good*metaSlotSize)],
				orig[good*metaSlotSize:good*metaSlotSize+slotLen(orig, good*metaSlotSize)]) {
				t.Fatalf("%s: the write after open overwrote the only good slot %d", name, good)
			}
			st, err = openAndRead(dir, Options{})
			if err != nil || st.hard != next {
				t.Fatalf("%s: reopened after a write: hard state %+v, %v; want %+v", name, st.hard, err, next)
			}
		}
	}
	// Both slots damaged, in every pair of ways.
	for _, d0 := range metaDamages {
		for _, d1 := range metaDamages {
			n++
			dir := freshCopy(t, src, work, n)
			path := filepath.Join(dir, metaFile)
			mustWrite(t, path, d1.do(d0.do(slices.Clone(orig), 0), metaSlotSize))
			_, err := openAndRead(dir, Options{})
			if err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "no valid metadata slot") {
				t.Fatalf("slot 0 %s, slot 1 %s: open: %v; want an error naming %s", d0.name, d1.name, err, path)
			}
		}
	}
	// Slot 1 missing, or cut short.
	for _, size := range []int{metaSlotSize, metaSlotSize + 1, metaSlotSize + 30, metaSlotSize + slotLen(orig, metaSlotSize) - 1} {
		n++
		dir := freshCopy(t, src, work, n)
		mustWrite(t, filepath.Join(dir, metaFile), orig[:size])
		st, err := openAndRead(dir, Options{})
		if err != nil || st.hard != older {
			t.Fatalf("meta file cut to %d bytes: hard state %+v, %v; want %+v", size, st.hard, err, older)
		}
	}
}

// TestMetaTornWrite emulates a metadata write torn by a power cut: the
// first k bytes of the new slot reached the disk, the rest of the slot
// still holds what it held (or, for the first write of slot 1, the file
// ends there). For every k Open must use the other slot: the state before
// the write.
func TestMetaTornWrite(t *testing.T) {
	t.Run("overwrite", func(t *testing.T) {
		src, _, newest := metaLog(t)
		path := filepath.Join(src, metaFile)
		before := mustRead(t, path)
		l, err := Open(src, Options{})
		if err != nil {
			t.Fatal(err)
		}
		next := core.HardState{Term: 4, Vote: 1, Commit: 6}
		if err := l.Save(core.Ready{HardState: next}); err != nil { // to slot 0
			t.Fatal(err)
		}
		l.Close()
		after := mustRead(t, path)
		end := slotLen(after, 0)
		if bytes.Equal(before[:end], after[:end]) {
			t.Fatal("the write did not go to slot 0")
		}
		work := scratchDir(t)
		for k := 0; k <= end; k++ {
			torn := slices.Clone(before)
			copy(torn, after[:k])
			want := newest
			if bytes.Equal(torn[:end], after[:end]) {
				want = next // every byte that differs was written
			}
			dir := freshCopy(t, src, work, 0)
			mustWrite(t, filepath.Join(dir, metaFile), torn)
			st, err := openAndRead(dir, Options{})
			if err != nil || st.hard != want {
				t.Fatalf("%d of %d bytes written: hard state %+v, %v; want %+v", k, end, st.hard, err, want)
			}
		}
	})
	t.Run("first write of slot 1", func(t *testing.T) {
		src := scratchDir(t)
		l, err := Open(src, Options{})
		if err != nil {
			t.Fatal(err)
		}
		hs := core.HardState{Term: 1, Vote: 1}
		if err := l.Save(core.Ready{HardState: hs}); err != nil {
			t.Fatal(err)
		}
		l.Close()
		full := mustRead(t, filepath.Join(src, metaFile))
		work := scratchDir(t)
		for size := metaSlotSize; size <= len(full); size++ {
			dir := freshCopy(t, src, work, 0)
			mustWrite(t, filepath.Join(dir, metaFile), full[:size])
			want := core.HardState{}
			if size == len(full) {
				want = hs
			}
			st, err := openAndRead(dir, Options{})
			if err != nil || st.hard != want {
				t.Fatalf("meta file of %d of %d bytes: hard state %+v, %v; want %+v", size, len(full), st.hard, err, want)
			}
		}
	})
}

// TestMetaLostWithEntriesIsAnError removes the meta file, or empties it,
// in a log that holds entries and a vote. Open must not take it for a new
// log: that would forget the term and the vote (a node that forgets its
// vote can help elect two leaders in one term).
func TestMetaLostWithEntriesIsAnError(t *testing.T) {
	src, _, _ := metaLog(t)
	work := scratchDir(t)
	for i, damage := range []func(path string) error{
		os.Remove,
		func(path string) error { return os.Truncate(path, 0) },
	} {
		dir := freshCopy(t, src, work, i)
		if err := damage(filepath.Join(dir, metaFile)); err != nil {
			t.Fatal(err)
		}
		st, err := openAndRead(dir, Options{})
		if err == nil {
			t.Errorf("case %d: opened with hard state %+v and entries [%d, %d]; want an error: the term and vote are lost", i, st.hard, st.first, st.last)
		}
	}
}

// TestMetaTornFirstWriteOfNewLog cuts the very first metadata write of a
// new, empty log (the crash happened inside the first Open, before it
// returned, so nothing was ever promised). The directory should open as
// a new log rather than be refused forever.
func TestMetaTornFirstWriteOfNewLog(t *testing.T) {
	src := scratchDir(t)
	l, err := Open(src, Options{})
	if err != nil {
		t.Fatal(err)
	}
	l.Close()
	full := mustRead(t, filepath.Join(src, metaFile))
	work := scratchDir(t)
	for size := 1; size < len(full); size++ {
		for _, zeros := range []bool{false, true} {
			dir := freshCopy(t, src, work, 0)
			b := slices.Clone(full[:size])
			if zeros {
				b = make([]byte, len(full)) // size written, data not
			}
			mustWrite(t, filepath.Join(dir, metaFile), b)
			if _, err := openAndRead(dir, Options{}); err != nil {
				t.Fatalf("first meta write torn at %d bytes (zeros %v): %v", size, zeros, err)
			}
		}
	}
}

// errorsAboutDamage collects, from the tests of damaged layouts, errors
// that report damaged data on disk; doc.go says each wraps ErrCorrupt.
var _ = errors.Is
