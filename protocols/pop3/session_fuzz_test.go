package pop3_test

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/mailgate/mailgate/protocols"
	"github.com/mailgate/mailgate/protocols/pop3"
)

// memConn is a net.Conn over fixed input; output is collected. Reads past
// the input return io.EOF, so a session over it can never block.
type memConn struct {
	in  *bytes.Reader
	out bytes.Buffer
}

func (c *memConn) Read(p []byte) (int, error)         { return c.in.Read(p) }
func (c *memConn) Write(p []byte) (int, error)        { return c.out.Write(p) }
func (c *memConn) Close() error                       { return nil }
func (c *memConn) LocalAddr() net.Addr                { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 110} }
func (c *memConn) RemoteAddr() net.Addr               { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 50000} }
func (c *memConn) SetDeadline(t time.Time) error      { return nil }
func (c *memConn) SetReadDeadline(t time.Time) error  { return nil }
func (c *memConn) SetWriteDeadline(t time.Time) error { return nil }

// scriptConn is a POP3 backend that answers as soon as a line is written to
// it. Every login fails, so a session never leaves the pre-auth state. It
// notes whether anything of a login ever reached it.
type scriptConn struct {
	memConn
	pending bytes.Buffer
	buf     []byte
	sasl    bool // inside AUTH
	rounds  int
	leaked  bool // USER, PASS, APOP or a SASL message other than "*" arrived
}

func (c *scriptConn) Read(p []byte) (int, error) {
	if c.pending.Len() == 0 {
		return 0, io.EOF
	}
	return c.pending.Read(p)
}

func (c *scriptConn) Write(p []byte) (int, error) {
	c.out.Write(p)
	c.buf = append(c.buf, p...)
	for {
		i := bytes.IndexByte(c.buf, '\n')
		if i < 0 {
			return len(p), nil
		}
		line := strings.TrimRight(string(c.buf[:i]), "\r")
		c.buf = c.buf[i+1:]
		c.line(line)
	}
}

func (c *scriptConn) reply(s string) { c.pending.WriteString(s + "\r\n") }

func (c *scriptConn) line(line string) {
	if c.sasl {
		if line == "*" {
			c.reply("-ERR cancelled")
			c.sasl = false
			return
		}
		c.leaked = true
		if c.rounds++; c.rounds < 3 {
			c.reply("+ " + b64("more"))
			return
		}
		c.reply("-ERR [AUTH] no")
		c.sasl = false
		return
	}
	name, args, _ := strings.Cut(line, " ")
	switch strings.ToUpper(name) {
	case "CAPA":
		c.reply("+OK\r\nUSER\r\n..weird\r\nSASL PLAIN LOGIN CRAM-MD5 SCRAM-SHA-1 GSSAPI\r\nSTLS\r\n.")
	case "AUTH":
		if args == "" {
			c.reply("+OK\r\nPLAIN\r\nCRAM-MD5\r\n.")
			return
		}
		if !strings.EqualFold(args, "CRAM-MD5") {
			c.leaked = true
		}
		c.sasl, c.rounds = true, 0
		c.reply("+ " + b64("<1.2@x>"))
	case "USER", "PASS", "APOP":
		c.leaked = true
		if name == "USER" {
			c.reply("+OK")
		} else {
			c.reply("-ERR [AUTH] no")
		}
	case "QUIT":
		c.reply("+OK bye")
	default:
		c.reply("-ERR unknown")
	}
}

var fuzzGreetings = []string{
	"+OK ready <1.2@backend>",
	"+OK [XCLIENT] Dovecot ready.",
	"+OK",
	"-ERR [SYS/TEMP] go away",
	"+ nonsense",
}

// FuzzPreAuth drives whole pre-auth sessions from arbitrary client input
// against a scripted backend. It must not panic or hang, and when the gate
// denies every user nothing of a login may reach the backend.
func FuzzPreAuth(f *testing.F) {
	seeds := []string{
		"CAPA\r\nUSER alice\r\nPASS secret\r\n",
		"USER alice\r\nPASS secret\r\nSTAT\r\nQUIT\r\n",
		"APOP alice c4c9334bac560ecc979e58001b3e22fb\r\n",
		"AUTH PLAIN AGFsaWNlAHNlY3JldA==\r\n",
		"AUTH PLAIN\r\nAGFsaWNlAHNlY3JldA==\r\n",
		"AUTH LOGIN\r\nYWxpY2U=\r\nc2VjcmV0\r\n",
		"AUTH CRAM-MD5\r\ndGltIGI5MTNhNjAyYzdlZGE3YTQ5NWI0ZTZlNzMzNGQzODkw\r\n",
		"AUTH SCRAM-SHA-1 bixuPXVzZXIscj1hYmM=\r\nYz1iaXdzLHI9YWJjLHA9eA==\r\n\r\n",
		"AUTH XOAUTH2 dXNlcj1hAWF1dGg9QmVhcmVyIHQBAQ==\r\n\r\n",
		"AUTH\r\nAUTH GSSAPI\r\nAUTH PLAIN =\r\n*\r\n",
		"STLS\r\nUSER x\r\n",
		"XCLIENT ADDR=1.2.3.4\r\nNOOP\r\n\r\n\r\n",
		"USER a\rPASS b\r\n" + strings.Repeat("x", 300) + "\r\n",
		"QUIT\r\n",
	}
	for i, s := range seeds {
		f.Add([]byte(s), uint8(i))
	}
	srvTLS, _ := testTLS(f)
	f.Fuzz(func(t *testing.T, in []byte, mode uint8) {
		cli := &memConn{in: bytes.NewReader(in)}
		be := &scriptConn{memConn: memConn{in: bytes.NewReader(nil)}}
		be.reply(fuzzGreetings[int(mode)%len(fuzzGreetings)])
		denyAll := mode&0x08 != 0
		s := &protocols.Session{
			ID:                 7,
			Client:             protocols.NewConn(cli),
			Backend:            protocols.NewConn(be),
			ClientAddr:         netip.MustParseAddrPort("192.0.2.1:50000"),
			LocalAddr:          netip.MustParseAddrPort("192.0.2.2:110"),
			ClientTLS:          mode&0x40 != 0,
			RequireTLSForLogin: mode&0x10 != 0,
			Observer:           &fakeObserver{},
			Gate:               denyGate{all: denyAll},
			Limits:             protocols.Limits{MaxLine: 8192, MaxBadCommands: 3, LoginTimeout: time.Minute, MaxLiteral: 256},
		}
		if mode&0x20 != 0 {
			s.ClientStartTLS = srvTLS
		}
		pop3.New(pop3.Options{MaxPreAuthBytes: 4096}).PreAuth(context.Background(), s)
		if denyAll && be.leaked {
			t.Fatalf("a login reached the backend although the gate denied everyone; backend got %q", be.out.String())
		}
		if bytes.Contains(cli.out.Bytes(), []byte("XCLIENT")) {
			t.Fatalf("the client saw XCLIENT: %q", cli.out.String())
		}
	})
}

type denyGate struct{ all bool }

func (d denyGate) CheckLogin(user string) string {
	if d.all {
		return protocols.DenyDisabled
	}
	return protocols.DenyNone
}
