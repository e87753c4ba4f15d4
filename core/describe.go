package core

import (
	"fmt"
	"strings"
)

// Describing functions give a stable, compact text of core's values, for
// logs and the golden files of the interaction tests. The format may change
// between versions; do not parse it.

// DescribeEntry renders an entry as "term/index Type data".
func DescribeEntry(e Entry) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d/%d", e.Term, e.Index)
	if e.Type != EntryNormal {
		fmt.Fprintf(&b, " %s", e.Type)
	}
	if len(e.Data) > 0 {
		fmt.Fprintf(&b, " %q", e.Data)
	}
	return b.String()
}

// DescribeEntries renders a list of entries.
func DescribeEntries(ents []Entry) string {
	parts := make([]string, len(ents))
	for i, e := range ents {
		parts[i] = DescribeEntry(e)
	}
	return "[" + strings.Join(parts, ", ") + "]"
}

// DescribeMessage renders a message on one line.
func DescribeMessage(m Message) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d->%d %s Term:%d", m.From, m.To, m.Type, m.Term)
	if m.Reject {
		b.WriteString(" Rejected")
		if m.Type == MsgAppResp {
			fmt.Fprintf(&b, " (Hint: %d)", m.RejectHint)
		}
	}
	switch m.Type {
	case MsgApp, MsgAppResp, MsgVote, MsgPreVote:
		fmt.Fprintf(&b, " Log:%d/%d", m.LogTerm, m.Index)
	}
	if m.Commit != 0 || m.Type == MsgApp || m.Type == MsgHeartbeat {
		fmt.Fprintf(&b, " Commit:%d", m.Commit)
	}
	if len(m.Entries) > 0 {
		fmt.Fprintf(&b, " Entries:%s", DescribeEntries(m.Entries))
	}
	if m.Snapshot != nil {
		fmt.Fprintf(&b, " Snapshot:%s", DescribeSnapshotMeta(m.Snapshot.Meta))
	}
	if len(m.Context) > 0 {
		fmt.Fprintf(&b, " Context:%q", m.Context)
	}
	return b.String()
}

// DescribeSnapshotMeta renders a snapshot's metadata.
func DescribeSnapshotMeta(m SnapshotMeta) string {
	return fmt.Sprintf("Index:%d Term:%d %s", m.Index, m.Term, DescribeConfState(m.ConfState))
}

// DescribeConfState renders a configuration.
func DescribeConfState(cs ConfState) string {
	s := fmt.Sprintf("Voters:%v", cs.Voters)
	if len(cs.VotersOutgoing) > 0 {
		s += fmt.Sprintf("&&%v", cs.VotersOutgoing)
	}
	if len(cs.Learners) > 0 {
		s += fmt.Sprintf(" Learners:%v", cs.Learners)
	}
	if len(cs.LearnersNext) > 0 {
		s += fmt.Sprintf(" LearnersNext:%v", cs.LearnersNext)
	}
	if cs.AutoLeave {
		s += " AutoLeave"
	}
	return s
}

// DescribeHardState renders a HardState.
func DescribeHardState(hs HardState) string {
	return fmt.Sprintf("Term:%d Vote:%d Commit:%d", hs.Term, hs.Vote, hs.Commit)
}

// DescribeReady renders a Ready over several lines; an empty Ready is "".
func DescribeReady(rd Ready) string {
	var b strings.Builder
	if rd.SoftState != nil {
		fmt.Fprintf(&b, "Lead:%d Role:%s\n", rd.SoftState.Lead, rd.SoftState.Role)
	}
	if !rd.HardState.IsEmpty() {
		fmt.Fprintf(&b, "HardState %s\n", DescribeHardState(rd.HardState))
	}
	if !rd.Snapshot.IsEmpty() {
		fmt.Fprintf(&b, "Snapshot %s\n", DescribeSnapshotMeta(rd.Snapshot.Meta))
	}
	if len(rd.Entries) > 0 {
		b.WriteString("Entries:\n")
		for _, e := range rd.Entries {
			fmt.Fprintf(&b, "  %s\n", DescribeEntry(e))
		}
	}
	if len(rd.CommittedEntries) > 0 {
		b.WriteString("CommittedEntries:\n")
		for _, e := range rd.CommittedEntries {
			fmt.Fprintf(&b, "  %s\n", DescribeEntry(e))
		}
	}
	if len(rd.Messages) > 0 {
		b.WriteString("Messages:\n")
		for _, m := range rd.Messages {
			fmt.Fprintf(&b, "  %s\n", DescribeMessage(m))
		}
	}
	for _, rs := range rd.ReadStates {
		if rs.Dropped {
			fmt.Fprintf(&b, "ReadState Ctx:%q dropped\n", rs.RequestCtx)
			continue
		}
		fmt.Fprintf(&b, "ReadState Index:%d Ctx:%q\n", rs.Index, rs.RequestCtx)
	}
	if len(rd.DroppedProposals) > 0 {
		b.WriteString("DroppedProposals:\n")
		for _, e := range rd.DroppedProposals {
			fmt.Fprintf(&b, "  %s\n", DescribeEntry(e))
		}
	}
	if rd.MustSync {
		b.WriteString("MustSync\n")
	}
	return b.String()
}
