package smtp_test

import (
	"crypto/sha1"
	"crypto/sha256"
	"encoding/base64"
	"hash"
	"io"
	"strconv"
	"strings"
	"testing"

	"github.com/mailgate/mailgate/internal/demo"
	"github.com/mailgate/mailgate/protocols"
	"github.com/mailgate/mailgate/protocols/protocoltest"
	"github.com/mailgate/mailgate/protocols/smtp"
)

// relay does what the proxy does after PreAuth returned nil: it forwards
// what either side already sent, then copies blindly both ways until the
// test's cleanup closes the connections.
func (h *harness) relay() {
	h.T.Helper()
	if err := h.Result(); err != nil {
		h.T.Fatalf("PreAuth() = %v, want nil", err)
	}
	flush := func(dst io.Writer, src *protocols.Conn) {
		if n := src.R.Buffered(); n > 0 {
			b, _ := src.R.Peek(n)
			if _, err := dst.Write(b); err != nil {
				h.T.Fatal(err)
			}
			src.R.Discard(n)
		}
	}
	flush(h.Session.Backend.Conn, h.Session.Client)
	flush(h.Session.Client.Conn, h.Session.Backend)
	go io.Copy(h.Session.Backend.Conn, h.Session.Client.Conn)
	go io.Copy(h.Session.Client.Conn, h.Session.Backend.Conn)
}

// sendMail runs MAIL, RCPT, DATA over the relayed session.
func sendMail(c *tclient, from, to, body string) {
	c.T.Helper()
	c.send("MAIL FROM:<" + from + ">")
	c.expect("250")
	c.send("RCPT TO:<" + to + ">")
	c.expect("250")
	c.send("DATA")
	c.expect("354")
	c.write(body + "\r\n.\r\n")
	c.expect("250")
}

