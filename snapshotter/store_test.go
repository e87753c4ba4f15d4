package snapshotter

// The Store: save and load, fall back past damaged files, purge, list,
// failed saves, Pending, the body check at EOF, temp files, the lock.

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/stepraft/stepraft/core"
)

// logBuffer collects a Store's log lines for a test to inspect.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func openStore(t testing.TB, dir string, opts Options) *Store {
	t.Helper()
	s, err := Open(dir, opts)
	if err != nil {
		t.Fatalf("Open(%s): %v", dir, err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// openLogged opens a Store whose Warn and Debug lines go to the returned
// buffer.
func openLogged(t *testing.T, dir string, keep int) (*Store, *logBuffer) {
	logs := &logBuffer{}
	logger := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	return openStore(t, dir, Options{Keep: keep, Logger: logger}), logs
}

// metaAt is a snapshot meta of a 3-voter cluster with members' addresses.
func metaAt(index core.Index, term core.Term) Meta {
	return Meta{Index: index, Term: term,
		ConfState: core.ConfState{Voters: []core.NodeID{1, 2, 3}},
		Members:   []Member{{1, "127.0.0.1:7001"}, {2, "127.0.0.1:7002"}, {3, "127.0.0.1:7003"}}}
}

// bodyAt is a body that names its snapshot, so a test tells bodies apart.
func bodyAt(index core.Index, term core.Term) []byte {
	return []byte(strings.Repeat(fmt.Sprintf("state at index %d term %d\n", index, term), 100))
}

func saveBytes(t testing.TB, s *Store, m Meta, body []byte) Meta {
	t.Helper()
	got, err := s.Save(m, func(w io.Writer) error {
		_, err := w.Write(body)
		return err
	})
	if err != nil {
		t.Fatalf("Save at index %d term %d: %v", m.Index, m.Term, err)
	}
	return got
}

func saveAt(t testing.TB, s *Store, index core.Index, term core.Term) Meta {
	t.Helper()
	return saveBytes(t, s, metaAt(index, term), bodyAt(index, term))
}

func readAll(t *testing.T, r io.ReadCloser) []byte {
	t.Helper()
	defer r.Close()
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatalf("reading the body: %v", err)
	}
	return b
}

// dirNames lists dir without the lock file.
func dirNames(t *testing.T, dir string) []string {
	t.Helper()
	des, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, de := range des {
		if de.Name() != "LOCK" {
			out = append(out, de.Name())
		}
	}
	return out
}

// wantLoad checks that Load returns the snapshot at (index, term), with
// its body.
func wantLoad(t *testing.T, s *Store, index core.Index, term core.Term) {
	t.Helper()
	m, r, err := s.Load()
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	body := readAll(t, r)
	want := metaAt(index, term)
	want.Size = int64(len(bodyAt(index, term)))
	if !reflect.DeepEqual(m, want) || !bytes.Equal(body, bodyAt(index, term)) {
		t.Fatalf("Load = %+v with %d body bytes; want %+v and its body", m, len(body), want)
	}
}

func indexes(ms []Meta) []string {
	var out []string
	for _, m := range ms {
		out = append(out, fmt.Sprintf("%d/%d", m.Index, m.Term))
	}
	return out
}

func TestSaveLoadRoundTrip(t *testing.T) {
	s := openStore(t, t.TempDir(), Options{})
	full := sampleMetas()[2]
	full.Size = 0
	body := bytes.Repeat([]byte("0123456789abcdef"), 100_000)
	saved := saveBytes(t, s, full, body)
	full.Size = int64(len(body))
	if !reflect.DeepEqual(saved, full) {
		t.Fatalf("Save returned %+v, want %+v", saved, full)
	}
	list, err := s.List()
	if err != nil || len(list) != 1 || !reflect.DeepEqual(list[0], full) {
		t.Fatalf("List = %+v, %v; want [%+v]", list, err, full)
	}
	m, r, err := s.Load()
	if err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, r); !reflect.DeepEqual(m, full) || !bytes.Equal(got, body) {
		t.Fatalf("Load = %+v with %d body bytes, want %+v with %d", m, len(got), full, len(body))
	}
	m, r, err = s.OpenSnapshot(full.Index, full.Term)
	if err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, r); !reflect.DeepEqual(m, full) || !bytes.Equal(got, body) {
		t.Fatalf("OpenSnapshot = %+v with %d body bytes, want %+v with %d", m, len(got), full, len(body))
	}
	if names := dirNames(t, s.dir); !slices.Equal(names, []string{"0000000000000007-000000000000002a.snap"}) {
		t.Fatalf("directory holds %q", names)
	}
}

