package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"

	"github.com/stepraft/stepraft/node"
)

// backupCmd fetches a backup from a running member.
func backupCmd(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("backup", flag.ContinueOnError)
	addr := fs.String("http", "", "HTTP address of a running member")
	out := fs.String("out", "", "file to write the backup to")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *addr == "" || *out == "" {
		return errors.New("backup needs -http and -out")
	}
	client := http.Client{Timeout: 30 * time.Minute}
	resp, err := client.Get("http://" + *addr + "/backup")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return fmt.Errorf("backup: %s: %s", resp.Status, msg)
	}
	tmp := *out + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return err
	}
	n, err := io.Copy(f, resp.Body)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, *out)
	}
	if err != nil {
		os.Remove(tmp)
		return err
	}
	fmt.Fprintf(stdout, "backup of %d bytes written to %s\n", n, *out)
	return nil
}

// restoreCmd makes a data directory from a backup: a new one-member
// cluster.
func restoreCmd(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("restore", flag.ContinueOnError)
	in := fs.String("in", "", "backup file")
	data := fs.String("data", "", "new data directory (empty or absent)")
	id := fs.Uint64("id", 0, "ID of the member to create")
	raft := fs.String("raft", "", "its raft address")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *in == "" || *data == "" || *id == 0 || *raft == "" {
		return errors.New("restore needs -in, -data, -id and -raft")
	}
	f, err := os.Open(*in)
	if err != nil {
		return err
	}
	defer f.Close()
	info, err := node.RestoreBackup(*data, node.NodeID(*id), *raft, bufio.NewReader(f))
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "restored the state at index %d (term %d) into %s: start it with -id %d -cluster %d=%s\n",
		info.Index, info.Term, *data, *id, *id, *raft)
	return nil
}

// recoverCmd rewrites a stopped member's configuration after the cluster
// lost its quorum.
func recoverCmd(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("recover", flag.ContinueOnError)
	data := fs.String("data", "", "data directory of the stopped member")
	id := fs.Uint64("id", 0, "its ID (default: the one stored in its data)")
	members := fs.String("members", "", "the new members: ID=HOST:PORT,... (raft addresses, this one's included)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	ms, err := parseMembers(*members)
	if err != nil {
		return fmt.Errorf("-members: %w", err)
	}
	if *data == "" {
		return errors.New("recover needs -data and -members")
	}
	rep, err := node.Recover(node.RecoverConfig{DataDir: *data, ID: node.NodeID(*id), StateMachine: newStore(), Members: ms})
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "recovered member %d: state of index %d (snapshot %d + log), now at index %d term %d\n",
		rep.ID, rep.LastIndex, rep.SnapshotIndex, rep.Index, rep.Term)
	if rep.LastIndex > rep.Commit {
		fmt.Fprintf(stdout, "entries %d..%d were in the log but not known committed; they are committed now\n", rep.Commit+1, rep.LastIndex)
	}
	fmt.Fprintf(stdout, "start it with -data %s, and the new members with -join (cluster ID %d)\n", *data, rep.ClusterID)
	return nil
}
