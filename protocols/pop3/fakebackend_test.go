package pop3_test

import (
	"crypto/md5"
	"crypto/tls"
	"encoding/hex"
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
	*protocoltest.BackendConn
	b      *fakeBackend
	user   string
	authed bool
}

func (b *fakeBackend) serve(nc net.Conn) {
	defer nc.Close()
	c := &fconn{BackendConn: protocoltest.NewBackendConn(nc, b.rec), b: b}
	c.Send(b.greeting)
	if strings.HasPrefix(b.greeting, "-ERR") {
		return
	}
	for {
		line, err := c.ReadLine()
		if err != nil {
			return
		}
		name, args, _ := strings.Cut(line, " ")
		name = strings.ToUpper(name)
		if c.authed {
			switch name {
			case "STAT":
				c.Send("+OK 2 320")
			case "QUIT":
				c.Send("+OK bye")
				return
			default:
				c.Send("+OK " + name + " done")
			}
			continue
		}
		switch name {
		case "CAPA":
			if b.capa == nil {
				c.Send("-ERR Unknown command")
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
			c.Conn.Write([]byte(sb.String()))
		case "STLS":
			if b.tls == nil {
				c.Send("-ERR STLS not available")
				continue
			}
			c.Conn.Write([]byte("+OK Begin TLS\r\n" + b.inject))
			if !c.StartTLS(b.tls) {
				return
			}
			b.rec.Write([]byte("[TLS]"))
		case "QUIT":
			c.Send("+OK fake signing off")
			return
		case "USER":
			if args == "refuse-user" {
				c.Send("-ERR [AUTH] Plaintext authentication disallowed")
				continue
			}
			c.user = args
			c.Send("+OK")
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
				c.Send("-ERR [AUTH] Authentication failed")
			}
		case "AUTH":
			if args == "" {
				c.Conn.Write([]byte("+OK\r\nPLAIN\r\nLOGIN\r\nCRAM-MD5\r\nGSSAPI\r\nSCRAM-SHA-1-PLUS\r\n.\r\n"))
				continue
			}
			if b.dropAuth {
				return
			}
			if b.noAuth {
				c.Send("-ERR [AUTH] Unsupported authentication mechanism")
				continue
			}
			mech, ir, hasIR := strings.Cut(args, " ")
			c.sasl().Authenticate(strings.ToUpper(mech), ir, hasIR)
		default:
			c.Send("-ERR Unknown command")
		}
	}
}

// verdict answers a password check; some users stand for backend states.
func (c *fconn) verdict(user, pass string) {
	switch user {
	case "down":
		c.Send("-ERR [SYS/TEMP] Backend storage down")
		return
	case "locked":
		c.Send("-ERR [IN-USE] Maildrop locked")
		return
	case "early":
		c.Send("-ERR [LOGIN-DELAY] Logged in too recently")
		return
	}
	if pw, ok := c.b.users[user]; ok && pw == pass {
		c.authed = true
		c.Send("+OK Logged in")
		return
	}
	c.Send("-ERR [AUTH] Authentication failed")
}

// sasl is the server side of one AUTH exchange (RFC 5034).
func (c *fconn) sasl() *protocoltest.SASLServer {
	return &protocoltest.SASLServer{
		Users:    c.b.users,
		Token:    c.b.token,
		Send:     c.Send,
		ReadLine: c.ReadLine,
		Cont:     "+ ",
		Verdict:  c.verdict,
		Success: func(_, name string) {
			c.authed = true
			c.Send("+OK " + name + " authentication successful")
		},
		Cancelled:   "-ERR Authentication cancelled",
		BadBase64:   "-ERR Invalid base64",
		Malformed:   "-ERR Malformed",
		NoIR:        "-ERR No initial response for CRAM-MD5",
		Failed:      "-ERR [AUTH] Authentication failed",
		BadToken:    "-ERR [AUTH] Invalid credentials",
		NotEmpty:    "-ERR Expected an empty response",
		Unsupported: "-ERR [AUTH] Unsupported authentication mechanism",
	}
}

func cramDigest(secret, challenge string) string { return protocoltest.CRAMMD5(secret, challenge) }

func apopDigest(timestamp, secret string) string {
	sum := md5.Sum([]byte(timestamp + secret))
	return hex.EncodeToString(sum[:])
}
