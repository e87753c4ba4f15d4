package core

import "errors"

var (
	// ErrProposalDropped means a proposal was not taken: this node is not
	// the leader (and cannot forward), a transfer is under way, or the
	// leader's uncommitted tail is full. The proposal will not commit.
	ErrProposalDropped = errors.New("core: proposal dropped")
	// ErrTooLarge means one proposal is larger than Config.MaxEntryBytes.
	ErrTooLarge = errors.New("core: proposal too large")
	// ErrMisrouted means a message was delivered to a node it was not for.
	ErrMisrouted = errors.New("core: message for another node")
	// ErrMalformed means a message from a peer breaks the protocol's shape
	// (entries out of order, an unknown type, a local type from the network).
	ErrMalformed = errors.New("core: malformed message")
	// ErrStepLocalMsg is returned when Step is given MsgHup or MsgBeat; the
	// host calls Campaign or Tick instead.
	ErrStepLocalMsg = errors.New("core: local message given to Step")
	// ErrCompacted is returned by Storage when the requested index has
	// been compacted into a snapshot.
	ErrCompacted = errors.New("core: requested index is compacted")
	// ErrUnavailable is returned by Storage when the requested index is
	// past the last entry it holds.
	ErrUnavailable = errors.New("core: requested entry is unavailable")
	// ErrSnapOutOfDate is returned by storage when a snapshot older than
	// the one it holds is offered.
	ErrSnapOutOfDate = errors.New("core: snapshot is older than the current one")
	// ErrConfig is wrapped by every configuration error from Validate.
	ErrConfig = errors.New("core: invalid config")
)
