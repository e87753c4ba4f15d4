package node_test

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/stepraft/stepraft/core"
	"github.com/stepraft/stepraft/node"
	"github.com/stepraft/stepraft/node/nodetest"
	"github.com/stepraft/stepraft/wal"
)

// saveRecorder is a log store that records, for each Save, the bytes of
// its normal entries' data.
type saveRecorder struct {
	node.LogStore
	mu      sync.Mutex
	batches []int
	largest int // the largest single entry's data
}

func (s *saveRecorder) Save(rd core.Ready) error {
	b, largest := 0, 0
	for _, e := range rd.Entries {
		if e.Type == core.EntryNormal {
			b += len(e.Data)
			largest = max(largest, len(e.Data))
		}
	}
	s.mu.Lock()
	s.batches = append(s.batches, b)
	s.largest = max(s.largest, largest)
	s.mu.Unlock()
	return s.LogStore.Save(rd)
}

// TestReadyHoldsAtMostMaxBatchBytes: however many proposals wait, and
// however long the loop gathers them before a write, one Save carries at
// most MaxBatchBytes of proposals plus the one that crosses it.
func TestReadyHoldsAtMostMaxBatchBytes(t *testing.T) {
	dir := t.TempDir()
	cfg := single(t, dir)
	cfg.MaxBatchBytes, cfg.MaxCommandBytes = 2048, 1024
	l, err := wal.Open(filepath.Join(dir, "wal"), wal.Options{})
	if err != nil {
		t.Fatal(err)
	}
	rec := &saveRecorder{LogStore: l}
	cfg.LogStore = rec
	n := startLeading(t, cfg)
	t.Cleanup(func() { n.Stop() })
	put(t, n, "first", "1") // the leader has committed an entry of its term
	var wg sync.WaitGroup
	errs := make(chan error, 400)
	for i := range 400 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := n.Propose(context.Background(), nodetest.EncodePut(fmt.Sprint("k", i), strings.Repeat("v", 200)))
			if err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	most := 0
	for _, b := range rec.batches {
		most = max(most, b)
	}
	if limit := cfg.MaxBatchBytes + rec.largest; most > limit {
		t.Fatalf("a Save carried %d bytes of proposals, more than MaxBatchBytes %d plus one entry of %d", most, cfg.MaxBatchBytes, rec.largest)
	}
	t.Logf("%d Saves; the largest carried %d bytes (MaxBatchBytes %d, entries up to %d)", len(rec.batches), most, cfg.MaxBatchBytes, rec.largest)
}
