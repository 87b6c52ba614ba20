package imap_test

import (
	"crypto/tls"
	"strings"
	"testing"
	"time"

	"github.com/mailgate/mailgate/protocols"
	"github.com/mailgate/mailgate/protocols/imap"
	"github.com/mailgate/mailgate/protocols/protocoltest"
)

// tclient is the test's IMAP client: raw lines over a real TCP connection.
type tclient struct{ *protocoltest.Client }

func (c *tclient) write(s string) { c.T.Helper(); c.Write(s) }

// send writes one command line.
func (c *tclient) send(s string) { c.T.Helper(); c.Send(s) }

// line reads one line without its CRLF.
func (c *tclient) line() string { c.T.Helper(); return c.Line() }

// expect reads one line and checks its prefix.
func (c *tclient) expect(prefix string) string { c.T.Helper(); return c.Expect(prefix) }

// until reads lines up to and including the tagged result of tag.
func (c *tclient) until(tag string) (untagged []string, result string) {
	c.T.Helper()
	for {
		l := c.line()
		if strings.HasPrefix(l, tag+" ") {
			return untagged, l
		}
		untagged = append(untagged, l)
	}
}

// startTLS upgrades the connection after the tagged OK.
func (c *tclient) startTLS(cfg *tls.Config) { c.T.Helper(); c.StartTLS(cfg) }

// expectEOF reads until the proxy closes the connection, returning the rest.
func (c *tclient) expectEOF() string { c.T.Helper(); return c.ReadToEOF(5 * time.Second) }

// harness runs one PreAuth between a tclient and a backend address.
type harness struct {
	*protocoltest.Harness
	c *tclient
}

// newHarness connects a client through a fresh Session to backendAddr and
// starts PreAuth. mods adjust the Session before the start.
func newHarness(t *testing.T, backendAddr string, mods ...func(*protocols.Session)) *harness {
	t.Helper()
	h := protocoltest.Start(t, backendAddr, new(imap.Handler), // the zero value is ready to use
		protocoltest.Timeouts{IO: 5 * time.Second, Result: 10 * time.Second, Cleanup: 5 * time.Second}, mods...)
	return &harness{Harness: h, c: &tclient{h.Client}}
}

// greeted starts a fake backend and a harness to it, and reads the
// greeting. mods adjust the Session before the start.
func greeted(t *testing.T, mods ...func(*protocols.Session)) (*harness, *fakeBackend) {
	t.Helper()
	b := newFakeBackend(t)
	h := newHarness(t, b.addr, mods...)
	h.c.expect("* OK")
	return h, b
}
