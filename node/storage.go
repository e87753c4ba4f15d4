package node

import (
	"errors"
	"fmt"
	"io"
	"log/slog"

	"github.com/stepraft/stepraft/core"
	"github.com/stepraft/stepraft/snapshotter"
)

// LogStore is the durable log a node writes and core reads. *wal.Log is
// one; an application may bring its own.
//
// The node calls Save on a goroutine of its own, one Save at a time, while
// its loop may go on reading (core.Storage's methods) from another: a store
// must allow reads during a Save. The loop reads only entries that earlier
// Saves wrote, and serves the newest from a cache of its own. SetSnapshot
// and Compact are never called during a Save.
type LogStore interface {
	core.Storage
	// Save persists what rd asks for, in order: rd.Snapshot's metadata
	// (the log then starts after it), rd.Entries (the first may replace a
	// suffix), rd.HardState; durably before it returns when rd.MustSync,
	// as the store's sync policy defines. An error stops the node.
	Save(rd core.Ready) error
	// SetSnapshot records that a snapshot of this node's own state at
	// meta.Index is durable in the SnapshotStore.
	SetSnapshot(meta core.SnapshotMeta) error
	// Compact drops the entries up to and including i, which is at most
	// the recorded snapshot's index.
	Compact(i Index) error
	// Close flushes and closes the store.
	Close() error
}

// Member is a member of the cluster and its raft address.
type Member struct {
	ID   NodeID
	Addr string
}

// SnapshotInfo describes a stored snapshot.
type SnapshotInfo struct {
	Meta    core.SnapshotMeta
	Members []Member
	// Size is the body length in bytes; ignored by Create.
	Size int64
}

// SnapshotStore keeps snapshot bodies, streamed in and out. The default is
// the snapshotter in DataDir/snap.
type SnapshotStore interface {
	// Create starts a snapshot described by info; nothing is visible until
	// the sink commits.
	Create(info SnapshotInfo) (SnapshotSink, error)
	// Load opens the newest snapshot that verifies; an error wrapping
	// ErrNoSnapshot when there is none.
	Load() (SnapshotInfo, io.ReadCloser, error)
	// Open opens the snapshot at index and term.
	Open(index Index, term core.Term) (SnapshotInfo, io.ReadCloser, error)
	// List describes the snapshots kept, newest first.
	List() ([]SnapshotInfo, error)
	// Close closes the store.
	Close() error
}

// SnapshotSink receives a snapshot body.
type SnapshotSink interface {
	io.Writer
	// Commit makes the snapshot durable.
	Commit() error
	// Abort discards it.
	Abort() error
}

// ErrNoSnapshot is wrapped by SnapshotStore.Load and Open when there is
// no such snapshot.
var ErrNoSnapshot = errors.New("node: no snapshot")

// snapStore adapts a snapshotter.Store to SnapshotStore.
type snapStore struct{ s *snapshotter.Store }

func openSnapStore(dir string, keep int, log *slog.Logger) (*snapStore, error) {
	s, err := snapshotter.Open(dir, snapshotter.Options{Keep: keep, Logger: log})
	if err != nil {
		return nil, err
	}
	return &snapStore{s: s}, nil
}

func toInfo(m snapshotter.Meta) SnapshotInfo {
	info := SnapshotInfo{Meta: core.SnapshotMeta{Index: m.Index, Term: m.Term, ConfState: m.ConfState}, Size: m.Size}
	for _, x := range m.Members {
		info.Members = append(info.Members, Member{ID: x.ID, Addr: x.Addr})
	}
	return info
}

func fromInfo(info SnapshotInfo) snapshotter.Meta {
	m := snapshotter.Meta{Index: info.Meta.Index, Term: info.Meta.Term, ConfState: info.Meta.ConfState}
	for _, x := range info.Members {
		m.Members = append(m.Members, snapshotter.Member{ID: x.ID, Addr: x.Addr})
	}
	return m
}

func (s *snapStore) Create(info SnapshotInfo) (SnapshotSink, error) {
	p, err := s.s.Create(fromInfo(info))
	if err != nil {
		return nil, err
	}
	return pendingSink{p}, nil
}

type pendingSink struct{ p *snapshotter.Pending }

func (p pendingSink) Write(b []byte) (int, error) { return p.p.Write(b) }
func (p pendingSink) Commit() error               { _, err := p.p.Commit(); return err }
func (p pendingSink) Abort() error                { return p.p.Abort() }

func noSnap(err error) error {
	if errors.Is(err, snapshotter.ErrNoSnapshot) {
		return fmt.Errorf("%w: %w", ErrNoSnapshot, err)
	}
	return err
}

func (s *snapStore) Load() (SnapshotInfo, io.ReadCloser, error) {
	m, r, err := s.s.Load()
	if err != nil {
		return SnapshotInfo{}, nil, noSnap(err)
	}
	return toInfo(m), r, nil
}

func (s *snapStore) Open(index Index, term core.Term) (SnapshotInfo, io.ReadCloser, error) {
	m, r, err := s.s.OpenSnapshot(index, term)
	if err != nil {
		return SnapshotInfo{}, nil, noSnap(err)
	}
	return toInfo(m), r, nil
}

func (s *snapStore) List() ([]SnapshotInfo, error) {
	ms, err := s.s.List()
	if err != nil {
		return nil, err
	}
	out := make([]SnapshotInfo, len(ms))
	for i, m := range ms {
		out[i] = toInfo(m)
	}
	return out, nil
}

func (s *snapStore) Close() error { return s.s.Close() }
