package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"

	"github.com/stepraft/stepraft/internal/lincheck"
	"github.com/stepraft/stepraft/node"
)

var (
	linDuration = flag.Duration("lin.duration", 4*time.Second, "how long TestLinearizableUnderKills injects faults, at least (each kind runs once first)")
	linSeed     = flag.Uint64("lin.seed", 1, "seed of TestLinearizableUnderKills's faults and operations")
	linDamage   = flag.Bool("lin.damage", true, "also damage a killed member's files before restarting it: a torn tail in its log, a flipped bit in its newest snapshot")
	linMembers  = flag.Int("lin.members", 0, "members in TestLinearizableUnderKills's cluster: 3 or 5; 0 runs both")
)

// kvInput and kvOutput are one operation of the history: a put of a
// unique value, or a linearizable get.
type kvInput struct {
	put        bool
	key, value string
}

type kvOutput struct {
	value   string
	found   bool
	unknown bool // a put whose outcome the client could not learn
}

// kvModel is a register per key: porcupine checks each key apart.
var kvModel = porcupine.Model{
	Partition: lincheck.ByKey(func(in any) string { return in.(kvInput).key }),
	Init:      func() any { return kvOutput{} },
	Step: func(state, input, output any) (bool, any) {
		in, out, st := input.(kvInput), output.(kvOutput), state.(kvOutput)
		if in.put {
			return true, kvOutput{value: in.value, found: true}
		}
		return out.found == st.found && out.value == st.value, st
	},
	DescribeOperation: func(input, output any) string {
		in, out := input.(kvInput), output.(kvOutput)
		if in.put {
			if out.unknown {
				return fmt.Sprintf("put(%s, %s) -> ?", in.key, in.value)
			}
			return fmt.Sprintf("put(%s, %s)", in.key, in.value)
		}
		if !out.found {
			return fmt.Sprintf("get(%s) -> absent", in.key)
		}
		return fmt.Sprintf("get(%s) -> %s", in.key, out.value)
	},
}

// TestLinearizableUnderKills runs clusters of three and of five kvstore
// processes whose raft traffic goes through a netProxy, while clients put
// unique values and read them back through any member, and a seeded
// schedule injects one fault at a time: SIGKILL of the leader or of a
// follower and a restart, SIGSTOP of either for longer than an election
// timeout, the leader isolated, a minority split from a majority, a
// member's links cut one way, the links between two members cut — each
// kind once, in an order the seed picks, then any until -lin.duration has
// passed. The history goes through porcupine: every acknowledged write
// must be there, and no read may return what a linearizable store could
// not. Then the faults stop, and a leader must emerge and every member
// complete a write and a read within livenessWithin. The seed fixes the
// schedule and the operations; the processes' timing is the machine's.
// Run longer with -lin.duration 60s -lin.seed N, one size with
// -lin.members 3 or 5; -lin.damage also damages a killed member's files
// before its restart. A failure prints the command that replays it.
func TestLinearizableUnderKills(t *testing.T) {
	if testing.Short() {
		t.Skip("runs processes")
	}
	sizes := []int{3, 5}
	if *linMembers != 0 {
		sizes = []int{*linMembers}
	}
	for _, n := range sizes {
		t.Run(fmt.Sprintf("members=%d", n), func(t *testing.T) { testLinearizable(t, n) })
	}
}

// livenessWithin bounds the time from the end of the faults to a leader
// and a write and a read through every member: a redial after a cut
// backs off up to 2 s and a blackholed dial waits out a 2 s handshake
// timeout, then an election.
const livenessWithin = 15 * time.Second

