package node_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"math"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stepraft/stepraft/core"
	"github.com/stepraft/stepraft/node"
	"github.com/stepraft/stepraft/node/nodetest"
)

func TestMetricsMoveAsTheClusterWorks(t *testing.T) {
	c := nodetest.NewCluster(t, 3, newKV)
	// The counts are exact only under one leader: an attempt during which
	// the term moved (a busy machine can delay heartbeats past an election
	// timeout) is started again.
	for attempt := 1; ; attempt++ {
		ok := metricsAttempt(t, c)
		if ok {
			return
		}
		if attempt == 5 {
			t.Fatal("the leader changed during each of 5 attempts")
		}
		t.Logf("attempt %d: the leader changed; again", attempt)
	}
}

// metricsAttempt makes 100 sequential proposals and checks the counters;
// it returns false, checking nothing, when the term moved meanwhile.
func metricsAttempt(t *testing.T, c *nodetest.Cluster) bool {
	lead := c.WaitLeader()
	id := lead.Status().ID
	// Every member has the leader's first entry before counting starts.
	c.WaitApplied(put(t, lead, "start", "v"))
	term := lead.Status().Term
	before := map[node.NodeID]node.Metrics{}
	for _, x := range c.IDs() {
		before[x] = c.Node(x).Metrics()
	}
	const n = 100
	var last node.Index
	for i := range n {
		idx, err := tryOnce(lead, fmt.Sprintf("k%d", i))
		if err != nil {
			return false
		}
		last = idx
	}
	c.WaitApplied(last)
	if lead.Status().Term != term {
		return false
	}
	m := lead.Metrics()
	b := before[id]
	if got := m.ProposalsAccepted - b.ProposalsAccepted; got != n {
		t.Errorf("ProposalsAccepted moved by %d, want %d", got, n)
	}
	if got := m.EntriesWritten - b.EntriesWritten; got != n {
		t.Errorf("leader EntriesWritten moved by %d, want %d", got, n)
	}
	// One proposal at a time: each needed its own durable write, and
	// nothing else did (no election, no snapshot in between).
	if got := m.Fsyncs - b.Fsyncs; got != n {
		t.Errorf("leader Fsyncs moved by %d for %d sequential proposals", got, n)
	}
	if m.FsyncLatency.Count != m.Fsyncs {
		t.Errorf("fsync histogram counts %d, Fsyncs %d", m.FsyncLatency.Count, m.Fsyncs)
	}
	if m.Role != "leader" || m.Leader != id || m.Applied < uint64(last) || m.Commit < uint64(last) || m.LastIndex < uint64(last) {
		t.Errorf("leader gauges: %+v", m)
	}
	if got := m.ApplyLatency.Count - b.ApplyLatency.Count; got < n {
		t.Errorf("Apply observed %d times, want at least %d", got, n)
	}
	for _, x := range c.IDs() {
		if x == id {
			continue
		}
		p := m.Peers[x]
		if p.MessagesSent == 0 || p.MessagesReceived == 0 || p.BytesSent < n {
			t.Errorf("leader's counters for peer %d: %+v", x, p)
		}
		fm := c.Node(x).Metrics()
		if got := fm.EntriesWritten - before[x].EntriesWritten; got != n {
			t.Errorf("follower %d EntriesWritten moved by %d, want %d", x, got, n)
		}
	}
	return true
}

// tryOnce proposes key once.
func tryOnce(n *node.Node, key string) (node.Index, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := n.Propose(ctx, nodetest.EncodePut(key, "v"))
	if err != nil {
		return 0, err
	}
	return node.Index(res.(uint64)), nil
}

// promLine is a sample line: name, optional labels, value.
var promLine = regexp.MustCompile(`^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)$`)

// promLabel is one label in a label set.
var promLabel = regexp.MustCompile(`^([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"$`)

