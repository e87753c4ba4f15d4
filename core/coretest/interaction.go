package coretest

// Interaction runs the golden "interaction" scripts of core (core/testdata/*.txt,
// read by github.com/cockroachdb/datadriven): each command acts on a Cluster
// and returns the trace it caused, which datadriven compares with the script.
//
// Arguments are datadriven's: bare words (node IDs, proposal data) and
// key=value or key=(v1, v2). Node lists are bare IDs; an empty list means
// every node. Commands:
//
//	bootstrap 1 2 3 [seed=1] [prevote=false] [checkquorum=false]
//	          [election=10] [heartbeat=1] [max-inflight=256]
//	          [max-inflight-bytes=0] [max-msg-bytes=...] [max-entry-bytes=...]
//	          [max-uncommitted-bytes=0] [max-apply-bytes=...] [voters=(1,2,3,4)]
//	          [learners=(5,6)] [read-only=safe|lease] [no-forwarding]
//	    founding members sharing a snapshot at 1 (term 1) that names them,
//	    with hard state {1,0,1}; the options fill core.Config (seed 1 unless set;
//	    read-only= sets ReadOnly, no-forwarding DisableProposalForwarding).
//	    voters= names the initial voters instead, learners= the initial
//	    learners (without voters=, the nodes not among the learners vote);
//	    every node bootstrapped must be one or the other. A member of the
//	    configuration left out of the nodes joins later with add-node, as if
//	    a configuration change had added it; so does a node outside it, to be
//	    added with conf-change.
//	add-node N                  start node N on an empty MemoryStorage: a member
//	                            joining with an empty configuration.
//	campaign N                  N starts an election (Campaign).
//	propose N data...           one proposal per word; prints each refusal.
//	conf-change N [transition=auto|implicit|explicit] [ctx=STRING]
//	            [add=ID,...] [learner=ID,...] [remove=ID,...]
//	conf-change N leave [ctx=STRING]
//	                            ProposeConfChange on N: the changes in the
//	                            order of the arguments (add: AddNode, learner:
//	                            AddLearner, remove: RemoveNode; a list is
//	                            ID,ID or (ID, ID)); leave is the empty change
//	                            that leaves a joint configuration. Prints the
//	                            refusal, if any.
//	read-index N ctx=STRING     ReadIndex on N; prints the refusal, if any. The
//	                            answer shows as a ReadState in a later Ready.
//	transfer-leadership N TO    TransferLeadership(TO) on N (TO need not be a
//	                            node of the cluster).
//	process-ready [N...]        one full Ready cycle per node (persist, send,
//	                            apply, Advance); a node with a write pending
//	                            (see below) finishes that one first. The
//	                            Ready shows ReadStates and DroppedProposals;
//	                            after it, each committed conf change it
//	                            carried is shown as the host applied it:
//	                            "conf change I applied: CHANGE -> CONFIG" (the
//	                            ConfState ApplyConfChange returned; left out
//	                            for all but the last one applied in the Ready)
//	                            or "conf change I refused: CHANGE: ERROR"
//	                            (Node.ConfErrs). stabilize and finish-ready
//	                            show the same.
//	process-ready N... early    take the Ready and send its requests at once,
//	                            but stop before the write: responses, our own
//	                            vote and our own append acknowledgement wait.
//	finish-ready [N...]         persist, send responses, apply and Advance a
//	                            Ready taken with "early".
//	partial-ready [N...]        while a Ready taken with "early" is pending:
//	                            apply its committed entries below its
//	                            Entries, take PartialReady, send its requests
//	                            and apply its committed entries.
//	deliver-msgs [from=..] [to=..] [type=..] [count=K]
//	                            deliver messages in flight (grouped by receiver,
//	                            in order per receiver) and print each, with the
//	                            error Step returned or why it was dropped.
//	drop [from=..] [to=..] [type=..] [count=K]
//	                            remove messages in flight without delivering them.
//	net                         list the messages in flight.
//	partition 1,2 3,4,5         cut every link between the groups.
//	isolate N                   cut N off from everyone.
//	cut A B                     drop messages from A to B (one direction).
//	heal                        restore every link.
//	tick [N...] [count=1]       tick the nodes.
//	tick-heartbeat [N...]       tick HeartbeatTicks times.
//	tick-election [N...]        a leader ticks ElectionTicks times (one
//	                            check-quorum round); any other node ticks until
//	                            it campaigns (its role or term changes, or vote
//	                            requests appear), at most 2*ElectionTicks times,
//	                            and says how many it took.
//	stabilize [N...] [rounds=100]
//	                            process-ready and deliver-msgs until nothing
//	                            is left to do, printing everything.
//	crash N                     the node stops; its storage keeps what was
//	                            written; a pending Ready is lost.
//	crash N lose-unsynced       a power failure: also undo the writes made since
//	                            the last synced one (a hard state written without
//	                            MustSync) and print what was lost. The
//	                            application's state survives.
//	restart N                   the node comes back from its storage, with
//	                            Config.Applied = the last index it applied.
//	restart N from-snapshot     the application kept no state: it restores the
//	                            storage's snapshot, and Config.Applied is 0.
//	restart N applied=K         pass Config.Applied = K, whatever the application
//	                            holds (to show what core refuses).
//	snapshot N                  the application snapshots its state at its
//	                            applied index into N's storage (Node.TakeSnapshot);
//	                            prints the snapshot and the state it holds.
//	compact N INDEX             MemoryStorage.Compact(INDEX) on N's storage.
//	report-snapshot LEADER PEER ok|fail
//	                            tell the leader whether the snapshot sent to PEER
//	                            arrived (ReportSnapshot).
//	report-unreachable LEADER PEER
//	status [N...]               role, term, vote, lead, commit, applied, a
//	                            leader's transfer target (transferee=) if one is
//	                            under way, the configuration in force
//	                            (Status.Config), and on a leader each member's
//	                            progress.
//	log [N...]                  the stored snapshot, hard state and entries,
//	                            the commit and applied indexes, the
//	                            application's state (index/digest), and the
//	                            entries of a Ready whose write is pending.
//	raw-step N type=T from=F [to=N] [term=] [logterm=] [index=] [commit=]
//	          [ents=(term/index[:data], ...)] [reject] [hint=] [context=]
//	          [snap=index/term [voters=(..)] [learners=(..)]]
//	                            hand a crafted message to N's Step and print
//	                            the error it returns. A snapshot made this way
//	                            carries no data: it holds the state at its
//	                            index with a zero digest. An entry written
//	                            term/index:conf(ARGS) is an EntryConfChange
//	                            carrying the change conf-change would propose
//	                            with ARGS, e.g. 2/3:conf(add=4,5 transition=explicit)
//	                            or 2/4:conf(leave).
//	log-level debug|info|warn|none
//	                            which of core's log records appear in the trace
//	                            (default info).
//
// A Ready that carries a snapshot prints, once handled, the state the
// application restored from it ("restored snapshot: state=index/digest").
//
// After every command the interaction checks the cluster: core's own
// CheckInvariants on every live node, at most one leader per term, and
// that applied entries agree across nodes. A violation is printed.
//
// Later issues add commands with Register.

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/cockroachdb/datadriven"

	"github.com/stepraft/stepraft/core"
)

