package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"maps"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stepraft/stepraft/internal/powercut"
	"github.com/stepraft/stepraft/internal/synclog"
	"github.com/stepraft/stepraft/node"
	"github.com/stepraft/stepraft/wal"
)

var (
	plDuration = flag.Duration("powerloss.duration", time.Second, "how long TestPowerLoss's clients write before each power cut")
	plRounds   = flag.Int("powerloss.rounds", 1, "power cuts per sync policy in TestPowerLoss")
	plSeed     = flag.Uint64("powerloss.seed", 1, "seed of TestPowerLoss's clients")
	plLenient  = flag.Bool("powerloss.lenient-names", false,
		"TestPowerLoss: a file's own fsync makes its name durable (ext4, XFS); by default only an fsync of its directory does (POSIX)")
	plMetaAsWritten = flag.Bool("powerloss.meta-as-written", false,
		"TestPowerLoss: the unsynced writes to the log's metadata reach the disk (the entries' do not)")
)

// TestPowerLoss runs three kvstore processes built with the tag
// stepraft_synclog under each -sync policy, while clients put unique keys,
// and cuts the power of all three at once: SIGKILL, then every file cut
// back to what its recorded fsyncs put on disk for sure (package
// internal/powercut), then a restart. It checks what the README promises:
// under -sync each no acknowledged write is lost; under interval and
// never writes may be lost, and the counts are logged, but the cluster
// comes back as it was at one moment — never an acknowledged write lost
// while one acknowledged after it survived, never a value that was not
// written or a write that was refused, every member serving the same
// data, and the term and vote each member had written unchanged by the
// cut. Run longer with -powerloss.duration 10s -powerloss.rounds 5.
func TestPowerLoss(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs processes")
	}
	if runtime.GOOS != "linux" {
		t.Skip("the fsync log is recorded on Linux only")
	}
	bin := filepath.Join(t.TempDir(), "kvstore")
	if out, err := exec.Command("go", "build", "-tags", "stepraft_synclog", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build -tags stepraft_synclog: %v\n%s", err, out)
	}
	for _, policy := range []string{"each", "interval", "never"} {
		t.Run(policy, func(t *testing.T) {
			c := startPowerCluster(t, bin, policy)
			var ops []*plOp
			for round := 1; round <= *plRounds; round++ {
				ops = c.round(round, ops)
			}
		})
	}
}

// plOp is one put of a unique key.
type plOp struct {
	round      int
	key, value string
	call, ret  time.Time
	outcome    string // "acked", "unknown" or "refused"
	present    bool   // after the last power cut
}

// powerCluster is three members under one sync policy, and the directory
// of their fsync logs.
type powerCluster struct {
	*procs
	policy string
	logDir string
}

func startPowerCluster(t *testing.T, bin, policy string) *powerCluster {
	c := &powerCluster{procs: &procs{t: t, bin: bin, dir: t.TempDir(), peers: map[node.NodeID]string{},
		https: map[node.NodeID]string{}, cmds: map[node.NodeID]*exec.Cmd{}, exited: map[node.NodeID]chan struct{}{}},
		policy: policy, logDir: t.TempDir()}
	var parts []string
	for id := node.NodeID(1); id <= 3; id++ {
		c.peers[id] = testAddr(t)
		c.https[id] = testAddr(t)
		parts = append(parts, fmt.Sprintf("%d=%s", id, c.peers[id]))
	}
	c.cluster = strings.Join(parts, ",")
	t.Cleanup(func() {
		for id := range c.cmds {
			c.kill(id)
		}
		if t.Failed() {
			for id := range c.peers {
				b, _ := os.ReadFile(filepath.Join(c.dir, fmt.Sprintf("%d.log", id)))
				t.Logf("member %d log:\n%s", id, b)
			}
		}
	})
	for id := range c.peers {
		c.startMember(id)
	}
	return c
}

