package wal

// Power-loss emulation. testHookSynced reports every fsync the log makes;
// at each one a recorder notes what the disk is sure to hold from then on,
// and a "power cut" rebuilds a directory from one of those notes and
// reopens it. What each policy may lose, and what it may never lose, is
// then checked exactly.

import (
	"bytes"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/stepraft/stepraft/core"
)

// fileImage is the content of a file that is on disk for sure, and the
// file it was read from (for os.SameFile, so that a rename keeps it).
type fileImage struct {
	fi   os.FileInfo
	data []byte
}

// diskImage is what a power cut right after one fsync (and before the
// next) leaves of a log directory.
type diskImage struct {
	what string // the fsync that made it: "entries", "meta" or "dir"
	step int    // what the test was doing (powerLoss.setStep)
	meta []byte // the meta file; nil if none is on disk yet
	// files are the other files (the LOCK file left out), by path
	// relative to the log directory.
	files map[string]fileImage
	// assumed counts files whose content is taken on trust: created
	// since the last record and not known to be synced (see record).
	assumed int
}

// powerLoss records a diskImage at every fsync of the log in dir. The
// model of the disk: names (creates, renames, removes) reach the disk in
// order and are all there at any fsync, as on a journaling file system;
// the data of a file is there up to what was fsynced. So at "meta" the
// meta file is read afresh; at "entries" every file of the entry directory
// is (the tail was just fsynced, older segments were at their roll, and
// tidwall/wal fsyncs what it rewrites before renaming it); any other file
// keeps the content recorded for it, following it through renames, and
// only appends since are left out. A file first seen at a "meta" or "dir"
// fsync is taken with its content and counted in assumed: true of what
// tidwall/wal and resetTo create (fsynced or empty), false of a segment
// created at a roll and not yet synced, so tests that count losses check
// that none was assumed.
type powerLoss struct {
	dir string

	mu     sync.Mutex
	on     bool
	step   int
	cur    diskImage
	images []diskImage
}

// startPowerLoss installs the recorder as testHookSynced until the test
// ends. Tests that use it must not run in parallel with other tests.
func startPowerLoss(t *testing.T, dir string) *powerLoss {
	p := &powerLoss{dir: dir, on: true, cur: diskImage{files: map[string]fileImage{}}}
	prev := testHookSynced
	testHookSynced = p.record
	t.Cleanup(func() { testHookSynced = prev })
	return p
}

// pause stops recording (while copies are opened: their fsyncs are not
// the log's), resume starts again.
func (p *powerLoss) pause()  { p.mu.Lock(); p.on = false; p.mu.Unlock() }
func (p *powerLoss) resume() { p.mu.Lock(); p.on = true; p.mu.Unlock() }

// setStep tags the images recorded from now on.
func (p *powerLoss) setStep(s int) { p.mu.Lock(); p.step = s; p.mu.Unlock() }

// last returns the image of the last fsync: what a power cut now leaves.
func (p *powerLoss) last() diskImage {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.images[len(p.images)-1]
}

// cutPowerAndOpen stops recording, cuts a copy of the files back to what
// the last fsync left, and opens it.
func cutPowerAndOpen(t *testing.T, pl *powerLoss, opts Options) crashState {
	t.Helper()
	pl.pause()
	img := pl.last()
	if img.assumed != 0 {
		t.Fatalf("the emulator took %d files on trust", img.assumed)
	}
	st, err := openAndRead(img.restore(t, scratchDir(t), 0), opts)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// since returns the images recorded from the n-th on.
func (p *powerLoss) since(n int) []diskImage {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.images[n:])
}

func (p *powerLoss) count() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.images)
}

func (p *powerLoss) record(what string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.on {
		return
	}
	next := diskImage{what: what, step: p.step, meta: p.cur.meta, files: map[string]fileImage{}}
	if what == "meta" {
		b, err := os.ReadFile(filepath.Join(p.dir, metaFile))
		if err != nil {
			panic(err)
		}
		next.meta = b
	}
	err := filepath.WalkDir(p.dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(p.dir, path)
		if rel == metaFile || rel == lockFile {
			return nil
		}
		fi, err := os.Stat(path)
		if err != nil {
			return err
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if what == "entries" && filepath.Dir(rel) == entriesDir {
			next.files[rel] = fileImage{fi, data}
			return nil
		}
		for _, old := range p.cur.files {
			if os.SameFile(old.fi, fi) && bytes.HasPrefix(data, old.data) {
				next.files[rel] = fileImage{fi, old.data}
				return nil
			}
		}
		next.files[rel] = fileImage{fi, data}
		if len(data) > 0 {
			next.assumed++
		}
		return nil
	})
	if err != nil {
		panic(err)
	}
	p.cur = next
	p.images = append(p.images, next)
}

