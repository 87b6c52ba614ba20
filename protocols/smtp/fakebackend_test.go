package smtp_test

import (
	"crypto/tls"
	"net"
	"strings"
	"sync"
	"testing"

	"github.com/mailgate/mailgate/protocols/protocoltest"
)

// fakeBackend is a small scripted SMTP server for what go-smtp's server
// cannot do (CRAM-MD5, SCRAM, XOAUTH2, OAUTHBEARER, XCLIENT, odd replies).
// It records every byte it receives (plaintext, also inside TLS).
type fakeBackend struct {
	addr     string
	rec      *protocoltest.SyncBuffer // every byte received, decrypted inside TLS
	raw      *protocoltest.SyncBuffer // every byte received as it came on the wire
	greeting string                   // the greeting reply, lines separated by "\r\n"; default "220 fake.test ESMTP fake"
	exts     []string                 // EHLO extension lines; default fakeExts
	tls      *tls.Config
	users    map[string]string
	token    string // the valid OAuth bearer token
	byeAuth  bool   // answer AUTH with 421 and close
	authResp string // when set, the answer to every AUTH

	mu       sync.Mutex
	xclients []string // XCLIENT arguments received
	msgs     []fakeMsg
}

type fakeMsg struct {
	from, helo, user, xaddr string
	to                      []string
	data                    string
}

var fakeExts = []string{
	"PIPELINING", "SIZE 10240000", "ENHANCEDSTATUSCODES", "8BITMIME",
	"AUTH PLAIN LOGIN CRAM-MD5 SCRAM-SHA-1 SCRAM-SHA-256 XOAUTH2 OAUTHBEARER GSSAPI DIGEST-MD5 SCRAM-SHA-256-PLUS EXTERNAL",
	"AUTH=PLAIN LOGIN",
	"XCLIENT NAME ADDR PORT PROTO HELO LOGIN DESTADDR DESTPORT",
	"XFORWARD NAME ADDR PROTO HELO",
	"CHUNKING",
}

const goodToken = "vF9dft4qmTc2Nvb3RlckBhbHRhdmlzdGEuY29tCg=="

func newFakeBackend(t *testing.T, mods ...func(*fakeBackend)) *fakeBackend {
	t.Helper()
	b := &fakeBackend{
		rec:      &protocoltest.SyncBuffer{},
		raw:      &protocoltest.SyncBuffer{},
		greeting: "220 fake.test ESMTP fake",
		exts:     fakeExts,
		users:    map[string]string{"alice": "pass word", "tim smith": "tanstaaftanstaaf", "user": "pencil"},
		token:    goodToken,
	}
	for _, m := range mods {
		m(b)
	}
	b.addr = protocoltest.Serve(t, b.serve)
	return b
}

func (b *fakeBackend) XCLIENTs() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.xclients...)
}

func (b *fakeBackend) messages() []fakeMsg {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]fakeMsg(nil), b.msgs...)
}

// fconn is one backend connection.
type fconn struct {
	*protocoltest.BackendConn
	b      *fakeBackend
	tlsOn  bool
	helo   string
	user   string // authenticated user
	xaddr  string // ADDR from XCLIENT
	from   string
	to     []string
	closed bool
}

func (b *fakeBackend) serve(nc net.Conn) {
	defer nc.Close()
	wire := &protocoltest.RecConn{Conn: nc, Rec: b.raw}
	c := &fconn{BackendConn: protocoltest.NewBackendConn(wire, b.rec), b: b}
	c.Send(b.greeting)
	if strings.HasPrefix(b.greeting, "421") {
		return
	}
	for !c.closed {
		line, err := c.ReadLine()
		if err != nil {
			return
		}
		verb, arg, _ := strings.Cut(line, " ")
		c.command(strings.ToUpper(verb), arg)
	}
}

