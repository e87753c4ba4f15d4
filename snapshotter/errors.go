package snapshotter

import "errors"

var (
	// ErrNoSnapshot means there is no snapshot to load or open: the
	// directory holds none, none of them verifies, or the one asked for
	// is not there.
	ErrNoSnapshot = errors.New("snapshotter: no snapshot")
	// ErrCorrupt means a snapshot file is damaged: its name, header, size,
	// body or trailer is not what this package writes. The error says which
	// file and what is wrong.
	ErrCorrupt = errors.New("snapshotter: corrupt snapshot")
	// ErrVersion means a snapshot file has a format version this build
	// does not read (it was written by a later version).
	ErrVersion = errors.New("snapshotter: unsupported format version")
	// ErrMeta means Save or Create was given a Meta that cannot be stored
	// (index or term 0, a member with ID 0, a list or address over its
	// limit).
	ErrMeta = errors.New("snapshotter: invalid snapshot meta")
	// ErrOptions is wrapped by every error from Options.Validate.
	ErrOptions = errors.New("snapshotter: invalid options")
	// ErrClosed means the Store, a Pending snapshot or a body reader was
	// used after it was closed, committed or aborted.
	ErrClosed = errors.New("snapshotter: closed")
	// ErrLocked means another Store, in this process or another, has the
	// directory open.
	ErrLocked = errors.New("snapshotter: directory in use")
)

// isDamage reports whether err says a file cannot be used (as opposed to an
// I/O failure, which says the machine is in trouble).
func isDamage(err error) bool {
	return errors.Is(err, ErrCorrupt) || errors.Is(err, ErrVersion)
}
