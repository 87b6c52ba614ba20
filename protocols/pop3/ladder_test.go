package pop3_test

import (
	"crypto/sha1"
	"crypto/sha256"
	"hash"
	"strings"
	"testing"

	"github.com/mailgate/mailgate/internal/demo"
	"github.com/mailgate/mailgate/protocols"
	"github.com/mailgate/mailgate/protocols/protocoltest"
)

var demoUsers = map[string]string{"alice@example.com": "alice-secret", "bob@example.com": "bob secret"}

// demoBackend starts the demo POP3 server (a real RFC 1939 server).
func demoBackend(t *testing.T) string {
	t.Helper()
	b, err := demo.StartPOP3("127.0.0.1:0", demoUsers)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b.Addr()
}

// TestLadderDemo walks greeted → CAPA → STLS → CAPA → USER/PASS against the
// demo backend, with STAT pipelined behind PASS.
func TestLadderDemo(t *testing.T) {
	h := newHarness(t, demoBackend(t))
	c := h.c
	greeting := c.expect("+OK mailgate demo POP3 server ready <")
	if !strings.HasSuffix(greeting, "@mailgate.demo>") {
		t.Errorf("greeting = %q: the APOP timestamp must be relayed unchanged", greeting)
	}

	caps := c.capa()
	if !protocoltest.HasCap(caps, "STLS") || !protocoltest.HasCap(caps, "USER") || saslLine(caps) != "SASL PLAIN LOGIN" || !protocoltest.HasCap(caps, "PIPELINING") {
		t.Errorf("plain-link CAPA = %q, want STLS, USER, SASL PLAIN LOGIN, PIPELINING", caps)
	}

	c.cmd("STLS", "+OK Begin TLS negotiation")
	c.startTLS(h.ClientTLS)
	caps = c.capa()
	if protocoltest.HasCap(caps, "STLS") || !protocoltest.HasCap(caps, "USER") {
		t.Errorf("TLS-link CAPA = %q, want USER and no STLS", caps)
	}
	c.cmd("STLS", "-ERR")

	c.cmd("USER alice@example.com", "+OK")
	c.write("PASS alice-secret\r\nSTAT\r\n")
	c.expect("+OK Logged in")
	if err := h.Result(); err != nil {
		t.Fatalf("PreAuth() = %v, want nil", err)
	}
	if !h.Session.ClientTLS {
		t.Error("Session.ClientTLS = false after STLS")
	}
	h.WantEvents("tls", "attempt alice@example.com USER", "ok alice@example.com USER")
	// STAT is still in Client.R; relayed by hand it works on the
	// authenticated backend session.
	if held := h.heldLine(); held != "STAT" {
		t.Fatalf("held line = %q, want STAT", held)
	}
	if got := h.backendRoundTrip("STAT"); !strings.HasPrefix(got, "+OK 1 ") {
		t.Fatalf("relayed STAT = %q, want +OK 1 <size>", got)
	}
}

// TestLadderScripted is the same ladder against the scripted backend, which
// records what it receives: the pipelined command must not reach it before
// the proxy relays, and USER must reach it only together with PASS.
func TestLadderScripted(t *testing.T) {
	b := newFakeBackend(t)
	h := newHarness(t, b.addr)
	c := h.c
	c.expect("+OK fake POP3 ready " + fakeTimestamp)
	c.capa()
	c.cmd("STLS", "+OK")
	c.startTLS(h.ClientTLS)
	c.capa()
	c.cmd("USER alice", "+OK")
	if strings.Contains(b.rec.String(), "USER") {
		t.Error("USER reached the backend before PASS")
	}
	c.write("PASS pass word\r\nRETR 1\r\n")
	c.expect("+OK Logged in")
	h.WantResult(nil)
	if got, want := b.rec.String(), "CAPA\r\nCAPA\r\nUSER alice\r\nPASS pass word\r\n"; got != want {
		t.Errorf("backend received %q, want %q", got, want)
	}
	if held := h.heldLine(); held != "RETR 1" {
		t.Fatalf("held line = %q, want RETR 1", held)
	}
}

