package node

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
)

// MetricsHandler serves the node's metrics in the Prometheus text
// exposition format (version 0.0.4), written by hand: every series carries
// the label node="<id>", per-peer series also peer="<id>".
func (n *Node) MetricsHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
		n.WritePrometheus(w)
	})
}

// WritePrometheus writes the node's metrics in the Prometheus text format.
func (n *Node) WritePrometheus(w io.Writer) error {
	m := n.Metrics()
	p := &promWriter{w: bufio.NewWriter(w), node: strconv.FormatUint(uint64(m.ID), 10)}
	p.gauge("stepraft_term", "Current Raft term.", float64(m.Term))
	for _, role := range []string{"follower", "precandidate", "candidate", "leader"} {
		v := 0.0
		if m.Role == role {
			v = 1
		}
		p.sample("stepraft_role", "Role of this node: 1 for the current one.", "gauge", v, "role", role)
	}
	p.gauge("stepraft_leader", "ID of the leader this node knows; 0 if none.", float64(m.Leader))
	p.gauge("stepraft_commit_index", "Commit index as of the last Ready.", float64(m.Commit))
	p.gauge("stepraft_applied_index", "Index of the last entry the state machine applied.", float64(m.Applied))
	p.gauge("stepraft_last_index", "Index of the last entry in the log.", float64(m.LastIndex))
	p.counter("stepraft_proposals_accepted_total", "Proposals made here and applied.", m.ProposalsAccepted)
	p.counter("stepraft_proposals_dropped_total", "Proposals made here that were certainly not committed.", m.ProposalsDropped)
	p.counter("stepraft_proposals_unknown_total", "Proposals made here whose outcome is unknown.", m.ProposalsUnknown)
	p.counter("stepraft_log_entries_written_total", "Entries appended to the log.", m.EntriesWritten)
	p.counter("stepraft_log_bytes_written_total", "Payload bytes of the entries appended.", m.BytesWritten)
	p.counter("stepraft_log_fsyncs_total", "Log writes that had to be durable.", m.Fsyncs)
	p.histogram("stepraft_log_fsync_seconds", "Duration of durable log writes.", m.FsyncLatency)
	p.gauge("stepraft_log_entries_per_fsync", "Entries appended per durable write, since start.", m.EntriesPerFsync)
	peers := make([]NodeID, 0, len(m.Peers))
	for id := range m.Peers {
		peers = append(peers, id)
	}
	slices.Sort(peers)
	for _, f := range []struct {
		name, help string
		get        func(PeerMetrics) uint64
	}{
		{"stepraft_peer_messages_sent_total", "Messages handed to the transport for a peer.", func(pm PeerMetrics) uint64 { return pm.MessagesSent }},
		{"stepraft_peer_messages_received_total", "Messages received from a peer.", func(pm PeerMetrics) uint64 { return pm.MessagesReceived }},
		{"stepraft_peer_bytes_sent_total", "Entry and context bytes sent to a peer.", func(pm PeerMetrics) uint64 { return pm.BytesSent }},
		{"stepraft_peer_bytes_received_total", "Entry and context bytes received from a peer.", func(pm PeerMetrics) uint64 { return pm.BytesReceived }},
		{"stepraft_peer_unreachable_total", "Reports that messages to a peer were dropped.", func(pm PeerMetrics) uint64 { return pm.Unreachable }},
	} {
		for _, id := range peers {
			p.sample(f.name, f.help, "counter", float64(f.get(m.Peers[id])), "peer", strconv.FormatUint(uint64(id), 10))
		}
	}
	lagging := make([]NodeID, 0, len(m.FollowerMatchLag))
	for id := range m.FollowerMatchLag {
		lagging = append(lagging, id)
	}
	slices.Sort(lagging)
	for _, id := range lagging {
		p.sample("stepraft_follower_match_lag", "On the leader: entries a follower's log is known to lack.", "gauge",
			float64(m.FollowerMatchLag[id]), "peer", strconv.FormatUint(uint64(id), 10))
	}
	p.counter("stepraft_snapshots_taken_total", "Snapshots of this node's state written.", m.SnapshotsTaken)
	p.counter("stepraft_snapshots_sent_total", "Snapshots streamed to followers.", m.SnapshotsSent)
	p.counter("stepraft_snapshots_received_total", "Snapshots from a leader restored.", m.SnapshotsReceived)
	p.counter("stepraft_elections_started_total", "Times this node became a (pre-)candidate.", m.ElectionsStarted)
	p.counter("stepraft_leader_changes_total", "Times the leader this node knows changed.", m.LeaderChanges)
	p.counter("stepraft_messages_dropped_total", "Received messages dropped on a full queue.", m.MessagesDropped)
	p.counter("stepraft_events_dropped_total", "Events a slow reader missed.", m.EventsDropped)
	p.counter("stepraft_reads_served_total", "Linearizable reads answered.", m.ReadsServed)
	p.counter("stepraft_reads_failed_total", "Linearizable reads that failed.", m.ReadsFailed)
	p.histogram("stepraft_apply_seconds", "Duration of applying one batch of committed entries (StateMachine.Apply for each, and answering their proposers).", m.ApplyLatency)
	p.histogram("stepraft_read_seconds", "Duration of linearizable reads.", m.ReadLatency)
	p.gauge("stepraft_uptime_seconds", "Seconds since the node started.", m.UptimeSeconds)
	return p.w.Flush()
}

