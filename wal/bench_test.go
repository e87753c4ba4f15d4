package wal

import (
	"flag"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	twal "github.com/tidwall/wal"

	"github.com/stepraft/stepraft/core"
)

// The benchmark grid: every policy, entry size and entries per Save.
var (
	benchPolicies = []SyncPolicy{SyncEachBatch, SyncInterval, SyncNever}
	benchSizes    = []int{128, 4 << 10}
	benchBatches  = []int{1, 64, 512}
)

// benchPhaseSeed seeds where BenchmarkSaveBesideRaw's two sides compact.
var benchPhaseSeed = flag.Uint64("wal.phase-seed", 1, "seed of the compaction points BenchmarkSaveBesideRaw draws for each side")

// benchCompactBytes is how much payload a benchmark writes between two
// compactions, so that a long run keeps its disk use bounded (about this
// plus a segment). Compaction runs with the timer stopped: it is not what
// is measured, and tidwall/wal rewrites a segment to do it.
const benchCompactBytes = 64 << 20

func benchPayload(size int) []byte {
	r := rand.New(rand.NewPCG(1, uint64(size)))
	p := make([]byte, size)
	for i := range p {
		p[i] = byte(r.Uint32())
	}
	return p
}

// BenchmarkSave measures Save of Readys as a leader produces them: batch
// new entries and a hard state whose commit moves (the previous batch
// committed) while term and vote stay. One op is one Save; entries/s and
// MB/s (payload only) are derived from it, and fsyncs/op counts the fsyncs
// the log made (tidwall/wal's own fsync at a segment roll is not counted).
func BenchmarkSave(b *testing.B) {
	for _, p := range benchPolicies {
		for _, size := range benchSizes {
			for _, batch := range benchBatches {
				b.Run(fmt.Sprintf("%s/size=%d/batch=%d", p, size, batch), func(b *testing.B) {
					benchSave(b, p, size, batch)
				})
			}
		}
	}
}

func benchSave(b *testing.B, policy SyncPolicy, size, batch int) {
	var fsyncs atomic.Int64
	testHookSynced = func(string) { fsyncs.Add(1) }
	defer func() { testHookSynced = nil }()

	l, err := Open(b.TempDir(), Options{Sync: policy})
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	hs := core.HardState{Term: 1, Vote: 1}
	if err := l.Save(core.Ready{HardState: hs, MustSync: true}); err != nil {
		b.Fatal(err)
	}
	data := benchPayload(size)
	ents := make([]core.Entry, batch)
	next := core.Index(1)
	written := 0
	fsyncs.Store(0)
	b.SetBytes(int64(size * batch))
	ops := 0
	for b.Loop() {
		for j := range ents {
			ents[j] = core.Entry{Index: next + core.Index(j), Term: 1, Type: core.EntryNormal, Data: data}
		}
		hs.Commit = next - 1
		if err := l.Save(core.Ready{HardState: hs, Entries: ents, MustSync: true}); err != nil {
			b.Fatal(err)
		}
		next += core.Index(batch)
		ops++
		if written += size * batch; written >= benchCompactBytes {
			b.StopTimer()
			snap := core.SnapshotMeta{Index: hs.Commit, Term: 1, ConfState: core.ConfState{Voters: []core.NodeID{1}}}
			if err := l.SetSnapshot(snap); err != nil {
				b.Fatal(err)
			}
			if err := l.Compact(snap.Index); err != nil {
				b.Fatal(err)
			}
			written = 0
			b.StartTimer()
		}
	}
	b.ReportMetric(float64(ops*batch)/b.Elapsed().Seconds(), "entries/s")
	b.ReportMetric(float64(fsyncs.Load())/float64(ops), "fsyncs/op")
}

// BenchmarkRawTidwall is the floor BenchmarkSave is compared with:
// tidwall/wal alone, one WriteBatch of the same payloads per op, opened
// like the log opens it (NoSync, AllowEmpty, the same segment size).
// "sync" adds one Sync per batch (compare with SyncEachBatch); "nosync"
// never syncs (tidwall/wal still fsyncs at a segment roll). "syncrec" is
// "sync" with each payload as long as the record the log stores for it
// (payload plus version, checksum, index, term and type): the difference
// between "syncrec" and Save is the log's own work, and the difference
// between "sync" and "syncrec" is the cost of the bytes the record adds.
func BenchmarkRawTidwall(b *testing.B) {
	for _, name := range []string{"sync", "syncrec", "nosync"} {
		for _, size := range benchSizes {
			for _, batch := range benchBatches {
				b.Run(fmt.Sprintf("%s/size=%d/batch=%d", name, size, batch), func(b *testing.B) {
					n := size
					if name == "syncrec" {
						n = benchRecordSize(size)
					}
					benchRawTidwall(b, name != "nosync", n, batch)
				})
			}
		}
	}
}

