package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/stepraft/stepraft/node"
)

// Timeouts of the protocol with the children.
const (
	replyTimeout    = 30 * time.Second // for a started or a status
	resultSlack     = 60 * time.Second // for a result, beyond the warm-up and the window
	shutdownTimeout = childStopTimeout + 10*time.Second
)

// proc is a child process holding some of the nodes, seen from the parent.
type proc struct {
	ids     []node.NodeID
	cmd     *exec.Cmd
	stdin   io.WriteCloser
	enc     *json.Encoder
	replies chan reply    // closed when the child's stdout ends
	exited  chan struct{} // closed once the child was waited for
	err     error         // Wait's; set before exited is closed
}

func (p *proc) String() string {
	if len(p.ids) == 1 {
		return fmt.Sprintf("child process of node %d", p.ids[0])
	}
	return fmt.Sprintf("child process of nodes %s", idList(p.ids))
}

func idList(ids []node.NodeID) string {
	s := make([]string, len(ids))
	for i, id := range ids {
		s[i] = fmt.Sprint(id)
	}
	return strings.Join(s, ",")
}

// spawn starts a child process of this binary for the nodes ids. Its
// stderr goes to stderr, a line at a time, after "node N: ".
func spawn(ids []node.NodeID, stderr io.Writer) (*proc, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), childEnv+"=1")
	prefix := "node " + idList(ids) + ": "
	if len(ids) > 1 {
		prefix = "nodes " + idList(ids) + ": "
	}
	cmd.Stderr = &lineWriter{w: stderr, prefix: prefix}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &proc{ids: ids, cmd: cmd, stdin: stdin, enc: json.NewEncoder(stdin),
		replies: make(chan reply, 16), exited: make(chan struct{})}
	go func() {
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 64<<10), 16<<20)
		for sc.Scan() {
			var r reply
			if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
				r = reply{Op: "error", Err: fmt.Sprintf("unreadable reply %q", sc.Text())}
			}
			p.replies <- r
		}
		close(p.replies)
		p.err = cmd.Wait()
		close(p.exited)
	}()
	return p, nil
}

func (p *proc) send(r request) error {
	if err := p.enc.Encode(r); err != nil {
		return fmt.Errorf("%v: %w", p, err)
	}
	return nil
}

// next is the child's next reply, by the deadline. An error reply, the
// end of its stdout and the deadline are errors.
func (p *proc) next(deadline time.Time) (reply, error) {
	wait := time.Until(deadline)
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case r, ok := <-p.replies:
		if !ok {
			<-p.exited
			return r, fmt.Errorf("%v exited: %v (its stderr is above)", p, p.err)
		}
		if r.Op == "error" {
			return r, fmt.Errorf("%v: %s", p, r.Err)
		}
		return r, nil
	case <-t.C:
		return reply{}, fmt.Errorf("%v: no reply within %v", p, wait.Round(time.Millisecond))
	}
}

// expect is the next reply, which must be op.
func (p *proc) expect(op string, timeout time.Duration) (reply, error) {
	r, err := p.next(time.Now().Add(timeout))
	if err == nil && r.Op != op {
		err = fmt.Errorf("%v: %q where %q was due", p, r.Op, op)
	}
	return r, err
}

// shutdown tells the child to stop its nodes, and waits for it to exit
// (killing it if it does not in time). An exit status other than 0 (a
// data race found under -race is 66) is an error.
func (p *proc) shutdown() error {
	p.send(request{Op: "stop"})
	p.stdin.Close()
	t := time.NewTimer(shutdownTimeout)
	defer t.Stop()
	for {
		select {
		case _, ok := <-p.replies:
			if ok {
				continue
			}
			<-p.exited
			if p.err != nil {
				return fmt.Errorf("%v: %v (its stderr is above)", p, p.err)
			}
			return nil
		case <-t.C:
			p.kill()
			return fmt.Errorf("%v did not exit within %v of stop; killed", p, shutdownTimeout)
		}
	}
}

// kill kills the child, unless it has exited, and waits for it.
func (p *proc) kill() {
	select {
	case <-p.exited:
		return
	default:
	}
	p.cmd.Process.Kill()
	for range p.replies {
	}
	<-p.exited
}

