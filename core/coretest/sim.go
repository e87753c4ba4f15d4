package coretest

import (
	"errors"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"runtime/debug"
	"slices"
	"strings"

	"github.com/stepraft/stepraft/core"
)

// The simulator runs a whole cluster of core.Raft nodes through a random
// schedule of faults drawn from one seeded generator, and checks Raft's
// safety properties after every step:
//
//   - election safety: at most one leader per term, ever, across crashes;
//   - log matching: an entry is named by (index, term); every node that holds
//     it holds the same command and the same term just before it, so two
//     logs that share an entry share the whole prefix before it;
//   - state machine safety: every node that applied an index applied the
//     same entry there, each node applies indexes in order and once, and
//     two application states at one index (reached by applying entries or
//     by installing a snapshot) have the same digest;
//   - durability: every index a live node counts as committed is held, in
//     the same entry, by the durable storage of a quorum (or compacted
//     into a snapshot there), so nothing acknowledged can be lost;
//   - a crash that loses the writes made since the last sync (a power
//     failure) never loses a term or a vote: those Readys must ask for a
//     sync;
//   - a leader's uncommitted tail stays within MaxUncommittedBytes;
//   - reads: no ReadIndex is answered below the highest commit index any
//     node had when the read was asked (every write acknowledged before
//     the read began is at or below it), and each is answered once;
//   - configuration: once no Ready is waiting, core's configuration is the
//     one the node's applied log and snapshots say (a change takes effect
//     when applied, never when proposed);
//   - leader completeness: a leader of a term later than the one an entry
//     was committed in holds that entry (in its storage, or in the Ready it
//     is writing);
//   - a live node's commit and applied indexes never go back, its durable
//     term never goes back and its durable vote never changes within a term;
//   - core's own CheckInvariants on every live node;
//   - Step refuses no message that a real node sent.
//
// After the faulty phase a liveness phase heals the network, restarts every
// node, and requires a leader and a fresh committed proposal on every node
// within a bounded number of ticks. A stability phase follows: with
// check-quorum and pre-vote on, a follower that stops hearing the leader
// does not unseat it (the leader lease), and a leader cut off from
// everyone steps down within two election timeouts; then the cluster must
// converge again.
//
// The host side follows the Ready contract honestly: a node's MemoryStorage
// holds exactly what FinishReady persisted; a Ready taken in the early form
// (StartReady) has sent its requests but not its responses, and a crash
// before FinishReady loses it. Half the crashes are power failures, which
// also undo the writes made since the last synced one. Nodes snapshot their
// application state and compact their logs; a snapshot message is reported
// to its sender (ReportSnapshot) when it is delivered or lost, as a
// transport does. A restart keeps the application's state, or (an
// application without state of its own) restores the storage's snapshot.
//
// Actions are a table of weighted SimActions (DefaultSimActions); later
// features plug in by adding rows, and SimConfig.Weights retunes or turns
// off rows by name.

// SimConfig configures one simulator run. The zero value of every field
// but Seed has a default.
type SimConfig struct {
	// Seed fixes the whole run: the schedule, the node configuration and
	// each node's Config.Seed.
	Seed uint64
	// Nodes is the size of the cluster; default 3.
	Nodes int
	// Steps is the number of random actions in the faulty phase; default 1000.
	Steps int
	// Actions replaces the default action table when not nil.
	Actions []SimAction
	// Weights overrides the weight of actions by name; 0 turns one off.
	Weights map[string]int
	// FixedWeights keeps the table's weights as they are. Otherwise every
	// weight not named in Weights is scaled by a factor drawn from the
	// seed, from 1/4 to 4, so that runs differ in character.
	FixedWeights bool
	// Configure, if set, adjusts the node configuration drawn from the seed
	// (before any node starts).
	Configure func(*core.Config)
	// LivenessTicks bounds the ticks of the liveness phase; default 300.
	// Negative skips the liveness phase.
	LivenessTicks int
	// TraceLen is how many of the last actions a violation reports;
	// default 50.
	TraceLen int
	// Trace, if set, receives every action as it runs.
	Trace func(line string)
}

// SimAction is one kind of step the simulator may take.
type SimAction struct {
	Name string
	// Weight is the relative chance of drawing this action.
	Weight int
	// Do performs the action and describes it for the trace. ok false
	// means it was not possible now (nothing to deliver, no node down...)
	// and another action is drawn instead. An error is a violation.
	Do func(s *Sim) (desc string, ok bool, err error)
}

// SimResult counts what a run did.
type SimResult struct {
	Seed       uint64
	Nodes      int
	Steps      int            // steps of the faulty phase run
	Config     string         // the node configuration drawn from the seed
	Weights    map[string]int // the action weights the run used
	Actions    map[string]int
	Delivered  int // messages stepped into a node
	Dropped    int // messages dropped (by the drop action, a cut or a down node)
	Dupes      int
	Crashes    int
	LostReadys int // crashes that lost a Ready whose requests had gone out
	LostWrites int // power failures that undid unsynced writes
	Restarts   int
	Snapshots  int // snapshots taken
	Installs   int // snapshots installed from a leader
	Reads      int // reads asked
	ReadsDone  int // reads answered with an index
	ReadsLost  int // reads answered as dropped
	Transfers  int // transfers asked of a leader
	Changes    int // configuration changes applied (on the node that applied one first)
	MaxVoters  int // the most voters a configuration had
	Readys     int
	Proposals  int // proposals a leader took
	Leaders    int // distinct (term, leader) pairs seen
	MaxTerm    core.Term
	Committed  int // distinct indexes applied somewhere (entries committed)
	// LivenessTicks is how many ticks the liveness phase needed.
	LivenessTicks int
	// Digest is a hash of the full trace: equal seeds give equal digests.
	Digest uint64
}

// SimViolation is a broken safety (or liveness) property, with what is
// needed to replay it.
type SimViolation struct {
	Seed  uint64
	Nodes int
	Steps int    // the run's configured steps
	Step  int    // the step after which the check failed
	Phase string // "faults" or "liveness"
	Err   error
	// Trace is the tail of the action history, oldest first.
	Trace []string
}

func (v *SimViolation) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "sim violation: seed=%d nodes=%d steps=%d: %s step %d: %v",
		v.Seed, v.Nodes, v.Steps, v.Phase, v.Step, v.Err)
	if len(v.Trace) > 0 {
		fmt.Fprintf(&b, "\nlast %d actions:\n  %s", len(v.Trace), strings.Join(v.Trace, "\n  "))
	}
	return b.String()
}

func (v *SimViolation) Unwrap() error { return v.Err }

// DefaultSimActions returns the action table of the simulator, with the
// default weights.
func DefaultSimActions() []SimAction {
	return []SimAction{
		{Name: "deliver", Weight: 400, Do: (*Sim).actDeliver},
		{Name: "drop", Weight: 10, Do: (*Sim).actDrop},
		{Name: "duplicate", Weight: 10, Do: (*Sim).actDuplicate},
		{Name: "delay", Weight: 10, Do: (*Sim).actDelay},
		{Name: "tick", Weight: 60, Do: (*Sim).actTick},
		{Name: "tick-all", Weight: 30, Do: (*Sim).actTickAll},
		{Name: "ready", Weight: 150, Do: (*Sim).actReady},
		{Name: "ready-early", Weight: 50, Do: (*Sim).actReadyEarly},
		{Name: "finish-ready", Weight: 50, Do: (*Sim).actFinishReady},
		{Name: "partial-ready", Weight: 40, Do: (*Sim).actPartialReady},
		{Name: "crash", Weight: 5, Do: (*Sim).actCrash},
		{Name: "crash-leader", Weight: 3, Do: (*Sim).actCrashLeader},
		{Name: "restart", Weight: 20, Do: (*Sim).actRestart},
		{Name: "partition", Weight: 5, Do: (*Sim).actPartition},
		{Name: "cut", Weight: 3, Do: (*Sim).actCut},
		{Name: "heal", Weight: 15, Do: (*Sim).actHeal},
		{Name: "propose", Weight: 60, Do: (*Sim).actPropose},
		{Name: "report-unreachable", Weight: 5, Do: (*Sim).actReportUnreachable},
		{Name: "campaign", Weight: 5, Do: (*Sim).actCampaign},
		{Name: "snapshot", Weight: 10, Do: (*Sim).actSnapshot},
		{Name: "read", Weight: 20, Do: (*Sim).actRead},
		{Name: "transfer", Weight: 3, Do: (*Sim).actTransfer},
		{Name: "conf-change", Weight: 15, Do: (*Sim).actConfChange},
	}
}

