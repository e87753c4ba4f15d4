package node

import (
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
)

// Every normal entry a node proposes is an envelope around the command:
//
//	byte     envelopeVersion
//	uvarint  origin node ID
//	uvarint  request ID (unique per origin: a random start per Start)
//	bytes    the command
//
// so that the proposer recognises its own command when it is applied, even
// after a follower forwarded it. Configuration entries carry the same
// origin and request ID, and the addresses of the members they add, in
// core.ConfChange.Context:
//
//	byte     contextVersion
//	uvarint  origin, uvarint request ID
//	members  (see appendMembers)

const (
	envelopeVersion = 1
	contextVersion  = 1
	membersVersion  = 1
	// maxAddrBytes bounds a member address.
	maxAddrBytes = 1024
	// maxMembers bounds the members in one list.
	maxMembers = 1 << 16
)

var errEnvelope = errors.New("node: malformed entry envelope")

// envelopeOverhead is the most bytes an envelope adds to a command.
const envelopeOverhead = 1 + 2*binary.MaxVarintLen64

func appendEnvelope(dst []byte, origin NodeID, req uint64, cmd []byte) []byte {
	dst = append(dst, envelopeVersion)
	dst = binary.AppendUvarint(dst, uint64(origin))
	dst = binary.AppendUvarint(dst, req)
	return append(dst, cmd...)
}

// parseEnvelope splits an entry's data; cmd aliases data.
func parseEnvelope(data []byte) (origin NodeID, req uint64, cmd []byte, err error) {
	if len(data) == 0 || data[0] != envelopeVersion {
		return 0, 0, nil, errEnvelope
	}
	b := data[1:]
	o, n := binary.Uvarint(b)
	if n <= 0 {
		return 0, 0, nil, errEnvelope
	}
	b = b[n:]
	r, n := binary.Uvarint(b)
	if n <= 0 {
		return 0, 0, nil, errEnvelope
	}
	return NodeID(o), r, b[n:], nil
}

// appendMembers encodes a member list: version, count, then ID and
// length-prefixed address of each, sorted by ID.
func appendMembers(dst []byte, ms []Member) []byte {
	ms = slices.Clone(ms)
	slices.SortFunc(ms, func(a, b Member) int { return cmp.Compare(a.ID, b.ID) })
	dst = append(dst, membersVersion)
	dst = binary.AppendUvarint(dst, uint64(len(ms)))
	for _, m := range ms {
		dst = binary.AppendUvarint(dst, uint64(m.ID))
		dst = binary.AppendUvarint(dst, uint64(len(m.Addr)))
		dst = append(dst, m.Addr...)
	}
	return dst
}

// parseMembers decodes a member list and returns the bytes after it.
func parseMembers(b []byte) ([]Member, []byte, error) {
	bad := func(what string) ([]Member, []byte, error) {
		return nil, nil, fmt.Errorf("node: malformed Member list: %s", what)
	}
	if len(b) == 0 || b[0] != membersVersion {
		return bad("version")
	}
	b = b[1:]
	n, k := binary.Uvarint(b)
	if k <= 0 || n > maxMembers || n > uint64(len(b)) {
		return bad("count")
	}
	b = b[k:]
	ms := make([]Member, 0, n)
	for range n {
		id, k := binary.Uvarint(b)
		if k <= 0 || id == 0 {
			return bad("id")
		}
		b = b[k:]
		l, k := binary.Uvarint(b)
		if k <= 0 || l > maxAddrBytes || l > uint64(len(b)-k) {
			return bad("address")
		}
		b = b[k:]
		ms = append(ms, Member{ID: NodeID(id), Addr: string(b[:l])})
		b = b[l:]
	}
	return ms, b, nil
}

// appendContext encodes a configuration change's context.
func appendContext(dst []byte, origin NodeID, req uint64, ms []Member) []byte {
	dst = append(dst, contextVersion)
	dst = binary.AppendUvarint(dst, uint64(origin))
	dst = binary.AppendUvarint(dst, req)
	return appendMembers(dst, ms)
}

// parseContext decodes a configuration change's context.
func parseContext(b []byte) (origin NodeID, req uint64, ms []Member, err error) {
	if len(b) == 0 || b[0] != contextVersion {
		return 0, 0, nil, errEnvelope
	}
	b = b[1:]
	o, n := binary.Uvarint(b)
	if n <= 0 {
		return 0, 0, nil, errEnvelope
	}
	b = b[n:]
	r, n := binary.Uvarint(b)
	if n <= 0 {
		return 0, 0, nil, errEnvelope
	}
	ms, rest, err := parseMembers(b[n:])
	if err != nil {
		return 0, 0, nil, err
	}
	if len(rest) != 0 {
		return 0, 0, nil, errEnvelope
	}
	return NodeID(o), r, ms, nil
}
