package e2e

import (
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mailgate/mailgate/internal/demo"
)

// SMTP through the built binary: real clients (Python's smtplib in
// testdata/smtpc.py, swaks) against mailgate's submission (587, STARTTLS),
// submissions (465, implicit TLS) and mx (25) listeners, in front of the
// go-smtp demo backend (always) and a real Postfix (with scripts/postfix.sh).

// smtpOpts are smtpc.py's flags.
type smtpOpts struct {
	Addr     string
	TLS      string // none, starttls (default), implicit
	CAFile   string
	Source   string
	User     string
	Password string
	Auth     string // none, plain (default), login
	From, To string
	Subject  string
	Then     string // none, send (default), hold
}

func (o smtpOpts) args() []string {
	a := connFlags(o.Addr, o.TLS, o.CAFile, o.Source)
	a.add("--user", o.User)
	a.add("--password", o.Password)
	a.add("--auth", o.Auth)
	a.add("--from", o.From)
	a.add("--to", o.To)
	a.add("--subject", o.Subject)
	a.add("--then", o.Then)
	return a
}

// startSMTPClient starts smtpc.py; its events are read like imapc.py's.
func startSMTPClient(t *testing.T, name string, o smtpOpts) *pyClient {
	t.Helper()
	return startPyClient(t, name, "smtpc.py", o.args()...)
}

// smtpSend runs one smtpc.py session to its end and returns its AUTH line
// ("" with --auth none) and its last SENT/SEND FAIL line.
func smtpSend(t *testing.T, name string, o smtpOpts) (auth, sent string) {
	t.Helper()
	c := startSMTPClient(t, name, o)
	if o.Auth != "none" {
		auth = c.expect("AUTH ")
		if !strings.HasPrefix(auth, "AUTH OK") {
			c.wait()
			return auth, ""
		}
	}
	sent = c.expect("SEN")
	c.expect("QUIT")
	c.wait()
	return auth, sent
}

// waitSMTPConn polls until exactly one live smtp connection matches.
func (m *mailgate) waitSMTPConn(what string, match func(apiConn) bool) apiConn {
	m.t.Helper()
	var last []apiConn
	waitFor(m.t, what, func() bool {
		last = m.connections(url.Values{"protocol": {"smtp"}})
		return len(last) == 1 && match(last[0])
	}, func() string { return fmt.Sprintf("last connections %+v", last) })
	return last[0]
}

func subjectOf(t *testing.T, what string) string {
	return fmt.Sprintf("mailgate-e2e-%s-%d", strings.ReplaceAll(what, " ", "-"), time.Now().UnixNano())
}

