package transport

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"math/big"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/stepraft/stepraft/core"
)

// testCA is a certificate authority made up for the tests: nothing is
// written to disk and every certificate expires within the hour.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool
}

func newTestCA(name string) (*testCA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: name, Organization: []string{"stepraft transport tests"}},
		NotBefore:             now.Add(-5 * time.Minute), // tolerate clock skew
		NotAfter:              now.Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &testCA{cert: cert, key: key, pool: pool}, nil
}

// issue signs a node certificate for node id: its CommonName is the ID in
// decimal (what CommonNameID reads), it serves both ends of a connection,
// and it names 127.0.0.1 so that a plain tls.Dial can verify it too.
func (ca *testCA) issue(id core.NodeID) (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: strconv.FormatUint(uint64(id), 10)},
		NotBefore:    now.Add(-5 * time.Minute),
		NotAfter:     now.Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		return tls.Certificate{}, err
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, nil
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		panic(err)
	}
	return n
}

// testPKI is the cluster's CA with certificates for nodes 1, 2 and 3, and
// an unrelated CA with a certificate for node 1.
type testPKI struct {
	ca, otherCA *testCA
	node        map[core.NodeID]tls.Certificate
	otherNode1  tls.Certificate
}

var pkiOnce = sync.OnceValues(func() (*testPKI, error) {
	ca, err := newTestCA("stepraft test CA")
	if err != nil {
		return nil, err
	}
	other, err := newTestCA("unrelated test CA")
	if err != nil {
		return nil, err
	}
	p := &testPKI{ca: ca, otherCA: other, node: map[core.NodeID]tls.Certificate{}}
	for id := core.NodeID(1); id <= 3; id++ {
		if p.node[id], err = ca.issue(id); err != nil {
			return nil, err
		}
	}
	if p.otherNode1, err = other.issue(1); err != nil {
		return nil, err
	}
	return p, nil
})

func getPKI(t *testing.T) *testPKI {
	t.Helper()
	p, err := pkiOnce()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// tlsConfig is a node's TLS configuration: its certificate, and the CA
// that signs its peers' certificates on both sides of a connection.
func tlsConfig(cert tls.Certificate, ca *testCA) *tls.Config {
	return &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: ca.pool, ClientCAs: ca.pool}
}

// tlsNode starts a transport for id whose TLS configuration is cfg.
func tlsNode(t *testing.T, id core.NodeID, cfg *tls.Config) *node {
	t.Helper()
	return newNode(t, id, func(c *Config) { c.TLS = cfg })
}

// goodTLSNode starts node id with its own certificate from the cluster CA.
func goodTLSNode(t *testing.T, id core.NodeID) *node {
	t.Helper()
	p := getPKI(t)
	return tlsNode(t, id, tlsConfig(p.node[id], p.ca))
}

// waitUnreachable sends one message from a to peer to and waits until a
// reports the peer unreachable: the message's batch failed, so nothing
// from a to the peer is in flight when it returns.
func waitUnreachable(t *testing.T, a *node, to core.NodeID) {
	t.Helper()
	a.tr.Send([]core.Message{app(a.id, to, 1, 1, 10)})
	a.rec.waitFor(t, "an unreachable report", func() bool { return a.rec.unreachable[to] > 0 })
}

// noDelivery checks that n was handed nothing.
func noDelivery(t *testing.T, n *node) {
	t.Helper()
	n.rec.mu.Lock()
	defer n.rec.mu.Unlock()
	if len(n.rec.msgs) != 0 || len(n.rec.received) != 0 {
		t.Fatalf("node %d was handed %d messages and %d snapshots", n.id, len(n.rec.msgs), len(n.rec.received))
	}
}

// goodTLSPeer checks that the TLS node b still serves a well-behaved peer.
func goodTLSPeer(t *testing.T, b *node, from core.NodeID) {
	t.Helper()
	a := goodTLSNode(t, from)
	connect(a, b)
	b.rec.mu.Lock()
	before := len(b.rec.msgs)
	b.rec.mu.Unlock()
	a.tr.Send([]core.Message{app(from, b.id, 1, 1, 10)})
	b.rec.waitFor(t, "a message from a good TLS peer", func() bool { return len(b.rec.msgs) > before })
}

// isRemoteAlert reports whether err is a TLS alert sent by the other end:
// the listener, not the dialer, refused the connection.
func isRemoteAlert(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "remote error"
}

