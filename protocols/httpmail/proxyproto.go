package httpmail

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/netip"
	"time"

	"github.com/mailgate/mailgate/proxy"
)

// PROXY protocol on the TCP listeners, with the semantics of the stream
// listeners (package proxy): a peer in the trusted networks may (or, with
// RequireProxyHeader, must) open with a v1/v2 header naming the real client;
// a header from anyone else refuses the connection, since believing it would
// let any client choose its address (haproxy proxy-protocol.txt §2). HTTP/3
// has no PROXY protocol: its client is the UDP peer.

// ErrUntrustedProxyHeader: a peer outside the trusted networks sent a header.
var ErrUntrustedProxyHeader = proxy.ErrUntrustedProxyHeader

// ErrMissingProxyHeader: a trusted peer had to send a header and did not.
var ErrMissingProxyHeader = proxy.ErrMissingProxyHeader

var (
	proxySigV1 = []byte("PROXY ")
	proxySigV2 = []byte("\r\n\r\n\x00\r\nQUIT\n")
)

// acceptProxy reads or refuses a PROXY header on a new TCP connection and
// returns the connection to serve (bytes read past the header stay in it)
// and the real client address.
func (s *Server) acceptProxy(c net.Conn) (net.Conn, netip.AddrPort, error) {
	peer := addrPortOf(c.RemoteAddr())
	cr := &countReader{r: c}
	br := bufio.NewReaderSize(cr, 4096)
	conn, client, err := s.readProxy(c, br, peer)
	if err != nil && cr.n == 0 {
		err = &silentPeerError{err}
	}
	return conn, client, err
}

func (s *Server) readProxy(c net.Conn, br *bufio.Reader, peer netip.AddrPort) (net.Conn, netip.AddrPort, error) {
	timeout := s.opts.proxyHeaderTimeout()
	if s.trustedProxy(peer.Addr()) {
		client, err := proxy.ReadProxyHeader(c, br, peer, s.opts.RequireProxyHeader, timeout)
		if err != nil {
			return nil, peer, err
		}
		return &prefixConn{Conn: c, r: br, remote: client}, client, nil
	}
	c.SetReadDeadline(time.Now().Add(timeout))
	defer c.SetReadDeadline(time.Time{})
	// Untrusted: look at as many bytes as it takes to know that they are
	// not a signature (one, for a TLS ClientHello or an HTTP method other
	// than P…).
	for n := 1; n <= len(proxySigV2); n++ {
		b, err := br.Peek(n)
		if len(b) < n {
			if err == nil {
				err = errors.New("short read")
			}
			return nil, peer, err
		}
		if !prefixOf(b, proxySigV1) && !prefixOf(b, proxySigV2) {
			break
		}
		if bytes.Equal(b, proxySigV1) || bytes.Equal(b, proxySigV2) {
			return nil, peer, ErrUntrustedProxyHeader
		}
	}
	return &prefixConn{Conn: c, r: br, remote: peer}, peer, nil
}

// silentPeerError: the connection ended (closed, reset, timed out) before
// its peer sent a single byte: a health check or a port probe.
type silentPeerError struct{ err error }

func (e *silentPeerError) Error() string { return "closed before sending a byte: " + e.err.Error() }
func (e *silentPeerError) Unwrap() error { return e.err }

// countReader counts the bytes a connection delivered.
type countReader struct {
	r io.Reader
	n int64
}

func (c *countReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// prefixOf reports whether b is a prefix of sig.
func prefixOf(b, sig []byte) bool {
	return len(b) <= len(sig) && bytes.Equal(b, sig[:len(b)])
}

func (s *Server) trustedProxy(a netip.Addr) bool {
	return inPrefixes(a, s.opts.TrustedProxies)
}

func (s *Server) trustedForwarder(a netip.Addr) bool {
	return inPrefixes(a, s.opts.TrustedForwarders)
}

// inPrefixes reports whether a (IPv4-mapped or not) is in one of prefixes.
func inPrefixes(a netip.Addr, prefixes []netip.Prefix) bool {
	a = a.Unmap()
	for _, p := range prefixes {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// prefixConn reads what the PROXY check buffered first and reports the real
// client as its remote address.
type prefixConn struct {
	net.Conn
	r      *bufio.Reader
	remote netip.AddrPort
}

func (p *prefixConn) Read(b []byte) (int, error) { return p.r.Read(b) }

func (p *prefixConn) RemoteAddr() net.Addr { return net.TCPAddrFromAddrPort(p.remote) }

func (p *prefixConn) CloseWrite() error {
	if cw, ok := p.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// h1Conn is an HTTP/1.x client connection handed to net/http: the framing
// guard over TLS or plain TCP. ConnectionState makes net/http fill
// Request.TLS; Close releases the connection's pinned backends.
type h1Conn struct {
	*h1Guard
	cc  *clientConn
	tls *tls.Conn // nil on the plain listener
}

func (h *h1Conn) RemoteAddr() net.Addr { return net.TCPAddrFromAddrPort(h.cc.peer) }

func (h *h1Conn) Close() error {
	err := h.h1Guard.Close()
	h.cc.release()
	return err
}

// ConnectionState is for net/http, which sets Request.TLS from it (the
// plain listener uses plainH1Conn, which has no such method).
func (h *h1Conn) ConnectionState() tls.ConnectionState { return h.tls.ConnectionState() }

// plainH1Conn is h1Conn without ConnectionState, for the plain listener.
type plainH1Conn struct {
	*h1Guard
	cc *clientConn
}

func (h *plainH1Conn) RemoteAddr() net.Addr { return net.TCPAddrFromAddrPort(h.cc.peer) }

func (h *plainH1Conn) Close() error {
	err := h.h1Guard.Close()
	h.cc.release()
	return err
}

func addrPortOf(a net.Addr) netip.AddrPort {
	switch v := a.(type) {
	case *net.TCPAddr:
		ap := v.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	case *net.UDPAddr:
		ap := v.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	if a == nil {
		return netip.AddrPort{}
	}
	ap, _ := netip.ParseAddrPort(a.String())
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}
