package demo

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/xml"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"mellium.im/sasl"
	"mellium.im/xmlstream"
	"mellium.im/xmpp"
	"mellium.im/xmpp/jid"
	"mellium.im/xmpp/stanza"
)

var xmppUsers = map[string]string{
	"alice@example.com": "alice-secret",
	"bob@example.com":   "bob-secret",
	"carol@other.org":   "ignored", // another domain: not served
}

func startXMPP(t *testing.T) *XMPPBackend {
	t.Helper()
	b, err := StartXMPP("127.0.0.1:0", "example.com", xmppUsers)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

// login connects a mellium client with the given mechanism, binds a
// resource and returns the session. The link is loopback TCP, declared
// secure so that mellium offers SASL on it.
func login(t *testing.T, addr, user, pass string, mech sasl.Mechanism) (*xmpp.Session, error) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	origin := jid.MustParse(user)
	return xmpp.NewSession(ctx, origin.Domain(), origin, conn, xmpp.Secure, xmpp.NewNegotiator(func(*xmpp.Session, *xmpp.StreamConfig) xmpp.StreamConfig {
		return xmpp.StreamConfig{Features: []xmpp.StreamFeature{xmpp.SASL("", pass, mech), xmpp.BindResource()}}
	}))
}

type received struct {
	From string `xml:"from,attr"`
	To   string `xml:"to,attr"`
	Type string `xml:"type,attr"`
	Body string `xml:"body"`
}

// serve runs s.Serve and sends every message it receives to the channel.
func serve(s *xmpp.Session) <-chan received {
	ch := make(chan received, 4)
	go s.Serve(xmpp.HandlerFunc(func(r xmlstream.TokenReadEncoder, start *xml.StartElement) error {
		if start.Name.Local != "message" {
			return nil
		}
		// The handler's reader ends with the stanza's end tag, which
		// DecodeElement reports as unexpected once it has filled m.
		var m received
		xml.NewTokenDecoder(r).DecodeElement(&m, start)
		ch <- m
		return nil
	}))
	return ch
}

func chat(to jid.JID, body string) xml.TokenReader {
	return stanza.Message{To: to, Type: stanza.ChatMessage}.Wrap(
		xmlstream.Wrap(xmlstream.Token(xml.CharData(body)), xml.StartElement{Name: xml.Name{Local: "body"}}))
}

// TestXMPPMessageBetweenUsers: SCRAM-SHA-1 and PLAIN logins with mellium,
// resource binding, and a message routed from one user to the other.
func TestXMPPMessageBetweenUsers(t *testing.T) {
	b := startXMPP(t)
	alice, err := login(t, b.Addr(), "alice@example.com", "alice-secret", sasl.ScramSha1)
	if err != nil {
		t.Fatalf("alice SCRAM-SHA-1 login: %v", err)
	}
	bob, err := login(t, b.Addr(), "bob@example.com", "bob-secret", sasl.Plain)
	if err != nil {
		t.Fatalf("bob PLAIN login: %v", err)
	}
	if got := alice.LocalAddr().Bare().String(); got != "alice@example.com" {
		t.Errorf("alice bound %q", alice.LocalAddr())
	}
	inbox := serve(bob)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := alice.Send(ctx, chat(jid.MustParse("bob@example.com"), "hello bob")); err != nil {
		t.Fatalf("alice send: %v", err)
	}
	select {
	case m := <-inbox:
		if m.Body != "hello bob" || m.From != alice.LocalAddr().String() || m.Type != "chat" {
			t.Errorf("bob received %+v, want a chat from %s saying hello bob", m, alice.LocalAddr())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("bob received nothing")
	}
}

func TestXMPPSCRAMSHA256AndWrongPassword(t *testing.T) {
	b := startXMPP(t)
	if _, err := login(t, b.Addr(), "alice@example.com", "alice-secret", sasl.ScramSha256); err != nil {
		t.Fatalf("SCRAM-SHA-256 login: %v", err)
	}
	for _, mech := range []sasl.Mechanism{sasl.Plain, sasl.ScramSha1} {
		if _, err := login(t, b.Addr(), "alice@example.com", "wrong", mech); err == nil {
			t.Errorf("%s login with a wrong password succeeded", mech.Name)
		}
		if _, err := login(t, b.Addr(), "carol@example.com", "ignored", mech); err == nil {
			t.Errorf("%s login of an unknown user succeeded", mech.Name)
		}
	}
}

// rawConn is a test client speaking raw XML.
type rawConn struct {
	t   *testing.T
	c   net.Conn
	r   *bufio.Reader
	got strings.Builder
}

func dialRaw(t *testing.T, addr string) *rawConn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &rawConn{t: t, c: c, r: bufio.NewReader(c)}
}

