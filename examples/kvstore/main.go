// Command kvstore is a replicated key-value store built on stepraft's node
// package: every member serves the same HTTP API, and any member answers
// any request.
//
//	kvstore demo
//	kvstore serve -id 1 -cluster 1=127.0.0.1:7001,2=127.0.0.1:7002,3=127.0.0.1:7003 -http 127.0.0.1:8001 -data ./data/1
//	kvstore backup -http 127.0.0.1:8001 -out backup.bin
//	kvstore restore -in backup.bin -data ./data/r1 -id 1 -raft 127.0.0.1:7001
//	kvstore recover -data ./data/1 -members 1=127.0.0.1:7001,4=127.0.0.1:7004,5=127.0.0.1:7005
//
// See the README for the API.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/stepraft/stepraft/node"
	"github.com/stepraft/stepraft/wal"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprintln(stderr, "usage: kvstore demo|serve|backup|restore|recover [flags]")
		return 2
	}
	var err error
	switch args[0] {
	case "demo":
		err = demo(stdout)
	case "serve":
		err = serve(args[1:], stderr)
	case "backup":
		err = backupCmd(args[1:], stdout)
	case "restore":
		err = restoreCmd(args[1:], stdout)
	case "recover":
		err = recoverCmd(args[1:], stdout)
	default:
		fmt.Fprintf(stderr, "kvstore: unknown command %q\n", args[0])
		return 2
	}
	if errors.Is(err, flag.ErrHelp) {
		return 2
	}
	if err != nil {
		fmt.Fprintln(stderr, "kvstore:", err)
		return 1
	}
	return 0
}

// parseMembers parses "1=host:port,2=host:port".
func parseMembers(s string) (map[node.NodeID]string, error) {
	out := make(map[node.NodeID]string)
	for _, part := range strings.Split(s, ",") {
		if part = strings.TrimSpace(part); part == "" {
			continue
		}
		idStr, addr, ok := strings.Cut(part, "=")
		id, err := strconv.ParseUint(idStr, 10, 64)
		if !ok || err != nil || id == 0 || addr == "" {
			return nil, fmt.Errorf("bad member %q: want ID=HOST:PORT", part)
		}
		if _, dup := out[node.NodeID(id)]; dup {
			return nil, fmt.Errorf("member %d given twice", id)
		}
		out[node.NodeID(id)] = addr
	}
	if len(out) == 0 {
		return nil, errors.New("no members")
	}
	return out, nil
}

// memberConfig is what serve and demo need to run one member.
type memberConfig struct {
	node.Config
	HTTP    string
	Timeout time.Duration
}

// member is a running member: its node and HTTP server.
type member struct {
	n   *node.Node
	srv *http.Server
	ln  net.Listener
	st  *store
}

// startMember starts the node and its HTTP API.
func startMember(mc memberConfig) (*member, error) {
	st := newStore()
	mc.StateMachine = st
	ln, err := net.Listen("tcp", mc.HTTP)
	if err != nil {
		return nil, fmt.Errorf("http listen: %w", err)
	}
	n, err := node.Start(mc.Config)
	if err != nil {
		ln.Close()
		return nil, err
	}
	s := &server{n: n, st: st, id: uint64(mc.ID), http: ln.Addr().String(), timeout: mc.Timeout}
	m := &member{n: n, st: st, ln: ln, srv: &http.Server{Handler: s.routes(), ReadHeaderTimeout: 10 * time.Second}}
	go m.srv.Serve(ln)
	return m, nil
}

// stop stops the HTTP server, then the node.
func (m *member) stop() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	m.srv.Shutdown(ctx)
	return m.n.Stop()
}

func serve(args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	id := fs.Uint64("id", 0, "this member's ID")
	cluster := fs.String("cluster", "", "members: ID=HOST:PORT,... (raft addresses, this member's included)")
	httpAddr := fs.String("http", "", "address of the HTTP API")
	data := fs.String("data", "", "data directory")
	syncFlag := fs.String("sync", "each", "fsync policy: each, interval or never")
	listen := fs.String("listen", "", "raft address to bind, when it differs from the advertised one in -cluster")
	tick := fs.Duration("tick", 100*time.Millisecond, "tick interval")
	election := fs.Int("election-ticks", 10, "election timeout in ticks")
	join := fs.Bool("join", false, "join a running cluster (after POST /members on it)")
	clusterID := fs.Uint64("cluster-id", 0, "cluster ID to check (default: derived from -cluster, or learned from the cluster with -join)")
	timeout := fs.Duration("timeout", 5*time.Second, "time a request may take")
	verbose := fs.Bool("v", false, "log at debug level")
	if err := fs.Parse(args); err != nil {
		return err
	}
	peers, err := parseMembers(*cluster)
	if err != nil {
		return fmt.Errorf("-cluster: %w", err)
	}
	policy, err := wal.ParseSyncPolicy(*syncFlag)
	if err != nil {
		return fmt.Errorf("-sync: %w", err)
	}
	if *id == 0 || *httpAddr == "" || *data == "" {
		return errors.New("serve needs -id, -http and -data")
	}
	level := slog.LevelInfo
	if *verbose {
		level = slog.LevelDebug
	}
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	m, err := startMember(memberConfig{Config: node.Config{
		ID: node.NodeID(*id), Peers: peers, Join: *join, ClusterID: *clusterID, DataDir: *data, Listen: *listen,
		TickInterval: *tick, ElectionTicks: *election, Sync: policy, Logger: logger,
	}, HTTP: *httpAddr, Timeout: *timeout})
	if err != nil {
		return err
	}
	logger.Info("serving", "http", m.ln.Addr().String())
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	select {
	case s := <-sig:
		logger.Info("stopping", "signal", s.String())
		return m.stop()
	case <-m.n.Done():
		m.stop()
		return fmt.Errorf("node stopped: %w", m.n.Err())
	}
}