// Command runs one script command and writes its trace with in.Printf.
// A returned error is printed as the command's outcome.
type Command func(in *Interaction, t *testing.T, d *datadriven.TestData) error

// Interaction interprets one script: it owns a Cluster (created by
// bootstrap) and the text the current command produces.
type Interaction struct {
	C *Cluster

	out    strings.Builder
	indent string
	level  slog.Level
	cmds   map[string]Command
	// leaders records the leader seen in each term (election safety).
	leaders map[core.Term]core.NodeID
}

// levelNone hides every log record.
const levelNone = slog.Level(100)

// NewInteraction returns an interpreter with the built-in commands.
func NewInteraction() *Interaction {
	in := &Interaction{
		level:   slog.LevelInfo,
		cmds:    map[string]Command{},
		leaders: map[core.Term]core.NodeID{},
	}
	for name, cmd := range map[string]Command{
		"bootstrap":           (*Interaction).cmdBootstrap,
		"campaign":            (*Interaction).cmdCampaign,
		"propose":             (*Interaction).cmdPropose,
		"conf-change":         (*Interaction).cmdConfChange,
		"read-index":          (*Interaction).cmdReadIndex,
		"transfer-leadership": (*Interaction).cmdTransferLeadership,
		"process-ready":       (*Interaction).cmdProcessReady,
		"finish-ready":        (*Interaction).cmdFinishReady,
		"partial-ready":       (*Interaction).cmdPartialReady,
		"deliver-msgs":        (*Interaction).cmdDeliver,
		"drop":                (*Interaction).cmdDrop,
		"net":                 (*Interaction).cmdNet,
		"partition":           (*Interaction).cmdPartition,
		"isolate":             (*Interaction).cmdIsolate,
		"cut":                 (*Interaction).cmdCut,
		"heal":                (*Interaction).cmdHeal,
		"tick":                (*Interaction).cmdTick,
		"tick-heartbeat":      (*Interaction).cmdTickHeartbeat,
		"tick-election":       (*Interaction).cmdTickElection,
		"stabilize":           (*Interaction).cmdStabilize,
		"crash":               (*Interaction).cmdCrash,
		"restart":             (*Interaction).cmdRestart,
		"report-unreachable":  (*Interaction).cmdReportUnreachable,
		"report-snapshot":     (*Interaction).cmdReportSnapshot,
		"snapshot":            (*Interaction).cmdSnapshot,
		"compact":             (*Interaction).cmdCompact,
		"add-node":            (*Interaction).cmdAddNode,
		"status":              (*Interaction).cmdStatus,
		"log":                 (*Interaction).cmdLog,
		"raw-step":            (*Interaction).cmdRawStep,
		"log-level":           (*Interaction).cmdLogLevel,
	} {
		in.Register(name, cmd)
	}
	return in
}

// Register adds (or replaces) a command.
func (in *Interaction) Register(name string, cmd Command) { in.cmds[name] = cmd }

// Handle runs one datadriven directive and returns its trace.
func (in *Interaction) Handle(t *testing.T, d *datadriven.TestData) string {
	in.out.Reset()
	in.indent = ""
	cmd, ok := in.cmds[d.Cmd]
	if !ok {
		d.Fatalf(t, "unknown command %q", d.Cmd)
	}
	if d.Cmd != "bootstrap" && in.C == nil {
		d.Fatalf(t, "%s before bootstrap", d.Cmd)
	}
	if err := cmd(in, t, d); err != nil {
		in.indent = ""
		in.Printf("error: %v\n", err)
	}
	in.indent = ""
	in.check(t, d)
	if in.out.Len() == 0 {
		return "ok\n"
	}
	return in.out.String()
}

// Printf writes to the trace at the current indentation, line by line.
func (in *Interaction) Printf(format string, args ...any) {
	s := fmt.Sprintf(format, args...)
	for line := range strings.Lines(s) {
		in.out.WriteString(in.indent)
		in.out.WriteString(line)
	}
}

// node returns a member or fails the test.
func (in *Interaction) node(t *testing.T, d *datadriven.TestData, id core.NodeID) *Node {
	n := in.C.Node(id)
	if n == nil {
		d.Fatalf(t, "no node %d", id)
	}
	return n
}

// nodeArgs returns the bare numeric arguments as node IDs; none means all.
func (in *Interaction) nodeArgs(t *testing.T, d *datadriven.TestData) []core.NodeID {
	var ids []core.NodeID
	for _, a := range d.CmdArgs {
		if len(a.Vals) > 0 {
			continue
		}
		id, err := strconv.ParseUint(a.Key, 10, 64)
		if err != nil {
			continue
		}
		in.node(t, d, core.NodeID(id))
		ids = append(ids, core.NodeID(id))
	}
	if len(ids) == 0 && in.C != nil {
		ids = slices.Clone(in.C.IDs())
	}
	return ids
}

// oneNode returns the single node argument.
func (in *Interaction) oneNode(t *testing.T, d *datadriven.TestData) *Node {
	if len(d.CmdArgs) == 0 || len(d.CmdArgs[0].Vals) > 0 {
		d.Fatalf(t, "%s needs a node ID first", d.Cmd)
	}
	id, err := strconv.ParseUint(d.CmdArgs[0].Key, 10, 64)
	if err != nil {
		d.Fatalf(t, "%s: bad node ID %q", d.Cmd, d.CmdArgs[0].Key)
	}
	return in.node(t, d, core.NodeID(id))
}

// live returns the node's Raft or an error saying it is down.
func live(n *Node) (*core.Raft, error) {
	if n.Down {
		return nil, fmt.Errorf("node %d is down", n.ID)
	}
	return n.Raft, nil
}

