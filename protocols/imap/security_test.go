package imap_test

import (
	"io"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mailgate/mailgate/protocols"
	"github.com/mailgate/mailgate/protocols/protocoltest"
)

// TestSTARTTLSInjection: a command pipelined behind STARTTLS in the same
// write was sent in the clear and must never run (CVE-2011-0411).
func TestSTARTTLSInjection(t *testing.T) {
	h, b := greeted(t)
	c := h.c
	c.write("a STARTTLS\r\nb LOGIN alice \"pass word\"\r\n")
	c.expect("a OK Begin TLS negotiation now")
	c.startTLS(h.ClientTLS)
	c.send("c CAPABILITY")
	untagged, res := c.until("c")
	for _, l := range append(untagged, res) {
		if strings.HasPrefix(l, "b ") {
			t.Fatalf("the injected command was answered: %q", l)
		}
	}
	if !strings.HasPrefix(res, "c OK") {
		t.Fatalf("CAPABILITY after TLS = %q", res)
	}
	h.WantInjectionDiscarded("STARTTLS")
	if strings.Contains(b.rec.String(), "LOGIN") {
		t.Errorf("the backend received the injected LOGIN: %q", b.rec.String())
	}
}

// TestGatedLoginNeverReachesBackend: with the gate denying the user, the
// credential in every form stays away from the backend.
func TestGatedLoginNeverReachesBackend(t *testing.T) {
	const pass = "Sup3r-S3cret pw"
	plain := b64("\x00alice\x00" + pass)
	tests := []struct {
		name string
		mech string
		run  func(*testing.T, *tclient)
	}{
		{name: "LOGIN quoted", mech: "LOGIN", run: func(t *testing.T, c *tclient) {
			c.send(`a LOGIN alice "` + pass + `"`)
		}},
		{name: "LOGIN sync literal", mech: "LOGIN", run: func(t *testing.T, c *tclient) {
			c.send("a LOGIN alice {" + strconv.Itoa(len(pass)) + "}")
			c.expect("+ ")
			c.send(pass)
		}},
		{name: "LOGIN non-sync literal", mech: "LOGIN", run: func(t *testing.T, c *tclient) {
			c.send("a LOGIN {5+}\r\nalice {" + strconv.Itoa(len(pass)) + "+}\r\n" + pass)
		}},
		{name: "AUTHENTICATE PLAIN with IR", mech: "PLAIN", run: func(t *testing.T, c *tclient) {
			c.send("a AUTHENTICATE PLAIN " + plain)
		}},
		{name: "AUTHENTICATE PLAIN without IR", mech: "PLAIN", run: func(t *testing.T, c *tclient) {
			c.send("a AUTHENTICATE PLAIN")
			c.challenge()
			c.send(plain)
		}},
		{name: "AUTHENTICATE LOGIN", mech: "LOGIN", run: func(t *testing.T, c *tclient) {
			c.send("a AUTHENTICATE LOGIN")
			c.challenge()
			c.send(b64("alice"))
			// Refused at the username: the password is never asked for.
		}},
		{name: "AUTHENTICATE XOAUTH2", mech: "XOAUTH2", run: func(t *testing.T, c *tclient) {
			c.send("a AUTHENTICATE XOAUTH2 " + b64("user=alice\x01auth=Bearer "+pass+"\x01\x01"))
		}},
		{name: "AUTHENTICATE OAUTHBEARER", mech: "OAUTHBEARER", run: func(t *testing.T, c *tclient) {
			c.send("a AUTHENTICATE OAUTHBEARER " + b64("n,a=alice,\x01auth=Bearer "+pass+"\x01\x01"))
		}},
		{name: "AUTHENTICATE SCRAM-SHA-256", mech: "SCRAM-SHA-256", run: func(t *testing.T, c *tclient) {
			c.send("a AUTHENTICATE SCRAM-SHA-256 " + b64("n,,n=alice,r=abcdef"))
		}},
		{name: "AUTHENTICATE CRAM-MD5", mech: "CRAM-MD5", run: func(t *testing.T, c *tclient) {
			c.send("a AUTHENTICATE CRAM-MD5")
			c.challenge()
			c.send(b64("alice 0123456789abcdef0123456789abcdef"))
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, b := greeted(t, func(s *protocols.Session) { s.ClientTLS = true })
			h.Gate.Deny["alice"] = protocols.DenyDisabled
			c := h.c
			tt.run(t, c)
			_, res := c.until("a")
			if !strings.HasPrefix(res, "a NO [CONTACTADMIN]") {
				t.Fatalf("result = %q, want NO [CONTACTADMIN]", res)
			}
			h.Running()
			h.WantEvents("attempt alice " + tt.mech)
			got := b.rec.String()
			protocoltest.CheckWithheld(t, got, pass, plain, b64(pass), "0123456789abcdef", "abcdef", "LOGIN")
			if tt.mech == "CRAM-MD5" && !strings.Contains(got, "*\r\n") {
				t.Errorf("CRAM-MD5 exchange was not cancelled at the backend: %q", got)
			} else if tt.mech != "CRAM-MD5" && strings.Contains(got, "AUTHENTICATE") {
				t.Errorf("backend saw AUTHENTICATE: %q", got)
			}
			// Still in pre-auth: the client may try again.
			c.send("z NOOP")
			c.expect("z OK")
		})
	}
}

