package proxy

import (
	"bufio"
	"bytes"
	"net"
	"net/netip"
	"testing"
	"time"
)

// bytesConn is a net.Conn that reads from a fixed buffer.
type bytesConn struct {
	net.Conn
	r *bytes.Reader
}

func (b *bytesConn) Read(p []byte) (int, error)         { return b.r.Read(p) }
func (b *bytesConn) SetReadDeadline(time.Time) error    { return nil }
func (b *bytesConn) Write(p []byte) (int, error)        { return len(p), nil }
func (b *bytesConn) RemoteAddr() net.Addr               { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1} }
func (b *bytesConn) LocalAddr() net.Addr                { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 2} }
func (b *bytesConn) SetDeadline(t time.Time) error      { return nil }
func (b *bytesConn) SetWriteDeadline(t time.Time) error { return nil }

// FuzzProxyHeader feeds arbitrary bytes to the trusted-peer header reader
// and the untrusted-peer guard: no panic, no hang, and an accepted header
// always yields a valid client address with the payload left in the reader.
func FuzzProxyHeader(f *testing.F) {
	f.Add([]byte("PROXY TCP4 192.0.2.7 127.0.0.1 5555 1143\r\na CAPABILITY\r\n"))
	f.Add([]byte("PROXY TCP6 2001:db8::1 ::1 5555 1143\r\n"))
	f.Add([]byte("PROXY UNKNOWN\r\n"))
	f.Add([]byte("PROXY TCP4 999.0.0.1 127.0.0.1 5555 1143\r\n"))
	f.Add(v2Header(nil, "192.0.2.7:5555", "127.0.0.1:1143"))
	f.Add([]byte("\r\n\r\n\x00\r\nQUIT\n\x20\x00\x00\x00"))
	f.Add([]byte("\r\n\r\n\x00\r\nQUIT\n\x21\x11\xff\xff"))
	f.Add([]byte("a LOGIN x y\r\n"))
	peer := netip.MustParseAddrPort("127.0.0.1:1")
	f.Fuzz(func(t *testing.T, in []byte) {
		for _, require := range []bool{true, false} {
			c := &bytesConn{r: bytes.NewReader(in)}
			br := bufio.NewReaderSize(c, 4096)
			got, err := ReadProxyHeader(c, br, peer, require, time.Second)
			if err == nil && !got.IsValid() {
				t.Fatalf("accepted %q with invalid address", in)
			}
		}
		g := &guardConn{Conn: &bytesConn{r: bytes.NewReader(in)}}
		buf := make([]byte, len(in)+1)
		n, err := g.Read(buf)
		if err == nil && n > 0 && looksLikeProxyHeader(in[:n]) {
			t.Fatalf("guard let %q through", in[:n])
		}
	})
}
