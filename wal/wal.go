package wal

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	twal "github.com/tidwall/wal"

	"github.com/stepraft/stepraft/core"
	"github.com/stepraft/stepraft/internal/synclog"
)

// SyncPolicy says when entries are fsynced. Term and vote changes, snapshot
// installs and compactions are fsynced before Save (or Compact) returns
// under every policy: a node that forgets its vote can help elect two
// leaders in one term.
type SyncPolicy int

const (
	// SyncEachBatch fsyncs the entries of every Save before it returns, so
	// nothing Save has returned for is lost on power failure. One fsync
	// per Ready, whatever the number of entries in it. The default.
	SyncEachBatch SyncPolicy = iota
	// SyncInterval fsyncs in the background every Options.SyncInterval. A
	// power failure loses the entries written since the last fsync that
	// completed, even though this node already acknowledged them to the
	// leader; if a majority of the cluster loses them at once (a power cut
	// of the whole cluster), the cluster can lose writes it reported
	// committed (the latest ones). That is about one interval's worth of
	// writes, but not always the last interval's: the fsync holds the log
	// while it runs (Save waits for it), so when the disk stalls, the
	// entries lost may have been acknowledged long before the failure (a
	// test with a 10 ms interval saw 0.4 s). Use it only where that is
	// acceptable.
	SyncInterval
	// SyncNever leaves entries to the operating system. The log fsyncs
	// them only before it fsyncs the metadata (a change of term or vote, a
	// snapshot recorded or installed, a compaction), and in Close;
	// tidwall/wal fsyncs a segment when it rolls to the next one, and one
	// it rewrites (a truncation, a compaction). A power failure loses every
	// entry written since, however old, unless the operating system wrote
	// it back by itself (Linux, by default, writes back what has been
	// dirty for 30 s), with the same consequence as SyncInterval. For
	// benchmarks.
	SyncNever
)

func (p SyncPolicy) String() string {
	switch p {
	case SyncEachBatch:
		return "each-batch"
	case SyncInterval:
		return "interval"
	case SyncNever:
		return "never"
	}
	return fmt.Sprintf("SyncPolicy(%d)", int(p))
}

// ParseSyncPolicy reads a policy as command-line flags name it: "each"
// (or "each-batch"), "interval" or "never".
func ParseSyncPolicy(s string) (SyncPolicy, error) {
	switch s {
	case "each", "each-batch":
		return SyncEachBatch, nil
	case "interval":
		return SyncInterval, nil
	case "never":
		return SyncNever, nil
	}
	return 0, fmt.Errorf("wal: sync policy %q: want each, interval or never", s)
}

// Options configure Open. The zero value is valid.
type Options struct {
	// Sync is the fsync policy for entries; default SyncEachBatch.
	Sync SyncPolicy
	// SyncInterval is the background fsync period under SyncInterval;
	// default 10ms.
	SyncInterval time.Duration
	// SegmentSize is the target size of a segment file; default 8 MiB.
	// Compaction rewrites a segment, so smaller segments stall less.
	SegmentSize int
	// SegmentCacheSize is how many read segments are kept in memory
	// besides the tail; default 2.
	SegmentCacheSize int
	// ClusterID and NodeID, when not 0, are written into a new log and
	// checked against an existing one: opening another node's directory
	// is an error. A log written with 0 takes the first non-zero values
	// given.
	ClusterID, NodeID uint64
	// Logger receives the log's messages; nil discards them.
	Logger *slog.Logger
}

const (
	lockFile          = "LOCK"
	entriesDir        = "entries"
	defaultSegment    = 8 << 20
	defaultSyncPeriod = 10 * time.Millisecond
	// termCacheSize is how many of the latest entries' terms are kept in
	// memory, so that term lookups near the tail never read the disk.
	termCacheSize = 1 << 16
)

// testHookSynced, when set (by tests), is called after every fsync the log
// makes, with what it synced: "entries", "meta" or "dir". A power-loss
// emulator records there what the disk is sure to hold.
var testHookSynced func(what string)

func synced(what string) {
	if testHookSynced != nil {
		testHookSynced(what)
	}
}

var (
	// ErrInvalid is wrapped by errors about a request that cannot be
	// done (a gap in the entries, an out-of-date snapshot); nothing was
	// written and the log stays usable.
	ErrInvalid = errors.New("wal: invalid request")
	// ErrLocked means another process holds the directory.
	ErrLocked = errors.New("wal: directory locked")
	// ErrFailed is wrapped by every write after one failed: the log's
	// state on disk is uncertain, and it must be reopened.
	ErrFailed = errors.New("wal: log failed; reopen it")
	// ErrClosed is returned after Close.
	ErrClosed = errors.New("wal: closed")
	// ErrIdentity means the directory belongs to another cluster or node.
	ErrIdentity = errors.New("wal: directory of another cluster or node")
)