// restore writes the image into a new directory under base.
func (img diskImage) restore(t *testing.T, base string, n int) string {
	t.Helper()
	dir := filepath.Join(base, fmt.Sprint(n))
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(dir, entriesDir), 0o750); err != nil {
		t.Fatal(err)
	}
	if img.meta != nil {
		mustWrite(t, filepath.Join(dir, metaFile), img.meta)
	}
	for rel, f := range img.files {
		if err := os.MkdirAll(filepath.Join(dir, filepath.Dir(rel)), 0o750); err != nil {
			t.Fatal(err)
		}
		mustWrite(t, filepath.Join(dir, rel), f.data)
	}
	return dir
}

// plEntries returns n entries from index from with term, payloads of
// 0–40 seeded random bytes.
func plEntries(rng *rand.Rand, from core.Index, n int, term core.Term) []core.Entry {
	out := make([]core.Entry, n)
	for i := range out {
		e := core.Entry{Index: from + core.Index(i), Term: term, Type: core.EntryNormal}
		if rng.IntN(10) == 0 {
			e.Type = core.EntryConfChange
		}
		if size := rng.IntN(41); size > 0 {
			e.Data = make([]byte, size)
			for j := range e.Data {
				e.Data[j] = byte(rng.Uint32())
			}
		}
		out[i] = e
	}
	return out
}

// plModel is the state of the log after a Save: the entries, the hard
// state, and the hard state last written with fsync (the one a power cut
// leaves).
type plModel struct {
	log    []core.Entry
	hard   core.HardState
	synced core.HardState
}

// apply returns the model after rd is saved.
func (m plModel) apply(rd core.Ready) plModel {
	next := plModel{log: slices.Clone(m.log), hard: m.hard, synced: m.synced}
	if len(rd.Entries) > 0 {
		next.log = append(next.log[:rd.Entries[0].Index-1], rd.Entries...)
	}
	if hs := rd.HardState; !hs.IsEmpty() {
		if hs.Term != m.hard.Term || hs.Vote != m.hard.Vote {
			next.synced = hs
		}
		next.hard = hs
	}
	return next
}

