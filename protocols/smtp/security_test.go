package smtp_test

import (
	"strings"
	"testing"

	"github.com/mailgate/mailgate/protocols"
	"github.com/mailgate/mailgate/protocols/protocoltest"
	"github.com/mailgate/mailgate/protocols/smtp"
)

// TestSTARTTLSInjection: an AUTH pipelined behind STARTTLS in the same write
// was sent in the clear and must never run (CVE-2011-0411).
func TestSTARTTLSInjection(t *testing.T) {
	h, b := greeted(t, smtp.Options{})
	c := h.c
	c.ehlo("client.test")
	c.write("STARTTLS\r\nAUTH PLAIN " + b64("\x00alice\x00pass word") + "\r\nMAIL FROM:<evil@example.com>\r\n")
	c.expect("220 2.0.0 Ready to start TLS")
	c.startTLS(h.ClientTLS)
	// The first thing read inside TLS is the client's own next command.
	c.send("NOOP")
	if l := c.reply(); len(l) != 1 || !strings.HasPrefix(l[0], "250") {
		t.Fatalf("first reply inside TLS = %q, want the NOOP's 250 (the injected AUTH was answered?)", l)
	}
	h.WantInjectionDiscarded("STARTTLS")
	if got := b.rec.String(); strings.Contains(got, "AUTH") || strings.Contains(got, "MAIL") {
		t.Errorf("the backend received injected commands: %q", got)
	}
}

// TestSTARTTLSInjectionMX: on port 25 the injected mail transaction must
// not start the blind relay either.
func TestSTARTTLSInjectionMX(t *testing.T) {
	h, b := greeted(t, smtp.Options{Role: smtp.RoleMX})
	c := h.c
	c.write("EHLO client.test\r\nSTARTTLS\r\nMAIL FROM:<evil@example.com>\r\nRCPT TO:<alice@example.com>\r\n")
	c.expect("250 ")
	c.expect("220 2.0.0")
	c.startTLS(h.ClientTLS)
	c.send("MAIL FROM:<x@example.com>")
	c.expect("503 5.5.1") // EHLO first, again
	h.Running()
	if got := b.rec.String(); strings.Contains(got, "MAIL") || strings.Contains(got, "RCPT") {
		t.Errorf("the backend received injected commands: %q", got)
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
		{"PLAIN with IR", "PLAIN", func(t *testing.T, c *tclient) {
			c.send("AUTH PLAIN " + plain)
		}},
		{"PLAIN without IR", "PLAIN", func(t *testing.T, c *tclient) {
			c.send("AUTH PLAIN")
			c.expect("334 ")
			c.send(plain)
		}},
		{"LOGIN", "LOGIN", func(t *testing.T, c *tclient) {
			c.send("AUTH LOGIN")
			c.expect("334 VXNlcm5hbWU6")
			c.send(b64("alice"))
			// Refused at the username: the password is never asked for.
		}},
		{"LOGIN with IR", "LOGIN", func(t *testing.T, c *tclient) {
			c.send("AUTH LOGIN " + b64("alice"))
		}},
		{"XOAUTH2", "XOAUTH2", func(t *testing.T, c *tclient) {
			c.send("AUTH XOAUTH2 " + b64("user=alice\x01auth=Bearer "+pass+"\x01\x01"))
		}},
		{"OAUTHBEARER", "OAUTHBEARER", func(t *testing.T, c *tclient) {
			c.send("AUTH OAUTHBEARER " + b64("n,a=alice,\x01auth=Bearer "+pass+"\x01\x01"))
		}},
		{"SCRAM-SHA-256", "SCRAM-SHA-256", func(t *testing.T, c *tclient) {
			c.send("AUTH SCRAM-SHA-256 " + b64("n,,n=alice,r=abcdef"))
		}},
		{"CRAM-MD5", "CRAM-MD5", func(t *testing.T, c *tclient) {
			c.send("AUTH CRAM-MD5")
			c.expect("334 ")
			c.send(b64("alice 0123456789abcdef0123456789abcdef"))
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, b := greeted(t, smtp.Options{}, func(s *protocols.Session) { s.ClientTLS = true })
			h.Gate.Deny["alice"] = protocols.DenyDisabled
			c := h.c
			c.ehlo("client.test")
			tt.run(t, c)
			c.expect("535 5.7.8 SMTP access is disabled for this account")
			h.Running()
			h.WantEvents("attempt alice " + tt.mech)
			got := b.rec.String()
			protocoltest.CheckWithheld(t, got, pass, plain, b64(pass), b64("alice"), "0123456789abcdef", "abcdef")
			if tt.mech == "CRAM-MD5" {
				if got != "EHLO client.test\r\nAUTH CRAM-MD5\r\n*\r\n" {
					t.Errorf("CRAM-MD5 exchange not cancelled at the backend: %q", got)
				}
			} else if strings.Contains(got, "AUTH") {
				t.Errorf("backend saw AUTH: %q", got)
			}
			// Still in pre-auth: the client may go on.
			c.send("NOOP")
			c.expect("250")
		})
	}
}