// Log is a durable raft log: it implements core.Storage and persists what
// a Ready asks for (Save). Reads are safe from several goroutines, and
// concurrent with writes; writes (Save, Compact, ApplySnapshot) must come
// from one goroutine at a time.
type Log struct {
	dir    string
	opts   Options
	logger *slog.Logger
	lock   *os.File

	mu     sync.Mutex // guards everything below, and every call into tl
	tl     *twal.Log
	meta   *metaStore
	first  core.Index // first index in tl (compactIndex+1)
	last   core.Index // last index in tl (first-1 when empty)
	failed error      // set by the first write that failed
	closed bool
	// terms[i] is the term of entry termsFrom+i, for the newest entries.
	terms     []core.Term
	termsFrom core.Index
	batch     twal.Batch
	rec       []byte // encoding buffer of one record, reused
	dirty     bool   // entries written and not yet fsynced
	// tailBytes follows the size of tidwall/wal's tail segment, to know
	// when a write starts a new segment file (whose name then needs a
	// directory fsync); dirDirty says one is due.
	tailBytes int
	dirDirty  bool
	// lazyHard is a hard state whose only change is the commit index,
	// not yet written; lazyN counts such changes since the last write.
	lazyHard core.HardState
	lazyN    int

	stop chan struct{}
	done chan struct{}
}

// Open opens the log in dir, creating it if needed, and recovers it: a torn
// tail left by a crash in the middle of a write is cut back to the last
// whole record; any other damage is an error naming the file, the index and
// what is wrong. Every record is read and verified.
func Open(dir string, opts Options) (*Log, error) {
	if opts.Sync < SyncEachBatch || opts.Sync > SyncNever {
		return nil, fmt.Errorf("wal: unknown sync policy %d", int(opts.Sync))
	}
	if opts.SyncInterval <= 0 {
		opts.SyncInterval = defaultSyncPeriod
	}
	if opts.SegmentSize <= 0 {
		opts.SegmentSize = defaultSegment
	}
	if opts.SegmentCacheSize <= 0 {
		opts.SegmentCacheSize = 2
	}
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("wal: create %s: %w", dir, err)
	}
	lock, err := lockDir(dir)
	if err != nil {
		return nil, err
	}
	if err := finishReset(dir); err != nil {
		lock.Close()
		return nil, err
	}
	if err := finishTruncation(filepath.Join(dir, entriesDir)); err != nil {
		lock.Close()
		return nil, err
	}
	if err := os.MkdirAll(filepath.Join(dir, entriesDir), 0o750); err != nil {
		lock.Close()
		return nil, fmt.Errorf("wal: create %s: %w", dir, err)
	}
	l := &Log{dir: dir, opts: opts, logger: logger.With("wal", dir), lock: lock}
	if err := l.open(); err != nil {
		l.closeFiles()
		return nil, err
	}
	if opts.Sync == SyncInterval {
		l.stop, l.done = make(chan struct{}), make(chan struct{})
		go l.syncLoop()
	}
	return l, nil
}

func (l *Log) open() error {
	segs, err := segments(filepath.Join(l.dir, entriesDir))
	if err != nil {
		return err
	}
	hasEntries := false
	for _, seg := range segs {
		if fi, err := os.Stat(seg.path); err == nil && (fi.Size() > 0 || seg.first > 1) {
			hasEntries = true
		}
	}
	ms, fresh, err := openMeta(filepath.Join(l.dir, metaFile), !hasEntries)
	if err != nil {
		return err
	}
	if fresh && hasEntries {
		ms.close()
		return fmt.Errorf("%w: %s: the metadata file is missing or empty, but the log holds entries: term and vote are lost",
			ErrCorrupt, filepath.Join(l.dir, metaFile))
	}
	l.meta = ms
	m := ms.cur
	switch {
	case fresh:
		m = meta{clusterID: l.opts.ClusterID, nodeID: l.opts.NodeID}
		if err := ms.write(m, true); err != nil {
			return err
		}
		if err := syncDir(l.dir); err != nil {
			return err
		}
	case (l.opts.ClusterID != 0 && m.clusterID != 0 && m.clusterID != l.opts.ClusterID) ||
		(l.opts.NodeID != 0 && m.nodeID != 0 && m.nodeID != l.opts.NodeID):
		return fmt.Errorf("%w: %s holds cluster %x node %d, not cluster %x node %d",
			ErrIdentity, l.dir, m.clusterID, m.nodeID, l.opts.ClusterID, l.opts.NodeID)
	case (m.clusterID == 0 && l.opts.ClusterID != 0) || (m.nodeID == 0 && l.opts.NodeID != 0):
		m.clusterID = max(m.clusterID, l.opts.ClusterID)
		m.nodeID = max(m.nodeID, l.opts.NodeID)
		if err := ms.write(m, true); err != nil {
			return err
		}
	}
	if err := l.openEntries(); err != nil {
		return err
	}
	return l.reconcile()
}

