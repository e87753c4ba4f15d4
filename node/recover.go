package node

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"

	"github.com/stepraft/stepraft/core"
	"github.com/stepraft/stepraft/wal"
)

// A backup is one stream:
//
//	[16]byte  backupMagic (the last two bytes are the format version)
//	uvarint   header length, then the header:
//	            uvarint index, uvarint term, uvarint cluster ID,
//	            member list (envelope.go)
//	uint64    body length (big endian), then the body
//	uint32    CRC32C of the header and the body (big endian)
var backupMagic = [16]byte{'S', 'T', 'E', 'P', 'R', 'A', 'F', 'T', '-', 'B', 'A', 'C', 'K', 'U', 0, 1}

// maxBackupHeader bounds a backup's header (its member list).
const maxBackupHeader = 1 << 20

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// ErrBadBackup is wrapped by errors about a damaged or foreign backup.
var ErrBadBackup = errors.New("node: bad backup")

// Backup takes a snapshot now and writes it to w as a backup: its index,
// term, the cluster's members and their addresses, the state machine's
// state, and a checksum. RestoreBackup makes a new cluster from it. Like a
// linearizable read, it first waits until this node has applied every
// write acknowledged before the call (so it fails with ErrNoLeader when no
// leader can confirm that).
func (n *Node) Backup(ctx context.Context, w io.Writer) (SnapshotInfo, error) {
	if err := n.barrier(ctx); err != nil {
		return SnapshotInfo{}, fmt.Errorf("node: backup: %w", err)
	}
	if err := n.Snapshot(ctx); err != nil {
		return SnapshotInfo{}, fmt.Errorf("node: backup: %w", err)
	}
	info, body, err := n.snaps.Load()
	if err != nil {
		return SnapshotInfo{}, fmt.Errorf("node: backup: %w", err)
	}
	defer body.Close()
	hdr := binary.AppendUvarint(nil, uint64(info.Meta.Index))
	hdr = binary.AppendUvarint(hdr, uint64(info.Meta.Term))
	hdr = binary.AppendUvarint(hdr, n.cfg.ClusterID)
	hdr = appendMembers(hdr, info.Members)
	out := append(backupMagic[:], binary.AppendUvarint(nil, uint64(len(hdr)))...)
	out = append(out, hdr...)
	out = binary.BigEndian.AppendUint64(out, uint64(info.Size))
	bw := bufio.NewWriter(w)
	if _, err := bw.Write(out); err != nil {
		return SnapshotInfo{}, err
	}
	sum := crc32.Update(0, castagnoli, hdr)
	copied, err := io.Copy(bw, io.TeeReader(io.LimitReader(body, info.Size), crcWriter{&sum}))
	if err != nil {
		return SnapshotInfo{}, fmt.Errorf("node: backup: %w", err)
	}
	if copied != info.Size {
		return SnapshotInfo{}, fmt.Errorf("node: backup: snapshot body of %d bytes, %d read", info.Size, copied)
	}
	if _, err := bw.Write(binary.BigEndian.AppendUint32(nil, sum)); err != nil {
		return SnapshotInfo{}, err
	}
	return info, bw.Flush()
}

type crcWriter struct{ sum *uint32 }

func (c crcWriter) Write(p []byte) (int, error) {
	*c.sum = crc32.Update(*c.sum, castagnoli, p)
	return len(p), nil
}

// BackupInfo describes a backup.
type BackupInfo struct {
	Index     Index
	Term      core.Term
	ClusterID uint64 // of the cluster it was taken from
	Members   []Member
	Size      int64 // of the state machine's state
}

