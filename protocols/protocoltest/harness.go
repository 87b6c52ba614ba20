package protocoltest

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mailgate/mailgate/protocols"
)

// Client is the raw end of a test client's connection. Protocol packages
// embed it in their own client type, which knows the protocol's lines.
type Client struct {
	T       *testing.T
	Conn    net.Conn      // the current connection (the tls.Conn after StartTLS)
	R       *bufio.Reader // reads Conn
	Timeout time.Duration // bounds each Write and the TLS handshake
}

// NewClient wraps conn. timeout bounds each Write and the TLS handshake.
func NewClient(t *testing.T, conn net.Conn, timeout time.Duration) *Client {
	return &Client{T: t, Conn: conn, R: bufio.NewReader(conn), Timeout: timeout}
}

// Write sends s as it is, failing the test on error.
func (c *Client) Write(s string) {
	c.T.Helper()
	c.Conn.SetWriteDeadline(time.Now().Add(c.Timeout))
	if _, err := io.WriteString(c.Conn, s); err != nil {
		c.T.Fatalf("client write: %v", err)
	}
}

// Send writes s and CRLF, failing the test on error.
func (c *Client) Send(s string) {
	c.T.Helper()
	c.Write(s + "\r\n")
}

// Line reads one line, within Timeout, and returns it without its CRLF. A
// read error or a line that does not end in CRLF fails the test.
func (c *Client) Line() string {
	c.T.Helper()
	c.Conn.SetReadDeadline(time.Now().Add(c.Timeout))
	l, err := c.R.ReadString('\n')
	if err != nil {
		c.T.Fatalf("client read: %v (partial %q)", err, l)
	}
	if !strings.HasSuffix(l, "\r\n") {
		c.T.Fatalf("line %q does not end in CRLF", l)
	}
	return strings.TrimSuffix(l, "\r\n")
}

// Expect reads one line and checks its prefix.
func (c *Client) Expect(prefix string) string {
	c.T.Helper()
	l := c.Line()
	if !strings.HasPrefix(l, prefix) {
		c.T.Fatalf("client got %q, want prefix %q", l, prefix)
	}
	return l
}

// StartTLS upgrades the connection (after the server's go-ahead was read).
// Plaintext still buffered at that point fails the test.
func (c *Client) StartTLS(cfg *tls.Config) {
	c.T.Helper()
	if c.R.Buffered() != 0 {
		c.T.Fatalf("plaintext buffered before TLS")
	}
	tc := tls.Client(c.Conn, cfg)
	tc.SetDeadline(time.Now().Add(c.Timeout))
	if err := tc.Handshake(); err != nil {
		c.T.Fatalf("client TLS handshake: %v", err)
	}
	tc.SetDeadline(time.Time{})
	c.Conn = tc
	c.R = bufio.NewReader(tc)
}

// ReadToEOF reads until the other side closes the connection, within
// timeout, and returns what came. An error other than EOF, a closed
// connection or a reset fails the test.
func (c *Client) ReadToEOF(timeout time.Duration) string {
	c.T.Helper()
	c.Conn.SetReadDeadline(time.Now().Add(timeout))
	b, err := io.ReadAll(c.R)
	if err != nil && !errors.Is(err, net.ErrClosed) && !IsReset(err) {
		c.T.Fatalf("waiting for close: %v (got %q)", err, b)
	}
	return string(b)
}

// Timeouts bound a Harness's waits.
type Timeouts struct {
	IO      time.Duration // the Client's Timeout; also Closed's wait for EOF
	Result  time.Duration // Result's wait for PreAuth to return
	Cleanup time.Duration // the wait for PreAuth to return once the test ended
}

// Harness runs one Handler.PreAuth between a test Client and a backend,
// over real TCP connections on loopback.
type Harness struct {
	T         *testing.T
	Client    *Client            // the test client's end
	Session   *protocols.Session // what PreAuth was given
	Observer  *Observer
	Gate      *Gate
	Logs      *SyncBuffer // the session's log, text format, debug level
	ClientTLS *tls.Config // trusts the certificate of Session.ClientStartTLS
	Cancel    context.CancelFunc

	to    Timeouts
	done  chan error
	err   error
	ended bool
}