// twalOptions are the options tidwall/wal is always opened with: we fsync
// ourselves, and the log may be empty.
func (l *Log) twalOptions() *twal.Options {
	o := *twal.DefaultOptions
	o.NoSync = true
	o.AllowEmpty = true
	o.SegmentSize = l.opts.SegmentSize
	o.SegmentCacheSize = l.opts.SegmentCacheSize
	return &o
}

// openEntries checks every segment file (cutting a torn tail) and opens
// the entry log.
func (l *Log) openEntries() error {
	path := filepath.Join(l.dir, entriesDir)
	sc, err := checkSegments(path, l.logger)
	if err != nil {
		return err
	}
	segs, err := segments(path)
	if err != nil {
		return err
	}
	tl, err := twal.Open(path, l.twalOptions())
	if err != nil {
		return fmt.Errorf("wal: open entries in %s: %w", path, err)
	}
	l.tl = tl
	first, err1 := tl.FirstIndex()
	last, err2 := tl.LastIndex()
	if err := errors.Join(err1, err2); err != nil {
		return fmt.Errorf("wal: %w", err)
	}
	if core.Index(first) != sc.first || core.Index(last) != sc.last {
		return fmt.Errorf("%w: %s: tidwall/wal sees entries [%d, %d], the files hold [%d, %d]",
			ErrCorrupt, path, first, last, sc.first, sc.last)
	}
	l.first, l.last = sc.first, sc.last
	l.terms, l.termsFrom = sc.terms, sc.termsFrom
	l.tailBytes = sc.tailBytes
	// In an empty directory tidwall/wal has just created the first
	// segment file: its name must reach the disk with the first entries
	// made durable in it, as a rolled segment's does.
	l.dirDirty = len(segs) == 0
	if sc.last >= sc.first {
		// What was read may still be only in the page cache (a process
		// crash between a write and its fsync), and core takes every
		// entry here as durable (a follower acknowledges what it holds):
		// make it so, names included, as the metadata is.
		l.dirty, l.dirDirty = true, true
		if err := l.syncEntries(); err != nil {
			return err
		}
	}
	return nil
}

// reconcile brings the entry log in line with the metadata after a crash
// between the metadata write and the entry-log change it records (snapshot
// install, compaction), and checks that the log starts where it must.
func (l *Log) reconcile() error {
	m := l.meta.cur
	snap := m.snap.Index
	snapTerm, err := l.termOf(snap)
	if err != nil && snap >= l.first && snap <= l.last {
		return err
	}
	switch {
	case snap > l.last || (snap >= l.first && snapTerm != m.snap.Term):
		// A snapshot past the log, or not matching it: the log starts
		// after it.
		if snap > 0 && (l.last >= l.first || l.first != snap+1) {
			l.logger.Info("starting the log after the snapshot", "snapshot_index", uint64(snap))
			if err := l.resetTo(snap + 1); err != nil {
				return err
			}
		}
	case m.compactIndex >= l.first:
		if err := l.truncateFront(m.compactIndex + 1); err != nil {
			return err
		}
	}
	if want := m.compactIndex + 1; l.first > want && !(l.first == snap+1 && snap > 0) {
		return fmt.Errorf("%w: %s: the log starts at %d, but was compacted at %d and the snapshot is at %d: entries are missing",
			ErrCorrupt, filepath.Join(l.dir, entriesDir), l.first, m.compactIndex, snap)
	}
	if l.first > snap+1 && snap > 0 {
		return fmt.Errorf("%w: %s: the log starts at %d, past the snapshot at %d: a gap",
			ErrCorrupt, filepath.Join(l.dir, entriesDir), l.first, snap)
	}
	return nil
}

// --- core.Storage --------------------------------------------------------

// InitialState implements core.Storage: the hard state (its commit at
// least the snapshot's index) and the snapshot's configuration.
func (l *Log) InitialState() (core.HardState, core.ConfState, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	m := l.meta.cur
	hs := l.hard()
	if !hs.IsEmpty() || m.snap.Index > 0 {
		hs.Commit = max(hs.Commit, m.snap.Index)
	}
	return hs, cloneConf(m.snap.ConfState), nil
}

// Entries implements core.Storage.
func (l *Log) Entries(lo, hi core.Index, maxBytes uint64) ([]core.Entry, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if lo < l.first {
		return nil, core.ErrCompacted
	}
	if hi > l.last+1 {
		return nil, fmt.Errorf("wal: entries [%d, %d) past the last index %d: %w", lo, hi, l.last, core.ErrUnavailable)
	}
	var out []core.Entry
	var size uint64
	for i := lo; i < hi; i++ {
		e, err := l.readLocked(i)
		if err != nil {
			return nil, fmt.Errorf("wal: %s: entry %d: %w", segmentPath(l.dir, i), i, err)
		}
		size += uint64(len(e.Data))
		if len(out) > 0 && size > maxBytes {
			break
		}
		out = append(out, e)
	}
	return out, nil
}

