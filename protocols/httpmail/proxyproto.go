package httpmail

import (
	"bufio"
	"crypto/tls"
	"io"
	"net"
	"net/netip"

	"github.com/mailgate/mailgate/internal/netx"
)

// PROXY protocol on the TCP listeners, through the front door the stream
// listeners use too (internal/netx): a peer in the trusted networks may (or, with
// RequireProxyHeader, must) open with a v1/v2 header naming the real client;
// a header from anyone else refuses the connection, since believing it would
// let any client choose its address (haproxy proxy-protocol.txt §2). HTTP/3
// has no PROXY protocol: its client is the UDP peer.

// ErrUntrustedProxyHeader: a peer outside the trusted networks sent a header.
var ErrUntrustedProxyHeader = netx.ErrUntrustedProxyHeader

// ErrMissingProxyHeader: a trusted peer had to send a header and did not.
var ErrMissingProxyHeader = netx.ErrMissingProxyHeader

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
	client := peer
	var err error
	if s.trustedProxy(peer.Addr()) {
		client, err = netx.ReadProxyHeader(c, br, peer, s.opts.RequireProxyHeader, timeout)
	} else {
		// HTTP clients speak first: their first bytes are judged before
		// the connection goes to net/http.
		err = netx.CheckUntrusted(c, br, timeout)
	}
	if err != nil {
		return nil, peer, err
	}
	return &netx.PrefixConn{Conn: c, R: br, Remote: client}, client, nil
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

func (s *Server) trustedProxy(a netip.Addr) bool {
	return netx.Contains(s.opts.TrustedProxies, a)
}

func (s *Server) trustedForwarder(a netip.Addr) bool {
	return netx.Contains(s.opts.TrustedForwarders, a)
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