func TestGateDenials(t *testing.T) {
	tests := []struct{ code, want string }{
		{protocols.DenyDisabled, "535 5.7.8 SMTP access is disabled for this account, please contact your administrator"},
		{protocols.DenyLockout, "535 5.7.8 Too many failed logins, try again later"},
		{protocols.DenyLimit, "454 4.7.0 Too many connections"},
		{"something-new", "535 5.7.8 Authentication credentials invalid"},
	}
	for _, tt := range tests {
		t.Run(tt.code, func(t *testing.T) {
			h, _ := greeted(t, smtp.Options{}, func(s *protocols.Session) { s.ClientTLS = true })
			h.Gate.Deny["alice"] = tt.code
			h.c.ehlo("client.test")
			h.c.send("AUTH PLAIN " + b64("\x00alice\x00pass word"))
			if l := h.c.reply(); len(l) != 1 || l[0] != tt.want {
				t.Fatalf("reply = %q, want %q", l, tt.want)
			}
		})
	}
}

// TestGateChecksAuthzid: PLAIN naming another mailbox is gated on it too.
func TestGateChecksAuthzid(t *testing.T) {
	h, b := greeted(t, smtp.Options{}, func(s *protocols.Session) { s.ClientTLS = true })
	h.Gate.Deny["bob"] = protocols.DenyDisabled
	h.c.ehlo("client.test")
	h.c.send("AUTH PLAIN " + b64("bob\x00alice\x00pass word"))
	h.c.expect("535 5.7.8 SMTP access is disabled")
	if strings.Contains(b.rec.String(), "AUTH") {
		t.Error("backend saw the refused exchange")
	}
	h.WantEvents("attempt alice PLAIN")
}

// TestNoSecretInLogs runs logins of every outcome with a debug-level logger
// and checks no password, token or SASL line is in the output.
func TestNoSecretInLogs(t *testing.T) {
	const pass = "pass word"
	secrets := []string{pass, b64("\x00alice\x00" + pass), b64(pass), goodToken, "expired-token", "wrong-pw", b64("wrong-pw"),
		b64("user=alice\x01auth=Bearer expired-token\x01\x01"), b64("\x00mallory\x00wrong-pw")}
	h, _ := greeted(t, smtp.Options{}, func(s *protocols.Session) { s.ClientTLS = true })
	h.Gate.Deny["mallory"] = protocols.DenyLockout
	c := h.c
	c.ehlo("client.test")
	c.send("AUTH PLAIN " + b64("\x00mallory\x00wrong-pw"))
	c.expect("535")
	c.send("AUTH LOGIN " + b64("alice"))
	c.expect("334")
	c.send(b64("wrong-pw"))
	c.expect("535")
	c.send("AUTH XOAUTH2 " + b64("user=alice\x01auth=Bearer expired-token\x01\x01"))
	c.expect("334")
	c.send("")
	c.expect("535")
	c.send("AUTH LOGIN")
	c.expect("334")
	c.send(b64("alice"))
	c.expect("334")
	c.send("*")
	c.expect("501")
	// A confused client sends its password as a command line.
	c.send(b64("wrong-pw"))
	c.expect("500")
	c.send("wrong-pw")
	c.expect("500")
	c.send("AUTH PLAIN " + b64("\x00alice\x00"+pass))
	c.expect("235")
	h.WantResult(nil)
	h.CheckLogs(secrets, []string{"user=alice", "mechanism=PLAIN", "outcome=success", "session=42", "outcome=denied", "user=mallory", "outcome=failure"})
}

// TestClientXCLIENTRefused: a client's own XCLIENT or XFORWARD never
// reaches a backend that trusts the proxy's address, on any role.
func TestClientXCLIENTRefused(t *testing.T) {
	for _, role := range []string{smtp.RoleSubmission, smtp.RoleMX} {
		t.Run(role, func(t *testing.T) {
			h, b := greeted(t, smtp.Options{Role: role})
			c := h.c
			c.ehlo("client.test")
			c.send("XCLIENT ADDR=6.6.6.6 LOGIN=alice")
			c.expect("502 5.5.1")
			c.send("XFORWARD ADDR=6.6.6.6")
			c.expect("502 5.5.1")
			h.Running()
			if got := b.rec.String(); strings.Contains(got, "XCLIENT") || strings.Contains(got, "XFORWARD") {
				t.Errorf("backend received %q", got)
			}
		})
	}
}

// TestRequireTLSForLogin: AUTH is hidden and refused on a plain link, and
// offered once the client did STARTTLS.
func TestRequireTLSForLogin(t *testing.T) {
	h, b := greeted(t, smtp.Options{}, func(s *protocols.Session) { s.RequireTLSForLogin = true })
	c := h.c
	kws := c.ehlo("client.test")
	if hasKW(kws, "AUTH") || !hasKW(kws, "STARTTLS") {
		t.Errorf("plain-link EHLO = %q, want STARTTLS and no AUTH", kws)
	}
	for _, cmd := range []string{"AUTH PLAIN " + b64("\x00alice\x00pass word"), "AUTH LOGIN", "AUTH CRAM-MD5"} {
		c.send(cmd)
		c.expect("530 5.7.0 Must issue a STARTTLS command first")
	}
	if strings.Contains(b.rec.String(), "AUTH") {
		t.Error("a cleartext AUTH reached the backend")
	}
	c.send("STARTTLS")
	c.expect("220")
	c.startTLS(h.ClientTLS)
	kws = c.ehlo("client.test")
	if hasKW(kws, "STARTTLS") || kwLine(kws, "AUTH") != "AUTH PLAIN LOGIN CRAM-MD5 SCRAM-SHA-1 SCRAM-SHA-256 XOAUTH2 OAUTHBEARER" {
		t.Errorf("TLS-link EHLO = %q", kws)
	}
	c.send("AUTH PLAIN " + b64("\x00alice\x00pass word"))
	c.expect("235")
	h.WantResult(nil)
	h.WantEvents("tls", "attempt alice PLAIN", "ok alice PLAIN")
}
