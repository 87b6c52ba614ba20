package xmpp_test

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

// tclient is the test's XMPP client: raw XML over a real TCP connection.
type tclient struct {
	t    *testing.T
	conn net.Conn
	r    *bufio.Reader
	seen strings.Builder // everything read so far
}

func (c *tclient) write(s string) {
	c.t.Helper()
	c.conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c.conn, s); err != nil {
		c.t.Fatalf("client write: %v", err)
	}
}

// until reads until what was read by this call contains marker, and returns
// it.
func (c *tclient) until(marker string) string {
	c.t.Helper()
	c.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	var got strings.Builder
	for !strings.Contains(got.String(), marker) {
		b, err := c.r.ReadByte()
		if err != nil {
			c.t.Fatalf("client waiting for %q: %v; got %q", marker, err, got.String())
		}
		got.WriteByte(b)
		c.seen.WriteByte(b)
	}
	return got.String()
}

// expect reads up to marker and checks that the text read is exactly want
// (want ends with marker).
func (c *tclient) expect(want string) {
	c.t.Helper()
	if got := c.until(want); got != want {
		c.t.Fatalf("client read %q, want %q", got, want)
	}
}

// features opens a stream and returns the features element.
func (c *tclient) features(header string) string {
	c.t.Helper()
	c.write(header)
	got := c.until("</stream:features>")
	i := strings.Index(got, "<stream:features>")
	if i < 0 {
		c.t.Fatalf("no features in %q", got)
	}
	return got[i:]
}

// startTLS upgrades the connection after <proceed/>.
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

// rest reads until the proxy closes the connection and returns what came.
func (c *tclient) rest() string {
	c.t.Helper()
	c.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	b, err := io.ReadAll(c.r)
	if err != nil && !errors.Is(err, net.ErrClosed) && !strings.Contains(err.Error(), "connection reset") {
		c.t.Fatalf("waiting for close: %v (got %q)", err, b)
	}
	return string(b)
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
// starts PreAuth with opts. mods adjust the Session before the start.
func newHarness(t *testing.T, backendAddr string, opts xmpp.Options, mods ...func(*protocols.Session)) *harness {
	t.Helper()
	return newHarnessWith(t, backendAddr, xmpp.New(opts), mods...)
}

// newHarnessWith is newHarness with a given handler.
func newHarnessWith(t *testing.T, backendAddr string, handler *xmpp.Handler, mods ...func(*protocols.Session)) *harness {
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
			case <-time.After(10 * time.Second):
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
	case <-time.After(20 * time.Second):
		h.t.Fatal("PreAuth did not return")
		return nil
	}
}

// closed waits for PreAuth, then ends the client side and returns what the
// client reads before EOF. It half-closes first: closing a socket with
// unread input (a test that sent more than the handler read) resets the
// connection, which may destroy what the client has not read yet.
func (h *harness) closed() (string, error) {
	h.t.Helper()
	err := h.result()
	if cw, ok := h.s.Client.Conn.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
	} else {
		h.s.Client.Close()
	}
	rest := h.c.rest()
	h.s.Client.Close()
	return rest, err
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

// recConn records every byte read from a connection.
type recConn struct {
	net.Conn
	rec *syncBuffer
}

func (c *recConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.rec.Write(p[:n])
	return n, err
}

// withTLS marks the client link as TLS (an implicit-TLS listener).
func withTLS(s *protocols.Session) { s.ClientTLS = true }
