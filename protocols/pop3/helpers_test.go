package pop3_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"errors"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mailgate/mailgate/protocols"
	"github.com/mailgate/mailgate/protocols/pop3"
)

// ioTimeout bounds every single read or write of the test client. Tests
// share two cores with other packages' tests: generous, never a sleep.
const ioTimeout = 20 * time.Second

// syncBuffer is a bytes.Buffer safe for concurrent writers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

// testTLS returns a server config with a fresh self-signed certificate for
// "mail.test" and a client config that trusts it.
func testTLS(t testing.TB) (server, client *tls.Config) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "mail.test"},
		DNSNames:              []string{"mail.test"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	server = &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}
	client = &tls.Config{RootCAs: pool, ServerName: "mail.test"}
	return server, client
}

// fakeObserver records events as strings.
type fakeObserver struct {
	mu     sync.Mutex
	events []string
}

func (o *fakeObserver) add(s string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.events = append(o.events, s)
}

func (o *fakeObserver) TLSStarted()                     { o.add("tls") }
func (o *fakeObserver) AuthAttempt(user, mech string)   { o.add("attempt " + user + " " + mech) }
func (o *fakeObserver) Authenticated(user, mech string) { o.add("ok " + user + " " + mech) }
func (o *fakeObserver) AuthFailed(user, mech string, temporary bool) {
	s := "fail " + user + " " + mech
	if temporary {
		s += " temporary"
	}
	o.add(s)
}

func (o *fakeObserver) Events() []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]string(nil), o.events...)
}

// fakeGate denies the users in deny with the given code.
type fakeGate struct {
	mu    sync.Mutex
	deny  map[string]string
	asked []string
}

func (g *fakeGate) CheckLogin(user string) string {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.asked = append(g.asked, user)
	return g.deny[user]
}

func (g *fakeGate) set(user, code string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.deny[user] = code
}

// tclient is the test's POP3 client: raw lines over a real TCP connection.
type tclient struct {
	t    *testing.T
	conn net.Conn
	r    *bufio.Reader
}

func (c *tclient) write(s string) {
	c.t.Helper()
	c.conn.SetWriteDeadline(time.Now().Add(ioTimeout))
	if _, err := io.WriteString(c.conn, s); err != nil {
		c.t.Fatalf("client write: %v", err)
	}
}

// send writes one command line.
func (c *tclient) send(s string) { c.t.Helper(); c.write(s + "\r\n") }

// line reads one line without its CRLF.
func (c *tclient) line() string {
	c.t.Helper()
	c.conn.SetReadDeadline(time.Now().Add(ioTimeout))
	l, err := c.r.ReadString('\n')
	if err != nil {
		c.t.Fatalf("client read: %v (partial %q)", err, l)
	}
	if !strings.HasSuffix(l, "\r\n") {
		c.t.Fatalf("line %q does not end in CRLF", l)
	}
	return strings.TrimSuffix(l, "\r\n")
}

// expect reads one line and checks its prefix.
func (c *tclient) expect(prefix string) string {
	c.t.Helper()
	l := c.line()
	if !strings.HasPrefix(l, prefix) {
		c.t.Fatalf("client got %q, want prefix %q", l, prefix)
	}
	return l
}

// cmd sends a line and expects a reply prefix.
func (c *tclient) cmd(s, prefix string) string {
	c.t.Helper()
	c.send(s)
	return c.expect(prefix)
}

// body reads a multi-line body up to ".", undoing dot-stuffing.
func (c *tclient) body() []string {
	c.t.Helper()
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
	c.t.Helper()
	c.cmd("CAPA", "+OK")
	return c.body()
}

// challenge reads a SASL continuation and returns its decoded payload.
func (c *tclient) challenge() string {
	c.t.Helper()
	l := c.line()
	if l != "+ " && !strings.HasPrefix(l, "+ ") {
		c.t.Fatalf("client got %q, want a continuation", l)
	}
	b, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(l, "+ "))
	if err != nil {
		c.t.Fatalf("challenge %q is not base64: %v", l, err)
	}
	return string(b)
}

// startTLS upgrades the connection after the +OK to STLS.
func (c *tclient) startTLS(cfg *tls.Config) {
	c.t.Helper()
	if c.r.Buffered() != 0 {
		c.t.Fatalf("plaintext buffered before TLS")
	}
	tc := tls.Client(c.conn, cfg)
	tc.SetDeadline(time.Now().Add(ioTimeout))
	if err := tc.Handshake(); err != nil {
		c.t.Fatalf("client TLS handshake: %v", err)
	}
	tc.SetDeadline(time.Time{})
	c.conn = tc
	c.r = bufio.NewReader(tc)
}

