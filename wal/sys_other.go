//go:build !unix

package wal

import (
	"fmt"
	"os"
)

// lockDir opens dir/LOCK. Without flock there is no lock between
// processes: keep one process per directory.
func lockDir(dir string) (*os.File, error) {
	f, err := os.OpenFile(dir+"/"+lockFile, os.O_RDWR|os.O_CREATE, 0o640)
	if err != nil {
		return nil, fmt.Errorf("wal: lock file: %w", err)
	}
	return f, nil
}