// Sim is a running simulation. Actions get it to act on the cluster; all
// their randomness must come from Rand.
type Sim struct {
	Cluster *Cluster
	Rand    *rand.Rand

	cfg     SimConfig
	actions []SimAction
	total   int // sum of weights
	step    int
	phase   string
	res     SimResult
	trace   []string // ring of the last TraceLen lines
	traceN  int      // lines written so far
	doing   string   // the action running, for a panic's report
	digest  uint64

	// delayed messages are held back from the network until a step.
	delayed []delayedMsg

	nodes map[core.NodeID]*simNode
	// leaders remembers the leader of every term seen.
	leaders map[core.Term]core.NodeID
	maxLead core.Term // highest term with a leader seen
	// ents names each entry ever handed out for persisting by (index, term).
	ents map[entryKey]entryRec
	// committed[i] is the entry applied at index i by whoever applied it
	// first, and the highest leader term known then (an upper bound on the
	// term the entry was committed in).
	committed []committedRec
	// leadChecked[(id, term)] is how far that leader's log was checked
	// against committed.
	leadChecked map[leaderKey]core.Index
	// states[i] is the digest of the application state at index i, as the
	// first node to reach it had it.
	states map[core.Index]stateRec
	// durableChecked is the highest index checked to be durable on a
	// quorum.
	durableChecked core.Index
	// liveTag names the round of the liveness phase running.
	liveTag string
	// maxCommit is the highest commit index any node has had: every write
	// acknowledged so far is at or below it.
	maxCommit core.Index
	// reads waiting for an answer, by context.
	reads map[string]simRead
}

// simRead is a read in flight: the node that asked, and the highest
// commit index anywhere when it was asked. A read index below that could
// miss a write acknowledged before the read began.
type simRead struct {
	node  core.NodeID
	floor core.Index
	step  int
}

type stateRec struct {
	digest uint64
	by     core.NodeID
}

type delayedMsg struct {
	m     core.Message
	until int
}

type simNode struct {
	commit, applied core.Index // last seen on the live node
	hard            core.HardState
	appliedSeen     int // prefix of Node.Applied already checked
	incarnation     uint64
	liveDone        bool // applied a liveness proposal
	// The uncommitted tail of the node's leadership of leadTerm, measured
	// from outside: payload proposed, and payload handed out committed.
	leadTerm         core.Term
	proposed, handed uint64
}

type entryKey struct {
	index core.Index
	term  core.Term
}

type entryRec struct {
	typ      core.EntryType
	data     string
	prevTerm core.Term // term of the entry before; 0 unknown
	from     core.NodeID
}

type committedRec struct {
	set   bool
	e     core.Entry
	bound core.Term
	by    core.NodeID
}

type leaderKey struct {
	id   core.NodeID
	term core.Term
}

const livenessPrefix = "live-"

// snapIndex returns the index of s's snapshot.
func snapIndex(s *core.MemoryStorage) core.Index {
	first, _ := s.FirstIndex()
	return first - 1
}

// RunSim runs one simulation. It returns the run's counters, and a
// *SimViolation if a property broke (the counters then cover the run up to
// the violation).
func RunSim(cfg SimConfig) (res *SimResult, err error) {
	s, err := newSim(cfg)
	if err != nil {
		return nil, err
	}
	defer func() {
		// Core panics only on a broken invariant of its own: a violation.
		if p := recover(); p != nil {
			err = s.violation(fmt.Errorf("panic during %s: %v\n%s", s.doing, p, debug.Stack()))
		}
		s.res.Digest = s.digest
		s.res.Committed = 0
		for _, c := range s.committed {
			if c.set {
				s.res.Committed++
			}
		}
		res = &s.res
	}()
	if err := s.check(); err != nil {
		return nil, s.violation(err)
	}
	for s.step = 1; s.step <= s.cfg.Steps; s.step++ {
		s.res.Steps = s.step
		if err := s.runStep(); err != nil {
			return nil, s.violation(err)
		}
		if err := s.check(); err != nil {
			return nil, s.violation(err)
		}
		if s.step%100 == 0 {
			if err := s.checkDurableLogs(); err != nil {
				return nil, s.violation(err)
			}
		}
	}
	if s.cfg.LivenessTicks >= 0 {
		if err := s.liveness(); err != nil {
			return nil, s.violation(err)
		}
	}
	if err := s.checkDurableLogs(); err != nil {
		return nil, s.violation(err)
	}
	return nil, nil
}

func newSim(cfg SimConfig) (*Sim, error) {
	if cfg.Nodes == 0 {
		cfg.Nodes = 3
	}
	if cfg.Steps == 0 {
		cfg.Steps = 1000
	}
	if cfg.LivenessTicks == 0 {
		cfg.LivenessTicks = 300
	}
	if cfg.TraceLen <= 0 {
		cfg.TraceLen = 50
	}
	if cfg.Nodes < 1 || cfg.Nodes > 9 {
		return nil, fmt.Errorf("sim: %d nodes; want 1 to 9", cfg.Nodes)
	}
	actions := cfg.Actions
	if actions == nil {
		actions = DefaultSimActions()
	}
	s := &Sim{
		Rand:        rand.New(rand.NewPCG(cfg.Seed, 0x5eed_51a7_0000_0001)),
		cfg:         cfg,
		phase:       "faults",
		nodes:       map[core.NodeID]*simNode{},
		leaders:     map[core.Term]core.NodeID{},
		ents:        map[entryKey]entryRec{},
		leadChecked: map[leaderKey]core.Index{},
		states:      map[core.Index]stateRec{},
		reads:       map[string]simRead{},
		// Index 1 is the bootstrap snapshot.
		durableChecked: 1,
		res:            SimResult{Seed: cfg.Seed, Nodes: cfg.Nodes, Actions: map[string]int{}},
		digest:         fnvOffset,
	}
	s.res.Weights = map[string]int{}
	for _, a := range actions {
		if w, ok := cfg.Weights[a.Name]; ok {
			a.Weight = w
		} else if !cfg.FixedWeights && a.Weight > 0 {
			// Each run leans its own way (lossy, crashy, slow to
			// persist...): a quarter to four times the table's weight.
			a.Weight = max(1, a.Weight*[]int{1, 2, 4, 8, 16}[s.Rand.IntN(5)]/4)
		}
		s.res.Weights[a.Name] = a.Weight
		if a.Weight < 0 || a.Do == nil {
			return nil, fmt.Errorf("sim: action %q has weight %d or no Do", a.Name, a.Weight)
		}
		if a.Weight > 0 {
			s.actions = append(s.actions, a)
			s.total += a.Weight
		}
	}
	if s.total == 0 {
		return nil, errors.New("sim: every action has weight 0")
	}
	base := s.drawConfig()
	if cfg.Configure != nil {
		cfg.Configure(&base)
	}
	s.res.Config = describeConfig(base)
	s.Cluster = NewCluster(base)
	ids := make([]core.NodeID, cfg.Nodes)
	for i := range ids {
		ids[i] = core.NodeID(i + 1)
	}
	for _, id := range ids {
		st, err := BootstrapStorage(ids...)
		if err != nil {
			return nil, err
		}
		// Every node draws its timeouts from its own seed, derived from
		// the run's (core mixes in the ID as well).
		s.Cluster.Base.Seed = s.nodeSeed(id, 0)
		if err := s.Cluster.AddNode(id, st); err != nil {
			return nil, err
		}
		s.nodes[id] = &simNode{commit: 1, applied: 1, hard: core.HardState{Term: 1, Commit: 1}}
	}
	s.Cluster.Base = base
	return s, nil
}

// drawConfig chooses the node configuration from the seed, so that runs
// cover pre-vote and check-quorum off as well as on, and flow control from
// tight to loose.
func (s *Sim) drawConfig() core.Config {
	r := s.Rand
	c := core.Config{
		ElectionTicks:      3 + r.IntN(8),
		HeartbeatTicks:     1,
		DisablePreVote:     r.IntN(4) == 0,
		DisableCheckQuorum: r.IntN(4) == 0,
		MaxInflightMsgs:    []int{1, 2, 4, 256}[r.IntN(4)],
		MaxMsgBytes:        []uint64{1, 8, 64, 1 << 20}[r.IntN(4)],
	}
	if c.ElectionTicks > 4 && r.IntN(3) == 0 {
		c.HeartbeatTicks = 2
	}
	if r.IntN(3) == 0 {
		c.MaxUncommittedBytes = 64
	}
	return c
}

func describeConfig(c core.Config) string {
	return fmt.Sprintf("election=%d heartbeat=%d prevote=%t checkquorum=%t inflight=%d msgbytes=%d uncommitted=%d",
		c.ElectionTicks, c.HeartbeatTicks, !c.DisablePreVote, !c.DisableCheckQuorum,
		c.MaxInflightMsgs, c.MaxMsgBytes, c.MaxUncommittedBytes)
}

// nodeSeed derives node id's Config.Seed for its incarnation-th start.
func (s *Sim) nodeSeed(id core.NodeID, incarnation uint64) uint64 {
	return splitmix(s.cfg.Seed ^ splitmix(uint64(id)<<32|incarnation))
}

func splitmix(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ x>>30) * 0xbf58476d1ce4e5b9
	x = (x ^ x>>27) * 0x94d049bb133111eb
	return x ^ x>>31
}

const (
	fnvOffset = 14695981039346656037
	fnvPrime  = 1099511628211
)

// runStep draws actions until one is possible, and runs it.
func (s *Sim) runStep() error {
	s.releaseDelayed(false)
	for range 50 {
		a := s.draw()
		s.doing = a.Name
		desc, ok, err := a.Do(s)
		if !ok && err == nil {
			continue
		}
		s.res.Actions[a.Name]++
		s.record(fmt.Sprintf("%d %s %s", s.step, a.Name, desc))
		return err
	}
	s.record(fmt.Sprintf("%d idle", s.step))
	return nil
}