// benchRecordSize is the size of the record the log stores for a payload
// of size bytes: with an index past 2^16 and term 1, as in a log that has
// been running for a while.
func benchRecordSize(size int) int {
	return len(appendRecord(nil, &core.Entry{Index: 1 << 16, Term: 1, Data: benchPayload(size)}))
}

// openRawTidwall opens tidwall/wal alone as the log opens it (NoSync,
// AllowEmpty, the same segment size), closed when the benchmark ends.
func openRawTidwall(b *testing.B) *twal.Log {
	o := *twal.DefaultOptions
	o.NoSync, o.AllowEmpty, o.SegmentSize, o.SegmentCacheSize = true, true, defaultSegment, 2
	tl, err := twal.Open(filepath.Join(b.TempDir(), entriesDir), &o)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { tl.Close() })
	return tl
}

func benchRawTidwall(b *testing.B, synced bool, size, batch int) {
	tl := openRawTidwall(b)
	data := benchPayload(size)
	var bt twal.Batch
	next := uint64(1)
	written := 0
	b.SetBytes(int64(size * batch))
	ops := 0
	for b.Loop() {
		bt.Clear()
		for j := range batch {
			bt.Write(next+uint64(j), data)
		}
		if err := tl.WriteBatch(&bt); err != nil {
			b.Fatal(err)
		}
		if synced {
			if err := tl.Sync(); err != nil {
				b.Fatal(err)
			}
		}
		next += uint64(batch)
		ops++
		if written += size * batch; written >= benchCompactBytes {
			b.StopTimer()
			if err := tl.TruncateFront(next - uint64(batch)); err != nil {
				b.Fatal(err)
			}
			written = 0
			b.StartTimer()
		}
	}
	b.ReportMetric(float64(ops*batch)/b.Elapsed().Seconds(), "entries/s")
}

// BenchmarkSaveBesideRaw interleaves, op by op in one process and in
// alternating order, a Save on the log (SyncEachBatch) and a synced raw
// tidwall/wal WriteBatch of the same payloads, and times each side
// separately: both meet the same
// machine load and the same process (heap, page faults, GC), so their
// ratio is steadier than that of separate runs. It reports save-ns/op,
// raw-ns/op and save/raw as a percentage of raw's throughput, and
// p50-save/raw, the same from the median op of each side.
//
// "nosync" pairs SyncNever with raw writes without Sync: the CPU cost of
// each side, which bounds the synced ratio from below (both make the same
// fsync calls, counted with strace -c, so fsync time adds to both).
//
// "control" is "sync" with a second synced raw tidwall/wal log in the
// place of Save: the two sides do the same work, so its ratios show how
// far this harness alone moves a run from 100 % on the machine at hand.
// "bytes" is "control" with that second log's payloads as long as Save's
// records: the cost of the record's bytes alone.
//
// After the first op, and then every benchCompactBytes, each side drops
// its old entries (with the timer stopped) and keeps a random number of
// the last batch's, drawn for each side apart (-wal.phase-seed): an op's
// cost depends on how full tidwall/wal's tail segment is when it starts
// (a roll, the regrowth of the segment's buffer), and two logs that
// started empty and write nearly the same bytes would otherwise keep the
// same fixed offset from the op boundaries for a whole run — a bias for
// or against one side that a small difference in bytes decides.
func BenchmarkSaveBesideRaw(b *testing.B) {
	for _, mode := range []string{"sync", "nosync", "control", "bytes"} {
		for _, size := range benchSizes {
			for _, batch := range benchBatches {
				b.Run(fmt.Sprintf("%s/size=%d/batch=%d", mode, size, batch), func(b *testing.B) {
					benchSaveBesideRaw(b, mode, size, batch)
				})
			}
		}
	}
}