// errLeaderMoved is the error of a run during which the leader changed.
var errLeaderMoved = errors.New("leadership moved during the run")

// measure runs one configuration, again if leadership moved during it
// (once).
func measure(cfg config, o options, dir string, stderr io.Writer) (result, error) {
	r, err := measureOnce(cfg, o, dir, stderr)
	// A port found free may be taken by another process before a child
	// binds it: again on other ports.
	for k := 1; k <= 3 && err != nil && strings.Contains(err.Error(), "address already in use"); k++ {
		fmt.Fprintf(stderr, "bench: %v; again on other ports\n", err)
		r, err = measureOnce(cfg, o, fmt.Sprintf("%s-ports%d", dir, k), stderr)
	}
	if errors.Is(err, errLeaderMoved) {
		fmt.Fprintf(stderr, "bench: %v; running the configuration again\n", err)
		r, err = measureOnce(cfg, o, dir+"-rerun", stderr)
		r.Rerun = true
	}
	return r, err
}

// measureOnce runs one configuration in fresh child processes, with fresh
// wal directories in dir.
func measureOnce(cfg config, o options, dir string, stderr io.Writer) (result, error) {
	res := result{config: cfg}
	peers, err := loopbackPeers()
	if err != nil {
		return res, err
	}
	groups := [][]node.NodeID{{1, 2, 3}}
	if cfg.Procs {
		groups = [][]node.NodeID{{1}, {2}, {3}}
	}
	var procs []*proc
	defer func() {
		for _, p := range procs {
			p.kill()
		}
	}()
	for _, ids := range groups {
		p, err := spawn(ids, stderr)
		if err != nil {
			return res, err
		}
		procs = append(procs, p)
		err = p.send(request{Op: "start", Start: &startArgs{IDs: ids, Peers: peers, Dir: dir, Sync: cfg.Sync, MaxBatch: cfg.MaxBatch, SnapshotEntries: cfg.SnapshotEntries, Tick: o.tick}})
		if err != nil {
			return res, err
		}
	}
	for _, p := range procs {
		if _, err := p.expect("started", replyTimeout); err != nil {
			return res, err
		}
	}
	lead, err := agreeLeader(procs, o.leaderTimeout)
	if err != nil {
		return res, err
	}
	// The child holding the leader first: it reports progress while the
	// others have nothing to say until their results.
	slices.SortStableFunc(procs, func(a, b *proc) int {
		return boolInt(!slices.Contains(a.ids, lead)) - boolInt(!slices.Contains(b.ids, lead))
	})
	w := workload{Clients: cfg.Clients, Size: cfg.Size, Reads: cfg.Reads, Warmup: o.warmup, Duration: o.duration}
	for _, p := range procs {
		w := w
		name := fmt.Sprintf("%s-%d-%d-nodes%s", cfg.Sync, cfg.Size, cfg.Clients, idList(p.ids))
		if o.cpuProfile != "" {
			w.CPUProfile = filepath.Join(o.cpuProfile, "cpu-"+name+".pprof")
		}
		if o.trace != "" {
			w.Trace = filepath.Join(o.trace, "trace-"+name+".out")
		}
		if err := p.send(request{Op: "run", Run: &runArgs{Leader: lead, Workload: w}}); err != nil {
			return res, err
		}
	}
	deadline := time.Now().Add(o.warmup + o.duration + resultSlack)
	results := make([]childResult, len(procs))
	for i, p := range procs {
		for {
			r, err := p.next(deadline)
			if err != nil {
				return res, err
			}
			if r.Op == "progress" {
				fmt.Fprintf(stderr, "\r%-6s size %5d clients %4d: %8.0f ops/s  %3.0fs left ", cfg.Sync, cfg.Size, cfg.Clients,
					float64(r.Done)/r.Elapsed.Seconds(), max(0, (o.duration-r.Elapsed).Seconds()))
				continue
			}
			if r.Op != "result" || r.Result == nil {
				return res, fmt.Errorf("%v: %q where a result was due", p, r.Op)
			}
			results[i] = *r.Result
			break
		}
	}
	fmt.Fprintln(stderr)
	errs := make(chan error, len(procs))
	for _, p := range procs {
		go func() { errs <- p.shutdown() }()
	}
	for range procs {
		if err := <-errs; err != nil {
			return res, err
		}
	}
	return summarize(res, lead, procs, results)
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// agreeLeader asks the children for the leader each node knows of until
// the three name the same one.
func agreeLeader(procs []*proc, timeout time.Duration) (node.NodeID, error) {
	deadline := time.Now().Add(timeout)
	for {
		seen := map[node.NodeID]node.NodeID{}
		for _, p := range procs {
			if err := p.send(request{Op: "status"}); err != nil {
				return 0, err
			}
			r, err := p.expect("status", replyTimeout)
			if err != nil {
				return 0, err
			}
			for id, l := range r.Leaders {
				seen[id] = l
			}
		}
		lead := seen[1]
		agree := len(seen) == 3 && lead != 0
		for _, l := range seen {
			agree = agree && l == lead
		}
		if agree {
			return lead, nil
		}
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("no leader agreed on within %v (the leader each node knows of: %v)", timeout, seen)
		}
		time.Sleep(10 * time.Millisecond) // polling the children
	}
}

