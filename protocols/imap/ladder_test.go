package imap_test

import (
	"crypto/tls"
	"encoding/base64"
	"io"
	"log"
	"net"
	"strings"
	"testing"
	"time"

	goimap "github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapserver"
	"github.com/emersion/go-imap/v2/imapserver/imapmemserver"

	"github.com/mailgate/mailgate/protocols"
	"github.com/mailgate/mailgate/protocols/protocoltest"
)

// memBackend starts go-imap's in-memory server on 127.0.0.1:0 with users
// alice/"pass word" and bob/"pässword". With tlsCfg it offers STARTTLS.
// Every byte it receives is recorded.
func memBackend(t *testing.T, tlsCfg *tls.Config) (addr string, rec *protocoltest.SyncBuffer) {
	t.Helper()
	mem := imapmemserver.New()
	for _, up := range [][2]string{{"alice", "pass word"}, {"bob", "pässword"}} {
		u := imapmemserver.NewUser(up[0], up[1])
		if err := u.Create("INBOX", nil); err != nil {
			t.Fatal(err)
		}
		mem.AddUser(u)
	}
	srv := imapserver.New(&imapserver.Options{
		NewSession: func(*imapserver.Conn) (imapserver.Session, *imapserver.GreetingData, error) {
			return mem.NewSession(), nil, nil
		},
		Caps:         goimap.CapSet{goimap.CapIMAP4rev1: {}},
		InsecureAuth: true,
		TLSConfig:    tlsCfg,
		Logger:       log.New(io.Discard, "", 0),
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	rec = &protocoltest.SyncBuffer{}
	go srv.Serve(protocoltest.RecListener{Listener: ln, Rec: rec})
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String(), rec
}

// capsOf extracts the capability list from a CAPABILITY line or code.
func capsOfLine(t *testing.T, l string) []string {
	t.Helper()
	if i := strings.Index(l, "[CAPABILITY "); i >= 0 {
		end := strings.IndexByte(l[i:], ']')
		return strings.Fields(l[i+len("[CAPABILITY ") : i+end])
	}
	if rest, ok := strings.CutPrefix(l, "* CAPABILITY "); ok {
		return strings.Fields(rest)
	}
	t.Fatalf("no capabilities in %q", l)
	return nil
}

// TestLadder walks greeted → CAPABILITY → STARTTLS → CAPABILITY → LOGIN
// against go-imap's memory server, with a command pipelined behind LOGIN.
func TestLadder(t *testing.T) {
	addr, rec := memBackend(t, nil)
	h := newHarness(t, addr)
	c := h.c

	greeting := c.expect("* OK [CAPABILITY ")
	if caps := capsOfLine(t, greeting); !protocoltest.HasCap(caps, "STARTTLS") || !protocoltest.HasCap(caps, "IMAP4rev1") || !protocoltest.HasCap(caps, "AUTH=PLAIN") {
		t.Errorf("greeting capabilities = %q, want IMAP4rev1, AUTH=PLAIN and STARTTLS", caps)
	}

	c.send("a CAPABILITY")
	untagged, res := c.until("a")
	if len(untagged) != 1 || !protocoltest.HasCap(capsOfLine(t, untagged[0]), "STARTTLS") || res != "a OK CAPABILITY completed" {
		t.Fatalf("CAPABILITY = %q, %q", untagged, res)
	}

	c.send("b STARTTLS")
	c.expect("b OK Begin TLS negotiation now")
	c.startTLS(h.ClientTLS)

	c.send("c CAPABILITY")
	untagged, res = c.until("c")
	if len(untagged) != 1 || protocoltest.HasCap(capsOfLine(t, untagged[0]), "STARTTLS") || !strings.HasPrefix(res, "c OK") {
		t.Fatalf("CAPABILITY after TLS = %q, %q", untagged, res)
	}

	c.send("d STARTTLS")
	c.expect("d BAD")

	// LOGIN with a command pipelined behind it, in one write.
	c.write("e LOGIN alice \"pass word\"\r\nf LIST \"\" \"*\"\r\n")
	_, res = c.until("e")
	if !strings.HasPrefix(res, "e OK") {
		t.Fatalf("LOGIN = %q", res)
	}
	if err := h.Result(); err != nil {
		t.Fatalf("PreAuth() = %v, want nil", err)
	}
	if !h.Session.ClientTLS {
		t.Error("Session.ClientTLS = false after STARTTLS")
	}
	h.WantEvents("tls", "attempt alice LOGIN", "ok alice LOGIN")

	// The pipelined command is still in Client.R, and the backend never saw it.
	if strings.Contains(rec.String(), "LIST") {
		t.Error("pipelined command reached the backend before the verdict")
	}
	h.Session.Client.Conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	held, err := h.Session.Client.ReadLine(1024)
	if err != nil || string(held) != `f LIST "" "*"` {
		t.Fatalf("Client.ReadLine() = %q, %v, want the pipelined LIST", held, err)
	}
	// The backend session is authenticated: relay the held command by hand.
	if err := h.Session.Backend.WriteLine(string(held)); err != nil {
		t.Fatal(err)
	}
	h.Session.Backend.Conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		l, err := h.Session.Backend.ReadLine(4096)
		if err != nil {
			t.Fatalf("backend read: %v", err)
		}
		if strings.HasPrefix(string(l), "f ") {
			if !strings.HasPrefix(string(l), "f OK") {
				t.Fatalf("relayed LIST = %q, want OK", l)
			}
			break
		}
	}
}

func TestLoginLiterals(t *testing.T) {
	tests := []struct {
		name   string
		send   []string // written in order; "+" means wait for a continuation
		result string
		user   string
	}{
		{name: "sync literals", send: []string{"a LOGIN {5}\r\n", "+", "alice {9}\r\n", "+", "pass word\r\n"}, result: "a OK", user: "alice"},
		{name: "non-sync literals", send: []string{"a LOGIN {5+}\r\nalice {9+}\r\npass word\r\n"}, result: "a OK", user: "alice"},
		{name: "8-bit password as literal", send: []string{"a LOGIN bob {9+}\r\npässword\r\n"}, result: "a OK", user: "bob"},
		{name: "quoted", send: []string{"a LOGIN \"alice\" \"pass word\"\r\n"}, result: "a OK", user: "alice"},
		{name: "wrong password", send: []string{"a LOGIN alice {5+}\r\nwrong\r\n"}, result: "a NO", user: "alice"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			addr, rec := memBackend(t, nil)
			h := newHarness(t, addr, func(s *protocols.Session) { s.ClientTLS = true })
			c := h.c
			c.expect("* OK")
			for _, s := range tt.send {
				if s == "+" {
					c.expect("+ ")
					continue
				}
				c.write(s)
			}
			_, res := c.until("a")
			if !strings.HasPrefix(res, tt.result) {
				t.Fatalf("LOGIN = %q, want %s", res, tt.result)
			}
			if tt.result == "a OK" {
				h.WantResult(nil)
				h.WantEvents("attempt "+tt.user+" LOGIN", "ok "+tt.user+" LOGIN")
			} else {
				h.Running()
				h.WantEvents("attempt "+tt.user+" LOGIN", "fail "+tt.user+" LOGIN")
				c.send("b NOOP")
				c.expect("b OK")
			}
			if strings.Contains(rec.String(), "{5+}") || strings.Contains(rec.String(), "{9+}") {
				t.Error("backend received a non-synchronizing literal")
			}
		})
	}
}