func benchSaveBesideRaw(b *testing.B, mode string, size, batch int) {
	synced := mode != "nosync"
	policy := SyncEachBatch
	if !synced {
		policy = SyncNever
	}
	l, err := Open(b.TempDir(), Options{Sync: policy})
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	tl := openRawTidwall(b)
	var twin *twal.Log // control, bytes: the raw log in Save's place
	data := benchPayload(size)
	twinData := data
	if mode == "control" || mode == "bytes" {
		twin = openRawTidwall(b)
	}
	if mode == "bytes" {
		twinData = benchPayload(benchRecordSize(size))
	}
	rng := rand.New(rand.NewPCG(*benchPhaseSeed, uint64(size)<<32|uint64(batch)))
	hs := core.HardState{Term: 1, Vote: 1}
	if err := l.Save(core.Ready{HardState: hs, MustSync: true}); err != nil {
		b.Fatal(err)
	}
	ents := make([]core.Entry, batch)
	var bt, twinBatch twal.Batch
	next := core.Index(1)
	written := 0
	var saveNs, rawNs time.Duration
	var saveOps, rawOps []time.Duration
	b.SetBytes(int64(2 * size * batch))
	// writeRaw is one op on a raw log: a batch of the payloads, and a Sync.
	writeRaw := func(tl *twal.Log, bt *twal.Batch, data []byte) {
		bt.Clear()
		for j := range batch {
			bt.Write(uint64(next)+uint64(j), data)
		}
		if err := tl.WriteBatch(bt); err != nil {
			b.Fatal(err)
		}
		if synced {
			if err := tl.Sync(); err != nil {
				b.Fatal(err)
			}
		}
	}
	for b.Loop() {
		for j := range ents {
			ents[j] = core.Entry{Index: next + core.Index(j), Term: 1, Type: core.EntryNormal, Data: data}
		}
		hs.Commit = next - 1
		save := func() {
			t0 := time.Now()
			if twin != nil {
				writeRaw(twin, &twinBatch, twinData)
			} else if err := l.Save(core.Ready{HardState: hs, Entries: ents, MustSync: synced}); err != nil {
				b.Fatal(err)
			}
			d := time.Since(t0)
			saveNs += d
			saveOps = append(saveOps, d)
		}
		raw := func() {
			t0 := time.Now()
			writeRaw(tl, &bt, data)
			d := time.Since(t0)
			rawNs += d
			rawOps = append(rawOps, d)
		}
		// Alternate which goes first: an fsync can carry the file
		// system journal's work for the other file.
		if next/core.Index(batch)%2 == 0 {
			save()
			raw()
		} else {
			raw()
			save()
		}
		next += core.Index(batch)
		if written += size * batch; written >= benchCompactBytes || next == core.Index(batch)+1 {
			// Each side keeps 1 to batch of the entries just written.
			b.StopTimer()
			keepSave, keepRaw := core.Index(1+rng.IntN(batch)), core.Index(1+rng.IntN(batch))
			if twin != nil {
				if err := twin.TruncateFront(uint64(next - keepSave)); err != nil {
					b.Fatal(err)
				}
			} else {
				snap := core.SnapshotMeta{Index: next - 1, Term: 1, ConfState: core.ConfState{Voters: []core.NodeID{1}}}
				if err := l.SetSnapshot(snap); err != nil {
					b.Fatal(err)
				}
				if c := next - 1 - keepSave; c > 0 { // 0: all of the first batch kept
					if err := l.Compact(c); err != nil {
						b.Fatal(err)
					}
				}
			}
			if err := tl.TruncateFront(uint64(next - keepRaw)); err != nil {
				b.Fatal(err)
			}
			written = 0
			b.StartTimer()
		}
	}
	ops := float64(b.N)
	b.ReportMetric(float64(saveNs.Nanoseconds())/ops, "save-ns/op")
	b.ReportMetric(float64(rawNs.Nanoseconds())/ops, "raw-ns/op")
	b.ReportMetric(100*float64(rawNs)/float64(saveNs), "save/raw-%")
	// The same ratio from the median op of each side: a stall of the
	// shared disk (tens of milliseconds, now and then) lands on one side
	// and moves the totals' ratio by tens of points; the medians' ratio
	// is what a typical op costs.
	if p50 := medianDuration(saveOps); p50 > 0 {
		b.ReportMetric(100*float64(medianDuration(rawOps))/float64(p50), "p50-save/raw-%")
	}
}

func medianDuration(d []time.Duration) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	return s[len(s)/2]
}
