package smtp_test

import (
	"crypto/tls"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/mailgate/mailgate/accounting"
	"github.com/mailgate/mailgate/protocols"
	"github.com/mailgate/mailgate/protocols/protocoltest"
	"github.com/mailgate/mailgate/protocols/smtp"
	"github.com/mailgate/mailgate/proxy"
)

// The handler inside the real proxy, with the real accounting registry:
// what the admin sees for each role.

type proxyRig struct {
	t    *testing.T
	reg  *accounting.Registry
	ln   *proxy.Listener
	logs *protocoltest.SyncBuffer
	cli  *tls.Config
}

func newProxyRig(t *testing.T, backend, role, tlsMode string) *proxyRig {
	t.Helper()
	srvTLS, cliTLS := protocoltest.TLSConfigs(t)
	r := &proxyRig{t: t, reg: accounting.New(accounting.Options{}), logs: &protocoltest.SyncBuffer{}, cli: cliTLS}
	srv := proxy.NewServer(r.reg, slog.New(slog.NewTextHandler(r.logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	t.Cleanup(func() { srv.Close() })
	ln, err := srv.Listen(proxy.ListenerOptions{
		Name:        role,
		Address:     "127.0.0.1:0",
		Handler:     smtp.New(smtp.Options{Role: role, Hostname: "proxy.test"}),
		TLS:         protocols.TLSMode(tlsMode),
		TLSConfig:   srvTLS,
		IdleTimeout: time.Hour,
		Backend:     proxy.Backend{Address: backend, TLS: "none", ClientAddress: "none"},
	})
	if err != nil {
		t.Fatal(err)
	}
	r.ln = ln
	return r
}

// dial connects a tclient to the proxy (with implicit TLS when tlsCfg).
func (r *proxyRig) dial(tlsCfg *tls.Config) *tclient {
	r.t.Helper()
	var c net.Conn
	var err error
	if tlsCfg != nil {
		c, err = tls.DialWithDialer(&net.Dialer{Timeout: ioTimeout}, "tcp", r.ln.Addr().String(), tlsCfg)
	} else {
		c, err = net.DialTimeout("tcp", r.ln.Addr().String(), ioTimeout)
	}
	if err != nil {
		r.t.Fatal(err)
	}
	r.t.Cleanup(func() { c.Close() })
	return &tclient{protocoltest.NewClient(r.t, c, ioTimeout)}
}

// waitConns polls the registry until the smtp connections match want.
func (r *proxyRig) waitConns(what string, want func([]accounting.Info) bool) []accounting.Info {
	r.t.Helper()
	deadline := time.Now().Add(2 * ioTimeout)
	for {
		conns := r.reg.Connections(accounting.Filter{Protocol: "smtp"})
		if want(conns) {
			return conns
		}
		if time.Now().After(deadline) {
			r.t.Fatalf("timed out waiting for %s; connections %+v\nproxy log:\n%s", what, conns, r.logs.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestMXCountedUnauthenticated: an MTA delivering on port 25 without AUTH is
// one unauthenticated smtp connection for as long as it stays, its row keyed
// by IP with no user, and nothing after it leaves.
func TestMXCountedUnauthenticated(t *testing.T) {
	be := startDemo(t)
	r := newProxyRig(t, be.Addr(), smtp.RoleMX, "starttls")
	c := r.dial(nil)
	c.expect("220 ")
	r.waitConns("one pre-auth connection", func(cs []accounting.Info) bool { return len(cs) == 1 })
	kws := c.ehlo("mta.remote.test")
	if hasKW(kws, "AUTH") || !hasKW(kws, "STARTTLS") {
		t.Errorf("EHLO on the MX port = %q", kws)
	}
	c.send("STARTTLS")
	c.expect("220 2.0.0")
	c.startTLS(r.cli)
	c.ehlo("mta.remote.test")
	sendMail(c, "someone@remote.test", "alice@example.com", "Subject: mx\r\n\r\nhello")

	conns := r.waitConns("the relayed MX connection", func(cs []accounting.Info) bool { return len(cs) == 1 && cs[0].TLS })
	if i := conns[0]; i.State != accounting.StatePreauth || i.User != "" || i.Protocol != "smtp" {
		t.Errorf("MX connection = %+v, want an unauthenticated smtp connection", i)
	}
	if n := r.reg.Count("smtp"); n != 1 {
		t.Errorf("Count(smtp) = %d, want 1", n)
	}
	rows := r.reg.Users("smtp")
	if len(rows) != 1 || rows[0].User != "" || rows[0].Connections != 1 {
		t.Errorf("smtp rows = %+v, want one unauthenticated row", rows)
	}
	c.send("QUIT")
	c.expect("221")
	c.Conn.Close() // the relay is half-close aware: the client's side ends it
	r.waitConns("the count to fall", func(cs []accounting.Info) bool { return len(cs) == 0 })
	if msgs := be.Messages(); len(msgs) != 1 || msgs[0].User != "" {
		t.Fatalf("delivered = %+v", msgs)
	}
}

// TestSubmissionsInProxy: port 465 (implicit TLS by the proxy) logs in,
// counts under the user, and an admin drop ends the relayed session with
// 421.
func TestSubmissionsInProxy(t *testing.T) {
	be := startDemo(t)
	r := newProxyRig(t, be.Addr(), smtp.RoleSubmissions, "implicit")
	c := r.dial(r.cli)
	c.expect("220 ")
	if kws := c.ehlo("client.test"); hasKW(kws, "STARTTLS") || kwLine(kws, "AUTH") != "AUTH PLAIN LOGIN" {
		t.Errorf("EHLO on the submissions port = %q", kws)
	}
	c.send("AUTH LOGIN " + b64("alice@example.com"))
	c.expect("334 " + b64("Password:"))
	c.send(b64("alice-secret"))
	c.expect("235")
	sendMail(c, "alice@example.com", "bob@example.com", "Subject: 465\r\n\r\nhi")
	conns := r.waitConns("alice's connection", func(cs []accounting.Info) bool {
		return len(cs) == 1 && cs[0].State == accounting.StateAuthenticated
	})
	if i := conns[0]; i.User != "alice@example.com" || i.Mechanism != "LOGIN" || !i.TLS {
		t.Errorf("connection = %+v", i)
	}
	if n := r.reg.DropUser("alice@example.com", "smtp", protocols.ByeDropped); n != 1 {
		t.Fatalf("DropUser = %d", n)
	}
	c.expect("421 4.7.0 proxy.test Connection closed by administrator")
	if rest := c.expectEOF(); rest != "" {
		t.Errorf("after the 421: %q", rest)
	}
	for _, s := range []string{"alice-secret", b64("alice-secret")} {
		if strings.Contains(r.logs.String(), s) {
			t.Errorf("proxy log holds %q", s)
		}
	}
}

// TestGatedLoginInProxy: a user whose SMTP access is disabled gets the
// handler's refusal, stays in pre-auth, and is not counted as logged in.
func TestGatedLoginInProxy(t *testing.T) {
	be := startDemo(t)
	r := newProxyRig(t, be.Addr(), smtp.RoleSubmission, "starttls")
	if _, err := r.reg.SetProtocolEnabled("alice@example.com", "smtp", false, false); err != nil {
		t.Fatal(err)
	}
	c := r.dial(nil)
	c.expect("220 ")
	c.ehlo("client.test")
	c.send("STARTTLS")
	c.expect("220")
	c.startTLS(r.cli)
	c.ehlo("client.test")
	c.send("AUTH PLAIN " + b64("\x00alice@example.com\x00alice-secret"))
	c.expect("535 5.7.8 SMTP access is disabled")
	c.send("AUTH PLAIN " + b64("\x00bob@example.com\x00bob-secret"))
	c.expect("235")
	r.waitConns("bob's connection", func(cs []accounting.Info) bool {
		return len(cs) == 1 && cs[0].User == "bob@example.com"
	})
}

// TestDropBeforeLoginInProxy: an admin drop during the pre-auth dialogue
// wakes the handler, and the client reads the proxy's 421.
func TestDropBeforeLoginInProxy(t *testing.T) {
	be := startDemo(t)
	r := newProxyRig(t, be.Addr(), smtp.RoleSubmission, "starttls")
	c := r.dial(nil)
	c.expect("220 ")
	c.ehlo("client.test")
	conns := r.waitConns("one connection", func(cs []accounting.Info) bool { return len(cs) == 1 })
	if !r.reg.DropConn(conns[0].ID, protocols.ByeDropped) {
		t.Fatal("DropConn failed")
	}
	c.expect("421 4.7.0 proxy.test Connection closed by administrator")
	if rest := c.expectEOF(); rest != "" {
		t.Errorf("after the 421: %q", rest)
	}
}
