package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stepraft/stepraft/node"
)

// testRunEnv, set to a JSON list of arguments, makes the test binary run
// the benchmark with them instead of the tests: a parent for a test to
// kill.
const testRunEnv = "STEPRAFT_BENCH_TEST_RUN"

// TestMain lets the test binary be the benchmark's child processes (it is
// what os.Executable names under go test) and a benchmark parent.
func TestMain(m *testing.M) {
	if isChild() {
		os.Exit(childMain(os.Stdin, os.Stdout, os.Stderr))
	}
	if a := os.Getenv(testRunEnv); a != "" {
		var args []string
		if err := json.Unmarshal([]byte(a), &args); err != nil {
			panic(err)
		}
		os.Exit(run(args, os.Stdout, os.Stderr))
	}
	// The children are this binary too, built with -race under go test
	// -race: without this, each would sleep a second before it exits.
	os.Setenv("GORACE", strings.TrimSpace(os.Getenv("GORACE")+" atexit_sleep_ms=0"))
	os.Exit(m.Run())
}

// TestSmoke runs the benchmark for a moment, as CI does: it must finish,
// print a row per configuration and write the JSON and the SVG, and leave
// no child process behind. Then the same with -procs, one configuration.
func TestSmoke(t *testing.T) {
	dir := t.TempDir()
	jsonFile, svgFile := filepath.Join(dir, "out.json"), filepath.Join(dir, "out.svg")
	var out, errOut bytes.Buffer
	rc := run([]string{"-clients", "1,8", "-size", "16", "-sync", "each,never", "-duration", "300ms", "-warmup", "100ms",
		"-tick", "20ms", "-reads", "0.2", "-dir", dir, "-json", jsonFile, "-svg", svgFile}, &out, &errOut)
	if rc != 0 {
		t.Fatalf("exit %d\n%s\n%s", rc, out.String(), errOut.String())
	}
	noChildren(t)
	t.Log(out.String())
	if !strings.Contains(out.String(), "calibration:") || !strings.Contains(out.String(), "one client: p50") ||
		!strings.Contains(out.String(), "a fresh process holding the three nodes") {
		t.Fatalf("output:\n%s", out.String())
	}
	got := readResults(t, jsonFile)
	if len(got) != 4 {
		t.Fatalf("JSON: %d results", len(got))
	}
	for _, r := range got {
		checkResult(t, r, 1)
	}
	svg, _ := os.ReadFile(svgFile)
	if !strings.HasPrefix(string(svg), "<svg") || !strings.Contains(string(svg), "sync=each, 16 B") {
		t.Fatalf("SVG:\n%s", svg)
	}

	out.Reset()
	errOut.Reset()
	procsJSON := filepath.Join(dir, "procs.json")
	profDir := filepath.Join(dir, "prof")
	rc = run([]string{"-procs", "-clients", "4", "-size", "16", "-sync", "each", "-duration", "1s", "-warmup", "200ms",
		"-tick", "50ms", "-reads", "0.2", "-dir", dir, "-json", procsJSON, "-cpuprofile", profDir, "-trace", profDir}, &out, &errOut)
	if rc != 0 {
		t.Fatalf("-procs: exit %d\n%s\n%s", rc, out.String(), errOut.String())
	}
	noChildren(t)
	t.Log(out.String())
	if !strings.Contains(out.String(), "three fresh processes, one per node") {
		t.Fatalf("-procs output:\n%s", out.String())
	}
	row := tableRow(t, out.String(), "each")
	if ops, err := strconv.ParseFloat(row[3], 64); err != nil || ops <= 0 {
		t.Fatalf("-procs row %q: ops/s %q", row, row[3])
	}
	got = readResults(t, procsJSON)
	if len(got) != 1 || !got[0].Procs {
		t.Fatalf("-procs JSON: %+v", got)
	}
	checkResult(t, got[0], 3)
	// A CPU profile and an execution trace from each process.
	for id := 1; id <= 3; id++ {
		for _, f := range []struct{ name, magic string }{
			{fmt.Sprintf("cpu-each-16-4-nodes%d.pprof", id), "\x1f\x8b"}, // gzip
			{fmt.Sprintf("trace-each-16-4-nodes%d.out", id), "go 1."},
		} {
			b, err := os.ReadFile(filepath.Join(profDir, f.name))
			if err != nil || !bytes.HasPrefix(b, []byte(f.magic)) {
				t.Errorf("%s: %d bytes, err %v", f.name, len(b), err)
			}
		}
	}
}

func readResults(t *testing.T, file string) []result {
	t.Helper()
	var got struct{ Results []result }
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatalf("JSON: %v", err)
	}
	return got.Results
}

