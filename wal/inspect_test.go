package wal

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stepraft/stepraft/core"
)

// inspWriteLog writes entries 1..n (term 1, then term 2 from n/2 on) in
// batches of 10 into a new log with small segments, and closes it.
func inspWriteLog(t *testing.T, dir string, n int) {
	t.Helper()
	l, err := Open(dir, Options{SegmentSize: 2 << 10, ClusterID: 0xc1, NodeID: 3})
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= n; i += 10 {
		var es []core.Entry
		for j := i; j < i+10 && j <= n; j++ {
			term := core.Term(1)
			if j >= n/2 {
				term = 2
			}
			es = append(es, core.Entry{Index: core.Index(j), Term: term, Type: core.EntryNormal,
				Data: fmt.Appendf(nil, "entry %d %s", j, bytes.Repeat([]byte("x"), j%50))})
		}
		hs := core.HardState{Term: es[len(es)-1].Term, Vote: 3, Commit: core.Index(i - 1)}
		if err := l.Save(core.Ready{Entries: es, HardState: hs}); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
}

// inspDirState is every file under dir with its size, mode, modification
// time and content hash: what Inspect must leave as it is.
func inspDirState(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		sum := ""
		if !d.IsDir() {
			b, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			sum = fmt.Sprintf("%x", sha256.Sum256(b))
		}
		out[path] = fmt.Sprintf("%d %v %d %s", fi.Size(), fi.Mode(), fi.ModTime().UnixNano(), sum)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// inspRecordOffset returns the offset in its segment of the record of
// entry i (its length prefix), and the segment's path.
func inspRecordOffset(t *testing.T, dir string, i core.Index) (string, int) {
	t.Helper()
	segs, err := segments(filepath.Join(dir, entriesDir))
	if err != nil {
		t.Fatal(err)
	}
	for k := len(segs) - 1; k >= 0; k-- {
		if segs[k].first > i {
			continue
		}
		data, err := os.ReadFile(segs[k].path)
		if err != nil {
			t.Fatal(err)
		}
		off := 0
		for j := segs[k].first; j < i; j++ {
			size, n := binary.Uvarint(data[off:])
			off += n + int(size)
		}
		return segs[k].path, off
	}
	t.Fatalf("no segment holds entry %d", i)
	return "", 0
}

func inspFlip(t *testing.T, path string, off int) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	b[off] ^= 0x40
	if err := os.WriteFile(path, b, 0o640); err != nil {
		t.Fatal(err)
	}
}

func TestInspectHealthyLog(t *testing.T) {
	dir := t.TempDir()
	inspWriteLog(t, dir, 200)
	before := inspDirState(t, dir)
	var got []core.Entry
	in, err := Inspect(dir, func(e core.Entry) bool {
		e.Data = bytes.Clone(e.Data)
		got = append(got, e)
		return true
	})
	if err != nil {
		t.Fatal(err)
	}
	if in.Damaged() || len(in.Notes) > 0 {
		t.Fatalf("damage %v notes %v", in.Damage, in.Notes)
	}
	if in.First != 1 || in.Last != 200 || len(got) != 200 || len(in.Segments) < 3 {
		t.Fatalf("first %d last %d, %d entries, %d segments", in.First, in.Last, len(got), len(in.Segments))
	}
	for k, e := range got {
		want := fmt.Sprintf("entry %d ", k+1)
		if e.Index != core.Index(k+1) || !bytes.HasPrefix(e.Data, []byte(want)) {
			t.Fatalf("entry %d: %d %q", k+1, e.Index, e.Data)
		}
	}
	m := in.Meta.Slots[in.Meta.Current]
	if m.ClusterID != 0xc1 || m.NodeID != 3 || m.HardState != (core.HardState{Term: 2, Vote: 3, Commit: 190}) {
		t.Fatalf("slot in force: %+v", m)
	}
	if other := in.Meta.Slots[1-in.Meta.Current]; other.Err != nil || other.Seq >= m.Seq {
		t.Fatalf("other slot: %+v (in force: seq %d)", other, m.Seq)
	}
	// fn asking to stop stops the calls, not the reading.
	calls := 0
	in, err = Inspect(dir, func(core.Entry) bool { calls++; return calls < 5 })
	if err != nil || calls != 5 || in.Last != 200 {
		t.Fatalf("stop after 5: %d calls, last %d, %v", calls, in.Last, err)
	}
	if after := inspDirState(t, dir); fmt.Sprint(after) != fmt.Sprint(before) {
		t.Fatalf("Inspect changed the directory:\nbefore %v\nafter  %v", before, after)
	}
}

// TestInspectAgreesWithOpen damages a log in ways Open fails on and ways it
// repairs, and checks that Inspect reports the damage, classifies it as
// Open does, and changes nothing.
func TestInspectAgreesWithOpen(t *testing.T) {
	tests := []struct {
		name   string
		damage func(t *testing.T, dir string)
		torn   bool       // Open cuts it off and succeeds
		index  core.Index // the entry Inspect must name
		last   core.Index // Inspection.Last
	}{
		{"flipped byte in an old segment", func(t *testing.T, dir string) {
			path, off := inspRecordOffset(t, dir, 5)
			inspFlip(t, path, off+8)
		}, false, 5, 200},
		{"flipped byte mid last segment", func(t *testing.T, dir string) {
			path, off := inspRecordOffset(t, dir, 198)
			inspFlip(t, path, off+12)
		}, false, 198, 200},
		{"flipped byte in the last record", func(t *testing.T, dir string) {
			path, off := inspRecordOffset(t, dir, 200)
			inspFlip(t, path, off+12)
		}, true, 200, 199},
		{"last record cut short", func(t *testing.T, dir string) {
			path, off := inspRecordOffset(t, dir, 200)
			if err := os.Truncate(path, int64(off+7)); err != nil {
				t.Fatal(err)
			}
		}, true, 200, 199},
		{"zeros appended", func(t *testing.T, dir string) {
			path, _ := inspRecordOffset(t, dir, 200)
			f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if _, err := f.Write(make([]byte, 100)); err != nil {
				t.Fatal(err)
			}
		}, true, 201, 200},
		{"garbage appended", func(t *testing.T, dir string) {
			path, _ := inspRecordOffset(t, dir, 200)
			f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if _, err := f.Write(bytes.Repeat([]byte{0x5a, 0x01, 0xa5}, 40)); err != nil {
				t.Fatal(err)
			}
		}, true, 201, 200},
		{"length prefix broken in an old segment", func(t *testing.T, dir string) {
			path, off := inspRecordOffset(t, dir, 7)
			b, _ := os.ReadFile(path)
			b[off] = 0xff // a length far past the end of the file
			b[off+1] = 0xff
			if err := os.WriteFile(path, b, 0o640); err != nil {
				t.Fatal(err)
			}
		}, false, 7, 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			inspWriteLog(t, dir, 200)
			tt.damage(t, dir)
			before := inspDirState(t, dir)
			in, err := Inspect(dir, nil)
			if err != nil {
				t.Fatal(err)
			}
			if after := inspDirState(t, dir); fmt.Sprint(after) != fmt.Sprint(before) {
				t.Fatalf("Inspect changed the directory")
			}
			if !in.Damaged() {
				t.Fatalf("no damage reported")
			}
			d := in.Damage[0]
			if d.Index != tt.index || d.TornTail != tt.torn || !errors.Is(d.Err, ErrCorrupt) || in.Last != tt.last {
				t.Fatalf("damage %v (torn %t, index %d), last %d; want torn %t index %d last %d",
					in.Damage, d.TornTail, d.Index, in.Last, tt.torn, tt.index, tt.last)
			}
			l, err := Open(dir, Options{})
			if tt.torn != (err == nil) {
				t.Fatalf("Inspect says torn=%t, Open says %v", tt.torn, err)
			}
			if err == nil {
				defer l.Close()
				if last, _ := l.LastIndex(); last != in.Last {
					t.Fatalf("Open repaired the log to %d, Inspect said %d", last, in.Last)
				}
			}
		})
	}
}