func testLinearizable(t *testing.T, n int) {
	replay := fmt.Sprintf("go test ./examples/kvstore -run 'TestLinearizableUnderKills$' -lin.members %d -lin.seed %d -lin.duration %v",
		n, *linSeed, *linDuration)
	if *linDamage {
		replay += " -lin.damage"
	}
	replay += " -v"
	p := startProcsWith(t, n, procsOptions{proxy: true})
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("seed %d, %d members; replay: %s", *linSeed, n, replay)
		}
	})
	if _, err := waitHTTPLeader(p.live(), 0); err != nil {
		t.Fatal(err)
	}
	h := newHistory()
	var addrs []string
	for _, id := range p.ids() {
		addrs = append(addrs, p.https[id])
	}
	keys := []string{"k0", "k1", "k2"}
	load := startClients(h, *linSeed, 4, keys, addrs, 2*time.Second)
	f := &faulter{t: t, p: p, rng: rand.New(rand.NewPCG(*linSeed, uint64(n))), dead: map[node.NodeID]bool{}, counts: map[faultKind]int{}}
	faultStart := time.Now()
	f.run(*linDuration)
	faultTime := time.Since(faultStart)
	load.halt()
	for _, line := range f.log {
		t.Log(line)
	}
	for _, d := range f.damaged {
		t.Logf("damaged member %s", d)
	}
	p.checkRunning(f.dead)
	toLeader, toWrites, err := checkLiveness(p, h, keys)
	if err != nil {
		t.Errorf("liveness: %v; replay: %s", err, replay) // the history is checked still
	}
	st := p.net.statistics()
	t.Logf("seed %d, %d members: %d faults in %v (%s); proxy: %d connections forwarded, %d refused, %d blackholed, %d closed and %d stalled by cuts",
		*linSeed, n, len(f.log), faultTime.Round(time.Millisecond), f.summary(), st.forwarded, st.refused, st.blackholed, st.closedByCut, st.stalled)
	t.Logf("after the faults: a leader in %v, a write and a read through every member in %v", toLeader.Round(time.Millisecond), toWrites.Round(time.Millisecond))
	p.net.check()
	checkHistory(t, h, fmt.Sprintf("seed %d, %d members", *linSeed, n), replay)
}

// history is the operations clients saw, for porcupine.
type history struct {
	start time.Time
	mu    sync.Mutex
	ops   []porcupine.Operation
}

func newHistory() *history { return &history{start: time.Now()} }

// do runs one operation through the member at addr and records it unless
// it certainly had no effect. It reports whether the operation succeeded:
// a put acknowledged, a read answered.
func (h *history) do(hc *http.Client, client int, addr string, in kvInput) bool {
	call := int64(time.Since(h.start))
	out, keep := doOp(hc, addr, in)
	ret := int64(time.Since(h.start))
	if !keep {
		return false
	}
	if out.unknown {
		ret = 1 << 62 // it may take effect at any time after the call
	}
	h.mu.Lock()
	h.ops = append(h.ops, porcupine.Operation{ClientId: client, Input: in, Call: call, Output: out, Return: ret})
	h.mu.Unlock()
	return !out.unknown
}

// clientLoad is clients that put unique values to a few keys and read
// them, each operation through a member picked at random, until halted.
type clientLoad struct {
	stop       chan struct{}
	wg         sync.WaitGroup
	ok, failed atomic.Int64 // operations that succeeded, and the others
}

func startClients(h *history, seed uint64, clients int, keys, addrs []string, timeout time.Duration) *clientLoad {
	l := &clientLoad{stop: make(chan struct{})}
	hc := &http.Client{Timeout: timeout}
	for c := range clients {
		rng := rand.New(rand.NewPCG(seed, uint64(100+c)))
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for i := 0; ; i++ {
				select {
				case <-l.stop:
					return
				default:
				}
				in := kvInput{put: rng.IntN(2) == 0, key: keys[rng.IntN(len(keys))]}
				if in.put {
					in.value = fmt.Sprintf("c%d-%d", c, i)
				}
				if h.do(hc, c, addrs[rng.IntN(len(addrs))], in) {
					l.ok.Add(1)
				} else {
					l.failed.Add(1)
				}
			}
		}()
	}
	return l
}

// halt stops the clients and waits for their last operations.
func (l *clientLoad) halt() {
	close(l.stop)
	l.wg.Wait()
}

// checkHistory runs porcupine over h. On a violation it writes
// porcupine's visualization to a temporary file and fails with the
// command that replays the run.
func checkHistory(t *testing.T, h *history, label, replay string) {
	t.Helper()
	h.mu.Lock()
	ops := slices.Clone(h.ops)
	h.mu.Unlock()
	var acked, unknown, reads int
	for _, op := range ops {
		switch in, out := op.Input.(kvInput), op.Output.(kvOutput); {
		case !in.put:
			reads++
		case out.unknown:
			unknown++
		default:
			acked++
		}
	}
	start := time.Now()
	res, info := porcupine.CheckOperationsVerbose(kvModel, ops, max(time.Minute, 2**linDuration))
	t.Logf("%d operations: %d acknowledged puts, %d puts of unknown outcome, %d reads; checked in %v",
		len(ops), acked, unknown, reads, time.Since(start).Round(time.Millisecond))
	if acked == 0 || reads == 0 {
		t.Fatalf("%s: the clients did not get through: nothing to check; replay: %s", label, replay)
	}
	switch res {
	case porcupine.Illegal:
		file := "(not written)"
		if f, err := os.CreateTemp("", "kvstore-linearizability-*.html"); err == nil {
			porcupine.Visualize(kvModel, info, f)
			f.Close()
			file = f.Name()
		}
		t.Fatalf("%s: history not linearizable (visualization: %s); replay: %s", label, file, replay)
	case porcupine.Unknown:
		t.Fatalf("%s: porcupine timed out; replay: %s", label, replay)
	}
}