func (in *Interaction) cmdBootstrap(t *testing.T, d *datadriven.TestData) error {
	if in.C != nil {
		d.Fatalf(t, "bootstrap twice")
	}
	cfg := core.Config{Seed: 1, Logger: slog.New(&traceHandler{in: in})}
	var ids, voters, learners []core.NodeID
	for _, a := range d.CmdArgs {
		if a.Key == "no-forwarding" && len(a.Vals) == 0 {
			cfg.DisableProposalForwarding = true
			continue
		}
		if len(a.Vals) == 0 {
			id, err := strconv.ParseUint(a.Key, 10, 64)
			if err != nil {
				d.Fatalf(t, "bad node ID %q", a.Key)
			}
			ids = append(ids, core.NodeID(id))
			continue
		}
		switch a.Key {
		case "seed":
			a.Scan(t, 0, &cfg.Seed)
		case "prevote":
			var on bool
			a.Scan(t, 0, &on)
			cfg.DisablePreVote = !on
		case "checkquorum":
			var on bool
			a.Scan(t, 0, &on)
			cfg.DisableCheckQuorum = !on
		case "election":
			a.Scan(t, 0, &cfg.ElectionTicks)
		case "heartbeat":
			a.Scan(t, 0, &cfg.HeartbeatTicks)
		case "max-inflight":
			a.Scan(t, 0, &cfg.MaxInflightMsgs)
		case "max-inflight-bytes":
			a.Scan(t, 0, &cfg.MaxInflightBytes)
		case "max-msg-bytes":
			a.Scan(t, 0, &cfg.MaxMsgBytes)
		case "max-entry-bytes":
			a.Scan(t, 0, &cfg.MaxEntryBytes)
		case "max-uncommitted-bytes":
			a.Scan(t, 0, &cfg.MaxUncommittedBytes)
		case "max-apply-bytes":
			a.Scan(t, 0, &cfg.MaxApplyBytes)
		case "voters":
			voters = scanIDs(t, d, a)
		case "learners":
			learners = scanIDs(t, d, a)
		case "read-only":
			switch a.Vals[0] {
			case "safe":
				cfg.ReadOnly = core.ReadOnlySafe
			case "lease":
				cfg.ReadOnly = core.ReadOnlyLeaseBased
			default:
				d.Fatalf(t, "bootstrap: read-only=safe|lease, not %q", a.Vals[0])
			}
		default:
			d.Fatalf(t, "unknown bootstrap option %q", a.Key)
		}
	}
	if len(ids) == 0 {
		d.Fatalf(t, "bootstrap needs node IDs")
	}
	in.C = NewCluster(cfg)
	if voters == nil && learners == nil {
		return in.C.Bootstrap(ids...)
	}
	if voters == nil {
		for _, id := range ids {
			if !slices.Contains(learners, id) {
				voters = append(voters, id)
			}
		}
	}
	for _, id := range learners {
		if slices.Contains(voters, id) {
			d.Fatalf(t, "bootstrap: node %d is both voter and learner", id)
		}
	}
	cs := core.ConfState{Voters: voters, Learners: learners}
	for _, id := range ids {
		if !slices.Contains(voters, id) && !slices.Contains(learners, id) {
			d.Fatalf(t, "bootstrap: node %d is neither among voters %v nor learners %v", id, voters, learners)
		}
		s, err := bootstrapStorageWith(cs)
		if err != nil {
			return err
		}
		if err := in.C.AddNode(id, s); err != nil {
			return err
		}
	}
	return nil
}

// bootstrapStorageWith is BootstrapStorage for any initial configuration: a
// snapshot at index 1, term 1 carrying cs, and hard state {1,0,1}.
func bootstrapStorageWith(cs core.ConfState) (*core.MemoryStorage, error) {
	s := core.NewMemoryStorage()
	cs.Voters, cs.Learners = slices.Clone(cs.Voters), slices.Clone(cs.Learners)
	snap := core.Snapshot{Meta: core.SnapshotMeta{Index: 1, Term: 1, ConfState: cs}}
	if err := s.ApplySnapshot(snap); err != nil {
		return nil, err
	}
	if err := s.SetHardState(core.HardState{Term: 1, Commit: 1}); err != nil {
		return nil, err
	}
	return s, nil
}

// scanIDs reads the values of a key=(1,2,3) argument as node IDs.
func scanIDs(t *testing.T, d *datadriven.TestData, a datadriven.CmdArg) []core.NodeID {
	if len(a.Vals) == 0 {
		d.Fatalf(t, "%s= needs node IDs", a.Key)
	}
	ids := make([]core.NodeID, len(a.Vals))
	for i := range a.Vals {
		var id uint64
		a.Scan(t, i, &id)
		if id == 0 {
			d.Fatalf(t, "%s=: node ID 0", a.Key)
		}
		ids[i] = core.NodeID(id)
	}
	return ids
}

func (in *Interaction) cmdAddNode(t *testing.T, d *datadriven.TestData) error {
	if len(d.CmdArgs) != 1 || len(d.CmdArgs[0].Vals) > 0 {
		d.Fatalf(t, "add-node N")
	}
	id, err := strconv.ParseUint(d.CmdArgs[0].Key, 10, 64)
	if err != nil || id == 0 {
		d.Fatalf(t, "add-node: bad node ID %q", d.CmdArgs[0].Key)
	}
	if in.C.Node(core.NodeID(id)) != nil {
		d.Fatalf(t, "add-node: node %d exists", id)
	}
	return in.C.AddNode(core.NodeID(id), core.NewMemoryStorage())
}

func (in *Interaction) cmdCampaign(t *testing.T, d *datadriven.TestData) error {
	r, err := live(in.oneNode(t, d))
	if err != nil {
		return err
	}
	return r.Campaign()
}

func (in *Interaction) cmdPropose(t *testing.T, d *datadriven.TestData) error {
	r, err := live(in.oneNode(t, d))
	if err != nil {
		return err
	}
	for _, a := range d.CmdArgs[1:] {
		if err := r.Propose([]byte(a.Key)); err != nil {
			in.Printf("propose %q: %v\n", a.Key, err)
		}
	}
	return nil
}

func (in *Interaction) cmdConfChange(t *testing.T, d *datadriven.TestData) error {
	n := in.oneNode(t, d)
	var words []string
	for _, a := range d.CmdArgs[1:] {
		if len(a.Vals) == 0 {
			words = append(words, a.Key)
			continue
		}
		words = append(words, a.Key+"="+strings.Join(a.Vals, ","))
	}
	cc, err := parseConfChangeArgs(words)
	if err != nil {
		d.Fatalf(t, "conf-change: %v", err)
	}
	r, err := live(n)
	if err != nil {
		return err
	}
	if err := r.ProposeConfChange(cc); err != nil {
		in.Printf("conf-change %s: %v\n", confChangeText(cc), err)
	}
	return nil
}