func startDemo(t *testing.T) *demo.SMTPBackend {
	t.Helper()
	b, err := demo.StartSMTP("127.0.0.1:0", demo.Users)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

// TestLadder walks greeting → EHLO → STARTTLS → EHLO → AUTH PLAIN with MAIL,
// RCPT and DATA pipelined behind it (RFC 4954 §4 allows that for PLAIN with
// an initial response) → relayed delivery, against go-smtp's server.
func TestLadder(t *testing.T) {
	be := startDemo(t)
	h := newHarness(t, be.Addr(), smtp.Options{Role: smtp.RoleSubmission})
	c := h.c
	c.expect("220 ")

	kws := c.ehlo("client.test")
	if !hasKW(kws, "STARTTLS") || !hasKW(kws, "AUTH") || !hasKW(kws, "PIPELINING") {
		t.Errorf("plain-link EHLO = %q, want STARTTLS, AUTH and PIPELINING", kws)
	}
	c.send("STARTTLS")
	c.expect("220 2.0.0 Ready to start TLS")
	c.startTLS(h.ClientTLS)

	c.send("AUTH PLAIN " + b64("\x00alice@example.com\x00alice-secret"))
	c.expect("503 5.5.1") // RFC 3207 §4.2: EHLO again after TLS
	kws = c.ehlo("client.test")
	if hasKW(kws, "STARTTLS") || kwLine(kws, "AUTH") != "AUTH PLAIN LOGIN" {
		t.Errorf("TLS-link EHLO = %q, want AUTH PLAIN LOGIN and no STARTTLS", kws)
	}
	c.send("STARTTLS")
	c.expect("503 5.5.1 Error: TLS already active")

	c.write("AUTH PLAIN " + b64("\x00alice@example.com\x00alice-secret") + "\r\n" +
		"MAIL FROM:<alice@example.com>\r\nRCPT TO:<bob@example.com>\r\nDATA\r\n")
	c.expect("235 ")
	h.relay()
	c.expect("250") // MAIL
	c.expect("250") // RCPT
	c.expect("354") // DATA
	c.write("Subject: ladder\r\n\r\nhello through mailgate\r\n.\r\n")
	c.expect("250")
	c.send("QUIT")
	c.expect("221")

	h.WantEvents("tls", "attempt alice@example.com PLAIN", "ok alice@example.com PLAIN")
	if !h.Session.ClientTLS {
		t.Error("Session.ClientTLS = false after STARTTLS")
	}
	msgs := be.Messages()
	if len(msgs) != 1 || msgs[0].User != "alice@example.com" || !strings.Contains(string(msgs[0].Data), "hello through mailgate") {
		t.Fatalf("delivered = %+v", msgs)
	}
}

// TestLadderLoginDemo: AUTH LOGIN without initial response against
// go-smtp's server; the handler sends "Username:" itself and answers the
// backend's.
func TestLadderLoginDemo(t *testing.T) {
	be := startDemo(t)
	h := newHarness(t, be.Addr(), smtp.Options{}, func(s *protocols.Session) { s.ClientTLS = true; s.ClientStartTLS = nil })
	c := h.c
	c.expect("220 ")
	c.ehlo("client.test")
	c.send("AUTH LOGIN")
	c.expect("334 " + b64("Username:"))
	c.send(b64("bob@example.com"))
	c.expect("334 " + b64("Password:"))
	c.send(b64("bob-secret"))
	c.expect("235 ")
	h.relay()
	sendMail(c, "bob@example.com", "alice@example.com", "Subject: login\r\n\r\nhi")
	h.WantEvents("attempt bob@example.com LOGIN", "ok bob@example.com LOGIN")
	if msgs := be.Messages(); len(msgs) != 1 || msgs[0].User != "bob@example.com" {
		t.Fatalf("delivered = %+v", msgs)
	}
}

// TestLadderMechanisms runs every attributable mechanism, with and without
// initial response, against the scripted backend, then relays a message.
func TestLadderMechanisms(t *testing.T) {
	scram := func(h func() hash.Hash, mech string, ir bool) func(*testing.T, *tclient) {
		return func(t *testing.T, c *tclient) {
			bare := "n=alice,r=clientnonce"
			if ir {
				c.send("AUTH " + mech + " " + b64("n,,"+bare))
			} else {
				c.send("AUTH " + mech)
				c.expect("334 ")
				c.send(b64("n,," + bare))
			}
			sf := c.expect("334 ")[0][4:]
			serverFirst, _ := base64.StdEncoding.DecodeString(sf)
			final, wantV := protocoltest.SCRAMClientFinal(h, "pass word", bare, string(serverFirst))
			c.send(b64(final))
			if got := c.expect("334 ")[0]; got != "334 "+b64(wantV) {
				t.Fatalf("server-final = %q, want %q", got, "334 "+b64(wantV))
			}
			c.send("")
		}
	}
	tests := []struct {
		name string
		mech string
		run  func(*testing.T, *tclient)
	}{
		{"PLAIN with IR", "PLAIN", func(t *testing.T, c *tclient) {
			c.send("AUTH PLAIN " + b64("\x00alice\x00pass word"))
		}},
		{"PLAIN without IR", "PLAIN", func(t *testing.T, c *tclient) {
			c.send("AUTH PLAIN")
			if l := c.line(); l != "334 " {
				t.Fatalf("challenge = %q, want %q", l, "334 ")
			}
			c.send(b64("\x00alice\x00pass word"))
		}},
		{"LOGIN without IR", "LOGIN", func(t *testing.T, c *tclient) {
			c.send("AUTH LOGIN")
			c.expect("334 VXNlcm5hbWU6")
			c.send(b64("alice"))
			c.expect("334 UGFzc3dvcmQ6")
			c.send(b64("pass word"))
		}},
		{"LOGIN with the user as IR", "LOGIN", func(t *testing.T, c *tclient) {
			c.send("AUTH LOGIN " + b64("alice"))
			c.expect("334 UGFzc3dvcmQ6")
			c.send(b64("pass word"))
		}},
		{"LOGIN with an empty IR", "LOGIN", func(t *testing.T, c *tclient) {
			c.send("AUTH LOGIN =")
			c.expect("334 VXNlcm5hbWU6")
			c.send(b64("alice"))
			c.expect("334 UGFzc3dvcmQ6")
			c.send(b64("pass word"))
		}},
		{"CRAM-MD5", "CRAM-MD5", func(t *testing.T, c *tclient) {
			c.send("AUTH CRAM-MD5")
			ch, _ := base64.StdEncoding.DecodeString(c.expect("334 ")[0][4:])
			c.send(b64(cramDigest("alice", "pass word", string(ch))))
		}},
		{"SCRAM-SHA-1 with IR", "SCRAM-SHA-1", scram(sha1.New, "SCRAM-SHA-1", true)},
		{"SCRAM-SHA-256 with IR", "SCRAM-SHA-256", scram(sha256.New, "SCRAM-SHA-256", true)},
		{"SCRAM-SHA-256 without IR", "SCRAM-SHA-256", scram(sha256.New, "SCRAM-SHA-256", false)},
		{"XOAUTH2 with IR", "XOAUTH2", func(t *testing.T, c *tclient) {
			c.send("AUTH XOAUTH2 " + b64("user=alice\x01auth=Bearer "+goodToken+"\x01\x01"))
		}},
		{"XOAUTH2 without IR", "XOAUTH2", func(t *testing.T, c *tclient) {
			c.send("AUTH XOAUTH2")
			c.expect("334 ")
			c.send(b64("user=alice\x01auth=Bearer " + goodToken + "\x01\x01"))
		}},
		{"OAUTHBEARER with IR", "OAUTHBEARER", func(t *testing.T, c *tclient) {
			c.send("AUTH OAUTHBEARER " + b64("n,a=alice,\x01host=mail.test\x01port=587\x01auth=Bearer "+goodToken+"\x01\x01"))
		}},
		{"OAUTHBEARER without IR", "OAUTHBEARER", func(t *testing.T, c *tclient) {
			c.send("AUTH OAUTHBEARER")
			c.expect("334 ")
			c.send(b64("n,a=alice,\x01auth=Bearer " + goodToken + "\x01\x01"))
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := newFakeBackend(t)
			h := newHarness(t, b.addr, smtp.Options{}, func(s *protocols.Session) { s.ClientTLS = true })
			c := h.c
			c.expect("220 fake.test")
			c.ehlo("client.test")
			tt.run(t, c)
			c.expect("235 2.7.0")
			h.relay()
			sendMail(c, "alice@example.com", "bob@example.com", "Subject: "+tt.name+"\r\n\r\nhi")
			h.WantEvents("attempt alice "+tt.mech, "ok alice "+tt.mech)
			msgs := b.messages()
			if len(msgs) != 1 || msgs[0].user != "alice" || msgs[0].helo != "client.test" {
				t.Fatalf("delivered = %+v", msgs)
			}
		})
	}
}

// TestAuthFailures: the backend's refusals are relayed, classified, and the
// session stays in pre-auth.
func TestAuthFailures(t *testing.T) {
	tests := []struct {
		name  string
		run   func(*testing.T, *tclient)
		want  string
		event string
	}{
		{"wrong password", func(t *testing.T, c *tclient) {
			c.send("AUTH PLAIN " + b64("\x00alice\x00wrong"))
		}, "535 5.7.8", "fail alice PLAIN"},
		{"backend tempfail", func(t *testing.T, c *tclient) {
			c.send("AUTH PLAIN " + b64("\x00down\x00x"))
		}, "454 4.7.0", "fail down PLAIN temporary"},
		{"XOAUTH2 error challenge then dummy", func(t *testing.T, c *tclient) {
			c.send("AUTH XOAUTH2 " + b64("user=alice\x01auth=Bearer expired\x01\x01"))
			js, _ := base64.StdEncoding.DecodeString(c.expect("334 ")[0][4:])
			if !strings.Contains(string(js), `"status":"401"`) {
				t.Errorf("error challenge = %q", js)
			}
			c.send("")
		}, "535 5.7.8", "fail alice XOAUTH2"},
		{"OAUTHBEARER error challenge then ^A", func(t *testing.T, c *tclient) {
			c.send("AUTH OAUTHBEARER " + b64("n,a=alice,\x01auth=Bearer expired\x01\x01"))
			c.expect("334 ")
			c.send(b64("\x01"))
		}, "535 5.7.8", "fail alice OAUTHBEARER"},
		{"client cancels at the password", func(t *testing.T, c *tclient) {
			c.send("AUTH LOGIN " + b64("alice"))
			c.expect("334 UGFzc3dvcmQ6")
			c.send("*")
		}, "501 5.7.0", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, _ := greeted(t, smtp.Options{}, func(s *protocols.Session) { s.ClientTLS = true })
			c := h.c
			c.ehlo("client.test")
			tt.run(t, c)
			c.expect(tt.want)
			h.Running()
			events := h.Observer.Events()
			if tt.event != "" && (len(events) != 2 || events[1] != tt.event) {
				t.Errorf("events = %q, want the attempt then %q", events, tt.event)
			}
			if tt.event == "" && len(events) != 1 {
				t.Errorf("events = %q, want the attempt only", events)
			}
			// Still pre-auth: a second try works.
			c.send("AUTH PLAIN " + b64("\x00alice\x00pass word"))
			c.expect("235")
			h.WantResult(nil)
		})
	}
}

