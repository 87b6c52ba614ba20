package pop3_test

import (
	"crypto/tls"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/mailgate/mailgate/accounting"
	"github.com/mailgate/mailgate/protocols"
	"github.com/mailgate/mailgate/protocols/pop3"
	"github.com/mailgate/mailgate/protocols/protocoltest"
	"github.com/mailgate/mailgate/proxy"
)

// proxyRig is the POP3 handler inside the real proxy core, with a real
// accounting registry, in front of the demo backend.
type proxyRig struct {
	reg    *accounting.Registry
	addr   string
	tlsCli *tls.Config // trusts the listener's certificate
}

func newProxyRig(t *testing.T, tlsMode string) *proxyRig {
	t.Helper()
	srvTLS, cliTLS := protocoltest.TLSConfigs(t)
	reg := accounting.New(accounting.Options{})
	srv := proxy.NewServer(reg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	ln, err := srv.Listen(proxy.ListenerOptions{
		Name: "pop3-test", Address: "127.0.0.1:0", Handler: pop3.New(pop3.Options{}),
		TLS: protocols.TLSMode(tlsMode), TLSConfig: srvTLS, IdleTimeout: time.Hour, Limits: protocols.DefaultLimits,
		Backend: proxy.Backend{Address: demoBackend(t), TLS: "none", ClientAddress: "none", DialTimeout: 10 * time.Second},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	return &proxyRig{reg: reg, addr: ln.Addr().String(), tlsCli: cliTLS}
}

// dial connects from the given loopback source address.
func (r *proxyRig) dial(t *testing.T, src string) *tclient {
	t.Helper()
	d := net.Dialer{Timeout: ioTimeout, LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
	c, err := d.Dial("tcp", r.addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &tclient{protocoltest.NewClient(t, c, ioTimeout)}
}

func (r *proxyRig) waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(ioTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s; connections %+v", what, r.reg.Connections(accounting.Filter{}))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestInsideProxy: STLS, a login with a command pipelined behind it, the
// relay, accounting (user, IP, TLS, state) and an administrator's drop.
func TestInsideProxy(t *testing.T) {
	r := newProxyRig(t, "starttls")
	c := r.dial(t, "127.0.0.2")
	c.expect("+OK mailgate demo POP3 server ready <")
	r.waitFor(t, "the pre-auth connection", func() bool { return r.reg.Count("pop") == 1 })
	if caps := c.capa(); !protocoltest.HasCap(caps, "STLS") {
		t.Fatalf("CAPA = %q, want STLS", caps)
	}
	c.cmd("STLS", "+OK")
	c.startTLS(r.tlsCli)
	c.cmd("USER alice@example.com", "+OK")
	c.write("PASS alice-secret\r\nSTAT\r\n")
	c.expect("+OK Logged in")
	size := strings.Fields(c.expect("+OK 1 "))[2] // the pipelined STAT, relayed

	conns := r.reg.Connections(accounting.Filter{Protocol: "pop"})
	if len(conns) != 1 {
		t.Fatalf("pop connections = %+v, want 1", conns)
	}
	got := conns[0]
	if got.User != "alice@example.com" || got.Client.Addr() != netip.MustParseAddr("127.0.0.2") ||
		got.State != accounting.StateAuthenticated || !got.TLS || got.Mechanism != "USER" {
		t.Errorf("connection = %+v, want alice@example.com from 127.0.0.2, authenticated, TLS, mechanism USER", got)
	}

	c.cmd("RETR 1", "+OK "+size+" octets")
	if body := strings.Join(c.body(), "\n"); !strings.Contains(body, "Subject: Welcome to the mailgate demo") {
		t.Errorf("RETR through the relay = %q", body)
	}
	if n := r.reg.DropUser("alice@example.com", "pop", protocols.ByeDropped); n != 1 {
		t.Fatalf("DropUser = %d, want 1", n)
	}
	c.expect("-ERR Connection closed by administrator")
	if rest := c.expectEOF(); rest != "" {
		t.Errorf("after the goodbye: %q", rest)
	}
	r.waitFor(t, "the count to fall", func() bool { return r.reg.Count("pop") == 0 })
}

// TestInsideProxyGated: a user with POP3 disabled gets the handler's
// refusal and stays in pre-auth; the proxy drops a pre-auth session with
// the goodbye after the handler returns.
func TestInsideProxyGated(t *testing.T) {
	r := newProxyRig(t, "implicit")
	if _, err := r.reg.SetProtocolEnabled("bob@example.com", "pop", false, false); err != nil {
		t.Fatal(err)
	}
	tc := r.dial(t, "127.0.0.3")
	tc.startTLS(r.tlsCli) // implicit TLS: the handshake comes first
	tc.expect("+OK")
	if caps := tc.capa(); protocoltest.HasCap(caps, "STLS") {
		t.Errorf("CAPA on implicit TLS = %q, offers STLS", caps)
	}
	tc.cmd("USER bob@example.com", "+OK")
	tc.cmd("PASS bob secret", "-ERR [AUTH] POP3 access is disabled for this account")
	conns := r.reg.Connections(accounting.Filter{Protocol: "pop"})
	if len(conns) != 1 || conns[0].State != accounting.StatePreauth || conns[0].User != "" ||
		conns[0].Client.Addr() != netip.MustParseAddr("127.0.0.3") || !conns[0].TLS {
		t.Fatalf("connections = %+v, want one pre-auth TLS connection from 127.0.0.3", conns)
	}
	for _, i := range conns {
		r.reg.DropConn(i.ID, protocols.ByeShutdown)
	}
	tc.expect("-ERR [SYS/TEMP] Server shutting down")
	tc.expectEOF()
}