// checkResult checks that r is sane and came from procs child processes.
func checkResult(t *testing.T, r result, procs int) {
	t.Helper()
	if r.Ops == 0 || r.OpsPerSec <= 0 || r.P50 <= 0 || r.P99 < r.P50 || r.Max < r.P999 {
		t.Errorf("result %+v", r)
	}
	if r.Sync == "each" && r.FsyncsPerSec <= 0 {
		t.Errorf("no fsyncs counted under sync=each: %+v", r)
	}
	if r.CPUPer1000Ops <= 0 || r.PeakRSSMiB <= 0 || len(r.Processes) != procs {
		t.Errorf("CPU, RSS or processes: %+v", r)
	}
	var nodes []int
	for _, p := range r.Processes {
		if p.CPUSeconds <= 0 || p.PeakRSSMiB <= 0 || p.PeakRSSMiB > r.PeakRSSMiB {
			t.Errorf("process %+v of %+v", p, r)
		}
		for _, id := range p.Nodes {
			nodes = append(nodes, int(id))
		}
	}
	if slices.Sort(nodes); !slices.Equal(nodes, []int{1, 2, 3}) {
		t.Errorf("processes hold nodes %v", nodes)
	}
}

// tableRow is the first row of the table that starts with first, split
// into its columns.
func tableRow(t *testing.T, out, first string) []string {
	t.Helper()
	for line := range strings.Lines(out) {
		if f := strings.Fields(line); len(f) == 15 && f[0] == first {
			return f
		}
	}
	t.Fatalf("no %q row in\n%s", first, out)
	return nil
}

