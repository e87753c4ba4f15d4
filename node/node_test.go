package node_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stepraft/stepraft/node"
	"github.com/stepraft/stepraft/node/nodetest"
)

func newKV(node.NodeID) node.StateMachine { return nodetest.NewKV() }

func kvOf(c *nodetest.Cluster, id node.NodeID) *nodetest.KV {
	return c.StateMachine(id).(*nodetest.KV)
}

func TestProposeAndRead(t *testing.T) {
	// NewCluster takes a factory with or without the node's ID.
	c := nodetest.NewCluster(t, 3, func() node.StateMachine { return nodetest.NewKV() })
	lead := c.WaitLeader()
	ctx := context.Background()
	res, err := lead.Propose(ctx, nodetest.EncodePut("a", "1"))
	if err != nil {
		t.Fatal(err)
	}
	index, ok := res.(uint64)
	if !ok || index == 0 {
		t.Fatalf("Propose returned %v", res)
	}
	for _, id := range c.IDs() {
		v, err := c.Node(id).Read(ctx, []byte("a"))
		if err != nil || v != "1" {
			t.Fatalf("read on %d: %v, %v", id, v, err)
		}
	}
}

func TestProposalsFromManyGoroutinesApplyIdentically(t *testing.T) {
	c := nodetest.NewCluster(t, 3, newKV)
	c.WaitLeader()
	const writers, each = 50, 200
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n := c.Node(node.NodeID(1 + w%3))
			for i := range each {
				// A put is idempotent: retry what may not have applied
				// (a leader change under load can cut a proposal short).
				for try := 0; ; try++ {
					ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
					_, err := n.Propose(ctx, nodetest.EncodePut(fmt.Sprintf("w%d-%d", w, i), "x"))
					cancel()
					if err == nil {
						break
					}
					if try == 20 || !(errors.Is(err, node.ErrOutcomeUnknown) || errors.Is(err, node.ErrProposalDropped)) {
						errs <- fmt.Errorf("writer %d op %d: %w", w, i, err)
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	var applied node.Index
	for _, id := range c.IDs() {
		applied = max(applied, c.Node(id).Applied())
	}
	c.WaitApplied(applied)
	want := kvOf(c, 1).Data()
	if len(want) != writers*each {
		t.Fatalf("node 1 has %d keys, want %d", len(want), writers*each)
	}
	for _, id := range c.IDs() {
		if got := kvOf(c, id).Data(); !maps.Equal(got, want) {
			t.Fatalf("node %d has %d keys, node 1 %d, and they differ", id, len(got), len(want))
		}
	}
}

func TestFailedFsyncStopsTheNode(t *testing.T) {
	c := nodetest.NewCluster(t, 3, newKV)
	lead := c.WaitLeader()
	id := lead.Status().ID
	c.Store(id).FailNextSync()
	_, err := lead.Propose(context.Background(), nodetest.EncodePut("k", "v"))
	if err == nil {
		t.Fatal("Propose succeeded on a node whose fsync failed")
	}
	select {
	case <-lead.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("node did not stop after a failed fsync")
	}
	if !errors.Is(lead.Err(), nodetest.ErrInjected) {
		t.Fatalf("Err() = %v, want the injected failure", lead.Err())
	}
	if _, err := lead.Propose(context.Background(), nil); !errors.Is(err, node.ErrStopped) {
		t.Fatalf("Propose after the failure: %v, want ErrStopped", err)
	}
}

// put proposes key=value through n, failing the test on error. A put is
// idempotent, so one whose outcome a leader change made unknown (a busy
// machine running the race detector can delay heartbeats past an election
// timeout) is tried again, through n, which forwards to the new leader.
func put(t *testing.T, n *node.Node, key, value string) node.Index {
	t.Helper()
	idx, err := tryPut(n, key, value)
	if err != nil {
		t.Fatalf("put %s: %v", key, err)
	}
	return idx
}

func tryPut(n *node.Node, key, value string) (node.Index, error) {
	deadline := time.Now().Add(nodetest.WaitTimeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		res, err := n.Propose(ctx, nodetest.EncodePut(key, value))
		cancel()
		if err == nil {
			return node.Index(res.(uint64)), nil
		}
		if time.Now().After(deadline) || !(errors.Is(err, node.ErrOutcomeUnknown) || errors.Is(err, node.ErrProposalDropped)) {
			return 0, err
		}
	}
}

// putRetry proposes through whichever node leads, retrying errors that
// say the command did not apply, until it is acknowledged.
func putRetry(t *testing.T, c *nodetest.Cluster, key, value string) node.Index {
	t.Helper()
	deadline := time.Now().Add(nodetest.WaitTimeout)
	for {
		lead := c.WaitLeader()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		res, err := lead.Propose(ctx, nodetest.EncodePut(key, value))
		cancel()
		if err == nil {
			return node.Index(res.(uint64))
		}
		if time.Now().After(deadline) {
			t.Fatalf("put %s: %v", key, err)
		}
	}
}

func TestWriteStopLeaderReadFromNewLeader(t *testing.T) {
	c := nodetest.NewCluster(t, 3, newKV)
	lead := c.WaitLeader()
	for i := range 20 {
		put(t, lead, fmt.Sprintf("k%d", i), fmt.Sprint(i))
	}
	old := lead.Status().ID
	c.Stop(old)
	next := c.WaitLeader()
	if next.Status().ID == old {
		t.Fatal("the stopped node still leads")
	}
	for i := range 20 {
		v, err := next.Read(context.Background(), []byte(fmt.Sprintf("k%d", i)))
		if err != nil || v != fmt.Sprint(i) {
			t.Fatalf("k%d on the new leader: %v, %v", i, v, err)
		}
	}
}

func TestRestartedNodeCatchesUp(t *testing.T) {
	c := nodetest.NewCluster(t, 3, newKV)
	lead := c.WaitLeader()
	put(t, lead, "before", "1")
	follower := node.NodeID(1)
	if lead.Status().ID == follower {
		follower = 2
	}
	c.Stop(follower)
	var last node.Index
	for i := range 50 {
		last = putRetry(t, c, fmt.Sprintf("k%d", i), "v")
	}
	n := c.Restart(follower)
	c.WaitApplied(last)
	if v, _ := kvOf(c, follower).Get("k49"); v != "v" {
		t.Fatalf("restarted node misses k49 (applied %d)", n.Applied())
	}
	if v, _ := kvOf(c, follower).Get("before"); v != "1" {
		t.Fatal("restarted node lost what it had before it stopped")
	}
}

func smallSnapshots(cfg *node.Config) {
	cfg.SnapshotEntries = 50
	cfg.TrailingEntries = 10
}

func TestNodeDownAcrossSnapshotsCatchesUpByStreamedSnapshot(t *testing.T) {
	c := nodetest.NewCluster(t, 3, newKV, nodetest.Options{Config: smallSnapshots})
	lead := c.WaitLeader()
	follower := node.NodeID(1)
	if lead.Status().ID == follower {
		follower = 2
	}
	c.Stop(follower)
	for i := range 400 {
		putRetry(t, c, fmt.Sprintf("k%d", i), "v")
	}
	c.Restart(follower)
	// Writes go on, faster than the trailing window, while it catches up.
	var last node.Index
	for i := 400; i < 600; i++ {
		last = putRetry(t, c, fmt.Sprintf("k%d", i), "v")
	}
	c.WaitApplied(last)
	got, want := kvOf(c, follower).Data(), kvOf(c, c.WaitLeader().Status().ID).Data()
	if len(got) != 600 || len(want) != 600 {
		t.Fatalf("follower has %d keys, leader %d, want 600", len(got), len(want))
	}
	// It stopped before index 10 and the log was compacted far past
	// that: only a snapshot from the leader could bring it back.
	if at := kvOf(c, follower).RestoredAt(); at < 300 {
		t.Fatalf("follower restored a snapshot at %d, want one from the leader past 300", at)
	}
}

func TestPartitionedLeaderStepsDownAndPendingCallsEnd(t *testing.T) {
	c := nodetest.NewCluster(t, 3, newKV)
	lead := c.WaitLeader()
	id := lead.Status().ID
	var others []node.NodeID
	for _, x := range c.IDs() {
		if x != id {
			others = append(others, x)
		}
	}
	c.Partition([]node.NodeID{id}, others)
	start := time.Now()
	var wg sync.WaitGroup
	errs := make([]error, 2)
	wg.Add(2)
	go func() {
		defer wg.Done()
		_, errs[0] = lead.Propose(context.Background(), nodetest.EncodePut("lost", "x"))
	}()
	go func() {
		defer wg.Done()
		_, errs[1] = lead.Read(context.Background(), []byte("lost"))
	}()
	wg.Wait()
	// The election timeout is 10 ticks of nodetest.TickInterval; a few of them.
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("calls took %v to end", d)
	}
	if errs[0] == nil || !(errors.Is(errs[0], node.ErrOutcomeUnknown) || errors.Is(errs[0], node.ErrProposalDropped)) {
		t.Fatalf("Propose on a partitioned leader: %v", errs[0])
	}
	if errs[1] == nil {
		t.Fatal("Read on a partitioned leader succeeded")
	}
	c.WaitFor("the partitioned leader to step down", func() bool {
		return lead.Status().Role.String() != "leader"
	})
	c.Heal()
	c.WaitLeader()
}

func TestApplyPanicStopsTheNode(t *testing.T) {
	c := nodetest.NewCluster(t, 1, func(node.NodeID) node.StateMachine { return &panicky{KV: nodetest.NewKV()} })
	lead := c.WaitLeader()
	_, err := lead.Propose(context.Background(), nodetest.EncodePut("boom", ""))
	if err == nil {
		t.Fatal("a panicking Apply returned a result")
	}
	<-lead.Done()
	if lead.Err() == nil || !containsAll(lead.Err().Error(), "panicked", "entry") {
		t.Fatalf("Err() = %v", lead.Err())
	}
}

type panicky struct{ *nodetest.KV }

func (p *panicky) Apply(index uint64, cmd []byte) any {
	if string(cmd[1:5]) == "boom" {
		panic("poisoned command")
	}
	return p.KV.Apply(index, cmd)
}

func containsAll(s string, subs ...string) bool {
	for _, x := range subs {
		if !strings.Contains(s, x) {
			return false
		}
	}
	return true
}

func TestTCPCluster(t *testing.T) {
	c := nodetest.NewCluster(t, 3, newKV, nodetest.Options{TCP: true})
	lead := c.WaitLeader()
	var last node.Index
	for i := range 100 {
		last = put(t, lead, fmt.Sprintf("k%d", i), "v")
	}
	c.WaitApplied(last)
	for _, id := range c.IDs() {
		if n := kvOf(c, id).Len(); n != 100 {
			t.Fatalf("node %d has %d keys", id, n)
		}
	}
}

// load proposes through the leader from a few goroutines until stop is
// closed, and returns the number of acknowledged writes.
func load(t *testing.T, c *nodetest.Cluster, stop <-chan struct{}) func() int {
	var wg sync.WaitGroup
	var mu sync.Mutex
	acked := 0
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				lead := c.Leader()
				if lead == nil {
					time.Sleep(5 * time.Millisecond) // pacing: no leader yet
					continue
				}
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
				_, err := lead.Propose(ctx, nodetest.EncodePut(fmt.Sprintf("load%d-%d", w, i), "x"))
				cancel()
				if err == nil {
					mu.Lock()
					acked++
					mu.Unlock()
				}
			}
		}()
	}
	return func() int {
		wg.Wait()
		mu.Lock()
		defer mu.Unlock()
		return acked
	}
}