// checkLiveness requires, once the faults have stopped, a leader all
// running members agree on and a write and a linearizable read through
// every running member, all within livenessWithin; the operations join h.
// It returns how long the leader and the operations took, or what did
// not happen in time.
func checkLiveness(p *procs, h *history, keys []string) (toLeader, toOps time.Duration, err error) {
	start := time.Now()
	if _, err := waitHTTPLeader(p.live(), 0); err != nil || time.Since(start) > livenessWithin {
		return 0, 0, fmt.Errorf("no leader within %v of the end of the faults (%v)", livenessWithin, err)
	}
	toLeader = time.Since(start)
	hc := &http.Client{Timeout: 2 * time.Second}
	// until retries op until it succeeds or time is up.
	until := func(id node.NodeID, what string, op func(i int) kvInput) error {
		for i := 0; !h.do(hc, 1000+int(id), p.https[id], op(i)); i++ {
			if time.Since(start) > livenessWithin {
				return fmt.Errorf("member %d: no %s within %v of the end of the faults", id, what, livenessWithin)
			}
			time.Sleep(20 * time.Millisecond) // polling
		}
		return nil
	}
	for _, id := range p.ids() {
		if p.cmds[id] == nil {
			continue // refused to start after damage
		}
		key := keys[int(id)%len(keys)]
		if err := until(id, "write", func(i int) kvInput { return kvInput{put: true, key: key, value: fmt.Sprintf("live%d-%d", id, i)} }); err != nil {
			return toLeader, 0, err
		}
		if err := until(id, "read", func(int) kvInput { return kvInput{key: key} }); err != nil {
			return toLeader, 0, err
		}
	}
	return toLeader, time.Since(start), nil
}

// checkRunning fails the test for a member whose process exited on its
// own (a crash), except those in allowed.
func (p *procs) checkRunning(allowed map[node.NodeID]bool) {
	p.t.Helper()
	for _, id := range p.ids() {
		if allowed[id] || p.cmds[id] == nil {
			continue
		}
		select {
		case <-p.exited[id]:
			p.t.Errorf("member %d exited on its own: %v; last log line: %s", id, p.cmds[id].ProcessState, lastLine(p.logPath(id)))
		default:
		}
	}
}

func lastLine(file string) string {
	b, _ := os.ReadFile(file)
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return lines[len(lines)-1]
}

// faultKind is a kind of fault the schedule injects.
type faultKind uint8

const (
	faultKillLeader faultKind = iota + 1
	faultKillFollower
	faultPauseLeader
	faultPauseFollower
	faultIsolateLeader
	faultSplit    // a minority and a majority, both ways
	faultOneWay   // one member's outgoing, or incoming, links
	faultCutPair  // the links between two members, one way or both
	numFaultKinds = int(faultCutPair)
)

func (k faultKind) String() string {
	return [...]string{"?", "kill leader", "kill follower", "pause leader", "pause follower",
		"isolate leader", "split", "one way", "cut pair"}[k]
}

// faulter injects faults into a cluster of processes behind a netProxy,
// one at a time, each ending (restart, SIGCONT, heal) before the next.
type faulter struct {
	t          *testing.T
	p          *procs
	rng        *rand.Rand
	start      time.Time
	dead       map[node.NodeID]bool // refused to start after damage (-lin.damage)
	counts     map[faultKind]int
	partitions int      // injected so far
	firstMode  int      // of the first partition, minus one
	log        []string // each fault, for the test's log
	damaged    []string
}

// run injects every kind of fault once, in an order the seed picks, then
// faults of any kind until d has passed.
func (f *faulter) run(d time.Duration) {
	f.start = time.Now()
	order := f.rng.Perm(numFaultKinds)
	f.firstMode = f.rng.IntN(3)
	for i := 0; i < len(order) || time.Since(f.start) < d; i++ {
		k := faultKind(1 + f.rng.IntN(numFaultKinds))
		if i < len(order) {
			k = faultKind(1 + order[i])
		}
		time.Sleep(f.between(200, 400)) // the schedule's pacing
		f.inject(k)
	}
}