// expectEOF reads until the proxy closes the connection, returning the rest.
func (c *tclient) expectEOF() string {
	c.t.Helper()
	c.conn.SetReadDeadline(time.Now().Add(ioTimeout))
	b, err := io.ReadAll(c.r)
	if err != nil && !errors.Is(err, net.ErrClosed) && !isReset(err) {
		c.t.Fatalf("waiting for close: %v (got %q)", err, b)
	}
	return string(b)
}

func isReset(err error) bool {
	return err != nil && strings.Contains(err.Error(), "connection reset")
}

func hasCap(caps []string, c string) bool {
	for _, x := range caps {
		if strings.EqualFold(x, c) {
			return true
		}
	}
	return false
}

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
	t      *testing.T
	c      *tclient
	s      *protocols.Session
	h      *pop3.Handler
	obs    *fakeObserver
	gate   *fakeGate
	logs   *syncBuffer
	done   chan error
	cancel context.CancelFunc
	tlsCli *tls.Config
	err    error
	ended  bool
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
	srvTLS, cliTLS := testTLS(t)
	if handler == nil {
		handler = new(pop3.Handler) // the zero value is ready to use
	}
	h := &harness{
		t:      t,
		c:      &tclient{t: t, conn: cc, r: bufio.NewReader(cc)},
		h:      handler,
		obs:    &fakeObserver{},
		gate:   &fakeGate{deny: map[string]string{}},
		logs:   &syncBuffer{},
		done:   make(chan error, 1),
		tlsCli: cliTLS,
	}
	h.s = &protocols.Session{
		ID:             42,
		Client:         protocols.NewConn(sc),
		Backend:        protocols.NewConn(bc),
		ClientAddr:     netip.MustParseAddrPort(sc.RemoteAddr().String()),
		LocalAddr:      netip.MustParseAddrPort(sc.LocalAddr().String()),
		ClientStartTLS: srvTLS,
		Observer:       h.obs,
		Gate:           h.gate,
		Log:            slog.New(slog.NewTextHandler(h.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Limits:         protocols.DefaultLimits,
	}
	for _, m := range mods {
		m(h.s)
	}
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel = cancel
	go func() { h.done <- handler.PreAuth(ctx, h.s) }()
	t.Cleanup(func() {
		cancel()
		h.c.conn.Close()
		if !h.ended {
			select {
			case <-h.done:
			case <-time.After(ioTimeout):
				t.Error("PreAuth did not return after cleanup")
			}
		}
		h.s.Client.Close()
		h.s.Backend.Close()
	})
	return h
}

// result waits for PreAuth to return.
func (h *harness) result() error {
	h.t.Helper()
	if h.ended {
		return h.err
	}
	select {
	case h.err = <-h.done:
		h.ended = true
		return h.err
	case <-time.After(ioTimeout):
		h.t.Fatal("PreAuth did not return")
		return nil
	}
}

// closed waits for PreAuth, then closes the client side as the proxy would
// and returns what the client reads before EOF.
func (h *harness) closed() (string, error) {
	h.t.Helper()
	err := h.result()
	h.s.Client.Close()
	return h.c.expectEOF(), err
}

// running checks PreAuth has not returned yet.
func (h *harness) running() {
	h.t.Helper()
	select {
	case h.err = <-h.done:
		h.ended = true
		h.t.Fatalf("PreAuth returned early: %v", h.err)
	default:
	}
}

// wantEvents compares the observer's events.
func (h *harness) wantEvents(want ...string) {
	h.t.Helper()
	got := h.obs.Events()
	if strings.Join(got, "|") != strings.Join(want, "|") {
		h.t.Errorf("observer events = %q, want %q", got, want)
	}
}

// heldLine reads one line the handler left unread in Client.R after login.
func (h *harness) heldLine() string {
	h.t.Helper()
	h.s.Client.Conn.SetReadDeadline(time.Now().Add(ioTimeout))
	l, err := h.s.Client.ReadLine(1024)
	if err != nil {
		h.t.Fatalf("Client.ReadLine() after login: %v", err)
	}
	return string(l)
}

// backendRoundTrip sends a line on the authenticated backend link, as the
// relay would, and returns the first answer line.
func (h *harness) backendRoundTrip(line string) string {
	h.t.Helper()
	if err := h.s.Backend.WriteLine(line); err != nil {
		h.t.Fatal(err)
	}
	h.s.Backend.Conn.SetReadDeadline(time.Now().Add(ioTimeout))
	l, err := h.s.Backend.ReadLine(4096)
	if err != nil {
		h.t.Fatalf("backend read: %v", err)
	}
	return string(l)
}

// recListener records every byte read from accepted connections.
type recListener struct {
	net.Listener
	rec *syncBuffer
}

func (l recListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &recConn{Conn: c, rec: l.rec}, nil
}

type recConn struct {
	net.Conn
	rec *syncBuffer
}

func (c *recConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.rec.Write(p[:n])
	return n, err
}
