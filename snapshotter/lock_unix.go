//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly

package snapshotter

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

// lockName is the file in a snapshot directory that a Store holds an
// exclusive flock on, so that a second Store (which would remove the
// first one's temp files) cannot open the directory.
const lockName = "LOCK"

// dirLocks says whether Open locks its directory on this platform.
const dirLocks = true

func lockDir(dir string) (*os.File, error) {
	f, err := os.OpenFile(filepath.Join(dir, lockName), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("snapshotter: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("%w: %s", ErrLocked, dir)
		}
		return nil, fmt.Errorf("snapshotter: locking %s: %w", dir, err)
	}
	return f, nil
}

// unlockDir releases the lock (closing the file releases the flock).
func unlockDir(f *os.File) error {
	if err := f.Close(); err != nil {
		return fmt.Errorf("snapshotter: %w", err)
	}
	return nil
}