// parseConfChangeArgs reads a conf change from words of the form add=ID,...,
// learner=ID,..., remove=ID,..., transition=auto|implicit|explicit,
// ctx=STRING, or leave. The changes keep the order of the words.
func parseConfChangeArgs(words []string) (core.ConfChange, error) {
	var cc core.ConfChange
	leave := false
	for _, w := range words {
		key, val, hasVal := strings.Cut(w, "=")
		if !hasVal {
			if w != "leave" {
				return cc, fmt.Errorf("unknown argument %q", w)
			}
			leave = true
			continue
		}
		var typ core.ConfChangeType
		switch key {
		case "transition":
			switch val {
			case "auto":
				cc.Transition = core.ConfChangeTransitionAuto
			case "implicit":
				cc.Transition = core.ConfChangeTransitionJointImplicit
			case "explicit":
				cc.Transition = core.ConfChangeTransitionJointExplicit
			default:
				return cc, fmt.Errorf("transition=auto|implicit|explicit, not %q", val)
			}
			continue
		case "ctx":
			cc.Context = []byte(val)
			continue
		case "add":
			typ = core.ConfChangeAddNode
		case "learner":
			typ = core.ConfChangeAddLearner
		case "remove":
			typ = core.ConfChangeRemoveNode
		default:
			return cc, fmt.Errorf("unknown argument %q", key)
		}
		for f := range strings.SplitSeq(val, ",") {
			id, err := strconv.ParseUint(strings.TrimSpace(f), 10, 64)
			if err != nil {
				return cc, fmt.Errorf("%s=: bad node ID %q", key, f)
			}
			cc.Changes = append(cc.Changes, core.ConfChangeSingle{Type: typ, NodeID: core.NodeID(id)})
		}
	}
	switch {
	case leave && len(cc.Changes) > 0:
		return cc, fmt.Errorf("leave takes no changes")
	case !leave && len(cc.Changes) == 0:
		return cc, fmt.Errorf("no changes (say leave to leave a joint configuration)")
	}
	return cc, nil
}

// confChangeText renders a conf change on one line for the trace:
// "AddNode(4) RemoveNode(1) transition=explicit ctx=\"...\"" or "leave".
func confChangeText(cc core.ConfChange) string {
	var parts []string
	if cc.LeavesJoint() {
		parts = append(parts, "leave")
	}
	for _, c := range cc.Changes {
		parts = append(parts, fmt.Sprintf("%s(%d)", c.Type, c.NodeID))
	}
	switch cc.Transition {
	case core.ConfChangeTransitionJointImplicit:
		parts = append(parts, "transition=implicit")
	case core.ConfChangeTransitionJointExplicit:
		parts = append(parts, "transition=explicit")
	}
	if len(cc.Context) > 0 {
		parts = append(parts, fmt.Sprintf("ctx=%q", cc.Context))
	}
	return strings.Join(parts, " ")
}

func (in *Interaction) cmdReadIndex(t *testing.T, d *datadriven.TestData) error {
	n := in.oneNode(t, d)
	if len(d.CmdArgs) != 2 || d.CmdArgs[1].Key != "ctx" || len(d.CmdArgs[1].Vals) != 1 {
		d.Fatalf(t, "read-index N ctx=STRING")
	}
	ctx := d.CmdArgs[1].Vals[0]
	r, err := live(n)
	if err != nil {
		return err
	}
	if err := r.ReadIndex([]byte(ctx)); err != nil {
		in.Printf("read-index %q: %v\n", ctx, err)
	}
	return nil
}

func (in *Interaction) cmdTransferLeadership(t *testing.T, d *datadriven.TestData) error {
	n := in.oneNode(t, d)
	if len(d.CmdArgs) != 2 || len(d.CmdArgs[1].Vals) > 0 {
		d.Fatalf(t, "transfer-leadership N TO")
	}
	to, err := strconv.ParseUint(d.CmdArgs[1].Key, 10, 64)
	if err != nil {
		d.Fatalf(t, "transfer-leadership: bad target %q", d.CmdArgs[1].Key)
	}
	r, err := live(n)
	if err != nil {
		return err
	}
	r.TransferLeadership(core.NodeID(to))
	return nil
}

// printConfChanges shows how the host applied the conf changes among the
// committed entries of the Ready just handled: the configuration
// ApplyConfChange returned, or its refusal (the ConfErrs past errsBefore).
func (in *Interaction) printConfChanges(n *Node, ents []core.Entry, errsBefore int) {
	refused := map[core.Index]string{}
	for _, e := range n.ConfErrs[errsBefore:] {
		idx, msg, _ := strings.Cut(e, ": ")
		i, err := strconv.ParseUint(idx, 10, 64)
		if err != nil {
			panic(fmt.Sprintf("node %d: ConfErrs entry %q", n.ID, e))
		}
		refused[core.Index(i)] = msg
	}
	last := core.Index(0)
	for _, e := range ents {
		if _, bad := refused[e.Index]; e.Type == core.EntryConfChange && !bad {
			last = e.Index
		}
	}
	for _, e := range ents {
		if e.Type != core.EntryConfChange {
			continue
		}
		var cc core.ConfChange
		if err := cc.Unmarshal(e.Data); err != nil {
			// FinishReady has already refused to go on.
			panic(fmt.Sprintf("node %d: conf change %s: %v", n.ID, core.DescribeEntry(e), err))
		}
		switch msg, bad := refused[e.Index]; {
		case bad:
			in.Printf("conf change %d refused: %s: %s\n", e.Index, confChangeText(cc), msg)
		case e.Index == last:
			in.Printf("conf change %d applied: %s -> %s\n", e.Index, confChangeText(cc), core.DescribeConfState(n.ConfState))
		default:
			in.Printf("conf change %d applied: %s\n", e.Index, confChangeText(cc))
		}
	}
}

func (in *Interaction) cmdProcessReady(t *testing.T, d *datadriven.TestData) error {
	early := d.HasArg("early")
	for _, id := range in.nodeArgs(t, d) {
		n := in.C.Node(id)
		switch {
		case n.Down:
			in.Printf("> %d is down\n", id)
		case early:
			in.startReady(n)
		default:
			if n.pending != nil {
				if err := in.finishReady(n); err != nil {
					return err
				}
			}
			if !in.handleReady(n) {
				in.Printf("> %d has no Ready\n", id)
			}
		}
	}
	return nil
}