// TestSMTPDemoBackend runs the three SMTP roles against the go-smtp demo
// backend, started in this process: no mail server needed.
func TestSMTPDemoBackend(t *testing.T) {
	t.Parallel()
	be, err := demo.StartSMTP("127.0.0.1:0", map[string]string{alice: alicePassword, bob: bobPassword})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { be.Close() })
	sub, subs, mx := freeAddr(t), freeAddr(t), freeAddr(t)
	m, _, cert := serveListeners(t, "e2e-smtp-token", []listenerConf{
		{Name: "submission", Protocol: "smtp", Role: "submission", Listen: sub, TLS: "starttls", Backend: be.Addr(), ClientAddress: "none"},
		{Name: "submissions", Protocol: "smtp", Role: "submissions", Listen: subs, TLS: "implicit", Backend: be.Addr(), ClientAddress: "none"},
		{Name: "mx", Protocol: "smtp", Role: "mx", Listen: mx, TLS: "starttls", Backend: be.Addr(), ClientAddress: "none"},
	})

	delivered := func(t *testing.T, subject string) demo.Message {
		t.Helper()
		var found *demo.Message
		waitFor(t, "message "+subject, func() bool {
			for _, msg := range be.Messages() {
				if strings.Contains(string(msg.Data), "Subject: "+subject+"\r\n") {
					found = &msg
					return true
				}
			}
			return false
		}, nil)
		return *found
	}

	for _, tt := range []struct {
		name, addr, tls, auth string
	}{
		{"587 STARTTLS AUTH PLAIN", sub, "starttls", "plain"},
		{"587 STARTTLS AUTH LOGIN", sub, "starttls", "login"},
		{"465 implicit TLS AUTH PLAIN", subs, "implicit", "plain"},
		{"465 implicit TLS AUTH LOGIN", subs, "implicit", "login"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			subject := subjectOf(t, tt.name)
			auth, sent := smtpSend(t, "send", smtpOpts{Addr: tt.addr, TLS: tt.tls, CAFile: cert, Source: "127.0.0.2",
				User: alice, Password: alicePassword, Auth: tt.auth, To: bob, Subject: subject})
			if !strings.HasPrefix(auth, "AUTH OK 235") || sent != "SENT "+subject {
				t.Fatalf("AUTH %q, then %q", auth, sent)
			}
			if msg := delivered(t, subject); msg.User != alice {
				t.Errorf("delivered as %q, want %s", msg.User, alice)
			}
		})
	}

	t.Run("EHLO shows the truth about the client link", func(t *testing.T) {
		c := startSMTPClient(t, "ehlo", smtpOpts{Addr: sub, TLS: "starttls", CAFile: cert, Auth: "none", Then: "none"})
		if l := c.expect("EHLO "); !strings.Contains(l, " STARTTLS") || !strings.Contains(l, "AUTH") {
			t.Errorf("plain-link EHLO %q, want STARTTLS and AUTH", l)
		}
		if l := c.expect("EHLO "); strings.Contains(l, "STARTTLS") || !strings.Contains(l, "AUTH") {
			t.Errorf("TLS-link EHLO %q, want AUTH and no STARTTLS", l)
		}
		c.expect("QUIT")
		c.wait()
		c = startSMTPClient(t, "ehlo-mx", smtpOpts{Addr: mx, TLS: "starttls", CAFile: cert, Auth: "none", Then: "none"})
		if l := c.expect("EHLO "); strings.Contains(l, "AUTH") || !strings.Contains(l, "STARTTLS") {
			t.Errorf("MX EHLO %q, want STARTTLS and no AUTH", l)
		}
		c.expect("QUIT")
		c.wait()
	})

	t.Run("MX delivery without AUTH counts one unauthenticated smtp connection", func(t *testing.T) {
		m.waitSummary("smtp", 0)
		subject := subjectOf(t, "mx")
		c := startSMTPClient(t, "mx-hold", smtpOpts{Addr: mx, TLS: "starttls", CAFile: cert, Source: "127.0.0.2",
			Auth: "none", From: "someone@remote.test", To: alice, Subject: subject, Then: "hold"})
		c.expect("HOLDING")
		c.send("send")
		c.expect("SENT " + subject)
		conn := m.waitSMTPConn("the MX connection", func(c apiConn) bool { return c.ClientIP == "127.0.0.2" })
		if conn.State == "authenticated" || conn.User != "" || !conn.TLS {
			t.Errorf("MX connection = %+v, want unauthenticated, no user, TLS", conn)
		}
		if s := m.summary(); s["smtp"] != 1 {
			t.Errorf("summary = %v, want smtp 1", s)
		}
		c.send("quit")
		c.expect("QUIT 221")
		c.wait()
		m.waitSummary("smtp", 0)
		if msg := delivered(t, subject); msg.User != "" {
			t.Errorf("MX message delivered as %q", msg.User)
		}
	})

	t.Run("held session listed and dropped with 421", func(t *testing.T) {
		m.waitSummary("smtp", 0)
		c := startSMTPClient(t, "hold", smtpOpts{Addr: sub, TLS: "starttls", CAFile: cert, Source: "127.0.0.2",
			User: alice, Password: alicePassword, Then: "hold"})
		c.expect("AUTH OK")
		c.expect("HOLDING")
		conn := m.waitSMTPConn("alice's smtp connection", func(c apiConn) bool { return c.State == "authenticated" })
		if conn.User != alice || conn.ClientIP != "127.0.0.2" || !conn.TLS || conn.Protocol != "smtp" {
			t.Errorf("connection = %+v", conn)
		}
		if n := m.drop(alice, "smtp"); n != 1 {
			t.Errorf("dropped = %d, want 1", n)
		}
		c.send("noop")
		if l := c.expect("NOOP "); !strings.HasPrefix(l, "NOOP 421 ") {
			t.Errorf("after the drop: %q, want 421", l)
		}
		c.wait()
		m.waitSummary("smtp", 0)
	})

	t.Run("wrong password gets 535", func(t *testing.T) {
		auth, _ := smtpSend(t, "wrong", smtpOpts{Addr: sub, CAFile: cert, User: alice, Password: wrongPassword, Auth: "login"})
		if !strings.HasPrefix(auth, "AUTH FAIL 535") {
			t.Fatalf("AUTH with a wrong password: %q", auth)
		}
	})

	t.Run("disabled user refused by mailgate", func(t *testing.T) {
		path := "/api/v1/users/" + url.PathEscape(bob) + "/protocols/smtp"
		m.apiJSON("PUT", path, map[string]bool{"enabled": false}, nil)
		auth, _ := smtpSend(t, "disabled", smtpOpts{Addr: subs, TLS: "implicit", CAFile: cert, User: bob, Password: bobPassword})
		if !strings.HasPrefix(auth, "AUTH FAIL 535 5.7.8 SMTP access is disabled") {
			t.Errorf("AUTH while smtp is disabled: %q", auth)
		}
		m.apiJSON("PUT", path, map[string]bool{"enabled": true}, nil)
		if auth, _ := smtpSend(t, "re-enabled", smtpOpts{Addr: subs, TLS: "implicit", CAFile: cert, User: bob, Password: bobPassword, To: alice}); !strings.HasPrefix(auth, "AUTH OK") {
			t.Errorf("AUTH after re-enabling smtp: %q", auth)
		}
	})
}

