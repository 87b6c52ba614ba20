package pop3_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/mailgate/mailgate/protocols"
	"github.com/mailgate/mailgate/protocols/protocoltest"
)

// TestSTLSInjection: a command pipelined behind STLS in the same write was
// sent in the clear and must never run (CVE-2011-0411).
func TestSTLSInjection(t *testing.T) {
	h, b := greeted(t)
	c := h.c
	c.write("STLS\r\nUSER alice\r\n")
	c.expect("+OK Begin TLS negotiation")
	c.startTLS(h.ClientTLS)
	// Had the injected USER run, this PASS would log alice in.
	c.cmd("PASS pass word", "-ERR No username given")
	h.WantInjectionDiscarded("STLS")
	if got := b.rec.String(); got != "" {
		t.Errorf("the backend received %q", got)
	}
}

// TestSTLSForgetsUser: a USER given in the clear does not survive STLS.
func TestSTLSForgetsUser(t *testing.T) {
	h, _ := greeted(t)
	c := h.c
	c.cmd("USER alice", "+OK")
	c.cmd("STLS", "+OK")
	c.startTLS(h.ClientTLS)
	c.cmd("PASS pass word", "-ERR No username given")
	c.cmd("STLS", "-ERR Command not permitted when TLS active")
}

// TestGatedLoginNeverReachesBackend: with the gate denying the user, the
// credential in every form stays away from the backend.
func TestGatedLoginNeverReachesBackend(t *testing.T) {
	const pass = "Sup3r-S3cret pw"
	plain := b64("\x00alice\x00" + pass)
	tests := []struct {
		name, mech string
		run        func(c *tclient)
	}{
		{"USER/PASS", "USER", func(c *tclient) {
			c.cmd("USER alice", "+OK")
			c.send("PASS " + pass)
		}},
		{"USER/PASS pipelined", "USER", func(c *tclient) {
			c.write("USER alice\r\nPASS " + pass + "\r\n")
			c.expect("+OK")
		}},
		{"APOP", "APOP", func(c *tclient) {
			c.send("APOP alice " + apopDigest(fakeTimestamp, "pass word"))
		}},
		{"AUTH PLAIN with IR", "PLAIN", func(c *tclient) { c.send("AUTH PLAIN " + plain) }},
		{"AUTH PLAIN without IR", "PLAIN", func(c *tclient) {
			c.send("AUTH PLAIN")
			c.challenge()
			c.send(plain)
		}},
		{"AUTH LOGIN", "LOGIN", func(c *tclient) {
			c.send("AUTH LOGIN")
			c.challenge()
			c.send(b64("alice")) // refused at the name: the password is never asked for
		}},
		{"AUTH XOAUTH2", "XOAUTH2", func(c *tclient) {
			c.send("AUTH XOAUTH2 " + b64("user=alice\x01auth=Bearer "+pass+"\x01\x01"))
		}},
		{"AUTH OAUTHBEARER", "OAUTHBEARER", func(c *tclient) {
			c.send("AUTH OAUTHBEARER " + b64("n,a=alice,\x01auth=Bearer "+pass+"\x01\x01"))
		}},
		{"AUTH SCRAM-SHA-1", "SCRAM-SHA-1", func(c *tclient) {
			c.send("AUTH SCRAM-SHA-1 " + b64("n,,n=alice,r=abcdef"))
		}},
		{"AUTH CRAM-MD5", "CRAM-MD5", func(c *tclient) {
			c.send("AUTH CRAM-MD5")
			c.challenge()
			c.send(b64("alice 0123456789abcdef0123456789abcdef"))
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, b := greeted(t, func(s *protocols.Session) { s.ClientTLS = true })
			h.Gate.Set("alice", protocols.DenyDisabled)
			c := h.c
			tt.run(c)
			c.expect("-ERR [AUTH] POP3 access is disabled for this account")
			h.Running()
			h.WantEvents("attempt alice " + tt.mech)
			got := b.rec.String()
			if tt.mech == "CRAM-MD5" {
				// The backend's challenge was needed; the exchange was
				// cancelled there without the digest.
				if got != "AUTH CRAM-MD5\r\n*\r\n" {
					t.Errorf("backend received %q, want the cancelled exchange only", got)
				}
			} else if got != "" {
				t.Errorf("backend received %q, want nothing", got)
			}
			// Still in pre-auth: the client may try again.
			c.cmd("NOOP", "+OK")
		})
	}
}

