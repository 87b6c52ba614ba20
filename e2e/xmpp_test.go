package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/xml"
	"errors"
	"net"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"mellium.im/sasl"
	"mellium.im/xmlstream"
	"mellium.im/xmpp"
	"mellium.im/xmpp/jid"
	"mellium.im/xmpp/stanza"
	"mellium.im/xmpp/stream"
)

// needProsody skips the test unless the MAILGATE_PROSODY_* variables are set.
func needProsody(t *testing.T) (c2s, logFile string) {
	t.Helper()
	v := needEnv(t, "Prosody", `scripts/prosody.sh start && eval "$(scripts/prosody.sh env)"`, "MAILGATE_PROSODY_C2S", "MAILGATE_PROSODY_LOG")
	return v[0], v[1]
}

// xmppClient logs in through mailgate with mellium, a real XMPP client
// library: STARTTLS on the first listener or direct TLS on the second, then
// SASL with mech and resource binding.
type xmppClient struct {
	starttls, direct string
	tls              *tls.Config
}

func (c xmppClient) login(t *testing.T, user, pass string, mech sasl.Mechanism, direct bool) (*xmpp.Session, error) {
	t.Helper()
	features := []xmpp.StreamFeature{xmpp.SASL("", pass, mech), xmpp.BindResource()}
	var conn net.Conn
	var err error
	if direct {
		conn, err = tls.DialWithDialer(&net.Dialer{Timeout: stepTimeout}, "tcp", c.direct, c.tls)
	} else {
		conn, err = net.DialTimeout("tcp", c.starttls, stepTimeout)
		features = append([]xmpp.StreamFeature{xmpp.StartTLS(c.tls)}, features...)
	}
	if err != nil {
		t.Fatalf("dial mailgate: %v", err)
	}
	t.Cleanup(func() { conn.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), stepTimeout)
	defer cancel()
	s, err := xmpp.NewClientSession(ctx, jid.MustParse(user), conn, features...)
	if err != nil {
		conn.Close() // mellium leaves the connection open
		return nil, err
	}
	return s, nil
}

// xmppClose ends a session: the closing tag, then the connection (mellium
// leaves it open, and mailgate's relay waits for both sides to close).
func xmppClose(s *xmpp.Session) {
	s.Close()
	s.Conn().Close()
}

type xmppMessage struct {
	Local string `xml:"-"`
	From  string `xml:"from,attr"`
	Body  string `xml:"body"`
}

// xmppServe runs s.Serve; messages and presence go to the first channel
// (Local tells them apart), Serve's result to the second.
func xmppServe(s *xmpp.Session) (<-chan xmppMessage, <-chan error) {
	msgs, done := make(chan xmppMessage, 8), make(chan error, 1)
	go func() {
		done <- s.Serve(xmpp.HandlerFunc(func(r xmlstream.TokenReadEncoder, start *xml.StartElement) error {
			if start.Name.Local == "message" || start.Name.Local == "presence" {
				m := xmppMessage{Local: start.Name.Local}
				xml.NewTokenDecoder(r).DecodeElement(&m, start) // fills m, then trips over the end tag
				select {
				case msgs <- m:
				default:
				}
			}
			return nil
		}))
	}()
	return msgs, done
}

