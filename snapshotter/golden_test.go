package snapshotter

// Golden files: a snapshot written by each format version is checked in
// under testdata/golden/v<N>/ and must keep opening, with the same meta and
// body, in every later version. go test -run Golden -update rewrites the
// current version's file (never an older one's); review the diff.

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/stepraft/stepraft/core"
)

var update = flag.Bool("update", false, "rewrite the golden snapshot file of the current format version")

// goldenSnapshot is what a golden file holds.
type goldenSnapshot struct {
	version int
	meta    Meta
	body    []byte
}

// goldenSnapshots lists one snapshot per format version. A new version
// adds an entry and keeps the old ones: their files must still open.
var goldenSnapshots = []goldenSnapshot{
	{
		version: 1,
		meta: Meta{Index: 42, Term: 7,
			ConfState: core.ConfState{Voters: []core.NodeID{2, 3, 4}, VotersOutgoing: []core.NodeID{1, 2, 3},
				Learners: []core.NodeID{5}, LearnersNext: []core.NodeID{1}, AutoLeave: true},
			Members: []Member{{1, "10.0.0.1:7001"}, {2, "[::1]:7002"}, {3, "node-3.example:7003"},
				{4, "10.0.0.4:7004"}, {5, ""}},
		},
		body: goldenBody("stepraft golden snapshot, format version 1\n", 4000),
	},
}

// goldenBody is a text line followed by n bytes of a fixed pattern.
func goldenBody(line string, n int) []byte {
	b := []byte(line)
	for i := range n {
		b = append(b, byte(i*31+7))
	}
	return b
}

func (g goldenSnapshot) path() string {
	return filepath.Join("testdata", "golden", fmt.Sprintf("v%d", g.version), fileName(g.meta.Term, g.meta.Index))
}

func (g goldenSnapshot) wantMeta() Meta {
	m := g.meta
	m.Size = int64(len(g.body))
	return m
}

// TestGoldenSnapshotsOpen: every checked-in file, of every version, opens
// through a Store (Load, List, OpenSnapshot) and through OpenFile, with the
// meta and body it was written with.
func TestGoldenSnapshotsOpen(t *testing.T) {
	for _, g := range goldenSnapshots {
		t.Run(fmt.Sprintf("v%d", g.version), func(t *testing.T) {
			if *update && g.version == formatVersion {
				writeGolden(t, g)
			}
			m, r, err := OpenFile(g.path())
			if err != nil {
				t.Fatalf("OpenFile: %v", err)
			}
			checkGolden(t, "OpenFile", g, m, readAll(t, r))
			// A Store locks its directory, so it opens a copy.
			dir := t.TempDir()
			copyFile(t, g.path(), filepath.Join(dir, filepath.Base(g.path())))
			s := openStore(t, dir, Options{})
			m, r, err = s.Load()
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			checkGolden(t, "Load", g, m, readAll(t, r))
			m, r, err = s.OpenSnapshot(g.meta.Index, g.meta.Term)
			if err != nil {
				t.Fatalf("OpenSnapshot: %v", err)
			}
			checkGolden(t, "OpenSnapshot", g, m, readAll(t, r))
			if list, err := s.List(); err != nil || len(list) != 1 || !reflect.DeepEqual(list[0], g.wantMeta()) {
				t.Fatalf("List = %+v, %v", list, err)
			}
		})
	}
}

func checkGolden(t *testing.T, how string, g goldenSnapshot, m Meta, body []byte) {
	t.Helper()
	if !reflect.DeepEqual(m, g.wantMeta()) {
		t.Errorf("%s: meta %+v, want %+v", how, m, g.wantMeta())
	}
	if !bytes.Equal(body, g.body) {
		t.Errorf("%s: body of %d bytes differs from the %d expected", how, len(body), len(g.body))
	}
}

// TestGoldenCurrentVersionBytes: this version writes its golden snapshot
// byte for byte as checked in. A change to the format that fails this
// needs a new format version (and a new golden file), not -update.
func TestGoldenCurrentVersionBytes(t *testing.T) {
	for _, g := range goldenSnapshots {
		if g.version != formatVersion {
			continue
		}
		got := writeSnapshot(t, g)
		want, err := os.ReadFile(g.path())
		if err != nil {
			t.Fatalf("%v (go test -run Golden -update writes it)", err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("this version writes %d bytes that differ from %s (%d bytes)", len(got), g.path(), len(want))
		}
	}
}

// writeSnapshot saves g with a Store and returns the file's bytes.
func writeSnapshot(t *testing.T, g goldenSnapshot) []byte {
	t.Helper()
	dir := t.TempDir()
	s := openStore(t, dir, Options{})
	saveBytes(t, s, g.meta, g.body)
	b, err := os.ReadFile(filepath.Join(dir, fileName(g.meta.Term, g.meta.Index)))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func writeGolden(t *testing.T, g goldenSnapshot) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(g.path()), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(g.path(), writeSnapshot(t, g), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("wrote %s", g.path())
}
