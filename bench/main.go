// Command bench measures a stepraft cluster: three nodes in this process
// on loopback TCP, each with a real wal directory, driven by concurrent
// clients proposing commands (and, with -reads, making linearizable
// reads) for a fixed time after a warm-up. For each combination of
// clients, command size and sync policy it reports throughput, latency
// percentiles, fsyncs, CPU and memory; see bench/README.md.
//
//	go run ./bench -clients 1,16,256 -size 16,128,1024 -sync each -duration 10s
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/stepraft/stepraft/node"
	"github.com/stepraft/stepraft/wal"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// options are the command's flags.
type options struct {
	clients  []int
	sizes    []int
	syncs    []string
	maxBatch int
	duration time.Duration
	warmup   time.Duration
	reads    float64
	dir      string
	jsonOut  string
	svgOut   string
	tick     time.Duration
}

func parseFlags(args []string, stderr io.Writer) (options, error) {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	clients := fs.String("clients", "1,16,256", "concurrent clients, comma-separated")
	sizes := fs.String("size", "16,128,1024", "command sizes in bytes, comma-separated")
	syncs := fs.String("sync", "each", "sync policies: each, interval, never (comma-separated)")
	var o options
	fs.IntVar(&o.maxBatch, "max-batch", node.DefaultMaxBatchBytes, "node MaxBatchBytes")
	fs.DurationVar(&o.duration, "duration", 10*time.Second, "measured time per configuration")
	fs.DurationVar(&o.warmup, "warmup", 2*time.Second, "unmeasured time before it")
	fs.Float64Var(&o.reads, "reads", 0, "fraction of operations that are linearizable reads")
	fs.StringVar(&o.dir, "dir", "", "directory for the wal directories (default: a temporary one)")
	fs.StringVar(&o.jsonOut, "json", "", "also write the results as JSON to this file")
	fs.StringVar(&o.svgOut, "svg", "", "also draw throughput against p99 latency per sync policy to this SVG file")
	fs.DurationVar(&o.tick, "tick", 100*time.Millisecond, "node tick interval")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	var err error
	if o.clients, err = intList(*clients); err != nil {
		return o, fmt.Errorf("-clients: %w", err)
	}
	if o.sizes, err = intList(*sizes); err != nil {
		return o, fmt.Errorf("-size: %w", err)
	}
	for _, s := range strings.Split(*syncs, ",") {
		if _, err := syncPolicy(s); err != nil {
			return o, err
		}
		o.syncs = append(o.syncs, s)
	}
	if o.reads < 0 || o.reads > 1 || o.duration <= 0 || o.warmup < 0 {
		return o, errors.New("-reads must be in [0, 1], -duration positive")
	}
	return o, nil
}

func intList(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		v, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || v <= 0 {
			return nil, fmt.Errorf("bad number %q", f)
		}
		out = append(out, v)
	}
	return out, nil
}

func syncPolicy(s string) (wal.SyncPolicy, error) {
	switch s {
	case "each":
		return wal.SyncEachBatch, nil
	case "interval":
		return wal.SyncInterval, nil
	case "never":
		return wal.SyncNever, nil
	}
	return 0, fmt.Errorf("-sync %q: want each, interval or never", s)
}

func run(args []string, stdout, stderr io.Writer) int {
	o, err := parseFlags(args, stderr)
	if err != nil {
		fmt.Fprintln(stderr, "bench:", err)
		return 2
	}
	if err := benchmark(o, stdout, stderr); err != nil {
		fmt.Fprintln(stderr, "bench:", err)
		return 1
	}
	return 0
}

