package main

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	raftwal "github.com/hashicorp/raft-wal"
)

// hashicorpFSM adapts counter to raft.FSM.
type hashicorpFSM struct{ counter }

func (f *hashicorpFSM) Apply(l *raft.Log) any { f.add(l.Data); return nil }

func (f *hashicorpFSM) Snapshot() (raft.FSMSnapshot, error) { return hashicorpSnap(f.get()), nil }

func (f *hashicorpFSM) Restore(r io.ReadCloser) error {
	defer r.Close()
	var b [8]byte
	if _, err := io.ReadFull(r, b[:]); err != nil {
		return err
	}
	f.set(binary.BigEndian.Uint64(b[:]))
	return nil
}

type hashicorpSnap uint64

func (s hashicorpSnap) Persist(sink raft.SnapshotSink) error {
	if _, err := sink.Write(binary.BigEndian.AppendUint64(nil, uint64(s))); err != nil {
		sink.Cancel()
		return err
	}
	return sink.Close()
}

func (hashicorpSnap) Release() {}

type hashicorpCluster struct {
	rafts  []*raft.Raft
	wals   []*raftwal.WAL
	trans  []*raft.NetworkTransport
	leader *raft.Raft
}

// startHashicorp starts three raft.Raft with raft-wal as log and stable
// store (its default: fsync on every append), a file snapshot store, the
// TCP NetworkTransport (pool 3, timeout 10 s) and raft.DefaultConfig().
func startHashicorp(dir string) (cluster, error) {
	c := &hashicorpCluster{}
	logger := hclog.New(&hclog.LoggerOptions{Name: "raft", Level: hclog.Error, Output: os.Stderr})
	var servers []raft.Server
	var lns []string
	for i := 1; i <= 3; i++ {
		a, err := freeAddr()
		if err != nil {
			return nil, err
		}
		lns = append(lns, a)
		servers = append(servers, raft.Server{Suffrage: raft.Voter, ID: raft.ServerID(fmt.Sprint(i)), Address: raft.ServerAddress(a)})
	}
	for i := range 3 {
		d := filepath.Join(dir, fmt.Sprint(i+1))
		if err := os.MkdirAll(filepath.Join(d, "wal"), 0o755); err != nil {
			return nil, err
		}
		w, err := raftwal.Open(filepath.Join(d, "wal"))
		if err != nil {
			c.stop()
			return nil, err
		}
		c.wals = append(c.wals, w)
		snaps, err := raft.NewFileSnapshotStoreWithLogger(d, 2, logger)
		if err != nil {
			c.stop()
			return nil, err
		}
		addr, err := net.ResolveTCPAddr("tcp", lns[i])
		if err != nil {
			c.stop()
			return nil, err
		}
		tr, err := raft.NewTCPTransportWithLogger(lns[i], addr, 3, 10*time.Second, logger)
		if err != nil {
			c.stop()
			return nil, err
		}
		c.trans = append(c.trans, tr)
		conf := raft.DefaultConfig()
		conf.LocalID = servers[i].ID
		conf.Logger = logger
		if err := raft.BootstrapCluster(conf, w, w, snaps, tr, raft.Configuration{Servers: servers}); err != nil {
			c.stop()
			return nil, err
		}
		r, err := raft.NewRaft(conf, &hashicorpFSM{}, w, w, snaps, tr)
		if err != nil {
			c.stop()
			return nil, err
		}
		c.rafts = append(c.rafts, r)
	}
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		for _, r := range c.rafts {
			if r.State() == raft.Leader {
				c.leader = r
				return c, nil
			}
		}
	}
	c.stop()
	return nil, errors.New("no leader")
}

func (c *hashicorpCluster) propose(ctx context.Context, cmd []byte) error {
	timeout := 10 * time.Second
	if d, ok := ctx.Deadline(); ok {
		timeout = time.Until(d)
	}
	return c.leader.Apply(cmd, timeout).Error()
}

func (c *hashicorpCluster) stop() {
	for _, r := range c.rafts {
		r.Shutdown().Error()
	}
	for _, t := range c.trans {
		t.Close()
	}
	for _, w := range c.wals {
		w.Close()
	}
}
