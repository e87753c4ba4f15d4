package transport

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"

	"github.com/stepraft/stepraft/core"
)

// Mutual TLS binds a connection to a node ID: the listener requires a
// client certificate signed by one of its ClientCAs and checks, after the
// hello, that the certificate names the node the hello claims to come
// from; the dialer checks the listener's certificate against its RootCAs
// and that it names the node it meant to dial. Host names are not checked:
// peers are known by node ID, and their addresses may be proxies.

// errNoPeerCert is returned when a TLS peer sent no certificate.
var errNoPeerCert = errors.New("no peer certificate")

// serverConfig is the listener's TLS configuration.
func (t *TCP) serverConfig() *tls.Config {
	c := t.cfg.TLS.Clone()
	c.ClientAuth = tls.RequireAndVerifyClientCert
	if c.MinVersion < tls.VersionTLS12 {
		c.MinVersion = tls.VersionTLS12
	}
	return c
}

// clientConfig is the dialer's TLS configuration for a connection to id.
func (t *TCP) clientConfig(id core.NodeID) *tls.Config {
	c := t.cfg.TLS.Clone()
	if c.MinVersion < tls.VersionTLS12 {
		c.MinVersion = tls.VersionTLS12
	}
	// The chain is verified below, without a host name.
	c.InsecureSkipVerify = true
	c.VerifyConnection = func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) == 0 {
			return errNoPeerCert
		}
		opts := x509.VerifyOptions{
			Roots:         t.cfg.TLS.RootCAs,
			Intermediates: x509.NewCertPool(),
			KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		}
		for _, cert := range cs.PeerCertificates[1:] {
			opts.Intermediates.AddCert(cert)
		}
		if _, err := cs.PeerCertificates[0].Verify(opts); err != nil {
			return err
		}
		got, err := t.cfg.PeerID(cs.PeerCertificates[0])
		if err != nil {
			return err
		}
		if got != id {
			return fmt.Errorf("certificate of node %d where %d was dialed", got, id)
		}
		return nil
	}
	return c
}

// certID is the node ID that a verified client certificate names.
func (t *TCP) certID(cs tls.ConnectionState) (core.NodeID, error) {
	if len(cs.PeerCertificates) == 0 {
		return 0, errNoPeerCert
	}
	return t.cfg.PeerID(cs.PeerCertificates[0])
}