func (in *Interaction) cmdPartialReady(t *testing.T, d *datadriven.TestData) error {
	for _, id := range in.nodeArgs(t, d) {
		n := in.C.Node(id)
		applied := len(n.Applied)
		rd, ok, err := n.ApplyPartial(in.C)
		if err != nil {
			return err
		}
		if !ok {
			in.Printf("> %d has no partial Ready\n", id)
			continue
		}
		in.Printf("> %d handling partial Ready (write still pending)\n", id)
		in.indent = "  "
		if early := len(n.Applied) - applied - len(rd.CommittedEntries); early > 0 {
			in.Printf("applied before the write: %d..%d\n", n.Applied[applied].Index, n.Applied[applied+early-1].Index)
		}
		in.Printf("%s", core.DescribeReady(rd))
		in.indent = ""
	}
	return nil
}

func (in *Interaction) cmdFinishReady(t *testing.T, d *datadriven.TestData) error {
	for _, id := range in.nodeArgs(t, d) {
		n := in.C.Node(id)
		if n.pending == nil {
			in.Printf("> %d has no pending write\n", id)
			continue
		}
		if err := in.finishReady(n); err != nil {
			return err
		}
	}
	return nil
}

// startReady takes a Ready and sends its requests, leaving the write
// pending. It reports whether there was a Ready.
func (in *Interaction) startReady(n *Node) bool {
	if n.pending != nil {
		in.Printf("> %d has a write pending\n", n.ID)
		return false
	}
	rd, ok := n.StartReady(in.C)
	if !ok {
		in.Printf("> %d has no Ready\n", n.ID)
		return false
	}
	in.Printf("> %d handling Ready (requests sent early, write pending)\n", n.ID)
	in.indent = "  "
	in.Printf("%s", core.DescribeReady(rd))
	in.indent = ""
	return true
}

// finishReady completes a pending Ready: the write, responses, apply, Advance.
func (in *Interaction) finishReady(n *Node) error {
	in.Printf("> %d finishing Ready (persisted; responses sent; applied; advanced)\n", n.ID)
	in.indent = "  "
	defer func() { in.indent = "" }()
	rd := *n.pending
	errsBefore := len(n.ConfErrs)
	if err := n.FinishReady(in.C); err != nil {
		return err
	}
	in.printRestored(n, !rd.Snapshot.IsEmpty())
	in.printConfChanges(n, rd.CommittedEntries, errsBefore)
	return nil
}

// printRestored shows the state the application restored from the
// snapshot of the Ready just handled, if it carried one.
func (in *Interaction) printRestored(n *Node, snap bool) {
	if snap {
		in.Printf("restored snapshot: state=%s\n", n.State)
	}
}

// handleReady runs one whole Ready cycle, printing the Ready and whatever
// Advance caused. It reports whether there was a Ready.
func (in *Interaction) handleReady(n *Node) bool {
	if n.Down || n.pending != nil || !n.Raft.HasReady() {
		return false
	}
	in.Printf("> %d handling Ready\n", n.ID)
	in.indent = "  "
	defer func() { in.indent = "" }()
	rd, _ := n.StartReady(in.C)
	in.Printf("%s", core.DescribeReady(rd))
	errsBefore := len(n.ConfErrs)
	if err := n.FinishReady(in.C); err != nil {
		// MemoryStorage refusing a Ready is a bug of core or of the harness.
		panic(fmt.Sprintf("node %d: %v", n.ID, err))
	}
	in.printRestored(n, !rd.Snapshot.IsEmpty())
	in.printConfChanges(n, rd.CommittedEntries, errsBefore)
	return true
}

// msgFilter parses from=, to=, type= and count= into a predicate.
func msgFilter(t *testing.T, d *datadriven.TestData) func(core.Message) bool {
	var from, to []core.NodeID
	var types []core.MessageType
	count := -1
	for _, a := range d.CmdArgs {
		switch a.Key {
		case "from", "to":
			for i := range a.Vals {
				var id uint64
				a.Scan(t, i, &id)
				if a.Key == "from" {
					from = append(from, core.NodeID(id))
				} else {
					to = append(to, core.NodeID(id))
				}
			}
		case "type":
			for _, v := range a.Vals {
				mt, err := parseMsgType(v)
				if err != nil {
					d.Fatalf(t, "%v", err)
				}
				types = append(types, mt)
			}
		case "count":
			a.Scan(t, 0, &count)
		}
	}
	return func(m core.Message) bool {
		if (len(from) > 0 && !slices.Contains(from, m.From)) ||
			(len(to) > 0 && !slices.Contains(to, m.To)) ||
			(len(types) > 0 && !slices.Contains(types, m.Type)) || count == 0 {
			return false
		}
		if count > 0 {
			count--
		}
		return true
	}
}

func parseMsgType(s string) (core.MessageType, error) {
	for t := core.MessageType(1); t < 255; t++ {
		if t.String() == s {
			return t, nil
		}
		if strings.HasPrefix(t.String(), "MessageType(") {
			break
		}
	}
	if n, err := strconv.ParseUint(s, 10, 8); err == nil {
		return core.MessageType(n), nil
	}
	return 0, fmt.Errorf("unknown message type %q", s)
}

func (in *Interaction) cmdDeliver(t *testing.T, d *datadriven.TestData) error {
	if in.deliver(nil, msgFilter(t, d)) == 0 {
		in.Printf("no messages\n")
	}
	return nil
}

// deliver delivers the matching messages in flight to nodes (nil: all),
// receiver by receiver (in network order for each), and returns how many
// it took off the network. Each message is printed before the log records
// its Step causes.
func (in *Interaction) deliver(nodes []core.NodeID, keep func(core.Message) bool) int {
	byTo := map[core.NodeID][]core.Message{}
	var rest []core.Message
	n := 0
	for _, m := range in.C.Net {
		if (nodes == nil || slices.Contains(nodes, m.To)) && keep(m) {
			byTo[m.To] = append(byTo[m.To], m)
			n++
		} else {
			rest = append(rest, m)
		}
	}
	in.C.Net = rest
	tos := make([]core.NodeID, 0, len(byTo))
	for to := range byTo {
		tos = append(tos, to)
	}
	slices.Sort(tos)
	for _, to := range tos {
		in.Printf("> %d receiving messages\n", to)
		in.indent = "  "
		for _, m := range byTo[to] {
			if why := in.C.Blocked(m); why != "" {
				in.Printf("%s (dropped: %s)\n", core.DescribeMessage(m), why)
				continue
			}
			in.Printf("%s\n", core.DescribeMessage(m))
			in.indent = "    "
			if dl := in.C.DeliverMsg(m); dl.Err != nil {
				in.Printf("error: %v\n", dl.Err)
			}
			in.indent = "  "
		}
		in.indent = ""
	}
	return n
}

