package smtp_test

import (
	"crypto/tls"
	"encoding/base64"
	"strings"
	"testing"
	"time"

	"github.com/mailgate/mailgate/protocols"
	"github.com/mailgate/mailgate/protocols/protocoltest"
	"github.com/mailgate/mailgate/protocols/smtp"
)

// ioTimeout bounds one client read or write. Generous: the machine is
// shared and tests run with -race.
const ioTimeout = 10 * time.Second

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

// tclient is the test's SMTP client: raw lines over a real TCP connection.
type tclient struct {
	*protocoltest.Client
}

func (c *tclient) write(s string) { c.T.Helper(); c.Write(s) }

// send writes one command line.
func (c *tclient) send(s string) { c.T.Helper(); c.Send(s) }

// line reads one line without its CRLF.
func (c *tclient) line() string { c.T.Helper(); return c.Line() }

// reply reads one whole reply and returns its lines.
func (c *tclient) reply() []string {
	c.T.Helper()
	var lines []string
	for {
		l := c.line()
		lines = append(lines, l)
		if len(l) < 4 || l[3] != '-' {
			return lines
		}
	}
}

// expect reads one reply and checks that its last line starts with prefix.
func (c *tclient) expect(prefix string) []string {
	c.T.Helper()
	lines := c.reply()
	if last := lines[len(lines)-1]; !strings.HasPrefix(last, prefix) {
		c.T.Fatalf("client got %q, want a last line starting %q", lines, prefix)
	}
	return lines
}

// ehlo sends EHLO and returns the extension keywords offered.
func (c *tclient) ehlo(name string) []string {
	c.T.Helper()
	c.send("EHLO " + name)
	lines := c.expect("250")
	for i, l := range lines {
		if (i < len(lines)-1) != (l[3] == '-') {
			c.T.Fatalf("EHLO reply %q: continuation marks wrong on line %d", lines, i)
		}
	}
	var kws []string
	for _, l := range lines[1:] {
		kws = append(kws, l[4:])
	}
	return kws
}

// startTLS upgrades the connection after the 220.
func (c *tclient) startTLS(cfg *tls.Config) { c.T.Helper(); c.StartTLS(cfg) }

// expectEOF reads until the proxy closes the connection, returning the rest.
func (c *tclient) expectEOF() string { c.T.Helper(); return c.ReadToEOF(ioTimeout) }

// hasKW reports whether an EHLO keyword list holds kw (a whole line, or its
// first word).
func hasKW(kws []string, kw string) bool {
	for _, k := range kws {
		if strings.EqualFold(k, kw) || strings.EqualFold(strings.Fields(k)[0], kw) {
			return true
		}
	}
	return false
}

// kwLine returns the line of an EHLO keyword list that starts with word.
func kwLine(kws []string, word string) string {
	for _, k := range kws {
		if strings.EqualFold(strings.Fields(k)[0], word) {
			return k
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
// starts PreAuth with a handler built from opts (hostname "proxy.test"
// unless set). mods adjust the Session before the start.
func newHarness(t *testing.T, backendAddr string, opts smtp.Options, mods ...func(*protocols.Session)) *harness {
	t.Helper()
	if opts.Hostname == "" {
		opts.Hostname = "proxy.test"
	}
	return newHarnessWith(t, backendAddr, smtp.New(opts), mods...)
}

// newHarnessWith is newHarness with a given handler.
func newHarnessWith(t *testing.T, backendAddr string, handler protocols.Handler, mods ...func(*protocols.Session)) *harness {
	t.Helper()
	h := protocoltest.Start(t, backendAddr, handler, protocoltest.Timeouts{IO: ioTimeout, Result: 2 * ioTimeout, Cleanup: ioTimeout}, mods...)
	return &harness{Harness: h, c: &tclient{h.Client}}
}

// greeted starts a fake backend and a harness to it with a handler built
// from opts, and reads the greeting. mods adjust the Session before the
// start.
func greeted(t *testing.T, opts smtp.Options, mods ...func(*protocols.Session)) (*harness, *fakeBackend) {
	t.Helper()
	b := newFakeBackend(t)
	h := newHarness(t, b.addr, opts, mods...)
	h.c.expect("220")
	return h, b
}

// relayed reads what PreAuth left for the relay: the client's pipelined
// bytes in Client.R go to the backend, and the backend's replies come back
// on the backend connection. It writes line to the backend (as the proxy's
// relay would) and returns the backend's reply.
func (h *harness) backendRoundTrip(line string) []string {
	h.T.Helper()
	if err := h.Session.Backend.WriteLine(line); err != nil {
		h.T.Fatal(err)
	}
	return h.backendReply()
}

// backendReply reads one reply on the backend connection after PreAuth.
func (h *harness) backendReply() []string {
	h.T.Helper()
	h.Session.Backend.Conn.SetReadDeadline(time.Now().Add(ioTimeout))
	var lines []string
	for {
		l, err := h.Session.Backend.ReadLine(4096)
		if err != nil {
			h.T.Fatalf("backend read: %v", err)
		}
		lines = append(lines, string(l))
		if len(l) < 4 || l[3] != '-' {
			return lines
		}
	}
}