// promWriter writes metric families; each family's HELP and TYPE come once,
// before its first sample.
type promWriter struct {
	w    *bufio.Writer
	node string
	last string // the family written last
}

func (p *promWriter) header(name, help, typ string) {
	if p.last == name {
		return
	}
	p.last = name
	fmt.Fprintf(p.w, "# HELP %s %s\n# TYPE %s %s\n", name, escapeHelp(help), name, typ)
}

func (p *promWriter) gauge(name, help string, v float64) { p.sample(name, help, "gauge", v) }

func (p *promWriter) counter(name, help string, v uint64) {
	p.sample(name, help, "counter", float64(v))
}

// sample writes one series of family name; labels are name, value pairs.
func (p *promWriter) sample(name, help, typ string, v float64, labels ...string) {
	p.header(name, help, typ)
	p.series(name, v, labels...)
}

func (p *promWriter) series(name string, v float64, labels ...string) {
	p.w.WriteString(name)
	p.w.WriteString(`{node="`)
	p.w.WriteString(escapeLabel(p.node))
	p.w.WriteByte('"')
	for i := 0; i+1 < len(labels); i += 2 {
		fmt.Fprintf(p.w, `,%s="%s"`, labels[i], escapeLabel(labels[i+1]))
	}
	p.w.WriteString("} ")
	p.w.WriteString(formatFloat(v))
	p.w.WriteByte('\n')
}

func (p *promWriter) histogram(name, help string, h Histogram) {
	p.header(name, help, "histogram")
	var cum uint64
	for i, b := range h.Bounds {
		cum += h.Counts[i]
		p.series(name+"_bucket", float64(cum), "le", formatFloat(b))
	}
	p.series(name+"_bucket", float64(h.Count), "le", "+Inf")
	p.series(name+"_sum", h.Sum)
	p.series(name+"_count", float64(h.Count))
}

func formatFloat(v float64) string { return strconv.FormatFloat(v, 'g', -1, 64) }

var (
	helpEscaper  = strings.NewReplacer(`\`, `\\`, "\n", `\n`)
	labelEscaper = strings.NewReplacer(`\`, `\\`, "\n", `\n`, `"`, `\"`)
)

func escapeHelp(s string) string  { return helpEscaper.Replace(s) }
func escapeLabel(s string) string { return labelEscaper.Replace(s) }