func (in *Interaction) cmdDrop(t *testing.T, d *datadriven.TestData) error {
	dropped := in.C.Drop(msgFilter(t, d))
	if len(dropped) == 0 {
		in.Printf("no messages\n")
	}
	for _, m := range dropped {
		in.Printf("dropped: %s\n", core.DescribeMessage(m))
	}
	return nil
}

func (in *Interaction) cmdNet(t *testing.T, d *datadriven.TestData) error {
	if len(in.C.Net) == 0 {
		in.Printf("no messages\n")
	}
	for _, m := range in.C.Net {
		in.Printf("%s\n", core.DescribeMessage(m))
	}
	return nil
}

func (in *Interaction) cmdPartition(t *testing.T, d *datadriven.TestData) error {
	var groups [][]core.NodeID
	for _, a := range d.CmdArgs {
		var g []core.NodeID
		for f := range strings.SplitSeq(a.Key, ",") {
			id, err := strconv.ParseUint(f, 10, 64)
			if err != nil {
				d.Fatalf(t, "bad group %q", a.Key)
			}
			g = append(g, core.NodeID(id))
		}
		groups = append(groups, g)
	}
	in.C.Partition(groups...)
	return nil
}

func (in *Interaction) cmdIsolate(t *testing.T, d *datadriven.TestData) error {
	n := in.oneNode(t, d)
	var rest []core.NodeID
	for _, id := range in.C.IDs() {
		if id != n.ID {
			rest = append(rest, id)
		}
	}
	in.C.Partition([]core.NodeID{n.ID}, rest)
	return nil
}

func (in *Interaction) cmdCut(t *testing.T, d *datadriven.TestData) error {
	ids := in.nodeArgs(t, d)
	if len(d.CmdArgs) != 2 {
		d.Fatalf(t, "cut FROM TO")
	}
	in.C.Cut(ids[0], ids[1])
	return nil
}

func (in *Interaction) cmdHeal(t *testing.T, d *datadriven.TestData) error {
	in.C.Heal()
	return nil
}

func (in *Interaction) cmdTick(t *testing.T, d *datadriven.TestData) error {
	count := 1
	d.MaybeScanArgs(t, "count", &count)
	for _, id := range in.nodeArgs(t, d) {
		r, err := live(in.C.Node(id))
		if err != nil {
			return err
		}
		for range count {
			r.Tick()
		}
	}
	return nil
}

func (in *Interaction) cmdTickHeartbeat(t *testing.T, d *datadriven.TestData) error {
	for _, id := range in.nodeArgs(t, d) {
		n := in.C.Node(id)
		r, err := live(n)
		if err != nil {
			return err
		}
		for range max(n.Config.HeartbeatTicks, 1) {
			r.Tick()
		}
	}
	return nil
}

func (in *Interaction) cmdTickElection(t *testing.T, d *datadriven.TestData) error {
	for _, id := range in.nodeArgs(t, d) {
		n := in.C.Node(id)
		r, err := live(n)
		if err != nil {
			return err
		}
		et := n.Config.ElectionTicks
		if et == 0 {
			et = core.DefaultElectionTicks
		}
		before := r.Status()
		if before.Role == core.RoleLeader {
			for range et {
				r.Tick()
			}
			continue
		}
		// A campaign shows as a change of role or term, or as messages
		// (the vote requests) where there was no work before.
		hadReady := r.HasReady()
		ticks := 0
		for ticks < 2*et {
			r.Tick()
			ticks++
			st := r.Status()
			if st.Role != before.Role || st.Term != before.Term || (!hadReady && r.HasReady()) {
				break
			}
		}
		in.Printf("%d ticked %d times\n", id, ticks)
	}
	return nil
}

func (in *Interaction) cmdStabilize(t *testing.T, d *datadriven.TestData) error {
	rounds := 100
	d.MaybeScanArgs(t, "rounds", &rounds)
	nodes := in.nodeArgs(t, d)
	for range rounds {
		busy := false
		for _, id := range nodes {
			n := in.C.Node(id)
			if n.pending != nil {
				if err := in.finishReady(n); err != nil {
					return err
				}
				busy = true
			}
			for in.handleReady(n) {
				busy = true
			}
		}
		if in.deliver(nodes, func(core.Message) bool { return true }) > 0 {
			busy = true
		}
		if !busy {
			return nil
		}
	}
	return fmt.Errorf("not stable after %d rounds", rounds)
}

func (in *Interaction) cmdCrash(t *testing.T, d *datadriven.TestData) error {
	n := in.oneNode(t, d)
	lose := false
	for _, a := range d.CmdArgs[1:] {
		if a.Key != "lose-unsynced" || len(a.Vals) > 0 {
			d.Fatalf(t, "crash N [lose-unsynced]")
		}
		lose = true
	}
	if n.Down {
		return fmt.Errorf("node %d is already down", n.ID)
	}
	if n.pending != nil {
		in.Printf("%d crashed; its pending Ready is lost\n", n.ID)
	}
	if !lose {
		n.Crash()
		return nil
	}
	lost, ok := n.CrashLosingUnsynced()
	if !ok {
		in.Printf("%d crashed; every write was synced, nothing else is lost\n", n.ID)
		return nil
	}
	in.Printf("%d crashed losing unsynced writes: hard state %s lost, back to %s\n",
		n.ID, core.DescribeHardState(lost), core.DescribeHardState(n.storageHard()))
	return nil
}

func (in *Interaction) cmdRestart(t *testing.T, d *datadriven.TestData) error {
	n := in.oneNode(t, d)
	fromSnap, withApplied := false, false
	var applied uint64
	for _, a := range d.CmdArgs[1:] {
		switch {
		case a.Key == "from-snapshot" && len(a.Vals) == 0:
			fromSnap = true
		case a.Key == "applied" && len(a.Vals) == 1:
			a.Scan(t, 0, &applied)
			withApplied = true
		default:
			d.Fatalf(t, "restart N [from-snapshot | applied=K]")
		}
	}
	if fromSnap && withApplied {
		d.Fatalf(t, "restart: from-snapshot and applied= exclude each other")
	}
	if !n.Down {
		return fmt.Errorf("node %d is not down", n.ID)
	}
	var err error
	switch {
	case fromSnap:
		err = in.C.RestartFromSnapshot(n.ID)
	case withApplied:
		err = in.C.RestartWithApplied(n.ID, core.Index(applied))
	default:
		err = in.C.Restart(n.ID)
	}
	if err != nil {
		in.Printf("%d stays down\n", n.ID)
		return err
	}
	st := n.Raft.Status()
	in.Printf("%d restarted: %s applied=%d state=%s\n", n.ID, core.DescribeHardState(st.HardState), st.Applied, n.State)
	return nil
}