func TestMembersAddedAndRemovedUnderLoad(t *testing.T) {
	c := nodetest.NewCluster(t, 3, newKV, nodetest.Options{Config: smallSnapshots})
	c.WaitLeader()
	stop := make(chan struct{})
	wait := load(t, c, stop)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	four, err := c.Add(ctx, false)
	if err != nil {
		t.Fatalf("add voter: %v", err)
	}
	five, err := c.Add(ctx, true)
	if err != nil {
		t.Fatalf("add learner: %v", err)
	}
	// Remove a founding follower.
	lead := c.WaitLeader()
	victim := node.NodeID(1)
	if lead.Status().ID == victim {
		victim = 2
	}
	removed := c.Node(victim)
	if err := removeRetry(ctx, c, victim); err != nil {
		t.Fatalf("remove %d: %v", victim, err)
	}
	select {
	case <-removed.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the removed node did not stop")
	}
	if !errors.Is(removed.Err(), node.ErrRemoved) {
		t.Fatalf("removed node's Err() = %v, want ErrRemoved", removed.Err())
	}
	c.Stop(victim)
	close(stop)
	if n := wait(); n == 0 {
		t.Fatal("no write succeeded during the membership changes")
	}
	last := putRetry(t, c, "after", "1")
	c.WaitApplied(last)
	st := c.WaitLeader().Status()
	var voters, learners []node.NodeID
	for _, m := range st.Members {
		if m.Learner {
			learners = append(learners, m.ID)
		} else {
			voters = append(voters, m.ID)
		}
	}
	if len(voters) != 3 || len(learners) != 1 || learners[0] != five {
		t.Fatalf("members after the changes: voters %v learners %v", voters, learners)
	}
	for _, id := range []node.NodeID{four, five} {
		if got, want := kvOf(c, id).Len(), kvOf(c, st.ID).Len(); got != want {
			t.Fatalf("new member %d has %d keys, the leader %d", id, got, want)
		}
	}
}