// damages are the ways a test breaks the newest snapshot file (its meta
// is metaAt(20, 2) and its body bodyAt(20, 2)).
var damages = []struct {
	name   string
	damage func(t *testing.T, path string, hdrLen int)
	want   string // in the logged error
}{
	{"body byte flipped", func(t *testing.T, p string, h int) { flipByte(t, p, int64(h+7)) }, "body CRC"},
	{"body CRC flipped", func(t *testing.T, p string, h int) { flipByte(t, p, -1) }, "body CRC"},
	{"truncated body", func(t *testing.T, p string, h int) { truncateBy(t, p, 100) }, "truncated"},
	{"truncated trailer", func(t *testing.T, p string, h int) { truncateBy(t, p, 1) }, "truncated"},
	{"truncated header", func(t *testing.T, p string, h int) { truncateTo(t, p, int64(h-3)) }, "runs past the end"},
	{"empty file", func(t *testing.T, p string, h int) { truncateTo(t, p, 0) }, "shorter than a header"},
	{"header field flipped", func(t *testing.T, p string, h int) { flipByte(t, p, prefixLen+3) }, "header CRC"},
	{"header CRC flipped", func(t *testing.T, p string, h int) { flipByte(t, p, int64(h-1)) }, "header CRC"},
	{"bad magic", func(t *testing.T, p string, h int) { flipByte(t, p, 0) }, "bad magic"},
	{"bytes appended", func(t *testing.T, p string, h int) { appendBytes(t, p, []byte("junk")) }, "4 bytes after the body's CRC"},
	{"unknown version", func(t *testing.T, p string, h int) { rewriteVersion(t, p, 2) }, "version 2; this build reads version 1"},
	{"name and header disagree", func(t *testing.T, p string, h int) { copyFile(t, filepath.Join(filepath.Dir(p), fileName(2, 15)), p) },
		"the name says term 2 index 20, the header term 2 index 15"},
}

func flipByte(t *testing.T, path string, off int64) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if off < 0 {
		off += int64(len(b))
	}
	b[off] ^= 0x40
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

func truncateBy(t *testing.T, path string, n int64) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	truncateTo(t, path, fi.Size()-n)
}

func truncateTo(t *testing.T, path string, size int64) {
	t.Helper()
	if err := os.Truncate(path, size); err != nil {
		t.Fatal(err)
	}
}

func appendBytes(t *testing.T, path string, extra []byte) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, append(b, extra...), 0o600); err != nil {
		t.Fatal(err)
	}
}

// rewriteVersion sets a file's format version and fixes its header CRC,
// as a later version of this package might write it.
func rewriteVersion(t *testing.T, path string, version uint16) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	h := binary.BigEndian.Uint32(b[10:])
	copy(b, rawHeader(version, b[prefixLen:prefixLen+h]))
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// copyFile puts the bytes of src at dst.
func copyFile(t *testing.T, src, dst string) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestLoadFallsBackPastDamagedNewest: whatever is wrong with the newest
// file, Load returns the one before, and logs what it skipped and why.
func TestLoadFallsBackPastDamagedNewest(t *testing.T) {
	for _, d := range damages {
		t.Run(d.name, func(t *testing.T) {
			dir := t.TempDir()
			s, logs := openLogged(t, dir, 3)
			saveAt(t, s, 10, 1)
			saveAt(t, s, 15, 2)
			saved := saveAt(t, s, 20, 2)
			hdr, err := encodeHeader(saved)
			if err != nil {
				t.Fatal(err)
			}
			d.damage(t, filepath.Join(dir, fileName(2, 20)), len(hdr))
			// 15 is there only for the damage that copies it over 20.
			if err := os.Remove(filepath.Join(dir, fileName(2, 15))); err != nil {
				t.Fatal(err)
			}
			wantLoad(t, s, 10, 1)
			log := logs.String()
			if !strings.Contains(log, "skipping damaged snapshot") || !strings.Contains(log, "index=20") ||
				!strings.Contains(log, fileName(2, 20)) || !strings.Contains(log, d.want) {
				t.Fatalf("the log does not report the damaged file saying %q:\n%s", d.want, log)
			}
		})
	}
}

