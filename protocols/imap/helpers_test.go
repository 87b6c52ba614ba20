package imap_test

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
	"github.com/mailgate/mailgate/protocols/imap"
)

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

func (o *fakeObserver) TLSStarted()                   { o.add("tls") }
func (o *fakeObserver) AuthAttempt(user, mech string) { o.add("attempt " + user + " " + mech) }
func (o *fakeObserver) Authenticated(user, mech string) {
	o.add("ok " + user + " " + mech)
}
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

// tclient is the test's IMAP client: raw lines over a real TCP connection.
type tclient struct {
	t    *testing.T
	conn net.Conn
	r    *bufio.Reader
}

func (c *tclient) write(s string) {
	c.t.Helper()
	c.conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c.conn, s); err != nil {
		c.t.Fatalf("client write: %v", err)
	}
}

// send writes one command line.
func (c *tclient) send(s string) { c.t.Helper(); c.write(s + "\r\n") }

// line reads one line without its CRLF.
func (c *tclient) line() string {
	c.t.Helper()
	c.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	l, err := c.r.ReadString('\n')
	if err != nil {
		c.t.Fatalf("client read: %v (partial %q)", err, l)
	}
	return strings.TrimRight(l, "\r\n")
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

// until reads lines up to and including the tagged result of tag.
func (c *tclient) until(tag string) (untagged []string, result string) {
	c.t.Helper()
	for {
		l := c.line()
		if strings.HasPrefix(l, tag+" ") {
			return untagged, l
		}
		untagged = append(untagged, l)
	}
}

// startTLS upgrades the connection after the tagged OK.
func (c *tclient) startTLS(cfg *tls.Config) {
	c.t.Helper()
	if c.r.Buffered() != 0 {
		c.t.Fatalf("plaintext buffered before TLS")
	}
	tc := tls.Client(c.conn, cfg)
	tc.SetDeadline(time.Now().Add(5 * time.Second))
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
	c.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	b, err := io.ReadAll(c.r)
	if err != nil && !errors.Is(err, net.ErrClosed) && !isReset(err) {
		c.t.Fatalf("waiting for close: %v (got %q)", err, b)
	}
	return string(b)
}

func isReset(err error) bool {
	return err != nil && strings.Contains(err.Error(), "connection reset")
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
// starts PreAuth. mods adjust the Session before the start.
func newHarness(t *testing.T, backendAddr string, mods ...func(*protocols.Session)) *harness {
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
	go func() { h.done <- new(imap.Handler).PreAuth(ctx, h.s) }() // the zero value is ready to use
	t.Cleanup(func() {
		cancel()
		h.c.conn.Close()
		if !h.ended {
			select {
			case <-h.done:
			case <-time.After(5 * time.Second):
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
	case <-time.After(10 * time.Second):
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
