// Package node is the Raft server an application embeds: it drives a
// core.Raft with a log store (the wal by default), a snapshot store (the
// snapshotter) and a transport (TCP by default), and applies committed
// commands to the application's StateMachine.
//
//	n, err := node.Start(node.Config{ID: 1, Peers: peers, DataDir: dir, StateMachine: sm})
//	res, err := n.Propose(ctx, cmd) // Apply's result, once applied here
//	v, err := n.Read(ctx, query)     // linearizable
//
// # Goroutines
//
// One goroutine owns the core (loop.go). Proposals, reads, received
// messages, transport reports and control calls reach it through bounded
// channels; whatever is waiting when it takes a Ready goes into that Ready:
// one log write, one fsync for every proposal that arrived meanwhile (up to
// MaxBatchBytes). Messages that are requests leave before the write;
// responses, which promise durability, after it. The write runs on a
// goroutine of its own, one at a time; meanwhile the loop goes on stepping
// messages and taking the next batch, and sends and applies what core's
// partial Readys hand out (core/doc.go), so a leader applies a batch once a
// follower acknowledges it, without waiting for its own next fsync. Configuration entries are
// applied to core by the loop as it hands them out, in log order, and the
// transport's peers follow. Committed entries go to the apply goroutine
// (apply.go), which calls StateMachine.Apply while the loop writes the next
// batch, answers proposals made here, and takes a snapshot every
// SnapshotEntries entries (written by its own goroutine while Apply goes
// on); the loop then records it in the log and compacts, keeping
// TrailingEntries and never passing the oldest snapshot kept.
//
// # Ending
//
// Every Propose and Read ends within RequestTimeoutTicks, whatever its
// context. A failed log write stops the node (fail-stop): Done closes and
// Err says why; so do a panic in Apply (the error names the index) and
// the cluster telling this node it was removed (ErrRemoved). Stop ends
// every goroutine and closes the stores.
package node