// Start connects a client through a fresh Session to backendAddr and starts
// handler.PreAuth on its own goroutine. The Session has ID 42, STARTTLS
// offered with a self-signed certificate for "mail.test", the Harness's
// Observer, Gate and log, and protocols.DefaultLimits; mods adjust it before
// the start. When the test ends the context is cancelled, the client closed,
// PreAuth awaited (to.Cleanup) and both of the Session's connections closed.
func Start(t *testing.T, backendAddr string, handler protocols.Handler, to Timeouts, mods ...func(*protocols.Session)) *Harness {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	cc, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	sc, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	bc, err := net.Dial("tcp", backendAddr)
	if err != nil {
		t.Fatal(err)
	}
	srvTLS, cliTLS := TLSConfigs(t)
	h := &Harness{
		T:         t,
		Client:    NewClient(t, cc, to.IO),
		Observer:  &Observer{},
		Gate:      NewGate(),
		Logs:      &SyncBuffer{},
		ClientTLS: cliTLS,
		to:        to,
		done:      make(chan error, 1),
	}
	h.Session = &protocols.Session{
		ID:             42,
		Client:         protocols.NewConn(sc),
		Backend:        protocols.NewConn(bc),
		ClientAddr:     netip.MustParseAddrPort(sc.RemoteAddr().String()),
		LocalAddr:      netip.MustParseAddrPort(sc.LocalAddr().String()),
		ClientStartTLS: srvTLS,
		Observer:       h.Observer,
		Gate:           h.Gate,
		Log:            slog.New(slog.NewTextHandler(h.Logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Limits:         protocols.DefaultLimits,
	}
	for _, m := range mods {
		m(h.Session)
	}
	ctx, cancel := context.WithCancel(context.Background())
	h.Cancel = cancel
	go func() { h.done <- handler.PreAuth(ctx, h.Session) }()
	t.Cleanup(func() {
		cancel()
		h.Client.Conn.Close()
		if !h.ended {
			select {
			case <-h.done:
			case <-time.After(to.Cleanup):
				t.Error("PreAuth did not return after cleanup")
			}
		}
		h.Session.Client.Close()
		h.Session.Backend.Close()
	})
	return h
}

// Result waits for PreAuth to return and returns its error.
func (h *Harness) Result() error {
	h.T.Helper()
	if h.ended {
		return h.err
	}
	select {
	case h.err = <-h.done:
		h.ended = true
		return h.err
	case <-time.After(h.to.Result):
		h.T.Fatal("PreAuth did not return")
		return nil
	}
}

// Closed waits for PreAuth, then closes the client side as the proxy would
// and returns what the client reads before EOF.
func (h *Harness) Closed() (string, error) {
	h.T.Helper()
	err := h.Result()
	h.Session.Client.Close()
	return h.Client.ReadToEOF(h.to.IO), err
}

// Running checks PreAuth has not returned yet.
func (h *Harness) Running() {
	h.T.Helper()
	select {
	case h.err = <-h.done:
		h.ended = true
		h.T.Fatalf("PreAuth returned early: %v", h.err)
	default:
	}
}

// WantEvents compares the Observer's events with want.
func (h *Harness) WantEvents(want ...string) {
	h.T.Helper()
	got := h.Observer.Events()
	if strings.Join(got, "|") != strings.Join(want, "|") {
		h.T.Errorf("observer events = %q, want %q", got, want)
	}
}

// CheckLogs checks the session's log: it must contain none of secrets (no
// password, token or SASL payload, at any level) and every one of wants.
func (h *Harness) CheckLogs(secrets, wants []string) {
	h.T.Helper()
	logs := h.Logs.String()
	for _, s := range secrets {
		if strings.Contains(logs, s) {
			h.T.Errorf("logs contain secret %q:\n%s", s, logs)
		}
	}
	for _, want := range wants {
		if !strings.Contains(logs, want) {
			h.T.Errorf("logs lack %q:\n%s", want, logs)
		}
	}
}

// WantResult waits for PreAuth to return and fails the test unless its
// error is want (errors.Is; nil: no error).
func (h *Harness) WantResult(want error) {
	h.T.Helper()
	if err := h.Result(); !errors.Is(err, want) {
		h.T.Fatalf("PreAuth() = %v, want %v", err, want)
	}
}

// WantClosed is Closed, failing the test unless PreAuth's error is want
// (errors.Is) and the client read nothing more before EOF.
func (h *Harness) WantClosed(want error) {
	h.T.Helper()
	if rest, err := h.Closed(); !errors.Is(err, want) || rest != "" {
		h.T.Fatalf("PreAuth() = %v, then %q, want %v and nothing", err, rest, want)
	}
}

// WantInjectionDiscarded checks the session after plaintext was pipelined
// behind command (STARTTLS, STLS) and TLS started: PreAuth still runs, TLS
// is the only event, and the discarded plaintext was logged.
func (h *Harness) WantInjectionDiscarded(command string) {
	h.T.Helper()
	h.Running()
	h.WantEvents("tls")
	h.CheckLogs(nil, []string{"plaintext pipelined after " + command + " discarded"})
}

// WantBlankDiscarded checks the session after only whitespace followed
// command and TLS started: PreAuth still runs, the whitespace was dropped
// with a Debug line, and nothing was logged at WARN (issue 19: a newline
// after <starttls/> is legal XML whitespace, not an attack).
func (h *Harness) WantBlankDiscarded(command string) {
	h.T.Helper()
	h.Running()
	h.WantEvents("tls")
	h.CheckLogs(nil, []string{"whitespace pipelined after " + command + " discarded"})
	if logs := h.Logs.String(); strings.Contains(logs, "level=WARN") {
		h.T.Errorf("whitespace after %s logged at WARN:\n%s", command, logs)
	}
}

// CheckWithheld fails the test for every one of secrets that got, what a
// backend received, contains.
func CheckWithheld(t testing.TB, got string, secrets ...string) {
	t.Helper()
	for _, s := range secrets {
		if strings.Contains(got, s) {
			t.Errorf("backend received %q: %q", s, got)
		}
	}
}

// ZeroSession is a Session modifier: zero Limits and no Observer, Gate or
// Log, which a Handler must replace with defaults.
func ZeroSession(s *protocols.Session) {
	s.Limits = protocols.Limits{}
	s.Observer, s.Gate, s.Log = nil, nil, nil
}

// Farewells is what a Handler writes when the proxy refuses a connection
// (Refuse) or ends an established session (Goodbye), by reason.
type Farewells struct {
	Protocol string              // what Protocol returns
	Norm     func(string) string // when not nil, applied to what was written before comparing
	Refuse   map[string]string
	Goodbye  map[string]string
}

// Check compares h's Protocol, and what its Refuse and Goodbye write for
// every reason in f, with f.
func (f Farewells) Check(t *testing.T, h protocols.Handler) {
	t.Helper()
	if got := h.Protocol(); got != f.Protocol {
		t.Errorf("Protocol() = %q, want %q", got, f.Protocol)
	}
	checkFarewells(t, h.Refuse, f.Norm, f.Refuse)
	checkFarewells(t, h.Goodbye, f.Norm, f.Goodbye)
}

// checkFarewells calls write (a Handler's Refuse or Goodbye) with a
// buffered writer, which it must flush itself, for every reason in want, and
// compares what came out, passed through norm when it is not nil, with
// want[reason].
func checkFarewells(t *testing.T, write func(w io.Writer, reason string), norm func(string) string, want map[string]string) {
	t.Helper()
	for _, reason := range slices.Sorted(maps.Keys(want)) {
		var buf bytes.Buffer
		write(bufio.NewWriter(&buf), reason)
		got := buf.String()
		if norm != nil {
			got = norm(got)
		}
		if got != want[reason] {
			t.Errorf("%s: wrote %q, want %q", reason, got, want[reason])
		}
	}
}
