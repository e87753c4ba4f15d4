package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"time"
)

// childRun is one child process's result (with its own peak RSS) and the
// CPU the parent measured of it from its rusage.
type childRun struct {
	childResult
	Round      int
	CPUSeconds float64 // user+system of the whole child: three nodes, clients, start-up
	OpsPerSec  float64
}

// summary is one library in one configuration: medians over rounds.
type summary struct {
	Lib              string
	Clients, Size    int
	OpsPerSec        float64
	P50, P99         time.Duration
	PeakRSSMiB       float64
	Errors           int
	OpsRatio         float64 `json:",omitempty"` // median over rounds of stepraft ops/s / this library's
	P99Ratio         float64 `json:",omitempty"` // median over rounds of stepraft p99 / this library's
	Runs             []childRun
	CPUMillisPerKOps float64 // median CPU seconds per 1,000 measured ops ×1000 (start-up included)
	// DiskBytesPerOp is the median over rounds of the bytes the child
	// caused to be written to storage in the measured window, per
	// measured op (all three nodes); -1 if unknown.
	DiskBytesPerOp float64
}

// spawn runs this binary as `-child lib` and parses its result line. With
// wrap, the command runs under wrap[0] wrap[1:]... (strace).
func spawn(lib string, clients, size int, warmup, d time.Duration, dir string, wrap []string, stderr io.Writer) (childRun, error) {
	var cr childRun
	exe, err := os.Executable()
	if err != nil {
		return cr, err
	}
	args := []string{"-child", lib, "-clients", fmt.Sprint(clients), "-size", fmt.Sprint(size),
		"-warmup", warmup.String(), "-duration", d.String(), "-dir", dir}
	name := exe
	if len(wrap) > 0 {
		name, args = wrap[0], append(append(wrap[1:], exe), args...)
	}
	ctx, cancel := context.WithTimeout(context.Background(), warmup+d+2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err = cmd.Run()
	if err != nil {
		tail := errb.String()
		if len(tail) > 2000 {
			tail = tail[len(tail)-2000:]
		}
		return cr, fmt.Errorf("%s child: %w\n%s", lib, err, tail)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &cr.childResult); err != nil {
		return cr, fmt.Errorf("%s child: bad result %q: %w", lib, out.String(), err)
	}
	if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		if cr.PeakRSSMiB == 0 {
			cr.PeakRSSMiB = float64(ru.Maxrss) / 1024 // kilobytes on Linux; counts the parent's pages too
		}
		cr.CPUSeconds = time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
	}
	if cr.Seconds > 0 {
		cr.OpsPerSec = float64(cr.Ops) / cr.Seconds
	}
	return cr, nil
}

func runCompare(o options, stdout, stderr io.Writer) error {
	dir, cleanup, err := workDir(o.dir)
	if err != nil {
		return err
	}
	defer cleanup()
	fmt.Fprintf(stdout, "machine: %d CPUs, %s/%s, %s; %d rounds of %v after %v warm-up, library order rotating\n",
		runtime.NumCPU(), runtime.GOOS, runtime.GOARCH, runtime.Version(), o.rounds, o.duration, o.warmup)
	var all []summary
	for _, size := range o.sizes {
		for _, clients := range o.clients {
			runs := map[string][]childRun{}
			for round := range o.rounds {
				order := slices.Clone(o.libs)
				k := round % len(order)
				order = append(order[k:], order[:k]...)
				for _, lib := range order {
					d := filepath.Join(dir, fmt.Sprintf("%s-%d-%d-%d", lib, size, clients, round))
					fmt.Fprintf(stderr, "size %5d clients %4d round %d: %-10s ", size, clients, round+1, lib)
					cr, err := spawn(lib, clients, size, o.warmup, o.duration, d, nil, stderr)
					os.RemoveAll(d)
					if err != nil {
						fmt.Fprintln(stderr, "failed")
						return err
					}
					cr.Round = round
					fmt.Fprintf(stderr, "%8.0f ops/s  p50 %-8s p99 %-8s rss %4.0f MiB\n", cr.OpsPerSec, us(cr.P50), us(cr.P99), cr.PeakRSSMiB)
					runs[lib] = append(runs[lib], cr)
				}
			}
			for _, lib := range o.libs {
				all = append(all, summarize(lib, clients, size, runs))
			}
		}
	}
	printCompare(stdout, all)
	if o.jsonOut != "" {
		b, _ := json.MarshalIndent(all, "", "  ")
		return os.WriteFile(o.jsonOut, b, 0o644)
	}
	return nil
}

