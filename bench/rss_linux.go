package main

import (
	"os"
	"strconv"
	"strings"
)

// peakRSSKiB is this process's peak resident set size, VmHWM in
// /proc/self/status. Not getrusage's ru_maxrss: Go starts a process with
// vfork and exec, and Linux carries the parent's peak over into the
// child's ru_maxrss at the exec, so a child's would be at least its
// parent's; VmHWM starts afresh with the exec's address space.
func peakRSSKiB() int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			n, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err == nil {
				return n
			}
		}
	}
	return 0
}
