package node_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stepraft/stepraft/node"
	"github.com/stepraft/stepraft/node/nodetest"
)

// BenchmarkPropose runs a 3-node cluster on loopback TCP with the wal in
// temp directories (SyncEachBatch: an fsync on every member before each
// acknowledgement), and has P goroutines propose 16-byte commands to the
// leader. It reports proposals/s and the p50 and p99 latency of Propose.
func BenchmarkPropose(b *testing.B) {
	for _, p := range []int{1, 16, 256} {
		b.Run(fmt.Sprintf("proposers=%d", p), func(b *testing.B) { benchPropose(b, p) })
	}
}

func benchPropose(b *testing.B, proposers int) {
	c := nodetest.NewCluster(b, 3, newKV, nodetest.Options{TCP: true, Config: func(cfg *node.Config) {
		cfg.TickInterval = 50 * time.Millisecond
	}})
	lead := c.WaitLeader()
	cmd := nodetest.EncodePut("key-0001", "value-1") // 16 bytes
	if len(cmd) != 16 {
		b.Fatalf("command of %d bytes", len(cmd))
	}
	lat := make([][]time.Duration, proposers)
	var next atomic.Int64
	b.ResetTimer()
	start := time.Now()
	var wg sync.WaitGroup
	for w := range proposers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(b.N) {
				t0 := time.Now()
				if _, err := lead.Propose(context.Background(), cmd); err != nil {
					b.Error(err)
					return
				}
				lat[w] = append(lat[w], time.Since(t0))
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	all := slices.Concat(lat...)
	slices.Sort(all)
	if len(all) == 0 {
		return
	}
	b.ReportMetric(float64(len(all))/elapsed.Seconds(), "proposals/s")
	b.ReportMetric(float64(all[len(all)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(all[len(all)*99/100].Microseconds()), "p99-µs")
}