func TestInspectMetaDamage(t *testing.T) {
	dir := t.TempDir()
	inspWriteLog(t, dir, 20)
	m, err := InspectMeta(dir)
	if err != nil || m.Current < 0 {
		t.Fatal(m, err)
	}
	// Damage the slot in force: the other one, older, takes over.
	inspFlip(t, m.Path, m.Current*metaSlotSize+30)
	m2, err := InspectMeta(dir)
	if err != nil {
		t.Fatal(err)
	}
	if m2.Current != 1-m.Current || m2.Slots[m.Current].Err == nil || m2.Slots[m2.Current].Seq >= m.Slots[m.Current].Seq {
		t.Fatalf("after damaging slot %d: %+v", m.Current, m2)
	}
	in, err := Inspect(dir, nil)
	if err != nil || in.Damaged() {
		t.Fatalf("one bad slot is what a torn metadata write leaves, not damage: %v %v", in.Damage, err)
	}
	inspFlip(t, m.Path, m2.Current*metaSlotSize+30)
	in, err = Inspect(dir, nil)
	if err != nil || !in.Damaged() || !errors.Is(in.Damage[0].Err, errNoMeta) {
		t.Fatalf("both slots bad: %v %v", in.Damage, err)
	}
}

// TestInspectUnfinishedTruncation leaves the files of a tidwall/wal
// truncation that a crash interrupted after its .START or .END file was
// written, and checks that Inspect shows the log as it is once finished.
func TestInspectUnfinishedTruncation(t *testing.T) {
	t.Run("front", func(t *testing.T) {
		// Compact(49) recorded in the metadata, then the crash: the old
		// segments are all there, beside the .START file tidwall/wal
		// wrote for the segment starting at 50.
		dir := t.TempDir()
		inspWriteLog(t, dir, 200)
		l, err := Open(dir, Options{})
		if err != nil {
			t.Fatal(err)
		}
		if err := l.SetSnapshot(core.SnapshotMeta{Index: 60, ConfState: core.ConfState{Voters: []core.NodeID{3}}}); err != nil {
			t.Fatal(err)
		}
		edir := filepath.Join(dir, entriesDir)
		saved := filepath.Join(t.TempDir(), "entries")
		if err := os.CopyFS(saved, os.DirFS(edir)); err != nil {
			t.Fatal(err)
		}
		if err := l.Compact(49); err != nil {
			t.Fatal(err)
		}
		if err := l.Close(); err != nil {
			t.Fatal(err)
		}
		seg50, err := os.ReadFile(filepath.Join(edir, fmt.Sprintf("%020d", 50)))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.RemoveAll(edir); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(saved, edir); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(edir, fmt.Sprintf("%020d.START", 50)), seg50, 0o640); err != nil {
			t.Fatal(err)
		}
		in, err := Inspect(dir, nil)
		if err != nil {
			t.Fatal(err)
		}
		if in.First != 50 || in.Last != 200 || in.Damaged() || len(in.Notes) != 1 || !strings.Contains(in.Notes[0], "front truncation") {
			t.Fatalf("first %d last %d notes %q damage %v", in.First, in.Last, in.Notes, in.Damage)
		}
	})
	t.Run("back", func(t *testing.T) {
		dir := t.TempDir()
		inspWriteLog(t, dir, 200)
		path, off := inspRecordOffset(t, dir, 150)
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path+".END", b[:off], 0o640); err != nil {
			t.Fatal(err)
		}
		in, err := Inspect(dir, nil)
		if err != nil {
			t.Fatal(err)
		}
		if in.First != 1 || in.Last != 149 || in.Damaged() || len(in.Notes) != 1 || !strings.Contains(in.Notes[0], "back truncation") {
			t.Fatalf("first %d last %d notes %q damage %v", in.First, in.Last, in.Notes, in.Damage)
		}
	})
}