// TestErrorKillsChildren: when a configuration fails after its children
// started, the parent kills them and waits for them.
func TestErrorKillsChildren(t *testing.T) {
	needProc(t)
	o, err := parseFlags([]string{"-procs", "-clients", "1", "-size", "16", "-sync", "never", "-duration", "1s", "-dir", t.TempDir()}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	o.leaderTimeout = time.Nanosecond // the nodes are started; the wait for their leader fails
	var errOut bytes.Buffer
	err = benchmark(o, io.Discard, &errOut)
	if err == nil || !strings.Contains(err.Error(), "no leader agreed on") {
		t.Fatalf("got %v, want no leader\n%s", err, errOut.String())
	}
	noChildren(t)
}

// TestChildrenExitWithParent: a benchmark parent killed in the middle of
// a -procs run leaves no child behind (each sees its stdin end).
func TestChildrenExitWithParent(t *testing.T) {
	needProc(t)
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	args, _ := json.Marshal([]string{"-procs", "-clients", "2", "-size", "16", "-sync", "never", "-duration", "2m",
		"-warmup", "0s", "-tick", "50ms", "-dir", t.TempDir()})
	parent := exec.Command(exe)
	parent.Env = append(os.Environ(), testRunEnv+"="+string(args))
	var errOut syncBuffer
	parent.Stderr = &errOut
	if err := parent.Start(); err != nil {
		t.Fatal(err)
	}
	var kids []int
	t.Cleanup(func() { // should the test fail: no strays from it either
		parent.Process.Kill()
		parent.Wait()
		for _, pid := range kids {
			if alive(pid) {
				syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	})
	// Wait for the clients to run: the progress line.
	deadline := time.Now().Add(60 * time.Second)
	for !strings.Contains(errOut.String(), "ops/s") {
		if time.Now().After(deadline) {
			t.Fatalf("no progress line within a minute:\n%s", errOut.String())
		}
		time.Sleep(20 * time.Millisecond) // polling
	}
	kids = childrenOf(t, parent.Process.Pid)
	if len(kids) != 3 {
		t.Fatalf("parent has %d child processes %v, want 3", len(kids), kids)
	}
	parent.Process.Kill()
	parent.Wait()
	deadline = time.Now().Add(20 * time.Second)
	for {
		var left []int
		for _, pid := range kids {
			if alive(pid) {
				left = append(left, pid)
			}
		}
		if len(left) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("children %v still running 20s after their parent died", left)
		}
		time.Sleep(20 * time.Millisecond) // polling
	}
}

func needProc(t *testing.T) {
	t.Helper()
	if _, err := os.Stat("/proc/self/stat"); err != nil {
		t.Skip("needs /proc")
	}
}

// procStat is the state and the parent of process pid; ok false if it is
// gone.
func procStat(pid int) (state string, ppid int, ok bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return "", 0, false
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 2 {
		return "", 0, false
	}
	ppid, _ = strconv.Atoi(f[1])
	return f[0], ppid, true
}

// alive: pid exists and is not a zombie (an orphan's zombie is init's to
// reap).
func alive(pid int) bool {
	state, _, ok := procStat(pid)
	return ok && state != "Z"
}

// childrenOf lists the processes whose parent is pid, zombies included.
func childrenOf(t *testing.T, pid int) []int {
	t.Helper()
	ents, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var kids []int
	for _, e := range ents {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if _, ppid, ok := procStat(p); ok && ppid == pid {
			kids = append(kids, p)
		}
	}
	return kids
}

// noChildren fails t if this process has a child process: the benchmark
// must have waited for all of its own.
func noChildren(t *testing.T) {
	t.Helper()
	if _, err := os.Stat("/proc/self/stat"); err != nil {
		return
	}
	if kids := childrenOf(t, os.Getpid()); len(kids) > 0 {
		t.Fatalf("child processes left behind: %v", kids)
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestHistogram: quantiles from the histogram are within 0.4 % of the
// exact ones, and the maximum is exact.
func TestHistogram(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	var h hist
	var all []time.Duration
	for range 100000 {
		// log-uniform from 1 ns to about 1 minute
		d := time.Duration(rng.ExpFloat64() * float64(int64(1)<<rng.IntN(36)))
		h.record(d)
		all = append(all, d)
	}
	slices.Sort(all)
	s := h.snapshot()
	if s.n != uint64(len(all)) || s.max != all[len(all)-1] {
		t.Fatalf("n %d max %v, want %d %v", s.n, s.max, len(all), all[len(all)-1])
	}
	for _, q := range []float64{0, 0.1, 0.5, 0.9, 0.99, 0.999, 0.9999, 1} {
		want := all[min(int(q*float64(len(all))), len(all)-1)]
		got := s.quantile(q)
		if diff := float64(got - want); diff > float64(want)/256+0.5 || -diff > float64(want)/256+0.5 {
			t.Errorf("quantile %v: %v, exact %v", q, got, want)
		}
	}
	for v := uint64(0); v < 1<<20; v++ { // buckets are contiguous and their midpoints close
		b := histBucket(v)
		if mid := histMid(b); float64(max(mid, v)-min(mid, v)) > float64(v)/256+0.5 {
			t.Fatalf("value %d: bucket %d, midpoint %d", v, b, mid)
		}
		if v > 0 && b != histBucket(v-1) && b != histBucket(v-1)+1 {
			t.Fatalf("value %d: bucket %d after %d", v, b, histBucket(v-1))
		}
	}
	var e hist
	if e.snapshot().quantile(0.5) != 0 {
		t.Fatal("empty histogram: quantile not 0")
	}
}

// TestSummarize: CPU is summed over the processes, RSS is their largest,
// the log's counters are the leader's; a change of leader or term on any
// node is errLeaderMoved.
func TestSummarize(t *testing.T) {
	procs := []*proc{{ids: []node.NodeID{2}}, {ids: []node.NodeID{1}}, {ids: []node.NodeID{3}}}
	win := func(id node.NodeID, lead node.NodeID, fsyncs uint64) map[node.NodeID]nodeWindow {
		return map[node.NodeID]nodeWindow{id: {LeaderStart: 2, LeaderEnd: lead, TermStart: 3, TermEnd: 3, Fsyncs: fsyncs, Entries: 4 * fsyncs, Bytes: 100 * fsyncs}}
	}
	load := &loadStats{Elapsed: 2 * time.Second, Writes: 900, Reads: 100, P50: time.Millisecond, Max: 5 * time.Millisecond}
	results := []childResult{
		{CPU: 2 * time.Second, PeakRSSKiB: 30 << 10, Nodes: win(2, 2, 250), Load: load},
		{CPU: time.Second, PeakRSSKiB: 20 << 10, Nodes: win(1, 2, 300)},
		{CPU: time.Second, PeakRSSKiB: 25 << 10, Nodes: win(3, 2, 300)},
	}
	r, err := summarize(result{config: config{Size: 16, Procs: true}}, 2, procs, results)
	if err != nil {
		t.Fatal(err)
	}
	if r.Ops != 1000 || r.OpsPerSec != 500 || r.CPUPer1000Ops != 4 || r.PeakRSSMiB != 30 ||
		r.FsyncsPerSec != 125 || r.EntriesPerFsync != 4 || r.BytesPerEntry != 25 || r.P50 != time.Millisecond {
		t.Fatalf("%+v", r)
	}
	if len(r.Processes) != 3 || r.Processes[0].Nodes[0] != 1 || r.Processes[1].PeakRSSMiB != 30 {
		t.Fatalf("processes %+v", r.Processes)
	}
	results[2].Nodes = win(3, 1, 300)
	if _, err := summarize(result{}, 2, procs, results); !errors.Is(err, errLeaderMoved) {
		t.Fatalf("leader changed on node 3: %v", err)
	}
	results[2].Nodes = win(3, 2, 300)
	w := results[1].Nodes[1]
	w.TermEnd = 4
	results[1].Nodes[1] = w
	if _, err := summarize(result{}, 2, procs, results); !errors.Is(err, errLeaderMoved) {
		t.Fatalf("term changed on node 1: %v", err)
	}
}
