package e2e

import (
	"fmt"
	"net/textproto"
	"net/url"
	"strings"
	"testing"
	"time"
)

// TestDovecotPOP3 puts mailgate in front of Dovecot's POP3 and logs in with
// Python's poplib over STLS and implicit TLS from 127.0.0.2: the message is
// retrieved, the admin API shows the pop connection from 127.0.0.2, and
// Dovecot (told by a PROXY v2 header) sees 127.0.0.2 too.
func TestDovecotPOP3(t *testing.T) {
	d := needDovecot(t)
	t.Parallel()
	m, byName, cert := serveListeners(t, "e2e-dovecot-pop3-token", []listenerConf{
		{Name: "pop3-pv2", Protocol: "pop", Listen: freeAddr(t), TLS: "starttls", Backend: d.pop3Proxy, ClientAddress: "proxy-v2"},
		{Name: "pop3s-pv2", Protocol: "pop", Listen: freeAddr(t), TLS: "implicit", Backend: d.pop3Proxy, ClientAddress: "proxy-v2"},
	})
	waitWho(t, d.conf, "pop3", alice) // nothing left over from an earlier run

	// session delivers a message to alice, logs in through one listener,
	// retrieves and deletes it, and holds the session while Dovecot and the
	// admin API are asked who is there.
	session := func(t *testing.T, o popOpts, wantIP string) {
		t.Helper()
		subject := fmt.Sprintf("mailgate e2e pop3 %s %d", o.TLS, time.Now().UnixNano())
		lmtpDeliver(t, d.lmtp, alice, subject)
		o.User, o.Password, o.Then, o.CAFile, o.RetrSubject, o.Dele = alice, alicePassword, "hold", cert, subject, true
		c := startPop(t, "hold-"+o.TLS, o)
		if o.TLS == "implicit" {
			c.expect("TLS TLSv1.")
		}
		if g := c.expect("GREETING "); strings.Contains(g, "XCLIENT") || !strings.HasPrefix(g, "GREETING +OK") {
			t.Errorf("greeting through mailgate: %q, want Dovecot's +OK without [XCLIENT]", g)
		}
		if o.TLS == "starttls" {
			c.expect("CAPS ") // the plain link's
			c.expect("TLS TLSv1.")
		}
		if caps := c.expect("CAPS "); strings.Contains(caps, "STLS") || strings.Contains(caps, "XCLIENT") || !strings.Contains(caps, "USER") {
			t.Errorf("capabilities on the TLS link: %q, want USER and no STLS or XCLIENT", caps)
		}
		if l := c.expect("LOGIN "); !strings.HasPrefix(l, "LOGIN +OK") {
			t.Fatalf("login through mailgate: %s", l)
		}
		if l := c.expect("RETR "); !strings.HasSuffix(l, " FOUND") {
			t.Fatalf("RETR of the delivered message: %s", l)
		}
		c.expect("DELE +OK")
		c.expect("HOLDING")
		waitWho(t, d.conf, "pop3", alice, wantIP)
		conn := m.waitConn("pop", alice)
		if conn.ClientIP != wantIP || !conn.TLS || conn.Protocol != "pop" {
			t.Errorf("admin API connection = %+v, want protocol pop, client_ip %s and tls true", conn, wantIP)
		}
		c.send("noop")
		c.expect("NOOP +OK")
		c.send("quit")
		c.expect("QUIT +OK")
		c.wait()
		m.waitSummary("pop", 0)
		waitWho(t, d.conf, "pop3", alice)
	}

	t.Run("STLS from 127.0.0.2", func(t *testing.T) {
		c := startPop(t, "caps", popOpts{Addr: byName["pop3-pv2"], TLS: "none", Source: "127.0.0.2", User: alice, Password: alicePassword})
		if caps := c.expect("CAPS "); !strings.Contains(caps, "STLS") {
			t.Errorf("capabilities on the plain link: %q, want STLS", caps)
		}
		c.expect("LOGIN +OK")
		c.wait()
		session(t, popOpts{Addr: byName["pop3-pv2"], TLS: "starttls", Source: "127.0.0.2"}, "127.0.0.2")
	})
	t.Run("implicit TLS from 127.0.0.2", func(t *testing.T) {
		session(t, popOpts{Addr: byName["pop3s-pv2"], TLS: "implicit", Source: "127.0.0.2"}, "127.0.0.2")
	})

	t.Run("XCLIENT refused, wrong password gets Dovecot's -ERR", func(t *testing.T) {
		c := startPop(t, "wrong", popOpts{Addr: byName["pop3-pv2"], TLS: "starttls", CAFile: cert, Source: "127.0.0.2",
			User: alice, Password: wrongPassword, XClient: true})
		// Dovecot trusts mailgate's peer addresses (login_trusted_networks):
		// a forwarded XCLIENT would rewrite the address it logs and limits.
		if l := c.expect("XCLIENT "); !strings.HasPrefix(l, "XCLIENT -ERR") {
			t.Errorf("XCLIENT through mailgate: %q, want -ERR", l)
		}
		if l := c.expect("LOGIN "); !strings.HasPrefix(l, "LOGIN -ERR [AUTH]") {
			t.Errorf("login with a wrong password: %q, want -ERR [AUTH]", l)
		}
		c.wait()
		m.waitSummary("pop", 0)
	})

	t.Run("disabled user never reaches Dovecot", func(t *testing.T) {
		path := "/api/v1/users/" + url.PathEscape(alice) + "/protocols/pop"
		m.apiJSON("PUT", path, map[string]bool{"enabled": false}, nil)
		defer m.apiJSON("PUT", path, map[string]bool{"enabled": true}, nil)
		waitWho(t, d.conf, "pop3", alice)
		// Dovecot's lines about alice's POP3 logins or sessions (pop3-login,
		// pop3(user)): IMAP tests running at the same time only add imap lines.
		before := countLines(t, d.log, "pop3", alice)
		// The password is right: the -ERR can only come from mailgate's gate.
		c := startPop(t, "disabled", popOpts{Addr: byName["pop3s-pv2"], TLS: "implicit", CAFile: cert, User: alice, Password: alicePassword})
		if l := c.expect("LOGIN "); !strings.HasPrefix(l, "LOGIN -ERR [AUTH] POP3 access is disabled") {
			t.Errorf("login while pop is disabled: %q", l)
		}
		c.wait()
		m.waitSummary("pop", 0) // the backend connection is closed too
		if after := countLines(t, d.log, "pop3", alice); after != before {
			t.Errorf("%s has %d POP3 lines about %s after the gated login, %d before: the login reached Dovecot", d.log, after, alice, before)
		}
	})
}

