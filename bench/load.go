package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/bits"
	"os"
	"runtime/pprof"
	"runtime/trace"
	"sync"
	"sync/atomic"
	"time"

	"github.com/stepraft/stepraft/node"
)

// workload is what the clients do in one configuration.
type workload struct {
	Clients  int
	Size     int           // command bytes
	Reads    float64       // fraction of operations that are linearizable reads
	Warmup   time.Duration // run, not measured
	Duration time.Duration // measured
	// CPUProfile, if set, is where the child writes a CPU profile of the
	// measured window (all its nodes, and the clients if they run here).
	CPUProfile string
	// Trace, if set, is where the child writes an execution trace of the
	// measured window (go tool trace).
	Trace string
}

// clients are N goroutines driving one node: each proposes a command (or,
// with probability Reads, makes a linearizable read), waits for its
// result, and starts again; while measuring is set, the latencies of the
// operations that end go into the histograms.
type clients struct {
	measuring, stop atomic.Bool
	errs, done      atomic.Int64
	writes, reads   hist
	wg              sync.WaitGroup
}

func startClients(lead *node.Node, w workload) *clients {
	c := &clients{}
	cmd := make([]byte, w.Size)
	for i := range cmd {
		cmd[i] = byte('a' + i%26)
	}
	for client := range w.Clients {
		c.wg.Add(1)
		go func() {
			defer c.wg.Done()
			rng := uint64(client)*0x9e3779b97f4a7c15 + 1 // seeded: client i makes the same choices every run
			for !c.stop.Load() {
				rng ^= rng << 13
				rng ^= rng >> 7
				rng ^= rng << 17
				read := w.Reads > 0 && float64(rng%10000)/10000 < w.Reads
				t0 := time.Now()
				var err error
				if read {
					_, err = lead.Read(context.Background(), []byte("k"))
				} else {
					_, err = lead.Propose(context.Background(), cmd)
				}
				d := time.Since(t0)
				if !c.measuring.Load() {
					continue
				}
				if err != nil {
					c.errs.Add(1)
					continue
				}
				if read {
					c.reads.record(d)
				} else {
					c.writes.record(d)
				}
				c.done.Add(1)
			}
		}()
	}
	return c
}

// loadStats summarizes the operations that ended in the measured window.
type loadStats struct {
	Elapsed                  time.Duration // of the window
	Writes, Reads, Errors    int
	P50, P90, P99, P999, Max time.Duration // of writes and reads together
	ReadP50                  time.Duration
}

// finish stops the clients, waits for their last operations and
// summarizes the measured ones.
func (c *clients) finish(elapsed time.Duration) loadStats {
	c.stop.Store(true)
	c.wg.Wait()
	w, r := c.writes.snapshot(), c.reads.snapshot()
	all := w.merge(r)
	return loadStats{
		Elapsed: elapsed, Writes: int(w.n), Reads: int(r.n), Errors: int(c.errs.Load()),
		P50: all.quantile(0.5), P90: all.quantile(0.9), P99: all.quantile(0.99), P999: all.quantile(0.999), Max: all.max,
		ReadP50: r.quantile(0.5),
	}
}

// nodeWindow is what one node's metrics say of a run: the leader it knew
// of and its term when the run began and when the window ended, and its
// log's counters over the measured window.
type nodeWindow struct {
	LeaderStart, LeaderEnd node.NodeID
	TermStart, TermEnd     uint64
	Fsyncs, Entries, Bytes uint64
}

// childResult is what a process measured in one run.
type childResult struct {
	CPU        time.Duration // user+system time of the process over the measured window
	PeakRSSKiB int64         // of the process over its life: one configuration
	Nodes      map[node.NodeID]nodeWindow
	Load       *loadStats `json:",omitempty"` // from the process that ran the clients
}

