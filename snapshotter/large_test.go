package snapshotter

// A large body streams through Save and Load in bounded memory, and the
// throughput benchmark.

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"flag"
	"fmt"
	"hash"
	"io"
	"math/rand/v2"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stepraft/stepraft/core"
)

var snapSize = flag.String("snap.size", "", "body size of TestLargeSnapshotInBoundedMemory, e.g. 1GiB "+
	"(default 256MiB, 64MiB with -short)")

// parseSize reads a byte count with an optional KiB, MiB or GiB suffix.
func parseSize(s string) (int64, error) {
	mult := int64(1)
	for suffix, m := range map[string]int64{"KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30} {
		if strings.HasSuffix(s, suffix) {
			s, mult = strings.TrimSuffix(s, suffix), m
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("bad size %q", s)
	}
	return n * mult, nil
}

// memProbe samples the heap while a body streams. The test's own buffers
// are allocated before the baseline is taken.
type memProbe struct {
	base     runtime.MemStats
	peakHeap uint64
}

func newMemProbe() *memProbe {
	runtime.GC()
	p := &memProbe{}
	runtime.ReadMemStats(&p.base)
	p.peakHeap = p.base.HeapAlloc
	return p
}

func (p *memProbe) sample() {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	p.peakHeap = max(p.peakHeap, ms.HeapAlloc)
}

// result returns the bytes allocated since the baseline (TotalAlloc, which
// counts every allocation whatever the GC did), the peak of HeapAlloc over
// the samples, and the growth of Sys (memory taken from the OS).
func (p *memProbe) result() (allocated, peakHeap uint64, sysGrowth int64) {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	p.peakHeap = max(p.peakHeap, ms.HeapAlloc)
	return ms.TotalAlloc - p.base.TotalAlloc, p.peakHeap - p.base.HeapAlloc, int64(ms.Sys) - int64(p.base.Sys)
}

// generator writes a body of size bytes made of a random 64 KiB block
// whose first 8 bytes are the offset, so that a lost, repeated or
// reordered chunk changes the hash. It hashes what it writes.
type generator struct {
	size   int64
	block  []byte
	hash   hash.Hash // nil in the benchmark
	sample func()    // called every 16 MiB
}

func newGenerator(size int64, sample func()) *generator {
	block := make([]byte, 64<<10)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range block {
		block[i] = byte(rng.Uint32())
	}
	return &generator{size: size, block: block, hash: sha256.New(), sample: sample}
}

func (g *generator) write(w io.Writer) error {
	for off := int64(0); off < g.size; off += int64(len(g.block)) {
		binary.BigEndian.PutUint64(g.block, uint64(off))
		chunk := g.block[:min(int64(len(g.block)), g.size-off)]
		if g.hash != nil {
			g.hash.Write(chunk)
		}
		if _, err := w.Write(chunk); err != nil {
			return err
		}
		if off%(16<<20) == 0 && g.sample != nil {
			g.sample()
		}
	}
	return nil
}

// hashingWriter hashes what a body reader writes to it, sampling memory
// every 16 MiB.
type hashingWriter struct {
	hash   hash.Hash
	n      int64
	sample func()
}

func (h *hashingWriter) Write(p []byte) (int, error) {
	before := h.n
	h.hash.Write(p)
	h.n += int64(len(p))
	if h.sample != nil && before/(16<<20) != h.n/(16<<20) {
		h.sample()
	}
	return len(p), nil
}

// maxStreamBytes is the most a save or a load of any size may allocate:
// "a few MiB". What they need is one 256 KiB buffer each, plus the header.
const maxStreamBytes = 4 << 20

// TestLargeSnapshotInBoundedMemory saves a large body from a generator
// and reads it back through Load into a hash, and checks with
// runtime.MemStats that neither allocates more than a few MiB, whatever
// the size: the body is never held in memory. TotalAlloc is the measure
// (it counts every byte allocated, so it does not depend on when the GC
// runs); the sampled peak of HeapAlloc and the growth of Sys are logged.
func TestLargeSnapshotInBoundedMemory(t *testing.T) {
	size := int64(256 << 20)
	if testing.Short() {
		size = 64 << 20
	}
	if *snapSize != "" {
		var err error
		if size, err = parseSize(*snapSize); err != nil {
			t.Fatal(err)
		}
	}
	dir := t.TempDir()
	s := openStore(t, dir, Options{})
	var probe *memProbe
	gen := newGenerator(size, func() { probe.sample() })
	sink := &hashingWriter{hash: sha256.New(), sample: func() { probe.sample() }}
	saveBytes(t, s, Meta{Index: 1, Term: 1}, []byte("small"))

	probe = newMemProbe()
	start := time.Now()
	saved, err := s.Save(Meta{Index: 2, Term: 1}, gen.write)
	if err != nil {
		t.Fatal(err)
	}
	saveTime := time.Since(start)
	allocated, peak, sys := probe.result()
	t.Logf("Save of %d MiB in %v: %d KiB allocated, heap peak +%d KiB, Sys %+d KiB",
		size>>20, saveTime.Round(time.Millisecond), allocated>>10, peak>>10, sys>>10)
	if saved.Size != size {
		t.Fatalf("Save wrote %d bytes, want %d", saved.Size, size)
	}
	if allocated > maxStreamBytes || peak > maxStreamBytes {
		t.Errorf("Save of %d bytes allocated %d bytes (heap peak +%d); want at most %d", size, allocated, peak, maxStreamBytes)
	}

	probe = newMemProbe()
	start = time.Now()
	m, r, err := s.Load()
	if err != nil {
		t.Fatal(err)
	}
	n, err := io.Copy(sink, r)
	if err != nil {
		t.Fatal(err)
	}
	r.Close()
	loadTime := time.Since(start)
	allocated, peak, sys = probe.result()
	t.Logf("Load and read of %d MiB in %v (the body is read twice): %d KiB allocated, heap peak +%d KiB, Sys %+d KiB",
		size>>20, loadTime.Round(time.Millisecond), allocated>>10, peak>>10, sys>>10)
	if m.Index != 2 || n != size || !bytes.Equal(sink.hash.Sum(nil), gen.hash.Sum(nil)) {
		t.Fatalf("Load returned index %d with %d bytes; want index 2 with the %d bytes saved, same hash", m.Index, n, size)
	}
	if allocated > maxStreamBytes || peak > maxStreamBytes {
		t.Errorf("Load of %d bytes allocated %d bytes (heap peak +%d); want at most %d", size, allocated, peak, maxStreamBytes)
	}
}

// BenchmarkSaveLoad saves a body from a generator (with its fsyncs), then
// loads it (which verifies the body, one read) and reads it to the end
// (a second read). MB/s is body bytes per second of the whole round trip;
// save-MB/s and load-MB/s split it.
func BenchmarkSaveLoad(b *testing.B) {
	for _, size := range []int64{1 << 20, 64 << 20} {
		b.Run(fmt.Sprintf("size=%dMiB", size>>20), func(b *testing.B) {
			s := openStore(b, b.TempDir(), Options{Keep: 1})
			gen := newGenerator(size, nil)
			gen.hash = nil // measure the snapshotter, not SHA-256
			b.SetBytes(size)
			b.ReportAllocs()
			var saving, loading time.Duration
			i := 0
			for b.Loop() {
				i++
				start := time.Now()
				if _, err := s.Save(Meta{Index: core.Index(i), Term: 1}, gen.write); err != nil {
					b.Fatal(err)
				}
				mid := time.Now()
				_, r, err := s.Load()
				if err != nil {
					b.Fatal(err)
				}
				if _, err := io.Copy(io.Discard, r); err != nil {
					b.Fatal(err)
				}
				r.Close()
				saving += mid.Sub(start)
				loading += time.Since(mid)
			}
			b.ReportMetric(float64(size)*float64(i)/1e6/saving.Seconds(), "save-MB/s")
			b.ReportMetric(float64(size)*float64(i)/1e6/loading.Seconds(), "load-MB/s")
		})
	}
}
