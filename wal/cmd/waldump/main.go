// Command waldump prints a stepraft wal directory: both metadata slots,
// the segments, the entries and any damage, without changing anything (it
// takes no lock and repairs nothing, so it can look at the log of a
// running node, which may be mid-write).
//
// Usage:
//
//	waldump [-from INDEX] [-limit N] [-around INDEX] [-snap SNAPDIR] DIR
//
// DIR is a wal directory, or a node's data directory (holding wal/ and
// snap/): then the headers of its snapshots are printed too. -around
// prints the entries within 5 of an index, to compare members' logs.
//
// It exits with 1 when it finds damage (including a torn tail, which
// wal.Open would cut off), 2 on a usage or read error, 0 otherwise.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"

	"github.com/stepraft/stepraft/core"
	"github.com/stepraft/stepraft/snapshotter"
	"github.com/stepraft/stepraft/wal"
)

// dataPrefix is how many bytes of an entry's data are printed.
const dataPrefix = 32

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("waldump", flag.ContinueOnError)
	fs.SetOutput(stderr)
	from := fs.Uint64("from", 0, "print entries from this index on")
	limit := fs.Int("limit", -1, "print at most this many entries (-1: all)")
	around := fs.Uint64("around", 0, "print the entries within 5 of this index (overrides -from and -limit)")
	snapDir := fs.String("snap", "", "also print the headers of the snapshots in this directory")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: waldump [-from INDEX] [-limit N] [-around INDEX] [-snap SNAPDIR] DIR")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return 2
	}
	dir := fs.Arg(0)
	if fi, err := os.Stat(filepath.Join(dir, "wal")); err == nil && fi.IsDir() {
		// A node's data directory.
		if *snapDir == "" {
			*snapDir = filepath.Join(dir, "snap")
		}
		dir = filepath.Join(dir, "wal")
	}
	if *around > 0 {
		*from, *limit = max(*around, 6)-5, 11
	}
	w := bufio.NewWriter(stdout)
	defer w.Flush()
	snapDamaged := false
	if *snapDir != "" {
		snapDamaged = printSnapshots(w, *snapDir)
	}

	m, err := wal.InspectMeta(dir)
	if err != nil {
		fmt.Fprintln(stderr, "waldump:", err)
		return 2
	}
	printMeta(w, m)

	fmt.Fprintln(w, "entries:")
	fmt.Fprintf(w, "  %-10s %-6s %-16s %-7s %s\n", "index", "term", "type", "size", "data")
	printed := 0
	in, err := wal.Inspect(dir, func(e core.Entry) bool {
		if uint64(e.Index) < *from {
			return true
		}
		if *limit >= 0 && printed >= *limit {
			return false
		}
		printed++
		fmt.Fprintf(w, "  %-10d %-6d %-16s %-7d %s\n", e.Index, e.Term, e.Type, len(e.Data), quotePrefix(e.Data))
		return true
	})
	if err != nil {
		w.Flush()
		fmt.Fprintln(stderr, "waldump:", err)
		return 2
	}
	printLog(w, in)
	if in.Damaged() || snapDamaged {
		return 1
	}
	return 0
}

// printSnapshots prints the header of every snapshot file in dir, newest
// name last, and reports whether any is damaged. Bodies are not read.
func printSnapshots(w io.Writer, dir string) bool {
	names, err := filepath.Glob(filepath.Join(dir, "*.snap"))
	if err != nil || len(names) == 0 {
		fmt.Fprintf(w, "snapshots: %s: none\n", dir)
		return false
	}
	sort.Strings(names)
	fmt.Fprintf(w, "snapshots: %s\n", dir)
	damaged := false
	for _, name := range names {
		m, body, err := snapshotter.OpenFile(name)
		if err != nil {
			fmt.Fprintf(w, "  %s: damaged: %v\n", filepath.Base(name), err)
			damaged = true
			continue
		}
		body.Close()
		cs := m.ConfState
		fmt.Fprintf(w, "  %s: index %d term %d body %d bytes voters %v learners %v outgoing %v\n",
			filepath.Base(name), m.Index, m.Term, m.Size, cs.Voters, cs.Learners, cs.VotersOutgoing)
		for _, mb := range m.Members {
			fmt.Fprintf(w, "    member %d at %s\n", mb.ID, mb.Addr)
		}
	}
	return damaged
}

func printMeta(w io.Writer, m wal.MetaReport) {
	if m.Size < 0 {
		fmt.Fprintf(w, "metadata: %s: missing\n", m.Path)
		return
	}
	fmt.Fprintf(w, "metadata: %s (%d bytes)\n", m.Path, m.Size)
	for i, s := range m.Slots {
		if s.Err != nil {
			fmt.Fprintf(w, "  slot %d: invalid: %v\n", i, s.Err)
			continue
		}
		inForce := ""
		if i == m.Current {
			inForce = " (in force)"
		}
		fmt.Fprintf(w, "  slot %d: valid, sequence %d%s\n", i, s.Seq, inForce)
		fmt.Fprintf(w, "    identity:   cluster %x node %d\n", s.ClusterID, s.NodeID)
		fmt.Fprintf(w, "    hard state: term %d vote %d commit %d\n", s.HardState.Term, s.HardState.Vote, s.HardState.Commit)
		fmt.Fprintf(w, "    snapshot:   index %d term %d\n", s.Snapshot.Index, s.Snapshot.Term)
		cs := s.Snapshot.ConfState
		fmt.Fprintf(w, "    config:     voters %v outgoing %v learners %v learners_next %v auto_leave %t\n",
			cs.Voters, cs.VotersOutgoing, cs.Learners, cs.LearnersNext, cs.AutoLeave)
		fmt.Fprintf(w, "    compacted:  index %d term %d\n", s.CompactIndex, s.CompactTerm)
	}
}

func printLog(w io.Writer, in *wal.Inspection) {
	fmt.Fprintf(w, "log: first %d last %d\n", in.First, in.Last)
	fmt.Fprintf(w, "segments: %d\n", len(in.Segments))
	for _, s := range in.Segments {
		fmt.Fprintf(w, "  %s first %d entries %d size %d\n", s.Path, s.First, s.Entries, s.Size)
	}
	for _, n := range in.Notes {
		fmt.Fprintf(w, "note: %s\n", n)
	}
	if !in.Damaged() {
		fmt.Fprintln(w, "damage: none")
		return
	}
	fmt.Fprintf(w, "damage: %d\n", len(in.Damage)+in.DamageDropped)
	for _, d := range in.Damage {
		fmt.Fprintf(w, "  %s\n", d)
	}
	if in.DamageDropped > 0 {
		fmt.Fprintf(w, "  ... and %d more\n", in.DamageDropped)
	}
}

// quotePrefix quotes the first dataPrefix bytes of data, marking a cut.
func quotePrefix(data []byte) string {
	if len(data) <= dataPrefix {
		return strconv.Quote(string(data))
	}
	return strconv.Quote(string(data[:dataPrefix])) + "..."
}