// checkExposition checks text against the rules of the Prometheus text
// format (version 0.0.4) and returns the samples by series, or the first
// rule broken.
func checkExposition(text string) (map[string]float64, error) {
	types := map[string]string{}
	helps := map[string]bool{}
	samples := map[string]float64{}
	closed := map[string]bool{} // families already left
	current := ""
	family := func(name string) string {
		for _, suf := range []string{"_bucket", "_sum", "_count"} {
			if base := strings.TrimSuffix(name, suf); base != name && types[base] == "histogram" {
				return base
			}
		}
		return name
	}
	sc := bufio.NewScanner(strings.NewReader(text))
	for ln := 1; sc.Scan(); ln++ {
		line := sc.Text()
		if strings.HasPrefix(line, "# ") {
			f := strings.SplitN(line, " ", 4)
			if len(f) < 4 || (f[1] != "HELP" && f[1] != "TYPE") {
				return nil, fmt.Errorf("line %d: bad comment %q", ln, line)
			}
			name := f[2]
			if closed[name] {
				return nil, fmt.Errorf("line %d: family %s comes back after other families", ln, name)
			}
			switch f[1] {
			case "HELP":
				if helps[name] {
					return nil, fmt.Errorf("line %d: second HELP for %s", ln, name)
				}
				helps[name] = true
			case "TYPE":
				if _, ok := types[name]; ok {
					return nil, fmt.Errorf("line %d: second TYPE for %s", ln, name)
				}
				switch f[3] {
				case "counter", "gauge", "histogram", "summary", "untyped":
				default:
					return nil, fmt.Errorf("line %d: unknown type %q", ln, f[3])
				}
				types[name] = f[3]
			}
			if current != name && current != "" {
				closed[current] = true
			}
			current = name
			continue
		}
		m := promLine.FindStringSubmatch(line)
		if m == nil {
			return nil, fmt.Errorf("line %d: not a sample: %q", ln, line)
		}
		fam := family(m[1])
		if types[fam] == "" {
			return nil, fmt.Errorf("line %d: sample of %s before its TYPE", ln, m[1])
		}
		if fam != current {
			return nil, fmt.Errorf("line %d: sample of %s inside family %s", ln, m[1], current)
		}
		if types[fam] == "counter" && !strings.HasSuffix(m[1], "_total") {
			return nil, fmt.Errorf("line %d: counter %s does not end in _total", ln, m[1])
		}
		if m[2] != "" {
			for _, l := range splitLabels(m[2][1 : len(m[2])-1]) {
				if !promLabel.MatchString(l) {
					return nil, fmt.Errorf("line %d: bad label %q", ln, l)
				}
			}
		}
		v, err := strconv.ParseFloat(m[3], 64)
		if err != nil && m[3] != "+Inf" && m[3] != "-Inf" && m[3] != "NaN" {
			return nil, fmt.Errorf("line %d: bad value %q", ln, m[3])
		}
		key := m[1] + m[2]
		if _, dup := samples[key]; dup {
			return nil, fmt.Errorf("line %d: series %s twice", ln, key)
		}
		samples[key] = v
	}
	// Histograms: cumulative buckets, ending with +Inf equal to _count.
	for name, typ := range types {
		if typ != "histogram" {
			continue
		}
		prev := -1.0
		var inf float64
		for key, v := range samples {
			if strings.HasPrefix(key, name+"_bucket") && strings.Contains(key, `le="+Inf"`) {
				inf = v
			}
		}
		for _, b := range []string{"5e-05", "0.0001", "0.00025", "0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "10"} {
			for key, v := range samples {
				if strings.HasPrefix(key, name+"_bucket") && strings.Contains(key, `le="`+b+`"`) {
					if v < prev {
						return nil, fmt.Errorf("%s: bucket le=%s holds %v, below the one before (%v)", name, b, v, prev)
					}
					prev = v
				}
			}
		}
		for key, v := range samples {
			if strings.HasPrefix(key, name+"_count") && v != inf {
				return nil, fmt.Errorf("%s: _count %v, +Inf bucket %v", name, v, inf)
			}
		}
		if prev > inf {
			return nil, fmt.Errorf("%s: last bucket %v above +Inf %v", name, prev, inf)
		}
	}
	return samples, nil
}

// splitLabels splits a label set at the commas between labels.
func splitLabels(s string) []string {
	var out []string
	start, inQuote := 0, false
	for i := 0; i < len(s); i++ {
		switch {
		case s[i] == '\\':
			i++
		case s[i] == '"':
			inQuote = !inQuote
		case s[i] == ',' && !inQuote:
			out = append(out, s[start:i])
			start = i + 1
		}
	}
	return append(out, s[start:])
}

