package protocoltest

import (
	"bytes"
	"io"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/mailgate/mailgate/protocols"
)

// MemConn is a net.Conn over fixed input; output is collected in Out. Reads
// past the input return io.EOF, so a session over it can never block.
// Deadlines are accepted and ignored. Its local address is 127.0.0.1:Port,
// its remote address 127.0.0.1:50000.
type MemConn struct {
	In   *bytes.Reader
	Out  bytes.Buffer
	Port int
}

// NewMemConn returns a MemConn reading in, local port port.
func NewMemConn(in []byte, port int) *MemConn {
	return &MemConn{In: bytes.NewReader(in), Port: port}
}

func (c *MemConn) Read(p []byte) (int, error)  { return c.In.Read(p) }
func (c *MemConn) Write(p []byte) (int, error) { return c.Out.Write(p) }
func (c *MemConn) Close() error                { return nil }
func (c *MemConn) LocalAddr() net.Addr {
	return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: c.Port}
}
func (c *MemConn) RemoteAddr() net.Addr {
	return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 50000}
}
func (c *MemConn) SetDeadline(t time.Time) error      { return nil }
func (c *MemConn) SetReadDeadline(t time.Time) error  { return nil }
func (c *MemConn) SetWriteDeadline(t time.Time) error { return nil }

// LineConn is a scripted line-oriented backend for fuzzing: it answers as
// soon as a whole line is written to it. Everything written is kept in Out;
// each complete line, without its CR LF, is handed to OnLine, which queues
// the answer with Reply (or sets Skip to pass over the next Skip bytes, a
// literal's contents). Read returns what was queued and io.EOF when nothing
// is, so a session over it can never block.
type LineConn struct {
	MemConn
	Pending bytes.Buffer // queued answers, read by the handler
	Skip    int          // bytes still to pass over before the next line
	OnLine  func(line string)
	buf     []byte
}

func (c *LineConn) Read(p []byte) (int, error) {
	if c.Pending.Len() == 0 {
		return 0, io.EOF
	}
	return c.Pending.Read(p)
}

func (c *LineConn) Write(p []byte) (int, error) {
	c.Out.Write(p)
	c.buf = append(c.buf, p...)
	for {
		if c.Skip > 0 {
			n := min(c.Skip, len(c.buf))
			c.buf, c.Skip = c.buf[n:], c.Skip-n
			if c.Skip > 0 {
				return len(p), nil
			}
		}
		i := bytes.IndexByte(c.buf, '\n')
		if i < 0 {
			return len(p), nil
		}
		line := strings.TrimRight(string(c.buf[:i]), "\r")
		c.buf = c.buf[i+1:]
		c.OnLine(line)
	}
}

// Reply queues s and CR LF for the handler to read.
func (c *LineConn) Reply(s string) { c.Pending.WriteString(s + "\r\n") }

// NewLineConn returns a LineConn with local port port and nothing queued;
// set OnLine before use.
func NewLineConn(port int) *LineConn {
	return &LineConn{MemConn: MemConn{In: bytes.NewReader(nil), Port: port}}
}

// AddSeeds adds each seed to f's corpus, with its index as the mode byte
// the fuzz targets take second.
func AddSeeds(f *testing.F, seeds []string) {
	for i, s := range seeds {
		f.Add([]byte(s), uint8(i))
	}
}

// FuzzSession is the Session a fuzz target hands PreAuth: session 7 of a
// client at 192.0.2.1:50000 that connected to 192.0.2.2 on client's port,
// over client and backend, with a recording Observer, gate and lim.
func FuzzSession(client *MemConn, backend net.Conn, gate protocols.Gate, lim protocols.Limits) *protocols.Session {
	return &protocols.Session{
		ID:         7,
		Client:     protocols.NewConn(client),
		Backend:    protocols.NewConn(backend),
		ClientAddr: netip.MustParseAddrPort("192.0.2.1:50000"),
		LocalAddr:  netip.AddrPortFrom(netip.MustParseAddr("192.0.2.2"), uint16(client.Port)),
		Observer:   &Observer{},
		Gate:       gate,
		Limits:     lim,
	}
}