func (c *fconn) command(verb, arg string) {
	b := c.b
	switch verb {
	case "EHLO":
		c.helo = arg
		lines := append([]string{"fake.test Hello " + arg}, b.exts...)
		if b.tls != nil && !c.tlsOn {
			lines = append(lines, "STARTTLS")
		}
		for i, l := range lines {
			sep := "-"
			if i == len(lines)-1 {
				sep = " "
			}
			c.Writef("250%s%s", sep, l)
		}
	case "HELO":
		c.helo = arg
		c.Writef("250 fake.test")
	case "NOOP", "RSET":
		c.from, c.to = "", nil
		c.Writef("250 2.0.0 Ok")
	case "QUIT":
		c.Writef("221 2.0.0 Bye")
		c.closed = true
	case "STARTTLS":
		if b.tls == nil || c.tlsOn {
			c.Writef("502 5.5.1 Error: command not implemented")
			return
		}
		c.Writef("220 2.0.0 Ready to start TLS")
		if !c.StartTLS(b.tls) {
			c.closed = true
			return
		}
		c.tlsOn, c.helo = true, ""
	case "XCLIENT":
		b.mu.Lock()
		b.xclients = append(b.xclients, arg)
		b.mu.Unlock()
		for _, kv := range strings.Fields(arg) {
			if v, ok := strings.CutPrefix(kv, "ADDR="); ok {
				c.xaddr = v
			}
		}
		c.helo = ""
		c.Send(b.greeting)
	case "AUTH":
		switch {
		case b.byeAuth:
			c.Writef("421 4.3.0 fake.test Server going down")
			c.closed = true
		case b.authResp != "":
			c.Send(b.authResp)
		case c.user != "":
			c.Writef("503 5.5.1 Error: already authenticated")
		case c.helo == "":
			c.Writef("503 5.5.1 Error: send HELO/EHLO first")
		default:
			mech, ir, hasIR := strings.Cut(arg, " ")
			c.sasl().Authenticate(strings.ToUpper(mech), ir, hasIR)
		}
	case "MAIL":
		c.from, c.to = arg, nil
		c.Writef("250 2.1.0 Ok")
	case "RCPT":
		if c.from == "" {
			c.Writef("503 5.5.1 Error: need MAIL command")
			return
		}
		c.to = append(c.to, arg)
		c.Writef("250 2.1.5 Ok")
	case "DATA":
		if len(c.to) == 0 {
			c.Writef("554 5.5.1 Error: no valid recipients")
			return
		}
		c.Writef("354 End data with <CR><LF>.<CR><LF>")
		var data strings.Builder
		for {
			l, err := c.ReadLine()
			if err != nil {
				c.closed = true
				return
			}
			if l == "." {
				break
			}
			data.WriteString(strings.TrimPrefix(l, ".") + "\r\n")
		}
		b.mu.Lock()
		b.msgs = append(b.msgs, fakeMsg{from: c.from, to: c.to, helo: c.helo, user: c.user, xaddr: c.xaddr, data: data.String()})
		b.mu.Unlock()
		c.from, c.to = "", nil
		c.Writef("250 2.0.0 Ok: queued as FAKE")
	default:
		c.Writef("502 5.5.2 Error: command not recognized")
	}
}

func (c *fconn) verdict(user, pass string) {
	switch pw, ok := c.b.users[user]; {
	case user == "down":
		c.Writef("454 4.7.0 Temporary authentication failure")
	case ok && pw == pass:
		c.user = user
		c.Writef("235 2.7.0 Authentication successful")
	default:
		c.Writef("535 5.7.8 Error: authentication failed: authentication failure")
	}
}

// sasl is the server side of one AUTH exchange.
func (c *fconn) sasl() *protocoltest.SASLServer {
	return &protocoltest.SASLServer{
		Users: c.b.users,
		Token: c.b.token,
		Send:  c.Send,
		ReadLine: func() (string, error) {
			l, err := c.ReadLine()
			if err != nil {
				c.closed = true
			}
			return l, err
		},
		Cont:    "334 ",
		Verdict: c.verdict,
		Success: func(user, _ string) {
			c.user = user
			c.Writef("235 2.7.0 Authentication successful")
		},
		Cancelled:   "501 5.7.0 Authentication aborted",
		BadBase64:   "501 5.5.2 Cannot decode response",
		Malformed:   "535 5.7.8 Error: authentication failed: Invalid authentication mechanism",
		NoIR:        "501 5.7.0 No initial response for CRAM-MD5",
		Failed:      "535 5.7.8 Error: authentication failed",
		BadToken:    "535 5.7.8 Error: authentication failed",
		NotEmpty:    "501 5.5.2 Expected an empty response",
		Unsupported: "504 5.5.4 Unsupported authentication mechanism",
	}
}

// cramDigest is the CRAM-MD5 response for a challenge (RFC 2195 §2).
func cramDigest(user, secret, challenge string) string {
	return user + " " + protocoltest.CRAMMD5(secret, challenge)
}
