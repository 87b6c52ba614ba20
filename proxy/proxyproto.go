package proxy

import (
	"bufio"
	"bytes"
	"errors"
	"net"
	"net/netip"
	"time"

	proxyproto "github.com/pires/go-proxyproto"
)

// ErrUntrustedProxyHeader is returned when a peer outside the trusted
// networks sends a PROXY header: the connection is refused.
var ErrUntrustedProxyHeader = errors.New("PROXY header from an untrusted peer")

// ErrMissingProxyHeader is returned when a trusted peer must send a PROXY
// header and none arrived before the timeout.
var ErrMissingProxyHeader = errors.New("no PROXY header from a trusted peer")

var (
	sigV1 = []byte("PROXY ")
	sigV2 = []byte("\r\n\r\n\x00\r\nQUIT\n")
)

// ReadProxyHeader reads a PROXY v1/v2 header from a trusted peer through br,
// waiting at most timeout for it. It returns the client address the header
// names, or peer when the header is absent (and not required) or LOCAL; a
// required header that does not arrive is ErrMissingProxyHeader. Bytes after
// the header stay in br. The stream listeners here and the HTTP listeners
// (package httpmail) share it.
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

// guardConn refuses a PROXY header from an untrusted peer: the first bytes
// the client sends must not look like a v1 or v2 signature. After the check
// it is a transparent wrapper (relay unwraps it to splice).
type guardConn struct {
	net.Conn
	checked bool
}

func (g *guardConn) Read(p []byte) (int, error) {
	n, err := g.Conn.Read(p)
	if !g.checked && n > 0 {
		g.checked = true
		if looksLikeProxyHeader(p[:n]) {
			return 0, ErrUntrustedProxyHeader
		}
	}
	return n, err
}

// looksLikeProxyHeader reports whether b starts like a PROXY v1 or v2 header.
// A short read is compared with the signature's prefix of the same length.
func looksLikeProxyHeader(b []byte) bool {
	for _, sig := range [][]byte{sigV1, sigV2} {
		n := min(len(b), len(sig))
		if n > 0 && bytes.Equal(b[:n], sig[:n]) {
			return true
		}
	}
	return false
}

// writeProxyV2 sends a PROXY v2 header naming the client and the address it
// connected to.
func writeProxyV2(w net.Conn, client, local netip.AddrPort) error {
	h := proxyproto.HeaderProxyFromAddrs(2, net.TCPAddrFromAddrPort(client), net.TCPAddrFromAddrPort(local))
	_, err := h.WriteTo(w)
	return err
}