func workDir(d string) (string, func(), error) {
	if d != "" {
		return d, func() {}, os.MkdirAll(d, 0o755)
	}
	t, err := os.MkdirTemp("", "stepraft-compare-")
	if err != nil {
		return "", nil, err
	}
	return t, func() { os.RemoveAll(t) }, nil
}

func summarize(lib string, clients, size int, runs map[string][]childRun) summary {
	rs := runs[lib]
	s := summary{Lib: lib, Clients: clients, Size: size, Runs: rs}
	var ops, rss, cpu, disk []float64
	var p50, p99 []time.Duration
	for _, r := range rs {
		ops = append(ops, r.OpsPerSec)
		rss = append(rss, r.PeakRSSMiB)
		p50 = append(p50, r.P50)
		p99 = append(p99, r.P99)
		s.Errors += r.Errors
		if r.Ops > 0 {
			cpu = append(cpu, r.CPUSeconds/float64(r.Ops)*1e6)
			if r.DiskBytes >= 0 {
				disk = append(disk, float64(r.DiskBytes)/float64(r.Ops))
			}
		}
	}
	s.OpsPerSec, s.PeakRSSMiB, s.CPUMillisPerKOps = median(ops), median(rss), median(cpu)
	s.DiskBytesPerOp = -1
	if len(disk) > 0 {
		s.DiskBytesPerOp = median(disk)
	}
	s.P50, s.P99 = median(p50), median(p99)
	if lib != "stepraft" {
		if sr := runs["stepraft"]; len(sr) == len(rs) {
			var or, pr []float64
			for i := range rs {
				if rs[i].OpsPerSec > 0 && rs[i].P99 > 0 {
					or = append(or, sr[i].OpsPerSec/rs[i].OpsPerSec)
					pr = append(pr, float64(sr[i].P99)/float64(rs[i].P99))
				}
			}
			s.OpsRatio, s.P99Ratio = median(or), median(pr)
		}
	}
	return s
}

func median[T int | int64 | float64 | time.Duration](v []T) T {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func printCompare(w io.Writer, all []summary) {
	fmt.Fprintf(w, "\n%5s %7s %-10s %9s %9s %9s %8s %10s %9s %15s %15s\n",
		"size", "clients", "library", "ops/s", "p50", "p99", "rss-MiB", "cpu-ms/1k", "disk-B/op", "stepraft/x ops", "stepraft/x p99")
	for _, s := range all {
		ratio := func(r float64) string {
			if s.Lib == "stepraft" || r == 0 {
				return "-"
			}
			return fmt.Sprintf("%.2fx", r)
		}
		disk := "-"
		if s.DiskBytesPerOp >= 0 {
			disk = fmt.Sprintf("%.0f", s.DiskBytesPerOp)
		}
		fmt.Fprintf(w, "%5d %7d %-10s %9.0f %9s %9s %8.0f %10.0f %9s %15s %15s\n", s.Size, s.Clients, s.Lib, s.OpsPerSec,
			us(s.P50), us(s.P99), s.PeakRSSMiB, s.CPUMillisPerKOps, disk, ratio(s.OpsRatio), ratio(s.P99Ratio))
		if s.Errors > 0 {
			fmt.Fprintf(w, "      %d operations failed (all rounds)\n", s.Errors)
		}
	}
	fmt.Fprintln(w, "ops/s, p50, p99, rss and cpu are medians over rounds; the ratios are medians of per-round ratios")
	fmt.Fprintln(w, "(stepraft/x ops > 1: stepraft faster; stepraft/x p99 < 1: stepraft's tail lower)")
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