// TestBackendSTARTTLS: with BackendStartTLS the backend link is upgraded
// before the client is greeted; credentials never cross it in the clear.
func TestBackendSTARTTLS(t *testing.T) {
	srvTLS, cliTLS := protocoltest.TLSConfigs(t)
	b := newFakeBackend(t, func(b *fakeBackend) { b.tls = srvTLS })
	h := newHarness(t, b.addr, smtp.Options{}, func(s *protocols.Session) {
		s.BackendStartTLS = cliTLS
		s.ClientTLS = true
		s.ClientStartTLS = nil
	})
	c := h.c
	c.expect("220 fake.test")
	if kws := c.ehlo("client.test"); hasKW(kws, "STARTTLS") || !hasKW(kws, "AUTH") {
		t.Errorf("EHLO = %q", kws)
	}
	c.send("AUTH PLAIN " + b64("\x00alice\x00pass word"))
	c.expect("235")
	h.WantResult(nil)
	if got := b.rec.String(); !strings.HasPrefix(got, "EHLO proxy.test\r\nSTARTTLS\r\nEHLO client.test\r\nAUTH PLAIN ") {
		t.Errorf("backend commands: %q", got)
	}
	if wire := b.raw.String(); !strings.HasPrefix(wire, "EHLO proxy.test\r\nSTARTTLS\r\n") || strings.Contains(wire, "AUTH") {
		t.Errorf("backend wire bytes: %q", wire)
	}
}