// Term implements core.Storage.
func (l *Log) Term(i core.Index) (core.Term, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if i == l.first-1 {
		return l.edgeTerm(), nil
	}
	if i < l.first {
		return 0, core.ErrCompacted
	}
	if i > l.last {
		return 0, core.ErrUnavailable
	}
	return l.termOf(i)
}

// LastIndex implements core.Storage.
func (l *Log) LastIndex() (core.Index, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.last, nil
}

// FirstIndex implements core.Storage.
func (l *Log) FirstIndex() (core.Index, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.first, nil
}

// Snapshot implements core.Storage: the metadata of the snapshot the log
// starts after. The body lives in the snapshotter; Data is nil.
func (l *Log) Snapshot() (core.Snapshot, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := l.meta.cur.snap
	s.ConfState = cloneConf(s.ConfState)
	return core.Snapshot{Meta: s}, nil
}

// edgeTerm is the term of entry first-1: the compaction point's.
func (l *Log) edgeTerm() core.Term {
	m := &l.meta.cur
	if l.first-1 == m.snap.Index {
		return m.snap.Term
	}
	if l.first-1 == m.compactIndex {
		return m.compactTerm
	}
	return 0
}

// termAt returns the cached term of entry i, or 0.
func (l *Log) termAt(i core.Index) core.Term {
	if i >= l.termsFrom && i < l.termsFrom+core.Index(len(l.terms)) {
		return l.terms[i-l.termsFrom]
	}
	if i == l.first-1 {
		return l.edgeTerm()
	}
	return 0
}

// termOf returns the term of entry i in [first-1, last], from the cache
// or the disk.
func (l *Log) termOf(i core.Index) (core.Term, error) {
	if t := l.termAt(i); t != 0 {
		return t, nil
	}
	if i < l.first || i > l.last {
		return 0, fmt.Errorf("%w: term of %d outside the log [%d, %d]", ErrInvalid, i, l.first, l.last)
	}
	e, err := l.readLocked(i)
	if err != nil {
		return 0, fmt.Errorf("wal: %s: entry %d: %w", segmentPath(l.dir, i), i, err)
	}
	return e.Term, nil
}

func (l *Log) pushTerm(i core.Index, t core.Term) {
	if i != l.termsFrom+core.Index(len(l.terms)) {
		l.terms, l.termsFrom = l.terms[:0], i
	}
	if len(l.terms) == 2*termCacheSize {
		n := copy(l.terms, l.terms[termCacheSize:])
		l.terms = l.terms[:n]
		l.termsFrom += termCacheSize
	}
	l.terms = append(l.terms, t)
}

// readLocked reads and verifies entry i. Open checked every file, but a
// file changed under us since must still give an error, never a panic.
func (l *Log) readLocked(i core.Index) (e core.Entry, err error) {
	defer func() {
		if p := recover(); p != nil {
			e, err = core.Entry{}, fmt.Errorf("%w: reading entry %d: %v", ErrCorrupt, i, p)
		}
	}()
	var rec []byte
	rec, err = l.tl.Read(uint64(i))
	if err != nil {
		return core.Entry{}, fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	// tidwall/wal hands out a copy; the entry may alias it.
	e, err = decodeRecord(rec, false)
	if err != nil {
		return core.Entry{}, err
	}
	if e.Index != i {
		return core.Entry{}, fmt.Errorf("%w: record at %d holds index %d", ErrCorrupt, i, e.Index)
	}
	return e, nil
}

// --- writing ---------------------------------------------------------------

// Save persists what rd asks for, in this order: an incoming snapshot (its
// metadata: the body is the snapshotter's), the entries (replacing a
// conflicting suffix), the hard state. Under SyncEachBatch everything is
// durable when it returns; under the other policies the entries may not
// be, but a change of term or vote, and a snapshot, always are. A failed
// write leaves the log refusing writes until it is reopened.
func (l *Log) Save(rd core.Ready) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := l.writable(); err != nil {
		return err
	}
	if err := l.fail(l.save(rd)); err != nil {
		return err
	}
	return nil
}

func (l *Log) writable() error {
	switch {
	case l.closed:
		return ErrClosed
	case l.failed != nil:
		return fmt.Errorf("%w: %v", ErrFailed, l.failed)
	}
	return nil
}

// fail makes err (if any) stick, unless it refused a bad request before
// writing anything.
func (l *Log) fail(err error) error {
	if err != nil && l.failed == nil && !errors.Is(err, ErrInvalid) {
		l.failed = err
		l.logger.Error("write failed; the log refuses writes until reopened", "err", err)
	}
	return err
}

