package node

import (
	"errors"
	"fmt"
	"maps"
	"time"

	"github.com/stepraft/stepraft/core"
)

// applyTask is what one Ready hands the apply goroutine: a snapshot to
// restore, then committed entries with the results of the configuration
// changes among them (applied to core already, in log order).
type applyTask struct {
	snap    *core.SnapshotMeta
	members map[NodeID]string // of snap
	entries []core.Entry
	confs   []confResult
}

// confResult is what applying a configuration entry to core gave.
type confResult struct {
	index   Index
	conf    core.ConfState
	err     error // core refused the change; it changes nothing
	origin  NodeID
	req     uint64
	members map[NodeID]string // after the change
}

// applier is the state of the apply goroutine.
type applier struct {
	n       *Node
	applied Index
	term    core.Term // of the entry at applied
	conf    core.ConfState
	members map[NodeID]string

	lastSnap  Index         // index of the newest snapshot taken or restored
	writing   bool          // a snapshot is being written or recorded
	writer    bool          // the writer goroutine runs
	written   chan snapDone // the writer's result
	recording chan error    // the loop's answer to recordC; nil if none asked
	waiters   []chan error  // Snapshot calls waiting for the next one
	snapReq   chan chan error
	// spawn runs the snapshot writer: on a goroutine, or in the
	// simulator as a scheduled event.
	spawn func(func())
	// record passes a written snapshot to the loop: on Node.recordC, or
	// in the simulator as a scheduled event.
	record func(recordRequest)
}

// recordRequest asks the loop to record a written snapshot in the log
// store and compact. The loop takes it from Node.recordC, which holds at
// most one: a snapshot is written only when the last one is recorded.
type recordRequest struct {
	meta    core.SnapshotMeta
	members []byte
	result  chan error // size 1
}

type snapDone struct {
	meta    core.SnapshotMeta
	members []byte // encoded, as of meta.Index
	err     error
}

func newApplier(n *Node, boot bootState) *applier {
	a := &applier{
		n: n, applied: boot.applied, term: boot.term, conf: boot.conf, members: maps.Clone(boot.members),
		lastSnap: boot.applied,
		written:  make(chan snapDone, 1),
		snapReq:  make(chan chan error),
	}
	if boot.rewriteSnapshot {
		a.lastSnap = 0 // so that the first maybeSnapshot writes one
	}
	return a
}

// run applies tasks until the node stops. A snapshot being written when
// the node stops is waited for.
func (a *applier) run() {
	n := a.n
	defer func() {
		if a.writer {
			<-a.written
		}
		for _, w := range a.waiters {
			w <- n.stoppedErr()
		}
	}()
	a.begin()
	for {
		var err error
		select {
		case <-n.stopC:
			return
		case t := <-n.applyC:
			err = a.onTask(t)
		case w := <-a.snapReq:
			a.onSnapshotRequest(w)
		case d := <-a.written:
			a.onWritten(d)
		case e := <-a.recording:
			err = a.onRecorded(e)
		}
		if err != nil {
			n.fail(err)
			return
		}
	}
}

// The applier is a step function too: run (or the simulator) calls begin
// once, then one of the on methods per input.

// begin writes at once a snapshot that could not be loaded at start.
func (a *applier) begin() {
	if a.lastSnap == 0 && a.applied > 0 {
		a.maybeSnapshot(true)
	}
}

// onTask applies one Ready's committed work.
func (a *applier) onTask(t applyTask) error {
	if err := a.do(t); err != nil {
		return err
	}
	a.maybeSnapshot(false)
	return nil
}

// onSnapshotRequest takes a Snapshot call's request.
func (a *applier) onSnapshotRequest(w chan error) {
	a.waiters = append(a.waiters, w)
	a.maybeSnapshot(true)
}

// onWritten takes the snapshot writer's result.
func (a *applier) onWritten(d snapDone) {
	a.writer = false
	a.snapshotWritten(d)
}

// onRecorded takes the loop's answer to a record request.
func (a *applier) onRecorded(err error) error {
	a.recording, a.writing = nil, false
	if err == nil {
		a.n.metrics.snapsTaken.Add(1)
		a.n.emit(Event{Type: EventSnapshotTaken, Index: a.lastSnap})
	}
	a.answer(err)
	return err
}

func (a *applier) do(t applyTask) error {
	if t.snap != nil && t.snap.Index > a.applied {
		if err := a.restore(*t.snap, t.members); err != nil {
			return err
		}
	}
	confs := t.confs
	// ApplyLatency times the batch, not each entry: two clock reads per
	// entry were a few percent of a small command's CPU.
	start := time.Now()
	for i := range t.entries {
		e := &t.entries[i]
		if e.Index <= a.applied {
			continue
		}
		if e.Type == core.EntryConfChange {
			if len(confs) == 0 || confs[0].index != e.Index {
				return fmt.Errorf("node: no result for configuration entry %d", e.Index)
			}
			a.applyConf(confs[0])
			confs = confs[1:]
		} else if err := a.applyNormal(e); err != nil {
			a.n.setApplied(a.applied)
			return err
		}
		a.applied, a.term = e.Index, e.Term
	}
	// Once per batch: each move of the applied index replaces a channel
	// that readers wait on.
	a.n.setApplied(a.applied)
	if len(t.entries) > 0 {
		a.n.metrics.applyLat.observe(time.Since(start))
	}
	return nil
}

