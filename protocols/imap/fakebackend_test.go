package imap_test

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
	"io"
	"net"
	"strconv"
	"strings"
	"testing"

	"github.com/mailgate/mailgate/protocols/protocoltest"
)

// fakeBackend is a small scripted IMAP server for what go-imap's memory
// server cannot do (CRAM-MD5, SCRAM, XOAUTH2, OAUTHBEARER, ID, PREAUTH...).
// It records every byte it receives (plaintext, also inside TLS).
type fakeBackend struct {
	t        *testing.T
	addr     string
	rec      *protocoltest.SyncBuffer
	greeting string // full greeting line; default "* OK [CAPABILITY <caps>] fake ready"
	caps     string
	tls      *tls.Config
	users    map[string]string
	token    string // the valid OAuth bearer token
	idResp   string // untagged lines answering ID, CRLF-terminated
	byeLogin bool   // answer LOGIN and AUTHENTICATE with BYE and close
}

const fakeCaps = "IMAP4rev1 SASL-IR ID LITERAL+ AUTH=PLAIN AUTH=LOGIN AUTH=CRAM-MD5 AUTH=SCRAM-SHA-1 AUTH=SCRAM-SHA-256 AUTH=XOAUTH2 AUTH=OAUTHBEARER"

func newFakeBackend(t *testing.T, mods ...func(*fakeBackend)) *fakeBackend {
	t.Helper()
	b := &fakeBackend{
		t:     t,
		rec:   &protocoltest.SyncBuffer{},
		caps:  fakeCaps,
		users: map[string]string{"alice": "pass word", "tim smith": "tanstaaftanstaaf", "user": "pencil"},
		token: "vF9dft4qmTc2Nvb3RlckBhbHRhdmlzdGEuY29tCg==",
	}
	for _, m := range mods {
		m(b)
	}
	if b.greeting == "" {
		b.greeting = "* OK [CAPABILITY " + b.caps + "] fake ready"
	}
	b.addr = protocoltest.Serve(t, b.serve)
	return b
}

// fconn is one backend connection.
type fconn struct {
	b    *fakeBackend
	conn net.Conn
	r    *bufio.Reader
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
	c := &fconn{b: b, conn: nc}
	c.r = bufio.NewReader(&protocoltest.RecConn{Conn: nc, Rec: b.rec})
	c.writef("%s", b.greeting)
	if strings.HasPrefix(b.greeting, "* BYE") {
		return
	}
	for {
		line, err := c.readLine()
		if err != nil {
			return
		}
		tag, rest, _ := strings.Cut(line, " ")
		name, args, _ := strings.Cut(rest, " ")
		switch strings.ToUpper(name) {
		case "CAPABILITY":
			c.writef("* CAPABILITY %s", b.caps)
			c.writef("%s OK CAPABILITY completed", tag)
		case "NOOP":
			c.writef("%s OK NOOP completed", tag)
		case "LOGOUT":
			c.writef("* BYE Logging out")
			c.writef("%s OK LOGOUT completed", tag)
			return
		case "ID":
			if b.idResp != "" {
				io.WriteString(nc, b.idResp)
			} else {
				c.writef("* ID (\"name\" \"fake\")")
			}
			c.writef("%s OK ID completed", tag)
		case "STARTTLS":
			if b.tls == nil {
				c.writef("%s BAD no TLS", tag)
				continue
			}
			c.writef("%s OK Begin TLS", tag)
			tc := tls.Server(nc, b.tls)
			if tc.Handshake() != nil {
				return
			}
			c.conn = tc
			c.r = bufio.NewReader(&protocoltest.RecConn{Conn: tc, Rec: b.rec})
		case "LOGIN":
			if b.byeLogin {
				c.writef("* BYE Server going down")
				return
			}
			toks, err := c.readArgs(args)
			if err != nil || len(toks) != 2 {
				c.writef("%s BAD Invalid arguments", tag)
				continue
			}
			c.verdict(tag, toks[0], toks[1])
		case "AUTHENTICATE":
			if b.byeLogin {
				c.writef("* BYE Server going down")
				return
			}
			mech, ir, hasIR := strings.Cut(args, " ")
			if !c.authenticate(tag, strings.ToUpper(mech), ir, hasIR) {
				return
			}
		default:
			c.writef("%s BAD Unknown command", tag)
		}
	}
}

func (c *fconn) verdict(tag, user, pass string) {
	if user == "down" {
		c.writef("%s NO [UNAVAILABLE] Backend storage down", tag)
		return
	}
	if pw, ok := c.b.users[user]; ok && pw == pass {
		c.writef("%s OK [CAPABILITY IMAP4rev1 IDLE UNAUTHENTICATE] Logged in", tag)
		return
	}
	c.writef("%s NO [AUTHENTICATIONFAILED] Authentication failed", tag)
}

// readArgs parses atoms, quoted strings and synchronizing literals.
func (c *fconn) readArgs(line string) ([]string, error) {
	var toks []string
	for {
		line = strings.TrimLeft(line, " ")
		switch {
		case line == "":
			return toks, nil
		case line[0] == '"':
			var sb strings.Builder
			i := 1
			for ; i < len(line) && line[i] != '"'; i++ {
				if line[i] == '\\' {
					i++
				}
				sb.WriteByte(line[i])
			}
			toks = append(toks, sb.String())
			line = line[i+1:]
		case line[0] == '{':
			n, err := strconv.Atoi(strings.TrimSuffix(line[1:len(line)-1], "+"))
			if err != nil {
				return nil, err
			}
			if !strings.HasSuffix(line, "+}") {
				c.writef("+ go ahead")
			}
			buf := make([]byte, n)
			if _, err := io.ReadFull(c.r, buf); err != nil {
				return nil, err
			}
			toks = append(toks, string(buf))
			if line, err = c.readLine(); err != nil {
				return nil, err
			}
		default:
			tok, rest, _ := strings.Cut(line, " ")
			toks = append(toks, tok)
			line = rest
		}
	}
}

