package core

import (
	"fmt"
	"log/slog"
)

// ReadOnlyOption chooses how a leader establishes that it may serve a read.
type ReadOnlyOption uint8

const (
	// ReadOnlySafe confirms leadership with a heartbeat round answered by
	// a quorum, one round per read. It is the default.
	ReadOnlySafe ReadOnlyOption = iota + 1
	// ReadOnlyLeaseBased answers a read at once from the leader's commit
	// index while its lease holds: a quorum acknowledged a heartbeat the
	// leader sent less than ElectionTicks of its ticks ago (heartbeats
	// carry the leader's tick and responses echo it). Each of those
	// followers ignores vote requests for ElectionTicks of its own ticks
	// after it received the heartbeat, so no other leader can be elected
	// before the lease ends — provided no member's ticks run faster than
	// the leader's. The bound: a follower whose clock runs fast by a
	// fraction f ends its lease early by about f×ElectionTicks ticks, and
	// a leader whose process stalls keeps counting from where it stopped;
	// keep tick rates within a few percent of each other and the leader's
	// process free of long pauses, or use ReadOnlySafe. Without a valid
	// lease (right after election, or cut off) a read takes a quorum
	// round. A leader does not use the lease after it has started a
	// leadership transfer in its term, because the transfer's election
	// passes the followers' leases. It needs check-quorum.
	ReadOnlyLeaseBased
)

func (o ReadOnlyOption) String() string {
	switch o {
	case ReadOnlySafe:
		return "ReadOnlySafe"
	case ReadOnlyLeaseBased:
		return "ReadOnlyLeaseBased"
	}
	return fmt.Sprintf("ReadOnlyOption(%d)", uint8(o))
}

// Defaults used for zero Config fields.
const (
	DefaultElectionTicks   = 10
	DefaultHeartbeatTicks  = 1
	DefaultMaxMsgBytes     = 1 << 20
	DefaultMaxEntryBytes   = 1 << 20
	DefaultMaxInflightMsgs = 256
	DefaultMaxApplyBytes   = 64 << 20
)

// Config configures one Raft node. The zero value of every field but ID
// and Storage is valid and documented; New fills defaults into a copy and
// never modifies the caller's Config.
type Config struct {
	// ID is this node's identity; it must not be 0.
	ID NodeID
	// ElectionTicks is the election timeout in ticks: a follower that hears
	// nothing from a leader for a randomized [ElectionTicks, 2*ElectionTicks)
	// ticks campaigns; a leader under check-quorum steps down after
	// ElectionTicks without hearing from a quorum. Default 10.
	ElectionTicks int
	// HeartbeatTicks is the leader's heartbeat interval in ticks; it must
	// be smaller than ElectionTicks. Default 1.
	HeartbeatTicks int
	// Storage is the durable log; required.
	Storage Storage
	// Applied is the last index the application applied before a restart;
	// committed entries up to it are not handed out again, the commit
	// index starts there at least, and the configuration changes among
	// them are applied again from the log, on top of the configuration of
	// the storage's snapshot. 0 means the index of the storage's
	// snapshot. A value behind that snapshot is refused: the state machine
	// must first restore the snapshot (whose configuration core has already
	// taken), and then pass its index.
	Applied Index
	// MaxMsgBytes bounds the payload bytes of entries in one append
	// message (at least one entry is always sent). Default 1 MiB.
	MaxMsgBytes uint64
	// MaxEntryBytes refuses a single proposal larger than this with
	// ErrTooLarge. Default 1 MiB.
	MaxEntryBytes uint64
	// MaxInflightMsgs bounds the append messages in flight to one follower
	// in replicate state. Default 256.
	MaxInflightMsgs int
	// MaxInflightBytes bounds the payload bytes in flight to one follower;
	// 0 means no byte limit.
	MaxInflightBytes uint64
	// MaxUncommittedBytes makes the leader refuse proposals (with
	// ErrProposalDropped) while its uncommitted tail holds more payload
	// bytes than this; 0 means no limit.
	MaxUncommittedBytes uint64
	// MaxApplyBytes bounds the payload bytes of CommittedEntries in one
	// Ready (at least one entry is always handed out). Default 64 MiB.
	MaxApplyBytes uint64
	// DisablePreVote turns pre-vote off. Pre-vote keeps a node that was
	// partitioned away from raising the cluster's term when it returns.
	DisablePreVote bool
	// DisableCheckQuorum turns check-quorum off. Check-quorum makes a
	// leader that cannot reach a quorum step down, and lets followers that
	// hear from a live leader ignore disruptive vote requests.
	DisableCheckQuorum bool
	// DisableProposalForwarding makes followers drop proposals instead of
	// forwarding them to the leader.
	DisableProposalForwarding bool
	// ReadOnly chooses how reads are confirmed; zero means ReadOnlySafe.
	// See ReadOnlyLeaseBased for the bound the lease relies on.
	ReadOnly ReadOnlyOption
	// StepDownOnRemoval has no effect: a leader that is no longer a voter
	// always gives up leadership once it applies the change that removed
	// it, handing it to the voter that matches most of its log (a leader
	// outside the configuration can commit nothing of its own). The field
	// stays for source compatibility.
	StepDownOnRemoval bool
	// Seed seeds the generator of randomized election timeouts (mixed with
	// ID, so members given the same seed still draw different timeouts).
	Seed uint64
	// Logger receives structured logs; nil discards them. Core never reads
	// a clock itself; the handler may stamp records with the time.
	Logger *slog.Logger
}