// summarize makes the configuration's result of the children's: latency
// and throughput from the one that ran the clients, the log's counters
// from the leader, CPU summed over the children, peak RSS their largest.
func summarize(res result, lead node.NodeID, procs []*proc, results []childResult) (result, error) {
	var load *loadStats
	var lw nodeWindow
	var cpu time.Duration
	for i, cr := range results {
		for id, w := range cr.Nodes {
			if w.LeaderStart != lead || w.LeaderEnd != lead || w.TermStart != w.TermEnd {
				return res, fmt.Errorf("%w: node %d knew of leader %d in term %d when it began and of %d in term %d at the end (leader was %d)",
					errLeaderMoved, id, w.LeaderStart, w.TermStart, w.LeaderEnd, w.TermEnd, lead)
			}
			if id == lead {
				lw = w
			}
		}
		if cr.Load != nil {
			load = cr.Load
		}
		cpu += cr.CPU
		rss := float64(cr.PeakRSSKiB) / 1024
		res.PeakRSSMiB = max(res.PeakRSSMiB, rss)
		res.Processes = append(res.Processes, process{Nodes: procs[i].ids, CPUSeconds: cr.CPU.Seconds(), PeakRSSMiB: rss})
	}
	if load == nil {
		return res, fmt.Errorf("no child ran the clients (leader %d)", lead)
	}
	elapsed := load.Elapsed.Seconds()
	res.Ops = load.Writes + load.Reads
	res.Errors = load.Errors
	res.OpsPerSec = float64(res.Ops) / elapsed
	res.MBPerSec = float64(load.Writes*res.Size) / elapsed / 1e6
	res.P50, res.P90, res.P99, res.P999, res.Max = load.P50, load.P90, load.P99, load.P999, load.Max
	res.ReadP50 = load.ReadP50
	if lw.Fsyncs > 0 {
		res.FsyncsPerSec = float64(lw.Fsyncs) / elapsed
		res.EntriesPerFsync = float64(lw.Entries) / float64(lw.Fsyncs)
	}
	if lw.Entries > 0 {
		res.BytesPerEntry = float64(lw.Bytes) / float64(lw.Entries)
	}
	if res.Ops > 0 {
		res.CPUPer1000Ops = cpu.Seconds() / float64(res.Ops) * 1000
	}
	slices.SortFunc(res.Processes, func(a, b process) int { return int(a.Nodes[0]) - int(b.Nodes[0]) })
	return res, nil
}

// lineWriter writes what it is given to w a whole line at a time, each
// after prefix: the children's stderr, in the parent's.
type lineWriter struct {
	w      io.Writer
	prefix string
	buf    []byte
}

func (l *lineWriter) Write(p []byte) (int, error) {
	l.buf = append(l.buf, p...)
	for {
		i := bytes.IndexByte(l.buf, '\n')
		if i < 0 {
			return len(p), nil
		}
		l.w.Write([]byte(l.prefix + string(l.buf[:i+1])))
		l.buf = l.buf[i+1:]
	}
}

// lockedWriter serializes writes to w: the parent's stderr, written by
// it and by the copiers of the children's.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
