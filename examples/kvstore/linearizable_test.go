package main

import (
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
	"syscall"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"

	"github.com/stepraft/stepraft/node"
)

var (
	linDuration = flag.Duration("lin.duration", 4*time.Second, "how long TestLinearizableUnderKills runs its clients")
	linSeed     = flag.Uint64("lin.seed", 1, "seed of TestLinearizableUnderKills's faults and operations")
	linDamage   = flag.Bool("lin.damage", false, "also damage a killed member's files before restarting it: a torn tail in its log, a flipped bit in its newest snapshot")
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
	Partition: func(h []porcupine.Operation) [][]porcupine.Operation {
		byKey := map[string][]porcupine.Operation{}
		var keys []string
		for _, op := range h {
			k := op.Input.(kvInput).key
			if _, ok := byKey[k]; !ok {
				keys = append(keys, k)
			}
			byKey[k] = append(byKey[k], op)
		}
		var out [][]porcupine.Operation
		for _, k := range keys {
			out = append(out, byKey[k])
		}
		return out
	},
	Init: func() any { return kvOutput{} },
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

// TestLinearizableUnderKills runs three kvstore processes while clients
// put unique values and read them back through any member, and kills a
// member with SIGKILL (the leader every other time) and restarts it, or
// pauses it with SIGSTOP for longer than an election timeout, over and
// over. The history goes through porcupine: every acknowledged write
// must be there, and no read may return what a linearizable store could
// not. Run longer with -lin.duration 60s -lin.seed N.
func TestLinearizableUnderKills(t *testing.T) {
	if testing.Short() {
		t.Skip("runs processes")
	}
	p := startProcs(t, 3)
	if _, err := waitHTTPLeader(p.live(), 0); err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(*linSeed, 7))
	start := time.Now()
	now := func() int64 { return int64(time.Since(start)) }
	var mu sync.Mutex
	var history []porcupine.Operation
	stop := make(chan struct{})
	var wg sync.WaitGroup
	hc := &http.Client{Timeout: 2 * time.Second}
	for c := range 4 {
		crng := rand.New(rand.NewPCG(*linSeed, uint64(100+c)))
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				in := kvInput{put: crng.IntN(2) == 0, key: fmt.Sprintf("k%d", crng.IntN(3))}
				if in.put {
					in.value = fmt.Sprintf("c%d-%d", c, i)
				}
				addr := p.https[node.NodeID(1+crng.IntN(3))]
				call := now()
				out, keep := doOp(hc, addr, in)
				ret := now()
				if !keep {
					continue
				}
				if out.unknown {
					ret = 1 << 62 // it may take effect at any time after the call
				}
				mu.Lock()
				history = append(history, porcupine.Operation{ClientId: c, Input: in, Call: call, Output: out, Return: ret})
				mu.Unlock()
			}
		}()
	}
	kills, pauses := 0, 0
	dead := map[node.NodeID]bool{}
	var damaged []string
	for round := 0; time.Since(start) < *linDuration; round++ {
		time.Sleep(time.Duration(300+rng.IntN(700)) * time.Millisecond) // the fault schedule
		victim := node.NodeID(1 + rng.IntN(3))
		if round%2 == 0 {
			if lead, err := waitHTTPLeader(p.live(), 0); err == nil {
				victim = lead
			}
		}
		if dead[victim] || p.cmds[victim] == nil {
			continue
		}
		if round%3 == 2 {
			// A pause longer than an election timeout (10 ticks of 20 ms):
			// the others elect a new leader while this one still thinks
			// it leads.
			p.cmds[victim].Process.Signal(syscall.SIGSTOP)
			time.Sleep(time.Duration(400+rng.IntN(400)) * time.Millisecond) // paused for a while
			p.cmds[victim].Process.Signal(syscall.SIGCONT)
			pauses++
			continue
		}
		if dead[victim] {
			continue
		}
		p.kill(victim)
		kills++
		time.Sleep(time.Duration(100+rng.IntN(400)) * time.Millisecond) // down for a while
		if *linDamage && round%4 == 1 {
			what := damage(t, filepath.Join(p.dir, fmt.Sprint(victim)), rng)
			damaged = append(damaged, fmt.Sprintf("%d: %s", victim, what))
		}
		p.start(victim)
		if *linDamage && exitsSoon(p.exited[victim]) {
			// Refusing to start on damage it cannot repair is allowed;
			// serving wrong data is not (the history would show it).
			b, _ := os.ReadFile(filepath.Join(p.dir, fmt.Sprintf("%d.log", victim)))
			lines := strings.Split(strings.TrimSpace(string(b)), "\n")
			t.Logf("member %d refused to start after damage: %s", victim, lines[len(lines)-1])
			delete(p.cmds, victim)
			dead[victim] = true
		}
	}
	close(stop)
	wg.Wait()
	var acked, unknown, reads int
	for _, op := range history {
		switch in, out := op.Input.(kvInput), op.Output.(kvOutput); {
		case !in.put:
			reads++
		case out.unknown:
			unknown++
		default:
			acked++
		}
	}
	t.Logf("seed %d: %d kills, %d pauses, %d operations: %d acknowledged puts, %d puts of unknown outcome, %d reads",
		*linSeed, kills, pauses, len(history), acked, unknown, reads)
	for _, d := range damaged {
		t.Logf("damaged member %s", d)
	}
	if acked == 0 || reads == 0 {
		t.Fatal("the clients did not get through: nothing to check")
	}
	res, info := porcupine.CheckOperationsVerbose(kvModel, history, time.Minute)
	switch res {
	case porcupine.Illegal:
		file := filepath.Join(os.TempDir(), fmt.Sprintf("kvstore-linearizability-seed%d.html", *linSeed))
		porcupine.VisualizePath(kvModel, info, file)
		t.Fatalf("history not linearizable (visualization: %s); replay: go test ./examples/kvstore -run TestLinearizableUnderKills -lin.seed %d -lin.duration %v",
			file, *linSeed, *linDuration)
	case porcupine.Unknown:
		t.Fatal("porcupine timed out")
	}
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

// exitsSoon reports whether a just-started member exits within 3 s.
func exitsSoon(exited <-chan struct{}) bool {
	select {
	case <-exited:
		return true
	case <-time.After(3 * time.Second):
		return false
	}
}
