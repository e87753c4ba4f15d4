// Command compare runs the same workload on stepraft, hashicorp/raft and
// dragonboat, side by side, and reports ratios from the same run: three
// nodes in one process on loopback TCP, each with a log directory of its
// own, fsync before acknowledging, N clients each proposing a command of S
// bytes to the leader and waiting until it is applied. Each library's
// cluster runs in a child process of this binary (compare -child LIB), so
// peak RSS and CPU are per library and the heaps are apart. With -core it
// compares stepraft's core with etcd's raft (RawNode) in memory instead;
// with -strace it counts fsyncs per committed operation. See README.md.
//
//	go run . -clients 1,16,256 -size 16 -duration 5s -rounds 3
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// options are the command's flags.
type options struct {
	clients  []int
	sizes    []int
	duration time.Duration
	warmup   time.Duration
	rounds   int
	libs     []string
	jsonOut  string
	dir      string

	child      string // run one library's cluster in this process and print one JSON line
	cpuprofile string // -child: write a CPU profile of the measured window to this file

	core        bool
	coreEntries int
	coreBatches []int
	coreSize    int

	strace         bool
	straceDuration time.Duration
	straceClients  int
	straceSize     int
}

var allLibs = []string{"stepraft", "hashicorp", "dragonboat"}

func parseFlags(args []string, stderr io.Writer) (options, error) {
	fs := flag.NewFlagSet("compare", flag.ContinueOnError)
	fs.SetOutput(stderr)
	clients := fs.String("clients", "1,16,256", "concurrent clients, comma-separated")
	sizes := fs.String("size", "16,1024", "command sizes in bytes, comma-separated")
	libs := fs.String("libs", strings.Join(allLibs, ","), "libraries: stepraft, hashicorp, dragonboat (comma-separated)")
	coreBatches := fs.String("core-batch", "1,64", "-core: proposals per batch, comma-separated")
	var o options
	fs.DurationVar(&o.duration, "duration", 5*time.Second, "measured time per run")
	fs.DurationVar(&o.warmup, "warmup", time.Second, "unmeasured time before it")
	fs.IntVar(&o.rounds, "rounds", 3, "runs of each library per configuration (the order rotates between rounds)")
	fs.StringVar(&o.jsonOut, "json", "", "also write the results as JSON to this file")
	fs.StringVar(&o.dir, "dir", "", "directory for the log directories (default: a temporary one)")
	fs.StringVar(&o.child, "child", "", "internal: run LIB's cluster in this process and print one JSON result line")
	fs.StringVar(&o.cpuprofile, "cpuprofile", "", "with -child: write a CPU profile of the measured window to this file")
	fs.BoolVar(&o.core, "core", false, "compare stepraft core with etcd raft RawNode in memory instead")
	fs.IntVar(&o.coreEntries, "core-entries", 200000, "-core: entries committed per run")
	fs.IntVar(&o.coreSize, "core-size", 128, "-core: entry payload bytes")
	fs.BoolVar(&o.strace, "strace", false, "count fsync/fdatasync per committed operation of each library under strace")
	fs.DurationVar(&o.straceDuration, "strace-duration", 3*time.Second, "-strace: measured time of each traced run")
	fs.IntVar(&o.straceClients, "strace-clients", 16, "-strace: clients of each traced run")
	fs.IntVar(&o.straceSize, "strace-size", 16, "-strace: command size of each traced run")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	var err error
	if o.clients, err = intList(*clients); err != nil {
		return o, fmt.Errorf("-clients: %w", err)
	}
	if o.sizes, err = intList(*sizes); err != nil {
		return o, fmt.Errorf("-size: %w", err)
	}
	if o.coreBatches, err = intList(*coreBatches); err != nil {
		return o, fmt.Errorf("-core-batch: %w", err)
	}
	for _, l := range strings.Split(*libs, ",") {
		l = strings.TrimSpace(l)
		if !known(l) {
			return o, fmt.Errorf("-libs: unknown library %q (want %s)", l, strings.Join(allLibs, ", "))
		}
		o.libs = append(o.libs, l)
	}
	if o.child != "" && !known(o.child) {
		return o, fmt.Errorf("-child: unknown library %q", o.child)
	}
	if o.duration <= 0 || o.warmup < 0 || o.rounds <= 0 || o.coreEntries <= 0 || o.coreSize <= 0 {
		return o, errors.New("-duration, -rounds, -core-entries and -core-size must be positive, -warmup not negative")
	}
	return o, nil
}

func known(lib string) bool {
	for _, l := range allLibs {
		if l == lib {
			return true
		}
	}
	return false
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
		fmt.Fprintln(stderr, "compare:", err)
		return 2
	}
	switch {
	case o.child != "":
		err = runChild(o, stdout)
	case o.core:
		err = runCore(o, stdout, stderr)
	case o.strace:
		err = runStrace(o, stdout, stderr)
	default:
		err = runCompare(o, stdout, stderr)
	}
	if err != nil {
		fmt.Fprintln(stderr, "compare:", err)
		return 1
	}
	return 0
}
