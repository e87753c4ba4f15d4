package snapshotter

import (
	"cmp"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/stepraft/stepraft/core"

	"github.com/stepraft/stepraft/internal/synclog"
)

const (
	snapSuffix = ".snap"
	// tempSuffix ends the name of a file being written; Open removes
	// every file named <term>-<index>.snap.<random>.tmp.
	tempSuffix = ".tmp"
	// defaultKeep is Options.Keep when it is zero: the newest snapshot and
	// the one to fall back to if it is damaged.
	defaultKeep = 2
)

// Options configures a Store. The zero value is valid: keep 2 snapshots,
// log nothing.
type Options struct {
	// Keep is how many snapshots are kept after a save (the newest ones
	// whose headers verify). 0 means 2; negative is invalid.
	Keep int
	// Logger receives a Warn for each damaged file skipped and a Debug for
	// each save and purge. nil discards.
	Logger *slog.Logger
}

// Validate reports whether o is usable. It does not modify o.
func (o Options) Validate() error {
	if o.Keep < 0 {
		return fmt.Errorf("%w: Keep %d is negative", ErrOptions, o.Keep)
	}
	return nil
}

// withDefaults returns a copy of o with its zero fields set.
func (o Options) withDefaults() Options {
	if o.Keep == 0 {
		o.Keep = defaultKeep
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return o
}

// Store is a directory of snapshot files. It is safe for concurrent use.
type Store struct {
	dir  string
	keep int
	log  *slog.Logger

	// mu serialises what changes the set of files (renames, purges) with
	// what lists and opens them, so a listing never names a file a purge
	// has already removed.
	mu     sync.Mutex
	closed bool
	lock   *os.File // holds the directory lock; nil where locks are not supported
}

// Open opens the snapshot directory dir, creating it (mode 0700) if it does
// not exist, locks it against other Stores, and removes temp files a
// crash left behind. It reads no snapshot.
func Open(dir string, opts Options) (*Store, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	opts = opts.withDefaults()
	if err := makeDir(dir); err != nil {
		return nil, err
	}
	lock, err := lockDir(dir)
	if err != nil {
		return nil, err
	}
	if err := removeTemps(dir); err != nil {
		unlockDir(lock)
		return nil, err
	}
	return &Store{dir: dir, keep: opts.Keep, log: opts.Logger, lock: lock}, nil
}

// makeDir creates dir and any missing parents, and makes each new entry
// durable by fsyncing the directory that holds it.
func makeDir(dir string) error {
	var missing []string // dir first, then its missing parents
	for d := filepath.Clean(dir); ; d = filepath.Dir(d) {
		fi, err := os.Stat(d)
		if err == nil {
			if !fi.IsDir() {
				return fmt.Errorf("snapshotter: %s is not a directory", d)
			}
			break
		}
		if !errors.Is(err, fs.ErrNotExist) || d == filepath.Dir(d) {
			return fmt.Errorf("snapshotter: %w", err)
		}
		missing = append(missing, d)
	}
	if len(missing) == 0 {
		return nil
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("snapshotter: %w", err)
	}
	for _, d := range missing {
		if err := syncDir(filepath.Dir(d)); err != nil {
			return err
		}
	}
	return nil
}

// removeTemps removes the temp files of saves that never finished.
func removeTemps(dir string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("snapshotter: %w", err)
	}
	for _, e := range entries {
		if isTempName(e.Name()) && e.Type().IsRegular() {
			if err := os.Remove(filepath.Join(dir, e.Name())); err != nil {
				return fmt.Errorf("snapshotter: removing a leftover temp file: %w", err)
			}
		}
	}
	return nil
}

func isTempName(name string) bool {
	if !strings.HasSuffix(name, tempSuffix) {
		return false
	}
	final, _, ok := strings.Cut(name, snapSuffix+".")
	_, _, named := parseName(final + snapSuffix)
	return ok && named
}

// syncDir fsyncs a directory, making the names in it durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("snapshotter: %w", err)
	}
	err = d.Sync()
	if err == nil {
		synclog.Dir(d)
	}
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("snapshotter: fsync of directory %s: %w", dir, err)
	}
	return nil
}

// Close releases the directory. Pending snapshots can no longer commit;
// readers already returned stay valid. Closing twice is harmless.
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	return unlockDir(s.lock)
}

// fileName returns the name of the snapshot file for (term, index).
func fileName(term core.Term, index core.Index) string {
	return fmt.Sprintf("%016x-%016x%s", uint64(term), uint64(index), snapSuffix)
}

// parseName parses a name fileName wrote; other names are not snapshots.
func parseName(name string) (core.Term, core.Index, bool) {
	if len(name) != 16+1+16+len(snapSuffix) || !strings.HasSuffix(name, snapSuffix) || name[16] != '-' {
		return 0, 0, false
	}
	term, err1 := strconv.ParseUint(name[:16], 16, 64)
	index, err2 := strconv.ParseUint(name[17:33], 16, 64)
	if err1 != nil || err2 != nil || fileName(core.Term(term), core.Index(index)) != name {
		return 0, 0, false // also refuses upper-case digits: one name per snapshot
	}
	return core.Term(term), core.Index(index), true
}

// entry is one snapshot file of the directory, as its name says.
type entry struct {
	name  string
	term  core.Term
	index core.Index
}

// newer orders entries newest first: by index, then term.
func newer(a, b entry) int {
	if c := cmp.Compare(b.index, a.index); c != 0 {
		return c
	}
	return cmp.Compare(b.term, a.term)
}