func (s *Sim) draw() *SimAction {
	w := s.Rand.IntN(s.total)
	for i := range s.actions {
		if w < s.actions[i].Weight {
			return &s.actions[i]
		}
		w -= s.actions[i].Weight
	}
	panic("unreachable")
}

// record adds a line to the trace.
func (s *Sim) record(line string) {
	h := fnv.New64a()
	h.Write([]byte(line))
	s.digest = (s.digest ^ h.Sum64()) * fnvPrime
	if s.cfg.Trace != nil {
		s.cfg.Trace(line)
	}
	if len(s.trace) < s.cfg.TraceLen {
		s.trace = append(s.trace, line)
	} else {
		s.trace[s.traceN%s.cfg.TraceLen] = line
	}
	s.traceN++
}

// tail returns the trace, oldest first.
func (s *Sim) tail() []string {
	if len(s.trace) < s.cfg.TraceLen {
		return slices.Clone(s.trace)
	}
	i := s.traceN % s.cfg.TraceLen
	return slices.Concat(s.trace[i:], s.trace[:i])
}

func (s *Sim) violation(err error) *SimViolation {
	return &SimViolation{Seed: s.cfg.Seed, Nodes: s.cfg.Nodes, Steps: s.cfg.Steps,
		Step: s.step, Phase: s.phase, Err: err, Trace: s.tail()}
}

// Step returns the number of the step running.
func (s *Sim) Step() int { return s.step }

// Live returns the nodes that are up, by ID.
func (s *Sim) Live() []*Node {
	var out []*Node
	for _, id := range s.Cluster.IDs() {
		if n := s.Cluster.Node(id); !n.Down {
			out = append(out, n)
		}
	}
	return out
}

// pickLive returns a random live node that satisfies ok.
func (s *Sim) pickLive(ok func(*Node) bool) (*Node, bool) {
	var cands []*Node
	for _, n := range s.Live() {
		if ok(n) {
			cands = append(cands, n)
		}
	}
	return pick(s.Rand, cands)
}

// pick returns a random element of xs, or the zero value if it is empty.
func pick[T any](r *rand.Rand, xs []T) (T, bool) {
	var zero T
	if len(xs) == 0 {
		return zero, false
	}
	return xs[r.IntN(len(xs))], true
}

// --- the network -----------------------------------------------------------

// takeMsg removes in-flight message i from the network (order does not
// matter to the simulator: it picks at random).
func (s *Sim) takeMsg(i int) core.Message {
	net := s.Cluster.Net
	m := net[i]
	net[i] = net[len(net)-1]
	net[len(net)-1] = core.Message{}
	s.Cluster.Net = net[:len(net)-1]
	return m
}

// deliver steps m into its receiver (or drops it, across a cut or to a
// down node) and checks that a well-formed message was not refused.
func (s *Sim) deliver(m core.Message) (string, error) {
	d := s.Cluster.DeliverMsg(m)
	desc := shortMsg(m)
	if d.Dropped != "" {
		s.res.Dropped++
		s.reportSnapshot(m, false)
		return desc + " (dropped: " + d.Dropped + ")", nil
	}
	s.res.Delivered++
	if d.Err != nil {
		return desc, fmt.Errorf("node %d refused %s sent by node %d: %w", m.To, core.DescribeMessage(m), m.From, d.Err)
	}
	s.reportSnapshot(m, true)
	return desc, nil
}

// reportSnapshot tells the sender of a snapshot message whether it
// arrived, as a transport does once the snapshot's body is through.
func (s *Sim) reportSnapshot(m core.Message, ok bool) {
	if m.Type != core.MsgSnap {
		return
	}
	if from := s.Cluster.Node(m.From); from != nil && !from.Down {
		from.Raft.ReportSnapshot(m.To, ok)
	}
}

func shortMsg(m core.Message) string {
	d := core.DescribeMessage(m)
	if len(d) > 160 {
		d = d[:150] + fmt.Sprintf("... (%d entries)", len(m.Entries))
	}
	return d
}

func (s *Sim) releaseDelayed(all bool) {
	keep := s.delayed[:0]
	for _, d := range s.delayed {
		if all || d.until <= s.step {
			s.Cluster.send(d.m)
		} else {
			keep = append(keep, d)
		}
	}
	s.delayed = keep
}

func (s *Sim) actDeliver() (string, bool, error) {
	if len(s.Cluster.Net) == 0 {
		return "", false, nil
	}
	desc, err := s.deliver(s.takeMsg(s.Rand.IntN(len(s.Cluster.Net))))
	return desc, true, err
}

func (s *Sim) actDrop() (string, bool, error) {
	if len(s.Cluster.Net) == 0 {
		return "", false, nil
	}
	m := s.takeMsg(s.Rand.IntN(len(s.Cluster.Net)))
	s.res.Dropped++
	s.reportSnapshot(m, false)
	return shortMsg(m), true, nil
}

func (s *Sim) actDuplicate() (string, bool, error) {
	if len(s.Cluster.Net) == 0 {
		return "", false, nil
	}
	m := s.Cluster.Net[s.Rand.IntN(len(s.Cluster.Net))]
	m.Entries = slices.Clone(m.Entries)
	s.Cluster.send(m)
	s.res.Dupes++
	return shortMsg(m), true, nil
}

func (s *Sim) actDelay() (string, bool, error) {
	if len(s.Cluster.Net) == 0 {
		return "", false, nil
	}
	m := s.takeMsg(s.Rand.IntN(len(s.Cluster.Net)))
	steps := 1 + s.Rand.IntN(200)
	if s.Rand.IntN(8) == 0 {
		steps = 1 + s.Rand.IntN(3000) // very stale by the time it arrives
	}
	s.delayed = append(s.delayed, delayedMsg{m: m, until: s.step + steps})
	return fmt.Sprintf("%s for %d steps", shortMsg(m), steps), true, nil
}

func (s *Sim) actPartition() (string, bool, error) {
	ids := slices.Clone(s.Cluster.IDs())
	if len(ids) < 2 {
		return "", false, nil
	}
	s.Rand.Shuffle(len(ids), func(i, j int) { ids[i], ids[j] = ids[j], ids[i] })
	k := 1 + s.Rand.IntN(len(ids)-1)
	a, b := slices.Sorted(slices.Values(ids[:k])), slices.Sorted(slices.Values(ids[k:]))
	s.Cluster.Heal()
	s.Cluster.Partition(a, b)
	return fmt.Sprintf("%v | %v", a, b), true, nil
}

func (s *Sim) actCut() (string, bool, error) {
	ids := s.Cluster.IDs()
	if len(ids) < 2 {
		return "", false, nil
	}
	a := ids[s.Rand.IntN(len(ids))]
	b := ids[s.Rand.IntN(len(ids))]
	if a == b {
		return "", false, nil
	}
	s.Cluster.Cut(a, b)
	return fmt.Sprintf("%d->%d", a, b), true, nil
}

func (s *Sim) actHeal() (string, bool, error) {
	s.Cluster.Heal()
	return "", true, nil
}

// --- nodes -----------------------------------------------------------------

func (s *Sim) actTick() (string, bool, error) {
	n, ok := pick(s.Rand, s.Live())
	if !ok {
		return "", false, nil
	}
	n.Raft.Tick()
	return fmt.Sprint(n.ID), true, nil
}

func (s *Sim) actTickAll() (string, bool, error) {
	live := s.Live()
	if len(live) == 0 {
		return "", false, nil
	}
	for _, n := range live {
		n.Raft.Tick()
	}
	return "", true, nil
}

// actReady runs a whole Ready cycle on a node that has no early Ready
// pending (those wait for finish-ready, so that crashes hit them).
func (s *Sim) actReady() (string, bool, error) {
	n, ok := s.pickLive(func(n *Node) bool { return n.pending == nil && n.Raft.HasReady() })
	if !ok {
		return "", false, nil
	}
	rd, _, err := s.StartReady(n)
	if err != nil {
		return "", true, err
	}
	return fmt.Sprintf("%d %s", n.ID, shortReady(rd)), true, s.FinishReady(n)
}

func (s *Sim) actReadyEarly() (string, bool, error) {
	n, ok := s.pickLive(func(n *Node) bool { return n.pending == nil && n.Raft.HasReady() })
	if !ok {
		return "", false, nil
	}
	rd, _, err := s.StartReady(n)
	return fmt.Sprintf("%d %s", n.ID, shortReady(rd)), true, err
}

func (s *Sim) actFinishReady() (string, bool, error) {
	n, ok := s.pickLive(func(n *Node) bool { return n.pending != nil })
	if !ok {
		return "", false, nil
	}
	return fmt.Sprint(n.ID), true, s.FinishReady(n)
}

// actPartialReady, on a node whose write is pending, applies what the
// contract lets it apply meanwhile and sends the requests of its partial
// Ready.
func (s *Sim) actPartialReady() (string, bool, error) {
	n, ok := s.pickLive(func(n *Node) bool { return n.pending != nil && n.Raft.HasPartialReady() })
	if !ok {
		return "", false, nil
	}
	reads := len(n.ReadStates)
	rd, _, err := n.ApplyPartial(s.Cluster)
	desc := fmt.Sprintf("%d %s", n.ID, shortReady(rd))
	if err != nil {
		return desc, true, err
	}
	if rd.SoftState != nil && rd.SoftState.Role == core.RoleLeader {
		if err := s.sawLeader(n.ID, n.Raft.Term); err != nil {
			return desc, true, err
		}
	}
	if err := s.checkUncommitted(n, rd); err != nil {
		return desc, true, err
	}
	for _, rs := range n.ReadStates[reads:] {
		if err := s.checkRead(n, rs); err != nil {
			return desc, true, err
		}
	}
	return desc, true, s.checkApplied(n)
}

