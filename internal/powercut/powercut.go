// Package powercut emulates a power cut on the files of a killed process
// built with the tag stepraft_synclog: from the fsyncs that package
// internal/synclog recorded, it cuts each file back to what the disk is
// sure to hold, and removes the files whose names it is not sure to hold.
//
// The model of the disk:
//
//   - Data: a file holds what its last recorded fsync covered. A file that
//     is only appended to (a log segment, a snapshot) is cut to the length
//     it had then; a file rewritten in place (the log's metadata) gets the
//     content it had then, or keeps what the process wrote last with
//     Options.InPlaceAsWritten (its unsynced writes reached the disk
//     anyway, as the page cache may write them back at any time). A file
//     with no recorded fsync is emptied.
//   - Names: a file keeps its name if a recorded fsync of its directory
//     listed it, or listed another file under that name (a rename over a
//     name that was on disk: the old file is gone, so the new one), or —
//     unless Options.StrictNames — if the file itself was fsynced (as
//     ext4 and XFS make a new file's name durable with its first fsync;
//     POSIX does not promise it). Other files are removed.
//   - tidwall/wal writes a truncated segment whole, fsyncs it under a
//     temporary name and renames it NAME.START or NAME.END: such a file is
//     kept whole. Its own fsyncs at a segment roll are recorded by the log
//     (synclog.Segments).
//   - Removals and directories are taken as they are: an unlinked file is
//     gone, and no directory is removed.
//
// After the cut, Cut replaces the process's logs with one that records
// every file left as on disk, so that the files can be cut again after
// the next run.
package powercut

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/stepraft/stepraft/internal/synclog"
)

// Options vary the model.
type Options struct {
	// StrictNames: a file's own fsync does not make its name durable;
	// only an fsync of its directory does.
	StrictNames bool
	// InPlaceAsWritten keeps files rewritten in place as the process left
	// them instead of as last fsynced.
	InPlaceAsWritten bool
}

// Change is what Cut did to one file.
type Change struct {
	Path string // relative to the root
	// Action is "kept", "cut" (to the synced length), "restored" (the
	// synced content of a file rewritten in place), "emptied" or
	// "removed".
	Action   string
	From, To int64 // sizes before and after
}

// Report lists what Cut did, file by file, in path order.
type Report struct{ Changes []Change }

// Dropped is how many bytes the cut took away (files removed included).
func (r Report) Dropped() int64 {
	var n int64
	for _, c := range r.Changes {
		if c.From > c.To {
			n += c.From - c.To
		}
	}
	return n
}

// String summarizes the changes other than "kept".
func (r Report) String() string {
	var parts []string
	for _, c := range r.Changes {
		if c.Action != "kept" {
			parts = append(parts, fmt.Sprintf("%s %s %d->%d", c.Action, c.Path, c.From, c.To))
		}
	}
	if len(parts) == 0 {
		return "nothing lost"
	}
	return strings.Join(parts, ", ")
}

type fileKey struct{ dev, ino uint64 }

func keyOf(fi os.FileInfo) fileKey {
	st := fi.Sys().(*syscall.Stat_t)
	return fileKey{uint64(st.Dev), st.Ino}
}

// history is what the logs say about the files under a root.
type history struct {
	data    map[fileKey][]synclog.Record // in order
	content map[fileKey]synclog.Record   // the last
	dirs    map[fileKey]map[string]uint64
	logs    []string // the log files that hold them
}