func (in *Interaction) cmdSnapshot(t *testing.T, d *datadriven.TestData) error {
	if len(d.CmdArgs) != 1 {
		d.Fatalf(t, "snapshot N")
	}
	n := in.oneNode(t, d)
	if _, err := live(n); err != nil {
		return err
	}
	snap, err := n.TakeSnapshot()
	if err != nil {
		return err
	}
	st, err := StateOfSnapshot(snap)
	if err != nil {
		return err
	}
	in.Printf("%d: snapshot %s state=%s\n", n.ID, core.DescribeSnapshotMeta(snap.Meta), st)
	return nil
}

func (in *Interaction) cmdCompact(t *testing.T, d *datadriven.TestData) error {
	if len(d.CmdArgs) != 2 || len(d.CmdArgs[1].Vals) > 0 {
		d.Fatalf(t, "compact N INDEX")
	}
	n := in.oneNode(t, d)
	idx, err := strconv.ParseUint(d.CmdArgs[1].Key, 10, 64)
	if err != nil {
		d.Fatalf(t, "compact: bad index %q", d.CmdArgs[1].Key)
	}
	if _, err := live(n); err != nil {
		return err
	}
	return n.Storage.Compact(core.Index(idx))
}

func (in *Interaction) cmdReportSnapshot(t *testing.T, d *datadriven.TestData) error {
	if len(d.CmdArgs) != 3 || len(d.CmdArgs[2].Vals) > 0 {
		d.Fatalf(t, "report-snapshot LEADER PEER ok|fail")
	}
	var ok bool
	switch d.CmdArgs[2].Key {
	case "ok":
		ok = true
	case "fail":
	default:
		d.Fatalf(t, "report-snapshot: want ok or fail, not %q", d.CmdArgs[2].Key)
	}
	lead := in.oneNode(t, d)
	peer, err := strconv.ParseUint(d.CmdArgs[1].Key, 10, 64)
	if err != nil || len(d.CmdArgs[1].Vals) > 0 {
		d.Fatalf(t, "report-snapshot: bad peer %q", d.CmdArgs[1].Key)
	}
	in.node(t, d, core.NodeID(peer))
	r, err := live(lead)
	if err != nil {
		return err
	}
	r.ReportSnapshot(core.NodeID(peer), ok)
	return nil
}

func (in *Interaction) cmdReportUnreachable(t *testing.T, d *datadriven.TestData) error {
	ids := in.nodeArgs(t, d)
	if len(d.CmdArgs) != 2 {
		d.Fatalf(t, "report-unreachable LEADER PEER")
	}
	r, err := live(in.C.Node(ids[0]))
	if err != nil {
		return err
	}
	r.ReportUnreachable(ids[1])
	return nil
}

func (in *Interaction) cmdStatus(t *testing.T, d *datadriven.TestData) error {
	for _, id := range in.nodeArgs(t, d) {
		r, err := live(in.C.Node(id))
		if err != nil {
			in.Printf("%d: down\n", id)
			continue
		}
		st := r.Status()
		transferee := ""
		if st.LeadTransferee != core.None {
			transferee = fmt.Sprintf(" transferee=%d", st.LeadTransferee)
		}
		in.Printf("%d: %s term=%d vote=%d lead=%d commit=%d applied=%d%s conf=(%s)\n",
			id, st.Role, st.Term, st.Vote, st.Lead, st.Commit, st.Applied, transferee,
			core.DescribeConfState(st.Config))
		ids := make([]core.NodeID, 0, len(st.Progress))
		for pid := range st.Progress {
			ids = append(ids, pid)
		}
		slices.Sort(ids)
		for _, pid := range ids {
			in.Printf("  %d: %s\n", pid, describeProgress(st.Progress[pid]))
		}
	}
	return nil
}

func describeProgress(pr core.Progress) string {
	var b strings.Builder
	fmt.Fprintf(&b, "match=%d next=%d %s", pr.Match, pr.Next, pr.State)
	if pr.PendingSnapshot != 0 {
		fmt.Fprintf(&b, " pending-snap=%d", pr.PendingSnapshot)
	}
	if pr.Paused {
		b.WriteString(" paused")
	}
	if pr.InflightMsgs > 0 {
		fmt.Fprintf(&b, " inflight=%d", pr.InflightMsgs)
		if pr.InflightBytes > 0 {
			fmt.Fprintf(&b, "[%dB]", pr.InflightBytes)
		}
	}
	if !pr.RecentActive {
		b.WriteString(" inactive")
	}
	if pr.IsLearner {
		b.WriteString(" learner")
	}
	return b.String()
}

func (in *Interaction) cmdLog(t *testing.T, d *datadriven.TestData) error {
	for _, id := range in.nodeArgs(t, d) {
		n := in.C.Node(id)
		s := n.Storage
		hs, _, _ := s.InitialState()
		snap, _ := s.Snapshot()
		first, _ := s.FirstIndex()
		last, _ := s.LastIndex()
		in.Printf("%d: stored snapshot %s; hard state %s\n", id,
			core.DescribeSnapshotMeta(snap.Meta), core.DescribeHardState(hs))
		if last >= first {
			ents, err := s.Entries(first, last+1, ^uint64(0))
			if err != nil {
				return err
			}
			for _, e := range ents {
				in.Printf("  %s\n", core.DescribeEntry(e))
			}
		} else {
			in.Printf("  no stored entries\n")
		}
		if n.Down {
			in.Printf("  down state=%s\n", n.State)
			continue
		}
		st := n.Raft.Status()
		in.Printf("  commit=%d applied=%d state=%s\n", st.Commit, st.Applied, n.State)
		if n.pending != nil && len(n.pending.Entries) > 0 {
			in.Printf("  pending write: %s\n", core.DescribeEntries(n.pending.Entries))
		}
	}
	return nil
}