func TestGateDenials(t *testing.T) {
	tests := []struct{ code, want string }{
		{protocols.DenyDisabled, "a NO [CONTACTADMIN] "},
		{protocols.DenyLockout, "a NO [AUTHENTICATIONFAILED] Too many failed logins, try again later"},
		{protocols.DenyLimit, "a NO [LIMIT] Too many connections"},
		{"something-new", "a NO [AUTHENTICATIONFAILED] Authentication failed"},
	}
	for _, tt := range tests {
		t.Run(tt.code, func(t *testing.T) {
			h, _ := greeted(t)
			h.Gate.Deny["alice"] = tt.code
			h.c.send(`a LOGIN alice "pass word"`)
			h.c.expect(tt.want)
		})
	}
}

// TestGateChecksAuthzid: PLAIN naming another mailbox is gated on it too.
func TestGateChecksAuthzid(t *testing.T) {
	h, b := greeted(t)
	h.Gate.Deny["bob"] = protocols.DenyDisabled
	h.c.send("a AUTHENTICATE PLAIN " + b64("bob\x00alice\x00pass word"))
	h.c.expect("a NO [CONTACTADMIN]")
	if strings.Contains(b.rec.String(), "AUTHENTICATE") {
		t.Error("backend saw the refused exchange")
	}
	h.WantEvents("attempt alice PLAIN")
}

// TestNoSecretInLogs runs logins of every outcome with a debug-level logger
// and checks no password, token or SASL payload is in the output.
func TestNoSecretInLogs(t *testing.T) {
	const pass = "pass word"
	secrets := []string{pass, b64("\x00alice\x00" + pass), b64(pass), goodToken, "expired-token", "wrong-pw",
		b64("user=alice\x01auth=Bearer " + goodToken + "\x01\x01")}
	h, _ := greeted(t, func(s *protocols.Session) { s.ClientTLS = true })
	h.Gate.Deny["mallory"] = protocols.DenyLockout
	c := h.c
	c.send("a LOGIN mallory wrong-pw")
	c.expect("a NO")
	c.send("b LOGIN alice {8+}\r\nwrong-pw")
	c.expect("b NO")
	c.send("c AUTHENTICATE XOAUTH2 " + b64("user=alice\x01auth=Bearer expired-token\x01\x01"))
	c.challenge()
	c.send("")
	c.expect("c NO")
	c.send("d AUTHENTICATE LOGIN")
	c.challenge()
	c.send(b64("alice"))
	c.challenge()
	c.send("*")
	c.expect("d BAD")
	c.send("e AUTHENTICATE PLAIN " + b64("\x00alice\x00"+pass))
	c.expect("e OK")
	h.WantResult(nil)
	h.CheckLogs(secrets, []string{"user=alice", "mechanism=PLAIN", "outcome=success", "session=42", "outcome=denied", "user=mallory"})
}

