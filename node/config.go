package node

import (
	"crypto/tls"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"slices"
	"time"

	"github.com/stepraft/stepraft/core"
	"github.com/stepraft/stepraft/transport"
	"github.com/stepraft/stepraft/wal"
)

// NodeID and Index are core's, so that applications need not import core.
type (
	NodeID = core.NodeID
	Index  = core.Index
)

// Defaults of Config's zero fields.
const (
	DefaultTickInterval    = 100 * time.Millisecond
	DefaultElectionTicks   = 10
	DefaultHeartbeatTicks  = 1
	DefaultMaxBatchBytes   = 4 << 20
	DefaultSnapshotEntries = 10000
	DefaultTrailingEntries = 5000
	DefaultMaxCommandBytes = 1 << 20
	DefaultSnapshotsKept   = 2
	// DefaultRequestTimeoutTicks is how long (in ticks) a Propose or Read
	// whose context has no earlier deadline may wait: a few election
	// timeouts, so that every call ends even with context.Background().
	DefaultRequestTimeoutTicks = 5 * DefaultElectionTicks
)

// logSegmentSize is the segment size of the log a node opens in DataDir
// (wal.Options.SegmentSize), smaller than the wal package's 8 MiB default.
// tidwall/wal holds the tail segment, and the two before it, in memory, and
// grows the tail's buffer by copying it: with 1 KiB commands at 256 clients,
// 2 MiB segments gave about 20 % more operations per second than 8 MiB, a
// p99 about a third lower and half the peak RSS (bench/README.md). The
// price is one more file roll, so one more directory fsync, per 2 MiB.
const logSegmentSize = 2 << 20

// Config configures a node. Zero fields take the documented defaults.
type Config struct {
	// ID is this node's ID; not zero.
	ID NodeID
	// Peers maps each member's ID to its raft address. To bootstrap a new
	// cluster it names all founding members, this one included. With Join
	// it names members of the existing cluster to reach (this node need
	// not be in it). On restart it is ignored, except as addresses of
	// members the log does not know an address for.
	Peers map[NodeID]string
	// Join starts a node that an existing cluster has added (AddVoter or
	// AddLearner) and that waits to be contacted by its leader. Without a
	// ClusterID it takes the one of the first member that contacts it (the
	// leader, with the default TCP transport) and stores it.
	Join bool
	// ClusterID identifies the cluster: stored on disk, checked on every
	// restart and in every transport handshake. Default: derived from the
	// founding members' IDs (when not joining).
	ClusterID uint64
	// DataDir holds the log (DataDir/wal) and the snapshots
	// (DataDir/snap). Required unless both LogStore and SnapshotStore are
	// given.
	DataDir string
	// Listen is the address the default TCP transport listens on; default
	// Advertise, or this node's address in Peers.
	Listen string
	// Advertise is this node's raft address as others dial it; default its
	// address in Peers.
	Advertise string

	// TickInterval is the length of a tick; default 100 ms.
	TickInterval time.Duration
	// ElectionTicks and HeartbeatTicks are core's election timeout and
	// heartbeat interval in ticks; defaults 10 and 1.
	ElectionTicks, HeartbeatTicks int
	// Sync is the log's fsync policy (wal.SyncEachBatch by default) and
	// SyncInterval the period of wal.SyncInterval. See wal.SyncPolicy for
	// what each loses on power failure.
	Sync         wal.SyncPolicy
	SyncInterval time.Duration
	// MaxBatchBytes bounds the proposal bytes taken into one Ready (one
	// log write, one fsync): proposals are taken until they reach it, so
	// a Ready carries at most MaxBatchBytes plus the last command; default
	// 4 MiB.
	MaxBatchBytes int
	// MaxCommandBytes refuses larger commands with ErrTooLarge; default
	// 1 MiB.
	MaxCommandBytes int
	// SnapshotEntries is how many applied entries trigger a snapshot;
	// default 10,000. Each snapshot costs a few fsyncs and a compaction
	// of the log, during which the node's loop waits: under tens of
	// thousands of entries a second, a larger value (100,000) trades a
	// longer log (on disk, and replayed at restart) for fewer of those
	// stalls (bench/README.md, "How often to snapshot").
	SnapshotEntries uint64
	// TrailingEntries is how many entries compaction keeps behind a
	// snapshot, for followers only a little behind; default 5,000.
	TrailingEntries uint64
	// SnapshotsKept is how many snapshot files are kept; default 2.
	SnapshotsKept int
	// RequestTimeoutTicks bounds how long Propose and Read wait when
	// their context allows longer; default 5 election timeouts.
	RequestTimeoutTicks int
	// DisableProposalForwarding makes a follower refuse proposals with a
	// *NotLeaderError instead of forwarding them to the leader.
	DisableProposalForwarding bool

	// StateMachine is the application; required.
	StateMachine StateMachine
	// Transport carries messages; default a TCP transport on Listen.
	Transport transport.Transport
	// LogStore and SnapshotStore default to the wal and the snapshotter in
	// DataDir.
	LogStore      LogStore
	SnapshotStore SnapshotStore
	// TLS, when set, makes the default TCP transport use mutual TLS.
	TLS *tls.Config
	// Logger receives the node's logs; nil discards them.
	Logger *slog.Logger
	// Seed seeds core's election timeouts; 0 picks one at random.
	Seed uint64
}

