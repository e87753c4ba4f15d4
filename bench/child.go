package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/stepraft/stepraft/node"
	"github.com/stepraft/stepraft/wal"
)

// The parent runs each configuration in fresh child processes of this
// same binary (os.Executable, so `go run ./bench` works): one holding the
// three nodes, or with -procs one per node. They talk in JSON lines, the
// parent on the child's stdin, the child on its stdout; the child's
// stderr goes to the parent's, each line prefixed with its nodes.
//
//	parent                               child
//	{"op":"start","start":{...}}    ->   starts its nodes
//	                                <-   {"op":"started"}
//	{"op":"status"}                 ->   (repeated until the 3 nodes agree on a leader)
//	                                <-   {"op":"status","leaders":{"1":2}}
//	{"op":"run","run":{...}}        ->   the clients, if the leader is here; the window
//	                                <-   {"op":"progress","done":N,"elapsed":NS} (the clients' child, each second)
//	                                <-   {"op":"result","result":{...}}
//	{"op":"stop"}, then EOF         ->   stops its nodes, exits 0
//
// A child that fails replies {"op":"error","err":"..."} and exits. A child
// whose stdin ends before a stop (the parent died, or gave up on it)
// exits at once.

// childEnv, set to 1 in its environment, makes this binary a child.
const childEnv = "STEPRAFT_BENCH_CHILD"

func isChild() bool { return os.Getenv(childEnv) == "1" }

// request is a line from the parent.
type request struct {
	Op    string     `json:"op"` // start, status, run, stop
	Start *startArgs `json:"start,omitempty"`
	Run   *runArgs   `json:"run,omitempty"`
}

type startArgs struct {
	IDs      []node.NodeID // the members this child holds
	Peers    map[node.NodeID]string
	Dir      string // the configuration's: each node's wal is in Dir/ID
	Sync     string
	MaxBatch int
	// SnapshotEntries is node.Config.SnapshotEntries (0: the default).
	SnapshotEntries uint64 `json:",omitempty"`
	Tick            time.Duration
}

type runArgs struct {
	Leader   node.NodeID // the clients run in the child that holds it
	Workload workload
}

// reply is a line from a child.
type reply struct {
	Op      string                      `json:"op"`                // started, status, progress, result, error
	Leaders map[node.NodeID]node.NodeID `json:"leaders,omitempty"` // status: the leader each node knows of
	Done    int64                       `json:"done,omitempty"`    // progress: operations measured so far
	Elapsed time.Duration               `json:"elapsed,omitempty"` // progress: of the measured window so far
	Result  *childResult                `json:"result,omitempty"`
	Err     string                      `json:"err,omitempty"`
}

// childMain serves the protocol and returns the exit code.
func childMain(stdin io.Reader, stdout, stderr io.Writer) int {
	reqs := make(chan request)
	go func() {
		sc := bufio.NewScanner(stdin)
		for sc.Scan() {
			var r request
			if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
				fmt.Fprintf(stderr, "bench child: bad request %q: %v\n", sc.Text(), err)
				os.Exit(2)
			}
			reqs <- r
			if r.Op == "stop" {
				return
			}
		}
		// The parent is gone, or gave up on this child: no one will
		// read what it measures.
		os.Exit(3)
	}()
	enc := json.NewEncoder(stdout)
	send := func(r reply) {
		if err := enc.Encode(r); err != nil {
			os.Exit(3) // the parent is gone
		}
	}
	fail := func(err error) int {
		send(reply{Op: "error", Err: err.Error()})
		return 1
	}
	var c *cluster
	for r := range reqs {
		switch {
		case r.Op == "start" && r.Start != nil && c == nil:
			a := r.Start
			policy, err := wal.ParseSyncPolicy(a.Sync)
			if err != nil {
				return fail(err)
			}
			if c, err = startNodes(a.IDs, a.Peers, a.Dir, policy, a.MaxBatch, a.SnapshotEntries, a.Tick); err != nil {
				return fail(err)
			}
			send(reply{Op: "started"})
		case r.Op == "status" && c != nil:
			send(reply{Op: "status", Leaders: c.leaders()})
		case r.Op == "run" && r.Run != nil && c != nil:
			res := runWorkload(c.nodes, r.Run.Leader, r.Run.Workload, func(done int64, elapsed time.Duration) {
				send(reply{Op: "progress", Done: done, Elapsed: elapsed})
			})
			send(reply{Op: "result", Result: &res})
		case r.Op == "stop":
			if c == nil {
				return 0
			}
			stopped := make(chan struct{})
			go func() {
				c.stop()
				close(stopped)
			}()
			select {
			case <-stopped:
				return 0
			case <-time.After(childStopTimeout):
				fmt.Fprintf(stderr, "bench child: nodes did not stop within %v\n", childStopTimeout)
				return 1
			}
		default:
			return fail(fmt.Errorf("unexpected request %q", r.Op))
		}
	}
	return 0
}

const childStopTimeout = 20 * time.Second