func TestAPOP(t *testing.T) {
	t.Run("demo", func(t *testing.T) {
		h := newHarness(t, demoBackend(t), func(s *protocols.Session) { s.RequireTLSForLogin = true })
		g := h.c.expect("+OK")
		ts := g[strings.LastIndexByte(g, '<'):]
		// APOP sends no reusable secret: allowed on a plain link.
		h.c.cmd("APOP bob@example.com "+apopDigest(ts, "bob secret"), "+OK Logged in")
		h.WantResult(nil)
		h.WantEvents("attempt bob@example.com APOP", "ok bob@example.com APOP")
	})
	t.Run("wrong digest", func(t *testing.T) {
		h, _ := greeted(t)
		h.c.cmd("APOP alice "+apopDigest(fakeTimestamp, "wrong"), "-ERR [AUTH]")
		h.Running()
		h.WantEvents("attempt alice APOP", "fail alice APOP")
		h.c.cmd("APOP tim smith "+apopDigest(fakeTimestamp, "tanstaaftanstaaf"), "+OK")
		h.WantResult(nil)
	})
	t.Run("no timestamp", func(t *testing.T) {
		b := newFakeBackend(t, func(b *fakeBackend) { b.greeting = "+OK no APOP here" })
		h := newHarness(t, b.addr)
		h.c.expect("+OK no APOP here")
		h.c.cmd("APOP alice "+apopDigest(fakeTimestamp, "pass word"), "-ERR APOP not supported")
		if strings.Contains(b.rec.String(), "APOP") {
			t.Error("APOP reached a backend without a timestamp")
		}
	})
}