// TestPowerLossSyncEachBatch runs a seeded workload under SyncEachBatch —
// appends, conflicting suffixes replaced by a new term's entries, term
// and vote changes, commit-only changes — and cuts the power at every
// fsync. After a cut during Save j, the log holds exactly the entries of
// Save j (its entries are synced first) and the term and vote of Save j
// if its metadata was synced, else of the Save before: so every Save that
// returned survives whole.
func TestPowerLossSyncEachBatch(t *testing.T) {
	opts := crashOpts()
	dir := scratchDir(t)
	pl := startPowerLoss(t, dir)
	l, err := Open(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(11, 11))
	models := []plModel{{}}
	term, vote, commit := core.Term(1), core.NodeID(1), core.Index(0)
	saved := map[int]bool{} // Saves that had something to make durable
	kinds := map[string]int{}
	for j := 1; j <= 60; j++ {
		m := models[j-1]
		n := core.Index(len(m.log))
		var rd core.Ready
		switch r := rng.IntN(10); {
		case r == 0 && n > commit+4: // a new leader replaces 1–4 uncommitted entries
			kinds["conflict"]++
			term++
			vote = core.NodeID(1 + rng.IntN(3))
			rd.Entries = plEntries(rng, n-core.Index(rng.IntN(4)), 1+rng.IntN(5), term)
			rd.HardState = core.HardState{Term: term, Vote: vote, Commit: commit}
		case r == 1: // a new term, no entries
			kinds["term"]++
			term++
			vote = core.NodeID(1 + rng.IntN(3))
			rd.HardState = core.HardState{Term: term, Vote: vote, Commit: commit}
		case r == 2 && n > commit: // a commit, nothing else
			kinds["commit"]++
			commit = n
			rd.HardState = core.HardState{Term: term, Vote: vote, Commit: commit}
		default:
			kinds["append"]++
			rd.Entries = plEntries(rng, n+1, 1+rng.IntN(5), term)
			if rng.IntN(2) == 0 && n > commit+4 {
				commit = n - 4
				rd.HardState = core.HardState{Term: term, Vote: vote, Commit: commit}
			}
		}
		next := m.apply(rd)
		saved[j] = len(rd.Entries) > 0 || next.synced != m.synced
		pl.setStep(j)
		if err := l.Save(rd); err != nil {
			t.Fatalf("save %d: %v", j, err)
		}
		models = append(models, next)
	}
	pl.pause()
	images := pl.since(0)
	if len(segmentFiles(t, dir)) < 4 || len(kinds) < 4 {
		t.Fatalf("%d segments and saves %v: want several segments and every kind of save", len(segmentFiles(t, dir)), kinds)
	}
	work := scratchDir(t)
	seen := map[int]bool{}
	for k, img := range images {
		seen[img.step] = true
		j := img.step
		want := models[j]
		wantHard := models[max(j-1, 0)].synced
		if img.what == "meta" {
			wantHard = want.synced
		}
		if img.assumed != 0 {
			t.Fatalf("fsync %d (%s, in save %d): the emulator took %d files on trust", k, img.what, j, img.assumed)
		}
		st, err := openAndRead(img.restore(t, work, k), opts)
		if err != nil {
			t.Fatalf("cut after fsync %d (%s, in save %d): %v", k, img.what, j, err)
		}
		checkEntries(t, fmt.Sprintf("cut after fsync %d (%s, in save %d)", k, img.what, j), st.ents, want.log)
		if st.hard != wantHard {
			t.Fatalf("cut after fsync %d (%s, in save %d): hard state %+v, want %+v", k, img.what, j, st.hard, wantHard)
		}
	}
	for j := 1; j < len(models); j++ {
		if saved[j] && !seen[j] {
			t.Errorf("save %d returned without an fsync", j)
		}
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestPowerLossLazyPolicies shows what SyncInterval (with an interval so
// long that the background fsync never runs) and SyncNever lose on a power
// cut: exactly the entries written since the last fsync the log makes,
// which happens only at Sync, at a change of term or vote, and at Close
// (tidwall/wal also fsyncs a segment when it rolls to the next one, which
// the log does not report: a real disk may keep some more). A change of
// term or vote is never lost, and the entries it rests on go to disk
// before it.
func TestPowerLossLazyPolicies(t *testing.T) {
	for _, opts := range []Options{
		{Sync: SyncInterval, SyncInterval: time.Hour, SegmentSize: crashSegmentSize},
		{Sync: SyncNever, SegmentSize: crashSegmentSize},
	} {
		t.Run(opts.Sync.String(), func(t *testing.T) {
			dir := scratchDir(t)
			pl := startPowerLoss(t, dir)
			l, err := Open(dir, opts)
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			rng := rand.New(rand.NewPCG(5, 5))
			var log []core.Entry
			appendN := func(n int, term core.Term) []core.Entry {
				e := plEntries(rng, core.Index(len(log)+1), n, term)
				log = append(log, e...)
				return e
			}
			work := scratchDir(t)
			steps := []struct {
				name string
				do   func() error
				// durable is how many entries a power cut now leaves;
				// hard is the hard state it leaves.
				durable int
				hard    core.HardState
			}{
				{"entries and a vote", func() error {
					return l.Save(core.Ready{Entries: appendN(8, 1), HardState: core.HardState{Term: 1, Vote: 1}})
				}, 8, core.HardState{Term: 1, Vote: 1}},
				{"entries and a commit", func() error {
					return l.Save(core.Ready{Entries: appendN(12, 1), HardState: core.HardState{Term: 1, Vote: 1, Commit: 8}})
				}, 8, core.HardState{Term: 1, Vote: 1}},
				{"entries over a segment roll", func() error {
					return l.Save(core.Ready{Entries: appendN(30, 1)})
				}, 8, core.HardState{Term: 1, Vote: 1}},
				{"a new term alone", func() error {
					return l.Save(core.Ready{HardState: core.HardState{Term: 2, Commit: 20}})
				}, 50, core.HardState{Term: 2, Commit: 20}},
				{"entries and a vote", func() error {
					return l.Save(core.Ready{Entries: appendN(5, 2), HardState: core.HardState{Term: 2, Vote: 3, Commit: 20}})
				}, 55, core.HardState{Term: 2, Vote: 3, Commit: 20}},
				{"entries alone", func() error {
					return l.Save(core.Ready{Entries: appendN(4, 2)})
				}, 55, core.HardState{Term: 2, Vote: 3, Commit: 20}},
				{"Sync", l.Sync, 59, core.HardState{Term: 2, Vote: 3, Commit: 20}},
				{"entries and a commit", func() error {
					return l.Save(core.Ready{Entries: appendN(3, 2), HardState: core.HardState{Term: 2, Vote: 3, Commit: 59}})
				}, 59, core.HardState{Term: 2, Vote: 3, Commit: 20}},
				{"a conflicting suffix of a new term, and the vote", func() error {
					log = log[:60]
					return l.Save(core.Ready{Entries: appendN(2, 3), HardState: core.HardState{Term: 3, Vote: 2, Commit: 59}})
				}, 62, core.HardState{Term: 3, Vote: 2, Commit: 59}},
			}
			for i, s := range steps {
				if err := s.do(); err != nil {
					t.Fatalf("step %d (%s): %v", i, s.name, err)
				}
				pl.pause()
				img := pl.last()
				if img.assumed != 0 {
					t.Fatalf("step %d (%s): the emulator took %d files on trust", i, s.name, img.assumed)
				}
				st, err := openAndRead(img.restore(t, work, i), opts)
				if err != nil {
					t.Fatalf("step %d (%s): power cut: %v", i, s.name, err)
				}
				what := fmt.Sprintf("step %d (%s): power cut", i, s.name)
				checkEntries(t, what, st.ents, log[:s.durable])
				if st.hard != s.hard {
					t.Fatalf("%s: hard state %+v, want %+v", what, st.hard, s.hard)
				}
				if lost := len(log) - s.durable; lost > 0 {
					t.Logf("%s loses entries %d..%d", what, s.durable+1, len(log))
				}
				pl.resume()
			}
		})
	}
}

// TestPowerLossDuringSnapshotInstall cuts the power at every fsync of a
// snapshot install (through ApplySnapshot and through Save), and of
// SetSnapshot and Compact: the metadata is synced first, and Open must
// finish what it records — the log emptied to start after an install
// past it or not matching it, or cut in front at the snapshot it holds —
// whatever the entry directory held at the cut.
func TestPowerLossDuringSnapshotInstall(t *testing.T) {
	conf := core.ConfState{Voters: []core.NodeID{1, 2, 3}, Learners: []core.NodeID{4}}
	base := append(ents(1, 30, 1), ents(31, 40, 2)...)
	hard := core.HardState{Term: 2, Vote: 1, Commit: 30}
	type want struct {
		first, last core.Index
		snap        core.SnapshotMeta
	}
	cases := []struct {
		name  string
		setup func(l *Log) error // nil, or done before the cuts
		op    func(l *Log) error
		// after is the state the operation leads to: a cut at any of
		// its fsyncs must reopen as that.
		after want
	}{
		{"ApplySnapshot past the log", nil, func(l *Log) error {
			return l.ApplySnapshot(core.SnapshotMeta{Index: 60, Term: 3, ConfState: conf})
		}, want{61, 60, core.SnapshotMeta{Index: 60, Term: 3, ConfState: conf}}},
		{"ApplySnapshot of another term", nil, func(l *Log) error {
			return l.ApplySnapshot(core.SnapshotMeta{Index: 38, Term: 5, ConfState: conf})
		}, want{39, 38, core.SnapshotMeta{Index: 38, Term: 5, ConfState: conf}}},
		{"ApplySnapshot inside the log", nil, func(l *Log) error {
			return l.ApplySnapshot(core.SnapshotMeta{Index: 35, Term: 2, ConfState: conf})
		}, want{36, 40, core.SnapshotMeta{Index: 35, Term: 2, ConfState: conf}}},
		{"Save of a snapshot", nil, func(l *Log) error {
			return l.Save(core.Ready{Snapshot: core.Snapshot{Meta: core.SnapshotMeta{Index: 50, Term: 2, ConfState: conf}}})
		}, want{51, 50, core.SnapshotMeta{Index: 50, Term: 2, ConfState: conf}}},
		{"Compact", func(l *Log) error {
			return l.SetSnapshot(core.SnapshotMeta{Index: 30, ConfState: conf})
		}, func(l *Log) error {
			return l.Compact(25)
		}, want{26, 40, core.SnapshotMeta{Index: 30, Term: 1, ConfState: conf}}},
	}
	opts := crashOpts()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := scratchDir(t)
			pl := startPowerLoss(t, dir)
			l, err := Open(dir, opts)
			if err != nil {
				t.Fatal(err)
			}
			if err := l.Save(core.Ready{Entries: base, HardState: hard}); err != nil {
				t.Fatal(err)
			}
			if c.setup != nil {
				if err := c.setup(l); err != nil {
					t.Fatal(err)
				}
			}
			from := pl.count()
			pl.setStep(1)
			if err := c.op(l); err != nil {
				t.Fatal(err)
			}
			pl.pause()
			l.Close()
			images := pl.since(from)
			if len(images) == 0 || images[0].what != "meta" {
				t.Fatalf("the operation's first fsync is not of the metadata: %v", images)
			}
			// resetTo renames the entry directory aside, then the new one
			// into place, with no fsync in between: add a cut there.
			for _, img := range images {
				if between, ok := betweenRenames(img); ok {
					images = append(images, between)
					break
				}
			}
			work := scratchDir(t)
			for k, img := range images {
				where := fmt.Sprintf("cut after fsync %d (%s)", k, img.what)
				d := img.restore(t, work, k)
				st, err := openAndRead(d, opts)
				if err != nil {
					t.Fatalf("%s: %v", where, err)
				}
				a := c.after
				if st.first != a.first || st.last != a.last || st.edgeTerm != edgeTermOf(a.snap, a.first, base) {
					t.Fatalf("%s: log [%d, %d] term(%d) %d; want [%d, %d] term %d", where, st.first, st.last,
						st.first-1, st.edgeTerm, a.first, a.last, edgeTermOf(a.snap, a.first, base))
				}
				if st.snap.Index != a.snap.Index || st.snap.Term != a.snap.Term || !sameConf(st.snap.ConfState, a.snap.ConfState) ||
					!sameConf(st.conf, a.snap.ConfState) {
					t.Fatalf("%s: snapshot %+v conf %+v, want %+v", where, st.snap, st.conf, a.snap)
				}
				if st.last >= st.first {
					checkEntries(t, where, st.ents, base[st.first-1:])
				}
				if st.hard.Term != hard.Term || st.hard.Vote != hard.Vote || st.hard.Commit < a.snap.Index {
					t.Fatalf("%s: hard state %+v, want term %d vote %d and commit at least %d", where, st.hard, hard.Term, hard.Vote, a.snap.Index)
				}
				// The finished log takes the next entries.
				l, err := Open(d, opts)
				if err != nil {
					t.Fatal(err)
				}
				more := ents(a.last+1, a.last+2, 5)
				if err := l.Save(core.Ready{Entries: more}); err != nil {
					t.Fatalf("%s: save after reopen: %v", where, err)
				}
				l.Close()
				if st, err = openAndRead(d, opts); err != nil || st.last != a.last+2 {
					t.Fatalf("%s: reopen after save: last %d, %v", where, st.last, err)
				}
			}
		})
	}
}