func (l *Log) save(rd core.Ready) error {
	if !rd.Snapshot.IsEmpty() {
		if err := l.applySnapshot(rd.Snapshot.Meta); err != nil {
			return err
		}
	}
	if len(rd.Entries) > 0 {
		if err := l.append(rd.Entries); err != nil {
			return err
		}
	}
	if l.dirty && l.opts.Sync == SyncEachBatch {
		if err := l.syncEntries(); err != nil {
			return err
		}
	}
	if hs := rd.HardState; !hs.IsEmpty() && hs != l.hard() {
		m := l.meta.cur
		if hs.Term == m.hard.Term && hs.Vote == m.hard.Vote {
			// Only the commit index moved. It may be lost (core starts
			// at least at the snapshot and at what was applied), so it
			// is written every lazyCommitWrites changes, and with any
			// other metadata write, rather than once per Ready: a write
			// per Ready costs the next fsync a second file.
			l.lazyHard, l.lazyN = hs, l.lazyN+1
			if l.lazyN < lazyCommitWrites {
				return nil
			}
			m.hard = hs
			return l.writeMeta(m, false)
		}
		if l.dirty {
			// The vote may rest on these entries (a candidate's own log):
			// they go to disk first.
			if err := l.syncEntries(); err != nil {
				return err
			}
		}
		m.hard = hs
		return l.writeMeta(m, true)
	}
	return nil
}

// lazyCommitWrites is how many commit-only hard state changes go unwritten
// before one is written.
const lazyCommitWrites = 64

// hard returns the newest hard state, written or not.
func (l *Log) hard() core.HardState {
	if l.lazyN > 0 {
		return l.lazyHard
	}
	return l.meta.cur.hard
}

// writeMeta writes m, carrying a newer commit index not yet written. A
// synced write first syncs the entries written so far (under SyncInterval
// and SyncNever they may not be yet), so that the commit index on disk is
// never past the entries on disk.
func (l *Log) writeMeta(m meta, sync bool) error {
	if sync && l.dirty {
		if err := l.syncEntries(); err != nil {
			return err
		}
	}
	if l.lazyN > 0 && l.lazyHard.Term == m.hard.Term && l.lazyHard.Vote == m.hard.Vote {
		m.hard.Commit = max(m.hard.Commit, l.lazyHard.Commit)
	}
	if err := l.meta.write(m, sync); err != nil {
		return err
	}
	l.lazyN = 0
	return nil
}

// append writes ents, which follow the log or replace a suffix of it, in
// one batch.
func (l *Log) append(ents []core.Entry) error {
	first := ents[0].Index
	if first <= l.meta.cur.compactIndex {
		// Entries at or before the compaction point are committed and
		// already here (or in the snapshot).
		k := int(l.meta.cur.compactIndex + 1 - first)
		if k >= len(ents) {
			return nil
		}
		ents, first = ents[k:], ents[k].Index
	}
	if first > l.last+1 {
		return fmt.Errorf("%w: append at %d leaves a gap after %d", ErrInvalid, first, l.last)
	}
	for i := range ents {
		e := &ents[i]
		switch {
		case e.Index != first+core.Index(i):
			return fmt.Errorf("%w: entries not contiguous at %d", ErrInvalid, e.Index)
		case e.Term == 0 || (e.Type != core.EntryNormal && e.Type != core.EntryConfChange):
			return fmt.Errorf("%w: entry %d has term %d and type %d", ErrInvalid, e.Index, e.Term, e.Type)
		}
	}
	if first <= l.last {
		if err := l.truncateBack(first - 1); err != nil {
			return err
		}
	}
	// Follow tidwall/wal's rule for starting a new segment: before the
	// batch if the tail is over the size, and after any entry that brings
	// it to the size.
	if l.tailBytes > l.opts.SegmentSize {
		l.tailBytes, l.dirDirty = 0, true
	}
	// Each record is encoded into one small reused buffer, which stays in
	// cache, and copied into the batch: no batch-sized buffer in between.
	l.batch.Clear()
	for i := range ents {
		rec := appendRecord(l.rec[:0], &ents[i])
		l.batch.Write(uint64(ents[i].Index), rec)
		if cap(rec) <= 1<<20 {
			l.rec = rec
		}
		l.tailBytes += uvarintLen(uint64(len(rec))) + len(rec)
		if l.tailBytes >= l.opts.SegmentSize {
			l.tailBytes, l.dirDirty = 0, true
		}
	}
	if err := l.tl.WriteBatch(&l.batch); err != nil {
		return fmt.Errorf("wal: write entries %d..%d: %w", first, ents[len(ents)-1].Index, err)
	}
	if l.dirDirty {
		synclog.Segments(l.dir, entriesDir, synclog.Older) // a roll fsynced the segment before
	}
	for i := range ents {
		l.pushTerm(ents[i].Index, ents[i].Term)
	}
	l.last = ents[len(ents)-1].Index
	l.dirty = true
	return nil
}

