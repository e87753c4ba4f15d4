// Package wal is stepraft's durable raft log. A *Log implements
// core.Storage and persists what a core.Ready asks for with Save: entries
// (one tidwall/wal WriteBatch per Ready, a conflicting suffix removed
// first), the hard state, and the metadata of an installed snapshot.
// Compact removes entries up to a snapshot; SetSnapshot records one this
// node took.
//
// # On disk
//
// A directory holds a LOCK file (flock: a second process gets ErrLocked),
// a metadata file "meta" and the entry log "entries/" (tidwall/wal
// segments). Each entry is a record: a format version, a CRC32C, the index
// and term as varints, the type, and the data, written and read by hand
// (every length is checked before anything is allocated; format version 1,
// whose fields were msgpack, is still read). Every read verifies the
// checksum and the index. The metadata file has two slots,
// each with a magic number, a version, a sequence number and a CRC32C,
// written in turn (see meta.go): hard state, snapshot index, term and
// configuration, the compaction point, and the cluster and node IDs.
//
// # Durability
//
// Options.Sync chooses when entries are fsynced (SyncEachBatch, the
// default: before Save returns; SyncInterval; SyncNever; their doc comments
// say what each loses on power failure). Whatever the policy, a change of
// term or vote, a snapshot install and a compaction are fsynced before the
// call returns, and the entries written so far go to disk before any
// metadata fsync (a vote rests on them; a commit index must not pass
// them). The commit index alone is written without fsync: after a power
// failure it may come back lower, which core handles (it starts at least
// at the snapshot and at Config.Applied), or, under SyncInterval and
// SyncNever, past the entries on disk, which core clamps.
//
// # Recovery
//
// Open reads and verifies every record. A torn tail (the last segment cut
// in the middle of a record, or ending in records that do not verify and
// nothing that does) is cut back to the last whole record, and the file and
// directory fsynced; then the entries read are fsynced (a crash may have
// left them in the page cache only). Any other damage — a bad checksum with valid records
// after it, a missing segment, an index or term out of order, a log that
// starts past the snapshot — makes Open fail with an error naming the
// file and the entry. A crash between a snapshot install's metadata write
// and its change to the entry log is finished on the next Open.
//
// A write, fsync or truncate that fails leaves the log refusing writes
// (ErrFailed) until it is reopened: tidwall/wal keeps a failed write in its
// buffer, and what is on disk is no longer known. Reads are safe from
// several goroutines (one mutex serializes tidwall/wal, which is not);
// terms of the newest 65,536 entries are kept in memory.
package wal
