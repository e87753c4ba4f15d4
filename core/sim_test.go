package core_test

import (
	"errors"
	"flag"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/stepraft/stepraft/core/coretest"
)

// The simulator's flags. By default TestSimulator runs a fixed set of
// seeds; a failure prints the command that replays it, e.g.
//
//	go test ./core -run TestSimulator -sim.seed=17 -sim.nodes=5 -sim.steps=2000 -v
//
// and with -sim.seed and -v every action is logged. A long sweep:
//
//	go test ./core -run TestSimulator -sim.seeds=2000 -sim.steps=3000 -v -timeout 0
var (
	simSeed  = flag.Uint64("sim.seed", 0, "replay this one seed (0: run -sim.seeds seeds from -sim.first)")
	simSeeds = flag.Int("sim.seeds", 0, "how many seeds TestSimulator runs (0: the default set)")
	simFirst = flag.Uint64("sim.first", 1, "the first seed of the set")
	simSteps = flag.Int("sim.steps", 0, "steps per seed (0: the default)")
	simNodes = flag.Int("sim.nodes", 0, "cluster size (0: 3 for odd seeds, 5 for even ones, 4 for multiples of 10)")
)

const (
	// The default set: small enough that the whole test takes seconds
	// without -race and well under a minute with it on two cores.
	defaultSimSeeds      = 400
	defaultSimSeedsShort = 40
	defaultSimSteps      = 5000
)

// simNodesFor returns the cluster size for a seed: 3 and 5 nodes, and one
// seed in ten runs 4 (an even cluster, where a quorum is not half).
func simNodesFor(seed uint64) int {
	switch {
	case *simNodes != 0:
		return *simNodes
	case seed%10 == 0:
		return 4
	case seed%2 == 1:
		return 3
	}
	return 5
}

func replayCommand(seed uint64, nodes, steps int) string {
	return fmt.Sprintf("go test ./core -run 'TestSimulator$' -sim.seed=%d -sim.nodes=%d -sim.steps=%d -v",
		seed, nodes, steps)
}

// TestSimulator runs whole clusters through random faults (reordering,
// loss, duplication, delay, partitions, crashes that lose unpersisted
// Readys, early sends) and checks Raft's safety properties after every
// step, then requires progress once the faults stop.
func TestSimulator(t *testing.T) {
	steps := *simSteps
	if steps == 0 {
		steps = defaultSimSteps
	}
	if *simSeed != 0 {
		nodes := simNodesFor(*simSeed)
		cfg := coretest.SimConfig{Seed: *simSeed, Nodes: nodes, Steps: steps}
		if testing.Verbose() {
			cfg.Trace = func(line string) { t.Log(line) }
		}
		res, err := coretest.RunSim(cfg)
		reportSim(t, res, err, steps)
		if res != nil {
			t.Logf("seed %d: %s", *simSeed, describeSimResult(res))
		}
		return
	}
	seeds := *simSeeds
	if seeds == 0 {
		seeds = defaultSimSeeds
		if testing.Short() {
			seeds = defaultSimSeedsShort
		}
	}
	var (
		mu  sync.Mutex
		sum simTotals
	)
	t.Run("seeds", func(t *testing.T) {
		for seed := *simFirst; seed < *simFirst+uint64(seeds); seed++ {
			t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) {
				t.Parallel()
				res, err := coretest.RunSim(coretest.SimConfig{Seed: seed, Nodes: simNodesFor(seed), Steps: steps})
				mu.Lock()
				sum.add(res, err)
				mu.Unlock()
				reportSim(t, res, err, steps)
			})
		}
	})
	t.Logf("%d seeds x %d steps: %s", seeds, steps, sum)
	if *simSeeds == 0 && !testing.Short() && sum.violations == 0 {
		// The default set must reach every path it is there to test.
		for what, n := range map[string]int{"snapshots taken": sum.snapshots, "snapshots installed": sum.installs,
			"Readys lost in crashes": sum.lostReadys, "unsynced writes lost": sum.lostWrites,
			"entries committed": sum.committed, "duplicated messages": sum.dupes,
			"reads answered": sum.readsDone, "reads dropped": sum.readsLost, "transfers": sum.transfers,
			"configuration changes": sum.changes} {
			if n < 100 {
				t.Errorf("the default seeds produced only %d %s", n, what)
			}
		}
	}
}

func reportSim(t *testing.T, res *coretest.SimResult, err error, steps int) {
	t.Helper()
	if err == nil {
		return
	}
	var v *coretest.SimViolation
	if !errors.As(err, &v) {
		t.Fatalf("simulator: %v", err)
	}
	msg := v.Error()
	if res != nil {
		msg += "\nconfig: " + res.Config
	}
	t.Fatalf("%s\nreplay: %s", msg, replayCommand(v.Seed, v.Nodes, steps))
}

type simTotals struct {
	runs, violations                           int
	steps, delivered, dropped, dupes           int
	crashes, lostReadys, restarts, leaders     int
	lostWrites, snapshots, installs            int
	reads, readsDone, readsLost, transfers     int
	changes, maxVoters                         int
	committed, readys                          int
	proposals, livenessTicks, maxLivenessTicks int
}