// TestAuthMechanisms runs every SASL mechanism, with and without initial
// response, against the scripted backend.
func TestAuthMechanisms(t *testing.T) {
	const token = "vF9dft4qmTc2Nvb3RlckBhbHRhdmlzdGEuY29tCg=="
	scram := func(h func() hash.Hash, mech string, ir bool) func(c *tclient) {
		return func(c *tclient) {
			bare := "n=alice,r=fyko+d2lbbFgONRv9qkxdawL"
			if ir {
				c.send("AUTH " + mech + " " + b64("n,,"+bare))
			} else {
				c.send("AUTH " + mech)
				if ch := c.challenge(); ch != "" {
					t.Fatalf("first challenge = %q, want empty", ch)
				}
				c.send(b64("n,," + bare))
			}
			final, wantV := protocoltest.SCRAMClientFinal(h, "pass word", bare, c.challenge())
			c.send(b64(final))
			if v := c.challenge(); v != wantV {
				t.Fatalf("server-final = %q, want %q", v, wantV)
			}
			c.send("") // no success with data in POP3: answer v= with an empty line
		}
	}
	tests := []struct {
		name, mech string
		run        func(c *tclient)
	}{
		{"PLAIN with IR", "PLAIN", func(c *tclient) { c.send("AUTH PLAIN " + b64("\x00alice\x00pass word")) }},
		{"PLAIN without IR", "PLAIN", func(c *tclient) {
			c.send("AUTH PLAIN")
			c.challenge()
			c.send(b64("\x00alice\x00pass word"))
		}},
		{"LOGIN", "LOGIN", func(c *tclient) {
			c.send("AUTH LOGIN")
			if ch := c.challenge(); ch != "Username:" {
				t.Fatalf("challenge = %q", ch)
			}
			c.send(b64("alice"))
			if ch := c.challenge(); ch != "Password:" {
				t.Fatalf("challenge = %q", ch)
			}
			c.send(b64("pass word"))
		}},
		{"LOGIN with IR", "LOGIN", func(c *tclient) {
			c.send("AUTH LOGIN " + b64("alice"))
			if ch := c.challenge(); ch != "Password:" {
				t.Fatalf("challenge = %q", ch)
			}
			c.send(b64("pass word"))
		}},
		{"CRAM-MD5", "CRAM-MD5", func(c *tclient) {
			c.send("AUTH CRAM-MD5")
			ch := c.challenge() // the backend's own challenge
			if ch != "<1896.697170952@backend.test>" {
				t.Fatalf("challenge = %q, want the backend's", ch)
			}
			c.send(b64("tim smith " + cramDigest("tanstaaftanstaaf", ch)))
		}},
		{"SCRAM-SHA-1 with IR", "SCRAM-SHA-1", scram(sha1.New, "SCRAM-SHA-1", true)},
		{"SCRAM-SHA-256 with IR", "SCRAM-SHA-256", scram(sha256.New, "SCRAM-SHA-256", true)},
		{"SCRAM-SHA-256 without IR", "SCRAM-SHA-256", scram(sha256.New, "SCRAM-SHA-256", false)},
		{"XOAUTH2 with IR", "XOAUTH2", func(c *tclient) {
			c.send("AUTH XOAUTH2 " + b64("user=alice\x01auth=Bearer "+token+"\x01\x01"))
		}},
		{"XOAUTH2 without IR", "XOAUTH2", func(c *tclient) {
			c.send("AUTH XOAUTH2")
			c.challenge()
			c.send(b64("user=alice\x01auth=Bearer " + token + "\x01\x01"))
		}},
		{"OAUTHBEARER with IR", "OAUTHBEARER", func(c *tclient) {
			c.send("AUTH OAUTHBEARER " + b64("n,a=alice,\x01host=mail.test\x01port=110\x01auth=Bearer "+token+"\x01\x01"))
		}},
		{"OAUTHBEARER without IR", "OAUTHBEARER", func(c *tclient) {
			c.send("AUTH oauthbearer")
			c.challenge()
			c.send(b64("n,a=alice,\x01auth=Bearer " + token + "\x01\x01"))
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, _ := greeted(t, func(s *protocols.Session) { s.ClientTLS = true })
			tt.run(h.c)
			h.c.expect("+OK")
			h.WantResult(nil)
			user := "alice"
			if tt.mech == "CRAM-MD5" {
				user = "tim smith"
			}
			h.WantEvents("attempt "+user+" "+tt.mech, "ok "+user+" "+tt.mech)
			if got := h.backendRoundTrip("STAT"); got != "+OK 2 320" {
				t.Errorf("backend session after AUTH: STAT = %q", got)
			}
		})
	}
}

// TestAuthFailures: a failure after relayed challenges is the backend's
// verdict, not a protocol error.
func TestAuthFailures(t *testing.T) {
	tests := []struct {
		name, events string
		run          func(c *tclient)
	}{
		{"XOAUTH2 error challenge then empty", "attempt alice XOAUTH2|fail alice XOAUTH2", func(c *tclient) {
			c.send("AUTH XOAUTH2 " + b64("user=alice\x01auth=Bearer expired\x01\x01"))
			if ch := c.challenge(); !strings.Contains(ch, `"status":"401"`) {
				t.Fatalf("error challenge = %q", ch)
			}
			c.send("")
		}},
		{"OAUTHBEARER error challenge then cancel", "attempt alice OAUTHBEARER|fail alice OAUTHBEARER", func(c *tclient) {
			c.send("AUTH OAUTHBEARER " + b64("n,a=alice,\x01auth=Bearer expired\x01\x01"))
			c.challenge()
			c.send("*") // the token was judged: still a failed login
		}},
		{"SCRAM wrong password", "attempt alice SCRAM-SHA-256|fail alice SCRAM-SHA-256", func(c *tclient) {
			bare := "n=alice,r=abcdefghijkl"
			c.send("AUTH SCRAM-SHA-256 " + b64("n,,"+bare))
			final, _ := protocoltest.SCRAMClientFinal(sha256.New, "wrong", bare, c.challenge())
			c.send(b64(final))
		}},
		{"LOGIN cancelled before the password", "attempt alice LOGIN", func(c *tclient) {
			c.send("AUTH LOGIN " + b64("alice"))
			c.challenge()
			c.send("*")
		}},
		{"mechanism the backend refuses", "attempt alice PLAIN|fail alice PLAIN temporary", func(c *tclient) {
			c.send("AUTH PLAIN " + b64("\x00alice\x00pass word"))
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := newFakeBackend(t, func(b *fakeBackend) { b.noAuth = strings.Contains(tt.name, "refuses") })
			h := newHarness(t, b.addr, func(s *protocols.Session) { s.ClientTLS = true })
			h.c.expect("+OK")
			tt.run(h.c)
			h.c.expect("-ERR")
			h.Running()
			if got := strings.Join(h.Observer.Events(), "|"); got != tt.events {
				t.Errorf("events = %q, want %q", got, tt.events)
			}
			h.c.cmd("NOOP", "+OK") // still in pre-auth
		})
	}
}

