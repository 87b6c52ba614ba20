package imap_test

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mailgate/mailgate/protocols"
	"github.com/mailgate/mailgate/protocols/imap"
	"github.com/mailgate/mailgate/protocols/protocoltest"
)

// scriptConn is a backend that answers as soon as it is written to: "+" for
// literals and AUTHENTICATE, a tagged result for everything else. It notes
// whether a credential ever reached it.
type scriptConn struct {
	*protocoltest.LineConn
	tag, name  string // command being received (after a literal)
	sasl       string // tag of an AUTHENTICATE in progress
	rounds     int
	credential bool // a LOGIN or a SASL message other than "*" arrived
}

func (c *scriptConn) line(line string) {
	if c.sasl != "" {
		if line != "*" {
			c.credential = true
		}
		c.rounds++
		switch {
		case line == "*":
			c.Reply(c.sasl + " BAD cancelled")
			c.sasl = ""
		case c.rounds < 3:
			c.Reply("+ " + b64("more"))
		default:
			c.Reply(c.sasl + " NO [AUTHENTICATIONFAILED] no")
			c.sasl = ""
		}
		return
	}
	if c.tag == "" {
		f := strings.Fields(line)
		if len(f) < 2 {
			c.Reply("* BAD what")
			return
		}
		c.tag, c.name = f[0], strings.ToUpper(f[1])
		if c.name == "AUTHENTICATE" {
			if len(f) > 3 && f[2] != "CRAM-MD5" {
				c.credential = true
			}
			c.sasl, c.rounds, c.tag = f[0], 0, ""
			c.Reply("+ " + b64("<1.2@x>"))
			return
		}
	}
	if open := strings.LastIndexByte(line, '{'); open >= 0 && strings.HasSuffix(line, "}") {
		if n, err := strconv.Atoi(line[open+1 : len(line)-1]); err == nil && n >= 0 {
			c.Skip = n
			c.Reply("+ go ahead")
			return
		}
	}
	tag, name := c.tag, c.name
	c.tag, c.name = "", ""
	switch name {
	case "LOGIN":
		c.credential = true
		c.Reply(tag + " NO [AUTHENTICATIONFAILED] no")
	case "CAPABILITY":
		c.Reply("* CAPABILITY IMAP4rev1 SASL-IR STARTTLS AUTH=PLAIN AUTH=CRAM-MD5 AUTH=GSSAPI")
		c.Reply(tag + " OK done")
	case "ID":
		c.Reply("* ID (\"name\" {3}\r\nabc)")
		c.Reply(tag + " OK done")
	default:
		c.Reply(tag + " OK done")
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
	protocoltest.AddSeeds(f, seeds)
	srvTLS, _ := protocoltest.TLSConfigs(f)
	f.Fuzz(func(t *testing.T, in []byte, mode uint8) {
		cli := protocoltest.NewMemConn(in, 143)
		be := &scriptConn{LineConn: protocoltest.NewLineConn(143)}
		be.OnLine = be.line
		be.Reply(fuzzGreetings[int(mode)%len(fuzzGreetings)])
		denyAll := mode&0x08 != 0
		gate := protocoltest.NewGate()
		lim := protocols.Limits{MaxLine: 256, MaxBadCommands: 3, LoginTimeout: time.Minute, MaxLiteral: 128}
		s := protocoltest.FuzzSession(cli, be, protocoltest.DenyAll{All: denyAll, G: gate}, lim)
		s.RequireTLSForLogin = mode&0x10 != 0
		if mode&0x20 != 0 {
			s.ClientStartTLS = srvTLS
		}
		if mode&0x40 != 0 {
			s.ClientAddrVia = "imap-id"
		}
		s.Client.Conn.SetDeadline(time.Time{})
		imap.New(imap.Options{}).PreAuth(context.Background(), s)
		if denyAll && be.credential {
			t.Fatalf("a credential reached the backend although the gate denied everyone; backend got %q", be.Out.String())
		}
	})
}
