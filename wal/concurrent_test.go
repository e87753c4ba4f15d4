package wal

import (
	"sync"
	"testing"

	"github.com/stepraft/stepraft/core"
)

// TestReadsDuringWrites reads entries and terms from several goroutines
// while one goroutine saves, replaces suffixes and compacts: tidwall/wal's
// reads race with each other on their own, so every read must go through
// the log's lock. Run under -race; every entry read must be one that was
// written at that index.
func TestReadsDuringWrites(t *testing.T) {
	l, err := Open(t.TempDir(), Options{Sync: SyncNever, SegmentSize: 4096})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if err := l.Save(core.Ready{Entries: ents(1, 50, 1), HardState: core.HardState{Term: 1, Commit: 1}}); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				first, _ := l.FirstIndex()
				last, _ := l.LastIndex()
				if last < first {
					continue
				}
				got, err := l.Entries(first, last+1, 1<<20)
				if err != nil {
					continue // compacted or cut meanwhile: fine
				}
				for _, e := range got {
					// Every entry's data names its own index.
					if want := string(ents(e.Index, e.Index, e.Term)[0].Data); string(e.Data) != want {
						errs <- &readErr{e}
						return
					}
				}
				_, _ = l.Term(last)
			}
		}()
	}
	next := core.Index(51)
	term := core.Term(1)
	for round := range 200 {
		switch {
		case round%25 == 24:
			// A new term replaces the last few entries.
			term++
			next -= 3
		case round%40 == 39:
			if err := l.SetSnapshot(core.SnapshotMeta{Index: next - 5, ConfState: core.ConfState{Voters: []core.NodeID{1}}}); err != nil {
				t.Fatal(err)
			}
			if err := l.Compact(next - 10); err != nil {
				t.Fatal(err)
			}
		}
		if err := l.Save(core.Ready{Entries: ents(next, next+4, term), HardState: core.HardState{Term: term, Commit: next - 10}}); err != nil {
			t.Fatal(err)
		}
		next += 5
	}
	close(stop)
	wg.Wait()
	select {
	case err := <-errs:
		t.Fatal(err)
	default:
	}
}

type readErr struct{ e core.Entry }

func (r *readErr) Error() string { return "read a wrong entry: " + core.DescribeEntry(r.e) }