func (l *Log) syncEntries() error {
	if err := l.tl.Sync(); err != nil {
		return fmt.Errorf("wal: sync entries: %w", err)
	}
	synced("entries")
	synclog.Segments(l.dir, entriesDir, synclog.All)
	l.dirty = false
	if l.dirDirty {
		// A new segment file (or a truncation's renames): its name must
		// be durable too.
		if err := syncDir(filepath.Join(l.dir, entriesDir)); err != nil {
			return err
		}
		l.dirDirty = false
	}
	return nil
}

func uvarintLen(x uint64) int {
	n := 1
	for x >= 0x80 {
		x >>= 7
		n++
	}
	return n
}

// refreshTail re-reads the tail segment's size after tidwall/wal rewrote
// files (a truncation), and marks the directory for a sync.
func (l *Log) refreshTail() error {
	l.dirDirty = true
	segs, err := segments(filepath.Join(l.dir, entriesDir))
	if err != nil {
		return err
	}
	l.tailBytes = 0
	if len(segs) > 0 {
		fi, err := os.Stat(segs[len(segs)-1].path)
		if err != nil {
			return fmt.Errorf("wal: %w", err)
		}
		l.tailBytes = int(fi.Size())
	}
	return nil
}

// truncateBack removes the entries after i.
func (l *Log) truncateBack(i core.Index) error {
	if i >= l.last {
		return nil
	}
	if err := l.tl.TruncateBack(uint64(i)); err != nil {
		return fmt.Errorf("wal: remove entries after %d: %w", i, err)
	}
	synclog.Segments(l.dir, entriesDir, synclog.All) // the new tail was written whole and fsynced
	l.last = i
	l.dirty = true
	if err := l.refreshTail(); err != nil {
		return err
	}
	if i+1 < l.termsFrom {
		l.terms, l.termsFrom = l.terms[:0], i+1
	} else if n := i + 1 - l.termsFrom; n < core.Index(len(l.terms)) {
		l.terms = l.terms[:n]
	}
	return nil
}

// truncateFront removes the entries before i.
func (l *Log) truncateFront(i core.Index) error {
	if i <= l.first {
		return nil
	}
	if i > l.last+1 {
		return l.resetTo(i)
	}
	if err := l.tl.TruncateFront(uint64(i)); err != nil {
		return fmt.Errorf("wal: remove entries before %d: %w", i, err)
	}
	synclog.Segments(l.dir, entriesDir, synclog.OlderAndFirst) // the new first segment was written whole and fsynced
	l.first = i
	if err := l.refreshTail(); err != nil {
		return err
	}
	return syncDir(filepath.Join(l.dir, entriesDir))
}

