package pop3_test

import (
	"crypto/tls"
	"encoding/base64"
	"strings"
	"testing"
	"time"

	"github.com/mailgate/mailgate/protocols"
	"github.com/mailgate/mailgate/protocols/pop3"
	"github.com/mailgate/mailgate/protocols/protocoltest"
)

// ioTimeout bounds every single read or write of the test client. Tests
// share two cores with other packages' tests: generous, never a sleep.
const ioTimeout = 20 * time.Second

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

// tclient is the test's POP3 client: raw lines over a real TCP connection.
type tclient struct {
	*protocoltest.Client
}

func (c *tclient) write(s string) { c.T.Helper(); c.Write(s) }

// send writes one command line.
func (c *tclient) send(s string) { c.T.Helper(); c.Send(s) }

// line reads one line without its CRLF.
func (c *tclient) line() string { c.T.Helper(); return c.Line() }

// expect reads one line and checks its prefix.
func (c *tclient) expect(prefix string) string { c.T.Helper(); return c.Expect(prefix) }

// cmd sends a line and expects a reply prefix.
func (c *tclient) cmd(s, prefix string) string {
	c.T.Helper()
	c.send(s)
	return c.expect(prefix)
}

// body reads a multi-line body up to ".", undoing dot-stuffing.
func (c *tclient) body() []string {
	c.T.Helper()
	var lines []string
	for {
		l := c.line()
		if l == "." {
			return lines
		}
		if strings.HasPrefix(l, ".") {
			l = l[1:]
		}
		lines = append(lines, l)
	}
}

// capa sends CAPA and returns the capability lines (it wants +OK).
func (c *tclient) capa() []string {
	c.T.Helper()
	c.cmd("CAPA", "+OK")
	return c.body()
}

// challenge reads a SASL continuation and returns its decoded payload.
func (c *tclient) challenge() string {
	c.T.Helper()
	l := c.line()
	if l != "+ " && !strings.HasPrefix(l, "+ ") {
		c.T.Fatalf("client got %q, want a continuation", l)
	}
	b, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(l, "+ "))
	if err != nil {
		c.T.Fatalf("challenge %q is not base64: %v", l, err)
	}
	return string(b)
}

// startTLS upgrades the connection after the +OK to STLS.
func (c *tclient) startTLS(cfg *tls.Config) { c.T.Helper(); c.StartTLS(cfg) }

// expectEOF reads until the proxy closes the connection, returning the rest.
func (c *tclient) expectEOF() string { c.T.Helper(); return c.ReadToEOF(ioTimeout) }

// saslLine returns the SASL line of caps ("" if none).
func saslLine(caps []string) string {
	for _, x := range caps {
		if strings.HasPrefix(strings.ToUpper(x), "SASL") {
			return x
		}
	}
	return ""
}

// harness runs one PreAuth between a tclient and a backend address.
type harness struct {
	*protocoltest.Harness
	c *tclient
}

// newHarness connects a client through a fresh Session to backendAddr and
// starts PreAuth with the zero Handler. mods adjust the Session first.
func newHarness(t *testing.T, backendAddr string, mods ...func(*protocols.Session)) *harness {
	t.Helper()
	return newHarnessWith(t, nil, backendAddr, mods...)
}

// newHarnessWith is newHarness with a given Handler (nil: the zero value).
func newHarnessWith(t *testing.T, handler *pop3.Handler, backendAddr string, mods ...func(*protocols.Session)) *harness {
	t.Helper()
	if handler == nil {
		handler = new(pop3.Handler) // the zero value is ready to use
	}
	h := protocoltest.Start(t, backendAddr, handler, protocoltest.Timeouts{IO: ioTimeout, Result: ioTimeout, Cleanup: ioTimeout}, mods...)
	return &harness{Harness: h, c: &tclient{h.Client}}
}

// greeted starts a fake backend and a harness to it with the zero Handler,
// and reads the greeting. mods adjust the Session before the start.
func greeted(t *testing.T, mods ...func(*protocols.Session)) (*harness, *fakeBackend) {
	t.Helper()
	b := newFakeBackend(t)
	h := newHarness(t, b.addr, mods...)
	h.c.expect("+OK")
	return h, b
}

// heldLine reads one line the handler left unread in Client.R after login.
func (h *harness) heldLine() string {
	h.T.Helper()
	h.Session.Client.Conn.SetReadDeadline(time.Now().Add(ioTimeout))
	l, err := h.Session.Client.ReadLine(1024)
	if err != nil {
		h.T.Fatalf("Client.ReadLine() after login: %v", err)
	}
	return string(l)
}

// backendRoundTrip sends a line on the authenticated backend link, as the
// relay would, and returns the first answer line.
func (h *harness) backendRoundTrip(line string) string {
	h.T.Helper()
	if err := h.Session.Backend.WriteLine(line); err != nil {
		h.T.Fatal(err)
	}
	h.Session.Backend.Conn.SetReadDeadline(time.Now().Add(ioTimeout))
	l, err := h.Session.Backend.ReadLine(4096)
	if err != nil {
		h.T.Fatalf("backend read: %v", err)
	}
	return string(l)
}