// rawTLSDial runs the dialer's side of a TLS connection to n by hand, with
// the hello given, and returns the handshake reply or the error that ended
// the exchange.
func rawTLSDial(t *testing.T, n *node, cfg *tls.Config, h hello) (reply, error) {
	t.Helper()
	d := net.Dialer{Timeout: 10 * time.Second}
	conn, err := tls.DialWithDialer(&d, "tcp", n.tr.Addr().String(), cfg)
	if err != nil {
		return reply{}, err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := conn.Write(appendHello(nil, &h)); err != nil {
		return reply{}, err
	}
	body, err := readHandshake(conn)
	if err != nil {
		return reply{}, err
	}
	return decodeReply(body)
}

func TestTLSDeliversAndStreamsSnapshots(t *testing.T) {
	a, b := goodTLSNode(t, 1), goodTLSNode(t, 2)
	connect(a, b)
	const n = 200
	for i := range n {
		a.tr.Send([]core.Message{app(1, 2, core.Index(i), i%3, 100)})
		b.tr.Send([]core.Message{{Type: core.MsgHeartbeatResp, From: 2, To: 1, Term: 3, Index: core.Index(i)}})
	}
	b.rec.waitFor(t, "all appends", func() bool { return len(b.rec.msgs) == n })
	a.rec.waitFor(t, "all heartbeat responses", func() bool { return len(a.rec.msgs) == n })
	for i, m := range b.rec.msgs {
		want := app(1, 2, core.Index(i), i%3, 100)
		if m.Type != core.MsgApp || m.Index != want.Index || m.From != 1 || m.To != 2 || len(m.Entries) != len(want.Entries) {
			t.Fatalf("message %d: got %+v", i, m)
		}
		for j := range m.Entries {
			if !bytes.Equal(m.Entries[j].Data, want.Entries[j].Data) {
				t.Fatalf("message %d entry %d differs", i, j)
			}
		}
	}
	for i, m := range a.rec.msgs {
		if m.Type != core.MsgHeartbeatResp || m.Index != core.Index(i) || m.From != 2 || m.To != 1 {
			t.Fatalf("response %d: got %+v", i, m)
		}
	}

	body := bytes.Repeat([]byte("tls snapshot body "), 40000)
	a.rec.mu.Lock()
	a.rec.snaps[10] = func() (io.ReadCloser, int64, error) {
		return io.NopCloser(bytes.NewReader(body)), int64(len(body)), nil
	}
	a.rec.mu.Unlock()
	a.tr.Send([]core.Message{snapMsg(1, 2, 10)})
	a.rec.waitFor(t, "snapshot done", func() bool { return len(a.rec.snapDone) == 1 })
	if err := a.rec.snapDone[0].err; err != nil {
		t.Fatal(err)
	}
	b.rec.waitFor(t, "the snapshot delivered", func() bool { return len(b.rec.msgs) == n+1 })
	b.rec.mu.Lock()
	got, last := b.rec.received[10], b.rec.msgs[n]
	b.rec.mu.Unlock()
	if !bytes.Equal(got, body) {
		t.Fatalf("received %d bytes, sent %d", len(got), len(body))
	}
	if last.Type != core.MsgSnap || last.Snapshot == nil || last.Snapshot.Meta.Index != 10 {
		t.Fatalf("delivered %+v", last)
	}
	for _, x := range []*node{a, b} {
		x.rec.mu.Lock()
		u := len(x.rec.unreachable)
		x.rec.mu.Unlock()
		if u != 0 {
			t.Fatalf("node %d reported peers unreachable: %v", x.id, x.rec.unreachable)
		}
	}
}

func TestTLSRefusesCertificateOfAnotherCA(t *testing.T) {
	p := getPKI(t)
	b := goodTLSNode(t, 2)
	// The impostor trusts the cluster CA, so it accepts the listener's
	// certificate: any refusal comes from the listener. It sends its
	// certificate whatever CAs the listener asks for (a TLS client sends
	// none when its only one is not signed by any of them).
	bad := tlsConfig(p.otherNode1, p.ca)
	bad.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
		return &p.otherNode1, nil
	}
	a := tlsNode(t, 1, bad)
	connect(a, b)
	waitUnreachable(t, a, 2)
	noDelivery(t, b)

	// The same by hand: the listener ends the handshake with an alert.
	r, err := rawTLSDial(t, b, bad.Clone(), hello{Cluster: testCluster, From: 1, To: 2, MinVersion: 1, MaxVersion: 1, Kind: kindMessages})
	if err == nil {
		t.Fatalf("certificate of another CA accepted: reply %+v", r)
	}
	if !isRemoteAlert(err) {
		t.Fatalf("want a TLS alert from the listener, got %v", err)
	}
	noDelivery(t, b)
	goodTLSPeer(t, b, 3)
}

