//go:build !linux

package main

import (
	"runtime"
	"syscall"
)

// peakRSSKiB is this process's peak resident set size, from getrusage
// (which on some systems counts the parent's peak before the exec).
func peakRSSKiB() int64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	if runtime.GOOS == "darwin" || runtime.GOOS == "ios" {
		return ru.Maxrss / 1024 // bytes there
	}
	return ru.Maxrss // kilobytes
}