// TestClientIDFiltered: the client's ID loses fields that would spoof what
// the proxy tells the backend.
func TestClientIDFiltered(t *testing.T) {
	h, b := greeted(t)
	c := h.c
	c.send(`a ID ("name" "Thunderbird" "X-Originating-IP" "6.6.6.6" "version" {4+}`)
	c.write("1.2" + "3" + ` "x-session-id" NIL)` + "\r\n")
	untagged, res := c.until("a")
	if len(untagged) != 1 || !strings.HasPrefix(untagged[0], "* ID") || res != "a OK ID completed" {
		t.Fatalf("ID = %q, %q", untagged, res)
	}
	got := b.rec.String()
	if !strings.Contains(got, `a ID ("name" "Thunderbird" "version" "1.23")`+"\r\n") || strings.Contains(got, "6.6.6.6") {
		t.Errorf("backend received %q", got)
	}
	c.send("b ID NIL")
	c.expect("* ID")
	c.expect("b OK")
	c.send(`c ID ("x-originating-ip" "1.1.1.1")`)
	c.expect("* ID")
	c.expect("c OK")
	if !strings.Contains(b.rec.String(), "c ID NIL\r\n") {
		t.Errorf("all-x- ID not sent as NIL: %q", b.rec.String())
	}
	c.send(`d ID ("name")`)
	c.expect("d BAD")
}

// TestIMAPIDClientAddress: with ClientAddrVia "imap-id" the backend learns the
// client address before any client command, and the client never sees it.
func TestIMAPIDClientAddress(t *testing.T) {
	b := newFakeBackend(t)
	h := newHarness(t, b.addr, func(s *protocols.Session) { s.ClientAddrVia = "imap-id" })
	c := h.c
	c.expect("* OK [CAPABILITY")
	c.send("a NOOP")
	untagged, res := c.until("a")
	if len(untagged) != 0 || res != "a OK NOOP completed" {
		t.Fatalf("NOOP = %q, %q", untagged, res)
	}
	got := b.rec.String()
	want := `mg1 ID ("x-originating-ip" "127.0.0.1" "x-originating-port" "` + strconv.Itoa(int(h.Session.ClientAddr.Port())) +
		`" "x-connected-ip" "127.0.0.1" "x-connected-port" "` + strconv.Itoa(int(h.Session.LocalAddr.Port())) + `" "x-session-id" "42")` + "\r\n"
	if !strings.HasPrefix(got, want) {
		t.Errorf("backend received %q, want it to start with %q", got, want)
	}
}

// TestResponseLiteralRelay: a literal in a backend response that contains a
// fake tagged line is relayed intact and not mistaken for the result.
func TestResponseLiteralRelay(t *testing.T) {
	lit := "x\r\na OK fake result\r\n"
	idResp := "* ID (\"name\" {" + strconv.Itoa(len(lit)) + "}\r\n" + lit + ")\r\n"
	b := newFakeBackend(t, func(b *fakeBackend) { b.idResp = idResp })
	h := newHarness(t, b.addr)
	c := h.c
	c.expect("* OK")
	c.send("a ID NIL")
	first := c.line()
	if first != `* ID ("name" {`+strconv.Itoa(len(lit))+`}` {
		t.Fatalf("first line = %q", first)
	}
	buf := make([]byte, len(lit))
	c.Conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(c.R, buf); err != nil || string(buf) != lit {
		t.Fatalf("literal = %q, %v", buf, err)
	}
	if l := c.line(); l != ")" {
		t.Fatalf("after literal = %q", l)
	}
	c.expect("a OK ID completed")
}
