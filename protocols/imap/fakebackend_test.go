package imap_test

import (
	"crypto/tls"
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
	addr     string
	rec      *protocoltest.SyncBuffer
	greeting string // full greeting line; default "* OK [CAPABILITY <caps>] fake ready"
	// greetingFunc, when set, makes each connection's greeting instead.
	greetingFunc func() string
	caps         string
	tls          *tls.Config
	users        map[string]string
	token        string // the valid OAuth bearer token
	idResp       string // untagged lines answering ID, CRLF-terminated
	byeLogin     bool   // answer LOGIN and AUTHENTICATE with BYE and close
}

const fakeCaps = "IMAP4rev1 SASL-IR ID LITERAL+ AUTH=PLAIN AUTH=LOGIN AUTH=CRAM-MD5 AUTH=SCRAM-SHA-1 AUTH=SCRAM-SHA-256 AUTH=XOAUTH2 AUTH=OAUTHBEARER"

func newFakeBackend(t *testing.T, mods ...func(*fakeBackend)) *fakeBackend {
	t.Helper()
	b := &fakeBackend{
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
	*protocoltest.BackendConn
	b *fakeBackend
}

func (b *fakeBackend) serve(nc net.Conn) {
	defer nc.Close()
	c := &fconn{BackendConn: protocoltest.NewBackendConn(nc, b.rec), b: b}
	greeting := b.greeting
	if b.greetingFunc != nil {
		greeting = b.greetingFunc()
	}
	c.Send(greeting)
	if strings.HasPrefix(b.greeting, "* BYE") {
		return
	}
	for {
		line, err := c.ReadLine()
		if err != nil {
			return
		}
		tag, rest, _ := strings.Cut(line, " ")
		name, args, _ := strings.Cut(rest, " ")
		switch strings.ToUpper(name) {
		case "CAPABILITY":
			c.Writef("* CAPABILITY %s", b.caps)
			c.Writef("%s OK CAPABILITY completed", tag)
		case "NOOP":
			c.Writef("%s OK NOOP completed", tag)
		case "LOGOUT":
			c.Writef("* BYE Logging out")
			c.Writef("%s OK LOGOUT completed", tag)
			return
		case "ID":
			if b.idResp != "" {
				io.WriteString(nc, b.idResp)
			} else {
				c.Writef("* ID (\"name\" \"fake\")")
			}
			c.Writef("%s OK ID completed", tag)
		case "STARTTLS":
			if b.tls == nil {
				c.Writef("%s BAD no TLS", tag)
				continue
			}
			c.Writef("%s OK Begin TLS", tag)
			if !c.StartTLS(b.tls) {
				return
			}
		case "LOGIN":
			if b.byeLogin {
				c.Writef("* BYE Server going down")
				return
			}
			toks, err := c.readArgs(args)
			if err != nil || len(toks) != 2 {
				c.Writef("%s BAD Invalid arguments", tag)
				continue
			}
			c.verdict(tag, toks[0], toks[1])
		case "AUTHENTICATE":
			if b.byeLogin {
				c.Writef("* BYE Server going down")
				return
			}
			mech, ir, hasIR := strings.Cut(args, " ")
			c.sasl(tag).Authenticate(strings.ToUpper(mech), ir, hasIR)
		default:
			c.Writef("%s BAD Unknown command", tag)
		}
	}
}

func (c *fconn) verdict(tag, user, pass string) {
	if user == "down" {
		c.Writef("%s NO [UNAVAILABLE] Backend storage down", tag)
		return
	}
	if pw, ok := c.b.users[user]; ok && pw == pass {
		c.Writef("%s OK [CAPABILITY IMAP4rev1 IDLE UNAUTHENTICATE] Logged in", tag)
		return
	}
	c.Writef("%s NO [AUTHENTICATIONFAILED] Authentication failed", tag)
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
				c.Writef("+ go ahead")
			}
			buf := make([]byte, n)
			if _, err := io.ReadFull(c.R, buf); err != nil {
				return nil, err
			}
			toks = append(toks, string(buf))
			if line, err = c.ReadLine(); err != nil {
				return nil, err
			}
		default:
			tok, rest, _ := strings.Cut(line, " ")
			toks = append(toks, tok)
			line = rest
		}
	}
}

// sasl is the server side of the exchange of AUTHENTICATE tag.
func (c *fconn) sasl(tag string) *protocoltest.SASLServer {
	r := func(text string) string { return tag + " " + text }
	return &protocoltest.SASLServer{
		Users:    c.b.users,
		Token:    c.b.token,
		Send:     c.Send,
		ReadLine: c.ReadLine,
		Cont:     "+ ",
		Verdict:  func(user, pass string) { c.verdict(tag, user, pass) },
		Success: func(_, name string) {
			c.Writef("%s OK %s authentication successful", tag, name)
		},
		Cancelled:   r("BAD Authentication cancelled"),
		BadBase64:   r("BAD Invalid base64"),
		Malformed:   r("BAD Malformed"),
		NoIR:        r("BAD No initial response for CRAM-MD5"),
		Failed:      r("NO [AUTHENTICATIONFAILED] Authentication failed"),
		BadToken:    r("NO [AUTHENTICATIONFAILED] Invalid credentials"),
		NotEmpty:    r("BAD Expected an empty response"),
		Unsupported: r("NO Unsupported mechanism"),
	}
}
