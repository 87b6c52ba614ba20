package imap_test

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mailgate/mailgate/protocols"
	"github.com/mailgate/mailgate/protocols/imap"
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
func (c *memConn) LocalAddr() net.Addr                { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 143} }
func (c *memConn) RemoteAddr() net.Addr               { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 50000} }
func (c *memConn) SetDeadline(t time.Time) error      { return nil }
func (c *memConn) SetReadDeadline(t time.Time) error  { return nil }
func (c *memConn) SetWriteDeadline(t time.Time) error { return nil }

// scriptConn is a backend that answers as soon as it is written to: "+" for
// literals and AUTHENTICATE, a tagged result for everything else. It notes
// whether a credential ever reached it.
type scriptConn struct {
	memConn
	pending    bytes.Buffer
	buf        []byte
	skip       int
	tag, name  string // command being received (after a literal)
	sasl       string // tag of an AUTHENTICATE in progress
	rounds     int
	credential bool // a LOGIN or a SASL message other than "*" arrived
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
		if c.skip > 0 {
			n := min(c.skip, len(c.buf))
			c.buf, c.skip = c.buf[n:], c.skip-n
			if c.skip > 0 {
				return len(p), nil
			}
		}
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
	if c.sasl != "" {
		if line != "*" {
			c.credential = true
		}
		c.rounds++
		switch {
		case line == "*":
			c.reply(c.sasl + " BAD cancelled")
			c.sasl = ""
		case c.rounds < 3:
			c.reply("+ " + b64("more"))
		default:
			c.reply(c.sasl + " NO [AUTHENTICATIONFAILED] no")
			c.sasl = ""
		}
		return
	}
	if c.tag == "" {
		f := strings.Fields(line)
		if len(f) < 2 {
			c.reply("* BAD what")
			return
		}
		c.tag, c.name = f[0], strings.ToUpper(f[1])
		if c.name == "AUTHENTICATE" {
			if len(f) > 3 && f[2] != "CRAM-MD5" {
				c.credential = true
			}
			c.sasl, c.rounds, c.tag = f[0], 0, ""
			c.reply("+ " + b64("<1.2@x>"))
			return
		}
	}
	if open := strings.LastIndexByte(line, '{'); open >= 0 && strings.HasSuffix(line, "}") {
		if n, err := strconv.Atoi(line[open+1 : len(line)-1]); err == nil && n >= 0 {
			c.skip = n
			c.reply("+ go ahead")
			return
		}
	}
	tag, name := c.tag, c.name
	c.tag, c.name = "", ""
	switch name {
	case "LOGIN":
		c.credential = true
		c.reply(tag + " NO [AUTHENTICATIONFAILED] no")
	case "CAPABILITY":
		c.reply("* CAPABILITY IMAP4rev1 SASL-IR STARTTLS AUTH=PLAIN AUTH=CRAM-MD5 AUTH=GSSAPI")
		c.reply(tag + " OK done")
	case "ID":
		c.reply("* ID (\"name\" {3}\r\nabc)")
		c.reply(tag + " OK done")
	default:
		c.reply(tag + " OK done")
	}
}

var fuzzGreetings = []string{
	"* OK [CAPABILITY IMAP4rev1 SASL-IR AUTH=PLAIN AUTH=LOGIN AUTH=CRAM-MD5 AUTH=SCRAM-SHA-256] ready",
	"* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] ready",
	"* OK ready",
	"* PREAUTH ready",
	"* BYE go away",
}

// FuzzPreAuth drives whole pre-auth sessions from arbitrary client input
// against a scripted backend. It must not panic or hang, and when the gate
// denies every user no credential may reach the backend.
func FuzzPreAuth(f *testing.F) {
	seeds := []string{
		"a CAPABILITY\r\nb LOGIN alice secret\r\n",
		"a LOGIN {5}\r\nalice {6+}\r\nsecret\r\n",
		"a AUTHENTICATE PLAIN AGFsaWNlAHNlY3JldA==\r\n",
		"a AUTHENTICATE PLAIN\r\nAGFsaWNlAHNlY3JldA==\r\n",
		"a AUTHENTICATE LOGIN\r\nYWxpY2U=\r\nc2VjcmV0\r\nc2VjcmV0\r\n",
		"a AUTHENTICATE CRAM-MD5\r\ndGltIGI5MTNhNjAyYzdlZGE3YTQ5NWI0ZTZlNzMzNGQzODkw\r\n*\r\n",
		"a AUTHENTICATE SCRAM-SHA-256 bixuPXVzZXIscj1hYmM=\r\nYz1iaXdzLHI9YWJjLHA9eA==\r\n\r\n",
		"a AUTHENTICATE XOAUTH2 dXNlcj1hAWF1dGg9QmVhcmVyIHQBAQ==\r\n\r\n",
		"a ID (\"name\" \"x\" \"x-originating-ip\" {3+}\r\n1.2)\r\n",
		"a STARTTLS\r\nb LOGIN x y\r\n",
		"a NOOP\r\nb LOGOUT\r\n",
		"a LOGIN {99999}\r\n\x00\xff\r\n* BAD\r\n",
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
		gate := &fakeGate{deny: map[string]string{}}
		s := &protocols.Session{
			ID:                 7,
			Client:             protocols.NewConn(cli),
			Backend:            protocols.NewConn(be),
			ClientAddr:         netip.MustParseAddrPort("192.0.2.1:50000"),
			LocalAddr:          netip.MustParseAddrPort("192.0.2.2:143"),
			RequireTLSForLogin: mode&0x10 != 0,
			Observer:           &fakeObserver{},
			Gate:               denyGate{all: denyAll, g: gate},
			Limits:             protocols.Limits{MaxLine: 256, MaxBadCommands: 3, LoginTimeout: time.Minute, MaxLiteral: 128},
		}
		if mode&0x20 != 0 {
			s.ClientStartTLS = srvTLS
		}
		if mode&0x40 != 0 {
			s.ClientAddrVia = "imap-id"
		}
		s.Client.Conn.SetDeadline(time.Time{})
		imap.New(imap.Options{}).PreAuth(context.Background(), s)
		if denyAll && be.credential {
			t.Fatalf("a credential reached the backend although the gate denied everyone; backend got %q", be.out.String())
		}
	})
}

type denyGate struct {
	all bool
	g   *fakeGate
}

func (d denyGate) CheckLogin(user string) string {
	if d.all {
		return protocols.DenyDisabled
	}
	return d.g.CheckLogin(user)
}