func removeRetry(ctx context.Context, c *nodetest.Cluster, id node.NodeID) error {
	for {
		err := c.WaitLeader().RemoveMember(ctx, id)
		if err == nil || ctx.Err() != nil {
			return err
		}
	}
}

func TestReadsDuringLeaderChangesAreNotStale(t *testing.T) {
	c := nodetest.NewCluster(t, 3, newKV)
	c.WaitLeader()
	// One writer counts up key "n"; readers check that a read never
	// returns less than what was acknowledged before it started.
	var mu sync.Mutex
	acked := -1
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; {
			select {
			case <-stop:
				return
			default:
			}
			lead := c.Leader()
			if lead == nil {
				time.Sleep(5 * time.Millisecond) // pacing: no leader yet
				continue
			}
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			_, err := lead.Propose(ctx, nodetest.EncodePut("n", fmt.Sprintf("%09d", i)))
			cancel()
			if err == nil {
				mu.Lock()
				acked = i
				mu.Unlock()
				i++
			}
		}
	}()
	stale := make(chan string, 100)
	reads := 0
	var rmu sync.Mutex
	for r := range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				mu.Lock()
				floor := acked
				mu.Unlock()
				n := c.Node(node.NodeID(1 + r))
				if n == nil {
					time.Sleep(5 * time.Millisecond) // pacing: node restarting
					continue
				}
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
				v, err := n.Read(ctx, []byte("n"))
				cancel()
				if err != nil {
					continue
				}
				got := -1
				if s, ok := v.(string); ok {
					got, _ = strconv.Atoi(s)
				}
				if got < floor {
					select {
					case stale <- fmt.Sprintf("node %d read %d after %d was acknowledged", r+1, got, floor):
					default: // enough reported
					}
				}
				rmu.Lock()
				reads++
				rmu.Unlock()
			}
		}()
	}
	progress := func() (int, int) {
		mu.Lock()
		defer mu.Unlock()
		rmu.Lock()
		defer rmu.Unlock()
		return reads, acked
	}
	for range 4 {
		lead := c.WaitLeader()
		r0, w0 := progress()
		c.WaitFor("reads and writes under this leader", func() bool {
			r, w := progress()
			return r >= r0+20 && w >= w0+10
		})
		id := lead.Status().ID
		c.Stop(id)
		c.WaitLeader()
		c.Restart(id)
	}
	close(stop)
	wg.Wait()
	close(stale)
	for s := range stale {
		t.Error(s)
	}
	if reads == 0 || acked < 10 {
		t.Fatalf("%d reads, %d writes: the test did not run", reads, acked)
	}
	t.Logf("%d reads checked against %d writes across 4 leader changes", reads, acked)
}

