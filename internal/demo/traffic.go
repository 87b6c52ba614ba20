package demo

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math/rand/v2"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/mailgate/mailgate/accounting"
	"github.com/mailgate/mailgate/protocols"
)

// Listener is one of the demo's listeners, as Traffic needs it.
type Listener struct {
	Name, Protocol, Addr string
	TLS                  protocols.TLSMode
}

// Traffic runs simulated clients against the demo's own listeners (`mailgate
// demo -traffic`) so that the admin page has live rows at once: per protocol
// with a listener, the demo users log in from a few 127.0.0.x source
// addresses, hold their session (IMAP IDLE, POP3/SMTP NOOPs, an XMPP
// stream), log out after a minute or two and reconnect; one client per
// protocol sits at the greeting without logging in (an unauthenticated
// row), and one IMAP client fails its password now and then (a failed login
// in the metrics, far below the brute-force threshold). The clients of a
// protocol are spread over its listeners; a user's client that meets a
// listener without login (SMTP MX) moves on to the next one.
//
// Listeners are grouped by their Protocol: imap, pop, smtp and xmpp have
// clients here; others (the HTTP listener) are skipped until a client for
// them is added. Everything stays on loopback. It returns when ctx is done;
// the caller ends ctx when the drain starts (the drain would otherwise wait
// for these very sessions).
func Traffic(ctx context.Context, log *slog.Logger, listeners []Listener) {
	byProto := map[string][]Listener{}
	for _, b := range listeners {
		if b.Name == "admin" {
			continue
		}
		byProto[b.Protocol] = append(byProto[b.Protocol], b)
	}
	users := slices.Sorted(maps.Keys(Users)) // alice, bob
	if len(users) == 0 {
		return
	}
	second := users[len(users)-1]

	var clients []*simClient
	for proto, ls := range byProto {
		if _, ok := simProtocols[proto]; !ok {
			log.Info("demo traffic: no simulated client for this listener", "listener", ls[0].Name, "protocol", proto)
			continue
		}
		n := 0
		add := func(kind simKind, user, src string) {
			// Spread over the protocol's listeners.
			clients = append(clients, &simClient{kind: kind, proto: proto, listeners: ls, at: n % len(ls),
				user: user, password: Users[user], src: src})
			n++
		}
		add(simSession, users[0], "127.0.0.2")
		add(simSession, users[0], "127.0.0.3")
		add(simSession, second, "127.0.0.4")
		add(simLurker, "", "127.0.0.9")
		if proto == "imap" { // the busiest protocol gets a little more
			add(simSession, users[0], "127.0.0.2") // a second device behind the same address
			add(simSession, second, "127.0.0.5")
			add(simBadPassword, "mallory@example.com", "127.0.0.8")
			clients[len(clients)-1].password = "a-wrong-password"
		}
	}
	if len(clients) == 0 {
		return
	}
	log.Info("demo traffic: simulated clients started", "clients", len(clients))
	var wg sync.WaitGroup
	for _, c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.loop(ctx, log)
		}()
	}
	wg.Wait()
}

type simKind int

const (
	simSession     simKind = iota // log in, hold the session, log out, again
	simLurker                     // connect and sit at the greeting: an unauthenticated row
	simBadPassword                // a failed login now and then
)

// simProtocols are the protocols with a simulated client.
var simProtocols = map[string]func(*simConn, *simClient, time.Duration) error{
	"imap": (*simConn).imap,
	"pop":  (*simConn).pop3,
	"smtp": (*simConn).smtp,
	"xmpp": (*simConn).xmpp,
}

// simClient is one simulated client and its schedule. Each runs in one
// goroutine.
type simClient struct {
	kind      simKind
	proto     string
	listeners []Listener // the protocol's listeners
	at        int        // the one it uses
	user      string
	password  string // never logged
	src       string // the source address to bind, 127.0.0.x

	// The listener of the current connection.
	addr, listener string
	tls            protocols.TLSMode
}

// errNoLogin: the listener offers no login (an SMTP MX listener). A user's
// client moves on to the protocol's next listener.
var errNoLogin = errors.New("this listener offers no login")