// postfix is the real Postfix that scripts/postfix.sh started.
type postfix struct {
	subProxy, subXCLIENT, mx string
	log, maildirs            string
}

// needPostfix skips the test unless the MAILGATE_POSTFIX_* variables are set
// and swaks is there.
func needPostfix(t *testing.T) postfix {
	t.Helper()
	v := needEnv(t, "Postfix", `scripts/dovecot.sh start && scripts/postfix.sh start && eval "$(scripts/postfix.sh env)"`,
		"MAILGATE_POSTFIX_SUBMISSION_PROXY", "MAILGATE_POSTFIX_SUBMISSION_XCLIENT", "MAILGATE_POSTFIX_MX", "MAILGATE_POSTFIX_LOG", "MAILGATE_POSTFIX_MAILDIRS")
	if _, err := exec.LookPath("swaks"); err != nil {
		t.Skip("swaks is not installed (apt-get install swaks libnet-ssleay-perl; scripts/test.sh does it)")
	}
	return postfix{subProxy: v[0], subXCLIENT: v[1], mx: v[2], log: v[3], maildirs: v[4]}
}

// delivered waits for the message with this Subject in user's maildir
// (Postfix delivers example.com to Dovecot over LMTP) and returns it.
func (p postfix) delivered(t *testing.T, user, subject string) string {
	t.Helper()
	local, domain, _ := strings.Cut(user, "@")
	dir := filepath.Join(p.maildirs, domain, local, "Maildir")
	var msg string
	waitFor(t, "message "+subject+" in "+dir, func() bool {
		for _, sub := range []string{"new", "cur"} {
			files, _ := filepath.Glob(filepath.Join(dir, sub, "*"))
			for _, f := range files {
				if b, err := os.ReadFile(f); err == nil && strings.Contains(string(b), "\nSubject: "+subject+"\n") {
					msg = string(b)
					return true
				}
			}
		}
		return false
	}, func() string {
		b, _ := os.ReadFile(p.log)
		lines := strings.Split(string(b), "\n")
		return "Postfix log tail:\n" + strings.Join(lines[max(0, len(lines)-30):], "\n")
	})
	return msg
}

// postfixReceived returns the Received: header Postfix's smtpd added,
// unfolded: "Received: from HELO (NAME [IP]) ... by mail.example.com (Postfix) ...".
func postfixReceived(msg string) string {
	hdr, _, _ := strings.Cut(msg, "\n\n")
	hdr = strings.NewReplacer("\n\t", " ", "\n ", " ").Replace(hdr)
	for _, l := range strings.Split(hdr, "\n") {
		if strings.HasPrefix(l, "Received: ") && strings.Contains(l, "(Postfix)") {
			return l
		}
	}
	return ""
}

