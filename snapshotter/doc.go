// Package snapshotter stores Raft snapshots as files, one per snapshot,
// named <term>-<index>.snap (16 lowercase hex digits each, so that names
// sort), in a directory that one Store owns.
//
// A snapshot is a Meta (index, term, configuration, member addresses, body
// length) and a body of any length, streamed in and out through io.Writer
// and io.Reader: a state machine larger than memory can be saved, sent and
// restored, and the package holds a few hundred KiB of buffers whatever
// the body's size.
//
// # Guarantees
//
//   - Save and Pending.Commit write a temp file in the directory, fsync it,
//     rename it to its final name and fsync the directory before they
//     return. Once they return, a power failure loses nothing; before, it
//     leaves at most a temp file, which the next Open removes. A failed
//     save leaves the snapshots that were there untouched.
//   - The header and the body each carry a CRC32C; a file's length must be
//     exactly what its header says. Load returns the newest snapshot whose
//     header and body verify, skipping damaged ones (and logging each at
//     Warn), so a damaged newest snapshot falls back to the one before.
//   - A body reader (from Load, OpenSnapshot or OpenFile) checks the body's
//     CRC and length when it reaches the end, and returns an error wrapping
//     ErrCorrupt instead of io.EOF if they are wrong: read to io.EOF before
//     trusting what was read.
//   - After a save, only the newest Options.Keep snapshots whose headers
//     verify are kept; older files, damaged or not, are removed. A host
//     compacts its log no further than the oldest snapshot List reports,
//     so falling back to it never leaves a gap.
//   - Decoding a header checks every length and count against a hard limit
//     and against the bytes there are before it allocates, so hostile
//     files cannot make it allocate more than a small multiple of their
//     size. Versions it does not know are refused (ErrVersion).
//
// "Newest" orders snapshots by index, then term.
//
// A Store is safe for concurrent use. Readers it returns stay valid after
// the file is purged or the Store closed (on Unix an open file outlives its
// name); the caller closes them.
//
// The file format is described in format.go and README.md.
package snapshotter