// resetTo empties the entry log so that the next entry is i. tidwall/wal
// cannot start at an arbitrary index, except from an empty segment file
// named after it in an empty directory; the new directory is made aside
// and renamed into place, so a crash leaves either the old or the new one.
func (l *Log) resetTo(i core.Index) error {
	path := filepath.Join(l.dir, entriesDir)
	tmp := path + ".new"
	old := path + ".old"
	if err := os.RemoveAll(tmp); err != nil {
		return fmt.Errorf("wal: %w", err)
	}
	if err := os.Mkdir(tmp, 0o750); err != nil {
		return fmt.Errorf("wal: %w", err)
	}
	f, err := os.Create(filepath.Join(tmp, fmt.Sprintf("%020d", uint64(i))))
	if err != nil {
		return fmt.Errorf("wal: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("wal: %w", err)
	}
	if err := syncDir(tmp); err != nil {
		return err
	}
	if err := l.tl.Close(); err != nil {
		return fmt.Errorf("wal: close entries: %w", err)
	}
	l.tl = nil
	if err := os.RemoveAll(old); err != nil {
		return fmt.Errorf("wal: %w", err)
	}
	if err := os.Rename(path, old); err != nil {
		return fmt.Errorf("wal: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("wal: %w", err)
	}
	if err := syncDir(l.dir); err != nil {
		return err
	}
	if err := os.RemoveAll(old); err != nil {
		return fmt.Errorf("wal: %w", err)
	}
	tl, err := twal.Open(path, l.twalOptions())
	if err != nil {
		return fmt.Errorf("wal: open entries after reset: %w", err)
	}
	l.tl = tl
	l.first, l.last = i, i-1
	l.terms, l.termsFrom = l.terms[:0], i
	l.dirty, l.dirDirty, l.tailBytes = false, false, 0
	return nil
}

// finishTruncation completes a tidwall/wal truncation that a crash
// interrupted, as tidwall/wal itself would on open, so that the segment
// files can be checked before it opens them: a TruncateFront leaves the
// new first segment as NAME.START (the segments before it go), a
// TruncateBack the new last one as NAME.END (the segments after it go).
func finishTruncation(dir string) error {
	des, err := os.ReadDir(dir)
	if os.IsNotExist(err) {
		return nil
	} else if err != nil {
		return fmt.Errorf("wal: read %s: %w", dir, err)
	}
	var start, end string
	for _, de := range des {
		switch name := de.Name(); {
		case len(name) == 26 && strings.HasSuffix(name, ".START"):
			start = name
		case len(name) == 24 && strings.HasSuffix(name, ".END") && end == "":
			end = name
		}
	}
	if start == "" && end == "" {
		return nil
	}
	if start != "" && end != "" {
		return fmt.Errorf("%w: %s holds both %s and %s", ErrCorrupt, dir, start, end)
	}
	segs, err := segments(dir)
	if err != nil {
		return err
	}
	if start != "" {
		first, _ := strconv.ParseUint(start[:20], 10, 64)
		for _, seg := range segs {
			if uint64(seg.first) < first || uint64(seg.first) == first {
				if err := os.Remove(seg.path); err != nil {
					return fmt.Errorf("wal: finish truncation: %w", err)
				}
			}
		}
		if err := os.Rename(filepath.Join(dir, start), filepath.Join(dir, start[:20])); err != nil {
			return fmt.Errorf("wal: finish truncation: %w", err)
		}
	} else {
		first, _ := strconv.ParseUint(end[:20], 10, 64)
		for _, seg := range segs {
			if uint64(seg.first) >= first {
				if err := os.Remove(seg.path); err != nil {
					return fmt.Errorf("wal: finish truncation: %w", err)
				}
			}
		}
		if err := os.Rename(filepath.Join(dir, end), filepath.Join(dir, end[:20])); err != nil {
			return fmt.Errorf("wal: finish truncation: %w", err)
		}
	}
	return syncDir(dir)
}

// finishReset completes a resetTo that a crash interrupted: if the entry
// directory was moved aside but the new one not yet put in place, the new
// one goes in; leftovers of either side are removed. The metadata already
// records the snapshot the new log starts after.
func finishReset(dir string) error {
	path := filepath.Join(dir, entriesDir)
	tmp, old := path+".new", path+".old"
	if _, err := os.Stat(path); os.IsNotExist(err) {
		if _, err := os.Stat(tmp); err == nil {
			if err := os.Rename(tmp, path); err != nil {
				return fmt.Errorf("wal: %w", err)
			}
			if err := syncDir(dir); err != nil {
				return err
			}
		}
	}
	for _, p := range []string{tmp, old} {
		if err := os.RemoveAll(p); err != nil {
			return fmt.Errorf("wal: remove leftover %s: %w", p, err)
		}
	}
	return nil
}

// applySnapshot records snapshot s as the one the log starts after. If the
// log holds s's last entry with its term, the entries after it are kept
// (Raft, Figure 13, rule 7); otherwise the log is emptied to start after
// it. The metadata is synced first: a crash in between is finished on
// the next open.
func (l *Log) applySnapshot(s core.SnapshotMeta) error {
	m := l.meta.cur
	if s.Index <= m.snap.Index {
		return fmt.Errorf("%w: snapshot at %d is not past the one at %d: %w", ErrInvalid, s.Index, m.snap.Index, core.ErrSnapOutOfDate)
	}
	keep := false
	if s.Index >= l.first && s.Index <= l.last {
		t, err := l.termOf(s.Index)
		if err != nil {
			return err
		}
		keep = t == s.Term
	}
	m.snap = core.SnapshotMeta{Index: s.Index, Term: s.Term, ConfState: cloneConf(s.ConfState)}
	m.compactIndex, m.compactTerm = s.Index, s.Term
	m.hard.Commit = max(m.hard.Commit, s.Index)
	if err := l.writeMeta(m, true); err != nil {
		return err
	}
	if keep {
		return l.truncateFront(s.Index + 1)
	}
	return l.resetTo(s.Index + 1)
}

// ApplySnapshot records a snapshot this node made or received, like Save
// with only rd.Snapshot.
func (l *Log) ApplySnapshot(s core.SnapshotMeta) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := l.writable(); err != nil {
		return err
	}
	return l.fail(l.applySnapshot(s))
}

// SetSnapshot records that a snapshot of this node's own state exists at
// s.Index (which must be in the log, and not past the commit index) with
// s.ConfState, without compacting: core will send it to followers that
// need entries before FirstIndex. Call it once the snapshot's file is
// durable.
func (l *Log) SetSnapshot(s core.SnapshotMeta) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := l.writable(); err != nil {
		return err
	}
	m := l.meta.cur
	switch {
	case s.Index <= m.snap.Index:
		return fmt.Errorf("%w: snapshot at %d is not past the one at %d: %w", ErrInvalid, s.Index, m.snap.Index, core.ErrSnapOutOfDate)
	case s.Index > l.last || s.Index < l.first:
		return fmt.Errorf("%w: snapshot at %d outside the log [%d, %d]", ErrInvalid, s.Index, l.first, l.last)
	}
	t, err := l.termOf(s.Index)
	if err != nil {
		return err
	}
	if s.Term != 0 && s.Term != t {
		return fmt.Errorf("%w: snapshot at %d has term %d, the log's entry has %d", ErrInvalid, s.Index, s.Term, t)
	}
	m.snap = core.SnapshotMeta{Index: s.Index, Term: t, ConfState: cloneConf(s.ConfState)}
	return l.fail(l.writeMeta(m, true))
}