// Hold and pause times. A first session starts within two seconds so the
// page has rows at once.
const (
	simHoldMin  = 45 * time.Second
	simHoldMax  = 150 * time.Second
	simPauseMin = 2 * time.Second
	simPauseMax = 8 * time.Second
	simBadEvery = 90 * time.Second // 6-7 failures per 10 minutes: under the default lockout of 10
	simKeepOpen = 30 * time.Second // NOOP / whitespace interval while holding
	simIOWait   = 15 * time.Second // one protocol step
)

func (c *simClient) loop(ctx context.Context, log *slog.Logger) {
	log = log.With("protocol", c.proto, "source", c.src)
	wait := between(0, 2*time.Second)
	if c.kind == simBadPassword {
		wait = between(10*time.Second, 30*time.Second)
	}
	noLogin := 0 // listeners in a row that offered no login
	for sleepCtx(ctx, wait) {
		hold := between(simHoldMin, simHoldMax)
		if c.kind == simLurker {
			hold = between(20*time.Second, 60*time.Second)
		}
		err := c.once(ctx, hold)
		switch {
		case ctx.Err() != nil:
			return
		case errors.Is(err, errNoLogin):
			c.at = (c.at + 1) % len(c.listeners)
		case err != nil:
			// Dropped from the page, refused by policy, or a listener
			// shutting down: all expected in a demo. Debug only.
			log.Debug("demo traffic: session ended", "listener", c.listener, "user", c.user, "err", err)
		}
		if errors.Is(err, errNoLogin) {
			noLogin++
		} else {
			noLogin = 0
		}
		wait = between(simPauseMin, simPauseMax)
		switch {
		case c.kind == simBadPassword:
			wait = between(simBadEvery*3/4, simBadEvery*5/4)
		case noLogin > 0 && noLogin < len(c.listeners):
			wait = 0 // straight on to the next listener, once round
		}
	}
}

// once runs one connection of the client.
func (c *simClient) once(ctx context.Context, hold time.Duration) error {
	l := c.listeners[c.at]
	c.addr, c.tls, c.listener = l.Addr, l.TLS, l.Name
	raw, err := dialFrom(ctx, c.src, c.addr)
	if err != nil {
		return err
	}
	sc := &simConn{raw: raw, conn: raw, r: bufio.NewReader(raw)}
	stop := context.AfterFunc(ctx, func() { raw.Close() })
	defer stop()
	defer raw.Close()
	if c.tls == protocols.TLSImplicit {
		if err := sc.startTLS(); err != nil {
			return err
		}
	}
	return simProtocols[c.proto](sc, c, hold)
}

// noBind is set once binding a 127.0.0.x source address failed (systems
// where only 127.0.0.1 is configured): later dials use the default.
var noBind atomic.Bool

func dialFrom(ctx context.Context, src, addr string) (net.Conn, error) {
	d := net.Dialer{Timeout: simIOWait}
	if !noBind.Load() && src != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(src)}
		conn, err := d.DialContext(ctx, "tcp", addr)
		if err == nil || !errors.Is(err, syscall.EADDRNOTAVAIL) {
			return conn, err
		}
		noBind.Store(true)
		d.LocalAddr = nil
	}
	return d.DialContext(ctx, "tcp", addr)
}

// simConn is the client side of one connection.
type simConn struct {
	raw  net.Conn
	conn net.Conn // raw, or TLS over it
	r    *bufio.Reader
}

// startTLS runs the handshake on the raw connection. The demo's certificate
// is self-signed and the peer is our own loopback listener: it is not
// verified.
func (s *simConn) startTLS() error {
	tc := tls.Client(s.raw, &tls.Config{ServerName: "localhost", InsecureSkipVerify: true, MinVersion: tls.VersionTLS12})
	tc.SetDeadline(time.Now().Add(simIOWait))
	if err := tc.Handshake(); err != nil {
		return fmt.Errorf("TLS handshake: %w", err)
	}
	tc.SetDeadline(time.Time{})
	s.conn, s.r = tc, bufio.NewReader(tc)
	return nil
}

