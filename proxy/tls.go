package proxy

import (
	"crypto/tls"
	"errors"
	"sync/atomic"
)

// ServerTLSConfig returns a client-facing TLS configuration serving certs
// by SNI.
func ServerTLSConfig(certs []tls.Certificate) *tls.Config {
	return NewCertStore(certs).TLSConfig()
}

// CertStore holds the certificates served to clients. Set replaces them
// (a reload after a renewal): new handshakes get the new ones, sessions
// already established keep theirs.
type CertStore struct {
	certs atomic.Pointer[[]tls.Certificate]
}

// NewCertStore returns a store serving certs.
func NewCertStore(certs []tls.Certificate) *CertStore {
	s := &CertStore{}
	s.Set(certs)
	return s
}

// Set replaces the certificates; certs must not be changed afterwards.
func (s *CertStore) Set(certs []tls.Certificate) { s.certs.Store(&certs) }

// TLSConfig returns a client-facing configuration that takes its
// certificate from the store at each handshake.
func (s *CertStore) TLSConfig() *tls.Config {
	return &tls.Config{GetCertificate: s.certificate, MinVersion: tls.VersionTLS12}
}

// certificate picks by SNI as crypto/tls does with Config.Certificates: the
// first certificate the ClientHello can use (name, signature algorithms,
// curves), else the first one.
func (s *CertStore) certificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	certs := *s.certs.Load()
	switch len(certs) {
	case 0:
		return nil, errors.New("no certificate configured")
	case 1:
		return &certs[0], nil // nothing to choose: no checks per handshake
	}
	for i := range certs {
		if hello.SupportsCertificate(&certs[i]) == nil {
			return &certs[i], nil
		}
	}
	return &certs[0], nil
}
