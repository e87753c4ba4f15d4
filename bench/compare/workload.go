package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// cluster is one library's three nodes, started and led.
type cluster interface {
	// propose hands cmd to the leader and returns once it is applied there.
	propose(ctx context.Context, cmd []byte) error
	stop()
}

// starters start each library's cluster in dir.
var starters = map[string]func(dir string) (cluster, error){
	"stepraft":   startStepraft,
	"hashicorp":  startHashicorp,
	"dragonboat": startDragonboat,
}

// childResult is what a child prints: one JSON line.
type childResult struct {
	Lib      string
	Clients  int
	Size     int
	Ops      int     // measured operations
	Seconds  float64 // measured time
	TotalOps int     // successful operations since the cluster started, warm-up included
	P50, P99 time.Duration
	Errors   int
	Startup  time.Duration // from start until a leader took the first proposal
	// PeakRSSMiB is the child's own peak resident set (VmHWM), read before
	// it exits: the rusage a parent gets for a child started with vfork
	// counts the parent's pages too.
	PeakRSSMiB float64 `json:",omitempty"`
	// DiskBytes is what the child caused to be written to storage during
	// the measured window (write_bytes of /proc/self/io: pages it dirtied,
	// counted when dirtied); -1 where that is not available.
	DiskBytes int64
}

// ioWriteBytes returns write_bytes of /proc/self/io, or -1.
func ioWriteBytes() int64 {
	var n int64
	if rest, ok := procField("/proc/self/io", "write_bytes:"); ok {
		if _, err := fmt.Sscan(rest, &n); err == nil {
			return n
		}
	}
	return -1
}

// vmHWM returns this process's peak resident set in MiB, or 0 where
// /proc/self/status does not tell.
func vmHWM() float64 {
	var kb float64
	if rest, ok := procField("/proc/self/status", "VmHWM:"); ok {
		if _, err := fmt.Sscanf(rest, "%f kB", &kb); err == nil {
			return kb / 1024
		}
	}
	return 0
}

// procField returns the rest of the line of path that starts with key,
// trimmed, or false.
func procField(path, key string) (string, bool) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", false
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, key); ok {
			return strings.TrimSpace(rest), true
		}
	}
	return "", false
}

// freeAddr returns a loopback address nobody listens on (for now).
func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// runChild starts o.child's cluster, drives it and prints the result.
func runChild(o options, stdout io.Writer) error {
	if len(o.clients) != 1 || len(o.sizes) != 1 {
		return fmt.Errorf("-child takes one -clients and one -size")
	}
	dir := o.dir
	if dir == "" {
		d, err := os.MkdirTemp("", "compare-"+o.child+"-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(d)
		dir = d
	}
	res, err := drive(o.child, filepath.Join(dir, o.child), o.clients[0], o.sizes[0], o.warmup, o.duration, o.cpuprofile)
	if err != nil {
		return err
	}
	res.PeakRSSMiB = vmHWM()
	b, err := json.Marshal(res)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(stdout, "%s\n", b)
	return err
}

// drive runs the workload on lib's cluster: clients proposing size-byte
// commands, measured for d after warmup.
// With profile set, the measured window's CPU profile is written there.
func drive(lib, dir string, clients, size int, warmup, d time.Duration, profile string) (childResult, error) {
	res := childResult{Lib: lib, Clients: clients, Size: size}
	t0 := time.Now()
	c, err := starters[lib](dir)
	if err != nil {
		return res, fmt.Errorf("%s: start: %w", lib, err)
	}
	defer c.stop()
	cmd := make([]byte, size)
	for i := range cmd {
		cmd[i] = byte('a' + i%26)
	}
	// The first proposal waits out the election (each start function
	// returns once a leader is known, but a leader may still refuse until
	// it has committed an entry of its term).
	for deadline := time.Now().Add(30 * time.Second); ; {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err := c.propose(ctx, cmd)
		cancel()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			return res, fmt.Errorf("%s: first proposal: %w", lib, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	res.Startup = time.Since(t0)

	var measuring, stop atomic.Bool
	var errs, total atomic.Int64
	lat := make([][]time.Duration, clients)
	var wg sync.WaitGroup
	for w := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				t := time.Now()
				err := c.propose(ctx, cmd)
				el := time.Since(t)
				cancel()
				if err == nil {
					total.Add(1)
				}
				if !measuring.Load() {
					continue
				}
				if err != nil {
					errs.Add(1)
					continue
				}
				lat[w] = append(lat[w], el)
			}
		}()
	}
	time.Sleep(warmup)
	if profile != "" {
		f, err := os.Create(profile)
		if err != nil {
			return res, err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return res, err
		}
	}
	io0 := ioWriteBytes()
	start := time.Now()
	measuring.Store(true)
	time.Sleep(d)
	measuring.Store(false)
	if profile != "" {
		pprof.StopCPUProfile()
	}
	elapsed := time.Since(start)
	res.DiskBytes = -1
	if io1 := ioWriteBytes(); io0 >= 0 && io1 >= 0 {
		res.DiskBytes = io1 - io0
	}
	stop.Store(true)
	wg.Wait()
	all := slices.Concat(lat...)
	slices.Sort(all)
	res.Ops = len(all)
	res.Seconds = elapsed.Seconds()
	res.TotalOps = int(total.Load()) + 1 // and the first proposal
	res.Errors = int(errs.Load())
	res.P50, res.P99 = pct(all, 0.5), pct(all, 0.99)
	return res, nil
}

func pct(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[min(int(q*float64(len(sorted))), len(sorted)-1)]
}