// respond sends a challenge and reads the answer; ok is false when the
// client cancelled (already answered).
func (c *fconn) respond(tag string, challenge []byte) ([]byte, bool) {
	c.writef("+ %s", base64.StdEncoding.EncodeToString(challenge))
	line, err := c.readLine()
	if err != nil {
		return nil, false
	}
	if line == "*" {
		c.writef("%s BAD Authentication cancelled", tag)
		return nil, false
	}
	b, err := base64.StdEncoding.DecodeString(line)
	if err != nil {
		c.writef("%s BAD Invalid base64", tag)
		return nil, false
	}
	return b, true
}

// authenticate runs one SASL exchange; false ends the connection.
func (c *fconn) authenticate(tag, mech, ir string, hasIR bool) bool {
	var first []byte
	if hasIR && ir != "=" {
		var err error
		if first, err = base64.StdEncoding.DecodeString(ir); err != nil {
			c.writef("%s BAD Invalid base64", tag)
			return true
		}
	}
	next := func(ch string) ([]byte, bool) {
		if hasIR {
			hasIR = false
			return first, true
		}
		return c.respond(tag, []byte(ch))
	}
	switch mech {
	case "PLAIN":
		msg, ok := next("")
		if !ok {
			return true
		}
		parts := bytes.Split(msg, []byte{0})
		if len(parts) != 3 {
			c.writef("%s BAD Malformed", tag)
			return true
		}
		c.verdict(tag, string(parts[1]), string(parts[2]))
	case "LOGIN":
		user, ok := next("Username:")
		if !ok {
			return true
		}
		pass, ok := c.respond(tag, []byte("Password:"))
		if !ok {
			return true
		}
		c.verdict(tag, string(user), string(pass))
	case "CRAM-MD5":
		if hasIR {
			c.writef("%s BAD No initial response for CRAM-MD5", tag)
			return true
		}
		chal := "<1896.697170952@backend.test>"
		resp, ok := c.respond(tag, []byte(chal))
		if !ok {
			return true
		}
		i := bytes.LastIndexByte(resp, ' ')
		user, digest := string(resp[:i]), string(resp[i+1:])
		m := hmac.New(md5.New, []byte(c.b.users[user]))
		m.Write([]byte(chal))
		if _, known := c.b.users[user]; known && hex.EncodeToString(m.Sum(nil)) == digest {
			c.writef("%s OK CRAM-MD5 authentication successful", tag)
		} else {
			c.writef("%s NO [AUTHENTICATIONFAILED] Authentication failed", tag)
		}
	case "SCRAM-SHA-1", "SCRAM-SHA-256":
		h := sha256.New
		if mech == "SCRAM-SHA-1" {
			h = sha1.New
		}
		cf, ok := next("")
		if !ok {
			return true
		}
		c.scram(tag, h, string(cf))
	case "XOAUTH2", "OAUTHBEARER":
		msg, ok := next("")
		if !ok {
			return true
		}
		user, token := protocoltest.ParseOAuth(mech, string(msg))
		if _, known := c.b.users[user]; known && token == c.b.token {
			c.writef("%s OK %s authentication successful", tag, mech)
			return true
		}
		js := `{"status":"invalid_token","scope":"mail","openid-configuration":"https://example.com/.well-known/openid-configuration"}`
		if mech == "XOAUTH2" {
			js = `{"status":"401","schemes":"bearer","scope":"https://mail.google.com/"}`
		}
		if _, ok := c.respond(tag, []byte(js)); !ok {
			return true
		}
		c.writef("%s NO [AUTHENTICATIONFAILED] Invalid credentials", tag)
	default:
		c.writef("%s NO Unsupported mechanism", tag)
	}
	return true
}

// scram is the server side of RFC 5802 with a fixed salt and nonce suffix.
func (c *fconn) scram(tag string, h func() hash.Hash, clientFirst string) {
	parts := strings.SplitN(clientFirst, ",", 3)
	if len(parts) != 3 {
		c.writef("%s BAD Malformed", tag)
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
	final, ok := c.respond(tag, []byte(serverFirst))
	if !ok {
		return
	}
	withoutProof, proofB64, _ := strings.Cut(string(final), ",p=")
	authMsg := bare + "," + serverFirst + "," + withoutProof
	proof, serverSig := protocoltest.SCRAMKeys(h, c.b.users[user], salt, authMsg)
	if _, known := c.b.users[user]; !known || base64.StdEncoding.EncodeToString(proof) != proofB64 {
		c.writef("%s NO [AUTHENTICATIONFAILED] Authentication failed", tag)
		return
	}
	// Success with data: v= as a challenge, then an empty client response.
	last, ok := c.respond(tag, []byte("v="+base64.StdEncoding.EncodeToString(serverSig)))
	if !ok {
		return
	}
	if len(last) != 0 {
		c.writef("%s BAD Expected an empty response", tag)
		return
	}
	c.writef("%s OK SCRAM authentication successful", tag)
}
