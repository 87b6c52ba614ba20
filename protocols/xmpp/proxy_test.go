package xmpp_test

import (
	"context"
	"crypto/tls"
	"encoding/xml"
	"errors"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"mellium.im/sasl"
	"mellium.im/xmlstream"
	mxmpp "mellium.im/xmpp"
	"mellium.im/xmpp/jid"
	"mellium.im/xmpp/stanza"
	"mellium.im/xmpp/stream"

	"github.com/mailgate/mailgate/accounting"
	"github.com/mailgate/mailgate/internal/testutil"
	"github.com/mailgate/mailgate/protocols"
	"github.com/mailgate/mailgate/protocols/protocoltest"
	"github.com/mailgate/mailgate/protocols/xmpp"
	"github.com/mailgate/mailgate/proxy"
)

// rig is the real proxy with the XMPP handler on a STARTTLS and a direct TLS
// listener (XEP-0368), in front of the demo backend.
type rig struct {
	reg              *accounting.Registry
	logs             *protocoltest.SyncBuffer
	starttls, direct string
	cliTLS           *tls.Config
}

func newRig(t *testing.T) *rig {
	t.Helper()
	be := demoBackend(t)
	r := &rig{reg: accounting.New(accounting.Options{}), logs: &protocoltest.SyncBuffer{}}
	srv := proxy.NewServer(r.reg, slog.New(slog.NewTextHandler(r.logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	t.Cleanup(func() { srv.Close() })
	srvTLS, cliTLS := protocoltest.TLSConfigs(t)
	r.cliTLS = cliTLS
	h := xmpp.New(xmpp.Options{})
	for _, mode := range []string{"starttls", "implicit"} {
		ln, err := srv.Listen(proxy.ListenerOptions{
			Name: "xmpp-" + mode, Address: "127.0.0.1:0", Handler: h, TLS: protocols.TLSMode(mode), TLSConfig: srvTLS,
			IdleTimeout: time.Hour, Limits: protocols.DefaultLimits,
			Backend: proxy.Backend{Address: be.Addr(), TLS: "none", ClientAddress: "none"},
		})
		if err != nil {
			t.Fatal(err)
		}
		if mode == "starttls" {
			r.starttls = ln.Addr().String()
		} else {
			r.direct = ln.Addr().String()
		}
	}
	return r
}

// login logs a mellium client in through the proxy: STARTTLS on the first
// listener, or direct TLS on the second.
func (r *rig) login(t *testing.T, user, pass string, mech sasl.Mechanism, direct bool) (*mxmpp.Session, error) {
	t.Helper()
	var conn net.Conn
	var err error
	features := []mxmpp.StreamFeature{mxmpp.SASL("", pass, mech), mxmpp.BindResource()}
	if direct {
		conn, err = tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", r.direct, r.cliTLS)
	} else {
		conn, err = net.DialTimeout("tcp", r.starttls, 10*time.Second)
		features = append([]mxmpp.StreamFeature{mxmpp.StartTLS(r.cliTLS)}, features...)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return mxmpp.NewClientSession(ctx, jid.MustParse(user), conn, features...)
}

type received struct {
	From string `xml:"from,attr"`
	Body string `xml:"body"`
}

// serve runs s.Serve, sending every message to msgs and Serve's result to
// done.
func serve(s *mxmpp.Session) (msgs <-chan received, done <-chan error) {
	m := make(chan received, 4)
	d := make(chan error, 1)
	go func() {
		d <- s.Serve(mxmpp.HandlerFunc(func(r xmlstream.TokenReadEncoder, start *xml.StartElement) error {
			if start.Name.Local == "message" {
				var v received
				xml.NewTokenDecoder(r).DecodeElement(&v, start) // fills v, then trips over the end tag
				m <- v
			}
			return nil
		}))
	}()
	return m, d
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	testutil.WaitFor(t, 30*time.Second, what, cond, nil)
}

// TestThroughProxy: two mellium clients log in through the real proxy (one
// with STARTTLS and SCRAM-SHA-1, one with direct TLS and PLAIN), a message
// travels from one to the other through the blind relay, accounting shows
// both users under xmpp, and an administrator's drop ends a session with
// <reset/>.
func TestThroughProxy(t *testing.T) {
	r := newRig(t)
	alice, err := r.login(t, "alice@example.com", "alice-secret", sasl.ScramSha1, false)
	if err != nil {
		t.Fatalf("alice: STARTTLS + SCRAM-SHA-1 through the proxy: %v", err)
	}
	bob, err := r.login(t, "bob@example.com", "bob-secret", sasl.Plain, true)
	if err != nil {
		t.Fatalf("bob: direct TLS + PLAIN through the proxy: %v", err)
	}
	inbox, bobDone := serve(bob)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	msg := stanza.Message{To: jid.MustParse("bob@example.com"), Type: stanza.ChatMessage}.Wrap(
		xmlstream.Wrap(xmlstream.Token(xml.CharData("hello through mailgate")), xml.StartElement{Name: xml.Name{Local: "body"}}))
	if err := alice.Send(ctx, msg); err != nil {
		t.Fatalf("alice send: %v", err)
	}
	select {
	case m := <-inbox:
		if m.Body != "hello through mailgate" || !strings.HasPrefix(m.From, "alice@example.com/") {
			t.Errorf("bob received %+v", m)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("bob received nothing")
	}

	rows := r.reg.Users("xmpp")
	users := map[string]int{}
	for _, row := range rows {
		users[row.User] = row.Connections
	}
	if users["alice@example.com"] != 1 || users["bob@example.com"] != 1 || len(rows) != 2 {
		t.Errorf("Users(xmpp) = %+v, want alice and bob with one connection each", rows)
	}
	for _, c := range r.reg.Connections(accounting.Filter{Protocol: "xmpp"}) {
		if c.State != accounting.StateAuthenticated || !c.TLS {
			t.Errorf("connection %+v, want authenticated over TLS", c)
		}
	}

	if n := r.reg.DropUser("bob@example.com", "xmpp", protocols.ByeDropped); n != 1 {
		t.Fatalf("DropUser = %d, want 1", n)
	}
	select {
	case err := <-bobDone:
		if !errors.Is(err, stream.Reset) {
			t.Errorf("bob's session ended with %v, want the <reset/> stream error", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("bob's session did not end after the drop")
	}
	waitFor(t, "xmpp count 1", func() bool { return r.reg.Count("xmpp") == 1 })
	if logs := r.logs.String(); strings.Contains(logs, "alice-secret") || strings.Contains(logs, "bob-secret") {
		t.Errorf("proxy logs hold a password:\n%s", logs)
	}
}

// TestThroughProxyGated: a disabled user gets <account-disabled/> from the
// proxy and mellium reports the failure.
func TestThroughProxyGated(t *testing.T) {
	r := newRig(t)
	if _, err := r.reg.SetProtocolEnabled("alice@example.com", "xmpp", false, false); err != nil {
		t.Fatal(err)
	}
	_, err := r.login(t, "alice@example.com", "alice-secret", sasl.Plain, true)
	if err == nil || !strings.Contains(err.Error(), "XMPP access is disabled") {
		t.Fatalf("login of a disabled user: %v, want account-disabled", err)
	}
	if _, err := r.login(t, "bob@example.com", "bob-secret", sasl.ScramSha256, false); err != nil {
		t.Fatalf("bob: %v", err)
	}
}