// popOpts are popc.py's flags.
type popOpts struct {
	Addr        string
	TLS         string // none, starttls (default), implicit
	CAFile      string // verify the server against it; empty: no verification
	Source      string // bind the client socket to this address (e.g. 127.0.0.2)
	User        string
	Password    string
	XClient     bool   // try XCLIENT before login
	RetrSubject string // retrieve the newest message with this Subject
	Dele        bool   // and delete it
	Then        string // none (default) or hold
}

func (o popOpts) args() []string {
	a := connFlags(o.Addr, o.TLS, o.CAFile, o.Source)
	a = append(a, "--user", o.User, "--password", o.Password)
	a.add("--retr-subject", o.RetrSubject)
	a.add("--then", o.Then)
	if o.XClient {
		a = append(a, "--xclient")
	}
	if o.Dele {
		a = append(a, "--dele")
	}
	return a
}

// startPop starts popc.py; its events are read like imapc.py's.
func startPop(t *testing.T, name string, o popOpts) *pyClient {
	t.Helper()
	return startPyClient(t, name, "popc.py", o.args()...)
}

// lmtpDeliver puts a small message with the given Subject into rcpt's
// maildrop through Dovecot's LMTP (RFC 2033).
func lmtpDeliver(t *testing.T, addr, rcpt, subject string) {
	t.Helper()
	c, err := textproto.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("LMTP %s: %v", addr, err)
	}
	defer c.Close()
	step := func(code int, format string, args ...any) {
		t.Helper()
		if format != "" {
			if err := c.PrintfLine(format, args...); err != nil {
				t.Fatalf("LMTP %q: %v", format, err)
			}
		}
		if _, msg, err := c.ReadResponse(code); err != nil {
			t.Fatalf("LMTP %q: %v %s", format, err, msg)
		}
	}
	step(220, "")
	step(250, "LHLO e2e.mailgate.test")
	step(250, "MAIL FROM:<e2e@mailgate.test>")
	step(250, "RCPT TO:<%s>", rcpt)
	step(354, "DATA")
	w := c.DotWriter()
	fmt.Fprintf(w, "From: e2e@mailgate.test\r\nTo: %s\r\nSubject: %s\r\nMessage-ID: <%d@mailgate.test>\r\n\r\nHello through mailgate.\r\n.a line that needs dot-stuffing\r\n",
		rcpt, subject, time.Now().UnixNano())
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	step(250, "") // one reply per recipient
	step(221, "QUIT")
}