// TestPowerLossInstallLeavesNoOldLog: a power cut after resetTo renamed
// the new entry directory into place but before it removed the old one
// leaves "entries.old", the whole previous log; Open should remove it.
func TestPowerLossInstallLeavesNoOldLog(t *testing.T) {
	dir := scratchDir(t)
	pl := startPowerLoss(t, dir)
	opts := crashOpts()
	l, err := Open(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Save(core.Ready{Entries: ents(1, 40, 1), HardState: core.HardState{Term: 1, Vote: 1}}); err != nil {
		t.Fatal(err)
	}
	from := pl.count()
	if err := l.ApplySnapshot(core.SnapshotMeta{Index: 60, Term: 3}); err != nil {
		t.Fatal(err)
	}
	pl.pause()
	l.Close()
	work := scratchDir(t)
	for k, img := range pl.since(from) {
		d := img.restore(t, work, k)
		if _, err := openAndRead(d, opts); err != nil {
			t.Fatal(err)
		}
		for _, leftover := range []string{entriesDir + ".old", entriesDir + ".new"} {
			if _, err := os.Stat(filepath.Join(d, leftover)); err == nil {
				t.Errorf("cut after fsync %d (%s): %s is still there after Open", k, img.what, leftover)
			}
		}
	}
}

// betweenRenames derives, from an image taken when resetTo had synced its
// new entry directory (entries.new), the one where the old directory has
// been renamed aside and the new one not yet into place.
func betweenRenames(img diskImage) (diskImage, bool) {
	out := diskImage{what: "between the renames", step: img.step, meta: img.meta, files: map[string]fileImage{}}
	hasNew := false
	for rel, f := range img.files {
		switch filepath.Dir(rel) {
		case entriesDir:
			rel = filepath.Join(entriesDir+".old", filepath.Base(rel))
		case entriesDir + ".new":
			hasNew = true
		}
		out.files[rel] = f
	}
	return out, hasNew
}

func edgeTermOf(snap core.SnapshotMeta, first core.Index, log []core.Entry) core.Term {
	if first-1 == snap.Index {
		return snap.Term
	}
	return log[first-2].Term
}

func sameConf(a, b core.ConfState) bool {
	return slices.Equal(a.Voters, b.Voters) && slices.Equal(a.VotersOutgoing, b.VotersOutgoing) &&
		slices.Equal(a.Learners, b.Learners) && slices.Equal(a.LearnersNext, b.LearnersNext) && a.AutoLeave == b.AutoLeave
}

// TestSaveSyncsNewSegmentNames: the power-loss model above lets names
// reach the disk in order, as a journaling file system does. POSIX does
// not promise it: a file created, renamed or removed is on disk only once
// its directory is fsynced (fsync(2): "an explicit fsync() on a file
// descriptor for the directory is also needed"). Under SyncEachBatch, a
// Save that changed the names in the entry directory — a segment roll
// creates a file; a conflicting suffix renames a rewritten segment into
// place and removes later ones — must fsync that directory before it
// returns, or a power cut can lose the new segment with its acknowledged
// entries, or bring back the replaced suffix.
func TestSaveSyncsNewSegmentNames(t *testing.T) {
	dir := scratchDir(t)
	var mu sync.Mutex
	dirSyncs := 0
	prev := testHookSynced
	testHookSynced = func(what string) {
		mu.Lock()
		defer mu.Unlock()
		if what == "dir" {
			dirSyncs++
		}
	}
	defer func() { testHookSynced = prev }()
	// files maps the names in the entry directory to their files.
	files := func() map[string]os.FileInfo {
		des, err := os.ReadDir(filepath.Join(dir, entriesDir))
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]os.FileInfo{}
		for _, de := range des {
			fi, err := de.Info()
			if err != nil {
				t.Fatal(err)
			}
			out[de.Name()] = fi
		}
		return out
	}
	sameNames := func(a, b map[string]os.FileInfo) bool {
		if len(a) != len(b) {
			return false
		}
		for name, fa := range a {
			if fb, ok := b[name]; !ok || !os.SameFile(fa, fb) {
				return false
			}
		}
		return true
	}
	l, err := Open(dir, crashOpts())
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	rng := rand.New(rand.NewPCG(2, 2))
	last := core.Index(0)
	changed := 0
	for j := 0; j < 40; j++ {
		from := last + 1
		if j%5 == 4 {
			from = last - 1 // a conflicting suffix
		}
		batch := plEntries(rng, from, 4, core.Term(1+j/5))
		before := files()
		mu.Lock()
		syncsBefore := dirSyncs
		mu.Unlock()
		if err := l.Save(core.Ready{Entries: batch}); err != nil {
			t.Fatal(err)
		}
		last = lastIndexOf(batch)
		mu.Lock()
		synced := dirSyncs > syncsBefore
		mu.Unlock()
		if !sameNames(files(), before) {
			changed++
			if !synced {
				t.Errorf("save %d (entries %d..%d) changed the files of %s and returned without fsyncing it", j, from, last, entriesDir)
			}
		}
	}
	if changed == 0 {
		t.Fatal("no save changed the segment files")
	}
}