func TestGateDenials(t *testing.T) {
	tests := []struct{ code, want string }{
		{protocols.DenyDisabled, "-ERR [AUTH] POP3 access is disabled for this account, please contact your administrator"},
		{protocols.DenyLockout, "-ERR [AUTH] Too many failed logins, try again later"},
		{protocols.DenyLimit, "-ERR [IN-USE] Too many connections for this account, try again later"},
		{"something-new", "-ERR [AUTH] Authentication failed"},
	}
	for _, tt := range tests {
		t.Run(tt.code, func(t *testing.T) {
			h, _ := greeted(t)
			h.Gate.Set("alice", tt.code)
			h.c.cmd("USER alice", "+OK")
			if l := h.c.cmd("PASS pass word", "-ERR"); l != tt.want {
				t.Errorf("PASS = %q, want %q", l, tt.want)
			}
		})
	}
}

// TestGateChecksAuthzid: PLAIN naming another maildrop is gated on it too.
func TestGateChecksAuthzid(t *testing.T) {
	h, b := greeted(t, func(s *protocols.Session) { s.ClientTLS = true })
	h.Gate.Set("bob", protocols.DenyDisabled)
	h.c.cmd("AUTH PLAIN "+b64("bob\x00alice\x00pass word"), "-ERR [AUTH] POP3 access is disabled")
	if got := b.rec.String(); got != "" {
		t.Errorf("backend saw the refused exchange: %q", got)
	}
	h.WantEvents("attempt alice PLAIN")
}

// TestNoSecretInLogs runs logins of every outcome with a debug-level logger
// and checks no password, digest, token or SASL payload is in the output.
func TestNoSecretInLogs(t *testing.T) {
	const pass = "pass word"
	const token = "vF9dft4qmTc2Nvb3RlckBhbHRhdmlzdGEuY29tCg=="
	digest := apopDigest(fakeTimestamp, "wrong-pw")
	secrets := []string{pass, "wrong-pw", "expired-token", token, digest, b64(pass), b64("wrong-pw"),
		b64("\x00alice\x00" + pass), b64("user=alice\x01auth=Bearer expired-token\x01\x01"),
		b64("user=alice\x01auth=Bearer " + token + "\x01\x01")}
	h, _ := greeted(t, func(s *protocols.Session) { s.ClientTLS = true })
	h.Gate.Set("mallory", protocols.DenyLockout)
	c := h.c
	c.cmd("USER mallory", "+OK")
	c.cmd("PASS wrong-pw", "-ERR [AUTH]")
	c.cmd("USER alice", "+OK")
	c.cmd("PASS wrong-pw", "-ERR [AUTH]")
	c.cmd("APOP alice "+digest, "-ERR [AUTH]")
	c.send("AUTH XOAUTH2 " + b64("user=alice\x01auth=Bearer expired-token\x01\x01"))
	c.challenge()
	c.cmd("", "-ERR")
	c.send("AUTH LOGIN")
	c.challenge()
	c.send(b64("alice"))
	c.challenge()
	c.cmd(b64("wrong-pw"), "-ERR [AUTH]")
	c.send("AUTH PLAIN")
	c.challenge()
	c.cmd("*", "-ERR Authentication cancelled")
	c.cmd("AUTH XOAUTH2 "+b64("user=alice\x01auth=Bearer "+token+"\x01\x01"), "+OK")
	h.WantResult(nil)
	h.CheckLogs(secrets, []string{"user=alice", "mechanism=XOAUTH2", "outcome=success", "session=42", "protocol=pop",
		"outcome=denied", "user=mallory", "mechanism=USER", "mechanism=APOP", "outcome=failure"})
}

// TestXCLIENTNeverForwarded: Dovecot offers XCLIENT to trusted peers, and
// the proxy is one. A client must neither learn that nor use it to rewrite
// the address the backend believes in.
func TestXCLIENTNeverForwarded(t *testing.T) {
	b := newFakeBackend(t, func(b *fakeBackend) { b.greeting = "+OK [XCLIENT] Dovecot ready. " + fakeTimestamp })
	h := newHarness(t, b.addr)
	c := h.c
	if g := c.line(); g != "+OK Dovecot ready. "+fakeTimestamp {
		t.Errorf("greeting = %q, want the backend's without [XCLIENT]", g)
	}
	if caps := c.capa(); protocoltest.HasCap(caps, "XCLIENT") {
		t.Errorf("CAPA = %q advertises XCLIENT", caps)
	}
	c.cmd("XCLIENT ADDR=192.0.2.66 PORT=4242", "-ERR Unknown command")
	c.cmd("xclient ADDR=192.0.2.66", "-ERR Unknown command")
	if got := b.rec.String(); strings.Contains(strings.ToUpper(got), "XCLIENT") {
		t.Errorf("backend received %q", got)
	}
}

