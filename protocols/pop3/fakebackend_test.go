package pop3_test

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
	"testing"

	"github.com/mailgate/mailgate/protocols/protocoltest"
)

// fakeBackend is a scripted POP3 server for what the demo backend does not
// do (CRAM-MD5, SCRAM, XOAUTH2, OAUTHBEARER, STLS, response codes...). It
// records every byte it receives (decrypted inside TLS, after a "[TLS]"
// marker).
type fakeBackend struct {
	t        *testing.T
	addr     string
	rec      *protocoltest.SyncBuffer
	greeting string   // default "+OK fake POP3 ready <1896.697170952@backend.test>"
	capa     []string // CAPA lines; nil: -ERR
	tls      *tls.Config
	inject   string // written right after the STLS +OK, in the same write
	users    map[string]string
	token    string // the valid OAuth bearer token
	dropAuth bool   // close the connection instead of answering a login
	noAuth   bool   // refuse every AUTH mechanism
}

const fakeTimestamp = "<1896.697170952@backend.test>"

var fakeCapa = []string{"TOP", "UIDL", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING", "USER",
	"SASL PLAIN LOGIN CRAM-MD5 SCRAM-SHA-1 SCRAM-SHA-256 SCRAM-SHA-256-PLUS XOAUTH2 OAUTHBEARER GSSAPI EXTERNAL",
	"XCLIENT", "IMPLEMENTATION fake"}

func newFakeBackend(t *testing.T, mods ...func(*fakeBackend)) *fakeBackend {
	t.Helper()
	b := &fakeBackend{
		t:     t,
		rec:   &protocoltest.SyncBuffer{},
		capa:  fakeCapa,
		users: map[string]string{"alice": "pass word", "tim smith": "tanstaaftanstaaf", "user": "pencil"},
		token: "vF9dft4qmTc2Nvb3RlckBhbHRhdmlzdGEuY29tCg==",
	}
	b.greeting = "+OK fake POP3 ready " + fakeTimestamp
	for _, m := range mods {
		m(b)
	}
	b.addr = protocoltest.Serve(t, b.serve)
	return b
}

// fconn is one backend connection.
type fconn struct {
	b      *fakeBackend
	conn   net.Conn
	r      *bufio.Reader
	user   string
	authed bool
}

func (c *fconn) send(s string) { fmt.Fprintf(c.conn, "%s\r\n", s) }

func (c *fconn) readLine() (string, error) {
	l, err := c.r.ReadString('\n')
	return strings.TrimRight(l, "\r\n"), err
}

func (b *fakeBackend) serve(nc net.Conn) {
	defer nc.Close()
	c := &fconn{b: b, conn: nc}
	c.r = bufio.NewReader(&protocoltest.RecConn{Conn: nc, Rec: b.rec})
	c.send(b.greeting)
	if strings.HasPrefix(b.greeting, "-ERR") {
		return
	}
	for {
		line, err := c.readLine()
		if err != nil {
			return
		}
		name, args, _ := strings.Cut(line, " ")
		name = strings.ToUpper(name)
		if c.authed {
			switch name {
			case "STAT":
				c.send("+OK 2 320")
			case "QUIT":
				c.send("+OK bye")
				return
			default:
				c.send("+OK " + name + " done")
			}
			continue
		}
		switch name {
		case "CAPA":
			if b.capa == nil {
				c.send("-ERR Unknown command")
				continue
			}
			var sb strings.Builder
			sb.WriteString("+OK Capability list follows\r\n")
			for _, l := range b.capa {
				if strings.HasPrefix(l, ".") {
					sb.WriteString(".")
				}
				sb.WriteString(l + "\r\n")
			}
			sb.WriteString(".\r\n")
			c.conn.Write([]byte(sb.String()))
		case "STLS":
			if b.tls == nil {
				c.send("-ERR STLS not available")
				continue
			}
			c.conn.Write([]byte("+OK Begin TLS\r\n" + b.inject))
			tc := tls.Server(nc, b.tls)
			if tc.Handshake() != nil {
				return
			}
			b.rec.Write([]byte("[TLS]"))
			c.conn = tc
			c.r = bufio.NewReader(&protocoltest.RecConn{Conn: tc, Rec: b.rec})
		case "QUIT":
			c.send("+OK fake signing off")
			return
		case "USER":
			if args == "refuse-user" {
				c.send("-ERR [AUTH] Plaintext authentication disallowed")
				continue
			}
			c.user = args
			c.send("+OK")
		case "PASS":
			if b.dropAuth {
				return
			}
			c.verdict(c.user, args)
		case "APOP":
			if b.dropAuth {
				return
			}
			i := strings.LastIndexByte(args, ' ')
			user, digest := args[:i], args[i+1:]
			sum := md5.Sum([]byte(fakeTimestamp + b.users[user]))
			if _, ok := b.users[user]; ok && hex.EncodeToString(sum[:]) == digest {
				c.verdict(user, b.users[user])
			} else {
				c.send("-ERR [AUTH] Authentication failed")
			}
		case "AUTH":
			if args == "" {
				c.conn.Write([]byte("+OK\r\nPLAIN\r\nLOGIN\r\nCRAM-MD5\r\nGSSAPI\r\nSCRAM-SHA-1-PLUS\r\n.\r\n"))
				continue
			}
			if b.dropAuth {
				return
			}
			if b.noAuth {
				c.send("-ERR [AUTH] Unsupported authentication mechanism")
				continue
			}
			mech, ir, hasIR := strings.Cut(args, " ")
			c.authenticate(strings.ToUpper(mech), ir, hasIR)
		default:
			c.send("-ERR Unknown command")
		}
	}
}