// Compact removes the entries up to and including i, which must not be
// past the snapshot: FirstIndex becomes i+1, and Term(i) still answers.
func (l *Log) Compact(i core.Index) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := l.writable(); err != nil {
		return err
	}
	m := l.meta.cur
	switch {
	case i < l.first:
		return core.ErrCompacted
	case i > m.snap.Index:
		return fmt.Errorf("%w: compact %d past the snapshot at %d; record a snapshot first", ErrInvalid, i, m.snap.Index)
	case i > l.last:
		return fmt.Errorf("%w: compact %d past the last index %d: %w", ErrInvalid, i, l.last, core.ErrUnavailable)
	}
	t, err := l.termOf(i)
	if err != nil {
		return err
	}
	m.compactIndex, m.compactTerm = i, t
	if err := l.fail(l.writeMeta(m, true)); err != nil {
		return err
	}
	return l.fail(l.truncateFront(i + 1))
}

// Sync fsyncs the entries written so far.
func (l *Log) Sync() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := l.writable(); err != nil {
		return err
	}
	if !l.dirty {
		return nil
	}
	return l.fail(l.syncEntries())
}

func (l *Log) syncLoop() {
	defer close(l.done)
	t := time.NewTicker(l.opts.SyncInterval)
	defer t.Stop()
	for {
		select {
		case <-l.stop:
			return
		case <-t.C:
			_ = l.Sync() // a failure sticks and the next Save reports it
		}
	}
}

// Close syncs what was written and releases the directory.
func (l *Log) Close() error {
	if l.stop != nil {
		close(l.stop)
		<-l.done
		l.stop = nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil
	}
	var err error
	if l.failed == nil && l.dirty {
		err = l.syncEntries()
	}
	if l.failed == nil && l.lazyN > 0 {
		err = errors.Join(err, l.writeMeta(l.meta.cur, true))
	}
	l.closed = true
	return errors.Join(err, l.closeFiles())
}

func (l *Log) closeFiles() error {
	var errs []error
	if l.tl != nil {
		errs = append(errs, l.tl.Close())
		l.tl = nil
	}
	if l.meta != nil {
		errs = append(errs, l.meta.close())
	}
	if l.lock != nil {
		errs = append(errs, l.lock.Close())
	}
	return errors.Join(errs...)
}

// SetIdentity records the cluster and node IDs in a log that does not have
// them yet (0): a node that joined a cluster and learned its ID. An ID
// already recorded cannot change (ErrIdentity); setting the same again does
// nothing.
func (l *Log) SetIdentity(clusterID, nodeID uint64) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := l.writable(); err != nil {
		return err
	}
	m := l.meta.cur
	if (m.clusterID != 0 && clusterID != 0 && m.clusterID != clusterID) || (m.nodeID != 0 && nodeID != 0 && m.nodeID != nodeID) {
		return fmt.Errorf("%w: %s holds cluster %x node %d, not cluster %x node %d", ErrIdentity, l.dir, m.clusterID, m.nodeID, clusterID, nodeID)
	}
	if (m.clusterID != 0 || clusterID == 0) && (m.nodeID != 0 || nodeID == 0) {
		return nil
	}
	m.clusterID, m.nodeID = max(m.clusterID, clusterID), max(m.nodeID, nodeID)
	return l.fail(l.writeMeta(m, true))
}

// Identity returns the cluster and node IDs stored in the log.
func (l *Log) Identity() (clusterID, nodeID uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.meta.cur.clusterID, l.meta.cur.nodeID
}

// --- helpers -------------------------------------------------------------

func cloneConf(cs core.ConfState) core.ConfState {
	clone := func(ids []core.NodeID) []core.NodeID {
		if len(ids) == 0 {
			return nil
		}
		return slices.Clone(ids)
	}
	return core.ConfState{Voters: clone(cs.Voters), VotersOutgoing: clone(cs.VotersOutgoing),
		Learners: clone(cs.Learners), LearnersNext: clone(cs.LearnersNext), AutoLeave: cs.AutoLeave}
}

// syncDir fsyncs a directory, so that files created, renamed or removed in
// it stay so.
func syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("wal: open directory %s: %w", dir, err)
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		return fmt.Errorf("wal: sync directory %s: %w", dir, err)
	}
	synced("dir")
	synclog.Dir(f)
	return nil
}