func TestCompactionUnderLoadCausesNoElection(t *testing.T) {
	c := nodetest.NewCluster(t, 3, newKV, nodetest.Options{Config: smallSnapshots})
	lead := c.WaitLeader()
	term := lead.Status().Term
	var last node.Index
	for i := range 1000 {
		last = put(t, lead, fmt.Sprintf("k%d", i), "v")
	}
	c.WaitApplied(last)
	for _, id := range c.IDs() {
		st := c.Node(id).Status()
		if st.Term != term {
			t.Fatalf("node %d is at term %d, the load started at %d: an election happened", id, st.Term, term)
		}
	}
}

func TestTransferLeadershipAndStatus(t *testing.T) {
	c := nodetest.NewCluster(t, 3, newKV)
	lead := c.WaitLeader()
	last := put(t, lead, "a", "1")
	c.WaitApplied(last)
	st := lead.Status()
	if st.Role.String() != "leader" || st.Commit < last || len(st.Members) != 3 || len(st.Progress) != 3 {
		t.Fatalf("leader status %+v", st)
	}
	for id, pr := range st.Progress {
		if pr.Match < last {
			t.Fatalf("progress of %d: match %d < %d", id, pr.Match, last)
		}
	}
	target := node.NodeID(1)
	if st.ID == target {
		target = 2
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := lead.TransferLeadership(ctx, target); err != nil {
		t.Fatal(err)
	}
	if id, addr := c.Node(target).Leader(); id != target || addr == "" {
		t.Fatalf("after the transfer node %d sees leader %d at %q", target, id, addr)
	}
	if v, err := c.Node(target).StaleRead([]byte("a")); err != nil || v != "1" {
		t.Fatalf("StaleRead: %v, %v", v, err)
	}
	// And back.
	if err := c.Node(target).TransferLeadership(ctx, st.ID); err != nil {
		t.Fatal(err)
	}
	if c.WaitLeader() != lead {
		t.Fatal("leadership did not come back")
	}
}

func TestCampaignElectsThisNode(t *testing.T) {
	// Elections time out after 10 s: only Campaign starts one here.
	c := nodetest.NewCluster(t, 3, newKV, nodetest.Options{Config: func(cfg *node.Config) { cfg.ElectionTicks = 1000 }})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.Node(2).Campaign(ctx); err != nil {
		t.Fatal(err)
	}
	if lead := c.WaitLeader(); lead != c.Node(2) {
		t.Fatalf("leader is %d, want 2", lead.Status().ID)
	}
}

func TestForwardingOffReturnsNotLeader(t *testing.T) {
	c := nodetest.NewCluster(t, 3, newKV, nodetest.Options{Config: func(cfg *node.Config) { cfg.DisableProposalForwarding = true }})
	lead := c.WaitLeader()
	for _, id := range c.IDs() {
		if id == lead.Status().ID {
			continue
		}
		_, err := c.Node(id).Propose(context.Background(), nodetest.EncodePut("x", "y"))
		var nl *node.NotLeaderError
		if !errors.As(err, &nl) || nl.LeaderID != lead.Status().ID || nl.LeaderAddr == "" {
			t.Fatalf("follower Propose: %v, want NotLeaderError naming %d", err, lead.Status().ID)
		}
	}
	if _, err := lead.Propose(context.Background(), make([]byte, 2<<20)); !errors.Is(err, node.ErrTooLarge) {
		t.Fatalf("2 MiB command: %v, want ErrTooLarge", err)
	}
}

// stuckKV's Apply of a command for key "stuck" blocks until release is
// closed, having said so on entered.
type stuckKV struct {
	*nodetest.KV
	entered chan struct{}
	release chan struct{}
}

func (s *stuckKV) Apply(index uint64, cmd []byte) any {
	if string(cmd[1:6]) == "stuck" {
		select {
		case s.entered <- struct{}{}:
		default:
		}
		<-s.release
	}
	return s.KV.Apply(index, cmd)
}

// newStuckCluster starts one node whose state machine is a stuckKV, with
// a request timeout of timeoutTicks, and a proposal stuck in Apply.
func newStuckCluster(t *testing.T, timeoutTicks int) (*node.Node, *stuckKV, chan error) {
	sm := &stuckKV{KV: nodetest.NewKV(), entered: make(chan struct{}, 1), release: make(chan struct{})}
	c := nodetest.NewCluster(t, 1, func(node.NodeID) node.StateMachine { return sm },
		nodetest.Options{Config: func(cfg *node.Config) { cfg.RequestTimeoutTicks = timeoutTicks }})
	t.Cleanup(func() {
		select {
		case <-sm.release:
		default:
			close(sm.release)
		}
	})
	lead := c.WaitLeader()
	stuckErr := make(chan error, 1)
	go func() {
		_, err := lead.Propose(context.Background(), nodetest.EncodePut("stuck", "1"))
		stuckErr <- err
	}()
	select {
	case <-sm.entered:
	case <-time.After(nodetest.WaitTimeout):
		t.Fatal("the stuck command was never applied")
	}
	return lead, sm, stuckErr
}

func TestProposeEndsWithinTheRequestTimeoutWhileApplyHangs(t *testing.T) {
	lead, _, stuckErr := newStuckCluster(t, 10)
	timeout := 10 * nodetest.TickInterval
	start := time.Now()
	_, err := lead.Propose(context.Background(), nodetest.EncodePut("later", "2"))
	took := time.Since(start)
	if !errors.Is(err, node.ErrOutcomeUnknown) {
		t.Fatalf("Propose behind a hung Apply: %v, want ErrOutcomeUnknown", err)
	}
	// Timers never fire early; the clock may tick once more than asked.
	if took < timeout/2 || took > 10*time.Second {
		t.Fatalf("Propose behind a hung Apply took %v, want about %v", took, timeout)
	}
	if err := <-stuckErr; !errors.Is(err, node.ErrOutcomeUnknown) {
		t.Fatalf("the stuck Propose: %v, want ErrOutcomeUnknown", err)
	}
	// A read must wait for the stuck entry to apply: it times out too.
	start = time.Now()
	_, err = lead.Read(context.Background(), []byte("stuck"))
	took = time.Since(start)
	if !errors.Is(err, node.ErrNoLeader) {
		t.Fatalf("Read behind a hung Apply: %v, want ErrNoLeader", err)
	}
	if took < timeout/2 || took > 10*time.Second {
		t.Fatalf("Read behind a hung Apply took %v, want about %v", took, timeout)
	}
}

func TestStopEndsWaitingCallsAtOnce(t *testing.T) {
	// A request timeout of 1,000 ticks (20 s): only the stop can end the
	// calls in time.
	lead, sm, stuckErr := newStuckCluster(t, 1000)
	later, read := make(chan error, 1), make(chan error, 1)
	start := lead.Status().Commit
	go func() {
		_, err := lead.Propose(context.Background(), nodetest.EncodePut("later", "2"))
		later <- err
	}()
	waiting := make(chan struct{}, 1)
	node.SetTestHookWaitApplied(func() {
		select {
		case waiting <- struct{}{}:
		default:
		}
	})
	defer node.SetTestHookWaitApplied(nil)
	go func() {
		_, err := lead.Read(context.Background(), []byte("stuck"))
		read <- err
	}()
	// Both calls wait before the stop: the proposal committed (it cannot
	// apply), the read for its index to apply.
	deadline := time.Now().Add(nodetest.WaitTimeout)
	for lead.Status().Commit <= start {
		if time.Now().After(deadline) {
			t.Fatal("the later proposal did not commit")
		}
		time.Sleep(5 * time.Millisecond) // polling, with a deadline
	}
	select {
	case <-waiting:
	case <-time.After(nodetest.WaitTimeout):
		t.Fatal("the read never waited for its index to apply")
	}
	stopped := make(chan error, 1)
	go func() { stopped <- lead.Stop() }()
	// Stop waits for the apply goroutine, which is stuck; the callers do
	// not wait for it.
	for i, ch := range []chan error{stuckErr, later, read} {
		select {
		case err := <-ch:
			if !errors.Is(err, node.ErrStopped) {
				t.Fatalf("call %d on a stopping node: %v, want ErrStopped", i, err)
			}
		case <-time.After(nodetest.WaitTimeout):
			t.Fatalf("call %d did not end when the node began to stop", i)
		}
	}
	select {
	case err := <-stopped:
		t.Fatalf("Stop returned (%v) while Apply was stuck", err)
	default:
	}
	close(sm.release)
	if err := <-stopped; err != nil {
		t.Fatalf("Stop: %v", err)
	}
}

// Entries committed while the state machine is slow wait in the apply
// queue, and meanwhile the loop goes on writing, and the entry cache drops
// its oldest entries: every queued entry must still apply as written.
func TestEntriesQueuedForASlowStateMachineApplyIntact(t *testing.T) {
	for _, size := range []int{1 << 10, 4 << 10, 16 << 10} {
		t.Run(fmt.Sprint(size), func(t *testing.T) { testQueuedEntriesApplyIntact(t, size) })
	}
}

func testQueuedEntriesApplyIntact(t *testing.T, size int) {
	lead, sm, stuckErr := newStuckCluster(t, 1000)
	n := (2 << 20) / size // 2 MiB in all: past the entry cache
	start := lead.Status().Commit
	errs := make(chan error, n)
	for i := range n {
		go func() {
			v := strings.Repeat(strconv.Itoa(i%10), size)
			_, err := lead.Propose(context.Background(), nodetest.EncodePut(fmt.Sprintf("k%04d", i), v))
			errs <- err
		}()
	}
	deadline := time.Now().Add(nodetest.WaitTimeout)
	for lead.Status().Commit < start+node.Index(n) {
		if time.Now().After(deadline) {
			t.Fatalf("commit %d, want %d", lead.Status().Commit, start+node.Index(n))
		}
		time.Sleep(5 * time.Millisecond) // polling, with a deadline
	}
	close(sm.release)
	if err := <-stuckErr; err != nil {
		t.Fatal(err)
	}
	for range n {
		if err := <-errs; err != nil {
			t.Fatalf("Propose: %v", err)
		}
	}
	data := sm.Data()
	for i := range n {
		k := fmt.Sprintf("k%04d", i)
		if v := data[k]; v != strings.Repeat(strconv.Itoa(i%10), size) {
			t.Fatalf("%s holds %d bytes after apply, want %d", k, len(v), size)
		}
	}
}
