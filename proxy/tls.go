package proxy

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"net"
	"sync/atomic"
	"time"
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

// SelfSigned makes an ECDSA P-256 certificate for the given DNS names and IP
// addresses, valid for a year. It is for the demo and tests.
func SelfSigned(hosts ...string) (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	if err != nil {
		return tls.Certificate{}, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "mailgate self-signed"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().AddDate(1, 0, 0),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, err
	}
	leaf, _ := x509.ParseCertificate(der)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, nil
}