// TestCommandSmuggling: a bare CR inside an argument could end the line at
// a lenient backend and run a second command behind the gate's back.
func TestCommandSmuggling(t *testing.T) {
	h, b := greeted(t)
	c := h.c
	c.cmd("USER alice\rPASS pass word", "-ERR Invalid characters")
	c.cmd("USER alice\x00x", "-ERR Invalid characters")
	c.cmd("USER  alice", "-ERR Invalid USER arguments")
	if got := b.rec.String(); got != "" {
		t.Errorf("backend received %q", got)
	}
}

// TestVerdictClassification: -ERR codes that say nothing about the password
// are reported as temporary; [AUTH] and bare -ERR are failed passwords.
func TestVerdictClassification(t *testing.T) {
	tests := []struct{ user, reply, event string }{
		{"alice", "-ERR [AUTH] Authentication failed", "fail alice USER"},
		{"down", "-ERR [SYS/TEMP] Backend storage down", "fail down USER temporary"},
		{"locked", "-ERR [IN-USE] Maildrop locked", "fail locked USER temporary"},
		{"early", "-ERR [LOGIN-DELAY] Logged in too recently", "fail early USER temporary"},
		{"refuse-user", "-ERR [AUTH] Plaintext authentication disallowed", "fail refuse-user USER temporary"},
	}
	for _, tt := range tests {
		t.Run(tt.user, func(t *testing.T) {
			h, b := greeted(t)
			h.c.cmd("USER "+tt.user, "+OK")
			if l := h.c.cmd("PASS wrong", "-ERR"); l != tt.reply {
				t.Errorf("PASS = %q, want the backend's %q", l, tt.reply)
			}
			h.WantEvents("attempt "+tt.user+" USER", tt.event)
			if tt.user == "refuse-user" && strings.Contains(b.rec.String(), "PASS") {
				t.Error("PASS sent after the backend refused USER")
			}
		})
	}
}

// TestBackendDropsDuringLogin: no verdict is a backend problem, never a
// failed password, and the client is told.
func TestBackendDropsDuringLogin(t *testing.T) {
	for _, login := range []string{"PASS", "AUTH"} {
		t.Run(login, func(t *testing.T) {
			b := newFakeBackend(t, func(b *fakeBackend) { b.dropAuth = true })
			h := newHarness(t, b.addr, func(s *protocols.Session) { s.ClientTLS = true })
			h.c.expect("+OK")
			mech := "USER"
			if login == "PASS" {
				h.c.cmd("USER alice", "+OK")
				h.c.send("PASS pass word")
			} else {
				mech = "PLAIN"
				h.c.send("AUTH PLAIN " + b64("\x00alice\x00pass word"))
			}
			rest, err := h.Closed()
			if !errors.Is(err, protocols.ErrBackend) || !strings.HasPrefix(rest, "-ERR [SYS/TEMP]") {
				t.Fatalf("PreAuth() = %v, client read %q; want ErrBackend and -ERR [SYS/TEMP]", err, rest)
			}
			h.WantEvents("attempt alice "+mech, "fail alice "+mech+" temporary")
		})
	}
}

// TestClientAddrViaUnsupported: a client address method POP3 cannot honour
// fails the session loudly instead of hiding the client from the backend.
func TestClientAddrViaUnsupported(t *testing.T) {
	b := newFakeBackend(t)
	h := newHarness(t, b.addr, func(s *protocols.Session) { s.ClientAddrVia = "xclient" })
	rest, err := h.Closed()
	if err == nil || rest != "-ERR [SYS/TEMP] Service temporarily unavailable\r\n" {
		t.Fatalf("PreAuth() = %v, client read %q", err, rest)
	}
	if !strings.Contains(h.Logs.String(), "level=ERROR") || !strings.Contains(h.Logs.String(), "client_address=xclient") {
		t.Errorf("no error logged:\n%s", h.Logs.String())
	}
	for _, via := range []string{"", "none"} {
		h := newHarness(t, b.addr, func(s *protocols.Session) { s.ClientAddrVia = via })
		h.c.expect("+OK")
		h.Running()
	}
}