// Cut applies a power cut to the files under root (all of them written by
// processes now dead), from the logs in logDir, and returns what it did.
func Cut(root, logDir string, opts Options) (Report, error) {
	root, err := filepath.Abs(root)
	if err != nil {
		return Report{}, err
	}
	h, err := readLogs(root, logDir)
	if err != nil {
		return Report{}, err
	}
	var rep Report
	inPlace := map[string]bool{} // files to record as rewritten in place
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		if !d.Type().IsRegular() {
			return fmt.Errorf("powercut: %s is not a regular file", path)
		}
		c, isInPlace, err := h.cut(root, path, opts)
		if err != nil {
			return err
		}
		if isInPlace && c.Action != "removed" {
			inPlace[path] = true
		}
		rep.Changes = append(rep.Changes, c)
		return nil
	})
	if err != nil {
		return rep, err
	}
	for _, l := range h.logs {
		if err := os.Remove(l); err != nil {
			return rep, fmt.Errorf("powercut: %w", err)
		}
	}
	return rep, writeBaseline(root, logDir, inPlace)
}

// readLogs reads every log in logDir, oldest first, keeping the records of
// files under root. A log must hold records of one root only.
func readLogs(root, logDir string) (*history, error) {
	h := &history{data: map[fileKey][]synclog.Record{}, content: map[fileKey]synclog.Record{},
		dirs: map[fileKey]map[string]uint64{}}
	names, err := filepath.Glob(filepath.Join(logDir, "*"+synclog.Suffix))
	if err != nil {
		return nil, err
	}
	slices.Sort(names) // the names start with the time, in 20 digits
	for _, name := range names {
		recs, err := readLog(name)
		if err != nil {
			return nil, err
		}
		mine, others := 0, 0
		for _, r := range recs {
			if under(root, r.Path) {
				mine++
			} else {
				others++
			}
		}
		switch {
		case mine == 0:
			continue
		case others > 0:
			return nil, fmt.Errorf("powercut: %s records files under %s and elsewhere", name, root)
		}
		h.logs = append(h.logs, name)
		for _, r := range recs {
			k := fileKey{r.Dev, r.Ino}
			switch r.Kind {
			case synclog.KindData:
				h.data[k] = append(h.data[k], r)
			case synclog.KindContent:
				h.content[k] = r
			case synclog.KindDir:
				h.dirs[k] = r.Names
			default:
				return nil, fmt.Errorf("powercut: %s: unknown record kind %q", name, r.Kind)
			}
		}
	}
	return h, nil
}

// readLog parses one log. Its last line may be torn (the process was
// killed while writing it): it is skipped; a bad line before it is an
// error.
func readLog(name string) ([]synclog.Record, error) {
	b, err := os.ReadFile(name)
	if err != nil {
		return nil, err
	}
	var out []synclog.Record
	lines := bytes.SplitAfter(b, []byte("\n"))
	for i, line := range lines {
		if len(line) == 0 {
			continue
		}
		var r synclog.Record
		err := json.Unmarshal(line, &r)
		if err == nil && line[len(line)-1] == '\n' {
			out = append(out, r)
			continue
		}
		if i == len(lines)-1 {
			break // torn
		}
		return nil, fmt.Errorf("powercut: %s: line %d: bad record: %v", name, i+1, err)
	}
	return out, nil
}

func under(root, path string) bool {
	return path == root || strings.HasPrefix(path, root+string(filepath.Separator))
}