func (s *simTotals) add(r *coretest.SimResult, err error) {
	s.runs++
	if err != nil {
		s.violations++
	}
	if r == nil {
		return
	}
	s.steps += r.Steps
	s.delivered += r.Delivered
	s.dropped += r.Dropped
	s.dupes += r.Dupes
	s.crashes += r.Crashes
	s.lostReadys += r.LostReadys
	s.restarts += r.Restarts
	s.lostWrites += r.LostWrites
	s.snapshots += r.Snapshots
	s.installs += r.Installs
	s.reads += r.Reads
	s.readsDone += r.ReadsDone
	s.readsLost += r.ReadsLost
	s.transfers += r.Transfers
	s.changes += r.Changes
	s.maxVoters = max(s.maxVoters, r.MaxVoters)
	s.leaders += r.Leaders
	s.committed += r.Committed
	s.readys += r.Readys
	s.proposals += r.Proposals
	s.livenessTicks += r.LivenessTicks
	s.maxLivenessTicks = max(s.maxLivenessTicks, r.LivenessTicks)
}

func (s simTotals) String() string {
	return fmt.Sprintf("runs=%d violations=%d steps=%d delivered=%d dropped=%d duplicated=%d crashes=%d (losing an early Ready: %d, losing unsynced writes: %d) restarts=%d "+
		"readys=%d leaders=%d proposals=%d committed=%d snapshots=%d installed=%d "+
		"reads=%d (answered %d, dropped %d) transfers=%d conf-changes=%d max-voters=%d liveness-ticks(mean/max)=%d/%d",
		s.runs, s.violations, s.steps, s.delivered, s.dropped, s.dupes, s.crashes, s.lostReadys, s.lostWrites, s.restarts,
		s.readys, s.leaders, s.proposals, s.committed, s.snapshots, s.installs,
		s.reads, s.readsDone, s.readsLost, s.transfers, s.changes, s.maxVoters, s.livenessTicks/max(s.runs, 1), s.maxLivenessTicks)
}

func describeSimResult(r *coretest.SimResult) string {
	var b strings.Builder
	var t simTotals
	t.add(r, nil)
	fmt.Fprintf(&b, "%s\nconfig: %s\nweights: %v\nactions: %v\nmax term %d, digest %x",
		t, r.Config, r.Weights, r.Actions, r.MaxTerm, r.Digest)
	return b.String()
}

// TestSimulatorIsDeterministic runs one seed twice: the same seed must give
// the same run, or no failure could be replayed.
func TestSimulatorIsDeterministic(t *testing.T) {
	for _, nodes := range []int{3, 5} {
		cfg := coretest.SimConfig{Seed: 42, Nodes: nodes, Steps: 800}
		a, err := coretest.RunSim(cfg)
		if err != nil {
			t.Fatal(err)
		}
		b, err := coretest.RunSim(cfg)
		if err != nil {
			t.Fatal(err)
		}
		if a.Digest != b.Digest || a.Delivered != b.Delivered || a.Committed != b.Committed {
			t.Fatalf("%d nodes: two runs of seed 42 differ:\n%+v\n%+v", nodes, a, b)
		}
		if a.Committed < 2 || a.Leaders == 0 {
			t.Fatalf("%d nodes: the run made no progress: %+v", nodes, a)
		}
	}
}

// TestSimulatorCatchesEarlyResponses checks the checker: a host that sends
// responses (votes, append acknowledgements) before their Ready is durable
// breaks the Ready contract, and with crashes that lose the write, a node
// forgets a vote it gave and votes again in the same term. The simulator
// must report it, with the seed and a trace.
func TestSimulatorCatchesEarlyResponses(t *testing.T) {
	unsafeReady := coretest.SimAction{Name: "ready-unsafe", Weight: 100, Do: func(s *coretest.Sim) (string, bool, error) {
		var cands []*coretest.Node
		for _, n := range s.Live() {
			if _, pending := n.Pending(); !pending && n.Raft.HasReady() {
				cands = append(cands, n)
			}
		}
		if len(cands) == 0 {
			return "", false, nil
		}
		n := cands[s.Rand.IntN(len(cands))]
		rd, _, err := s.StartReady(n)
		for _, m := range rd.Messages {
			if m.Type.IsResponse() {
				s.Cluster.Net = append(s.Cluster.Net, m) // too early
			}
		}
		return fmt.Sprintf("%d sends %d messages before its write", n.ID, len(rd.Messages)), true, err
	}}
	actions := append(coretest.DefaultSimActions(), unsafeReady)
	for seed := uint64(1); seed <= 200; seed++ {
		_, err := coretest.RunSim(coretest.SimConfig{Seed: seed, Nodes: 3, Steps: 3000, Actions: actions,
			Weights: map[string]int{"crash": 20, "restart": 40}})
		if err == nil {
			continue
		}
		var v *coretest.SimViolation
		if !errors.As(err, &v) {
			t.Fatalf("seed %d: %v", seed, err)
		}
		if v.Seed != seed || v.Step == 0 || len(v.Trace) == 0 || len(v.Trace) > 50 ||
			!strings.Contains(err.Error(), fmt.Sprintf("seed=%d", seed)) {
			t.Fatalf("violation lacks what a replay needs: %+v", v)
		}
		t.Logf("caught after %d seeds: %v", seed, v.Err)
		return
	}
	t.Fatal("200 seeds of a host that sends responses before its write found no violation")
}
