package pop3_test

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/mailgate/mailgate/protocols"
	"github.com/mailgate/mailgate/protocols/pop3"
	"github.com/mailgate/mailgate/protocols/protocoltest"
)

// scriptConn is a POP3 backend that answers as soon as a line is written to
// it. Every login fails, so a session never leaves the pre-auth state. It
// notes whether anything of a login ever reached it.
type scriptConn struct {
	*protocoltest.LineConn
	sasl   bool // inside AUTH
	rounds int
	leaked bool // USER, PASS, APOP or a SASL message other than "*" arrived
}

func (c *scriptConn) line(line string) {
	if c.sasl {
		if line == "*" {
			c.Reply("-ERR cancelled")
			c.sasl = false
			return
		}
		c.leaked = true
		if c.rounds++; c.rounds < 3 {
			c.Reply("+ " + b64("more"))
			return
		}
		c.Reply("-ERR [AUTH] no")
		c.sasl = false
		return
	}
	name, args, _ := strings.Cut(line, " ")
	switch strings.ToUpper(name) {
	case "CAPA":
		c.Reply("+OK\r\nUSER\r\n..weird\r\nSASL PLAIN LOGIN CRAM-MD5 SCRAM-SHA-1 GSSAPI\r\nSTLS\r\n.")
	case "AUTH":
		if args == "" {
			c.Reply("+OK\r\nPLAIN\r\nCRAM-MD5\r\n.")
			return
		}
		if !strings.EqualFold(args, "CRAM-MD5") {
			c.leaked = true
		}
		c.sasl, c.rounds = true, 0
		c.Reply("+ " + b64("<1.2@x>"))
	case "USER", "PASS", "APOP":
		c.leaked = true
		if name == "USER" {
			c.Reply("+OK")
		} else {
			c.Reply("-ERR [AUTH] no")
		}
	case "QUIT":
		c.Reply("+OK bye")
	default:
		c.Reply("-ERR unknown")
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
	protocoltest.AddSeeds(f, seeds)
	srvTLS, _ := protocoltest.TLSConfigs(f)
	f.Fuzz(func(t *testing.T, in []byte, mode uint8) {
		cli := protocoltest.NewMemConn(in, 110)
		be := &scriptConn{LineConn: protocoltest.NewLineConn(110)}
		be.OnLine = be.line
		be.Reply(fuzzGreetings[int(mode)%len(fuzzGreetings)])
		denyAll := mode&0x08 != 0
		lim := protocols.Limits{MaxLine: 8192, MaxBadCommands: 3, LoginTimeout: time.Minute, MaxLiteral: 256}
		s := protocoltest.FuzzSession(cli, be, protocoltest.DenyAll{All: denyAll}, lim)
		s.ClientTLS = mode&0x40 != 0
		s.RequireTLSForLogin = mode&0x10 != 0
		if mode&0x20 != 0 {
			s.ClientStartTLS = srvTLS
		}
		pop3.New(pop3.Options{MaxPreAuthBytes: 4096}).PreAuth(context.Background(), s)
		if denyAll && be.leaked {
			t.Fatalf("a login reached the backend although the gate denied everyone; backend got %q", be.Out.String())
		}
		if bytes.Contains(cli.Out.Bytes(), []byte("XCLIENT")) {
			t.Fatalf("the client saw XCLIENT: %q", cli.Out.String())
		}
	})
}