// cut emulates the power cut on one file.
func (h *history) cut(root, path string, opts Options) (c Change, isInPlace bool, err error) {
	rel, _ := filepath.Rel(root, path)
	fi, err := os.Stat(path)
	if err != nil {
		return c, false, err
	}
	pfi, err := os.Stat(filepath.Dir(path))
	if err != nil {
		return c, false, err
	}
	k, name := keyOf(fi), filepath.Base(path)
	c = Change{Path: rel, From: fi.Size()}
	content, isInPlace := h.content[k]
	synced, err := h.syncedLength(path, k, fi.Size())
	if err != nil {
		return c, false, err
	}
	tidwallWhole := strings.HasSuffix(name, ".START") || strings.HasSuffix(name, ".END")
	named := tidwallWhole
	if names, ok := h.dirs[keyOf(pfi)]; ok {
		if _, ok := names[name]; ok {
			named = true
		}
	}
	if !opts.StrictNames && (isInPlace || synced >= 0) {
		named = true
	}
	switch {
	case !named:
		c.Action = "removed"
		return c, false, os.Remove(path)
	case tidwallWhole:
		c.Action, c.To = "kept", fi.Size()
		return c, false, nil
	case isInPlace && !opts.InPlaceAsWritten:
		cur, err := os.ReadFile(path)
		if err != nil {
			return c, false, err
		}
		c.Action, c.To = "restored", int64(len(content.Content))
		if bytes.Equal(cur, content.Content) {
			c.Action = "kept"
			return c, true, nil
		}
		return c, true, os.WriteFile(path, content.Content, fi.Mode().Perm())
	case isInPlace:
		c.Action, c.To = "kept", fi.Size()
		return c, true, nil
	}
	to := max(synced, 0)
	switch {
	case to == fi.Size():
		c.Action = "kept"
	case to == 0:
		c.Action = "emptied"
	default:
		c.Action = "cut"
	}
	c.To = to
	if to == fi.Size() {
		return c, false, nil
	}
	return c, false, os.Truncate(path, to)
}

// syncedLength returns the length of the file at path covered by its last
// recorded fsync, or -1 if none. A record counts only if the file still
// holds, at both ends of that length, the bytes it recorded: otherwise it
// was about another file that had the inode number before.
func (h *history) syncedLength(path string, k fileKey, size int64) (int64, error) {
	recs := h.data[k]
	if len(recs) == 0 {
		return -1, nil
	}
	for i := len(recs) - 1; i >= 0; i-- {
		r := recs[i]
		if r.Size > size {
			continue
		}
		head, tail, err := fingerprint(path, r.Size)
		if err != nil {
			return 0, err
		}
		if bytes.Equal(head, r.Head) && bytes.Equal(tail, r.Tail) {
			return r.Size, nil
		}
	}
	return -1, nil
}

// writeBaseline writes a log recording every file under root as on disk:
// whole, and named in its directory.
func writeBaseline(root, logDir string, inPlace map[string]bool) error {
	name := filepath.Join(logDir, fmt.Sprintf("%020d-cut%s", time.Now().UnixNano(), synclog.Suffix))
	f, err := os.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	w := bufio.NewWriter(f)
	enc := json.NewEncoder(w)
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := os.Stat(path)
		if err != nil {
			return err
		}
		k := keyOf(fi)
		r := synclog.Record{Path: path, Dev: k.dev, Ino: k.ino}
		switch {
		case d.IsDir():
			r.Kind, r.Names = synclog.KindDir, map[string]uint64{}
			des, err := os.ReadDir(path)
			if err != nil {
				return err
			}
			for _, de := range des {
				if de.Type().IsRegular() {
					info, err := de.Info()
					if err != nil {
						return err
					}
					r.Names[de.Name()] = keyOf(info).ino
				}
			}
		case inPlace[path]:
			b, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			r.Kind, r.Size, r.Content = synclog.KindContent, int64(len(b)), b
		default:
			r.Kind, r.Size = synclog.KindData, fi.Size()
			if r.Head, r.Tail, err = fingerprint(path, fi.Size()); err != nil {
				return err
			}
		}
		return enc.Encode(r)
	})
	if err == nil {
		err = w.Flush()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// fingerprint reads the first bytes of the file and the last ones before
// size, as synclog records them.
func fingerprint(path string, size int64) (head, tail []byte, err error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	n := min(size, synclog.FingerprintLen)
	head, tail = make([]byte, n), make([]byte, n)
	if _, err := f.ReadAt(head, 0); err != nil && !errors.Is(err, io.EOF) {
		return nil, nil, err
	}
	if _, err := f.ReadAt(tail, size-n); err != nil && !errors.Is(err, io.EOF) {
		return nil, nil, err
	}
	return head, tail, nil
}