// TestSMTPPostfix puts mailgate in front of a real Postfix (SASL through
// Dovecot) and checks with swaks that mail is delivered and that Postfix
// sees the real client address, passed with PROXY v2 or with XCLIENT.
func TestSMTPPostfix(t *testing.T) {
	p := needPostfix(t)
	t.Parallel()
	m, addr, _ := serveListeners(t, "e2e-postfix-token", []listenerConf{
		{Name: "587-pv2", Protocol: "smtp", Role: "submission", Listen: freeAddr(t), TLS: "starttls", Backend: p.subProxy, ClientAddress: "proxy-v2"},
		{Name: "465-pv2", Protocol: "smtp", Role: "submissions", Listen: freeAddr(t), TLS: "implicit", Backend: p.subProxy, ClientAddress: "proxy-v2"},
		{Name: "587-xclient", Protocol: "smtp", Role: "submission", Listen: freeAddr(t), TLS: "starttls", Backend: p.subXCLIENT, ClientAddress: "xclient"},
		{Name: "465-xclient", Protocol: "smtp", Role: "submissions", Listen: freeAddr(t), TLS: "implicit", Backend: p.subXCLIENT, ClientAddress: "xclient"},
		{Name: "25-pv2", Protocol: "smtp", Role: "mx", Listen: freeAddr(t), TLS: "starttls", Backend: p.mx, ClientAddress: "proxy-v2"},
	})

	// swaks sends one message from 127.0.0.2 and returns its transcript.
	swaks := func(t *testing.T, listener string, tlsFlag string, auth, user, pass, to, subject string) string {
		t.Helper()
		args := []string{"--server", addr[listener], "--local-interface", "127.0.0.2", "--timeout", "40",
			"--from", alice, "--to", to, "--header", "Subject: " + subject, tlsFlag}
		if auth != "" {
			args = append(args, "--auth", auth, "--auth-user", user, "--auth-password", pass)
		}
		out, err := runCmd(t, "swaks", args...)
		if err != nil {
			t.Fatalf("swaks %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return out
	}

	for _, tt := range []struct {
		listener, tls, auth string
	}{
		{"587-pv2", "-tls", "PLAIN"},
		{"587-pv2", "-tls", "LOGIN"},
		{"465-pv2", "--tls-on-connect", "PLAIN"},
		{"465-pv2", "--tls-on-connect", "LOGIN"},
		{"587-xclient", "-tls", "PLAIN"},
		{"587-xclient", "-tls", "LOGIN"},
		{"465-xclient", "--tls-on-connect", "LOGIN"},
	} {
		name := tt.listener + " " + tt.auth
		t.Run(name, func(t *testing.T) {
			subject := subjectOf(t, name)
			out := swaks(t, tt.listener, tt.tls, tt.auth, alice, alicePassword, bob, subject)
			if !strings.Contains(out, "<~  235 ") && !strings.Contains(out, "<-  235 ") {
				t.Fatalf("swaks did not get 235:\n%s", out)
			}
			rcv := postfixReceived(p.delivered(t, bob, subject))
			if !strings.Contains(rcv, "[127.0.0.2])") || !strings.Contains(rcv, "(Authenticated sender: "+alice+")") {
				t.Errorf("Postfix's Received: %q, want client 127.0.0.2 and sender %s", rcv, alice)
			}
			if log, _ := os.ReadFile(p.log); !strings.Contains(string(log), "client=unknown[127.0.0.2], sasl_method="+tt.auth+", sasl_username="+alice) {
				t.Errorf("the Postfix log has no client=unknown[127.0.0.2], sasl_method=%s, sasl_username=%s", tt.auth, alice)
			}
		})
	}

	t.Run("MX delivery without AUTH", func(t *testing.T) {
		subject := subjectOf(t, "mx")
		swaks(t, "25-pv2", "-tls", "", "", "", alice, subject)
		rcv := postfixReceived(p.delivered(t, alice, subject))
		if !strings.Contains(rcv, "[127.0.0.2])") || strings.Contains(rcv, "Authenticated") {
			t.Errorf("Postfix's Received: %q, want client 127.0.0.2 and no login", rcv)
		}
	})

	t.Run("wrong password gets Postfix's 535", func(t *testing.T) {
		out, err := runCmd(t, "swaks", "--server", addr["587-pv2"], "-tls", "--timeout", "40", "--quit-after", "AUTH",
			"--auth", "PLAIN", "--auth-user", alice, "--auth-password", wrongPassword, "--to", bob)
		if err == nil || !strings.Contains(out, "535 5.7.8") {
			t.Fatalf("swaks with a wrong password: %v\n%s", err, out)
		}
	})

	t.Run("disabled user never reaches Postfix", func(t *testing.T) {
		path := "/api/v1/users/" + url.PathEscape(bob) + "/protocols/smtp"
		m.apiJSON("PUT", path, map[string]bool{"enabled": false}, nil)
		before, _ := os.ReadFile(p.log)
		out, err := runCmd(t, "swaks", "--server", addr["587-xclient"], "-tls", "--timeout", "40", "--quit-after", "AUTH",
			"--auth", "LOGIN", "--auth-user", bob, "--auth-password", bobPassword, "--to", alice)
		if err == nil || !strings.Contains(out, "535 5.7.8 SMTP access is disabled") {
			t.Errorf("swaks while smtp is disabled: %v\n%s", err, out)
		}
		m.waitSummary("smtp", 0)
		after, _ := os.ReadFile(p.log)
		if len(after) >= len(before) && strings.Contains(string(after[len(before):]), "sasl_username="+bob) {
			t.Errorf("Postfix saw bob's login:\n%s", after[len(before):])
		}
		m.apiJSON("PUT", path, map[string]bool{"enabled": true}, nil)
	})
}