func benchmark(o options, stdout, stderr io.Writer) error {
	dir := o.dir
	if dir == "" {
		d, err := os.MkdirTemp("", "stepraft-bench-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(d)
		dir = d
	}
	cal, err := calibrate(dir)
	if err != nil {
		return fmt.Errorf("calibration: %w", err)
	}
	fmt.Fprintf(stdout, "machine: %d CPUs, %s/%s, %s\n", runtime.NumCPU(), runtime.GOOS, runtime.GOARCH, runtime.Version())
	fmt.Fprintf(stdout, "calibration: append+fdatasync %v, two at once %v (medians of %d), loopback round trip %v\n",
		cal.Fsync.Round(time.Microsecond), cal.PairFsync.Round(time.Microsecond), cal.Samples, cal.RTT.Round(time.Microsecond))
	fmt.Fprintf(stdout, "floor for one durable write: %v with a disk per node, %v with the three nodes on this one disk\n",
		cal.Floor().Round(time.Microsecond), cal.SharedFloor().Round(time.Microsecond))
	var results []result
	for _, s := range o.syncs {
		for _, size := range o.sizes {
			for _, clients := range o.clients {
				cfg := config{Sync: s, Size: size, Clients: clients, MaxBatch: o.maxBatch, Reads: o.reads}
				r, err := measure(cfg, o, filepath.Join(dir, fmt.Sprintf("%s-%d-%d", s, size, clients)), stderr)
				if err != nil {
					return fmt.Errorf("%+v: %w", cfg, err)
				}
				results = append(results, r)
			}
		}
	}
	printTable(stdout, results, cal)
	if o.jsonOut != "" {
		b, _ := json.MarshalIndent(struct {
			Calibration calibration
			Results     []result
		}{cal, results}, "", "  ")
		if err := os.WriteFile(o.jsonOut, b, 0o644); err != nil {
			return err
		}
	}
	if o.svgOut != "" {
		if err := os.WriteFile(o.svgOut, []byte(drawSVG(results)), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// config is one measured configuration.
type config struct {
	Sync     string
	Size     int
	Clients  int
	MaxBatch int
	Reads    float64
}

// result is what one configuration measured.
type result struct {
	config
	Ops             int
	OpsPerSec       float64
	MBPerSec        float64 // of command payload written
	P50, P90, P99   time.Duration
	P999, Max       time.Duration
	ReadP50         time.Duration `json:",omitempty"`
	FsyncsPerSec    float64
	EntriesPerFsync float64
	BytesPerEntry   float64
	CPUPer1000Ops   float64 // CPU seconds of this process (all three nodes)
	PeakRSSMiB      float64 // of this process, all three nodes
	Errors          int
}

// measure runs one configuration.
func measure(cfg config, o options, dir string, stderr io.Writer) (result, error) {
	res := result{config: cfg}
	policy, _ := syncPolicy(cfg.Sync)
	c, err := startCluster(dir, policy, cfg.MaxBatch, o.tick)
	if err != nil {
		return res, err
	}
	defer c.stop()
	lead, err := c.waitLeader(20 * time.Second)
	if err != nil {
		return res, err
	}
	cmd := make([]byte, cfg.Size)
	for i := range cmd {
		cmd[i] = byte('a' + i%26)
	}
	var measuring atomic.Bool
	var stop atomic.Bool
	var errs atomic.Int64
	lat := make([][]time.Duration, cfg.Clients)
	readLat := make([][]time.Duration, cfg.Clients)
	var done atomic.Int64
	var wg sync.WaitGroup
	for w := range cfg.Clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := uint64(w)*0x9e3779b97f4a7c15 + 1
			for !stop.Load() {
				rng ^= rng << 13
				rng ^= rng >> 7
				rng ^= rng << 17
				read := cfg.Reads > 0 && float64(rng%10000)/10000 < cfg.Reads
				t0 := time.Now()
				var err error
				if read {
					_, err = lead.Read(context.Background(), []byte("k"))
				} else {
					_, err = lead.Propose(context.Background(), cmd)
				}
				d := time.Since(t0)
				if !measuring.Load() {
					continue
				}
				if err != nil {
					errs.Add(1)
					continue
				}
				if read {
					readLat[w] = append(readLat[w], d)
				} else {
					lat[w] = append(lat[w], d)
				}
				done.Add(1)
			}
		}()
	}
	time.Sleep(o.warmup) // the warm-up: not measured
	m0 := lead.Metrics()
	cpu0, _ := cpuTime()
	start := time.Now()
	measuring.Store(true)
	progress(stderr, cfg, &done, o.duration)
	measuring.Store(false)
	elapsed := time.Since(start)
	cpu1, _ := cpuTime()
	m1 := lead.Metrics()
	stop.Store(true)
	wg.Wait()
	writes := slices.Concat(lat...)
	reads := slices.Concat(readLat...)
	slices.Sort(writes)
	slices.Sort(reads)
	res.Ops = len(writes) + len(reads)
	res.Errors = int(errs.Load())
	res.OpsPerSec = float64(res.Ops) / elapsed.Seconds()
	res.MBPerSec = float64(len(writes)*cfg.Size) / elapsed.Seconds() / 1e6
	all := slices.Concat(writes, reads)
	slices.Sort(all)
	res.P50, res.P90, res.P99, res.P999 = pct(all, 0.5), pct(all, 0.9), pct(all, 0.99), pct(all, 0.999)
	if len(all) > 0 {
		res.Max = all[len(all)-1]
	}
	res.ReadP50 = pct(reads, 0.5)
	if f := m1.Fsyncs - m0.Fsyncs; f > 0 {
		res.FsyncsPerSec = float64(f) / elapsed.Seconds()
		res.EntriesPerFsync = float64(m1.EntriesWritten-m0.EntriesWritten) / float64(f)
	}
	if e := m1.EntriesWritten - m0.EntriesWritten; e > 0 {
		res.BytesPerEntry = float64(m1.BytesWritten-m0.BytesWritten) / float64(e)
	}
	if res.Ops > 0 {
		res.CPUPer1000Ops = (cpu1 - cpu0).Seconds() / float64(res.Ops) * 1000
	}
	res.PeakRSSMiB = peakRSSMiB()
	return res, nil
}

// progress prints a live line on stderr until d has passed.
func progress(stderr io.Writer, cfg config, done *atomic.Int64, d time.Duration) {
	end := time.Now().Add(d)
	t := time.NewTicker(time.Second)
	defer t.Stop()
	start := time.Now()
	for {
		left := time.Until(end)
		if left <= 0 {
			break
		}
		select {
		case <-t.C:
		case <-time.After(left):
		}
		n := done.Load()
		fmt.Fprintf(stderr, "\r%-6s size %5d clients %4d: %8.0f ops/s  %3.0fs left ", cfg.Sync, cfg.Size, cfg.Clients,
			float64(n)/time.Since(start).Seconds(), max(0, time.Until(end).Seconds()))
	}
	fmt.Fprintln(stderr)
}

func pct(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(q * float64(len(sorted)))
	return sorted[min(i, len(sorted)-1)]
}

func cpuTime() (time.Duration, error) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0, err
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), nil
}

