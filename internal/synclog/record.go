// Package synclog records, in builds with the tag stepraft_synclog, what
// each fsync the log and the snapshotter make puts on disk for sure, so
// that a test can cut a killed process's files back to what a power cut
// would have left (package internal/powercut). Without the tag, and on
// systems other than Linux, every function is an empty one the compiler
// removes.
//
// The environment variable STEPRAFT_SYNCLOG names a directory; each
// process appends to a file of its own there, one JSON Record per line,
// written with one write(2) after the fsync returned and before the caller
// goes on: a process killed in between leaves a log that says less is
// durable than is, never more (a kill in the middle of a write leaves a
// torn last line, which readers skip). With the variable unset nothing is
// recorded.
package synclog

// EnvVar names the directory of the logs.
const EnvVar = "STEPRAFT_SYNCLOG"

// Suffix ends the name of every log file in that directory. The name
// starts with the wall-clock time the process opened it, in Unix
// nanoseconds and 20 digits, so that the names sort in the order the
// processes came.
const Suffix = ".synclog"

// Record kinds.
const (
	// KindData: the file's first Size bytes are on disk. It is only
	// appended to (or cut shorter, with a new record), so its content
	// past Size is what was not synced. Head and Tail (up to 32 bytes
	// from the start, and up to 32 ending at Size) tell it from a later
	// file that took its inode number.
	KindData = "data"
	// KindContent: the file is rewritten in place; Content is what is on
	// disk.
	KindContent = "content"
	// KindDir: the names in the directory are on disk; Names maps each
	// regular file's name to its inode number.
	KindDir = "dir"
)

// Record is one line of the log.
type Record struct {
	Kind    string            `json:"k"`
	Path    string            `json:"p"` // for reading the log; files are matched by Dev and Ino
	Dev     uint64            `json:"d"`
	Ino     uint64            `json:"i"`
	Size    int64             `json:"s,omitempty"`
	Head    []byte            `json:"h,omitempty"`
	Tail    []byte            `json:"t,omitempty"`
	Content []byte            `json:"c,omitempty"`
	Names   map[string]uint64 `json:"n,omitempty"`
}

// FingerprintLen is how many bytes Head and Tail hold at most.
const FingerprintLen = 32

// Which says which segment files Segments records.
type Which int

const (
	// Older: every segment but the newest (tidwall/wal fsyncs a segment
	// when it rolls to the next one).
	Older Which = iota
	// All segments: the newest was just fsynced, or written whole and
	// fsynced by a truncation of the back.
	All
	// OlderAndFirst: every segment but the newest, and the first, which a
	// truncation of the front wrote whole and fsynced (it may be the
	// newest).
	OlderAndFirst
)
