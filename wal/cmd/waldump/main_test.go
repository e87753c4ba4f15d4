package main

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/stepraft/stepraft/core"
	"github.com/stepraft/stepraft/snapshotter"
	"github.com/stepraft/stepraft/wal"
)

// writeLog writes entries 1..n in batches of 10 into a new log with small
// segments and closes it.
func writeLog(t *testing.T, dir string, n int) {
	t.Helper()
	l, err := wal.Open(dir, wal.Options{SegmentSize: 2 << 10, ClusterID: 0xab, NodeID: 2})
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= n; i += 10 {
		var es []core.Entry
		for j := i; j < i+10 && j <= n; j++ {
			es = append(es, core.Entry{Index: core.Index(j), Term: 1, Type: core.EntryNormal,
				Data: fmt.Appendf(nil, "payload of entry %d, longer than the printed prefix", j)})
		}
		if err := l.Save(core.Ready{Entries: es, HardState: core.HardState{Term: 1, Vote: 2, Commit: core.Index(i - 1)}}); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
}

func dump(t *testing.T, args ...string) (string, int) {
	t.Helper()
	var out, errOut bytes.Buffer
	rc := run(args, &out, &errOut)
	if errOut.Len() > 0 {
		t.Logf("stderr: %s", errOut.String())
	}
	return out.String(), rc
}

func TestDumpHealthyLog(t *testing.T) {
	dir := t.TempDir()
	writeLog(t, dir, 100)
	out, rc := dump(t, dir)
	if rc != 0 {
		t.Fatalf("exit %d:\n%s", rc, out)
	}
	for _, want := range []string{
		"(in force)", "cluster ab node 2", "hard state: term 1 vote 2 commit 90",
		`100        1      EntryNormal      52      "payload of entry 100, longer tha"...`,
		"log: first 1 last 100", "damage: none",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	out, rc = dump(t, "-from", "40", "-limit", "3", dir)
	rows := regexp.MustCompile(`(?m)^  (\d+) +1 +EntryNormal`).FindAllStringSubmatch(out, -1)
	if rc != 0 || len(rows) != 3 || rows[0][1] != "40" || rows[2][1] != "42" {
		t.Fatalf("-from 40 -limit 3: exit %d, rows %v:\n%s", rc, rows, out)
	}
}

func TestDumpReportsFlippedByte(t *testing.T) {
	dir := t.TempDir()
	writeLog(t, dir, 100)
	segs, err := filepath.Glob(filepath.Join(dir, "entries", "0*"))
	if err != nil || len(segs) < 2 {
		t.Fatalf("segments %v %v", segs, err)
	}
	sort.Strings(segs)
	// A byte in the data of the second record of the first segment.
	b, err := os.ReadFile(segs[0])
	if err != nil {
		t.Fatal(err)
	}
	off := 1 + int(b[0]) + 20
	b[off] ^= 0x01
	if err := os.WriteFile(segs[0], b, 0o640); err != nil {
		t.Fatal(err)
	}
	stat := func() string {
		var s []string
		for _, p := range append(segs, filepath.Join(dir, "meta"), filepath.Join(dir, "LOCK")) {
			fi, err := os.Stat(p)
			if err != nil {
				t.Fatal(err)
			}
			s = append(s, fmt.Sprint(p, fi.Size(), fi.ModTime().UnixNano()))
		}
		return strings.Join(s, "\n")
	}
	before := stat()
	out, rc := dump(t, dir)
	if rc != 1 {
		t.Fatalf("exit %d, want 1:\n%s", rc, out)
	}
	want := fmt.Sprintf("%s offset %d entry 2: wal: corrupt: record: checksum", segs[0], 1+int(b[0]))
	if !strings.Contains(out, "damage: 1\n") || !strings.Contains(out, want) {
		t.Fatalf("output lacks the damage %q:\n%s", want, out)
	}
	if strings.Contains(out, "torn tail") {
		t.Fatalf("damage in the first segment called a torn tail:\n%s", out)
	}
	// Entries around the damage are still listed.
	if !strings.Contains(out, "\n  1          1") || !strings.Contains(out, "\n  3          1") {
		t.Fatalf("entries 1 and 3 missing:\n%s", out)
	}
	if after := stat(); after != before {
		t.Fatalf("waldump changed the directory:\n%s\n%s", before, after)
	}
}

func TestDumpUsage(t *testing.T) {
	if _, rc := dump(t); rc != 2 {
		t.Fatalf("no directory: exit %d", rc)
	}
	if _, rc := dump(t, filepath.Join(t.TempDir(), "nothing")); rc != 2 {
		t.Fatalf("missing directory: exit %d", rc)
	}
}

func TestDumpNodeDataDir(t *testing.T) {
	dir := t.TempDir()
	writeLog(t, filepath.Join(dir, "wal"), 60)
	st, err := snapshotter.Open(filepath.Join(dir, "snap"), snapshotter.Options{})
	if err != nil {
		t.Fatal(err)
	}
	meta := snapshotter.Meta{Index: 30, Term: 1, ConfState: core.ConfState{Voters: []core.NodeID{1, 2, 3}},
		Members: []snapshotter.Member{{ID: 1, Addr: "10.0.0.1:7001"}, {ID: 2, Addr: "10.0.0.2:7001"}, {ID: 3, Addr: "10.0.0.3:7001"}}}
	if _, err := st.Save(meta, func(w io.Writer) error { _, err := w.Write([]byte("state")); return err }); err != nil {
		t.Fatal(err)
	}
	st.Close()
	out, rc := dump(t, "-around", "30", dir)
	if rc != 0 {
		t.Fatalf("exit %d:\n%s", rc, out)
	}
	for _, want := range []string{
		"0000000000000001-000000000000001e.snap: index 30 term 1 body 5 bytes voters [1 2 3]",
		"member 2 at 10.0.0.2:7001",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	rows := regexp.MustCompile(`(?m)^  (\d+) +1 +EntryNormal`).FindAllStringSubmatch(out, -1)
	if len(rows) != 11 || rows[0][1] != "25" || rows[10][1] != "35" {
		t.Fatalf("-around 30: rows %v", rows)
	}
	// A damaged snapshot header is reported, with exit status 1.
	names, _ := filepath.Glob(filepath.Join(dir, "snap", "*.snap"))
	b, _ := os.ReadFile(names[0])
	b[10] ^= 0xff
	os.WriteFile(names[0], b, 0o644)
	out, rc = dump(t, dir)
	if rc != 1 || !strings.Contains(out, "damaged") {
		t.Fatalf("damaged snapshot: exit %d:\n%s", rc, out)
	}
}