func peakRSSMiB() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return float64(ru.Maxrss) / 1024 // kilobytes on Linux
}

func printTable(w io.Writer, rs []result, cal calibration) {
	fmt.Fprintf(w, "\n%-6s %6s %7s %10s %8s %9s %9s %9s %9s %9s %8s %9s %9s %10s %8s\n",
		"sync", "size", "clients", "ops/s", "MB/s", "p50", "p90", "p99", "p99.9", "max", "fsync/s", "ent/fsync", "B/entry", "cpu-s/1k", "rss-MiB")
	for _, r := range rs {
		fmt.Fprintf(w, "%-6s %6d %7d %10.0f %8.2f %9s %9s %9s %9s %9s %8.0f %9.1f %9.1f %10.3f %8.0f\n",
			r.Sync, r.Size, r.Clients, r.OpsPerSec, r.MBPerSec, us(r.P50), us(r.P90), us(r.P99), us(r.P999), us(r.Max),
			r.FsyncsPerSec, r.EntriesPerFsync, r.BytesPerEntry, r.CPUPer1000Ops, r.PeakRSSMiB)
		if r.Clients == 1 && r.Sync == "each" {
			fmt.Fprintf(w, "       one client: p50 %s against the floor %s (%.2fx), %s on one shared disk (%.2fx)\n", us(r.P50),
				us(cal.Floor()), float64(r.P50)/float64(max(cal.Floor(), 1)),
				us(cal.SharedFloor()), float64(r.P50)/float64(max(cal.SharedFloor(), 1)))
		}
		if r.Errors > 0 {
			fmt.Fprintf(w, "       %d operations failed\n", r.Errors)
		}
	}
}

func us(d time.Duration) string {
	switch {
	case d >= 10*time.Millisecond:
		return fmt.Sprintf("%.1fms", float64(d)/1e6)
	case d >= time.Millisecond:
		return fmt.Sprintf("%.2fms", float64(d)/1e6)
	}
	return fmt.Sprintf("%dµs", d.Microseconds())
}