func (a *applier) applyNormal(e *core.Entry) error {
	if len(e.Data) == 0 {
		return nil // a leader's empty entry
	}
	origin, req, cmd, err := parseEnvelope(e.Data)
	if err != nil {
		return fmt.Errorf("node: entry %d: %w", e.Index, err)
	}
	res, err := a.safeApply(e.Index, cmd)
	if err != nil {
		return err
	}
	if origin == a.n.cfg.ID {
		a.n.finishReq(req, res, nil)
	}
	return nil
}

// safeApply calls Apply and turns a panic into an error naming the index.
func (a *applier) safeApply(index Index, cmd []byte) (res any, err error) {
	a.n.smMu.Lock()
	defer a.n.smMu.Unlock()
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("node: state machine panicked applying entry %d: %v", index, p)
		}
	}()
	return a.n.sm.Apply(uint64(index), cmd), nil
}

func (a *applier) applyConf(c confResult) {
	if c.err == nil {
		a.conf = c.conf
		a.members = c.members
	}
	if c.origin == a.n.cfg.ID {
		err := c.err
		if err != nil {
			err = fmt.Errorf("node: configuration change refused: %w", err)
		}
		a.n.finishReq(c.req, nil, err)
	}
}

// restore replaces the state machine's state with snapshot meta.
func (a *applier) restore(meta core.SnapshotMeta, members map[NodeID]string) error {
	n := a.n
	_, body, err := n.snaps.Open(meta.Index, meta.Term)
	if err != nil {
		return fmt.Errorf("node: open received snapshot %d: %w", meta.Index, err)
	}
	defer body.Close()
	n.smMu.Lock()
	err = n.sm.Restore(uint64(meta.Index), body)
	n.smMu.Unlock()
	if err != nil {
		return fmt.Errorf("node: restore snapshot %d: %w", meta.Index, err)
	}
	a.applied, a.term, a.conf, a.members = meta.Index, meta.Term, meta.ConfState, maps.Clone(members)
	a.lastSnap = meta.Index
	n.setApplied(meta.Index)
	n.metrics.snapsReceived.Add(1)
	n.emit(Event{Type: EventSnapshotInstalled, Index: meta.Index})
	n.log.Info("restored snapshot", "index", uint64(meta.Index), "term", uint64(meta.Term))
	return nil
}

// maybeSnapshot starts writing a snapshot when SnapshotEntries entries
// were applied since the last one, or when asked (now).
func (a *applier) maybeSnapshot(now bool) {
	if a.writing || a.applied <= a.lastSnap {
		if !a.writing {
			a.answer(nil) // nothing new to snapshot
		}
		return
	}
	if !now && uint64(a.applied-a.lastSnap) < a.n.cfg.SnapshotEntries {
		return
	}
	n := a.n
	n.smMu.Lock()
	write, err := n.sm.Snapshot()
	n.smMu.Unlock()
	meta := core.SnapshotMeta{Index: a.applied, Term: a.term, ConfState: a.conf}
	if err != nil {
		n.log.Warn("state machine could not snapshot", "index", uint64(meta.Index), "err", err)
		a.answer(err)
		return
	}
	a.writing, a.writer = true, true
	a.lastSnap = meta.Index
	members := maps.Clone(a.members)
	a.spawn(func() {
		info := SnapshotInfo{Meta: meta, Members: memberList(members)}
		sink, err := n.snaps.Create(info)
		if err == nil {
			if err = write(sink); err != nil {
				err = errors.Join(err, sink.Abort())
			} else {
				err = sink.Commit()
			}
		}
		a.written <- snapDone{meta: meta, members: appendMembers(nil, info.Members), err: err}
	})
}

// snapshotWritten has the loop record a written snapshot and compact; the
// answer comes back on a.recording.
func (a *applier) snapshotWritten(d snapDone) {
	n := a.n
	if d.err != nil {
		n.log.Warn("snapshot not written", "index", uint64(d.meta.Index), "err", d.err)
		a.writing = false
		a.answer(d.err)
		return
	}
	a.recording = make(chan error, 1)
	a.record(recordRequest{meta: d.meta, members: d.members, result: a.recording})
}

// answer ends the Snapshot calls waiting.
func (a *applier) answer(err error) {
	for _, w := range a.waiters {
		w <- err
	}
	a.waiters = nil
}