func TestAuthDemo(t *testing.T) {
	for _, mech := range []string{"PLAIN", "LOGIN"} {
		t.Run(mech, func(t *testing.T) {
			h := newHarness(t, demoBackend(t), func(s *protocols.Session) { s.ClientTLS = true })
			h.c.expect("+OK")
			if mech == "PLAIN" {
				h.c.send("AUTH PLAIN " + b64("\x00bob@example.com\x00bob secret"))
			} else {
				h.c.send("AUTH LOGIN")
				h.c.challenge()
				h.c.send(b64("bob@example.com"))
				h.c.challenge()
				h.c.send(b64("bob secret"))
			}
			h.c.expect("+OK Logged in")
			h.WantResult(nil)
			if got := h.backendRoundTrip("STAT"); !strings.HasPrefix(got, "+OK 1 ") {
				t.Errorf("STAT after AUTH %s = %q", mech, got)
			}
		})
	}
}

func TestCapaRewrite(t *testing.T) {
	h, b := greeted(t, func(s *protocols.Session) { s.RequireTLSForLogin = true })
	c := h.c
	caps := c.capa()
	want := []string{"TOP", "UIDL", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING",
		"SASL CRAM-MD5 SCRAM-SHA-1 SCRAM-SHA-256", "IMPLEMENTATION fake", "STLS"}
	if strings.Join(caps, "|") != strings.Join(want, "|") {
		t.Errorf("plain-link CAPA = %q, want %q", caps, want)
	}
	c.cmd("USER alice", "-ERR [AUTH] Plaintext authentication is disabled")
	c.cmd("AUTH PLAIN "+b64("\x00alice\x00pass word"), "-ERR [AUTH] Plaintext authentication is disabled")
	c.cmd("AUTH XOAUTH2", "-ERR [AUTH] Plaintext")
	c.cmd("AUTH GSSAPI", "-ERR Unsupported authentication mechanism")
	c.cmd("AUTH EXTERNAL =", "-ERR Unsupported authentication mechanism")
	c.cmd("AUTH SCRAM-SHA-256-PLUS", "-ERR Unsupported authentication mechanism")
	c.cmd("AUTH", "+OK")
	if l := c.body(); strings.Join(l, " ") != "CRAM-MD5" {
		t.Errorf("plain-link AUTH list = %q, want CRAM-MD5 only", l)
	}
	if got := b.rec.String(); strings.Contains(got, "pass word") || strings.Contains(got, "USER") || strings.Contains(got, "AUTH PLAIN") {
		t.Errorf("a cleartext login reached the backend: %q", got)
	}
	c.cmd("STLS", "+OK")
	c.startTLS(h.ClientTLS)
	caps = c.capa()
	want = []string{"TOP", "UIDL", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING", "USER",
		"SASL PLAIN LOGIN CRAM-MD5 SCRAM-SHA-1 SCRAM-SHA-256 XOAUTH2 OAUTHBEARER", "IMPLEMENTATION fake"}
	if strings.Join(caps, "|") != strings.Join(want, "|") {
		t.Errorf("TLS-link CAPA = %q, want %q", caps, want)
	}
	c.cmd("AUTH", "+OK")
	if l := c.body(); strings.Join(l, " ") != "PLAIN LOGIN CRAM-MD5" {
		t.Errorf("TLS-link AUTH list = %q", l)
	}
	c.cmd("USER alice", "+OK")
	c.cmd("PASS pass word", "+OK")
	h.WantResult(nil)
}

