//go:build !stepraft_synclog || !linux

package synclog

import "os"

func File(*os.File)                  {}
func FileInPlace(*os.File)           {}
func Dir(*os.File)                   {}
func Segments(string, string, Which) {}