// TestInspectUnfinishedReset leaves what a crash in the middle of a
// snapshot install's reset leaves (the entry directory moved aside, the
// new one not yet in place) and checks Inspect against Open.
func TestInspectUnfinishedReset(t *testing.T) {
	dir := t.TempDir()
	inspWriteLog(t, dir, 20)
	l, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	snap := core.SnapshotMeta{Index: 300, Term: 4, ConfState: core.ConfState{Voters: []core.NodeID{1, 2, 3}}}
	if err := l.Save(core.Ready{Snapshot: core.Snapshot{Meta: snap}}); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	edir := filepath.Join(dir, entriesDir)
	if err := os.Rename(edir, edir+".new"); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(edir+".old", 0o750); err != nil {
		t.Fatal(err)
	}
	in, err := Inspect(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	if in.Damaged() || in.First != 301 || in.Last != 300 || len(in.Notes) != 2 {
		t.Fatalf("first %d last %d notes %q damage %v", in.First, in.Last, in.Notes, in.Damage)
	}
	if s := in.Meta.Slots[in.Meta.Current].Snapshot; s.Index != 300 || s.Term != 4 || len(s.ConfState.Voters) != 3 {
		t.Fatalf("snapshot %+v", s)
	}
	l, err = Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if first, _ := l.FirstIndex(); first != in.First {
		t.Fatalf("Open starts the log at %d, Inspect said %d", first, in.First)
	}
}
