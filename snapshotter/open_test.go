package snapshotter

// Opening: a store's directory (temp files, the lock, options), a closed
// store, and readers (the body check at EOF, OpenFile, purges while
// reading, concurrent use).

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/stepraft/stepraft/core"
)

// TestOpenSnapshotChecksBodyAtEOF: the reader of a snapshot that was not
// verified beforehand reports damage instead of io.EOF, through Read and
// through WriteTo (io.Copy).
func TestOpenSnapshotChecksBodyAtEOF(t *testing.T) {
	for _, d := range damages[:2] {
		t.Run(d.name, func(t *testing.T) {
			dir := t.TempDir()
			s := openStore(t, dir, Options{})
			saved := saveAt(t, s, 20, 2)
			hdr, _ := encodeHeader(saved)
			d.damage(t, filepath.Join(dir, fileName(2, 20)), len(hdr))
			for _, read := range []func(io.Reader) error{
				func(r io.Reader) error { _, err := io.ReadAll(r); return err },
				func(r io.Reader) error { _, err := io.Copy(io.Discard, r); return err },
				func(r io.Reader) error { _, err := io.ReadAll(io.LimitReader(r, 1<<30)); return err },
			} {
				m, r, err := s.OpenSnapshot(20, 2)
				if err != nil || m.Index != 20 {
					t.Fatalf("OpenSnapshot = %+v, %v", m, err)
				}
				err = read(r)
				r.Close()
				if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), fileName(2, 20)) {
					t.Fatalf("reading to the end = %v; want ErrCorrupt naming the file", err)
				}
			}
		})
	}
}

func TestOpenSnapshotRefusesDamagedHeaderOrLength(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir, Options{})
	saveAt(t, s, 20, 2)
	saveAt(t, s, 30, 2)
	truncateBy(t, filepath.Join(dir, fileName(2, 20)), 10)
	flipByte(t, filepath.Join(dir, fileName(2, 30)), prefixLen)
	for _, i := range []core.Index{20, 30} {
		if _, _, err := s.OpenSnapshot(i, 2); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("OpenSnapshot(%d) = %v, want ErrCorrupt", i, err)
		}
	}
	if _, _, err := s.OpenSnapshot(40, 2); !errors.Is(err, ErrNoSnapshot) {
		t.Fatalf("OpenSnapshot of a missing snapshot = %v, want ErrNoSnapshot", err)
	}
}

func TestOpenFile(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir, Options{})
	saveAt(t, s, 20, 2)
	path := filepath.Join(dir, fileName(2, 20))
	m, r, err := OpenFile(path)
	if err != nil || m.Index != 20 || !bytes.Equal(readAll(t, r), bodyAt(20, 2)) {
		t.Fatalf("OpenFile = %+v, %v", m, err)
	}
	// Any name will do, but a snapshot's name must match the header.
	anyName := filepath.Join(t.TempDir(), "copy")
	copyFile(t, path, anyName)
	if m, r, err := OpenFile(anyName); err != nil || m.Index != 20 {
		t.Fatalf("OpenFile of a copy = %+v, %v", m, err)
	} else {
		r.Close()
	}
	other := filepath.Join(t.TempDir(), fileName(2, 21))
	copyFile(t, path, other)
	if _, _, err := OpenFile(other); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("OpenFile of a misnamed snapshot = %v, want ErrCorrupt", err)
	}
}

func TestOpenRemovesLeftoverTempFiles(t *testing.T) {
	dir := t.TempDir()
	leftovers := []string{fileName(1, 10) + ".123456.tmp", fileName(3, 30) + ".9.tmp"}
	kept := []string{"other.tmp", "notes.txt", fileName(1, 5)}
	for _, name := range append(slices.Clone(leftovers), kept...) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	openStore(t, dir, Options{})
	names := dirNames(t, dir)
	slices.Sort(kept)
	if !slices.Equal(names, kept) {
		t.Fatalf("after Open the directory holds %q, want %q", names, kept)
	}
}

func TestOpenCreatesDirectory(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "a", "snap")
	s := openStore(t, dir, Options{})
	saveAt(t, s, 1, 1)
	fi, err := os.Stat(dir)
	if err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("Stat = %v, %v; want a directory with mode 0700", fi, err)
	}
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(file, Options{}); err == nil || !strings.Contains(err.Error(), "not a directory") {
		t.Fatalf("Open of a file = %v, want an error saying it is not a directory", err)
	}
}