func TestBackendSTARTTLSMissing(t *testing.T) {
	_, cliTLS := protocoltest.TLSConfigs(t)
	b := newFakeBackend(t) // offers no STARTTLS
	h := newHarness(t, b.addr, smtp.Options{}, func(s *protocols.Session) { s.BackendStartTLS = cliTLS })
	h.c.expect("421 4.7.0 proxy.test")
	h.WantResult(protocols.ErrBackend)
}

// TestXCLIENT: the backend learns the client address at the client's first
// EHLO, before anything else; the client never sees XCLIENT.
func TestXCLIENT(t *testing.T) {
	b := newFakeBackend(t)
	h := newHarness(t, b.addr, smtp.Options{}, func(s *protocols.Session) {
		s.ClientAddrVia = "xclient"
		s.ClientTLS = true
	})
	c := h.c
	c.expect("220 fake.test")
	kws := c.ehlo("client.test")
	if hasKW(kws, "XCLIENT") || hasKW(kws, "XFORWARD") {
		t.Errorf("EHLO shows %q", kws)
	}
	c.send("AUTH PLAIN " + b64("\x00alice\x00pass word"))
	c.expect("235")
	h.relay()
	sendMail(c, "alice@example.com", "bob@example.com", "Subject: x\r\n\r\nhi")

	xc := b.XCLIENTs()
	want := "ADDR=127.0.0.1 PORT=" + strconv.Itoa(int(h.Session.ClientAddr.Port())) + " DESTADDR=127.0.0.1 DESTPORT=" +
		strconv.Itoa(int(h.Session.LocalAddr.Port())) + " PROTO=ESMTP HELO=client.test"
	if len(xc) != 1 || xc[0] != want {
		t.Fatalf("XCLIENT = %q, want [%q]", xc, want)
	}
	got := b.rec.String()
	if !strings.HasPrefix(got, "EHLO client.test\r\nXCLIENT "+want+"\r\nEHLO client.test\r\nAUTH PLAIN ") {
		t.Errorf("backend bytes = %q", got)
	}
	if m := b.messages(); len(m) != 1 || m[0].xaddr != "127.0.0.1" || m[0].helo != "client.test" {
		t.Errorf("delivered = %+v", m)
	}
}

// TestXCLIENTNotOffered: the client's EHLO is answered with the probe's
// reply; nothing else is sent.
func TestXCLIENTNotOffered(t *testing.T) {
	b := newFakeBackend(t, func(b *fakeBackend) { b.exts = []string{"PIPELINING", "AUTH PLAIN"} })
	h := newHarness(t, b.addr, smtp.Options{}, func(s *protocols.Session) { s.ClientAddrVia = "xclient" })
	c := h.c
	c.expect("220")
	c.ehlo("client.test")
	c.send("NOOP")
	c.expect("250")
	if got := b.rec.String(); got != "EHLO client.test\r\nNOOP\r\n" {
		t.Errorf("backend bytes = %q", got)
	}
	if !strings.Contains(h.Logs.String(), "backend does not offer XCLIENT") {
		t.Errorf("no warning logged:\n%s", h.Logs.String())
	}
}

// TestXCLIENTAfterHELO: a HELO client gets PROTO=SMTP and its HELO relayed.
func TestXCLIENTAfterHELO(t *testing.T) {
	h, b := greeted(t, smtp.Options{Role: smtp.RoleMX}, func(s *protocols.Session) { s.ClientAddrVia = "xclient" })
	c := h.c
	c.send("HELO old.client")
	if l := c.reply(); len(l) != 1 || l[0] != "250 fake.test" {
		t.Fatalf("HELO = %q", l)
	}
	if xc := b.XCLIENTs(); len(xc) != 1 || !strings.HasSuffix(xc[0], " PROTO=SMTP HELO=old.client") {
		t.Fatalf("XCLIENT = %q", xc)
	}
	if got := b.rec.String(); !strings.HasSuffix(got, "\r\nHELO old.client\r\n") {
		t.Errorf("backend bytes = %q", got)
	}
}
