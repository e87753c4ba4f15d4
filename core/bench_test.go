package core_test

import (
	"fmt"
	"runtime"
	"testing"

	"github.com/stepraft/stepraft/core"
)

// benchCluster is a lean 3-node loop for benchmarks: each node persists its
// Ready to a MemoryStorage and advances; messages go straight to Step. It
// has none of coretest's bookkeeping (no partitions, no delivery records),
// so what it measures is core plus MemoryStorage.
type benchCluster struct {
	nodes    []*core.Raft // nodes[i] has ID i+1
	storages []*core.MemoryStorage
	applied  []core.Index
	net      []core.Message
	spare    []core.Message
}

func newBenchCluster(b *testing.B) *benchCluster {
	b.Helper()
	ids := []core.NodeID{1, 2, 3}
	bc := &benchCluster{applied: make([]core.Index, len(ids))}
	for _, id := range ids {
		s := paperStorage(b, ids, core.HardState{})
		bc.storages = append(bc.storages, s)
		bc.nodes = append(bc.nodes, paperNode(b, id, s, core.Config{Seed: 1, DisablePreVote: true}))
	}
	if err := bc.nodes[0].Campaign(); err != nil {
		b.Fatal(err)
	}
	bc.stabilize(b)
	if bc.nodes[0].Status().Role != core.RoleLeader {
		b.Fatal("node 1 did not become leader")
	}
	return bc
}

// stabilize runs Ready cycles and delivers messages until all is quiet.
func (bc *benchCluster) stabilize(b *testing.B) {
	for round := 0; ; round++ {
		if round > 1000 {
			b.Fatal("cluster does not stabilize")
		}
		busy := false
		for i, r := range bc.nodes {
			for r.HasReady() {
				busy = true
				rd := r.Ready()
				s := bc.storages[i]
				if err := s.Append(rd.Entries); err != nil {
					b.Fatal(err)
				}
				if !rd.HardState.IsEmpty() {
					if err := s.SetHardState(rd.HardState); err != nil {
						b.Fatal(err)
					}
				}
				bc.net = append(bc.net, rd.Messages...)
				if n := len(rd.CommittedEntries); n > 0 {
					bc.applied[i] = rd.CommittedEntries[n-1].Index
				}
				r.Advance(rd)
			}
		}
		if len(bc.net) == 0 && !busy {
			return
		}
		msgs := bc.net
		bc.net = bc.spare[:0]
		for _, m := range msgs {
			if err := bc.nodes[m.To-1].Step(m); err != nil {
				b.Fatal(err)
			}
		}
		clear(msgs) // let go of entries' data
		bc.spare = msgs
	}
}

// compact drops what every node has applied from its storage, as a host
// that snapshots would, so that a long run does not grow without bound.
func (bc *benchCluster) compact(b *testing.B) {
	for i, s := range bc.storages {
		first, _ := s.FirstIndex()
		if bc.applied[i] > first+1024 {
			if _, err := s.CreateSnapshot(bc.applied[i], nil, nil); err != nil {
				b.Fatal(err)
			}
			if err := s.Compact(bc.applied[i]); err != nil {
				b.Fatal(err)
			}
		}
	}
}

// BenchmarkProposeCommit3Nodes measures core's replication path in a
// 3-node cluster held in memory: the leader takes `batch` proposals of
// `payload` bytes, then the cluster runs Ready cycles (persist to
// MemoryStorage, send, apply, Advance) and delivers messages until every
// node has committed and applied them. One b.N is one entry. No network, no
// fsync: this is the CPU and allocation cost of consensus per entry on all
// three nodes, the floor under what a real deployment can reach. The
// proposals share one payload buffer, so allocations are core's (and
// MemoryStorage's), not the application's.
//
// Reported: entries/s (committed and applied on all three nodes per second
// of wall time) and allocs/entry (heap allocations of the whole cluster per
// entry; the same as allocs/op).
func BenchmarkProposeCommit3Nodes(b *testing.B) {
	for _, payload := range []int{128, 1024} {
		for _, batch := range []int{1, 64} {
			b.Run(fmt.Sprintf("payload=%dB/batch=%d", payload, batch), func(b *testing.B) {
				benchProposeCommit(b, payload, batch)
			})
		}
	}
}

func benchProposeCommit(b *testing.B, payload, batch int) {
	bc := newBenchCluster(b)
	leader := bc.nodes[0]
	data := make([]byte, payload)
	start := bc.applied[0]
	b.ReportAllocs()
	b.SetBytes(int64(payload))
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	b.ResetTimer()
	for done := 0; done < b.N; {
		k := min(batch, b.N-done)
		for range k {
			if err := leader.Propose(data); err != nil {
				b.Fatal(err)
			}
		}
		bc.stabilize(b)
		done += k
		if done%(16*1024) < k {
			bc.compact(b)
		}
	}
	b.StopTimer()
	runtime.ReadMemStats(&after)
	for i, applied := range bc.applied {
		if got := int(applied - start); got != b.N {
			b.Fatalf("node %d applied %d entries, want %d", i+1, got, b.N)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "entries/s")
	b.ReportMetric(float64(after.Mallocs-before.Mallocs)/float64(b.N), "allocs/entry")
}
