package snapshotter

// Saving: failed saves leave nothing behind, invalid metas are refused,
// Pending writes in chunks, commits and aborts.

import (
	"bytes"
	"errors"
	"io"
	"slices"
	"strings"
	"testing"
)

func TestSaveEmptyBody(t *testing.T) {
	s := openStore(t, t.TempDir(), Options{})
	saved, err := s.Save(Meta{Index: 3, Term: 1}, func(io.Writer) error { return nil })
	if err != nil || saved.Size != 0 {
		t.Fatalf("Save = %+v, %v", saved, err)
	}
	m, r, err := s.Load()
	if err != nil || m.Index != 3 || len(readAll(t, r)) != 0 {
		t.Fatalf("Load = %+v, %v", m, err)
	}
}

// TestSaveFailureLeavesNoTempFile: whatever way the body fails, the temp
// file goes and the snapshots already saved stay as they were.
func TestSaveFailureLeavesNoTempFile(t *testing.T) {
	boom := errors.New("boom")
	for _, tc := range []struct {
		name  string
		write func(w io.Writer) error
	}{
		{"error at once", func(io.Writer) error { return boom }},
		{"error after writing", func(w io.Writer) error {
			if _, err := w.Write(bytes.Repeat([]byte("x"), 1<<20)); err != nil {
				return err
			}
			return boom
		}},
		{"short write reported", func(w io.Writer) error {
			w.Write([]byte("partial"))
			return io.ErrShortWrite
		}},
		{"panic", func(w io.Writer) error {
			w.Write([]byte("partial"))
			panic(boom)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			s := openStore(t, dir, Options{Keep: 1})
			saveAt(t, s, 10, 1)
			before := dirNames(t, dir)
			func() {
				defer func() {
					if r := recover(); r != nil && r != boom {
						panic(r)
					}
				}()
				_, err := s.Save(metaAt(20, 2), tc.write)
				if !errors.Is(err, boom) && !errors.Is(err, io.ErrShortWrite) {
					t.Fatalf("Save = %v; want the writer's error", err)
				}
			}()
			if after := dirNames(t, dir); !slices.Equal(after, before) {
				t.Fatalf("directory went from %q to %q", before, after)
			}
			wantLoad(t, s, 10, 1)
		})
	}
}

// TestSaveWriteFailureIsSticky: a writer that ignores a failed write
// cannot commit a snapshot missing those bytes.
func TestSaveWriteFailureIsSticky(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir, Options{})
	_, err := s.Save(metaAt(10, 1), func(w io.Writer) error {
		w.Write([]byte("first"))
		w.(bodyWriter).p.f.Close() // the disk goes away
		w.Write(make([]byte, writeBufBytes+1))
		return nil // and the state machine does not check
	})
	if err == nil || !strings.Contains(err.Error(), "writing") {
		t.Fatalf("Save = %v; want the write failure", err)
	}
	if names := dirNames(t, dir); len(names) != 0 {
		t.Fatalf("directory holds %q", names)
	}
}

func TestSaveRefusesInvalidMeta(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir, Options{})
	for _, m := range []Meta{{Term: 1}, {Index: 1}, {Index: 1, Term: 1, Members: []Member{{0, "x"}}}} {
		called := false
		_, err := s.Save(m, func(io.Writer) error { called = true; return nil })
		if !errors.Is(err, ErrMeta) || called {
			t.Fatalf("Save(%+v) = %v (write called: %v); want ErrMeta before writing", m, err, called)
		}
	}
	if names := dirNames(t, dir); len(names) != 0 {
		t.Fatalf("directory holds %q", names)
	}
}

func TestSaveReplacesSameIndexAndTerm(t *testing.T) {
	s := openStore(t, t.TempDir(), Options{})
	saveBytes(t, s, metaAt(10, 1), []byte("old"))
	saveBytes(t, s, metaAt(10, 1), []byte("new body"))
	m, r, err := s.Load()
	if err != nil || string(readAll(t, r)) != "new body" || m.Size != 8 {
		t.Fatalf("Load = %+v, %v", m, err)
	}
}

func TestPendingCommitInChunks(t *testing.T) {
	s := openStore(t, t.TempDir(), Options{})
	p, err := s.Create(metaAt(10, 1))
	if err != nil {
		t.Fatal(err)
	}
	body := bodyAt(10, 1)
	for chunk := range slices.Chunk(body, 7) {
		if _, err := p.Write(chunk); err != nil {
			t.Fatal(err)
		}
	}
	if list, _ := s.List(); len(list) != 0 {
		t.Fatalf("List before Commit = %v", indexes(list))
	}
	m, err := p.Commit()
	if err != nil || m.Size != int64(len(body)) {
		t.Fatalf("Commit = %+v, %v", m, err)
	}
	if err := p.Abort(); err != nil {
		t.Fatalf("Abort after Commit = %v, want nil", err)
	}
	if _, err := p.Commit(); !errors.Is(err, ErrClosed) {
		t.Fatalf("second Commit = %v, want ErrClosed", err)
	}
	wantLoad(t, s, 10, 1)
}

func TestPendingAbort(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir, Options{})
	p, err := s.Create(metaAt(10, 1))
	if err != nil {
		t.Fatal(err)
	}
	p.Write(bodyAt(10, 1))
	if names := dirNames(t, dir); len(names) != 1 || !strings.HasSuffix(names[0], ".tmp") {
		t.Fatalf("while writing, the directory holds %q; want one temp file", names)
	}
	if err := p.Abort(); err != nil {
		t.Fatal(err)
	}
	if names := dirNames(t, dir); len(names) != 0 {
		t.Fatalf("after Abort the directory holds %q", names)
	}
	if _, err := p.Write([]byte("x")); !errors.Is(err, ErrClosed) {
		t.Fatalf("Write after Abort = %v, want ErrClosed", err)
	}
	if _, err := p.Commit(); !errors.Is(err, ErrClosed) {
		t.Fatalf("Commit after Abort = %v, want ErrClosed", err)
	}
	if err := p.Abort(); err != nil {
		t.Fatalf("second Abort = %v, want nil", err)
	}
	if _, _, err := s.Load(); !errors.Is(err, ErrNoSnapshot) {
		t.Fatalf("Load = %v, want ErrNoSnapshot", err)
	}
}

// TestPendingKeepsItsOwnMeta: changing the caller's slices after Create
// changes nothing in the file.
func TestPendingKeepsItsOwnMeta(t *testing.T) {
	s := openStore(t, t.TempDir(), Options{})
	m := metaAt(10, 1)
	p, err := s.Create(m)
	if err != nil {
		t.Fatal(err)
	}
	m.ConfState.Voters[0] = 99
	m.Members[0].Addr = "somewhere else, and longer"
	p.Write(bodyAt(10, 1))
	if _, err := p.Commit(); err != nil {
		t.Fatal(err)
	}
	wantLoad(t, s, 10, 1)
}

func TestPendingCommitAfterClose(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir, Options{})
	p, err := s.Create(metaAt(10, 1))
	if err != nil {
		t.Fatal(err)
	}
	p.Write([]byte("body"))
	s.Close()
	if _, err := p.Commit(); !errors.Is(err, ErrClosed) {
		t.Fatalf("Commit after Close = %v, want ErrClosed", err)
	}
	if names := dirNames(t, dir); len(names) != 0 {
		t.Fatalf("directory holds %q", names)
	}
}
