package smtp_test

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
	"github.com/mailgate/mailgate/protocols/smtp"
)

// ioTimeout bounds one client read or write. Generous: the machine is
// shared and tests run with -race.
const ioTimeout = 10 * time.Second

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

// tclient is the test's SMTP client: raw lines over a real TCP connection.
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

// reply reads one whole reply and returns its lines.
func (c *tclient) reply() []string {
	c.t.Helper()
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
	c.t.Helper()
	lines := c.reply()
	if last := lines[len(lines)-1]; !strings.HasPrefix(last, prefix) {
		c.t.Fatalf("client got %q, want a last line starting %q", lines, prefix)
	}
	return lines
}

// ehlo sends EHLO and returns the extension keywords offered.
func (c *tclient) ehlo(name string) []string {
	c.t.Helper()
	c.send("EHLO " + name)
	lines := c.expect("250")
	for i, l := range lines {
		if (i < len(lines)-1) != (l[3] == '-') {
			c.t.Fatalf("EHLO reply %q: continuation marks wrong on line %d", lines, i)
		}
	}
	var kws []string
	for _, l := range lines[1:] {
		kws = append(kws, l[4:])
	}
	return kws
}

// startTLS upgrades the connection after the 220.
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
	if err != nil && !errors.Is(err, net.ErrClosed) && !strings.Contains(err.Error(), "connection reset") {
		c.t.Fatalf("waiting for close: %v (got %q)", err, b)
	}
	return string(b)
}

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
	t      *testing.T
	c      *tclient
	s      *protocols.Session
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
	h := &harness{
		t:      t,
		c:      &tclient{t: t, conn: cc, r: bufio.NewReader(cc)},
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
	case <-time.After(2 * ioTimeout):
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

// relayed reads what PreAuth left for the relay: the client's pipelined
// bytes in Client.R go to the backend, and the backend's replies come back
// on the backend connection. It writes line to the backend (as the proxy's
// relay would) and returns the backend's reply.
func (h *harness) backendRoundTrip(line string) []string {
	h.t.Helper()
	if err := h.s.Backend.WriteLine(line); err != nil {
		h.t.Fatal(err)
	}
	return h.backendReply()
}

// backendReply reads one reply on the backend connection after PreAuth.
func (h *harness) backendReply() []string {
	h.t.Helper()
	h.s.Backend.Conn.SetReadDeadline(time.Now().Add(ioTimeout))
	var lines []string
	for {
		l, err := h.s.Backend.ReadLine(4096)
		if err != nil {
			h.t.Fatalf("backend read: %v", err)
		}
		lines = append(lines, string(l))
		if len(l) < 4 || l[3] != '-' {
			return lines
		}
	}
}

// recConn records every byte read.
type recConn struct {
	net.Conn
	rec *syncBuffer
}

func (c *recConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.rec.Write(p[:n])
	return n, err
}