// TestCapaDotStuffing: capability lines that start with "." survive the
// rewrite, unstuffed for parsing and stuffed again on the way out.
func TestCapaDotStuffing(t *testing.T) {
	b := newFakeBackend(t, func(b *fakeBackend) { b.capa = []string{"USER", ".HIDDEN x", "..", "SASL PLAIN"} })
	h := newHarness(t, b.addr)
	h.c.expect("+OK")
	h.c.send("CAPA")
	h.c.expect("+OK")
	var raw []string
	for l := h.c.line(); l != "."; l = h.c.line() {
		raw = append(raw, l)
	}
	if want := "USER|..HIDDEN x|...|SASL PLAIN|STLS"; strings.Join(raw, "|") != want {
		t.Errorf("CAPA on the wire = %q, want %q", raw, want)
	}
	h.c.cmd("NOOP", "+OK") // the parser is in step
}

func TestNoBackendCapa(t *testing.T) {
	b := newFakeBackend(t, func(b *fakeBackend) { b.capa = nil })
	h := newHarness(t, b.addr)
	c := h.c
	c.expect("+OK")
	// STLS is offered here whatever the backend says: list that alone.
	if caps := c.capa(); strings.Join(caps, "|") != "STLS" {
		t.Errorf("CAPA = %q, want just STLS", caps)
	}
	c.cmd("STLS", "+OK")
	c.startTLS(h.ClientTLS)
	c.cmd("CAPA", "-ERR Unknown command") // the backend's own answer
	c.cmd("USER alice", "+OK")
	c.cmd("PASS pass word", "+OK")
	h.WantResult(nil)
}

func TestBackendSTLS(t *testing.T) {
	srvTLS, cliTLS := protocoltest.TLSConfigs(t)
	// The backend pipelines a fake +OK behind its STLS go-ahead (response
	// injection): it must never be read as the answer to a later command.
	b := newFakeBackend(t, func(b *fakeBackend) { b.tls = srvTLS; b.inject = "+OK Logged in\r\n" })
	h := newHarness(t, b.addr, func(s *protocols.Session) {
		s.BackendStartTLS = cliTLS
		s.ClientTLS, s.ClientStartTLS = true, nil
	})
	c := h.c
	c.expect("+OK fake POP3 ready " + fakeTimestamp)
	if caps := c.capa(); protocoltest.HasCap(caps, "STLS") {
		t.Errorf("CAPA = %q: STLS offered on a TLS client link", caps)
	}
	c.cmd("USER alice", "+OK")
	c.cmd("PASS wrong", "-ERR [AUTH]")
	c.cmd("PASS pass word", "-ERR No username given")
	c.cmd("USER alice", "+OK")
	c.cmd("PASS pass word", "+OK Logged in")
	h.WantResult(nil)
	// STLS came first; everything else went inside TLS, and the injected
	// +OK was not taken for the answer to the first PASS.
	if got, want := b.rec.String(), "STLS\r\n[TLS]CAPA\r\nUSER alice\r\nPASS wrong\r\nUSER alice\r\nPASS pass word\r\n"; got != want {
		t.Errorf("backend received %q, want %q", got, want)
	}
}

func TestBackendSTLSRefused(t *testing.T) {
	_, cliTLS := protocoltest.TLSConfigs(t)
	b := newFakeBackend(t) // no TLS: STLS gets -ERR
	h := newHarness(t, b.addr, func(s *protocols.Session) { s.BackendStartTLS = cliTLS })
	h.c.expect("-ERR [SYS/TEMP]")
	h.WantResult(protocols.ErrBackend)
}
