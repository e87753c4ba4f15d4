package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
)

// syncCalls are the syscalls that -strace counts.
var syncCalls = []string{"fsync", "fdatasync", "sync_file_range", "msync"}

// runStrace runs each library's child once under strace -f -c and prints
// the sync calls per committed operation (all three nodes together, the
// whole life of the child: start-up and warm-up included, and so are their
// operations).
func runStrace(o options, stdout, stderr io.Writer) error {
	st, err := exec.LookPath("strace")
	if err != nil {
		return fmt.Errorf("-strace needs strace on the PATH (apt-get install -y strace): %w", err)
	}
	dir, cleanup, err := workDir(o.dir)
	if err != nil {
		return err
	}
	defer cleanup()
	// --seccomp-bpf stops the child only at the traced syscalls, so the
	// others run at full speed; older strace lacks it.
	seccomp := exec.Command(st, "--seccomp-bpf", "-f", "-c", "-e", "trace=fsync", "-o", os.DevNull, "true").Run() == nil
	fmt.Fprintf(stdout, "strace: %d clients, %d-byte commands, %v after %v warm-up; sync calls of the whole child (3 nodes, start-up included) per committed operation\n",
		o.straceClients, o.straceSize, o.straceDuration, o.warmup)
	fmt.Fprintf(stdout, "\n%-10s %9s %9s %9s %9s %10s %10s %12s\n", "library", "ops", "fsync", "fdatasync", "sfr", "msync", "ops/s", "(f+fd)/op")
	for _, lib := range o.libs {
		out := filepath.Join(dir, lib+".strace")
		wrap := []string{st, "-f", "-c", "-e", "trace=" + strings.Join(syncCalls, ","), "-o", out}
		if seccomp {
			wrap = append(wrap[:1], append([]string{"--seccomp-bpf"}, wrap[1:]...)...)
		}
		d := filepath.Join(dir, lib)
		cr, err := spawn(lib, o.straceClients, o.straceSize, o.warmup, o.straceDuration, d, wrap, stderr)
		if err != nil {
			return err
		}
		counts, err := parseStraceSummary(out)
		if err != nil {
			return err
		}
		f := counts["fsync"] + counts["fdatasync"]
		fmt.Fprintf(stdout, "%-10s %9d %9d %9d %9d %10d %10.0f %12.2f\n", lib, cr.TotalOps, counts["fsync"], counts["fdatasync"],
			counts["sync_file_range"], counts["msync"], cr.OpsPerSec, float64(f)/float64(max(cr.TotalOps, 1)))
	}
	fmt.Fprintln(stdout, "(ops/s is of the measured part under strace; sfr = sync_file_range)")
	return nil
}

// parseStraceSummary reads the calls column of an strace -c table.
func parseStraceSummary(path string) (map[string]int, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	counts := map[string]int{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) < 5 {
			continue
		}
		name := fs[len(fs)-1]
		for _, c := range syncCalls {
			if name == c {
				n, err := strconv.Atoi(fs[3])
				if err != nil {
					return nil, fmt.Errorf("strace summary %s: %q", path, sc.Text())
				}
				counts[c] = n
			}
		}
	}
	return counts, sc.Err()
}