func (r *rawConn) send(s string) {
	r.t.Helper()
	if _, err := io.WriteString(r.c, s); err != nil {
		r.t.Fatal(err)
	}
}

// until reads until the input holds marker and returns what was read.
func (r *rawConn) until(marker string) string {
	r.t.Helper()
	r.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	start := r.got.Len()
	for !strings.Contains(r.got.String()[start:], marker) {
		b, err := r.r.ReadByte()
		if err != nil {
			r.t.Fatalf("waiting for %q: %v; got %q", marker, err, r.got.String()[start:])
		}
		r.got.WriteByte(b)
	}
	return r.got.String()[start:]
}

const clientHeader = "<?xml version='1.0'?><stream:stream to='example.com' version='1.0' xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>"

// TestXMPPRawPlainWithoutInitialResponse walks the exchange by hand: an empty
// challenge, the response, an abort, then a good login and the restart.
func TestXMPPRawPlainWithoutInitialResponse(t *testing.T) {
	b := startXMPP(t)
	c := dialRaw(t, b.Addr())
	c.send(clientHeader)
	if f := c.until("</stream:features>"); !strings.Contains(f, "<mechanism>PLAIN</mechanism>") || strings.Contains(f, "starttls") {
		t.Fatalf("features = %q", f)
	}
	c.send("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'/>")
	c.until("<challenge xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>=</challenge>")
	c.send("<abort xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>")
	c.until("<aborted/></failure>")
	c.send("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'/>")
	c.until("</challenge>")
	c.send("<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>" + base64.StdEncoding.EncodeToString([]byte("\x00bob\x00bob-secret")) + "</response>")
	c.until("<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'></success>")
	c.send(clientHeader + "<iq type='set' id='b1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>phone</resource></bind></iq>")
	if f := c.until("</stream:features>"); !strings.Contains(f, "<bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/>") {
		t.Fatalf("features after auth = %q", f)
	}
	c.until("<jid>bob@example.com/phone</jid>")
	c.send("<message to='nobody@example.com' id='m1'><body>x</body></message>")
	c.until("<service-unavailable")
	c.send("</stream:stream>")
	c.until("</stream:stream>")
}

// TestXMPPRefusesBadInput: DTDs, unknown hosts and stanzas before
// authentication end the stream with the matching error.
func TestXMPPRefusesBadInput(t *testing.T) {
	b := startXMPP(t)
	tests := []struct{ name, send, want string }{
		{"doctype", "<?xml version='1.0'?><!DOCTYPE x [<!ENTITY a 'b'>]>" + clientHeader, "<restricted-xml"},
		{"other host", strings.Replace(clientHeader, "example.com", "other.org", 1), "<host-unknown"},
		{"stanza before auth", clientHeader + "<message to='bob@example.com'><body>x</body></message>", "<not-authorized"},
		{"not a stream", "<?xml version='1.0'?><html xmlns='jabber:client'>", "<invalid-namespace"},
		{"processing instruction", "<?php x?>" + clientHeader, "<restricted-xml"},
		{"entity", clientHeader + "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>&lol;</auth>", "<not-well-formed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := dialRaw(t, b.Addr())
			c.send(tt.send)
			if got := c.until(tt.want); !strings.HasPrefix(got, "<?xml version='1.0'?><stream:stream ") {
				t.Errorf("no stream header before the error: %q", got)
			}
		})
	}
}

// TestXMPPCloseEndsSessions: Close returns with sessions open.
func TestXMPPCloseEndsSessions(t *testing.T) {
	b, err := StartXMPP("127.0.0.1:0", "example.com", xmppUsers)
	if err != nil {
		t.Fatal(err)
	}
	c := dialRaw(t, b.Addr())
	c.send(clientHeader)
	c.until("</stream:features>")
	done := make(chan struct{})
	go func() { b.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not return")
	}
	c.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadAll(c.r); err != nil && !strings.Contains(err.Error(), "reset") {
		t.Fatalf("after Close: %v", err)
	}
}
