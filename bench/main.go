// Command bench measures a stepraft cluster: three nodes on loopback TCP,
// each with a real wal directory, driven by concurrent clients proposing
// commands (and, with -reads, making linearizable reads) for a fixed time
// after a warm-up. For each combination of clients, command size and sync
// policy it reports throughput, latency percentiles, fsyncs, CPU and
// memory; see bench/README.md. Each configuration runs in fresh child
// processes of this binary: one holding the three nodes, or with -procs
// one per node (child.go describes the protocol).
//
//	go run ./bench -clients 1,16,256 -size 16,128,1024 -sync each -duration 10s
//	go run ./bench -procs -clients 1,256 -size 16 -sync each
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/stepraft/stepraft/node"
	"github.com/stepraft/stepraft/wal"
)

func main() {
	if isChild() {
		os.Exit(childMain(os.Stdin, os.Stdout, os.Stderr))
	}
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// options are the command's flags.
type options struct {
	clients  []int
	sizes    []int
	syncs    []string
	maxBatch int
	// snapEntries is node.Config.SnapshotEntries (0: node's default).
	snapEntries uint64
	duration    time.Duration
	warmup      time.Duration
	reads       float64
	dir         string
	jsonOut     string
	svgOut      string
	tick        time.Duration
	procs       bool
	// cpuProfile and trace are directories for CPU profiles and
	// execution traces, or empty.
	cpuProfile string
	trace      string
	// leaderTimeout bounds the wait for the three nodes to agree on a
	// leader (not a flag: tests shorten it).
	leaderTimeout time.Duration
}

func parseFlags(args []string, stderr io.Writer) (options, error) {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	clients := fs.String("clients", "1,16,256", "concurrent clients, comma-separated")
	sizes := fs.String("size", "16,128,1024", "command sizes in bytes, comma-separated")
	syncs := fs.String("sync", "each", "sync policies: each, interval, never (comma-separated)")
	o := options{leaderTimeout: 20 * time.Second}
	fs.IntVar(&o.maxBatch, "max-batch", node.DefaultMaxBatchBytes, "node MaxBatchBytes")
	fs.Uint64Var(&o.snapEntries, "snapshot-entries", 0, fmt.Sprintf("node SnapshotEntries: applied entries between snapshots (0: node's default, %d)", node.DefaultSnapshotEntries))
	fs.DurationVar(&o.duration, "duration", 10*time.Second, "measured time per configuration")
	fs.DurationVar(&o.warmup, "warmup", 2*time.Second, "unmeasured time before it")
	fs.Float64Var(&o.reads, "reads", 0, "fraction of operations that are linearizable reads")
	fs.StringVar(&o.dir, "dir", "", "directory for the wal directories (default: a temporary one)")
	fs.StringVar(&o.jsonOut, "json", "", "also write the results as JSON to this file")
	fs.StringVar(&o.svgOut, "svg", "", "also draw throughput against p99 latency per sync policy to this SVG file")
	fs.DurationVar(&o.tick, "tick", 100*time.Millisecond, "node tick interval")
	fs.StringVar(&o.cpuProfile, "cpuprofile", "", "write a CPU profile of each configuration's measured window into this directory (one file per process)")
	fs.StringVar(&o.trace, "trace", "", "write an execution trace of each configuration's measured window into this directory (one file per process; go tool trace)")
	fs.BoolVar(&o.procs, "procs", false, "run each node in its own process (default: one process holds the three)")
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
		if _, err := wal.ParseSyncPolicy(s); err != nil {
			return o, fmt.Errorf("-sync: %w", err)
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
	stderr = &lockedWriter{w: stderr} // the children's stderr comes here too
	dir := o.dir
	if dir == "" {
		d, err := os.MkdirTemp("", "stepraft-bench-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(d)
		dir = d
	}
	for _, d := range []struct {
		flag string
		dir  *string
	}{{"cpuprofile", &o.cpuProfile}, {"trace", &o.trace}} {
		if *d.dir == "" {
			continue
		}
		abs, err := filepath.Abs(*d.dir)
		if err == nil {
			err = os.MkdirAll(abs, 0o755)
		}
		if err != nil {
			return fmt.Errorf("-%s: %w", d.flag, err)
		}
		*d.dir = abs
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
				cfg := config{Sync: s, Size: size, Clients: clients, MaxBatch: o.maxBatch, SnapshotEntries: o.snapEntries, Reads: o.reads, Procs: o.procs}
				r, err := measure(cfg, o, filepath.Join(dir, fmt.Sprintf("%s-%d-%d", s, size, clients)), stderr)
				if err != nil {
					return fmt.Errorf("%+v: %w", cfg, err)
				}
				results = append(results, r)
			}
		}
	}
	printTable(stdout, results, cal, o.procs)
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
	// SnapshotEntries is node.Config.SnapshotEntries; 0 is node's default.
	SnapshotEntries uint64 `json:",omitempty"`
	Reads           float64
	Procs           bool // each node in its own process
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
	// CPUPer1000Ops is CPU seconds per 1,000 operations over the measured
	// window, of the child process holding the three nodes and the
	// clients, or with Procs summed over the three.
	CPUPer1000Ops float64
	// PeakRSSMiB is the peak resident set of the child process holding
	// the three nodes and the clients (it ran this configuration only),
	// or with Procs the largest of the three: one node's (the leader's
	// process holds the clients too).
	PeakRSSMiB float64
	Errors     int
	// Processes are the child processes and what each measured.
	Processes []process
	// Rerun: leadership moved during the first run, and this is the
	// second.
	Rerun bool `json:",omitempty"`
}

// process is one child process of a configuration.
type process struct {
	Nodes      []node.NodeID
	CPUSeconds float64 // over the measured window
	PeakRSSMiB float64
}

func printTable(w io.Writer, rs []result, cal calibration, procs bool) {
	if procs {
		fmt.Fprintln(w, "\neach configuration in three fresh processes, one per node, the leader's running the clients:")
		fmt.Fprintln(w, "cpu-s/1k is the sum over the three, rss-MiB the largest peak of the three (one node's)")
	} else {
		fmt.Fprintln(w, "\neach configuration in a fresh process holding the three nodes and the clients:")
		fmt.Fprintln(w, "cpu-s/1k and rss-MiB (peak) are that process's")
	}
	fmt.Fprintf(w, "%-6s %6s %7s %10s %8s %9s %9s %9s %9s %9s %8s %9s %9s %10s %8s\n",
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
		if r.Rerun {
			fmt.Fprintln(w, "       leadership moved during the first run: this is the second")
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