// readBackupHeader reads a backup's header; the body follows in r.
func readBackupHeader(r *bufio.Reader) (BackupInfo, uint32, error) {
	bad := func(format string, args ...any) (BackupInfo, uint32, error) {
		return BackupInfo{}, 0, fmt.Errorf("%w: "+format, append([]any{ErrBadBackup}, args...)...)
	}
	var magic [16]byte
	if _, err := io.ReadFull(r, magic[:]); err != nil || magic != backupMagic {
		return bad("not a stepraft backup (or of another version)")
	}
	n, err := binary.ReadUvarint(r)
	if err != nil || n == 0 || n > maxBackupHeader {
		return bad("header length")
	}
	hdr := make([]byte, n)
	if _, err := io.ReadFull(r, hdr); err != nil {
		return bad("truncated header")
	}
	var f [3]uint64
	b := hdr
	for i := range f {
		v, k := binary.Uvarint(b)
		if k <= 0 {
			return bad("header field %d", i)
		}
		f[i], b = v, b[k:]
	}
	members, rest, err := parseMembers(b)
	if err != nil || len(rest) != 0 || f[0] == 0 || f[1] == 0 {
		return bad("header: index %d term %d: %v", f[0], f[1], err)
	}
	var size [8]byte
	if _, err := io.ReadFull(r, size[:]); err != nil {
		return bad("truncated header")
	}
	info := BackupInfo{Index: Index(f[0]), Term: core.Term(f[1]), ClusterID: f[2], Members: members,
		Size: int64(binary.BigEndian.Uint64(size[:]))}
	if info.Size < 0 {
		return bad("body length")
	}
	return info, crc32.Update(0, castagnoli, hdr), nil
}

// RestoreBackup makes dataDir, which must be empty or absent, the data of
// node id, at addr, the only member of a new cluster holding the state in
// the backup read from r. Start the node with that DataDir, ID and Peers
// {id: addr}, then add members. The backup's checksum is verified before
// anything is installed.
func RestoreBackup(dataDir string, id NodeID, addr string, r io.Reader) (BackupInfo, error) {
	if id == 0 || addr == "" {
		return BackupInfo{}, fmt.Errorf("%w: restore needs a node ID and an address", ErrConfig)
	}
	if ents, err := os.ReadDir(dataDir); err == nil && len(ents) > 0 {
		return BackupInfo{}, fmt.Errorf("%w: %s is not empty", ErrConfig, dataDir)
	}
	br := bufio.NewReader(r)
	info, sum, err := readBackupHeader(br)
	if err != nil {
		return info, err
	}
	members := map[NodeID]string{id: addr}
	meta := core.SnapshotMeta{Index: info.Index, Term: info.Term, ConfState: core.ConfState{Voters: []NodeID{id}}}
	snaps, err := openSnapStore(filepath.Join(dataDir, "snap"), 0, nil)
	if err != nil {
		return info, err
	}
	defer snaps.Close()
	sink, err := snaps.Create(SnapshotInfo{Meta: meta, Members: memberList(members)})
	if err != nil {
		return info, err
	}
	if err := copyChecked(sink, br, info.Size, sum); err != nil {
		return info, errors.Join(err, sink.Abort())
	}
	if err := sink.Commit(); err != nil {
		return info, err
	}
	cluster := DeriveClusterID(members)
	return info, initLog(filepath.Join(dataDir, "wal"), cluster, id, meta, core.HardState{Term: info.Term, Commit: info.Index})
}

// copyChecked copies a backup's body and checks the trailing checksum.
func copyChecked(w io.Writer, r *bufio.Reader, size int64, sum uint32) error {
	n, err := io.Copy(w, io.TeeReader(io.LimitReader(r, size), crcWriter{&sum}))
	if err != nil {
		return err
	}
	if n != size {
		return fmt.Errorf("%w: body of %d bytes, %d announced", ErrBadBackup, n, size)
	}
	var trailer [4]byte
	if _, err := io.ReadFull(r, trailer[:]); err != nil {
		return fmt.Errorf("%w: no checksum", ErrBadBackup)
	}
	if got := binary.BigEndian.Uint32(trailer[:]); got != sum {
		return fmt.Errorf("%w: checksum %08x, the backup says %08x", ErrBadBackup, sum, got)
	}
	return nil
}

