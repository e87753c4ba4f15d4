package transport

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/stepraft/stepraft/core"
)

// Defaults of Config's zero fields.
const (
	DefaultMaxFrameBytes      = 64 << 20
	DefaultQueueMsgs          = 4096
	DefaultQueueBytes         = 64 << 20
	DefaultDialTimeout        = 2 * time.Second
	DefaultWriteTimeout       = 10 * time.Second
	DefaultMinBackoff         = 50 * time.Millisecond
	DefaultMaxBackoff         = 2 * time.Second
	DefaultKeepAlive          = 15 * time.Second
	DefaultSnapshotChunkBytes = 256 << 10
	DefaultSnapshotTimeout    = 5 * time.Minute
	DefaultMaxSnapshotStreams = 4
)

// Config configures a TCP transport. The zero value of every field but ID
// and Listen means its default.
type Config struct {
	// ID is this node's ID; not zero.
	ID core.NodeID
	// ClusterID is checked in every handshake: nodes of another cluster
	// are refused. 0 means "learn it": the first peer whose handshake is
	// accepted (a leader contacting a node that joins) sets it, and it is
	// checked from then on (ClusterID reports it).
	ClusterID uint64
	// Listen is the address to accept peers on, such as "0.0.0.0:7001" or
	// "127.0.0.1:0". Peers dial the address they were given (AddPeer),
	// which may differ: a proxy or NAT in between.
	Listen string
	// TLS, when set, makes every connection mutual TLS: it must hold this
	// node's certificate and the CAs (RootCAs, ClientCAs, both required)
	// that sign peers' certificates. The transport uses a copy that requires and verifies a
	// client certificate and checks, with PeerID, that the certificate
	// names the node the peer claims to be.
	TLS *tls.Config
	// PeerID returns the node ID a verified peer certificate names. The
	// default reads the Subject's CommonName as a decimal ID.
	PeerID func(cert *x509.Certificate) (core.NodeID, error)
	// Logger receives connection events; nil discards them.
	Logger *slog.Logger

	// MaxFrameBytes is the largest frame accepted (length prefix
	// excluded); default 64 MiB. It must exceed the largest message the
	// node sends: core's MaxMsgBytes plus MaxEntryBytes plus headers.
	MaxFrameBytes int
	// QueueMsgs and QueueBytes bound each peer's send queue (entry and
	// context bytes counted); defaults 4096 messages and 64 MiB. A message
	// that does not fit is dropped and the peer reported unreachable.
	QueueMsgs  int
	QueueBytes int
	// DialTimeout bounds a dial and its handshake; default 2 s.
	DialTimeout time.Duration
	// WriteTimeout bounds one write of queued messages; default 10 s.
	WriteTimeout time.Duration
	// MinBackoff and MaxBackoff bound the wait before redialing a peer
	// after a failure: it doubles from MinBackoff up to MaxBackoff, with
	// jitter; defaults 50 ms and 2 s.
	MinBackoff, MaxBackoff time.Duration
	// KeepAlive is the TCP keep-alive period; default 15 s.
	KeepAlive time.Duration
	// SnapshotChunkBytes is the size of a snapshot body chunk; default
	// 256 KiB. Memory per stream is about twice this.
	SnapshotChunkBytes int
	// SnapshotTimeout bounds sending or receiving one snapshot; default
	// 5 min.
	SnapshotTimeout time.Duration
	// MaxSnapshotStreams bounds the snapshots received at once; default 4.
	MaxSnapshotStreams int
	// Seed seeds the backoff jitter; 0 uses the node ID.
	Seed uint64
}

// Validate reports what is wrong with c. It does not modify c.
func (c *Config) Validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("transport: config: "+format, args...)
	}
	switch {
	case c.ID == 0:
		return bad("ID is zero")
	case c.Listen == "":
		return bad("Listen is empty")
	case c.MaxFrameBytes < 0 || c.QueueMsgs < 0 || c.QueueBytes < 0 || c.SnapshotChunkBytes < 0 || c.MaxSnapshotStreams < 0:
		return bad("negative limit")
	case c.DialTimeout < 0 || c.WriteTimeout < 0 || c.MinBackoff < 0 || c.MaxBackoff < 0 || c.KeepAlive < 0 || c.SnapshotTimeout < 0:
		return bad("negative duration")
	case c.MaxFrameBytes != 0 && c.MaxFrameBytes < 1<<16:
		return bad("MaxFrameBytes %d is below 64 KiB", c.MaxFrameBytes)
	case c.SnapshotChunkBytes != 0 && c.MaxFrameBytes != 0 && c.SnapshotChunkBytes > c.MaxFrameBytes-64:
		return bad("SnapshotChunkBytes %d does not fit MaxFrameBytes %d", c.SnapshotChunkBytes, c.MaxFrameBytes)
	case c.MinBackoff != 0 && c.MaxBackoff != 0 && c.MinBackoff > c.MaxBackoff:
		return bad("MinBackoff %v above MaxBackoff %v", c.MinBackoff, c.MaxBackoff)
	case c.TLS != nil && len(c.TLS.Certificates) == 0 && c.TLS.GetCertificate == nil:
		return bad("TLS has no certificate")
	case c.TLS != nil && (c.TLS.RootCAs == nil || c.TLS.ClientCAs == nil):
		// Without them Go falls back to the system's public CAs: any
		// publicly trusted certificate naming "2" would pass as node 2.
		return bad("TLS needs RootCAs and ClientCAs: the CAs that sign the members' certificates")
	}
	return nil
}

// withDefaults returns a copy of c with defaults in its zero fields.
func (c Config) withDefaults() Config {
	def := func(p *int, v int) {
		if *p == 0 {
			*p = v
		}
	}
	defd := func(p *time.Duration, v time.Duration) {
		if *p == 0 {
			*p = v
		}
	}
	def(&c.MaxFrameBytes, DefaultMaxFrameBytes)
	def(&c.QueueMsgs, DefaultQueueMsgs)
	def(&c.QueueBytes, DefaultQueueBytes)
	def(&c.SnapshotChunkBytes, min(DefaultSnapshotChunkBytes, c.MaxFrameBytes-64))
	def(&c.MaxSnapshotStreams, DefaultMaxSnapshotStreams)
	defd(&c.DialTimeout, DefaultDialTimeout)
	defd(&c.WriteTimeout, DefaultWriteTimeout)
	defd(&c.MinBackoff, DefaultMinBackoff)
	defd(&c.MaxBackoff, max(DefaultMaxBackoff, c.MinBackoff))
	defd(&c.KeepAlive, DefaultKeepAlive)
	defd(&c.SnapshotTimeout, DefaultSnapshotTimeout)
	if c.PeerID == nil {
		c.PeerID = CommonNameID
	}
	if c.Seed == 0 {
		c.Seed = uint64(c.ID)
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// CommonNameID is the default Config.PeerID: the certificate's Subject
// CommonName is the node ID in decimal.
func CommonNameID(cert *x509.Certificate) (core.NodeID, error) {
	id, err := strconv.ParseUint(cert.Subject.CommonName, 10, 64)
	if err != nil || id == 0 {
		return 0, fmt.Errorf("certificate CommonName %q is not a node ID", cert.Subject.CommonName)
	}
	return core.NodeID(id), nil
}