func shortReady(rd core.Ready) string {
	var parts []string
	if rd.SoftState != nil {
		parts = append(parts, fmt.Sprintf("soft=%d/%s", rd.SoftState.Lead, rd.SoftState.Role))
	}
	if !rd.HardState.IsEmpty() {
		parts = append(parts, "hard="+core.DescribeHardState(rd.HardState))
	}
	if !rd.Snapshot.IsEmpty() {
		parts = append(parts, "snap="+core.DescribeSnapshotMeta(rd.Snapshot.Meta))
	}
	if n := len(rd.Entries); n > 0 {
		parts = append(parts, fmt.Sprintf("ents=%d/%d..%d/%d", rd.Entries[0].Term, rd.Entries[0].Index,
			rd.Entries[n-1].Term, rd.Entries[n-1].Index))
	}
	if n := len(rd.CommittedEntries); n > 0 {
		parts = append(parts, fmt.Sprintf("apply=%d..%d", rd.CommittedEntries[0].Index, rd.CommittedEntries[n-1].Index))
	}
	if n := len(rd.Messages); n > 0 {
		parts = append(parts, fmt.Sprintf("msgs=%d", n))
	}
	return strings.Join(parts, " ")
}

// StartReady takes n's Ready and sends its requests (Node.StartReady), and
// records what the Ready shows: a new leader, entries handed out for
// persisting.
func (s *Sim) StartReady(n *Node) (core.Ready, bool, error) {
	rd, ok := n.StartReady(s.Cluster)
	if !ok {
		return rd, false, nil
	}
	s.res.Readys++
	if rd.SoftState != nil && rd.SoftState.Role == core.RoleLeader {
		if err := s.sawLeader(n.ID, n.Raft.Term); err != nil {
			return rd, true, err
		}
	}
	if err := s.checkUncommitted(n, rd); err != nil {
		return rd, true, err
	}
	return rd, true, s.registerEntries(n, rd)
}

// checkUncommitted follows a leader's uncommitted tail from outside, Ready
// by Ready: the payload of the entries of its term it hands out for
// persisting (its own proposals and those forwarded to it) less those it
// hands out committed. Core takes a proposal only into an empty tail or
// one it keeps within MaxUncommittedBytes, so the tail never exceeds the
// larger of the limit and the largest entry.
func (s *Sim) checkUncommitted(n *Node, rd core.Ready) error {
	limit := n.Config.MaxUncommittedBytes
	if limit == 0 || n.Raft.Status().Role != core.RoleLeader {
		return nil
	}
	sn := s.nodes[n.ID]
	term := n.Raft.Term
	if sn.leadTerm != term {
		sn.leadTerm, sn.proposed, sn.handed = term, 0, 0
	}
	bound := limit
	for _, e := range rd.Entries {
		if e.Term == term {
			sn.proposed += uint64(len(e.Data))
			bound = max(bound, uint64(len(e.Data)))
		}
	}
	for _, e := range rd.CommittedEntries {
		if e.Term == term {
			sn.handed += uint64(len(e.Data))
		}
	}
	if tail := sn.proposed - sn.handed; sn.proposed >= sn.handed && tail > bound {
		return fmt.Errorf("leader %d of term %d holds an uncommitted tail of %d bytes, over MaxUncommittedBytes %d",
			n.ID, term, tail, limit)
	} else if sn.proposed < sn.handed {
		return fmt.Errorf("leader %d of term %d handed out %d bytes of its entries committed but only %d for persisting",
			n.ID, term, sn.handed, sn.proposed)
	}
	return nil
}

// FinishReady persists n's pending Ready, sends its responses, applies and
// advances (Node.FinishReady), and checks what became durable and applied.
func (s *Sim) FinishReady(n *Node) error {
	if n.pending == nil {
		return nil
	}
	sn := s.nodes[n.ID]
	if hs := n.pending.HardState; !hs.IsEmpty() {
		old := sn.hard
		switch {
		case hs.Term < old.Term:
			return fmt.Errorf("node %d persists term %d after term %d", n.ID, hs.Term, old.Term)
		case hs.Term == old.Term && old.Vote != core.None && hs.Vote != old.Vote:
			return fmt.Errorf("node %d changes its durable vote in term %d from %d to %d", n.ID, hs.Term, old.Vote, hs.Vote)
		case hs.Commit < old.Commit:
			return fmt.Errorf("node %d persists commit %d after commit %d", n.ID, hs.Commit, old.Commit)
		}
		sn.hard = hs
	}
	if !n.pending.Snapshot.IsEmpty() {
		s.res.Installs++
	}
	// Commit indexes counted so far were counted under the configuration
	// in force before this Ready applies any change: check them now.
	if err := s.checkCommitDurable(); err != nil {
		return err
	}
	reads := len(n.ReadStates)
	if err := n.FinishReady(s.Cluster); err != nil {
		return err
	}
	for _, rs := range n.ReadStates[reads:] {
		if err := s.checkRead(n, rs); err != nil {
			return err
		}
	}
	return s.checkApplied(n)
}

func (s *Sim) actCrash() (string, bool, error) {
	n, ok := pick(s.Rand, s.Live())
	if !ok {
		return "", false, nil
	}
	desc, err := s.crash(n)
	return desc, true, err
}

// actCrashLeader crashes the leader of the highest term, to force
// elections more often than random crashes do.
func (s *Sim) actCrashLeader() (string, bool, error) {
	id := s.Cluster.Leader()
	if id == core.None {
		return "", false, nil
	}
	desc, err := s.crash(s.Cluster.Node(id))
	return desc, true, err
}

// crash stops n; its storage keeps what FinishReady wrote, and an early
// Ready whose requests went out is lost. Half the time it is a power
// failure, which undoes the writes since the last synced one: only a
// commit index may be lost that way, never a term or a vote.
func (s *Sim) crash(n *Node) (string, error) {
	desc := fmt.Sprint(n.ID)
	if n.pending != nil {
		desc += " (losing its early Ready: " + shortReady(*n.pending) + ")"
		s.res.LostReadys++
	}
	s.res.Crashes++
	if s.Rand.IntN(2) == 0 {
		n.Crash()
		return desc, nil
	}
	desc += " (power failure)"
	lost, ok := n.CrashLosingUnsynced()
	if !ok {
		return desc, nil
	}
	s.res.LostWrites++
	now := n.storageHard()
	desc += fmt.Sprintf(" (unsynced %s undone, back to %s)", core.DescribeHardState(lost), core.DescribeHardState(now))
	s.nodes[n.ID].hard = now
	if lost.Term != now.Term || lost.Vote != now.Vote {
		return desc, fmt.Errorf("node %d lost term %d vote %d in a power failure (back to term %d vote %d): the Ready that wrote them did not ask for a sync",
			n.ID, lost.Term, lost.Vote, now.Term, now.Vote)
	}
	return desc, nil
}

func (s *Sim) actRestart() (string, bool, error) {
	var down []*Node
	for _, id := range s.Cluster.IDs() {
		if n := s.Cluster.Node(id); n.Down {
			down = append(down, n)
		}
	}
	n, ok := pick(s.Rand, down)
	if !ok {
		return "", false, nil
	}
	fromSnap := s.Rand.IntN(4) == 0
	desc := fmt.Sprint(n.ID)
	if fromSnap {
		desc += " from its snapshot"
	}
	return desc, true, s.restart(n, fromSnap)
}

// restart brings n back from its storage, with a fresh seed for its
// timeouts, keeping its application's state or (fromSnap) restoring the
// storage's snapshot. It resumes at its durable commit, or at what its
// application applied if that is further (the commit index is written
// without a sync and may be lost).
func (s *Sim) restart(n *Node, fromSnap bool) error {
	sn := s.nodes[n.ID]
	sn.incarnation++
	n.Config.Seed = s.nodeSeed(n.ID, sn.incarnation)
	restart := s.Cluster.Restart
	if fromSnap {
		restart = s.Cluster.RestartFromSnapshot
	}
	if err := restart(n.ID); err != nil {
		return fmt.Errorf("restart %d: %w", n.ID, err)
	}
	s.res.Restarts++
	st := n.Raft.Status()
	snap, _ := n.Storage.Snapshot()
	hs := n.storageHard()
	if want := max(hs.Commit, n.State.Index, snap.Meta.Index); st.Commit != want {
		return fmt.Errorf("node %d restarted with commit %d; durable commit %d, applied %d, snapshot %d",
			n.ID, st.Commit, hs.Commit, n.State.Index, snap.Meta.Index)
	}
	if st.Applied != n.State.Index {
		return fmt.Errorf("node %d restarted with applied %d, its application is at %d", n.ID, st.Applied, n.State.Index)
	}
	if err := s.checkState(n.ID, n.State); err != nil {
		return err
	}
	sn.commit, sn.applied, sn.hard = st.Commit, st.Applied, hs
	// A new incarnation may lead the same term again (if the first won
	// on others' votes before its own write and lost it), from an empty
	// tail.
	sn.leadTerm = 0
	return nil
}

