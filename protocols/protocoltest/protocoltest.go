// Package protocoltest holds the test scaffolding the stream protocol
// packages (protocols/imap, pop3, smtp, xmpp) share: a loopback Harness that
// runs one Handler.PreAuth between a test client and a backend over real TCP
// connections, recording Observer and Gate fakes, a client with line and TLS
// helpers, checks of what a session logged and of Refuse and Goodbye,
// byte-recording connections for scripted backends, in-memory connections and
// Sessions for fuzzing, and SASL arithmetic and exchanges for fake servers.
//
// It is imported by _test.go files only. Every wait is bounded by a timeout
// the caller chooses, so each package keeps its own bounds.
package protocoltest

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"

	"github.com/mailgate/mailgate/internal/netx"
	"github.com/mailgate/mailgate/protocols"
)

// SyncBuffer is a bytes.Buffer safe for concurrent writers (a log handler's
// output, the bytes a backend received).
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// String returns everything written so far.
func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TLSConfigs returns a server config with a fresh self-signed certificate for
// "mail.test" and a client config that trusts it.
func TLSConfigs(t testing.TB) (server, client *tls.Config) {
	t.Helper()
	c, err := netx.SelfSigned("mail.test")
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(c.Leaf)
	server = &tls.Config{Certificates: []tls.Certificate{c}}
	client = &tls.Config{RootCAs: pool, ServerName: "mail.test"}
	return server, client
}

// Observer is a protocols.Observer that records events as strings: "tls",
// "attempt USER MECH", "ok USER MECH", "fail USER MECH" with " temporary"
// appended for a temporary failure.
type Observer struct {
	mu     sync.Mutex
	events []string
}

var _ protocols.Observer = (*Observer)(nil)

func (o *Observer) add(s string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.events = append(o.events, s)
}

func (o *Observer) TLSStarted()                     { o.add("tls") }
func (o *Observer) AuthAttempt(user, mech string)   { o.add("attempt " + user + " " + mech) }
func (o *Observer) Authenticated(user, mech string) { o.add("ok " + user + " " + mech) }
func (o *Observer) AuthFailed(user, mech string, temporary bool) {
	s := "fail " + user + " " + mech
	if temporary {
		s += " temporary"
	}
	o.add(s)
}

// Events returns a copy of the events so far.
func (o *Observer) Events() []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]string(nil), o.events...)
}

// Gate is a protocols.Gate that denies the users in Deny with the given code
// and records every user it was asked about. Deny may be written directly
// before the login it is to affect is sent; Set may be used at any time.
type Gate struct {
	mu    sync.Mutex
	Deny  map[string]string
	asked []string
}

var _ protocols.Gate = (*Gate)(nil)

// NewGate returns a Gate that allows everyone.
func NewGate() *Gate { return &Gate{Deny: map[string]string{}} }

// CheckLogin records user and returns Deny[user].
func (g *Gate) CheckLogin(user string) string {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.asked = append(g.asked, user)
	return g.Deny[user]
}

// Set makes the gate answer code for user.
func (g *Gate) Set(user, code string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.Deny[user] = code
}

// Asked returns the users the gate was asked about, in order.
func (g *Gate) Asked() []string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]string(nil), g.asked...)
}

// DenyAll is a protocols.Gate for fuzzing: when All is set it denies every
// user with protocols.DenyDisabled, otherwise it asks G (allowing everyone
// when G is nil).
type DenyAll struct {
	All bool
	G   protocols.Gate
}

// CheckLogin implements protocols.Gate.
func (d DenyAll) CheckLogin(user string) string {
	if d.All {
		return protocols.DenyDisabled
	}
	if d.G == nil {
		return protocols.DenyNone
	}
	return d.G.CheckLogin(user)
}

// HasCap reports whether caps, a capability list, holds c, ignoring case.
func HasCap(caps []string, c string) bool {
	for _, x := range caps {
		if strings.EqualFold(x, c) {
			return true
		}
	}
	return false
}

// IsReset reports whether err is a connection reset by the peer.
func IsReset(err error) bool {
	return err != nil && strings.Contains(err.Error(), "connection reset")
}

// Serve listens on a fresh loopback port, runs serve on its own goroutine for
// every accepted connection, and returns the listening address. The listener
// is closed when the test ends.
func Serve(t testing.TB, serve func(net.Conn)) (addr string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go serve(c)
		}
	}()
	return ln.Addr().String()
}

// RecListener records every byte read from the connections it accepts.
type RecListener struct {
	net.Listener
	Rec *SyncBuffer
}

// Accept wraps the accepted connection in a RecConn.
func (l RecListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &RecConn{Conn: c, Rec: l.Rec}, nil
}

// RecConn records every byte read from Conn into Rec. A scripted backend
// reads through it, so that Rec holds what reached the backend (decrypted,
// when a RecConn wraps the tls.Conn).
type RecConn struct {
	net.Conn
	Rec *SyncBuffer
}

func (c *RecConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.Rec.Write(p[:n])
	return n, err
}

// BackendConn is one connection of a scripted backend. It reads through a
// RecConn, so that Rec holds every byte that reached the backend (decrypted
// after StartTLS).
type BackendConn struct {
	Conn net.Conn      // the current connection (the tls.Conn after StartTLS)
	R    *bufio.Reader // reads Conn, recording into Rec
	Rec  *SyncBuffer
}

// NewBackendConn returns a BackendConn over conn recording into rec.
func NewBackendConn(conn net.Conn, rec *SyncBuffer) *BackendConn {
	return &BackendConn{Conn: conn, R: bufio.NewReader(&RecConn{Conn: conn, Rec: rec}), Rec: rec}
}

// Send writes line and CRLF.
func (c *BackendConn) Send(line string) { io.WriteString(c.Conn, line+"\r\n") }

// Writef writes a formatted line and CRLF.
func (c *BackendConn) Writef(format string, args ...any) {
	fmt.Fprintf(c.Conn, format+"\r\n", args...)
}

// ReadLine reads one line and returns it without its CRLF or LF.
func (c *BackendConn) ReadLine() (string, error) {
	l, err := c.R.ReadString('\n')
	return strings.TrimRight(l, "\r\n"), err
}

// StartTLS runs the server side of a TLS handshake on Conn; after a
// successful one Conn and R are the TLS connection's. It reports whether the
// handshake succeeded.
func (c *BackendConn) StartTLS(cfg *tls.Config) bool {
	tc := tls.Server(c.Conn, cfg)
	if tc.Handshake() != nil {
		return false
	}
	c.Conn = tc
	c.R = bufio.NewReader(&RecConn{Conn: tc, Rec: c.Rec})
	return true
}