// between draws a duration in [lo, hi) milliseconds.
func (f *faulter) between(lo, hi int) time.Duration {
	return time.Duration(lo+f.rng.IntN(hi-lo)) * time.Millisecond
}

// inject injects one fault and ends it. It draws the same random numbers
// whoever leads, so that a seed fixes the schedule.
func (f *faulter) inject(k faultKind) {
	p := f.p
	var live []node.NodeID
	for _, id := range p.ids() {
		if !f.dead[id] {
			live = append(live, id)
		}
	}
	lead := currentLeader(p)
	r1, r2 := f.rng.IntN(1<<30), f.rng.IntN(1<<30)
	// other picks a live member other than not, from a random number.
	other := func(r int, not node.NodeID) node.NodeID {
		c := slices.DeleteFunc(slices.Clone(live), func(id node.NodeID) bool { return id == not })
		return c[r%len(c)]
	}
	leaderOr := func(r int) node.NodeID { // the leader, or anyone when there is none
		if lead != 0 {
			return lead
		}
		return other(r, 0)
	}
	rest := func(ids ...node.NodeID) []node.NodeID {
		return slices.DeleteFunc(slices.Clone(live), func(id node.NodeID) bool { return slices.Contains(ids, id) })
	}
	// Partitions take the cut modes in turn.
	mode := cutMode(1 + (f.firstMode+f.partitions)%3)
	// A pause or a partition outlasts any election timeout.
	hold := maxElectionTimeout + f.between(100, 600)
	what := ""
	switch k {
	case faultKillLeader, faultKillFollower:
		victim := leaderOr(r1)
		if k == faultKillFollower {
			victim = other(r1, lead)
		}
		what = f.killAndRestart(victim)
	case faultPauseLeader, faultPauseFollower:
		victim := leaderOr(r1)
		if k == faultPauseFollower {
			victim = other(r1, lead)
		}
		p.pause(victim)
		time.Sleep(hold) // paused for a while
		p.resume(victim)
		what = fmt.Sprintf("paused %d for %v", victim, hold)
	case faultIsolateLeader:
		v := leaderOr(r1)
		p.net.cutBoth([]node.NodeID{v}, rest(v), mode)
	case faultSplit:
		order := slices.Clone(live)
		f.rng.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
		if i := slices.Index(order, lead); r1%2 == 0 && i > 0 {
			order[0], order[i] = order[i], order[0] // the leader in the minority
		}
		m := 1 + r2%((len(p.peers)-1)/2)
		p.net.cutBoth(order[:m], order[m:], mode)
	case faultOneWay:
		v := leaderOr(r1)
		if r2%2 == 0 {
			v = other(r1, 0)
		}
		if r2%4 < 2 {
			p.net.cut([]node.NodeID{v}, rest(v), mode) // v is not heard
		} else {
			p.net.cut(rest(v), []node.NodeID{v}, mode) // v hears no one
		}
	case faultCutPair:
		a := leaderOr(r1)
		if r2%2 == 0 {
			a = other(r1, 0)
		}
		b := other(r2/2, a)
		if r2%4 < 2 {
			p.net.cutBoth([]node.NodeID{a}, []node.NodeID{b}, mode)
		} else {
			p.net.cut([]node.NodeID{a}, []node.NodeID{b}, mode)
		}
	}
	if what == "" { // a partition
		f.partitions++
		what = fmt.Sprintf("cut %s (%v) for %v", p.net.cutLinks(), mode, hold)
		time.Sleep(hold) // the partition holds for a while
		p.net.heal()
	}
	f.counts[k]++
	f.log = append(f.log, fmt.Sprintf("%6.2fs %-14s leader %d: %s", time.Since(f.start).Seconds(), k, lead, what))
}

// killAndRestart kills a member with SIGKILL and restarts it after a
// while; with -lin.damage it may damage the member's files first.
func (f *faulter) killAndRestart(victim node.NodeID) string {
	p := f.p
	down := f.between(100, 500)
	harm := *linDamage && f.rng.IntN(2) == 0 && len(f.dead) < (len(p.peers)-1)/2
	p.kill(victim)
	time.Sleep(down) // down for a while
	what := fmt.Sprintf("killed %d, down %v", victim, down)
	if harm {
		d := damage(f.t, filepath.Join(p.dir, fmt.Sprint(victim)), f.rng)
		f.damaged = append(f.damaged, fmt.Sprintf("%d: %s", victim, d))
		what += ", " + d
	}
	p.start(victim)
	if harm && refusesToStart(p, victim) {
		// Refusing to start on damage it cannot repair is allowed;
		// serving wrong data is not (the history would show it).
		f.t.Logf("member %d refused to start after damage: %s", victim, lastLine(p.logPath(victim)))
		delete(p.cmds, victim)
		f.dead[victim] = true
		what += ", refused to start"
	}
	return what
}

