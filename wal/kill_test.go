//go:build unix

package wal

// A real crash: the test binary re-runs itself as a child that appends
// batches in a loop and prints each index whose Save returned; the parent
// kills it with SIGKILL in the middle and reopens the log.
//
// This proves less than the power-loss emulation (powerloss_test.go): a
// killed process loses only what it had not yet handed to the kernel, and
// the page cache survives it, so an acknowledged write that was never
// fsynced would pass here too. It checks what emulation cannot: the real
// process, its real files and lock, and a crash at an arbitrary
// instruction (between the two writes of a batch that crosses a segment
// roll, in the middle of a truncation).

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/stepraft/stepraft/core"
)

const killChildEnv = "STEPRAFT_WAL_KILL_CHILD_DIR"

// killEntry is the entry the kill test writes at index i: its term and
// payload follow from the index, so that the parent can check every entry
// without being told what was written.
func killEntry(i core.Index) core.Entry {
	data := bytes.Repeat([]byte(fmt.Sprintf("entry %d;", i)), 1+int(i%7))
	return core.Entry{Index: i, Term: killTerm(i), Type: core.EntryNormal, Data: data}
}

func killTerm(i core.Index) core.Term { return core.Term(1 + i/100) }

// TestKillChild is the child: it runs only when the parent sets
// killChildEnv. It opens the log, appends batches of 1–7 entries after
// whatever is there, with a hard state whose term follows the entries,
// and prints "ack <last index>" after each Save returns, until it is
// killed (or has written maxEntries entries).
func TestKillChild(t *testing.T) {
	dir := os.Getenv(killChildEnv)
	if dir == "" {
		t.Skip("runs as the child of TestKillNineKeepsAcknowledgedEntries")
	}
	const maxEntries = 200000
	l, err := Open(dir, Options{SegmentSize: 4096})
	if err != nil {
		fmt.Printf("error %v\n", err)
		os.Exit(2)
	}
	last, _ := l.LastIndex()
	for last < maxEntries {
		n := 1 + core.Index(last%7)
		batch := make([]core.Entry, n)
		for k := range batch {
			batch[k] = killEntry(last + 1 + core.Index(k))
		}
		last += n
		hs := core.HardState{Term: killTerm(last), Vote: 1, Commit: last - n}
		if err := l.Save(core.Ready{Entries: batch, HardState: hs}); err != nil {
			fmt.Printf("error %v\n", err)
			os.Exit(2)
		}
		fmt.Printf("ack %d\n", last) // one write(2) on an unbuffered stdout
	}
	l.Close()
}

// TestKillNineKeepsAcknowledgedEntries runs the child three times on the
// same directory, each time killing it with SIGKILL once it has
// acknowledged some more batches, and checks after each kill that every
// acknowledged index is in the reopened log and every entry is whole and
// right.
func TestKillNineKeepsAcknowledgedEntries(t *testing.T) {
	if os.Getenv(killChildEnv) != "" {
		t.Skip("in the child")
	}
	dir := t.TempDir()
	var acked core.Index
	for round := range 3 {
		cmd := exec.Command(os.Args[0], "-test.run=^TestKillChild$", "-test.count=1")
		cmd.Env = append(os.Environ(), killChildEnv+"="+dir)
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		// Kill after 100 more acknowledgements, then read what the child
		// printed before it died: every line is an acknowledged Save.
		sc := bufio.NewScanner(out)
		acks, killed := 0, false
		for sc.Scan() {
			line := sc.Text()
			if rest, ok := strings.CutPrefix(line, "ack "); ok {
				i, err := strconv.ParseUint(rest, 10, 64)
				if err != nil {
					t.Fatalf("child printed %q", line)
				}
				acked = core.Index(i)
				acks++
			} else if strings.HasPrefix(line, "error") {
				t.Fatalf("round %d: child: %s", round, line)
			}
			if acks == 100 && !killed {
				if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
					t.Fatal(err)
				}
				killed = true
			}
		}
		err = cmd.Wait()
		if !killed || err == nil || !strings.Contains(err.Error(), "killed") {
			t.Fatalf("round %d: child ended without being killed (%d acks): %v\n%s", round, acks, err, stderr.String())
		}
		st, err := openAndRead(dir, Options{SegmentSize: 4096})
		if err != nil {
			t.Fatalf("round %d: reopen after kill: %v", round, err)
		}
		if st.first != 1 || st.last < acked {
			t.Fatalf("round %d: log [%d, %d] after kill, but %d was acknowledged", round, st.first, st.last, acked)
		}
		for _, e := range st.ents {
			if want := killEntry(e.Index); !sameEntry(e, want) {
				t.Fatalf("round %d: entry %d is %s, want %s", round, e.Index, core.DescribeEntry(e), core.DescribeEntry(want))
			}
		}
		if st.hard.Term == 0 || st.hard.Term > killTerm(st.last) {
			t.Fatalf("round %d: hard state %+v with last entry %d", round, st.hard, st.last)
		}
		t.Logf("round %d: killed after %d acknowledged, log ends at %d", round, acked, st.last)
	}
}