// Validate reports the first problem with c, wrapped in ErrConfig. It does
// not modify c; zero fields that have defaults are valid.
func (c *Config) Validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: "+format, append([]any{ErrConfig}, args...)...)
	}
	switch {
	case c.ID == None:
		return bad("ID must not be 0")
	case c.Storage == nil:
		return bad("Storage is required")
	case c.ElectionTicks < 0:
		return bad("ElectionTicks %d is negative", c.ElectionTicks)
	case c.HeartbeatTicks < 0:
		return bad("HeartbeatTicks %d is negative", c.HeartbeatTicks)
	case c.MaxInflightMsgs < 0:
		return bad("MaxInflightMsgs %d is negative", c.MaxInflightMsgs)
	case c.ReadOnly > ReadOnlyLeaseBased:
		return bad("unknown ReadOnly option %d", c.ReadOnly)
	}
	d := c.withDefaults()
	if d.HeartbeatTicks >= d.ElectionTicks {
		return bad("HeartbeatTicks %d must be less than ElectionTicks %d", d.HeartbeatTicks, d.ElectionTicks)
	}
	if d.ReadOnly == ReadOnlyLeaseBased && d.DisableCheckQuorum {
		return bad("ReadOnlyLeaseBased needs check-quorum")
	}
	if d.MaxInflightBytes != 0 && d.MaxInflightBytes < d.MaxMsgBytes {
		return bad("MaxInflightBytes %d is below MaxMsgBytes %d", d.MaxInflightBytes, d.MaxMsgBytes)
	}
	return nil
}

// withDefaults returns a copy of c with defaults filled in.
func (c Config) withDefaults() Config {
	if c.ElectionTicks == 0 {
		c.ElectionTicks = DefaultElectionTicks
	}
	if c.HeartbeatTicks == 0 {
		c.HeartbeatTicks = DefaultHeartbeatTicks
	}
	if c.MaxMsgBytes == 0 {
		c.MaxMsgBytes = DefaultMaxMsgBytes
	}
	if c.MaxEntryBytes == 0 {
		c.MaxEntryBytes = DefaultMaxEntryBytes
	}
	if c.MaxInflightMsgs == 0 {
		c.MaxInflightMsgs = DefaultMaxInflightMsgs
	}
	if c.MaxApplyBytes == 0 {
		c.MaxApplyBytes = DefaultMaxApplyBytes
	}
	if c.ReadOnly == 0 {
		c.ReadOnly = ReadOnlySafe
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}