func (f *faulter) summary() string {
	var parts []string
	for k := faultKind(1); int(k) <= numFaultKinds; k++ {
		parts = append(parts, fmt.Sprintf("%s %d", k, f.counts[k]))
	}
	return strings.Join(parts, ", ")
}

// currentLeader is the leader of the highest term a running member
// reports (stragglers still behind a healed partition do not hold it
// up), or 0 when none reports one within 5 s.
func currentLeader(p *procs) node.NodeID {
	hc := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		var best statusJSON
		for _, a := range p.live() {
			var st statusJSON
			resp, err := hc.Get("http://" + a + "/status")
			if err != nil {
				continue
			}
			err = json.NewDecoder(resp.Body).Decode(&st)
			resp.Body.Close()
			if err == nil && st.Leader != 0 && st.Term > best.Term {
				best = st
			}
		}
		if best.Leader != 0 {
			return node.NodeID(best.Leader)
		}
		time.Sleep(20 * time.Millisecond) // polling
	}
	return 0
}

// doOp runs one operation over HTTP. keep is false for an operation that
// certainly had no effect (a refused put, a failed read): it is left out.
func doOp(hc *http.Client, addr string, in kvInput) (out kvOutput, keep bool) {
	if in.put {
		req, _ := http.NewRequest("PUT", "http://"+addr+"/kv/"+in.key, strings.NewReader(in.value))
		resp, err := hc.Do(req)
		if err != nil {
			return kvOutput{unknown: true}, true // it may have been received
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		switch {
		case resp.StatusCode == http.StatusNoContent:
			return kvOutput{}, true
		case strings.Contains(string(body), `"applied":false`):
			return kvOutput{}, false
		}
		return kvOutput{unknown: true}, true
	}
	resp, err := hc.Get("http://" + addr + "/kv/" + in.key)
	if err != nil {
		return kvOutput{}, false
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	switch {
	case err != nil:
		return kvOutput{}, false
	case resp.StatusCode == http.StatusOK:
		return kvOutput{value: string(body), found: true}, true
	case resp.StatusCode == http.StatusNotFound:
		return kvOutput{}, true
	}
	return kvOutput{}, false
}

// damage writes a torn tail into the newest segment of a stopped member's
// log, or flips a bit in the body of its newest snapshot, and says which.
func damage(t *testing.T, dataDir string, rng *rand.Rand) string {
	segs, _ := filepath.Glob(filepath.Join(dataDir, "wal", "entries", "*"))
	snaps, _ := filepath.Glob(filepath.Join(dataDir, "snap", "*.snap"))
	slices.Sort(segs)
	slices.Sort(snaps)
	if rng.IntN(2) == 0 && len(segs) > 0 {
		f, err := os.OpenFile(segs[len(segs)-1], os.O_WRONLY|os.O_APPEND, 0)
		if err != nil {
			t.Fatal(err)
		}
		// A record's length prefix promising more than follows, as a
		// write cut short by a crash leaves it.
		f.Write([]byte{0x90, 0x03, 1, 0xde, 0xad})
		f.Close()
		return "torn tail in " + filepath.Base(segs[len(segs)-1])
	}
	if len(snaps) == 0 {
		return "nothing to damage"
	}
	name := snaps[len(snaps)-1]
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	i := len(b) - 1 - rng.IntN(min(len(b), 64))
	b[i] ^= 1 << rng.IntN(8)
	if err := os.WriteFile(name, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("bit flipped at byte %d of %s", i, filepath.Base(name))
}

// refusesToStart waits until a just-started member either exits (it
// refused to start) or answers on its HTTP port (it started: refusal
// happens before that), however long a loaded machine takes.
func refusesToStart(p *procs, id node.NodeID) bool {
	hc := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-p.exited[id]:
			return true
		default:
		}
		if resp, err := hc.Get("http://" + p.https[id] + "/status"); err == nil {
			resp.Body.Close()
			return false
		}
		time.Sleep(20 * time.Millisecond) // polling
	}
	p.t.Fatalf("member %d neither exited nor served within 60 s of its start", id)
	return false
}