func TestLoadWithEveryFileDamaged(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir, Options{})
	saveAt(t, s, 10, 1)
	saveAt(t, s, 20, 2)
	flipByte(t, filepath.Join(dir, fileName(1, 10)), -1)
	truncateBy(t, filepath.Join(dir, fileName(2, 20)), 1)
	_, _, err := s.Load()
	if !errors.Is(err, ErrNoSnapshot) || !strings.Contains(err.Error(), "2 damaged snapshot files skipped") {
		t.Fatalf("Load = %v; want ErrNoSnapshot saying 2 files were skipped", err)
	}
}

func TestLoadEmptyDirectory(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir, Options{})
	// Files that are not snapshots are ignored.
	if err := os.WriteFile(filepath.Join(dir, "notes.txt"), []byte("hello"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Load(); !errors.Is(err, ErrNoSnapshot) {
		t.Fatalf("Load = %v; want ErrNoSnapshot", err)
	}
	if list, err := s.List(); err != nil || len(list) != 0 {
		t.Fatalf("List = %+v, %v; want nothing", list, err)
	}
}

func TestPurgeKeepsNewest(t *testing.T) {
	for _, keep := range []int{0, 1, 3} {
		t.Run(fmt.Sprintf("keep=%d", keep), func(t *testing.T) {
			dir := t.TempDir()
			s := openStore(t, dir, Options{Keep: keep})
			for i := core.Index(1); i <= 6; i++ {
				saveAt(t, s, i*10, core.Term(i))
			}
			want := map[int][]string{0: {"60/6", "50/5"}, 1: {"60/6"}, 3: {"60/6", "50/5", "40/4"}}[keep]
			list, err := s.List()
			if err != nil || !slices.Equal(indexes(list), want) {
				t.Fatalf("List = %v, %v; want %v", indexes(list), err, want)
			}
			if n := len(dirNames(t, dir)); n != len(want) {
				t.Fatalf("%d files in the directory, want %d", n, len(want))
			}
		})
	}
}

// TestPurgeCountsOnlyVerifiedHeaders: a damaged file does not count
// toward Keep, so it cannot push out a good snapshot to fall back to; once
// Keep good ones are newer, it goes like any old file.
func TestPurgeCountsOnlyVerifiedHeaders(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir, Options{Keep: 2})
	saveAt(t, s, 10, 1)
	saveAt(t, s, 20, 1)
	flipByte(t, filepath.Join(dir, fileName(1, 20)), prefixLen+1)
	saveAt(t, s, 30, 1)
	want := []string{fileName(1, 10), fileName(1, 20), fileName(1, 30)}
	if names := dirNames(t, dir); !slices.Equal(names, want) {
		t.Fatalf("after saving 30: %q, want %q", names, want)
	}
	saveAt(t, s, 40, 1)
	want = []string{fileName(1, 30), fileName(1, 40)}
	if names := dirNames(t, dir); !slices.Equal(names, want) {
		t.Fatalf("after saving 40: %q, want %q", names, want)
	}
}

func TestListNewestFirst(t *testing.T) {
	dir := t.TempDir()
	s, logs := openLogged(t, dir, 10)
	for _, m := range [][2]int{{30, 3}, {10, 1}, {20, 1}, {20, 2}, {5, 1}} {
		saveAt(t, s, core.Index(m[0]), core.Term(m[1]))
	}
	if err := os.WriteFile(filepath.Join(dir, "README"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	flipByte(t, filepath.Join(dir, fileName(1, 5)), 2)
	list, err := s.List()
	want := []string{"30/3", "20/2", "20/1", "10/1"}
	if err != nil || !slices.Equal(indexes(list), want) {
		t.Fatalf("List = %v, %v; want %v", indexes(list), err, want)
	}
	if !strings.Contains(logs.String(), fileName(1, 5)) {
		t.Fatalf("List did not log the damaged file:\n%s", logs)
	}
}