// startMember is procs.start with the sync policy and the fsync log.
func (c *powerCluster) startMember(id node.NodeID) {
	t := c.t
	logf, err := os.OpenFile(filepath.Join(c.dir, fmt.Sprintf("%d.log", id)), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd := exec.Command(c.bin, "serve", "-id", fmt.Sprint(id), "-cluster", c.cluster, "-http", c.https[id],
		"-data", c.dataDir(id), "-tick", "20ms", "-election-ticks", "15", "-sync", c.policy)
	cmd.Env = append(os.Environ(), synclog.EnvVar+"="+c.logDir)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	c.cmds[id], c.exited[id] = cmd, exited
	go func() {
		cmd.Wait()
		close(exited)
	}()
}

func (c *powerCluster) dataDir(id node.NodeID) string { return filepath.Join(c.dir, fmt.Sprint(id)) }

// round writes for -powerloss.duration, cuts the power, restarts the
// members and checks what survived. ops are the puts of the rounds before.
func (c *powerCluster) round(round int, ops []*plOp) []*plOp {
	t := c.t
	if _, err := waitHTTPLeader(c.live(), 0); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	before := len(ops)
	stop := make(chan struct{})
	done := make(chan []*plOp)
	go func() { done <- c.write(round, stop) }()
	time.Sleep(*plDuration) // the clients write; then the power goes, under load
	// The term and vote are checked only if no election is under way:
	// one could be killed between the write of a new term and its fsync.
	_, leaderErr := leaderNow(c.live())
	close(stop) // no new puts; those under way meet the cut
	cutAt := time.Now()
	ids := slices.Sorted(maps.Keys(c.cmds))
	for _, id := range ids {
		c.cmds[id].Process.Signal(syscall.SIGKILL)
	}
	for _, id := range ids {
		<-c.exited[id]
		delete(c.cmds, id)
	}
	ops = append(ops, <-done...)
	for _, id := range ids {
		t.Logf("round %d, power cut of member %d: %s", round, id, c.cut(id, leaderErr == nil))
	}
	if leaderErr != nil {
		t.Logf("round %d: term and vote not checked: %v", round, leaderErr)
	}
	for _, id := range ids {
		c.startMember(id)
	}
	for _, id := range ids {
		if why, up := c.waitUp(id); !up {
			t.Fatalf("round %d: member %d did not restart after the power cut: %s", round, id, why)
		}
	}
	lead, err := waitHTTPLeader(c.live(), 0)
	if err != nil {
		t.Fatalf("round %d: after the power cut: %v", round, err)
	}
	lost, oldestLost, newestKept := c.check(round, ops, before, cutAt)
	acked, unknown, refused := 0, 0, 0
	for _, op := range ops[before:] {
		switch op.outcome {
		case "acked":
			acked++
		case "unknown":
			unknown++
		case "refused":
			refused++
		}
	}
	msg := fmt.Sprintf("-sync %s, round %d (seed %d): %v of writes, %d puts acknowledged, %d of unknown outcome, %d refused; %d acknowledged puts lost",
		c.policy, round, *plSeed, cutAt.Sub(start).Round(time.Millisecond), acked, unknown, refused, lost)
	if lost > 0 {
		msg += fmt.Sprintf(" (the oldest acknowledged %v before the cut)", oldestLost.Round(time.Millisecond))
	}
	if d := cutAt.Sub(newestKept); !newestKept.IsZero() && d >= 0 {
		msg += fmt.Sprintf("; the newest acknowledged put kept returned %v before the cut", d.Round(time.Millisecond))
	} else if !newestKept.IsZero() {
		msg += fmt.Sprintf("; the newest acknowledged put kept returned %v after the SIGKILLs were sent", (-d).Round(time.Millisecond))
	}
	t.Logf("%s; leader after the restart %d; checked in %v", msg, lead, time.Since(cutAt).Round(time.Millisecond))
	return ops
}

// leaderNow asks every member once: they must agree on a leader and a term.
func leaderNow(https map[node.NodeID]string) (node.NodeID, error) {
	var lead node.NodeID
	var term uint64
	for id, a := range https {
		var st statusJSON
		code, body := call2(a, "/status")
		if code != 200 || json.Unmarshal([]byte(body), &st) != nil {
			return 0, fmt.Errorf("member %d: /status answered %d", id, code)
		}
		if st.Leader == 0 || (lead != 0 && (node.NodeID(st.Leader) != lead || st.Term != term)) {
			return 0, fmt.Errorf("member %d sees leader %d in term %d; another saw %d in term %d", id, st.Leader, st.Term, lead, term)
		}
		lead, term = node.NodeID(st.Leader), st.Term
	}
	return lead, nil
}

// write runs four clients putting unique keys through random members
// until stop is closed.
func (c *powerCluster) write(round int, stop <-chan struct{}) []*plOp {
	var mu sync.Mutex
	var ops []*plOp
	var wg sync.WaitGroup
	hc := &http.Client{Timeout: 2 * time.Second}
	for cl := range 4 {
		rng := rand.New(rand.NewPCG(*plSeed, uint64(round*100+cl)))
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				op := &plOp{round: round, key: fmt.Sprintf("r%d-c%d-%d", round, cl, i),
					value: fmt.Sprintf("v%d-%d-%d-%d", *plSeed, round, cl, i)}
				addr := c.https[node.NodeID(1+rng.IntN(3))]
				op.call = time.Now()
				out, keep := doOp(hc, addr, kvInput{put: true, key: op.key, value: op.value})
				op.ret = time.Now()
				switch {
				case !keep:
					op.outcome = "refused"
				case out.unknown:
					op.outcome = "unknown"
				default:
					op.outcome = "acked"
				}
				mu.Lock()
				ops = append(ops, op)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return ops
}

// cut applies the power cut to a killed member's files, and with
// checkVote checks that it took no term or vote away: those are fsynced
// before they are acted on.
func (c *powerCluster) cut(id node.NodeID, checkVote bool) string {
	t := c.t
	walDir := filepath.Join(c.dataDir(id), "wal")
	written, err := wal.InspectMeta(walDir)
	if err != nil {
		t.Fatalf("member %d: %v", id, err)
	}
	rep, err := powercut.Cut(c.dataDir(id), c.logDir, powercut.Options{StrictNames: !*plLenient, InPlaceAsWritten: *plMetaAsWritten})
	if err != nil {
		t.Fatalf("member %d: power cut: %v", id, err)
	}
	synced, err := wal.InspectMeta(walDir)
	if err != nil {
		t.Fatalf("member %d after the power cut: %v", id, err)
	}
	w, s := written.Slots[written.Current].HardState, synced.Slots[synced.Current].HardState
	if checkVote && (w.Term != s.Term || w.Vote != s.Vote) {
		t.Errorf("member %d: the power cut took its term and vote from %d/%d back to %d/%d", id, w.Term, w.Vote, s.Term, s.Vote)
	}
	return fmt.Sprintf("%d bytes dropped: %v; hard state written %+v, on disk %+v", rep.Dropped(), rep, w, s)
}

// waitUp waits until a restarted member answers /status. If it exits or
// does not answer within 20 s, why is the last lines of its log.
func (c *powerCluster) waitUp(id node.NodeID) (why string, up bool) {
	lastLines := func() string {
		b, _ := os.ReadFile(filepath.Join(c.dir, fmt.Sprintf("%d.log", id)))
		lines := strings.Split(strings.TrimSpace(string(b)), "\n")
		return strings.Join(lines[max(0, len(lines)-2):], "\n")
	}
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-c.exited[id]:
			return "exited: " + lastLines(), false
		default:
		}
		if code, _ := call2(c.https[id], "/status"); code == 200 {
			return "", true
		}
		time.Sleep(20 * time.Millisecond) // polling
	}
	return "not answering after 20 s; its log ends with:\n" + lastLines(), false
}

