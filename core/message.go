package core

import "fmt"

// MessageType names a Raft message. The names follow etcd's raft where the
// idea is the same.
type MessageType uint8

const (
	// MsgHup is local: start an election (pre-vote first unless disabled).
	MsgHup MessageType = iota + 1
	// MsgBeat is local: a leader sends heartbeats now.
	MsgBeat
	// MsgProp is a proposal of entries, local or forwarded to the leader.
	MsgProp
	// MsgApp carries entries after (Index, LogTerm) and the leader's commit.
	MsgApp
	// MsgAppResp answers MsgApp (and MsgSnap): Index is the follower's last
	// matching index, or on Reject the rejected Index with a hint.
	MsgAppResp
	// MsgVote asks for a vote in Term for a log ending at (Index, LogTerm).
	MsgVote
	MsgVoteResp
	// MsgPreVote asks whether a vote in Term would be granted, without
	// anyone changing term.
	MsgPreVote
	MsgPreVoteResp
	// MsgSnap carries a snapshot to a follower whose next entry was compacted.
	MsgSnap
	// MsgHeartbeat asserts leadership and carries the commit index.
	MsgHeartbeat
	MsgHeartbeatResp
	// MsgTransferLeader asks the leader to hand leadership to From.
	MsgTransferLeader
	// MsgTimeoutNow tells a follower to campaign at once, past the lease.
	MsgTimeoutNow
	// MsgReadIndex asks for a read index; MsgReadIndexResp answers it
	// (Reject: the leader dropped it).
	MsgReadIndex
	MsgReadIndexResp
	// MsgPropDropped gives a forwarded proposal back to the node that
	// forwarded it: the leader (or the node it reached) did not take it.
	// Like MsgProp it carries no term.
	MsgPropDropped

	msgTypeEnd // one past the last valid type
)

var msgTypeNames = [...]string{
	MsgHup:            "MsgHup",
	MsgBeat:           "MsgBeat",
	MsgProp:           "MsgProp",
	MsgApp:            "MsgApp",
	MsgAppResp:        "MsgAppResp",
	MsgVote:           "MsgVote",
	MsgVoteResp:       "MsgVoteResp",
	MsgPreVote:        "MsgPreVote",
	MsgPreVoteResp:    "MsgPreVoteResp",
	MsgSnap:           "MsgSnap",
	MsgHeartbeat:      "MsgHeartbeat",
	MsgHeartbeatResp:  "MsgHeartbeatResp",
	MsgTransferLeader: "MsgTransferLeader",
	MsgTimeoutNow:     "MsgTimeoutNow",
	MsgReadIndex:      "MsgReadIndex",
	MsgReadIndexResp:  "MsgReadIndexResp",
	MsgPropDropped:    "MsgPropDropped",
}

func (t MessageType) String() string {
	if t > 0 && t < msgTypeEnd {
		return msgTypeNames[t]
	}
	return fmt.Sprintf("MessageType(%d)", uint8(t))
}

// IsLocal reports whether t only ever originates inside a node (MsgHup,
// MsgBeat). A local message arriving from the network is refused.
func (t MessageType) IsLocal() bool { return t == MsgHup || t == MsgBeat }

// IsResponse reports whether t is a response that promises the Ready that
// produced it is durable: an append acknowledgement or a vote. Under the
// Ready contract such a message may leave only after that Ready's write;
// every other message may leave before. The answers to a heartbeat and to
// a forwarded read promise nothing durable (a heartbeat's says "I am here
// and know no later term", which is memory), so they leave at once, as
// requests do: a follower whose disk stalls still shows its leader that it
// is alive.
func (t MessageType) IsResponse() bool {
	switch t {
	case MsgAppResp, MsgVoteResp, MsgPreVoteResp:
		return true
	}
	return false
}

// Message is what Raft nodes send each other. Every field is exported and
// plain data, so any encoder can carry it.
type Message struct {
	Type MessageType
	To   NodeID
	From NodeID
	// Term is the sender's term; 0 only for local messages and proposals.
	Term Term
	// LogTerm is the term of the entry at Index: in MsgApp the entry before
	// Entries; in votes the candidate's last entry; in a rejecting
	// MsgAppResp the term of the follower's entry at RejectHint.
	LogTerm Term
	Index   Index
	Entries []Entry
	Commit  Index
	// Snapshot is set on MsgSnap only.
	Snapshot *Snapshot
	Reject   bool
	// RejectHint is, on a rejected MsgApp, the largest index the follower
	// may have in common with the leader.
	RejectHint Index
	// Context is opaque bytes: the read request's context for reads, and
	// campaignTransfer on votes caused by MsgTimeoutNow.
	Context []byte
}

// campaignTransfer marks a vote request that follows a leadership transfer:
// it must get past followers that still hear from the old leader.
const campaignTransfer = "CampaignTransfer"

func (m *Message) isTransferVote() bool {
	return (m.Type == MsgVote || m.Type == MsgPreVote) && string(m.Context) == campaignTransfer
}