func TestTLSRefusesDialerWithoutCertificate(t *testing.T) {
	p := getPKI(t)
	b := goodTLSNode(t, 2)
	b.tr.AddPeer(1, "127.0.0.1:1")
	// The dialer trusts the listener (and checks that its certificate
	// names 127.0.0.1) but has no certificate of its own.
	cfg := &tls.Config{RootCAs: p.ca.pool}
	r, err := rawTLSDial(t, b, cfg, hello{Cluster: testCluster, From: 1, To: 2, MinVersion: 1, MaxVersion: 1, Kind: kindMessages})
	if err == nil {
		t.Fatalf("dialer without a certificate accepted: reply %+v", r)
	}
	if !isRemoteAlert(err) {
		t.Fatalf("want a TLS alert from the listener, got %v", err)
	}
	noDelivery(t, b)
	goodTLSPeer(t, b, 3)
}

func TestTLSRefusesCertificateOfAnotherNode(t *testing.T) {
	p := getPKI(t)
	b := goodTLSNode(t, 1)
	// Node 3's valid certificate, used by a transport that says it is 2.
	stolen := tlsConfig(p.node[3], p.ca)
	a := tlsNode(t, 2, stolen)
	connect(a, b)
	b.tr.AddPeer(3, "127.0.0.1:1") // 3 is a member too: only the claim is wrong
	waitUnreachable(t, a, 1)
	noDelivery(t, b)

	// The dialer's own check of the listener passes (b holds node 1's
	// certificate): it is the listener that refuses.
	if _, _, err := a.tr.dial(context.Background(), 1, kindMessages); !errors.Is(err, ErrRefused) {
		t.Fatalf("dial with a certificate of node 3 claiming node 2: %v, want ErrRefused", err)
	}
	r, err := rawTLSDial(t, b, stolen.Clone(), hello{Cluster: testCluster, From: 2, To: 1, MinVersion: 1, MaxVersion: 1, Kind: kindMessages})
	if err != nil {
		t.Fatal(err)
	}
	if r.Status != statusBadIdentity || r.From != 1 {
		t.Fatalf("reply %+v, want status %v from 1", r, statusBadIdentity)
	}
	// And a snapshot connection is refused the same way.
	r, err = rawTLSDial(t, b, stolen.Clone(), hello{Cluster: testCluster, From: 2, To: 1, MinVersion: 1, MaxVersion: 1, Kind: kindSnapshot})
	if err != nil || r.Status != statusBadIdentity {
		t.Fatalf("snapshot connection: reply %+v, err %v; want status %v", r, err, statusBadIdentity)
	}
	noDelivery(t, b)
	goodTLSPeer(t, b, 2) // the real node 2 is served
}

func TestTLSDialerChecksListenerIdentity(t *testing.T) {
	p := getPKI(t)
	for _, tc := range []struct {
		name string
		cert tls.Certificate // held by the listener, node 2
	}{
		{"certificate of another node", p.node[3]},
		{"certificate of another CA", func() tls.Certificate {
			c, err := p.otherCA.issue(2)
			if err != nil {
				t.Fatal(err)
			}
			return c
		}()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// The listener trusts the cluster CA, so it would accept the
			// dialer: any refusal comes from the dialer.
			b := tlsNode(t, 2, tlsConfig(tc.cert, p.ca))
			a := goodTLSNode(t, 1)
			connect(a, b)
			waitUnreachable(t, a, 2)
			noDelivery(t, b)

			_, _, err := a.tr.dial(context.Background(), 2, kindMessages)
			if err == nil {
				t.Fatal("dialer accepted the listener's certificate")
			}
			// The dialer refused during TLS; the listener never answered
			// a hello.
			if errors.Is(err, ErrRefused) || isRemoteAlert(err) {
				t.Fatalf("want the dialer's own refusal, got %v", err)
			}
			t.Logf("dialer refused: %v", err)
			noDelivery(t, b)
		})
	}
}

func TestTLSAndPlaintextDoNotMix(t *testing.T) {
	t.Run("plaintext dialer, TLS listener", func(t *testing.T) {
		a, b := newNode(t, 1, nil), goodTLSNode(t, 2)
		connect(a, b)
		waitUnreachable(t, a, 2)
		noDelivery(t, b)
		if _, _, err := a.tr.dial(context.Background(), 2, kindMessages); err == nil {
			t.Fatal("plaintext dial of a TLS listener succeeded")
		}
		goodTLSPeer(t, b, 3)
	})
	t.Run("TLS dialer, plaintext listener", func(t *testing.T) {
		a, b := goodTLSNode(t, 1), newNode(t, 2, nil)
		connect(a, b)
		waitUnreachable(t, a, 2)
		noDelivery(t, b)
		if _, _, err := a.tr.dial(context.Background(), 2, kindMessages); err == nil {
			t.Fatal("TLS dial of a plaintext listener succeeded")
		}
		goodPeer(t, b, 3)
	})
}
