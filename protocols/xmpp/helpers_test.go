package xmpp_test

import (
	"crypto/tls"
	"encoding/base64"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/mailgate/mailgate/protocols"
	"github.com/mailgate/mailgate/protocols/protocoltest"
	"github.com/mailgate/mailgate/protocols/xmpp"
)

// The client's stream header as most clients write it.
const clientHeader = "<?xml version='1.0'?><stream:stream to='example.com' version='1.0' xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>"

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

// auth builds a SASL <auth/> with data (no data: no initial response).
func auth(mech, data string) string {
	if data == "" {
		return "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='" + mech + "'/>"
	}
	return "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='" + mech + "'>" + data + "</auth>"
}

func response(data string) string {
	return "<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>" + data + "</response>"
}

const abort = "<abort xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>"

// tclient is the test's XMPP client: raw XML over a real TCP connection.
type tclient struct {
	*protocoltest.Client
	seen strings.Builder // everything read so far
}

func (c *tclient) write(s string) { c.T.Helper(); c.Write(s) }

// until reads until what was read by this call contains marker, and returns
// it.
func (c *tclient) until(marker string) string {
	c.T.Helper()
	c.Conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	var got strings.Builder
	for !strings.Contains(got.String(), marker) {
		b, err := c.R.ReadByte()
		if err != nil {
			c.T.Fatalf("client waiting for %q: %v; got %q", marker, err, got.String())
		}
		got.WriteByte(b)
		c.seen.WriteByte(b)
	}
	return got.String()
}

// expect reads up to marker and checks that the text read is exactly want
// (want ends with marker).
func (c *tclient) expect(want string) {
	c.T.Helper()
	if got := c.until(want); got != want {
		c.T.Fatalf("client read %q, want %q", got, want)
	}
}

// features opens a stream and returns the features element.
func (c *tclient) features(header string) string {
	c.T.Helper()
	c.write(header)
	got := c.until("</stream:features>")
	i := strings.Index(got, "<stream:features>")
	if i < 0 {
		c.T.Fatalf("no features in %q", got)
	}
	return got[i:]
}

// startTLS upgrades the connection after <proceed/>.
func (c *tclient) startTLS(cfg *tls.Config) { c.T.Helper(); c.StartTLS(cfg) }

// negotiateTLS sends <starttls/>, reads <proceed/> and upgrades the
// connection.
func (c *tclient) negotiateTLS(cfg *tls.Config) {
	c.T.Helper()
	c.write("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
	c.expect("<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
	c.startTLS(cfg)
}

// rest reads until the proxy closes the connection and returns what came.
func (c *tclient) rest() string { c.T.Helper(); return c.ReadToEOF(10 * time.Second) }

// harness runs one PreAuth between a tclient and a backend address.
type harness struct {
	*protocoltest.Harness
	c *tclient
}

// newHarness connects a client through a fresh Session to backendAddr and
// starts PreAuth with opts. mods adjust the Session before the start.
func newHarness(t *testing.T, backendAddr string, opts xmpp.Options, mods ...func(*protocols.Session)) *harness {
	t.Helper()
	return newHarnessWith(t, backendAddr, xmpp.New(opts), mods...)
}

// newHarnessWith is newHarness with a given handler.
func newHarnessWith(t *testing.T, backendAddr string, handler *xmpp.Handler, mods ...func(*protocols.Session)) *harness {
	t.Helper()
	h := protocoltest.Start(t, backendAddr, handler,
		protocoltest.Timeouts{IO: 5 * time.Second, Result: 20 * time.Second, Cleanup: 10 * time.Second}, mods...)
	return &harness{Harness: h, c: &tclient{Client: h.Client}}
}

// closed waits for PreAuth, then ends the client side and returns what the
// client reads before EOF. It half-closes first: closing a socket with
// unread input (a test that sent more than the handler read) resets the
// connection, which may destroy what the client has not read yet.
func (h *harness) closed() (string, error) {
	h.T.Helper()
	err := h.Result()
	if cw, ok := h.Session.Client.Conn.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
	} else {
		h.Session.Client.Close()
	}
	rest := h.c.rest()
	h.Session.Client.Close()
	return rest, err
}

// closedWith is closed for a session that ended in a stream error: what the
// client read must end with the stream error cond (and text, unless empty)
// and PreAuth's error must be want. It returns what the client read.
func (h *harness) closedWith(want error, cond, text string) string {
	h.T.Helper()
	rest, err := h.closed()
	streamErrorOf(h.T, rest, cond, text)
	if !errors.Is(err, want) {
		h.T.Errorf("PreAuth() = %v, want %v", err, want)
	}
	return rest
}

// withTLS marks the client link as TLS (an implicit-TLS listener).
func withTLS(s *protocols.Session) { s.ClientTLS = true }
