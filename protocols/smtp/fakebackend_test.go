package smtp_test

import (
	"bufio"
	"crypto/tls"
	"fmt"
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
	t        *testing.T
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
		t:        t,
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
	b      *fakeBackend
	conn   net.Conn
	r      *bufio.Reader
	tlsOn  bool
	helo   string
	user   string // authenticated user
	xaddr  string // ADDR from XCLIENT
	from   string
	to     []string
	closed bool
}

func (c *fconn) writef(format string, args ...any) {
	fmt.Fprintf(c.conn, format+"\r\n", args...)
}

func (c *fconn) readLine() (string, error) {
	l, err := c.r.ReadString('\n')
	return strings.TrimRight(l, "\r\n"), err
}

func (b *fakeBackend) serve(nc net.Conn) {
	defer nc.Close()
	wire := &protocoltest.RecConn{Conn: nc, Rec: b.raw}
	c := &fconn{b: b, conn: wire}
	c.r = bufio.NewReader(&protocoltest.RecConn{Conn: wire, Rec: b.rec})
	c.writef("%s", b.greeting)
	if strings.HasPrefix(b.greeting, "421") {
		return
	}
	for !c.closed {
		line, err := c.readLine()
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
			c.writef("250%s%s", sep, l)
		}
	case "HELO":
		c.helo = arg
		c.writef("250 fake.test")
	case "NOOP", "RSET":
		c.from, c.to = "", nil
		c.writef("250 2.0.0 Ok")
	case "QUIT":
		c.writef("221 2.0.0 Bye")
		c.closed = true
	case "STARTTLS":
		if b.tls == nil || c.tlsOn {
			c.writef("502 5.5.1 Error: command not implemented")
			return
		}
		c.writef("220 2.0.0 Ready to start TLS")
		tc := tls.Server(c.conn, b.tls)
		if tc.Handshake() != nil {
			c.closed = true
			return
		}
		c.conn, c.tlsOn, c.helo = tc, true, ""
		c.r = bufio.NewReader(&protocoltest.RecConn{Conn: tc, Rec: b.rec})
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
		c.writef("%s", b.greeting)
	case "AUTH":
		switch {
		case b.byeAuth:
			c.writef("421 4.3.0 fake.test Server going down")
			c.closed = true
		case b.authResp != "":
			c.writef("%s", b.authResp)
		case c.user != "":
			c.writef("503 5.5.1 Error: already authenticated")
		case c.helo == "":
			c.writef("503 5.5.1 Error: send HELO/EHLO first")
		default:
			mech, ir, hasIR := strings.Cut(arg, " ")
			c.sasl().Authenticate(strings.ToUpper(mech), ir, hasIR)
		}
	case "MAIL":
		c.from, c.to = arg, nil
		c.writef("250 2.1.0 Ok")
	case "RCPT":
		if c.from == "" {
			c.writef("503 5.5.1 Error: need MAIL command")
			return
		}
		c.to = append(c.to, arg)
		c.writef("250 2.1.5 Ok")
	case "DATA":
		if len(c.to) == 0 {
			c.writef("554 5.5.1 Error: no valid recipients")
			return
		}
		c.writef("354 End data with <CR><LF>.<CR><LF>")
		var data strings.Builder
		for {
			l, err := c.readLine()
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
		c.writef("250 2.0.0 Ok: queued as FAKE")
	default:
		c.writef("502 5.5.2 Error: command not recognized")
	}
}

func (c *fconn) verdict(user, pass string) {
	switch pw, ok := c.b.users[user]; {
	case user == "down":
		c.writef("454 4.7.0 Temporary authentication failure")
	case ok && pw == pass:
		c.user = user
		c.writef("235 2.7.0 Authentication successful")
	default:
		c.writef("535 5.7.8 Error: authentication failed: authentication failure")
	}
}

// sasl is the server side of one AUTH exchange.
func (c *fconn) sasl() *protocoltest.SASLServer {
	return &protocoltest.SASLServer{
		Users: c.b.users,
		Token: c.b.token,
		Send:  func(line string) { c.writef("%s", line) },
		ReadLine: func() (string, error) {
			l, err := c.readLine()
			if err != nil {
				c.closed = true
			}
			return l, err
		},
		Cont:    "334 ",
		Verdict: c.verdict,
		Success: func(user, _ string) {
			c.user = user
			c.writef("235 2.7.0 Authentication successful")
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