// actPropose proposes a unique payload, mostly on the leader of the
// highest term (so that logs grow and diverge between leaders), otherwise
// on a random node (which refuses it unless it leads).
func (s *Sim) actPropose() (string, bool, error) {
	n, ok := pick(s.Rand, s.Live())
	if !ok {
		return "", false, nil
	}
	if id := s.Cluster.Leader(); id != core.None && s.Rand.IntN(4) != 0 {
		n = s.Cluster.Node(id)
	}
	// Now and then a burst, so that appends carry several entries.
	count := 1
	if s.Rand.IntN(4) == 0 {
		count += s.Rand.IntN(4)
	}
	var descs []string
	for k := range count {
		data := fmt.Sprintf("s%d", s.step)
		if k > 0 {
			data += string(rune('a' + k - 1))
		}
		err := n.Raft.Propose([]byte(data))
		switch {
		case err == nil:
			s.res.Proposals++
			descs = append(descs, fmt.Sprintf("%q", data))
		case errors.Is(err, core.ErrProposalDropped):
			descs = append(descs, fmt.Sprintf("%q dropped", data))
		default:
			return fmt.Sprintf("%d %q", n.ID, data), true, fmt.Errorf("propose on %d: %w", n.ID, err)
		}
	}
	return fmt.Sprintf("%d %s", n.ID, strings.Join(descs, " ")), true, nil
}

// actReportUnreachable tells the leader of the highest term that a random
// peer is unreachable, as a transport does when a send fails.
func (s *Sim) actReportUnreachable() (string, bool, error) {
	id := s.Cluster.Leader()
	if id == core.None {
		return "", false, nil
	}
	peer, _ := pick(s.Rand, s.Cluster.IDs())
	s.Cluster.Node(id).Raft.ReportUnreachable(peer)
	return fmt.Sprintf("%d about %d", id, peer), true, nil
}

// actSnapshot has a node snapshot its application state, and mostly
// compact its log: at the snapshot, a few entries behind it (kept for
// followers that are only a little behind), or not at all.
func (s *Sim) actSnapshot() (string, bool, error) {
	var cands []*Node
	for _, n := range s.Live() {
		if snap, _ := n.Storage.Snapshot(); n.State.Index > snap.Meta.Index {
			cands = append(cands, n)
		}
	}
	n, ok := pick(s.Rand, cands)
	if !ok {
		return "", false, nil
	}
	snap, err := n.TakeSnapshot()
	if err != nil {
		return fmt.Sprint(n.ID), true, fmt.Errorf("node %d: snapshot at %d: %w", n.ID, n.State.Index, err)
	}
	s.res.Snapshots++
	desc := fmt.Sprintf("%d at %s", n.ID, core.DescribeSnapshotMeta(snap.Meta))
	if err := s.checkState(n.ID, n.State); err != nil {
		return desc, true, err
	}
	keep := []core.Index{0, 0, 3, 1 << 62}[s.Rand.IntN(4)]
	first, _ := n.Storage.FirstIndex()
	if keep < snap.Meta.Index && snap.Meta.Index-keep >= first {
		at := snap.Meta.Index - keep
		if err := n.Storage.Compact(at); err != nil {
			return desc, true, fmt.Errorf("node %d: compact at %d: %w", n.ID, at, err)
		}
		desc += fmt.Sprintf(", compacted at %d", at)
	}
	return desc, true, nil
}

func (s *Sim) actCampaign() (string, bool, error) {
	n, ok := pick(s.Rand, s.Live())
	if !ok {
		return "", false, nil
	}
	if err := n.Raft.Campaign(); err != nil {
		return fmt.Sprint(n.ID), true, fmt.Errorf("campaign on %d: %w", n.ID, err)
	}
	return fmt.Sprint(n.ID), true, nil
}

// --- checks ----------------------------------------------------------------

// sawLeader records that id led term; two leaders of one term break
// election safety.
func (s *Sim) sawLeader(id core.NodeID, term core.Term) error {
	if prev, ok := s.leaders[term]; ok {
		if prev != id {
			return fmt.Errorf("election safety: two leaders in term %d: %d and %d", term, prev, id)
		}
		return nil
	}
	s.leaders[term] = id
	s.res.Leaders++
	s.maxLead = max(s.maxLead, term)
	return nil
}

// registerEntries records the entries a Ready hands out for persisting
// under their (index, term), with the term of the entry before each. An
// entry named twice must be the same entry after the same term: that is
// the log matching property, checked one entry at a time.
func (s *Sim) registerEntries(n *Node, rd core.Ready) error {
	if len(rd.Entries) == 0 {
		return nil
	}
	first := rd.Entries[0].Index
	var prev core.Term
	if !rd.Snapshot.IsEmpty() && rd.Snapshot.Meta.Index == first-1 {
		prev = rd.Snapshot.Meta.Term
	} else if t, err := n.Storage.Term(first - 1); err == nil {
		// No other Ready is pending, so the storage's entry before the
		// first one handed out is the node's own.
		prev = t
	}
	for i, e := range rd.Entries {
		if i > 0 {
			prev = rd.Entries[i-1].Term
			if e.Index != rd.Entries[i-1].Index+1 {
				return fmt.Errorf("node %d: Ready entries not contiguous: %s", n.ID, core.DescribeEntries(rd.Entries))
			}
		}
		if e.Term < prev {
			return fmt.Errorf("node %d: entry %s follows term %d", n.ID, core.DescribeEntry(e), prev)
		}
		k := entryKey{e.Index, e.Term}
		rec := entryRec{typ: e.Type, data: string(e.Data), prevTerm: prev, from: n.ID}
		old, ok := s.ents[k]
		if !ok {
			s.ents[k] = rec
			continue
		}
		if old.typ != rec.typ || old.data != rec.data {
			return fmt.Errorf("log matching: entry %d/%d is %q on node %d but %q on node %d",
				e.Term, e.Index, rec.data, n.ID, old.data, old.from)
		}
		if old.prevTerm != 0 && prev != 0 && old.prevTerm != prev {
			return fmt.Errorf("log matching: entry %d/%d follows term %d on node %d but term %d on node %d",
				e.Term, e.Index, prev, n.ID, old.prevTerm, old.from)
		}
		if old.prevTerm == 0 {
			old.prevTerm = prev
			s.ents[k] = old
		}
	}
	return nil
}

// checkApplied checks the entries n applied since the last look (in
// order and once each, which Node.FinishReady checks as it applies them):
// each is the same entry every other node applied at that index, and the
// application state n reached is the one every other node had there.
func (s *Sim) checkApplied(n *Node) error {
	sn := s.nodes[n.ID]
	for _, e := range n.Applied[sn.appliedSeen:] {
		for core.Index(len(s.committed)) <= e.Index {
			s.committed = append(s.committed, committedRec{})
		}
		c := &s.committed[e.Index]
		if !c.set {
			*c = committedRec{set: true, e: e, bound: s.maxLead, by: n.ID}
			if e.Type == core.EntryConfChange {
				s.res.Changes++
				s.res.MaxVoters = max(s.res.MaxVoters, len(n.ConfState.Voters))
			}
		} else if c.e.Term != e.Term || c.e.Type != e.Type || string(c.e.Data) != string(e.Data) {
			return fmt.Errorf("state machine safety: node %d applied %s at %d, node %d applied %s",
				n.ID, core.DescribeEntry(e), e.Index, c.by, core.DescribeEntry(c.e))
		}
		if s.liveTag != "" && strings.HasPrefix(string(e.Data), livenessPrefix+s.liveTag+"-") {
			sn.liveDone = true
		}
	}
	sn.appliedSeen = len(n.Applied)
	return s.checkState(n.ID, n.State)
}

// checkState checks an application state against the one the first node
// to reach its index had.
func (s *Sim) checkState(id core.NodeID, st State) error {
	if st.Index <= 1 {
		return nil // the bootstrap state
	}
	rec, ok := s.states[st.Index]
	if !ok {
		s.states[st.Index] = stateRec{digest: st.Digest, by: id}
		return nil
	}
	if rec.digest != st.Digest {
		return fmt.Errorf("state machine safety: node %d's state at %d has digest %016x, node %d's had %016x",
			id, st.Index, st.Digest, rec.by, rec.digest)
	}
	return nil
}

