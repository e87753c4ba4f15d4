package main

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"time"

	"github.com/lni/dragonboat/v4"
	"github.com/lni/dragonboat/v4/client"
	"github.com/lni/dragonboat/v4/config"
	"github.com/lni/dragonboat/v4/logger"
	"github.com/lni/dragonboat/v4/plugin/tan"
	sm "github.com/lni/dragonboat/v4/statemachine"
)

// dragonboatSM adapts counter to sm.IStateMachine.
type dragonboatSM struct{ counter }

func (s *dragonboatSM) Update(e sm.Entry) (sm.Result, error) {
	return sm.Result{Value: s.add(e.Cmd)}, nil
}

func (s *dragonboatSM) Lookup(any) (any, error) { return s.get(), nil }

func (s *dragonboatSM) SaveSnapshot(w io.Writer, _ sm.ISnapshotFileCollection, _ <-chan struct{}) error {
	_, err := w.Write(binary.BigEndian.AppendUint64(nil, s.get()))
	return err
}

func (s *dragonboatSM) RecoverFromSnapshot(r io.Reader, _ []sm.SnapshotFile, _ <-chan struct{}) error {
	var b [8]byte
	if _, err := io.ReadFull(r, b[:]); err != nil {
		return err
	}
	s.set(binary.BigEndian.Uint64(b[:]))
	return nil
}

func (s *dragonboatSM) Close() error { return nil }

const (
	dragonboatShard = 1
	// dragonboatRTT is NodeHostConfig.RTTMillisecond; with ElectionRTT
	// 100 and HeartbeatRTT 10 the timeouts are stepraft's defaults (1 s
	// election, 100 ms heartbeat).
	dragonboatRTT = 10
)

type dragonboatCluster struct {
	hosts   []*dragonboat.NodeHost
	leader  *dragonboat.NodeHost
	session *client.Session
}

func quietDragonboat() {
	for _, p := range []string{"config", "dragonboat", "gossip", "grpc", "logdb", "LogDB", "pebblekv", "raft", "raft-mt",
		"raftpb", "registry", "rsm", "server", "settings", "tan", "tools", "transport"} {
		logger.GetLogger(p).SetLevel(logger.ERROR)
	}
}

// startDragonboat starts one NodeHost per node with the tan log DB
// (Expert.LogDBFactory = plugin/tan.Factory, Expert.LogDB =
// GetTinyMemLogDBConfig()), its TCP transport, RTTMillisecond 10, and one
// replica each of a regular (IStateMachine) shard, snapshots off.
func startDragonboat(dir string) (cluster, error) {
	quietDragonboat()
	members := map[uint64]dragonboat.Target{}
	for id := uint64(1); id <= 3; id++ {
		a, err := freeAddr()
		if err != nil {
			return nil, err
		}
		members[id] = a
	}
	c := &dragonboatCluster{}
	for id := uint64(1); id <= 3; id++ {
		d := filepath.Join(dir, fmt.Sprint(id))
		nhc := config.NodeHostConfig{
			DeploymentID:   1,
			NodeHostDir:    d,
			WALDir:         d,
			RTTMillisecond: dragonboatRTT,
			RaftAddress:    members[id],
		}
		nhc.Expert.LogDB = config.GetTinyMemLogDBConfig()
		nhc.Expert.LogDBFactory = tan.Factory
		nh, err := dragonboat.NewNodeHost(nhc)
		if err != nil {
			c.stop()
			return nil, err
		}
		c.hosts = append(c.hosts, nh)
		rc := config.Config{ReplicaID: id, ShardID: dragonboatShard, ElectionRTT: 100, HeartbeatRTT: 10,
			CheckQuorum: true, PreVote: true, SnapshotEntries: 0}
		if err := nh.StartReplica(members, false, func(uint64, uint64) sm.IStateMachine { return &dragonboatSM{} }, rc); err != nil {
			c.stop()
			return nil, err
		}
	}
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		lead, _, ok, err := c.hosts[0].GetLeaderID(dragonboatShard)
		if err == nil && ok && lead >= 1 && lead <= 3 {
			c.leader = c.hosts[lead-1]
			c.session = c.leader.GetNoOPSession(dragonboatShard)
			return c, nil
		}
	}
	c.stop()
	return nil, errors.New("no leader")
}

func (c *dragonboatCluster) propose(ctx context.Context, cmd []byte) error {
	_, err := c.leader.SyncPropose(ctx, c.session, cmd)
	return err
}

func (c *dragonboatCluster) stop() {
	for _, nh := range c.hosts {
		nh.Close()
	}
}
