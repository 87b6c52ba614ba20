package smtp_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/mailgate/mailgate/protocols"
	"github.com/mailgate/mailgate/protocols/protocoltest"
	"github.com/mailgate/mailgate/protocols/smtp"
)

// scriptConn is an SMTP backend that answers as soon as a line is written
// to it. It notes whether a credential ever reached it: an AUTH line with
// anything but CRAM-MD5 (whose first line carries none), or any SASL line
// other than "*".
type scriptConn struct {
	*protocoltest.LineConn
	sasl       bool // an AUTH exchange is open
	rounds     int
	data       bool // inside DATA
	credential bool
}

func (c *scriptConn) line(line string) {
	switch {
	case c.data:
		if line == "." {
			c.data = false
			c.Reply("250 2.0.0 queued")
		}
		return
	case c.sasl:
		c.rounds++
		switch {
		case line == "*":
			c.sasl = false
			c.Reply("501 5.7.0 cancelled")
		case c.rounds < 3:
			c.credential = true
			c.Reply("334 " + b64("more"))
		default:
			c.credential = true
			c.sasl = false
			c.Reply("535 5.7.8 no")
		}
		return
	}
	verb, arg, _ := strings.Cut(line, " ")
	switch strings.ToUpper(verb) {
	case "EHLO":
		c.Reply("250-fuzz.test\r\n250-PIPELINING\r\n250-AUTH PLAIN LOGIN CRAM-MD5 SCRAM-SHA-256 XOAUTH2 OAUTHBEARER GSSAPI\r\n" +
			"250-AUTH=PLAIN\r\n250-XCLIENT ADDR PORT PROTO HELO\r\n250 STARTTLS")
	case "HELO", "NOOP", "RSET", "MAIL", "RCPT":
		c.Reply("250 2.0.0 ok")
	case "XCLIENT":
		c.Reply("220 fuzz.test ESMTP")
	case "STARTTLS":
		c.Reply("454 4.7.0 TLS not available")
	case "QUIT":
		c.Reply("221 2.0.0 bye")
	case "DATA":
		c.data = true
		c.Reply("354 go ahead")
	case "AUTH":
		// Only a bare CRAM-MD5 opens an exchange before the gate decided
		// (its challenge must come from the backend); anything else here
		// follows the gate's consent.
		if !strings.EqualFold(arg, "CRAM-MD5") {
			c.credential = true
		}
		c.sasl, c.rounds = true, 0
		c.Reply("334 " + b64("<1.2@fuzz.test>"))
	default:
		c.Reply("502 5.5.2 unknown")
	}
}

var fuzzGreetings = []string{
	"220 fuzz.test ESMTP",
	"220-fuzz.test\r\n220 ESMTP",
	"554 5.7.1 go away",
	"421 4.3.2 busy",
	"HTTP/1.0 200 OK",
}

// FuzzPreAuth drives whole pre-auth sessions from arbitrary client input
// against a scripted backend, in every role. It must not panic or hang, and
// when the gate denies every user no credential may reach the backend.
func FuzzPreAuth(f *testing.F) {
	seeds := []string{
		"EHLO x\r\nAUTH PLAIN AGFsaWNlAHNlY3JldA==\r\nMAIL FROM:<a@b>\r\n",
		"EHLO x\r\nAUTH PLAIN\r\nAGFsaWNlAHNlY3JldA==\r\n",
		"EHLO x\r\nAUTH LOGIN\r\nYWxpY2U=\r\nc2VjcmV0\r\n",
		"EHLO x\r\nAUTH LOGIN YWxpY2U=\r\nc2VjcmV0\r\n*\r\n",
		"EHLO x\r\nAUTH CRAM-MD5\r\ndGltIGI5MTNhNjAyYzdlZGE3YTQ5NWI0ZTZlNzMzNGQzODkw\r\n",
		"EHLO x\r\nAUTH SCRAM-SHA-256 bixuPXVzZXIscj1hYmM=\r\nYz1iaXdzLHI9YWJjLHA9eA==\r\n\r\n",
		"EHLO x\r\nAUTH XOAUTH2 dXNlcj1hAWF1dGg9QmVhcmVyIHQBAQ==\r\n\r\n",
		"HELO x\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\nhi\r\n.\r\nQUIT\r\n",
		"EHLO x\r\nSTARTTLS\r\nAUTH PLAIN AGFsaWNlAHNlY3JldA==\r\n",
		"XCLIENT ADDR=1.2.3.4\r\nNOOP\r\nRSET\r\nQUIT\r\n",
		"EHLO x\r\nAUTH PLAIN =\r\nAUTH NTLM\r\nAUTH\r\n\r\n\x00\xff\r\n",
	}
	protocoltest.AddSeeds(f, seeds)
	srvTLS, _ := protocoltest.TLSConfigs(f)
	f.Fuzz(func(t *testing.T, in []byte, mode uint8) {
		cli := protocoltest.NewMemConn(in, 587)
		be := &scriptConn{LineConn: protocoltest.NewLineConn(587)}
		be.OnLine = be.line
		be.Reply(fuzzGreetings[int(mode)%len(fuzzGreetings)])
		denyAll := mode&0x08 != 0
		lim := protocols.Limits{LoginTimeout: time.Minute}
		s := protocoltest.FuzzSession(cli, be, protocoltest.DenyAll{All: denyAll, G: protocoltest.NewGate()}, lim)
		s.ClientTLS = mode&0x80 != 0
		s.RequireTLSForLogin = mode&0x10 != 0
		if mode&0x20 != 0 {
			s.ClientStartTLS = srvTLS
		}
		if mode&0x40 != 0 {
			s.ClientAddrVia = "xclient"
		}
		role := smtp.RoleSubmission
		if mode&0x04 != 0 {
			role = smtp.RoleMX
		}
		smtp.New(smtp.Options{Role: role, Hostname: "proxy.test"}).PreAuth(context.Background(), s)
		if denyAll && be.credential {
			t.Fatalf("a credential reached the backend although the gate denied everyone; backend got %q", be.Out.String())
		}
	})
}