// check runs the per-step checks on every live node.
func (s *Sim) check() error {
	for _, n := range s.Live() {
		sn := s.nodes[n.ID]
		if err := n.Raft.CheckInvariants(); err != nil {
			return fmt.Errorf("invariant: %w", err)
		}
		st := n.Raft.Status()
		if st.Commit < sn.commit {
			return fmt.Errorf("node %d: commit went back from %d to %d", n.ID, sn.commit, st.Commit)
		}
		if st.Applied < sn.applied {
			return fmt.Errorf("node %d: applied went back from %d to %d", n.ID, sn.applied, st.Applied)
		}
		if st.Applied != n.State.Index {
			return fmt.Errorf("node %d: core says applied %d, the application is at %d", n.ID, st.Applied, n.State.Index)
		}
		// Core takes a snapshot's configuration when the snapshot arrives,
		// before the host persists it; once no Ready is waiting, the two
		// agree.
		if !sameConf(st.Config, n.ConfState) && n.pending == nil && !n.Raft.HasReady() {
			return fmt.Errorf("node %d: core's configuration is %s, but its applied log and snapshots say %s",
				n.ID, core.DescribeConfState(st.Config), core.DescribeConfState(n.ConfState))
		}
		sn.commit, sn.applied = st.Commit, st.Applied
		s.maxCommit = max(s.maxCommit, st.Commit)
		s.res.MaxTerm = max(s.res.MaxTerm, st.Term)
		if st.Role == core.RoleLeader {
			if err := s.sawLeader(n.ID, st.Term); err != nil {
				return err
			}
		}
	}
	// Leaders are all recorded before committed entries are checked
	// against them.
	for _, n := range s.Live() {
		if st := n.Raft.Status(); st.Role == core.RoleLeader {
			if err := s.checkLeaderComplete(n, st.Term); err != nil {
				return err
			}
		}
	}
	return s.checkCommitDurable()
}

// checkCommitDurable checks that every index a live node counts as
// committed is held by a quorum's durable storage, in the entry that was
// (or will be) applied there: a commit index that covers less would let
// a crash lose an acknowledged entry. Each index is checked once, when a
// commit index first covers it; later losses would show up as broken
// state machine safety.
func (s *Sim) checkCommitDurable() error {
	var top core.Index
	var who *Node
	for _, n := range s.Live() {
		if st := n.Raft.Status(); st.Commit > top && st.Role == core.RoleLeader {
			top, who = st.Commit, n
		}
	}
	// Followers learn commit indexes from leaders, and a restarted node
	// resumes at what it applied: only a leader moves the commit index
	// first, under its configuration.
	for i := s.durableChecked + 1; i <= top; i++ {
		var term core.Term
		if core.Index(len(s.committed)) > i && s.committed[i].set {
			term = s.committed[i].e.Term
		} else {
			e, ok, err := nodeEntry(who, i)
			e, ok, _ = s.memEntry(who, i, e, ok)
			if err != nil || !ok || e.Index == 0 {
				return fmt.Errorf("node %d has commit %d but cannot show entry %d (held %t, err %v)", who.ID, top, i, ok, err)
			}
			term = e.Term
		}
		holds := map[core.NodeID]bool{}
		var holders []core.NodeID
		for _, id := range s.Cluster.IDs() {
			st := s.Cluster.Node(id).Storage
			first, _ := st.FirstIndex()
			if i < first-1 {
				holds[id] = true // compacted into its snapshot
			} else if t, err := st.Term(i); err == nil && t == term {
				holds[id] = true
			}
			if holds[id] {
				holders = append(holders, id)
			}
		}
		// An entry of the leader's own term was committed by its own
		// count: a majority of every half of its configuration holds it.
		// An older one it may have inherited, committed under an earlier
		// configuration: then every quorum of the current one (a majority
		// of each half) must meet a holder, or an election could pass it
		// by; it is enough that every majority of one half does.
		cs := who.ConfState
		var ok bool
		if term == who.Raft.Term {
			ok = majority(cs.Voters, holds) && (len(cs.VotersOutgoing) == 0 || majority(cs.VotersOutgoing, holds))
		} else {
			ok = meetsEveryMajority(cs.Voters, holds) || meetsEveryMajority(cs.VotersOutgoing, holds)
		}
		if !ok {
			return fmt.Errorf("durability: leader %d of term %d counts %d as committed, but only nodes %v durably hold entry %d/%d (configuration %s)",
				who.ID, who.Raft.Term, top, holders, term, i, core.DescribeConfState(cs))
		}
		s.durableChecked = i
	}
	return nil
}

// checkLeaderComplete checks that the leader of term holds every entry
// committed in an earlier term. An entry's commit term is not known
// exactly, but it is at most the highest leader term seen when the entry
// was first applied; entries with a lower bound are checked.
//
// The leader's log is read as core holds it (memEntry): its durable log
// overlaid with the entries of its pending early Ready and, where core's
// memory differs, core's own terms. A candidate can win on the votes of
// others alone while the Ready that carries its log is still being
// written, or before it is even taken (partial Readys); a leader never
// cuts its log.
func (s *Sim) checkLeaderComplete(n *Node, term core.Term) error {
	k := leaderKey{n.ID, term}
	from := s.leadChecked[k] + 1
	last := core.Index(len(s.committed)) - 1
	if core.Index(len(s.committed)) == 0 || from > last {
		return nil
	}
	for i := from; i <= last; i++ {
		c := &s.committed[i]
		if !c.set || c.bound >= term {
			continue
		}
		e, ok, err := nodeEntry(n, i)
		e, ok, known := s.memEntry(n, i, e, ok)
		switch {
		case err != nil:
			return fmt.Errorf("leader %d: read entry %d: %w", n.ID, i, err)
		case !ok:
			return fmt.Errorf("leader completeness: leader %d of term %d lacks entry %s committed by term %d",
				n.ID, term, core.DescribeEntry(c.e), c.bound)
		case e.Index == 0:
			// Compacted into a snapshot.
		case e.Term != c.e.Term || (known && string(e.Data) != string(c.e.Data)):
			return fmt.Errorf("leader completeness: leader %d of term %d holds %s where %s was committed by term %d",
				n.ID, term, core.DescribeEntry(e), core.DescribeEntry(c.e), c.bound)
		}
	}
	s.leadChecked[k] = last
	return nil
}

// nodeEntry returns entry i of n's log as written or being written: its
// storage overlaid with the entries of its pending Ready. ok is false if
// the log does not reach i; an entry compacted away comes back zero.
func nodeEntry(n *Node, i core.Index) (core.Entry, bool, error) {
	if n.pending != nil {
		if ents := n.pending.Entries; len(ents) > 0 && i >= ents[0].Index {
			if i > ents[len(ents)-1].Index {
				return core.Entry{}, false, nil
			}
			return ents[i-ents[0].Index], true, nil
		}
	}
	if i <= snapIndex(n.Storage) {
		return core.Entry{}, true, nil
	}
	if last, _ := n.Storage.LastIndex(); i > last {
		return core.Entry{}, false, nil
	}
	ents, err := n.Storage.Entries(i, i+1, 1<<62)
	if err != nil {
		return core.Entry{}, false, err
	}
	return ents[0], true, nil
}

// memEntry returns entry i of n's log as core holds it in memory, where it
// differs from what is written or being written: with partial Readys a
// node steps messages during its write, and may campaign on, send and see
// committed entries it has not yet handed out for writing. known is false
// when no Ready ever carried the entry, so its command is not known here
// (only its term).
func (s *Sim) memEntry(n *Node, i core.Index, e core.Entry, ok bool) (_ core.Entry, _ bool, known bool) {
	if n.Raft == nil {
		return e, ok, true
	}
	t, err := n.Raft.LogTerm(i)
	if err != nil || (ok && (e.Index == 0 || e.Term == t)) {
		return e, ok, true
	}
	if r, found := s.ents[entryKey{i, t}]; found {
		return core.Entry{Index: i, Term: t, Type: r.typ, Data: []byte(r.data)}, true, true
	}
	return core.Entry{Index: i, Term: t}, true, false
}

// checkDurableLogs compares every pair of durable logs in full: where they
// hold an entry with the same index and term, they are identical up to it.
// It cross-checks the incremental check of registerEntries.
func (s *Sim) checkDurableLogs() error {
	ids := s.Cluster.IDs()
	for i, a := range ids {
		for _, b := range ids[i+1:] {
			if err := compareLogs(s.Cluster.Node(a), s.Cluster.Node(b)); err != nil {
				return err
			}
		}
	}
	return nil
}

func compareLogs(a, b *Node) error {
	fa, _ := a.Storage.FirstIndex()
	fb, _ := b.Storage.FirstIndex()
	la, _ := a.Storage.LastIndex()
	lb, _ := b.Storage.LastIndex()
	lo, hi := max(fa, fb)-1, min(la, lb)
	if hi < lo {
		return nil
	}
	// Find the highest common index where the terms agree.
	match := core.Index(0)
	for i := hi; i >= lo; i-- {
		ta, _ := a.Storage.Term(i)
		tb, _ := b.Storage.Term(i)
		if ta == tb {
			match = i
			break
		}
		if i == 0 {
			break
		}
	}
	if match <= lo {
		return nil
	}
	ea, err := a.Storage.Entries(lo+1, match+1, 1<<62)
	if err != nil {
		return err
	}
	eb, err := b.Storage.Entries(lo+1, match+1, 1<<62)
	if err != nil {
		return err
	}
	for i := range ea {
		x, y := ea[i], eb[i]
		if x.Term != y.Term || x.Type != y.Type || string(x.Data) != string(y.Data) {
			return fmt.Errorf("log matching: nodes %d and %d share %d/%d but differ at %d: %s vs %s",
				a.ID, b.ID, ea[len(ea)-1].Term, match, x.Index, core.DescribeEntry(x), core.DescribeEntry(y))
		}
	}
	return nil
}

func sameConf(a, b core.ConfState) bool {
	return slices.Equal(a.Voters, b.Voters) && slices.Equal(a.VotersOutgoing, b.VotersOutgoing) &&
		slices.Equal(a.Learners, b.Learners) && slices.Equal(a.LearnersNext, b.LearnersNext) && a.AutoLeave == b.AutoLeave
}

