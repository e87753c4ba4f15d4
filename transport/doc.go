// Package transport carries core.Message between nodes.
//
// Transport is the interface a node uses: Send queues messages and never
// blocks; received messages go to a Handler, which also hears about
// unreachable peers, finished or failed snapshot sends, and this node's
// removal from the cluster. Two implementations:
//
//   - TCP (NewTCP): one outbound connection per peer, written by the
//     peer's own goroutine from a bounded queue (a full queue drops the
//     message and reports the peer unreachable); everything queued is
//     encoded into one reused buffer and written with one syscall. Dials
//     are retried with capped exponential backoff and jitter. Every
//     connection opens with a handshake (cluster ID, node IDs, the range
//     of wire versions each side speaks; the highest common one is used)
//     and optionally mutual TLS, with the peer's certificate bound to the
//     node ID it claims. Snapshots stream on connections of their own, in
//     chunks, from Handler.OpenSnapshot on the sender to
//     Handler.ReceiveSnapshot on the receiver; the MsgSnap is delivered
//     only after the whole body was committed.
//   - Memory (NewMemory): many nodes in one process, with seeded drop,
//     delay, duplication, reordering and partitions, for tests.
//
// # Wire format
//
// A frame is a uint32 big-endian length, a wire version byte and one
// msgpack value (wire.go describes the layout of version 1; handshake.go
// the handshake; snapshot.go the snapshot stream). The length is checked
// against Config.MaxFrameBytes before anything is allocated, a frame's
// buffer grows only as its bytes arrive, and the msgpack decoders are
// written by hand: each declared length is checked against the bytes left
// in the frame, so a hostile peer cannot make a node allocate more than it
// sent. Decoders skip fields appended by later versions. A bad frame
// closes its connection with one log line; other peers are not affected.
package transport
