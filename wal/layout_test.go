package wal

// Damaged segment layouts: a segment missing, renamed, cut short, or a
// log that starts too late. None of these is a torn write: Open must fail
// with an error naming the file, never open, never panic.

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stepraft/stepraft/core"
)

// layoutCase damages a copy of a log; names are the paths, relative to
// the log directory, one of which the error must contain.
type layoutCase struct {
	name   string
	damage func(t *testing.T, dir string, segs []segment) (names []string)
	// bug, if set, is why the case cannot pass yet.
	bug string
}

// panicBug is what happens today when a segment does not hold exactly the
// entries up to the next segment's first index.
const panicBug = ""

func rename(t *testing.T, dir string, from segment, to core.Index) string {
	t.Helper()
	name := filepath.Join(entriesDir, fmt.Sprintf("%020d", uint64(to)))
	if err := os.Rename(filepath.Join(dir, entriesDir, filepath.Base(from.path)), filepath.Join(dir, name)); err != nil {
		t.Fatal(err)
	}
	return name
}

func relSeg(s segment) string { return filepath.Join(entriesDir, filepath.Base(s.path)) }

var layoutCases = []layoutCase{
	{"missing middle segment", func(t *testing.T, dir string, segs []segment) []string {
		if err := os.Remove(filepath.Join(dir, relSeg(segs[3]))); err != nil {
			t.Fatal(err)
		}
		return []string{relSeg(segs[2]), relSeg(segs[3]), relSeg(segs[4])}
	}, panicBug},
	{"missing last but one segment", func(t *testing.T, dir string, segs []segment) []string {
		n := len(segs)
		if err := os.Remove(filepath.Join(dir, relSeg(segs[n-2]))); err != nil {
			t.Fatal(err)
		}
		return []string{relSeg(segs[n-3]), relSeg(segs[n-2]), relSeg(segs[n-1])}
	}, panicBug},
	{"two segments swapped", func(t *testing.T, dir string, segs []segment) []string {
		a, b := segs[3], segs[4]
		tmp := filepath.Join(dir, "swap")
		if err := os.Rename(filepath.Join(dir, relSeg(a)), tmp); err != nil {
			t.Fatal(err)
		}
		rename(t, dir, b, a.first)
		if err := os.Rename(tmp, filepath.Join(dir, relSeg(b))); err != nil {
			t.Fatal(err)
		}
		return []string{relSeg(a), relSeg(b)}
	}, ""},
	{"segment renamed one index earlier", func(t *testing.T, dir string, segs []segment) []string {
		return []string{rename(t, dir, segs[4], segs[4].first-1)}
	}, ""},
	{"segment renamed one index later", func(t *testing.T, dir string, segs []segment) []string {
		return []string{relSeg(segs[3]), rename(t, dir, segs[4], segs[4].first+1)}
	}, panicBug},
	{"older segment cut at a record boundary", func(t *testing.T, dir string, segs []segment) []string {
		path := filepath.Join(dir, relSeg(segs[3]))
		spans, _ := parseSegment(mustRead(t, path))
		if err := os.Truncate(path, int64(spans[len(spans)-2].end)); err != nil {
			t.Fatal(err)
		}
		return []string{relSeg(segs[3])}
	}, panicBug},
	{"older segment cut inside a record", func(t *testing.T, dir string, segs []segment) []string {
		path := filepath.Join(dir, relSeg(segs[3]))
		spans, _ := parseSegment(mustRead(t, path))
		if err := os.Truncate(path, int64(spans[len(spans)-2].end+3)); err != nil {
			t.Fatal(err)
		}
		return []string{relSeg(segs[3])}
	}, ""},
	{"first segment missing", func(t *testing.T, dir string, segs []segment) []string {
		if err := os.Remove(filepath.Join(dir, relSeg(segs[0]))); err != nil {
			t.Fatal(err)
		}
		return []string{entriesDir, relSeg(segs[0]), relSeg(segs[1])}
	}, ""},
}

