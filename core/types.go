package core

import "fmt"

// NodeID identifies a member of a cluster. Zero means "none".
type NodeID uint64

// None is the NodeID that stands for no node: no leader known, no vote cast.
const None NodeID = 0

// Term is a Raft term. Terms only grow.
type Term uint64

// Index is the position of an entry in the replicated log. The first entry
// of a log is at index 1; index 0 stands before every entry.
type Index uint64

// EntryType says how an entry's Data is to be read.
type EntryType uint8

const (
	// EntryNormal carries an application command. A new leader's empty
	// entry is EntryNormal with nil Data.
	EntryNormal EntryType = iota + 1
	// EntryConfChange carries an encoded ConfChange.
	EntryConfChange
)

func (t EntryType) String() string {
	switch t {
	case EntryNormal:
		return "EntryNormal"
	case EntryConfChange:
		return "EntryConfChange"
	}
	return fmt.Sprintf("EntryType(%d)", uint8(t))
}

// Entry is one record of the replicated log.
type Entry struct {
	Term  Term
	Index Index
	Type  EntryType
	Data  []byte
}

// payloadSize is the size counted against the byte limits (MaxMsgBytes,
// MaxInflightBytes, MaxUncommittedBytes): the payload only, so that limits
// do not depend on an encoding.
func (e *Entry) payloadSize() uint64 { return uint64(len(e.Data)) }

// HardState is the state a node must persist before it acts on it: its
// current term, the vote it cast in that term, and the commit index. It is
// comparable with ==.
type HardState struct {
	Term   Term
	Vote   NodeID
	Commit Index
}

// IsEmpty reports whether hs is the zero HardState ("unchanged" in a Ready).
func (hs HardState) IsEmpty() bool { return hs == HardState{} }

// Role is the part a node plays in its current term.
type Role uint8

const (
	RoleFollower Role = iota + 1
	RolePreCandidate
	RoleCandidate
	RoleLeader
)

func (r Role) String() string {
	switch r {
	case RoleFollower:
		return "follower"
	case RolePreCandidate:
		return "precandidate"
	case RoleCandidate:
		return "candidate"
	case RoleLeader:
		return "leader"
	}
	return fmt.Sprintf("Role(%d)", uint8(r))
}

// SoftState is volatile state that a host may want to observe: the leader
// this node knows of and its own role. It is never persisted.
type SoftState struct {
	Lead NodeID
	Role Role
}

// ConfState is a cluster configuration: the voters, the learners, and
// during a joint change the outgoing voters and the learners that will be
// added when the joint configuration is left.
type ConfState struct {
	Voters         []NodeID
	Learners       []NodeID
	VotersOutgoing []NodeID
	LearnersNext   []NodeID
	AutoLeave      bool
}

// SnapshotMeta says which prefix of the log a snapshot replaces and the
// configuration in force at its last index.
type SnapshotMeta struct {
	Index     Index
	Term      Term
	ConfState ConfState
}

// Snapshot is a state-machine image standing for every entry up to
// Meta.Index. Data is opaque to core.
type Snapshot struct {
	Meta SnapshotMeta
	Data []byte
}

// IsEmpty reports whether s is the zero Snapshot ("none" in a Ready).
func (s Snapshot) IsEmpty() bool { return s.Meta.Index == 0 }

// ReadState answers a ReadIndex request: once the application has applied
// Index, a read issued with RequestCtx is linearizable.
type ReadState struct {
	Index      Index
	RequestCtx []byte
	// Dropped says the read was not served (leadership changed, or the
	// leader refused it); the host fails it and may retry. Index is 0.
	Dropped bool
}