// TestProsody puts mailgate in front of a real Prosody: a real client logs in
// through mailgate with STARTTLS and with direct TLS, sends a message to the
// second user who receives it, and the admin API shows both users under
// xmpp; a wrong password gets Prosody's answer, a disabled user never reaches
// Prosody, and a drop ends the session with <reset/>.
func TestProsody(t *testing.T) {
	c2s, prosodyLog := needProsody(t)
	t.Parallel()
	cli := xmppClient{starttls: freeAddr(t), direct: freeAddr(t)}
	ls := []listenerConf{
		{Name: "xmpp", Protocol: "xmpp", Listen: cli.starttls, TLS: "starttls", Backend: c2s, ClientAddress: "none"},
		{Name: "xmpps", Protocol: "xmpp", Listen: cli.direct, TLS: "implicit", Backend: c2s, ClientAddress: "none"},
	}
	backendTLS := xmppClient{direct: freeAddr(t)}
	if ca := os.Getenv("MAILGATE_PROSODY_CA"); ca != "" {
		// With the CA, mailgate does STARTTLS to Prosody.
		ls = append(ls, listenerConf{Name: "xmpps-backend-tls", Protocol: "xmpp", Listen: backendTLS.direct, TLS: "implicit",
			Backend: c2s, BackendTLS: "starttls", BackendCA: ca, ServerName: "example.com", ClientAddress: "none"})
	}
	m, _, cert := serveListeners(t, "e2e-prosody-token", ls)
	pem, err := os.ReadFile(cert)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	cli.tls = &tls.Config{RootCAs: pool, ServerName: "localhost", MinVersion: tls.VersionTLS12}
	backendTLS.tls = cli.tls

	t.Run("STARTTLS and direct TLS, a message between users", func(t *testing.T) {
		alice, err := cli.login(t, alice, alicePassword, sasl.ScramSha1, false)
		if err != nil {
			t.Fatalf("alice: STARTTLS + SCRAM-SHA-1 through mailgate to Prosody: %v", err)
		}
		bob, err := cli.login(t, bob, bobPassword, sasl.Plain, true)
		if err != nil {
			t.Fatalf("bob: direct TLS + PLAIN through mailgate to Prosody: %v", err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), stepTimeout)
		defer cancel()
		// Initial presence: Prosody delivers a message to a bare JID only
		// to available resources (RFC 6121 §8.5.2.1.1). The server sends it
		// back to the resource itself (§4.2.2): then bob is available.
		inbox, _ := xmppServe(bob)
		if err := bob.Send(ctx, stanza.Presence{}.Wrap(nil)); err != nil {
			t.Fatalf("bob presence: %v", err)
		}
		select {
		case p := <-inbox:
			if p.Local != "presence" {
				t.Fatalf("bob received %+v, want his own presence", p)
			}
		case <-time.After(stepTimeout):
			t.Fatal("bob's presence did not come back")
		}
		msg := stanza.Message{To: jid.MustParse(bob.LocalAddr().Bare().String()), Type: stanza.ChatMessage}.Wrap(
			xmlstream.Wrap(xmlstream.Token(xml.CharData("hello from mailgate e2e")), xml.StartElement{Name: xml.Name{Local: "body"}}))
		if err := alice.Send(ctx, msg); err != nil {
			t.Fatalf("alice send: %v", err)
		}
		select {
		case got := <-inbox:
			if got.Body != "hello from mailgate e2e" || !strings.HasPrefix(got.From, "alice@example.com/") {
				t.Errorf("bob received %+v", got)
			}
		case <-time.After(stepTimeout):
			t.Fatal("bob received nothing")
		}
		m.waitSummary("xmpp", 2)
		rows := map[string]apiUserRow{}
		for _, r := range m.users("xmpp") {
			rows[r.User] = r
		}
		for _, u := range []string{"alice@example.com", "bob@example.com"} {
			if r, ok := rows[u]; !ok || r.Connections != 1 {
				t.Errorf("GET /api/v1/users?protocol=xmpp row for %s = %+v (present %v), want 1 connection", u, r, ok)
			}
		}
		for _, c := range m.connections(url.Values{"protocol": {"xmpp"}}) {
			if c.State != "authenticated" || !c.TLS {
				t.Errorf("connection %+v, want authenticated over TLS", c)
			}
		}
		xmppClose(alice)
		xmppClose(bob)
		m.waitSummary("xmpp", 0)
	})

	t.Run("STARTTLS from mailgate to Prosody", func(t *testing.T) {
		if len(ls) < 3 {
			t.Skip("MAILGATE_PROSODY_CA is not set")
		}
		for _, mech := range []sasl.Mechanism{sasl.Plain, sasl.ScramSha1} {
			s, err := backendTLS.login(t, alice, alicePassword, mech, true)
			if err != nil {
				t.Fatalf("%s through mailgate, TLS on both links: %v", mech.Name, err)
			}
			xmppClose(s)
		}
		if !strings.Contains(m.log.String(), "backend STARTTLS done") {
			t.Error("mailgate's log does not show the backend STARTTLS")
		}
		m.waitSummary("xmpp", 0)
	})

	t.Run("wrong password gets Prosody's not-authorized", func(t *testing.T) {
		for _, mech := range []sasl.Mechanism{sasl.Plain, sasl.ScramSha1} {
			if _, err := cli.login(t, alice, wrongPassword, mech, true); err == nil {
				t.Errorf("%s with a wrong password succeeded", mech.Name)
			}
			want := "user=alice@example.com mechanism=" + mech.Name + " outcome=failure condition=not-authorized"
			waitFor(t, "mailgate to log "+want, func() bool { return strings.Contains(m.log.String(), want) }, nil)
		}
		m.waitSummary("xmpp", 0)
	})

	t.Run("disabled user never reaches Prosody", func(t *testing.T) {
		path := "/api/v1/users/" + url.PathEscape(bob) + "/protocols/xmpp"
		m.apiJSON("PUT", path, map[string]bool{"enabled": false}, nil)
		before := countIn(t, prosodyLog, "bob")
		// The password is right: a failure can only come from mailgate's gate.
		_, err := cli.login(t, bob, bobPassword, sasl.Plain, false)
		if err == nil || !strings.Contains(err.Error(), "disabled") {
			t.Errorf("login while xmpp is disabled: %v, want account-disabled", err)
		}
		m.waitSummary("xmpp", 0)
		if after := countIn(t, prosodyLog, "bob"); after != before {
			t.Errorf("%s mentions bob %d times after the gated login, %d before: the login reached Prosody", prosodyLog, after, before)
		}
		m.apiJSON("PUT", path, map[string]bool{"enabled": true}, nil)
		s, err := cli.login(t, bob, bobPassword, sasl.Plain, false)
		if err != nil {
			t.Fatalf("login after re-enabling xmpp: %v", err)
		}
		xmppClose(s)
		m.waitSummary("xmpp", 0)
	})

	t.Run("drop ends the session with reset", func(t *testing.T) {
		s, err := cli.login(t, alice, alicePassword, sasl.ScramSha1, true)
		if err != nil {
			t.Fatal(err)
		}
		_, done := xmppServe(s)
		m.waitSummary("xmpp", 1)
		if n := m.drop(alice, "xmpp"); n != 1 {
			t.Errorf("dropped = %d, want 1", n)
		}
		select {
		case err := <-done:
			if !errors.Is(err, stream.Reset) {
				t.Errorf("session ended with %v, want the <reset/> stream error", err)
			}
		case <-time.After(stepTimeout):
			t.Fatal("the session did not end after the drop")
		}
		m.waitSummary("xmpp", 0)
	})
}