func TestAuthenticatePlainMemServer(t *testing.T) {
	ir := base64.StdEncoding.EncodeToString([]byte("\x00alice\x00pass word"))
	for _, withIR := range []bool{true, false} {
		t.Run(map[bool]string{true: "with IR", false: "without IR"}[withIR], func(t *testing.T) {
			addr, _ := memBackend(t, nil)
			h := newHarness(t, addr, func(s *protocols.Session) { s.ClientTLS = true })
			c := h.c
			c.expect("* OK")
			if withIR {
				c.send("a AUTHENTICATE PLAIN " + ir)
			} else {
				c.send("a AUTHENTICATE PLAIN")
				if l := c.line(); l != "+ " {
					t.Fatalf("continuation = %q, want %q", l, "+ ")
				}
				c.send(ir)
			}
			_, res := c.until("a")
			if !strings.HasPrefix(res, "a OK") {
				t.Fatalf("AUTHENTICATE = %q", res)
			}
			h.WantResult(nil)
			h.WantEvents("attempt alice PLAIN", "ok alice PLAIN")
		})
	}
}

func TestRequireTLSForLogin(t *testing.T) {
	addr, rec := memBackend(t, nil)
	h := newHarness(t, addr, func(s *protocols.Session) { s.RequireTLSForLogin = true })
	c := h.c
	caps := capsOfLine(t, c.expect("* OK [CAPABILITY "))
	if !protocoltest.HasCap(caps, "LOGINDISABLED") || protocoltest.HasCap(caps, "AUTH=PLAIN") || !protocoltest.HasCap(caps, "STARTTLS") {
		t.Errorf("plain-link capabilities = %q, want LOGINDISABLED and STARTTLS, no AUTH=PLAIN", caps)
	}
	c.send("a LOGIN alice \"pass word\"")
	c.expect("a NO [PRIVACYREQUIRED]")
	c.send("b LOGIN alice {9}")
	c.expect("b NO [PRIVACYREQUIRED]") // refused instead of "+"
	c.send("c AUTHENTICATE PLAIN " + base64.StdEncoding.EncodeToString([]byte("\x00alice\x00pass word")))
	c.expect("c NO [PRIVACYREQUIRED]")
	if strings.Contains(rec.String(), "pass word") || strings.Contains(rec.String(), "LOGIN") {
		t.Error("a cleartext login reached the backend")
	}
	c.send("d STARTTLS")
	c.expect("d OK")
	c.startTLS(h.ClientTLS)
	c.send("e CAPABILITY")
	untagged, _ := c.until("e")
	caps = capsOfLine(t, untagged[0])
	if protocoltest.HasCap(caps, "LOGINDISABLED") || !protocoltest.HasCap(caps, "AUTH=PLAIN") || protocoltest.HasCap(caps, "STARTTLS") {
		t.Errorf("TLS-link capabilities = %q, want AUTH=PLAIN, no LOGINDISABLED or STARTTLS", caps)
	}
	c.send("f LOGIN alice \"pass word\"")
	c.expect("f OK")
	h.WantResult(nil)
	h.WantEvents("tls", "attempt alice LOGIN", "ok alice LOGIN")
}

