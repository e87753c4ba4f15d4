//go:build !linux

package wal

import "os"

// fdatasync flushes f; where fdatasync is missing, fsync does the same
// and more.
func fdatasync(f *os.File) error { return f.Sync() }