// TestDamagedLayoutIsAnError applies each layout damage to a copy of a log
// and opens it: Open (or reading the entries) must fail with an error
// that names one of the files concerned.
func TestDamagedLayoutIsAnError(t *testing.T) {
	opts := crashOpts()
	h := makeCrashHistory(1, crashBatches)
	src := scratchDir(t)
	h.write(t, src, opts)
	segs := segmentFiles(t, src)
	if len(segs) < 6 {
		t.Fatalf("%d segments, want at least 6", len(segs))
	}
	work := scratchDir(t)
	for i, c := range layoutCases {
		t.Run(c.name, func(t *testing.T) {
			if c.bug != "" {
				t.Skip(c.bug)
			}
			dir := freshCopy(t, src, work, i)
			names := c.damage(t, dir, segs)
			st, err := openAndRead(dir, opts)
			switch {
			case err == nil:
				t.Fatalf("opened: log [%d, %d]; want an error", st.first, st.last)
			case strings.HasPrefix(err.Error(), "PANIC"):
				t.Fatal(err)
			}
			named := false
			for _, n := range names {
				named = named || strings.Contains(err.Error(), filepath.Join(dir, n)+":") || strings.Contains(err.Error(), filepath.Join(dir, n)+" ")
			}
			if !named {
				t.Fatalf("error %q names none of %v", err, names)
			}
			t.Logf("%v", err)
		})
	}
}

// TestLogStartingPastTheSnapshotIsAnError compacts a log, records a
// snapshot, then loses the first segment: the log now starts past
// snapshot+1, a gap Open must refuse, naming the entry directory.
func TestLogStartingPastTheSnapshotIsAnError(t *testing.T) {
	opts := crashOpts()
	h := makeCrashHistory(1, crashBatches)
	src := scratchDir(t)
	h.write(t, src, opts)
	l, err := Open(src, opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.SetSnapshot(core.SnapshotMeta{Index: 5, ConfState: core.ConfState{Voters: []core.NodeID{1}}}); err != nil {
		t.Fatal(err)
	}
	if err := l.Compact(5); err != nil {
		t.Fatal(err)
	}
	l.Close()
	segs := segmentFiles(t, src)
	if segs[0].first != 6 {
		t.Fatalf("first segment starts at %d, want 6", segs[0].first)
	}
	if err := os.Remove(segs[0].path); err != nil {
		t.Fatal(err)
	}
	_, err = openAndRead(src, opts)
	if err == nil || !strings.Contains(err.Error(), filepath.Join(src, entriesDir)) ||
		!strings.Contains(err.Error(), fmt.Sprintf("starts at %d", segs[1].first)) {
		t.Fatalf("open: %v; want an error naming %s and index %d", err, filepath.Join(src, entriesDir), segs[1].first)
	}
	t.Logf("%v", err)
}

// TestDamageErrorsWrapErrCorrupt: doc.go says ErrCorrupt is wrapped by
// every error about damaged data on disk; these are such errors.
func TestDamageErrorsWrapErrCorrupt(t *testing.T) {
	opts := crashOpts()
	h := makeCrashHistory(1, crashBatches)
	src := scratchDir(t)
	h.write(t, src, opts)
	work := scratchDir(t)
	segs := segmentFiles(t, src)
	for i, c := range []struct {
		name   string
		damage func(dir string)
	}{
		{"both meta slots zeroed", func(dir string) {
			mustWrite(t, filepath.Join(dir, metaFile), make([]byte, 2*metaSlotSize))
		}},
		{"first segment missing", func(dir string) {
			if err := os.Remove(filepath.Join(dir, relSeg(segs[0]))); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		dir := freshCopy(t, src, work, i)
		c.damage(dir)
		if _, err := openAndRead(dir, opts); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: error %v does not wrap ErrCorrupt", c.name, err)
		}
	}
}