func TestPrometheusExposition(t *testing.T) {
	c := nodetest.NewCluster(t, 3, newKV)
	lead := c.WaitLeader()
	for i := range 20 {
		put(t, lead, fmt.Sprintf("k%d", i), "v")
	}
	if _, err := lead.Read(context.Background(), []byte("k1")); err != nil {
		t.Fatal(err)
	}
	// The role gauge must show the role Status reports before and after the
	// scrape. A loaded machine may hold an election in between (elections
	// time out after 200 ms); then the scrape proves nothing and is taken
	// again, until a deadline.
	var (
		samples map[string]float64
		role    core.Role
	)
	id := lead.Status().ID
	deadline := time.Now().Add(nodetest.WaitTimeout)
	for {
		before := lead.Status()
		var buf bytes.Buffer
		if err := lead.WritePrometheus(&buf); err != nil {
			t.Fatal(err)
		}
		after := lead.Status()
		var err error
		if samples, err = checkExposition(buf.String()); err != nil {
			t.Fatalf("%v\n%s", err, buf.String())
		}
		if before.Role == after.Role && before.Term == after.Term {
			role = before.Role
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the role kept changing during scrapes until the deadline")
		}
	}
	node := fmt.Sprintf(`{node="%d"}`, id)
	if v := samples["stepraft_proposals_accepted_total"+node]; v != 20 {
		t.Errorf("proposals accepted %v, want 20", v)
	}
	if v := samples["stepraft_reads_served_total"+node]; v != 1 {
		t.Errorf("reads served %v, want 1", v)
	}
	for _, r := range []core.Role{core.RoleFollower, core.RolePreCandidate, core.RoleCandidate, core.RoleLeader} {
		want := 0.0
		if r == role {
			want = 1
		}
		if v := samples[fmt.Sprintf(`stepraft_role{node="%d",role="%s"}`, id, r)]; v != want {
			t.Errorf("role %s %v, want %v (Status says %s)", r, v, want, role)
		}
	}
	if v := samples["stepraft_log_fsyncs_total"+node]; v < 20 || math.IsNaN(v) {
		t.Errorf("fsyncs %v", v)
	}
	// The checker itself refuses what the format forbids.
	for _, bad := range []string{
		"no_type 1\n",
		"# TYPE x gauge\nx{a=\"unterminated} 1\n",
		"# TYPE x gauge\nx 1\nx 2\n",
		"# TYPE x counter\n# TYPE x counter\n",
	} {
		if _, err := checkExposition(bad); err == nil {
			t.Errorf("checker accepted %q", bad)
		}
	}
}

func TestEventsForLeaderKillMemberAddAndSnapshot(t *testing.T) {
	c := nodetest.NewCluster(t, 3, newKV, nodetest.Options{Config: smallSnapshots})
	lead := c.WaitLeader()
	old := lead.Status().ID
	watch := node.NodeID(1)
	if watch == old {
		watch = 2
	}
	w := c.Node(watch)
	seen := make(chan node.Event, 1024)
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		for {
			select {
			case e := <-w.Events():
				seen <- e
			case <-stop:
				return
			}
		}
	}()
	waitEvent := func(what string, ok func(node.Event) bool) node.Event {
		t.Helper()
		deadline := time.After(20 * time.Second)
		for {
			select {
			case e := <-seen:
				if ok(e) {
					return e
				}
			case <-deadline:
				t.Fatalf("no %s event", what)
			}
		}
	}
	for i := range 60 {
		put(t, lead, fmt.Sprintf("k%d", i), "v")
	}
	waitEvent("snapshot-taken", func(e node.Event) bool { return e.Type == node.EventSnapshotTaken && e.Index > 0 })
	c.Stop(old)
	e := waitEvent("leader-changed to a new leader", func(e node.Event) bool {
		return e.Type == node.EventLeaderChanged && e.Leader != 0 && e.Leader != old
	})
	t.Logf("new leader %d at term %d", e.Leader, e.Term)
	c.Restart(old)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	added, err := c.Add(ctx, true)
	if err != nil {
		t.Fatal(err)
	}
	e = waitEvent("membership-changed", func(e node.Event) bool {
		if e.Type != node.EventMembershipChanged {
			return false
		}
		for _, m := range e.Members {
			if m.ID == added && m.Addr != "" {
				return true
			}
		}
		return false
	})
	c.Stop(watch)
	waitEvent("stopped", func(e node.Event) bool { return e.Type == node.EventStopped })
}
