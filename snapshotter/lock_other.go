//go:build !(linux || darwin || freebsd || netbsd || openbsd || dragonfly)

package snapshotter

import "os"

// lockDir does nothing where flock is not available: there, the caller
// keeps a second Store out of the directory.
func lockDir(dir string) (*os.File, error) { return nil, nil }

func unlockDir(f *os.File) error { return nil }

// dirLocks says whether Open locks its directory on this platform.
const dirLocks = false