func (in *Interaction) cmdRawStep(t *testing.T, d *datadriven.TestData) error {
	n := in.oneNode(t, d)
	r, err := live(n)
	if err != nil {
		return err
	}
	m := core.Message{To: n.ID}
	var cs core.ConfState
	for _, a := range d.CmdArgs[1:] {
		var u uint64
		switch a.Key {
		case "voters":
			cs.Voters = scanIDs(t, d, a)
		case "learners":
			cs.Learners = scanIDs(t, d, a)
		case "type":
			if m.Type, err = parseMsgType(a.Vals[0]); err != nil {
				d.Fatalf(t, "%v", err)
			}
		case "from":
			a.Scan(t, 0, &u)
			m.From = core.NodeID(u)
		case "to":
			a.Scan(t, 0, &u)
			m.To = core.NodeID(u)
		case "term":
			a.Scan(t, 0, &u)
			m.Term = core.Term(u)
		case "logterm":
			a.Scan(t, 0, &u)
			m.LogTerm = core.Term(u)
		case "index":
			a.Scan(t, 0, &u)
			m.Index = core.Index(u)
		case "commit":
			a.Scan(t, 0, &u)
			m.Commit = core.Index(u)
		case "hint":
			a.Scan(t, 0, &u)
			m.RejectHint = core.Index(u)
		case "reject":
			m.Reject = true
		case "context":
			m.Context = []byte(a.Vals[0])
		case "ents":
			for _, v := range a.Vals {
				m.Entries = append(m.Entries, parseEntry(t, d, v))
			}
		case "snap":
			// index/term, read with the entry parser (which reads term/index).
			e := parseEntry(t, d, a.Vals[0])
			m.Snapshot = &core.Snapshot{Meta: core.SnapshotMeta{Index: core.Index(e.Term), Term: core.Term(e.Index)}}
		default:
			d.Fatalf(t, "unknown raw-step field %q", a.Key)
		}
	}
	if cs.Voters != nil || cs.Learners != nil {
		if m.Snapshot == nil {
			d.Fatalf(t, "raw-step: voters= and learners= need snap=")
		}
		m.Snapshot.Meta.ConfState = cs
	}
	in.Printf("%s\n", core.DescribeMessage(m))
	in.indent = "  "
	if err := r.Step(m); err != nil {
		in.Printf("error: %v\n", err)
	}
	return nil
}

// parseEntry reads "term/index", "term/index:data" or
// "term/index:conf(ARGS)" (a conf change, ARGS as conf-change takes them).
func parseEntry(t *testing.T, d *datadriven.TestData, s string) core.Entry {
	spec, data, hasData := strings.Cut(s, ":")
	ts, is, ok := strings.Cut(spec, "/")
	term, err1 := strconv.ParseUint(ts, 10, 64)
	index, err2 := strconv.ParseUint(is, 10, 64)
	if !ok || err1 != nil || err2 != nil {
		d.Fatalf(t, "bad entry %q (want term/index[:data])", s)
	}
	e := core.Entry{Term: core.Term(term), Index: core.Index(index), Type: core.EntryNormal}
	if args, isConf := strings.CutPrefix(data, "conf("); isConf && strings.HasSuffix(args, ")") {
		cc, err := parseConfChangeArgs(strings.Fields(strings.TrimSuffix(args, ")")))
		if err != nil {
			d.Fatalf(t, "bad entry %q: %v", s, err)
		}
		e.Type, e.Data = core.EntryConfChange, cc.Marshal()
		return e
	}
	if hasData {
		e.Data = []byte(data)
	}
	return e
}

func (in *Interaction) cmdLogLevel(t *testing.T, d *datadriven.TestData) error {
	if len(d.CmdArgs) != 1 {
		d.Fatalf(t, "log-level debug|info|warn|none")
	}
	switch d.CmdArgs[0].Key {
	case "debug":
		in.level = slog.LevelDebug
	case "info":
		in.level = slog.LevelInfo
	case "warn":
		in.level = slog.LevelWarn
	case "none":
		in.level = levelNone
	default:
		d.Fatalf(t, "unknown log level %q", d.CmdArgs[0].Key)
	}
	return nil
}

// check verifies what must hold across the cluster after every command,
// and prints any violation. A violation also fails the test, so that a
// -rewrite cannot bless it into a golden file.
func (in *Interaction) check(t *testing.T, d *datadriven.TestData) {
	violation := func(format string, args ...any) {
		msg := fmt.Sprintf(format, args...)
		in.Printf("VIOLATION: %s\n", msg)
		t.Errorf("%s: %s", d.Pos, msg)
	}
	if in.C == nil {
		return
	}
	for _, id := range in.C.IDs() {
		n := in.C.Node(id)
		if n.Down {
			continue
		}
		if err := n.Raft.CheckInvariants(); err != nil {
			violation("%v", err)
		}
		st := n.Raft.Status()
		if st.Role != core.RoleLeader {
			continue
		}
		if prev, ok := in.leaders[st.Term]; ok && prev != id {
			violation("two leaders in term %d: %d and %d", st.Term, prev, id)
		}
		in.leaders[st.Term] = id
	}
	// Applied entries agree: the same index holds the same entry everywhere.
	applied := map[core.Index]core.Entry{}
	for _, id := range in.C.IDs() {
		for _, e := range in.C.Node(id).Applied {
			if prev, ok := applied[e.Index]; ok && (prev.Term != e.Term || string(prev.Data) != string(e.Data)) {
				violation("node %d applied %s where another applied %s",
					id, core.DescribeEntry(e), core.DescribeEntry(prev))
			}
			applied[e.Index] = e
		}
	}
}

// traceHandler writes core's log records into the trace of the command
// running, one line each: "INFO 2 became leader term=3".
type traceHandler struct {
	in    *Interaction
	attrs []slog.Attr
}

func (h *traceHandler) Enabled(_ context.Context, l slog.Level) bool { return l >= h.in.level }

func (h *traceHandler) Handle(_ context.Context, rec slog.Record) error {
	var b strings.Builder
	b.WriteString(rec.Level.String())
	write := func(a slog.Attr) bool {
		if a.Key == "node_id" {
			fmt.Fprintf(&b, " %s", a.Value)
		} else {
			fmt.Fprintf(&b, " %s=%s", a.Key, a.Value)
		}
		return true
	}
	for _, a := range h.attrs {
		if a.Key == "node_id" {
			write(a)
		}
	}
	fmt.Fprintf(&b, " %s", rec.Message)
	for _, a := range h.attrs {
		if a.Key != "node_id" {
			write(a)
		}
	}
	rec.Attrs(write)
	h.in.Printf("%s\n", b.String())
	return nil
}

func (h *traceHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return &traceHandler{in: h.in, attrs: append(slices.Clone(h.attrs), as...)}
}

func (h *traceHandler) WithGroup(string) slog.Handler { return h }
