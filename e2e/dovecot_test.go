package e2e

import (
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// dovecot is the real Dovecot that scripts/dovecot.sh started.
type dovecot struct {
	imap      string // plain IMAP listener (STARTTLS offered), trusts ID x-originating-ip from 127/8
	proxy     string // IMAP listener with haproxy = yes: PROXY v1/v2 from 127/8
	pop3Proxy string // POP3 listener with haproxy = yes: PROXY v1/v2 from 127/8
	lmtp      string // LMTP, to put a message in a maildrop
	conf      string // for doveadm -c
	log       string // next to conf
}

// needDovecot skips the test unless the MAILGATE_DOVECOT_* variables are set.
func needDovecot(t *testing.T) dovecot {
	t.Helper()
	v := needEnv(t, "Dovecot", `scripts/dovecot.sh start && eval "$(scripts/dovecot.sh env)"`,
		"MAILGATE_DOVECOT_IMAP", "MAILGATE_DOVECOT_PROXY", "MAILGATE_DOVECOT_POP3_PROXY", "MAILGATE_DOVECOT_LMTP", "MAILGATE_DOVECOT_CONF")
	return dovecot{imap: v[0], proxy: v[1], pop3Proxy: v[2], lmtp: v[3], conf: v[4], log: filepath.Join(filepath.Dir(v[4]), "dovecot.log")}
}

// TestDovecot puts mailgate in front of a real Dovecot and checks that
// Dovecot sees the real client address, whichever way it is passed.
func TestDovecot(t *testing.T) {
	d := needDovecot(t)
	t.Parallel()
	m, byName, cert := serveListeners(t, "e2e-dovecot-token", []listenerConf{
		{Name: "imap-pv2", Listen: freeAddr(t), TLS: "starttls", Backend: d.proxy, ClientAddress: "proxy-v2"},
		{Name: "imaps-pv2", Listen: freeAddr(t), TLS: "implicit", Backend: d.proxy, ClientAddress: "proxy-v2"},
		{Name: "imap-id", Listen: freeAddr(t), TLS: "starttls", Backend: d.imap, ClientAddress: "imap-id"},
		{Name: "imap-pp-in", Listen: freeAddr(t), TLS: "starttls", Trusted: []string{"127.0.0.0/8"}, Backend: d.proxy, ClientAddress: "proxy-v2"},
	})
	waitWho(t, d.conf, "imap", alice) // nothing left over from an earlier run

	// session logs in as alice through one listener, holds the session
	// while Dovecot and the admin API are asked who is there, then logs out.
	session := func(t *testing.T, o imapOpts, wantIP string) {
		t.Helper()
		o.User, o.Password, o.Then, o.CAFile = alice, alicePassword, "hold", cert
		c := startPy(t, "hold", o)
		c.expect("TLS TLSv1.")
		if l := c.expect("LOGIN "); !strings.HasPrefix(l, "LOGIN OK") {
			t.Fatalf("login through mailgate: %s", l)
		}
		c.expect("HOLDING")
		waitWho(t, d.conf, "imap", alice, wantIP)
		conn := m.waitConn("imap", alice)
		if conn.ClientIP != wantIP || !conn.TLS {
			t.Errorf("admin API connection = %+v, want client_ip %s and tls true", conn, wantIP)
		}
		c.send("noop")
		c.expect("NOOP OK")
		c.send("logout")
		c.expect("LOGOUT")
		c.wait()
		m.waitIMAPCount(0)
		waitWho(t, d.conf, "imap", alice)
	}

	t.Run("proxy-v2 STARTTLS from 127.0.0.2", func(t *testing.T) {
		session(t, imapOpts{Addr: byName["imap-pv2"], TLS: "starttls", Source: "127.0.0.2"}, "127.0.0.2")
	})
	t.Run("proxy-v2 implicit TLS from 127.0.0.2", func(t *testing.T) {
		session(t, imapOpts{Addr: byName["imaps-pv2"], TLS: "implicit", Source: "127.0.0.2", Auth: "plain"}, "127.0.0.2")
	})
	t.Run("imap-id x-originating-ip from 127.0.0.2", func(t *testing.T) {
		session(t, imapOpts{Addr: byName["imap-id"], TLS: "starttls", Source: "127.0.0.2"}, "127.0.0.2")
	})
	t.Run("PROXY v1 from a trusted peer names 192.0.2.7", func(t *testing.T) {
		session(t, imapOpts{Addr: byName["imap-pp-in"], TLS: "starttls", ProxyV1: "192.0.2.7"}, "192.0.2.7")
	})

	t.Run("PROXY header from an untrusted peer is refused", func(t *testing.T) {
		// imap-pv2 trusts nobody: a client that claims another address
		// must not get in under it (nor under its own).
		c := startPy(t, "spoof", imapOpts{Addr: byName["imap-pv2"], TLS: "starttls", CAFile: cert, ProxyV1: "192.0.2.66", User: alice, Password: alicePassword, Then: "hold"})
		select {
		case <-c.done:
		case <-time.After(stepTimeout):
			t.Fatalf("the spoofing client is still connected after %v", stepTimeout)
		}
		if tr := c.trans.String(); strings.Contains(tr, "LOGIN OK") {
			t.Errorf("a PROXY header from an untrusted peer was accepted:\n%s", tr)
		}
		if ips, out := doveadmWho(t, d.conf, "imap"); len(ips[alice]) != 0 {
			t.Errorf("Dovecot has a session for %s after the refused client:\n%s", alice, out)
		}
		m.waitIMAPCount(0)
	})

	t.Run("curl through mailgate from 127.0.0.2", func(t *testing.T) {
		out, err := curl(t, "-v", "--ssl-reqd", "--cacert", cert, "--interface", "127.0.0.2",
			"imap://"+byName["imap-pv2"]+"/", "-u", bob+":"+bobPassword)
		if err != nil || !strings.Contains(out, "INBOX") {
			t.Fatalf("curl --ssl-reqd imap://%s/ through mailgate to Dovecot: %v\n%s", byName["imap-pv2"], err, out)
		}
	})

	t.Run("wrong password gets Dovecot's NO", func(t *testing.T) {
		for _, auth := range []string{"login", "plain"} {
			l := loginOnce(t, "wrong-"+auth, imapOpts{Addr: byName["imap-pv2"], CAFile: cert, Source: "127.0.0.2", User: alice, Password: wrongPassword, Auth: auth})
			if !strings.HasPrefix(l, "LOGIN NO") || !strings.Contains(l, "[AUTHENTICATIONFAILED]") {
				t.Errorf("%s with a wrong password: %q, want NO [AUTHENTICATIONFAILED]", auth, l)
			}
		}
	})

	t.Run("drop closes both sides", func(t *testing.T) {
		c := startPy(t, "idle", imapOpts{Addr: byName["imap-pv2"], CAFile: cert, Source: "127.0.0.2", User: alice, Password: alicePassword, Then: "idle"})
		c.expect("IDLING")
		waitWho(t, d.conf, "imap", alice, "127.0.0.2")
		if n := m.drop(alice, "imap"); n != 1 {
			t.Errorf("dropped = %d, want 1", n)
		}
		c.expect("BYE ")
		c.expect("EOF")
		c.wait()
		m.waitIMAPCount(0)
		waitWho(t, d.conf, "imap", alice) // mailgate closed the backend connection too
	})

	t.Run("disabled user never reaches Dovecot", func(t *testing.T) {
		path := "/api/v1/users/" + url.PathEscape(bob) + "/protocols/imap"
		m.apiJSON("PUT", path, map[string]bool{"enabled": false}, nil)
		waitWho(t, d.conf, "imap", bob) // bob's earlier sessions are over (and logged)
		// Other tests log bob in through the same Dovecot at the same time:
		// look only at Dovecot's lines about bob from this client's own
		// address (passed with PROXY v2), which no other test uses.
		const src = "127.0.0.61"
		before := countLines(t, d.log, "user=<"+bob+">", "rip="+src)
		// The password is right: a NO can only come from mailgate's gate.
		l := loginOnce(t, "disabled", imapOpts{Addr: byName["imap-pv2"], CAFile: cert, Source: src, User: bob, Password: bobPassword})
		if !strings.HasPrefix(l, "LOGIN NO") {
			t.Errorf("login while imap is disabled: %q, want NO", l)
		}
		m.waitIMAPCount(0) // the backend connection is closed too
		if after := countLines(t, d.log, "user=<"+bob+">", "rip="+src); after != before {
			t.Errorf("%s has %d lines about %s from %s after the gated login, %d before: the login reached Dovecot", d.log, after, bob, src, before)
		}
		m.apiJSON("PUT", path, map[string]bool{"enabled": true}, nil)
		if l := loginOnce(t, "re-enabled", imapOpts{Addr: byName["imap-pv2"], CAFile: cert, User: bob, Password: bobPassword}); !strings.HasPrefix(l, "LOGIN OK") {
			t.Errorf("login after re-enabling imap: %q, want OK", l)
		}
	})
}

// countLines counts the lines of a file that contain every one of subs.
func countLines(t *testing.T, path string, subs ...string) int {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
next:
	for _, line := range strings.Split(string(b), "\n") {
		for _, s := range subs {
			if !strings.Contains(line, s) {
				continue next
			}
		}
		n++
	}
	return n
}

// countIn counts the occurrences of s in a file.
func countIn(t *testing.T, path, s string) int {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return strings.Count(string(b), s)
}