// entriesLocked lists the snapshot files, newest first. s.mu is held.
func (s *Store) entriesLocked() ([]entry, error) {
	if s.closed {
		return nil, ErrClosed
	}
	des, err := os.ReadDir(s.dir)
	if err != nil {
		return nil, fmt.Errorf("snapshotter: %w", err)
	}
	var out []entry
	for _, de := range des {
		if term, index, ok := parseName(de.Name()); ok && de.Type().IsRegular() {
			out = append(out, entry{name: de.Name(), term: term, index: index})
		}
	}
	slices.SortFunc(out, newer)
	return out, nil
}

func (s *Store) path(e entry) string { return filepath.Join(s.dir, e.name) }

// readMeta reads and checks the header of e's file (not its body).
func (s *Store) readMeta(e entry) (Meta, error) {
	path := s.path(e)
	f, err := os.Open(path)
	if err != nil {
		return Meta{}, fmt.Errorf("snapshotter: %w", err)
	}
	defer f.Close()
	m, _, err := readHeader(f, path, &e)
	return m, err
}

// List returns the metas of the snapshots in the directory, newest first.
// It reads headers only: a listed snapshot's body may still turn out
// damaged. Files whose headers do not verify are left out and logged.
func (s *Store) List() ([]Meta, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	es, err := s.entriesLocked()
	if err != nil {
		return nil, err
	}
	var out []Meta
	for _, e := range es {
		m, err := s.readMeta(e)
		if isDamage(err) {
			s.warnDamaged(e, err)
			continue
		}
		if err != nil {
			return nil, err
		}
		out = append(out, m)
	}
	return out, nil
}

func (s *Store) warnDamaged(e entry, err error) {
	s.log.Warn("skipping damaged snapshot", "index", uint64(e.index), "term", uint64(e.term), "err", err)
}

// Load returns the newest snapshot whose header and body verify, and a
// reader positioned at the start of its body, which the caller closes.
// Each candidate's body is read once to check it (in bounded memory), so
// Load costs a read of the body on top of the caller's. Damaged snapshots
// are skipped and logged at Warn. If none verifies the error wraps
// ErrNoSnapshot; an I/O error is returned as it is.
func (s *Store) Load() (Meta, io.ReadCloser, error) {
	s.mu.Lock()
	es, err := s.entriesLocked()
	var files []*os.File
	for _, e := range es {
		f, oerr := os.Open(s.path(e))
		if oerr != nil && err == nil {
			err = fmt.Errorf("snapshotter: %w", oerr)
		}
		files = append(files, f)
	}
	s.mu.Unlock()
	// Every candidate is open, so a purge after this point takes none of
	// them away. Close the ones not returned.
	defer func() {
		for _, f := range files {
			if f != nil {
				f.Close()
			}
		}
	}()
	if err != nil {
		return Meta{}, nil, err
	}
	skipped := 0
	for i, e := range es {
		m, r, err := verifyFile(files[i], s.path(e), e)
		if err == nil {
			files[i] = nil // the reader owns it now
			return m, r, nil
		}
		if !isDamage(err) {
			return Meta{}, nil, err
		}
		s.warnDamaged(e, err)
		skipped++
	}
	if skipped > 0 {
		return Meta{}, nil, fmt.Errorf("%w in %s: %d damaged snapshot files skipped", ErrNoSnapshot, s.dir, skipped)
	}
	return Meta{}, nil, fmt.Errorf("%w in %s", ErrNoSnapshot, s.dir)
}

// verifyFile checks f's header and reads its whole body to check the CRC,
// then returns a reader over the body from its start.
func verifyFile(f *os.File, path string, e entry) (Meta, *bodyReader, error) {
	m, r, err := newBodyReader(f, path, &e)
	if err != nil {
		return Meta{}, nil, err
	}
	if _, err := r.WriteTo(io.Discard); err != nil {
		return Meta{}, nil, err
	}
	r.rewind()
	return m, r, nil
}

// OpenSnapshot returns the meta of the snapshot at (index, term) and a
// reader over its body, which the caller closes. The header is checked
// now; the body is checked as it is read: at its end the reader returns an
// error wrapping ErrCorrupt, instead of io.EOF, if the CRC or the length is
// wrong. If there is no such file the error wraps ErrNoSnapshot.
func (s *Store) OpenSnapshot(index core.Index, term core.Term) (Meta, io.ReadCloser, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return Meta{}, nil, ErrClosed
	}
	e := entry{name: fileName(term, index), term: term, index: index}
	m, r, err := openEntry(s.path(e), e)
	if errors.Is(err, fs.ErrNotExist) {
		return Meta{}, nil, fmt.Errorf("%w at index %d term %d in %s", ErrNoSnapshot, index, term, s.dir)
	}
	if err != nil {
		return Meta{}, nil, err
	}
	return m, r, nil
}

// purgeLocked removes the snapshot files older than the newest s.keep whose
// headers verify. Damaged files newer than those are left (Load skips
// them). s.mu is held. Failures are logged: the save before it succeeded.
func (s *Store) purgeLocked() {
	es, err := s.entriesLocked()
	if err != nil {
		s.log.Warn("purging snapshots", "err", err)
		return
	}
	kept := 0
	for _, e := range es {
		if kept < s.keep {
			if _, err := s.readMeta(e); err == nil {
				kept++
			} else if !isDamage(err) {
				s.log.Warn("purging snapshots", "err", err)
				return
			}
			continue
		}
		if err := os.Remove(s.path(e)); err != nil {
			s.log.Warn("purging snapshots", "err", err)
			continue
		}
		s.log.Debug("purged snapshot", "index", uint64(e.index), "term", uint64(e.term))
	}
}