// verdict answers a password check; some users stand for backend states.
func (c *fconn) verdict(user, pass string) {
	switch user {
	case "down":
		c.send("-ERR [SYS/TEMP] Backend storage down")
		return
	case "locked":
		c.send("-ERR [IN-USE] Maildrop locked")
		return
	case "early":
		c.send("-ERR [LOGIN-DELAY] Logged in too recently")
		return
	}
	if pw, ok := c.b.users[user]; ok && pw == pass {
		c.authed = true
		c.send("+OK Logged in")
		return
	}
	c.send("-ERR [AUTH] Authentication failed")
}

// respond sends a challenge and reads the answer; ok is false when the
// client cancelled or sent garbage (already answered).
func (c *fconn) respond(challenge []byte) ([]byte, bool) {
	c.send("+ " + base64.StdEncoding.EncodeToString(challenge))
	line, err := c.readLine()
	if err != nil {
		return nil, false
	}
	if line == "*" {
		c.send("-ERR Authentication cancelled")
		return nil, false
	}
	b, err := base64.StdEncoding.DecodeString(line)
	if err != nil {
		c.send("-ERR Invalid base64")
		return nil, false
	}
	return b, true
}

// authenticate runs one SASL exchange (RFC 5034).
func (c *fconn) authenticate(mech, ir string, hasIR bool) {
	var first []byte
	if hasIR && ir != "=" {
		var err error
		if first, err = base64.StdEncoding.DecodeString(ir); err != nil {
			c.send("-ERR Invalid base64")
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
			c.send("-ERR Malformed")
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
			c.send("-ERR No initial response for CRAM-MD5")
			return
		}
		chal := "<1896.697170952@backend.test>"
		resp, ok := c.respond([]byte(chal))
		if !ok {
			return
		}
		i := bytes.LastIndexByte(resp, ' ')
		user, digest := string(resp[:i]), string(resp[i+1:])
		m := hmac.New(md5.New, []byte(c.b.users[user]))
		m.Write([]byte(chal))
		if _, known := c.b.users[user]; known && hex.EncodeToString(m.Sum(nil)) == digest {
			c.authed = true
			c.send("+OK CRAM-MD5 authentication successful")
		} else {
			c.send("-ERR [AUTH] Authentication failed")
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
			c.authed = true
			c.send("+OK " + mech + " authentication successful")
			return
		}
		js := `{"status":"invalid_token","scope":"mail","openid-configuration":"https://example.com/.well-known/openid-configuration"}`
		if mech == "XOAUTH2" {
			js = `{"status":"401","schemes":"bearer","scope":"https://mail.google.com/"}`
		}
		if _, ok := c.respond([]byte(js)); !ok {
			return
		}
		c.send("-ERR [AUTH] Invalid credentials")
	default:
		c.send("-ERR [AUTH] Unsupported authentication mechanism")
	}
}

// scram is the server side of RFC 5802 with a fixed salt and nonce suffix.
func (c *fconn) scram(h func() hash.Hash, clientFirst string) {
	parts := strings.SplitN(clientFirst, ",", 3)
	if len(parts) != 3 {
		c.send("-ERR Malformed")
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
	authMsg := bare + "," + serverFirst + "," + withoutProof
	proof, serverSig := protocoltest.SCRAMKeys(h, c.b.users[user], salt, authMsg)
	if _, known := c.b.users[user]; !known || base64.StdEncoding.EncodeToString(proof) != proofB64 {
		c.send("-ERR [AUTH] Authentication failed")
		return
	}
	// POP3 has no success with data: v= is a challenge, answered with an
	// empty line, then +OK (RFC 5034 §4).
	last, ok := c.respond([]byte("v=" + base64.StdEncoding.EncodeToString(serverSig)))
	if !ok {
		return
	}
	if len(last) != 0 {
		c.send("-ERR Expected an empty response")
		return
	}
	c.authed = true
	c.send("+OK SCRAM authentication successful")
}

func cramDigest(secret, challenge string) string { return protocoltest.CRAMMD5(secret, challenge) }

func apopDigest(timestamp, secret string) string {
	sum := md5.Sum([]byte(timestamp + secret))
	return hex.EncodeToString(sum[:])
}