// Validate reports the first problem with c. It does not modify c.
func (c *Config) Validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: "+format, append([]any{ErrConfig}, args...)...)
	}
	switch {
	case c.ID == 0:
		return bad("ID is 0")
	case c.StateMachine == nil:
		return bad("no StateMachine")
	case c.DataDir == "" && (c.LogStore == nil || c.SnapshotStore == nil):
		return bad("no DataDir")
	case c.TickInterval < 0 || c.ElectionTicks < 0 || c.HeartbeatTicks < 0 || c.SyncInterval < 0:
		return bad("negative duration")
	case c.MaxBatchBytes < 0 || c.MaxCommandBytes < 0 || c.SnapshotsKept < 0 || c.RequestTimeoutTicks < 0:
		return bad("negative limit")
	case c.ElectionTicks != 0 && c.HeartbeatTicks >= c.ElectionTicks:
		return bad("HeartbeatTicks %d not below ElectionTicks %d", c.HeartbeatTicks, c.ElectionTicks)
	case c.ElectionTicks == 0 && c.HeartbeatTicks >= DefaultElectionTicks:
		return bad("HeartbeatTicks %d not below the default ElectionTicks %d", c.HeartbeatTicks, DefaultElectionTicks)
	case c.TrailingEntries != 0 && c.SnapshotEntries != 0 && c.TrailingEntries > 100*c.SnapshotEntries:
		return bad("TrailingEntries %d over 100 snapshots' worth", c.TrailingEntries)
	case c.MaxCommandBytes > 0 && c.MaxBatchBytes > 0 && c.MaxCommandBytes > c.MaxBatchBytes:
		return bad("MaxCommandBytes %d above MaxBatchBytes %d", c.MaxCommandBytes, c.MaxBatchBytes)
	}
	byAddr := make(map[string]NodeID, len(c.Peers))
	for id, addr := range c.Peers {
		switch {
		case id == 0:
			return bad("peer ID 0")
		case addr == "":
			return bad("peer %d has no address", id)
		case len(addr) > maxAddrBytes:
			return bad("peer %d: address of %d bytes", id, len(addr))
		}
		if other, ok := byAddr[addr]; ok {
			return bad("peers %d and %d have the same address %s", min(id, other), max(id, other), addr)
		}
		byAddr[addr] = id
	}
	if c.Transport == nil && c.Listen == "" && c.Advertise == "" && c.Peers[c.ID] == "" {
		return bad("this node (%d) is not in Peers and has no Listen or Advertise address", c.ID)
	}
	return nil
}

