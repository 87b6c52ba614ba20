package smtp_test

import (
	"bufio"
	"bytes"
	"crypto/hmac"
	"crypto/md5"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/tls"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"hash"
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
			c.authenticate(strings.ToUpper(mech), ir, hasIR)
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

// respond sends a challenge and reads the answer; ok is false when the
// client cancelled or sent garbage (already answered).
func (c *fconn) respond(challenge []byte) ([]byte, bool) {
	c.writef("334 %s", base64.StdEncoding.EncodeToString(challenge))
	line, err := c.readLine()
	if err != nil {
		c.closed = true
		return nil, false
	}
	if line == "*" {
		c.writef("501 5.7.0 Authentication aborted")
		return nil, false
	}
	b, err := base64.StdEncoding.DecodeString(line)
	if err != nil {
		c.writef("501 5.5.2 Cannot decode response")
		return nil, false
	}
	return b, true
}

// authenticate runs one SASL exchange.
func (c *fconn) authenticate(mech, ir string, hasIR bool) {
	var first []byte
	if hasIR && ir != "=" {
		var err error
		if first, err = base64.StdEncoding.DecodeString(ir); err != nil {
			c.writef("501 5.5.2 Cannot decode response")
			return
		}
	}
	next := func(ch string) ([]byte, bool) {
		if hasIR {
			hasIR = false
			return first, true
		}
		return c.respond([]byte(ch))
	}
	switch mech {
	case "PLAIN":
		msg, ok := next("")
		if !ok {
			return
		}
		parts := bytes.Split(msg, []byte{0})
		if len(parts) != 3 {
			c.writef("535 5.7.8 Error: authentication failed: Invalid authentication mechanism")
			return
		}
		c.verdict(string(parts[1]), string(parts[2]))
	case "LOGIN":
		user, ok := next("Username:")
		if !ok {
			return
		}
		pass, ok := c.respond([]byte("Password:"))
		if !ok {
			return
		}
		c.verdict(string(user), string(pass))
	case "CRAM-MD5":
		if hasIR {
			c.writef("501 5.7.0 No initial response for CRAM-MD5")
			return
		}
		chal := "<1896.697170952@backend.test>"
		resp, ok := c.respond([]byte(chal))
		if !ok {
			return
		}
		i := bytes.LastIndexByte(resp, ' ')
		if i < 0 {
			c.writef("535 5.7.8 Error: authentication failed")
			return
		}
		user, digest := string(resp[:i]), string(resp[i+1:])
		m := hmac.New(md5.New, []byte(c.b.users[user]))
		m.Write([]byte(chal))
		if _, known := c.b.users[user]; known && hex.EncodeToString(m.Sum(nil)) == digest {
			c.user = user
			c.writef("235 2.7.0 Authentication successful")
		} else {
			c.writef("535 5.7.8 Error: authentication failed")
		}
	case "SCRAM-SHA-1", "SCRAM-SHA-256":
		h := sha256.New
		if mech == "SCRAM-SHA-1" {
			h = sha1.New
		}
		cf, ok := next("")
		if !ok {
			return
		}
		c.scram(h, string(cf))
	case "XOAUTH2", "OAUTHBEARER":
		msg, ok := next("")
		if !ok {
			return
		}
		user, token := protocoltest.ParseOAuth(mech, string(msg))
		if _, known := c.b.users[user]; known && token == c.b.token {
			c.user = user
			c.writef("235 2.7.0 Authentication successful")
			return
		}
		js := `{"status":"invalid_token","scope":"mail","openid-configuration":"https://example.com/.well-known/openid-configuration"}`
		if mech == "XOAUTH2" {
			js = `{"status":"401","schemes":"bearer","scope":"https://mail.google.com/"}`
		}
		if _, ok := c.respond([]byte(js)); !ok {
			return
		}
		c.writef("535 5.7.8 Error: authentication failed")
	default:
		c.writef("504 5.5.4 Unsupported authentication mechanism")
	}
}

// scram is the server side of RFC 5802 with a fixed salt and nonce suffix.
func (c *fconn) scram(h func() hash.Hash, clientFirst string) {
	parts := strings.SplitN(clientFirst, ",", 3)
	if len(parts) != 3 {
		c.writef("535 5.7.8 Error: authentication failed")
		return
	}
	bare := parts[2]
	var user, cnonce string
	for _, a := range strings.Split(bare, ",") {
		if v, ok := strings.CutPrefix(a, "n="); ok {
			user = v
		}
		if v, ok := strings.CutPrefix(a, "r="); ok {
			cnonce = v
		}
	}
	salt := []byte("mailgate-salt")
	serverFirst := "r=" + cnonce + "srvnonce,s=" + base64.StdEncoding.EncodeToString(salt) + ",i=4096"
	final, ok := c.respond([]byte(serverFirst))
	if !ok {
		return
	}
	withoutProof, proofB64, _ := strings.Cut(string(final), ",p=")
	proof, serverSig := protocoltest.SCRAMKeys(h, c.b.users[user], salt, bare+","+serverFirst+","+withoutProof)
	if _, known := c.b.users[user]; !known || base64.StdEncoding.EncodeToString(proof) != proofB64 {
		c.writef("535 5.7.8 Error: authentication failed")
		return
	}
	// Success with data: v= as a challenge, then an empty client response
	// (PROTOCOLS.md §1.5: SMTP has no success-with-data).
	last, ok := c.respond([]byte("v=" + base64.StdEncoding.EncodeToString(serverSig)))
	if !ok {
		return
	}
	if len(last) != 0 {
		c.writef("501 5.5.2 Expected an empty response")
		return
	}
	c.user = user
	c.writef("235 2.7.0 Authentication successful")
}

// cramDigest is the CRAM-MD5 response for a challenge (RFC 2195 §2).
func cramDigest(user, secret, challenge string) string {
	return user + " " + protocoltest.CRAMMD5(secret, challenge)
}
