//go:build stepraft_synclog && linux

package synclog

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"syscall"
	"time"
)

var (
	openOnce sync.Once
	mu       sync.Mutex
	out      *os.File // nil when EnvVar is unset
)

func logFile() *os.File {
	openOnce.Do(func() {
		dir := os.Getenv(EnvVar)
		if dir == "" {
			return
		}
		name := fmt.Sprintf("%020d-%d%s", time.Now().UnixNano(), os.Getpid(), Suffix)
		f, err := os.OpenFile(filepath.Join(dir, name), os.O_WRONLY|os.O_APPEND|os.O_CREATE|os.O_EXCL, 0o644)
		if err != nil {
			panic(fmt.Sprintf("synclog: %v", err))
		}
		out = f
	})
	return out
}

// write appends r with one write(2). A failure panics: a test relying on
// the log must not go on with a log that says less than happened.
func write(r Record) {
	mu.Lock()
	defer mu.Unlock()
	b, err := json.Marshal(r)
	if err != nil {
		panic(fmt.Sprintf("synclog: %v", err))
	}
	b = append(b, '\n')
	if _, err := out.Write(b); err != nil {
		panic(fmt.Sprintf("synclog: %v", err))
	}
}

func ids(fi os.FileInfo) (dev, ino uint64) {
	st := fi.Sys().(*syscall.Stat_t)
	return uint64(st.Dev), st.Ino
}

func abs(path string) string {
	if p, err := filepath.Abs(path); err == nil {
		return p
	}
	return path
}

// data builds the KindData record of the file at path, as it is now.
func data(path string) Record {
	f, err := os.Open(path)
	if err != nil {
		panic(fmt.Sprintf("synclog: %v", err))
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		panic(fmt.Sprintf("synclog: %v", err))
	}
	r := Record{Kind: KindData, Path: abs(path), Size: fi.Size()}
	r.Dev, r.Ino = ids(fi)
	n := min(r.Size, FingerprintLen)
	r.Head, r.Tail = make([]byte, n), make([]byte, n)
	if _, err := f.ReadAt(r.Head, 0); err != nil && err != io.EOF {
		panic(fmt.Sprintf("synclog: %v", err))
	}
	if _, err := f.ReadAt(r.Tail, r.Size-n); err != nil && err != io.EOF {
		panic(fmt.Sprintf("synclog: %v", err))
	}
	return r
}

// File records that f's content is on disk: call it once f.Sync (or
// fdatasync) returned. f is only appended to, or written whole.
func File(f *os.File) {
	if logFile() == nil {
		return
	}
	write(data(f.Name()))
}

// FileInPlace records that f's content is on disk, for a file rewritten in
// place (the log's metadata slots): the content itself is recorded.
func FileInPlace(f *os.File) {
	if logFile() == nil {
		return
	}
	b, err := os.ReadFile(f.Name())
	if err != nil {
		panic(fmt.Sprintf("synclog: %v", err))
	}
	fi, err := os.Stat(f.Name())
	if err != nil {
		panic(fmt.Sprintf("synclog: %v", err))
	}
	r := Record{Kind: KindContent, Path: abs(f.Name()), Size: int64(len(b)), Content: b}
	r.Dev, r.Ino = ids(fi)
	write(r)
}

// Dir records that the names in directory d are on disk: call it once
// d.Sync returned.
func Dir(d *os.File) {
	if logFile() == nil {
		return
	}
	fi, err := os.Stat(d.Name())
	if err != nil {
		panic(fmt.Sprintf("synclog: %v", err))
	}
	des, err := os.ReadDir(d.Name())
	if err != nil {
		panic(fmt.Sprintf("synclog: %v", err))
	}
	r := Record{Kind: KindDir, Path: abs(d.Name()), Names: map[string]uint64{}}
	r.Dev, r.Ino = ids(fi)
	for _, de := range des {
		if !de.Type().IsRegular() {
			continue
		}
		info, err := de.Info()
		if err != nil {
			continue // removed meanwhile
		}
		_, r.Names[de.Name()] = ids(info)
	}
	write(r)
}

// Segments records, of the segment files of the tidwall/wal directory
// dir/sub, those that which says are on disk whole: tidwall/wal fsyncs a
// segment when it rolls to the next one, and writes a truncated segment
// whole and fsyncs it before renaming it into place.
func Segments(dir, sub string, which Which) {
	if logFile() == nil {
		return
	}
	edir := filepath.Join(dir, sub)
	des, err := os.ReadDir(edir)
	if err != nil {
		panic(fmt.Sprintf("synclog: %v", err))
	}
	var names []string
	for _, de := range des {
		if de.Type().IsRegular() && isSegmentName(de.Name()) {
			names = append(names, de.Name())
		}
	}
	sort.Strings(names)
	for i, name := range names {
		if i < len(names)-1 || which == All || (which == OlderAndFirst && i == 0) {
			write(data(filepath.Join(edir, name)))
		}
	}
}

func isSegmentName(name string) bool {
	if len(name) != 20 {
		return false
	}
	for _, c := range name {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}