// check reads back every put, marks which survived, and checks what the
// README promises. ops[before:] are this round's.
// It returns how many acknowledged puts were lost, how long before the cut
// the oldest of them returned, and when the newest acknowledged put of
// this round that survived returned (zero: none did).
func (c *powerCluster) check(round int, ops []*plOp, before int, cutAt time.Time) (lost int, oldestLost time.Duration, newestKept time.Time) {
	t := c.t
	// A put after the restart: once a member has applied it, it has
	// applied everything that survived.
	marker := fmt.Sprintf("after-cut-%d", round)
	deadline := time.Now().Add(20 * time.Second)
	hc := &http.Client{Timeout: 5 * time.Second}
	for {
		lead, err := waitHTTPLeader(c.live(), 0)
		if err == nil {
			if out, keep := doOp(hc, c.https[lead], kvInput{put: true, key: marker, value: "x"}); keep && !out.unknown {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("round %d: no put went through after the restart", round)
		}
		time.Sleep(20 * time.Millisecond) // polling
	}
	for id := range c.cmds {
		for {
			if code, v := call2(c.https[id], "/kv/"+marker+"?stale=1"); code == 200 && v == "x" {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("round %d: member %d did not apply the put made after the restart", round, id)
			}
			time.Sleep(20 * time.Millisecond) // polling
		}
	}
	// Every put through a linearizable read, and every member's own state.
	wasPresent := make([]bool, len(ops))
	for i, op := range ops {
		wasPresent[i] = op.round == round || op.present
	}
	work := make(chan *plOp)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var errs []string
	nerrs := 0
	fail := func(format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		if nerrs++; len(errs) < 20 {
			errs = append(errs, fmt.Sprintf(format, args...))
		}
	}
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
		ops:
			for op := range work {
				var out kvOutput
				for giveUp := time.Now().Add(20 * time.Second); ; {
					var keep bool
					out, keep = doOp(hc, c.https[node.NodeID(1+len(op.key)%3)], kvInput{key: op.key})
					if keep {
						break
					}
					if time.Now().After(giveUp) {
						fail("GET %s: no answer in 20 s", op.key)
						continue ops
					}
					time.Sleep(20 * time.Millisecond) // polling
				}
				switch {
				case out.found && out.value != op.value:
					fail("GET %s = %q, but the only value ever put was %q", op.key, out.value, op.value)
				case out.found && op.outcome == "refused":
					fail("GET %s = %q, but its put was refused (\"applied\": false)", op.key, out.value)
				}
				op.present = out.found
				for id := range c.cmds {
					code, v := call2(c.https[id], "/kv/"+op.key+"?stale=1")
					if (code == 200) != out.found || (out.found && v != op.value) {
						fail("member %d serves %s as %d %q; the leader says found=%v %q", id, op.key, code, v, out.found, out.value)
					}
				}
			}
		}()
	}
	for _, op := range ops {
		work <- op
	}
	close(work)
	wg.Wait()
	for _, e := range errs {
		t.Errorf("round %d: %s", round, e)
	}
	if nerrs > len(errs) {
		t.Errorf("round %d: and %d more", round, nerrs-len(errs))
	}
	// What the cut may take.
	for _, op := range ops[before:] {
		if op.present && op.outcome == "acked" && op.ret.After(newestKept) {
			newestKept = op.ret
		}
	}
	for i, op := range ops {
		if op.outcome != "acked" || op.present || !wasPresent[i] {
			continue
		}
		lost++
		oldestLost = max(oldestLost, cutAt.Sub(op.ret))
		if c.policy == "each" {
			t.Errorf("round %d: -sync each lost the acknowledged put of %s (returned %v before the cut)", round, op.key, cutAt.Sub(op.ret))
			continue
		}
		for _, later := range ops[before:] {
			if later.present && later.call.After(op.ret) {
				t.Errorf("round %d: the acknowledged put of %s was lost, but %s, put after it returned, survived", round, op.key, later.key)
				break
			}
		}
	}
	return lost, oldestLost, newestKept
}