func (s *simConn) send(line string) error {
	s.conn.SetWriteDeadline(time.Now().Add(simIOWait))
	_, err := io.WriteString(s.conn, line+"\r\n")
	return err
}

func (s *simConn) line() (string, error) {
	s.conn.SetReadDeadline(time.Now().Add(simIOWait))
	l, err := s.r.ReadString('\n')
	return strings.TrimRight(l, "\r\n"), err
}

// lineBy reads one line, waiting until deadline; timedOut reports the
// deadline passing without a line.
func (s *simConn) lineBy(deadline time.Time) (l string, timedOut bool, err error) {
	s.conn.SetReadDeadline(deadline)
	l, err = s.r.ReadString('\n')
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() && l == "" {
		return "", true, nil
	}
	return strings.TrimRight(l, "\r\n"), false, err
}

// sit holds the connection without a word until hold passes or the server
// closes it (an unauthenticated row; the login timeout may end it first).
func (s *simConn) sit(hold time.Duration) error {
	end := time.Now().Add(hold)
	for {
		_, timedOut, err := s.lineBy(end)
		if timedOut {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// ---------------------------------------------------------------- IMAP

func (s *simConn) imap(c *simClient, hold time.Duration) error {
	if l, err := s.line(); err != nil || !strings.HasPrefix(l, "* OK") {
		return fmt.Errorf("IMAP greeting %q: %v", l, err)
	}
	if c.tls == protocols.TLSStartTLS {
		if err := s.imapCmd("s1", "STARTTLS"); err != nil {
			return err
		}
		if err := s.startTLS(); err != nil {
			return err
		}
	}
	if c.kind == simLurker {
		return s.sit(hold)
	}
	if err := s.imapCmd("s2", "LOGIN "+imapQuote(c.user)+" "+imapQuote(c.password)); err != nil {
		if c.kind == simBadPassword {
			s.imapCmd("s9", "LOGOUT")
			return nil // the point of this client
		}
		return err
	}
	if c.kind == simBadPassword {
		return s.imapCmd("s9", "LOGOUT")
	}
	if err := s.imapCmd("s3", "SELECT INBOX"); err != nil {
		return err
	}
	if err := s.send("s4 IDLE"); err != nil {
		return err
	}
	if l, err := s.line(); err != nil || !strings.HasPrefix(l, "+") {
		return fmt.Errorf("IDLE: %q: %v", l, err)
	}
	end := time.Now().Add(hold)
	for {
		l, timedOut, err := s.lineBy(end)
		if timedOut {
			break
		}
		if err != nil {
			return err // dropped (after a * BYE) or shut down
		}
		if strings.HasPrefix(l, "* BYE") {
			return errors.New("server said " + l)
		}
	}
	if err := s.send("DONE"); err != nil {
		return err
	}
	if err := s.imapWait("s4"); err != nil {
		return err
	}
	return s.imapCmd("s9", "LOGOUT")
}

// imapCmd sends a tagged command and wants its tagged OK.
func (s *simConn) imapCmd(tag, cmd string) error {
	if err := s.send(tag + " " + cmd); err != nil {
		return err
	}
	verb, _, _ := strings.Cut(cmd, " ")
	if err := s.imapWait(tag); err != nil {
		return fmt.Errorf("IMAP %s: %w", verb, err)
	}
	return nil
}

func (s *simConn) imapWait(tag string) error {
	for {
		l, err := s.line()
		if err != nil {
			return err
		}
		if rest, ok := strings.CutPrefix(l, tag+" "); ok {
			if strings.HasPrefix(rest, "OK") {
				return nil
			}
			return errors.New(rest)
		}
	}
}

func imapQuote(s string) string {
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(s) + `"`
}

// ---------------------------------------------------------------- POP3

func (s *simConn) pop3(c *simClient, hold time.Duration) error {
	if _, err := s.popOK(""); err != nil {
		return fmt.Errorf("POP3 greeting: %w", err)
	}
	if c.tls == protocols.TLSStartTLS {
		if _, err := s.popOK("STLS"); err != nil {
			return err
		}
		if err := s.startTLS(); err != nil {
			return err
		}
	}
	if c.kind == simLurker {
		return s.sit(hold)
	}
	if _, err := s.popOK("USER " + c.user); err != nil {
		return err
	}
	if _, err := s.popOK("PASS " + c.password); err != nil {
		return errors.New("POP3 login refused")
	}
	if err := s.keepOpen(hold, func() error { _, err := s.popOK("NOOP"); return err }); err != nil {
		return err
	}
	_, err := s.popOK("QUIT")
	return err
}

// popOK sends cmd (none when empty) and wants +OK.
func (s *simConn) popOK(cmd string) (string, error) {
	if cmd != "" {
		if err := s.send(cmd); err != nil {
			return "", err
		}
	}
	l, err := s.line()
	if err != nil {
		return l, err
	}
	if !strings.HasPrefix(l, "+OK") {
		verb, _, _ := strings.Cut(cmd, " ")
		return l, fmt.Errorf("POP3 %s: %s", verb, l)
	}
	return l, nil
}

// keepOpen holds a session until hold passes, running noop every
// simKeepOpen; a line the server sends meanwhile (a goodbye) ends it.
func (s *simConn) keepOpen(hold time.Duration, noop func() error) error {
	end := time.Now().Add(hold)
	for time.Now().Before(end) {
		next := earliest(time.Now().Add(simKeepOpen), end)
		l, timedOut, err := s.lineBy(next)
		if err != nil {
			return err
		}
		if !timedOut {
			return errors.New("server said " + l)
		}
		if time.Now().Before(end) {
			if err := noop(); err != nil {
				return err
			}
		}
	}
	return nil
}

// ---------------------------------------------------------------- SMTP

func (s *simConn) smtp(c *simClient, hold time.Duration) error {
	if _, err := s.smtpReply("", "220"); err != nil {
		return fmt.Errorf("SMTP greeting: %w", err)
	}
	ehlo, err := s.smtpReply("EHLO demo-client.example", "250")
	if err != nil {
		return err
	}
	if c.tls == protocols.TLSStartTLS && strings.Contains(ehlo, "STARTTLS") {
		if _, err := s.smtpReply("STARTTLS", "220"); err != nil {
			return err
		}
		if err := s.startTLS(); err != nil {
			return err
		}
		if ehlo, err = s.smtpReply("EHLO demo-client.example", "250"); err != nil {
			return err
		}
	}
	noop := func() error { _, err := s.smtpReply("NOOP", "250"); return err }
	if c.kind == simLurker {
		return s.sit(hold)
	}
	if !strings.Contains(ehlo, "AUTH") { // an MX listener: no login here
		s.smtpReply("QUIT", "221")
		return errNoLogin
	}
	plain := base64.StdEncoding.EncodeToString([]byte("\x00" + c.user + "\x00" + c.password))
	if _, err := s.smtpReply("AUTH PLAIN "+plain, "235"); err != nil {
		return errors.New("SMTP login refused")
	}
	if err := s.keepOpen(hold, noop); err != nil {
		return err
	}
	_, err = s.smtpReply("QUIT", "221")
	return err
}

// smtpReply sends cmd (none when empty) and reads a whole reply, which must
// have the code want. It returns the reply's text lines joined.
func (s *simConn) smtpReply(cmd, want string) (string, error) {
	if cmd != "" {
		if err := s.send(cmd); err != nil {
			return "", err
		}
	}
	var b strings.Builder
	for {
		l, err := s.line()
		if err != nil {
			return b.String(), err
		}
		if len(l) < 3 {
			return b.String(), fmt.Errorf("SMTP: malformed reply %q", l)
		}
		b.WriteString(l)
		b.WriteByte('\n')
		if len(l) == 3 || l[3] == ' ' {
			if l[:3] != want {
				verb, _, _ := strings.Cut(cmd, " ")
				return b.String(), fmt.Errorf("SMTP %s: %s", verb, l)
			}
			return b.String(), nil
		}
	}
}

// ---------------------------------------------------------------- XMPP

const xmppHeader = `<?xml version='1.0'?><stream:stream to='%s' xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>`

func (s *simConn) xmpp(c *simClient, hold time.Duration) error {
	domain := accounting.DomainOf(c.user)
	if domain == "" {
		domain = "example.com"
	}
	open := func() (string, error) {
		if _, err := fmt.Fprintf(s.conn, xmppHeader, domain); err != nil {
			return "", err
		}
		return s.xmlUntil("</stream:features>", "<stream:features/>")
	}
	features, err := open()
	if err != nil {
		return fmt.Errorf("XMPP stream: %w", err)
	}
	if c.tls == protocols.TLSStartTLS && strings.Contains(features, "<starttls") {
		if _, err := io.WriteString(s.conn, "<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>"); err != nil {
			return err
		}
		if reply, err := s.xmlUntil("<proceed", "<failure"); err != nil || !strings.Contains(reply, "<proceed") {
			return fmt.Errorf("XMPP STARTTLS: %v", err)
		}
		if _, err := s.xmlUntil(">"); err != nil { // the rest of <proceed .../>
			return err
		}
		if err := s.startTLS(); err != nil {
			return err
		}
		if _, err := open(); err != nil {
			return err
		}
	}
	if c.kind == simLurker {
		return s.sit(hold)
	}
	local, _, _ := strings.Cut(c.user, "@")
	plain := base64.StdEncoding.EncodeToString([]byte("\x00" + local + "\x00" + c.password))
	if _, err := io.WriteString(s.conn, "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>"+plain+"</auth>"); err != nil {
		return err
	}
	if reply, err := s.xmlUntil("</success>", "<success/>", "<success ", "</failure>"); err != nil || !strings.Contains(reply, "<success") {
		return errors.New("XMPP login refused")
	}
	if _, err := open(); err != nil {
		return err
	}
	if _, err := io.WriteString(s.conn, "<iq type='set' id='bind1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>demo</resource></bind></iq>"); err != nil {
		return err
	}
	if _, err := s.xmlUntil("</iq>", "/>"); err != nil {
		return err
	}
	io.WriteString(s.conn, "<presence/>")
	// Hold: whitespace keepalives (RFC 6120 §4.6.1); whatever the server
	// sends meanwhile is read and ignored, and its closing ends the session.
	end := time.Now().Add(hold)
	buf := make([]byte, 4096)
	for time.Now().Before(end) {
		s.conn.SetReadDeadline(earliest(time.Now().Add(simKeepOpen), end))
		_, err := s.r.Read(buf)
		var ne net.Error
		if err != nil && !(errors.As(err, &ne) && ne.Timeout()) {
			return err
		}
		if err != nil { // a keepalive is due
			s.conn.SetWriteDeadline(time.Now().Add(simIOWait))
			if _, err := io.WriteString(s.conn, " "); err != nil {
				return err
			}
		}
	}
	io.WriteString(s.conn, "</stream:stream>")
	return nil
}

// xmlUntil reads until one of the markers appears (a demo client, not an
// XML parser: the peers are the demo's own) and returns what it read.
func (s *simConn) xmlUntil(markers ...string) (string, error) {
	s.conn.SetReadDeadline(time.Now().Add(simIOWait))
	var b strings.Builder
	buf := make([]byte, 1)
	for b.Len() < 64<<10 {
		if _, err := s.r.Read(buf); err != nil {
			return b.String(), err
		}
		b.WriteByte(buf[0])
		for _, m := range markers {
			if strings.HasSuffix(b.String(), m) {
				return b.String(), nil
			}
		}
	}
	return b.String(), errors.New("XMPP: no end of element within 64 KiB")
}

// ---------------------------------------------------------------- helpers

// between is a random duration in [lo, hi).
func between(lo, hi time.Duration) time.Duration {
	if hi <= lo {
		return lo
	}
	return lo + rand.N(hi-lo)
}

// sleepCtx waits d; false when ctx ended first.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// earliest is the earlier of two times.
func earliest(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}