func TestOpenLocksDirectory(t *testing.T) {
	if !dirLocks {
		t.Skip("no directory locks on " + runtime.GOOS)
	}
	dir := t.TempDir()
	s := openStore(t, dir, Options{})
	if _, err := Open(dir, Options{}); !errors.Is(err, ErrLocked) {
		t.Fatalf("second Open = %v, want ErrLocked", err)
	}
	s.Close()
	openStore(t, dir, Options{})
}

func TestOpenRefusesBadOptions(t *testing.T) {
	if _, err := Open(t.TempDir(), Options{Keep: -1}); !errors.Is(err, ErrOptions) {
		t.Fatalf("Open with Keep -1 = %v, want ErrOptions", err)
	}
	o := Options{}
	if err := o.Validate(); err != nil || o.Keep != 0 {
		t.Fatalf("Validate of the zero Options = %v (Keep now %d)", err, o.Keep)
	}
}

func TestClosedStore(t *testing.T) {
	s := openStore(t, t.TempDir(), Options{})
	saveAt(t, s, 10, 1)
	_, r, err := s.OpenSnapshot(10, 1)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close = %v", err)
	}
	// A reader from before Close still reads.
	if !bytes.Equal(readAll(t, r), bodyAt(10, 1)) {
		t.Fatal("the reader opened before Close read a different body")
	}
	if _, err := r.Read(make([]byte, 1)); !errors.Is(err, ErrClosed) {
		t.Fatalf("Read after the reader's Close = %v, want ErrClosed", err)
	}
	calls := map[string]func() error{
		"Save":         func() error { _, err := s.Save(metaAt(20, 1), func(io.Writer) error { return nil }); return err },
		"Create":       func() error { _, err := s.Create(metaAt(20, 1)); return err },
		"List":         func() error { _, err := s.List(); return err },
		"Load":         func() error { _, _, err := s.Load(); return err },
		"OpenSnapshot": func() error { _, _, err := s.OpenSnapshot(10, 1); return err },
	}
	for name, call := range calls {
		if err := call(); !errors.Is(err, ErrClosed) {
			t.Errorf("%s after Close = %v, want ErrClosed", name, err)
		}
	}
}

// TestReaderOutlivesPurge: a snapshot being read (say, sent to a
// follower) can be purged meanwhile; the reader still reads all of it.
func TestReaderOutlivesPurge(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir, Options{Keep: 1})
	saveAt(t, s, 10, 1)
	_, r, err := s.OpenSnapshot(10, 1)
	if err != nil {
		t.Fatal(err)
	}
	saveAt(t, s, 20, 1)
	if _, err := os.Stat(filepath.Join(dir, fileName(1, 10))); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("snapshot 10 was not purged: %v", err)
	}
	if !bytes.Equal(readAll(t, r), bodyAt(10, 1)) {
		t.Fatal("the purged snapshot's reader read a different body")
	}
}

// TestConcurrentSaveLoadList runs saves, loads and lists at once (under
// -race): every load returns a whole snapshot, verified.
func TestConcurrentSaveLoadList(t *testing.T) {
	s := openStore(t, t.TempDir(), Options{Keep: 2})
	saveAt(t, s, 1, 1)
	var wg sync.WaitGroup
	errs := make(chan error, 3)
	wg.Go(func() {
		for i := core.Index(2); i <= 40; i++ {
			if _, err := s.Save(metaAt(i, 1), func(w io.Writer) error {
				_, err := w.Write(bodyAt(i, 1))
				return err
			}); err != nil {
				errs <- err
				return
			}
		}
	})
	for range 2 {
		wg.Go(func() {
			for range 40 {
				m, r, err := s.Load()
				if err != nil {
					errs <- err
					return
				}
				b, err := io.ReadAll(r)
				r.Close()
				if err != nil || !bytes.Equal(b, bodyAt(m.Index, m.Term)) {
					errs <- fmt.Errorf("Load of %d: %v (%d bytes)", m.Index, err, len(b))
					return
				}
				if _, err := s.List(); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}