// meetsEveryMajority reports whether every majority of voters includes a
// member of set: fewer than a majority are outside it.
func meetsEveryMajority(voters []core.NodeID, set map[core.NodeID]bool) bool {
	out := 0
	for _, id := range voters {
		if !set[id] {
			out++
		}
	}
	return out <= len(voters)/2 && len(voters) > 0
}

// majority reports whether more than half of voters are in set.
func majority(voters []core.NodeID, set map[core.NodeID]bool) bool {
	n := 0
	for _, id := range voters {
		if set[id] {
			n++
		}
	}
	return n > len(voters)/2
}

// --- liveness --------------------------------------------------------------

// liveness heals everything, restarts every node, and then runs the
// cluster without faults: messages in order, Readys in full, all nodes
// ticking together. A leader must emerge and a fresh proposal must be
// applied on every node within LivenessTicks ticks. Then the stability
// phase runs.
func (s *Sim) liveness() error {
	s.phase = "liveness"
	s.doing = "liveness"
	s.Cluster.Heal()
	s.releaseDelayed(true)
	for _, id := range s.Cluster.IDs() {
		n := s.Cluster.Node(id)
		if n.Down {
			if err := s.restart(n, false); err != nil {
				return err
			}
		} else if err := s.FinishReady(n); err != nil {
			return err
		}
	}
	s.record(fmt.Sprintf("%d liveness: healed, all nodes up", s.step))
	if err := s.check(); err != nil {
		return err
	}
	ticks, err := s.converge("a")
	s.res.LivenessTicks = ticks
	if err != nil {
		return err
	}
	return s.stability()
}

// converge runs the healthy cluster until a proposal tagged tag has been
// applied on every node, proposing one on each new leader.
func (s *Sim) converge(tag string) (int, error) {
	s.liveTag = tag
	for _, sn := range s.nodes {
		sn.liveDone = false
	}
	proposedIn := map[core.Term]bool{}
	for tick := 0; tick <= s.cfg.LivenessTicks; tick++ {
		s.step++
		if err := s.settle(); err != nil {
			return tick, err
		}
		done := false
		if lead := s.Cluster.Leader(); lead != core.None {
			if err := s.followConf(s.Cluster.Node(lead).ConfState); err != nil {
				return tick, err
			}
			done = true
			for _, id := range members(s.Cluster.Node(lead).ConfState) {
				done = done && s.nodes[id].liveDone
			}
		}
		if done {
			return tick, nil
		}
		if lead := s.Cluster.Leader(); lead != core.None {
			n := s.Cluster.Node(lead)
			term := n.Raft.Term
			// A read on some member each tick: in a healthy cluster every
			// one must be answered, at or past everything committed.
			if m, ok := pick(s.Rand, s.Live()); ok {
				ctx := fmt.Sprintf("read-%s-%d", tag, s.step)
				if err := m.Raft.ReadIndex([]byte(ctx)); err == nil {
					s.res.Reads++
					s.reads[ctx] = simRead{node: m.ID, floor: s.maxCommit, step: s.step}
				}
			}
			if !proposedIn[term] {
				data := fmt.Sprintf("%s%s-%d", livenessPrefix, tag, term)
				err := n.Raft.Propose([]byte(data))
				// A leader over its uncommitted budget drops it; try
				// again next tick.
				proposedIn[term] = err == nil
				s.record(fmt.Sprintf("%d liveness: propose %q on %d: %v", s.step, data, lead, err))
				if err != nil && !errors.Is(err, core.ErrProposalDropped) {
					return tick, fmt.Errorf("propose on %d: %w", lead, err)
				}
				if err := s.settle(); err != nil {
					return tick, err
				}
			}
		}
		if err := s.tickAll(); err != nil {
			return tick, err
		}
	}
	var b strings.Builder
	for _, n := range s.Live() {
		st := n.Raft.Status()
		last, _ := n.Storage.LastIndex()
		fmt.Fprintf(&b, "\n  node %d: %s term %d vote %d lead %d commit %d applied %d last %d",
			n.ID, st.Role, st.Term, st.Vote, st.Lead, st.Commit, st.Applied, last)
	}
	return s.cfg.LivenessTicks, fmt.Errorf("liveness: no proposal committed on every node within %d ticks after healing:%s",
		s.cfg.LivenessTicks, b.String())
}

// followConf runs the members of cs (the leader's configuration) and stops
// the other nodes (removed, or never added), as an operator does: a
// removed node that never heard of its removal would otherwise keep
// campaigning, and without pre-vote and check-quorum nothing stops it from
// disrupting. A node stopped as a non-member that a later configuration
// names again (a learner whose addition was still being applied) is
// restarted.
func (s *Sim) followConf(cs core.ConfState) error {
	in := members(cs)
	for _, id := range s.Cluster.IDs() {
		n := s.Cluster.Node(id)
		switch member := slices.Contains(in, id); {
		case !member && !n.Down:
			n.Crash()
			s.record(fmt.Sprintf("%d liveness: node %d is not a member of %s; stopped", s.step, id, core.DescribeConfState(cs)))
		case member && n.Down:
			s.record(fmt.Sprintf("%d liveness: node %d is a member of %s; restarted", s.step, id, core.DescribeConfState(cs)))
			if err := s.restart(n, false); err != nil {
				return err
			}
		}
	}
	return nil
}

// tickAll ticks every live node once and checks.
func (s *Sim) tickAll() error {
	for _, n := range s.Live() {
		n.Raft.Tick()
	}
	s.record(fmt.Sprintf("%d liveness: tick all", s.step))
	return s.check()
}

// stability checks, on a converged cluster with check-quorum on, that
// (with pre-vote on too) a follower that stops hearing the leader for a
// while does not unseat it: the others, hearing from the leader, ignore
// its pre-votes (the leader lease); and that a leader cut off from
// everyone steps down within two election timeouts. The cluster must then
// converge again.
func (s *Sim) stability() error {
	base := s.Cluster.Base
	if base.DisableCheckQuorum {
		return nil
	}
	lead := s.Cluster.Leader()
	if lead == core.None {
		return errors.New("stability: no leader after the cluster converged")
	}
	ln := s.Cluster.Node(lead)
	term := ln.Raft.Term
	var others, voters []core.NodeID
	for _, id := range s.Cluster.IDs() {
		if id != lead {
			others = append(others, id)
		}
	}
	// Followers whose silence leaves the leader a quorum in every half of
	// its configuration: cutting one of them must not unseat it.
	cs := ln.ConfState
	for _, id := range cs.Voters {
		rest := map[core.NodeID]bool{}
		for _, v := range members(cs) {
			rest[v] = v != id
		}
		if id != lead && majority(cs.Voters, rest) && (len(cs.VotersOutgoing) == 0 || majority(cs.VotersOutgoing, rest)) {
			voters = append(voters, id)
		}
	}
	election := base.ElectionTicks
	if !base.DisablePreVote && len(voters) > 0 {
		// The follower stops hearing the leader, but the others still
		// hear the follower's pre-votes; they must ignore them.
		f, _ := pick(s.Rand, voters)
		s.Cluster.Cut(lead, f)
		s.record(fmt.Sprintf("%d stability: link %d->%d cut", s.step, lead, f))
		for i := range 6 * election {
			if i == 3*election {
				s.Cluster.Heal()
				s.record(fmt.Sprintf("%d stability: healed", s.step))
			}
			s.step++
			if err := s.settle(); err != nil {
				return err
			}
			if st := ln.Raft.Status(); st.Role != core.RoleLeader || st.Term != term {
				return fmt.Errorf("leader lease: leader %d of term %d unseated (now %s of term %d) by follower %d that stopped hearing it, with pre-vote and check-quorum on",
					lead, term, st.Role, st.Term, f)
			}
			if err := s.tickAll(); err != nil {
				return err
			}
		}
	}
	s.Cluster.Partition([]core.NodeID{lead}, others)
	s.record(fmt.Sprintf("%d stability: leader %d cut off from %v", s.step, lead, others))
	for range 2*election + 1 {
		s.step++
		if err := s.settle(); err != nil {
			return err
		}
		if err := s.tickAll(); err != nil {
			return err
		}
	}
	if err := s.settle(); err != nil {
		return err
	}
	if st := ln.Raft.Status(); st.Role == core.RoleLeader && st.Term == term {
		return fmt.Errorf("check-quorum: leader %d of term %d cut off from every other node still leads after %d ticks (2 election timeouts and one)",
			lead, term, 2*election+1)
	}
	s.Cluster.Heal()
	s.record(fmt.Sprintf("%d stability: healed", s.step))
	_, err := s.converge("b")
	return err
}