// runWorkload runs w on the nodes of this process: the clients on
// nodes[lead] if that node is here, and, on every node, the measured
// window, which begins after w.Warmup. progress is called about once a
// second while the clients are measured.
func runWorkload(nodes map[node.NodeID]*node.Node, lead node.NodeID, w workload, progress func(done int64, elapsed time.Duration)) childResult {
	res := childResult{Nodes: map[node.NodeID]nodeWindow{}}
	for id, n := range nodes {
		m := n.Metrics()
		res.Nodes[id] = nodeWindow{LeaderStart: m.Leader, TermStart: m.Term}
	}
	var c *clients
	if n := nodes[lead]; n != nil {
		c = startClients(n, w)
	}
	time.Sleep(w.Warmup) // the warm-up: not measured
	m0 := map[node.NodeID]node.Metrics{}
	for id, n := range nodes {
		m0[id] = n.Metrics()
	}
	stopProfile := startProfiles(w.CPUProfile, w.Trace)
	cpu0, _ := cpuTime()
	start := time.Now()
	if c != nil {
		c.measuring.Store(true)
	}
	end := time.NewTimer(w.Duration)
	tick := time.NewTicker(time.Second)
	for waiting := true; waiting; {
		select {
		case <-end.C:
			waiting = false
		case <-tick.C:
			if c != nil && progress != nil {
				progress(c.done.Load(), time.Since(start))
			}
		}
	}
	tick.Stop()
	if c != nil {
		c.measuring.Store(false)
	}
	elapsed := time.Since(start)
	cpu1, _ := cpuTime()
	res.CPU = cpu1 - cpu0
	if err := stopProfile(); err != nil {
		fmt.Fprintln(os.Stderr, "bench: cpu profile:", err) // the parent shows a child's stderr
	}
	for id, n := range nodes {
		m1, w := n.Metrics(), res.Nodes[id]
		w.LeaderEnd, w.TermEnd = m1.Leader, m1.Term
		w.Fsyncs = m1.Fsyncs - m0[id].Fsyncs
		w.Entries = m1.EntriesWritten - m0[id].EntriesWritten
		w.Bytes = m1.BytesWritten - m0[id].BytesWritten
		res.Nodes[id] = w
	}
	if c != nil {
		s := c.finish(elapsed)
		res.Load = &s
	}
	res.PeakRSSKiB = peakRSSKiB()
	return res
}

// startProfiles starts a CPU profile into cpuPath and an execution trace
// into tracePath (each only if its path is set) and returns what stops
// them and reports the first error.
func startProfiles(cpuPath, tracePath string) (stop func() error) {
	stopCPU := startProfile(cpuPath, pprof.StartCPUProfile, pprof.StopCPUProfile)
	stopTrace := startProfile(tracePath, trace.Start, trace.Stop)
	return func() error {
		return errors.Join(stopCPU(), stopTrace())
	}
}

// startProfile starts one profile into path (none if path is empty) and
// returns what stops it and reports the first error.
func startProfile(path string, start func(io.Writer) error, stop func()) func() error {
	if path == "" {
		return func() error { return nil }
	}
	f, err := os.Create(path)
	if err == nil {
		if err = start(f); err != nil {
			f.Close()
		}
	}
	if err != nil {
		return func() error { return err }
	}
	return func() error {
		stop()
		return f.Close()
	}
}

// histSubBits is log2 of the number of linear buckets per power of two.
const histSubBits = 7

// hist is a log-linear histogram of durations, safe for concurrent use:
// exact below 128 ns, then 128 buckets per power of two, so that a
// bucket's width is at most 1/128 of its lower bound and its midpoint is
// within 0.4 % of every value in it. It has a fixed size (58 KiB), so
// the process that runs the clients holds the same memory for them
// whatever the number of operations; the maximum is kept exactly.
type hist struct {
	counts [(64 - histSubBits + 1) << histSubBits]atomic.Uint64
	max    atomic.Int64
}

func histBucket(v uint64) int {
	if v < 1<<histSubBits {
		return int(v)
	}
	shift := bits.Len64(v) - 1 - histSubBits
	return (shift+1)<<histSubBits + int(v>>shift) - 1<<histSubBits
}

// histMid is the midpoint of bucket i.
func histMid(i int) uint64 {
	g, m := i>>histSubBits, uint64(i&(1<<histSubBits-1))
	if g == 0 {
		return uint64(i)
	}
	shift := g - 1
	lo := (1<<histSubBits + m) << shift
	return lo + (uint64(1)<<shift)/2
}

func (h *hist) record(d time.Duration) {
	d = max(d, 0)
	h.counts[histBucket(uint64(d))].Add(1)
	for m := h.max.Load(); int64(d) > m && !h.max.CompareAndSwap(m, int64(d)); m = h.max.Load() {
	}
}

// histSnapshot is a histogram's counts at one moment.
type histSnapshot struct {
	counts []uint64
	n      uint64
	max    time.Duration
}

func (h *hist) snapshot() histSnapshot {
	s := histSnapshot{counts: make([]uint64, len(h.counts)), max: time.Duration(h.max.Load())}
	for i := range h.counts {
		s.counts[i] = h.counts[i].Load()
		s.n += s.counts[i]
	}
	return s
}

func (s histSnapshot) merge(o histSnapshot) histSnapshot {
	m := histSnapshot{counts: make([]uint64, len(s.counts)), n: s.n + o.n, max: max(s.max, o.max)}
	for i := range m.counts {
		m.counts[i] = s.counts[i] + o.counts[i]
	}
	return m
}

// quantile is the value at rank q*n of the n recorded ones in ascending
// order (the midpoint of its bucket, at most the maximum); 0 if none.
func (s histSnapshot) quantile(q float64) time.Duration {
	if s.n == 0 {
		return 0
	}
	rank := min(uint64(q*float64(s.n)), s.n-1)
	var seen uint64
	for i, c := range s.counts {
		seen += c
		if seen > rank {
			return min(time.Duration(histMid(i)), s.max)
		}
	}
	return s.max
}