// initLog creates a log that starts after snapshot meta.
func initLog(dir string, cluster uint64, id NodeID, meta core.SnapshotMeta, hs core.HardState) error {
	l, err := wal.Open(dir, wal.Options{SegmentSize: logSegmentSize, ClusterID: cluster, NodeID: uint64(id)})
	if err != nil {
		return err
	}
	err = l.Save(core.Ready{Snapshot: core.Snapshot{Meta: meta}, HardState: hs, MustSync: true})
	return errors.Join(err, l.Close())
}

// RecoverConfig describes a recovery from lost quorum.
type RecoverConfig struct {
	// DataDir is the stopped member's data directory (default layout).
	DataDir string
	// ID is the member's ID; 0 takes the one stored in its log.
	ID NodeID
	// StateMachine is a fresh state machine of the application: recovery
	// replays the log into it to write a new snapshot.
	StateMachine StateMachine
	// Members is the new member set, this member included, with the
	// addresses to reach them.
	Members map[NodeID]string
	// Logger receives progress; nil discards it.
	Logger *slog.Logger
}

// RecoverReport says what a recovery kept.
type RecoverReport struct {
	ID        NodeID // the member recovered
	ClusterID uint64
	// SnapshotIndex is the snapshot the member's state was loaded from.
	SnapshotIndex Index
	// Commit is the commit index the member had stored. Entries after it,
	// up to LastIndex, were in its log but may not have been committed by
	// the old cluster; recovery commits them. Writes the old cluster
	// committed that never reached this member are lost.
	Commit    Index
	LastIndex Index
	// Index and Term are those of the new snapshot the member starts from,
	// naming the new members: LastIndex + 1 (an empty entry), and the
	// member's term.
	Index Index
	Term  core.Term
}

// Recover rewrites the configuration of a stopped member to a new member
// set, for a cluster that lost its quorum for good: it replays the
// member's newest snapshot and whole log into cfg.StateMachine, writes a
// snapshot at the end of the log naming cfg.Members as the voters, and
// makes the log start after it. Then start this member with the same
// DataDir (Peers may be cfg.Members) and the other new members with Join
// and the report's ClusterID: this member leads once a majority of the
// new set is up.
func Recover(cfg RecoverConfig) (RecoverReport, error) {
	var rep RecoverReport
	if cfg.StateMachine == nil || len(cfg.Members) == 0 {
		return rep, fmt.Errorf("%w: recover needs a StateMachine and Members", ErrConfig)
	}
	l, err := wal.Open(filepath.Join(cfg.DataDir, "wal"), wal.Options{SegmentSize: logSegmentSize, NodeID: uint64(cfg.ID), Logger: cfg.Logger})
	if err != nil {
		return rep, fmt.Errorf("node: recover: %w", err)
	}
	defer l.Close()
	var stored uint64
	rep.ClusterID, stored = l.Identity()
	if cfg.ID == 0 {
		cfg.ID = NodeID(stored)
	}
	if cfg.ID == 0 || cfg.Members[cfg.ID] == "" {
		return rep, fmt.Errorf("%w: recover: the new Members must include this member (%d)", ErrConfig, cfg.ID)
	}
	rep.ID = cfg.ID
	snaps, err := openSnapStore(filepath.Join(cfg.DataDir, "snap"), 0, cfg.Logger)
	if err != nil {
		return rep, fmt.Errorf("node: recover: %w", err)
	}
	defer snaps.Close()
	hs, _, err := l.InitialState()
	if err != nil {
		return rep, err
	}
	rep.Commit = hs.Commit
	if rep.SnapshotIndex, err = restoreNewest(l, snaps, cfg.StateMachine); err != nil {
		return rep, err
	}
	if rep.LastIndex, err = l.LastIndex(); err != nil {
		return rep, err
	}
	rep.LastIndex = max(rep.LastIndex, rep.SnapshotIndex)
	if err := replayEntries(l, rep.SnapshotIndex, rep.LastIndex, cfg.StateMachine, nil); err != nil {
		return rep, err
	}
	rep.Index, rep.Term = rep.LastIndex+1, hs.Term
	var cs core.ConfState
	for id := range cfg.Members {
		cs.Voters = append(cs.Voters, id)
	}
	slices.Sort(cs.Voters)
	meta := core.SnapshotMeta{Index: rep.Index, Term: rep.Term, ConfState: cs}
	// An empty entry past the log, so the new snapshot is past the old
	// one even when the log has nothing after it.
	noop := core.Ready{Entries: []core.Entry{{Index: rep.Index, Term: rep.Term, Type: core.EntryNormal}},
		HardState: core.HardState{Term: hs.Term, Vote: hs.Vote, Commit: rep.Index}, MustSync: true}
	if err := l.Save(noop); err != nil {
		return rep, fmt.Errorf("node: recover: %w", err)
	}
	write, err := cfg.StateMachine.Snapshot()
	if err != nil {
		return rep, fmt.Errorf("node: recover: state machine snapshot: %w", err)
	}
	sink, err := snaps.Create(SnapshotInfo{Meta: meta, Members: memberList(cfg.Members)})
	if err != nil {
		return rep, err
	}
	if err := write(sink); err != nil {
		return rep, errors.Join(err, sink.Abort())
	}
	if err := sink.Commit(); err != nil {
		return rep, err
	}
	if err := l.ApplySnapshot(meta); err != nil {
		return rep, fmt.Errorf("node: recover: %w", err)
	}
	return rep, nil
}