// settle handles every Ready in full and delivers every message in order
// until nothing is left, checking after each round.
func (s *Sim) settle() error {
	// Without ticks Raft goes quiet, so endless traffic is a livelock. But
	// with one entry per append and one append in flight (MaxMsgBytes and
	// MaxInflightMsgs as low as they go) a follower catches up one entry
	// per round trip: allow a few rounds per entry of the longest log.
	maxRounds := 1000
	for _, id := range s.Cluster.IDs() {
		last, _ := s.Cluster.Node(id).Storage.LastIndex()
		maxRounds = max(maxRounds, 1000+4*int(last))
	}
	for range maxRounds {
		busy := false
		for _, n := range s.Live() {
			for {
				rd, ok, err := s.StartReady(n)
				if err != nil {
					return err
				}
				if !ok {
					break
				}
				busy = true
				s.record(fmt.Sprintf("%d liveness: ready %d %s", s.step, n.ID, shortReady(rd)))
				if err := s.FinishReady(n); err != nil {
					return err
				}
			}
		}
		net := s.Cluster.Net
		s.Cluster.Net = nil
		for _, m := range net {
			busy = true
			desc, err := s.deliver(m)
			s.record(fmt.Sprintf("%d liveness: deliver %s", s.step, desc))
			if err != nil {
				return err
			}
		}
		if err := s.check(); err != nil {
			return err
		}
		if !busy {
			return nil
		}
	}
	return fmt.Errorf("liveness: the cluster did not settle in %d rounds", maxRounds)
}

// --- reads, transfers, membership --------------------------------------------

// actRead asks a node for a linearizable read. Whatever index answers it
// must be at least the highest commit index any node had when it was
// asked: a write acknowledged before the read began is at or below that.
func (s *Sim) actRead() (string, bool, error) {
	n, ok := pick(s.Rand, s.Live())
	if !ok {
		return "", false, nil
	}
	if id := s.Cluster.Leader(); id != core.None && s.Rand.IntN(2) == 0 {
		n = s.Cluster.Node(id)
	}
	ctx := fmt.Sprintf("read-%d", s.step)
	s.res.Reads++
	err := n.Raft.ReadIndex([]byte(ctx))
	desc := fmt.Sprintf("%d %s (floor %d)", n.ID, ctx, s.maxCommit)
	switch {
	case err == nil:
		s.reads[ctx] = simRead{node: n.ID, floor: s.maxCommit, step: s.step}
	case errors.Is(err, core.ErrProposalDropped):
		desc += ": " + err.Error()
	default:
		return desc, true, fmt.Errorf("read on %d: %w", n.ID, err)
	}
	return desc, true, nil
}

// checkRead checks an answer to a read.
func (s *Sim) checkRead(n *Node, rs core.ReadState) error {
	ctx := string(rs.RequestCtx)
	rd, ok := s.reads[ctx]
	if !ok {
		return fmt.Errorf("node %d: answer to read %q that is not waiting (answered twice, or never asked)", n.ID, ctx)
	}
	if rd.node != n.ID {
		return fmt.Errorf("node %d: answer to read %q asked on node %d", n.ID, ctx, rd.node)
	}
	delete(s.reads, ctx)
	if rs.Dropped {
		s.res.ReadsLost++
		return nil
	}
	s.res.ReadsDone++
	if rs.Index < rd.floor {
		return fmt.Errorf("linearizability: read %q on node %d (asked at step %d) answered with index %d, but index %d was committed before it was asked",
			ctx, n.ID, rd.step, rs.Index, rd.floor)
	}
	return nil
}

// actTransfer asks the leader to hand leadership to another voter, or a
// follower to have it handed to itself.
func (s *Sim) actTransfer() (string, bool, error) {
	id := s.Cluster.Leader()
	if id == core.None {
		return "", false, nil
	}
	lead := s.Cluster.Node(id)
	to, ok := pick(s.Rand, lead.ConfState.Voters)
	if !ok {
		return "", false, nil
	}
	s.res.Transfers++
	if s.Rand.IntN(4) == 0 {
		if n := s.Cluster.Node(to); n != nil && !n.Down {
			n.Raft.TransferLeadership(to)
			return fmt.Sprintf("%d asks for leadership", to), true, nil
		}
	}
	lead.Raft.TransferLeadership(to)
	return fmt.Sprintf("%d to %d", id, to), true, nil
}

// maxSimIDs bounds the nodes a run may create: new members join with fresh
// IDs, and removed ones never come back.
const maxSimIDs = 9

// actConfChange proposes a membership change on the leader (now and then
// through a follower, which forwards it), chosen from what the leader's
// configuration allows: adding a voter or a learner (a fresh node with an
// empty storage), promoting or demoting one, removing one (the leader
// too), replacing voters through joint consensus left automatically or
// explicitly, and leaving an explicit joint configuration. Voters stay
// between 3 and 5 (fewer if the run started smaller).
func (s *Sim) actConfChange() (string, bool, error) {
	id := s.Cluster.Leader()
	if id == core.None {
		return "", false, nil
	}
	lead := s.Cluster.Node(id)
	cs := lead.ConfState
	minVoters := min(3, s.cfg.Nodes)
	var cc core.ConfChange
	var what string
	if len(cs.VotersOutgoing) > 0 {
		if cs.AutoLeave {
			return "", false, nil
		}
		what = "leave joint"
	} else {
		fresh := func() (core.NodeID, bool) {
			id := core.NodeID(len(s.Cluster.IDs()) + 1)
			if id > maxSimIDs {
				return 0, false
			}
			return id, true
		}
		single := func(t core.ConfChangeType, id core.NodeID) {
			cc.Changes = append(cc.Changes, core.ConfChangeSingle{Type: t, NodeID: id})
		}
		voters, learners := len(cs.Voters), len(cs.Learners)
		switch k := s.Rand.IntN(7); {
		case k == 0 && voters < 5:
			nid, ok := fresh()
			if !ok {
				return "", false, nil
			}
			single(core.ConfChangeAddNode, nid)
		case k == 1 && learners < 2:
			nid, ok := fresh()
			if !ok {
				return "", false, nil
			}
			single(core.ConfChangeAddLearner, nid)
		case k == 2 && learners > 0 && voters < 5:
			single(core.ConfChangeAddNode, cs.Learners[s.Rand.IntN(learners)])
		case k == 3 && voters > minVoters:
			single(core.ConfChangeAddLearner, cs.Voters[s.Rand.IntN(voters)])
		case k == 4 && voters > minVoters:
			single(core.ConfChangeRemoveNode, cs.Voters[s.Rand.IntN(voters)])
		case k == 5 && learners > 0:
			single(core.ConfChangeRemoveNode, cs.Learners[s.Rand.IntN(learners)])
		case k == 6:
			// Replace one or two voters at once, through joint consensus.
			for range 1 + s.Rand.IntN(2) {
				nid, ok := fresh()
				if !ok {
					break
				}
				gone := cs.Voters[s.Rand.IntN(voters)]
				if slices.ContainsFunc(cc.Changes, func(c core.ConfChangeSingle) bool { return c.NodeID == gone }) {
					break
				}
				single(core.ConfChangeRemoveNode, gone)
				single(core.ConfChangeAddNode, nid)
				if err := s.addJoiner(nid); err != nil {
					return "", true, err
				}
			}
			if len(cc.Changes) == 0 {
				return "", false, nil
			}
			cc.Transition = []core.ConfChangeTransition{core.ConfChangeTransitionJointImplicit,
				core.ConfChangeTransitionJointExplicit}[s.Rand.IntN(2)]
		default:
			return "", false, nil
		}
		for _, c := range cc.Changes {
			if s.Cluster.Node(c.NodeID) == nil {
				if err := s.addJoiner(c.NodeID); err != nil {
					return "", true, err
				}
			}
		}
		what = describeConfChange(cc)
	}
	cc.Context = fmt.Appendf(nil, "sim-%d", s.step)
	via := lead
	if s.Rand.IntN(4) == 0 {
		if n, ok := pick(s.Rand, s.Live()); ok {
			via = n
		}
	}
	err := via.Raft.ProposeConfChange(cc)
	desc := fmt.Sprintf("%d (via %d) %s in %s", id, via.ID, what, core.DescribeConfState(cs))
	if err != nil && !errors.Is(err, core.ErrProposalDropped) {
		return desc, true, fmt.Errorf("conf change on %d: %w", via.ID, err)
	}
	if err != nil {
		desc += ": " + err.Error()
	}
	return desc, true, nil
}

func describeConfChange(cc core.ConfChange) string {
	var parts []string
	for _, c := range cc.Changes {
		parts = append(parts, fmt.Sprintf("%s(%d)", c.Type, c.NodeID))
	}
	if cc.Transition != core.ConfChangeTransitionAuto {
		parts = append(parts, []string{"", "joint", "joint-explicit"}[cc.Transition])
	}
	return strings.Join(parts, " ")
}

// addJoiner starts node id with an empty storage, as a host does before
// proposing to add it: it knows no configuration, so it waits for the
// leader to reach it.
func (s *Sim) addJoiner(id core.NodeID) error {
	if s.Cluster.Node(id) != nil {
		return nil
	}
	seed := s.Cluster.Base.Seed
	s.Cluster.Base.Seed = s.nodeSeed(id, 0)
	err := s.Cluster.AddNode(id, core.NewMemoryStorage())
	s.Cluster.Base.Seed = seed
	if err != nil {
		return err
	}
	s.nodes[id] = &simNode{}
	s.record(fmt.Sprintf("%d node %d started with an empty storage", s.step, id))
	return nil
}

// members returns the voters and learners of cs, sorted.
func members(cs core.ConfState) []core.NodeID {
	ids := slices.Concat(cs.Voters, cs.VotersOutgoing, cs.Learners, cs.LearnersNext)
	slices.Sort(ids)
	return slices.Compact(ids)
}
