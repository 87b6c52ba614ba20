package netx

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"net/netip"
	"time"

	proxyproto "github.com/pires/go-proxyproto"
)

// ErrUntrustedProxyHeader is returned when a peer outside the trusted
// networks sends a PROXY header: the connection is refused, since believing
// it would let any client choose its address (haproxy proxy-protocol.txt §2).
var ErrUntrustedProxyHeader = errors.New("PROXY header from an untrusted peer")

// ErrMissingProxyHeader is returned when a trusted peer must send a PROXY
// header and none arrived before the timeout.
var ErrMissingProxyHeader = errors.New("no PROXY header from a trusted peer")

var (
	sigV1 = []byte("PROXY ")
	sigV2 = []byte("\r\n\r\n\x00\r\nQUIT\n")
)

// DefaultProxyHeaderTimeout is how long a listener waits for a PROXY
// header, or for the first bytes of an untrusted HTTP peer, by default.
const DefaultProxyHeaderTimeout = 5 * time.Second

// maxSig is the longest signature: the bytes it takes to decide.
const maxSig = 12

// ReadProxyHeader reads a PROXY v1/v2 header from a trusted peer through br,
// waiting at most timeout for it. It returns the client address the header
// names, or peer when the header is absent (and not required) or LOCAL; a
// required header that does not arrive is ErrMissingProxyHeader. Bytes after
// the header stay in br.
func ReadProxyHeader(c net.Conn, br *bufio.Reader, peer netip.AddrPort, require bool, timeout time.Duration) (netip.AddrPort, error) {
	c.SetReadDeadline(time.Now().Add(timeout))
	defer c.SetReadDeadline(time.Time{})
	h, err := proxyproto.Read(br)
	if err != nil {
		var ne net.Error
		noHeader := errors.Is(err, proxyproto.ErrNoProxyProtocol) || (errors.As(err, &ne) && ne.Timeout())
		if noHeader && !require {
			return peer, nil
		}
		if noHeader {
			return peer, ErrMissingProxyHeader
		}
		return peer, err
	}
	if h.Command.IsLocal() {
		return peer, nil
	}
	src, ok := h.SourceAddr.(*net.TCPAddr)
	if !ok {
		return peer, nil // UNKNOWN / UNSPEC transport: keep the socket address
	}
	return src.AddrPort(), nil
}

// signature judges the first bytes of a connection: header means they are
// a whole v1 or v2 signature, undecided that they are a proper prefix of one
// (more bytes are needed). A prefix never counts as a header: a client whose
// first read is "P" is not refused for it.
func signature(b []byte) (header, undecided bool) {
	for _, sig := range [][]byte{sigV1, sigV2} {
		n := min(len(b), len(sig))
		if n == 0 || !bytes.Equal(b[:n], sig[:n]) {
			continue
		}
		if n == len(sig) {
			return true, false
		}
		undecided = true
	}
	return false, undecided
}

// CheckUntrusted peeks at the first bytes of an untrusted peer's connection
// through br, as many as it takes to tell them from a PROXY signature (one
// for a TLS ClientHello or most HTTP methods), and refuses a signature with
// ErrUntrustedProxyHeader. It is for protocols where the client speaks
// first (HTTP); it waits at most timeout. The bytes stay in br.
func CheckUntrusted(c net.Conn, br *bufio.Reader, timeout time.Duration) error {
	c.SetReadDeadline(time.Now().Add(timeout))
	defer c.SetReadDeadline(time.Time{})
	for n := 1; n <= maxSig; n++ {
		b, err := br.Peek(n)
		if len(b) < n {
			if err == nil {
				err = io.ErrUnexpectedEOF
			}
			return err
		}
		header, undecided := signature(b)
		if header {
			return ErrUntrustedProxyHeader
		}
		if !undecided {
			return nil
		}
	}
	return nil
}

// GuardConn refuses a PROXY header from an untrusted peer on a connection
// where the server speaks first (IMAP, POP3, SMTP, XMPP): nothing is read
// before the handler reads, and its first reads are judged as they come,
// held back while they are still a prefix of a signature. A signature fails
// the read with ErrUntrustedProxyHeader. Once decided it is a transparent
// wrapper: Passed reports when the conn under it may be used directly (the
// relay splices between raw sockets).
type GuardConn struct {
	net.Conn
	decided bool
	held    []byte // a prefix of a signature, not yet handed out
}

// Passed reports whether the check is over and nothing is held back.
func (g *GuardConn) Passed() bool { return g.decided && len(g.held) == 0 }

func (g *GuardConn) Read(p []byte) (int, error) {
	if g.decided {
		if len(g.held) > 0 {
			n := copy(p, g.held)
			g.held = g.held[n:]
			return n, nil
		}
		return g.Conn.Read(p)
	}
	if len(g.held) == 0 && len(p) >= maxSig {
		// The common case: the first read is judged where it lands, in the
		// caller's buffer, and passes through without a copy.
		n, err := g.Conn.Read(p)
		header, undecided := signature(p[:n])
		switch {
		case header:
			return 0, ErrUntrustedProxyHeader
		case !undecided || err != nil:
			g.decided = true
			return n, err
		}
		g.held = append(g.held, p[:n]...)
	}
	var buf [maxSig]byte
	for {
		n, err := g.Conn.Read(buf[:maxSig-len(g.held)])
		g.held = append(g.held, buf[:n]...)
		header, undecided := signature(g.held)
		switch {
		case header:
			g.held = nil
			return 0, ErrUntrustedProxyHeader
		case !undecided || err != nil:
			g.decided = true
			if len(g.held) > 0 {
				m := copy(p, g.held)
				g.held = g.held[m:]
				return m, nil
			}
			return 0, err
		}
	}
}

// WriteProxyV2 sends a PROXY v2 header naming the client and the address it
// connected to.
func WriteProxyV2(w net.Conn, client, local netip.AddrPort) error {
	h := proxyproto.HeaderProxyFromAddrs(2, net.TCPAddrFromAddrPort(client), net.TCPAddrFromAddrPort(local))
	_, err := h.WriteTo(w)
	return err
}

// PrefixConn reads first from R, a reader over Conn that already holds
// bytes read past a PROXY header; RemoteAddr is Remote when valid (the
// client the header named).
type PrefixConn struct {
	net.Conn
	R      *bufio.Reader
	Remote netip.AddrPort
}

func (p *PrefixConn) Read(b []byte) (int, error) { return p.R.Read(b) }

// RemoteAddr is the client's address: the one a PROXY header named, or the
// socket's.
func (p *PrefixConn) RemoteAddr() net.Addr {
	if p.Remote.IsValid() {
		return net.TCPAddrFromAddrPort(p.Remote)
	}
	return p.Conn.RemoteAddr()
}

// Drained reports whether nothing is left in R: the conn under it may be
// used directly.
func (p *PrefixConn) Drained() bool { return p.R.Buffered() == 0 }

// CloseWrite half-closes the conn under it when that can (a TCP socket).
func (p *PrefixConn) CloseWrite() error {
	if cw, ok := p.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// Contains reports whether a, IPv4-mapped or not, is in one of nets (the
// trusted PROXY peers, the trusted forwarders).
func Contains(nets []netip.Prefix, a netip.Addr) bool {
	a = a.Unmap()
	for _, p := range nets {
		if p.Contains(a) {
			return true
		}
	}
	return false
}