// restoreNewest restores the newest snapshot into sm and returns its index.
func restoreNewest(l *wal.Log, snaps SnapshotStore, sm StateMachine) (Index, error) {
	recorded, err := l.Snapshot()
	if err != nil {
		return 0, err
	}
	info, body, err := snaps.Load()
	if err != nil {
		return 0, fmt.Errorf("node: recover: %w", err)
	}
	defer body.Close()
	if info.Meta.Index < recorded.Meta.Index {
		return 0, fmt.Errorf("node: recover: newest usable snapshot at %d, the log starts after %d", info.Meta.Index, recorded.Meta.Index)
	}
	if err := sm.Restore(uint64(info.Meta.Index), body); err != nil {
		return 0, fmt.Errorf("node: recover: restore %d: %w", info.Meta.Index, err)
	}
	return info.Meta.Index, nil
}

// replayEntries applies to sm the commands of entries (from, to] of s, and
// follows in members (when not nil) the addresses that configuration
// entries carry.
func replayEntries(s core.Storage, from, to Index, sm StateMachine, members map[NodeID]string) error {
	for next := from + 1; next <= to; {
		ents, err := s.Entries(next, to+1, 64<<20)
		if err != nil {
			return fmt.Errorf("node: replay: read log at %d: %w", next, err)
		}
		for _, e := range ents {
			switch {
			case e.Type == core.EntryNormal && len(e.Data) > 0:
				_, _, cmd, err := parseEnvelope(e.Data)
				if err != nil {
					return fmt.Errorf("node: replay: entry %d: %w", e.Index, err)
				}
				sm.Apply(uint64(e.Index), cmd)
			case e.Type == core.EntryConfChange && members != nil:
				followAddresses(e, members)
			}
			next = e.Index + 1
		}
	}
	return nil
}

// followAddresses records the addresses a configuration entry adds and
// forgets the members it removes.
func followAddresses(e core.Entry, members map[NodeID]string) {
	var cc core.ConfChange
	if cc.Unmarshal(e.Data) != nil {
		return
	}
	for _, ch := range cc.Changes {
		if ch.Type == core.ConfChangeRemoveNode {
			delete(members, ch.NodeID)
		}
	}
	if len(cc.Context) > 0 {
		if _, _, ms, err := parseContext(cc.Context); err == nil {
			for _, m := range ms {
				members[m.ID] = m.Addr
			}
		}
	}
}