// withDefaults returns a copy of c with its zero fields filled.
func (c Config) withDefaults() Config {
	if c.TickInterval == 0 {
		c.TickInterval = DefaultTickInterval
	}
	if c.ElectionTicks == 0 {
		c.ElectionTicks = DefaultElectionTicks
	}
	if c.HeartbeatTicks == 0 {
		c.HeartbeatTicks = DefaultHeartbeatTicks
	}
	if c.MaxBatchBytes == 0 {
		c.MaxBatchBytes = DefaultMaxBatchBytes
	}
	if c.MaxCommandBytes == 0 {
		c.MaxCommandBytes = min(DefaultMaxCommandBytes, c.MaxBatchBytes)
	}
	if c.SnapshotEntries == 0 {
		c.SnapshotEntries = DefaultSnapshotEntries
	}
	if c.TrailingEntries == 0 {
		c.TrailingEntries = DefaultTrailingEntries
	}
	if c.SnapshotsKept == 0 {
		c.SnapshotsKept = DefaultSnapshotsKept
	}
	if c.RequestTimeoutTicks == 0 {
		c.RequestTimeoutTicks = 5 * c.ElectionTicks
	}
	if c.Advertise == "" {
		c.Advertise = c.Peers[c.ID]
	}
	if c.Listen == "" {
		c.Listen = c.Advertise
	}
	if c.ClusterID == 0 && !c.Join {
		c.ClusterID = DeriveClusterID(c.Peers)
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// DeriveClusterID is the default cluster ID of a cluster founded by the
// members in peers: a hash of their IDs (not their addresses, which may
// change).
func DeriveClusterID(peers map[NodeID]string) uint64 {
	ids := make([]NodeID, 0, len(peers))
	for id := range peers {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	h := fnv.New64a()
	for _, id := range ids {
		fmt.Fprintf(h, "%d,", id)
	}
	if v := h.Sum64(); v != 0 {
		return v
	}
	return 1
}

var (
	// ErrConfig is wrapped by every configuration error from Start.
	ErrConfig = errors.New("node: invalid config")
	// ErrStopped is returned by calls on a node that has stopped; when
	// the node stopped itself it wraps the reason (Err).
	ErrStopped = errors.New("node: stopped")
	// ErrProposalDropped: the command was not and will not be committed.
	ErrProposalDropped = errors.New("node: proposal dropped")
	// ErrOutcomeUnknown: the command was appended to the log but this node
	// cannot tell whether it will commit (the leader changed, or the
	// caller's context ended first, whose error it then wraps too).
	ErrOutcomeUnknown = errors.New("node: proposal outcome unknown")
	// ErrTooLarge: the command is larger than MaxCommandBytes.
	ErrTooLarge = errors.New("node: command too large")
	// ErrNotLeader is wrapped by *NotLeaderError.
	ErrNotLeader = errors.New("node: not the leader")
	// ErrNoLeader: no leader could confirm a read, or take a request that
	// needs one, in time; nothing was changed.
	ErrNoLeader = errors.New("node: no leader")
	// ErrRemoved: this node was removed from the cluster.
	ErrRemoved = errors.New("node: removed from the cluster")
)

// NotLeaderError is returned when this node is not the leader and cannot
// forward: it names the leader, if one is known, so a caller can redirect.
type NotLeaderError struct {
	LeaderID   NodeID
	LeaderAddr string
}

func (e *NotLeaderError) Error() string {
	if e.LeaderID == 0 {
		return "node: not the leader, and no leader is known"
	}
	return fmt.Sprintf("node: not the leader; the leader is %d at %s", e.LeaderID, e.LeaderAddr)
}

// Unwrap makes errors.Is(err, ErrNotLeader) hold.
func (e *NotLeaderError) Unwrap() error { return ErrNotLeader }