func TestBackendSTARTTLS(t *testing.T) {
	srvTLS, cliTLS := protocoltest.TLSConfigs(t)
	addr, rec := memBackend(t, srvTLS)
	h := newHarness(t, addr, func(s *protocols.Session) {
		s.BackendStartTLS = cliTLS
		s.ClientTLS = true
		s.ClientStartTLS = nil
	})
	c := h.c
	caps := capsOfLine(t, c.expect("* OK [CAPABILITY "))
	if protocoltest.HasCap(caps, "STARTTLS") || !protocoltest.HasCap(caps, "AUTH=PLAIN") {
		t.Errorf("greeting capabilities = %q", caps)
	}
	c.send("a LOGIN alice \"pass word\"")
	c.expect("a OK")
	h.WantResult(nil)
	// The backend saw STARTTLS in the clear, then only TLS records; the
	// recorder sees raw bytes, so the password never appears.
	if !strings.Contains(rec.String(), "STARTTLS") || strings.Contains(rec.String(), "pass word") {
		t.Errorf("backend bytes: STARTTLS sent %v, password in clear %v",
			strings.Contains(rec.String(), "STARTTLS"), strings.Contains(rec.String(), "pass word"))
	}
}

func TestBackendSTARTTLSMissing(t *testing.T) {
	_, cliTLS := protocoltest.TLSConfigs(t)
	addr, _ := memBackend(t, nil) // offers no STARTTLS
	h := newHarness(t, addr, func(s *protocols.Session) { s.BackendStartTLS = cliTLS })
	h.c.expect("* BYE [UNAVAILABLE]")
	h.WantResult(protocols.ErrBackend)
}
