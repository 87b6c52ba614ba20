// Package proxy is mailgate's protocol-agnostic core: listeners, the PROXY
// protocol (trusted networks only), implicit TLS, backend dialing, the blind
// relay after login and graceful shutdown. The protocol dialogue before login
// belongs to a protocols.Handler; accounting keeps the numbers.
package proxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mailgate/mailgate/accounting"
	"github.com/mailgate/mailgate/protocols"
)

// ListenerOptions configure one client-facing listener.
type ListenerOptions struct {
	Name    string
	Address string // IP:port
	Handler protocols.Handler
	// TLS toward the client: "none", "starttls" or "implicit"; TLSConfig
	// holds the certificates (chosen by SNI).
	TLS       string
	TLSConfig *tls.Config
	// RequireTLSForLogin hides plaintext login on a plain link.
	RequireTLSForLogin bool
	// TrustedProxies may send a PROXY v1/v2 header; anyone else who sends
	// one is refused.
	TrustedProxies []netip.Prefix
	// RequireProxyHeader: a trusted peer must send a header.
	RequireProxyHeader bool
	ProxyHeaderTimeout time.Duration
	MaxConnections     int
	Limits             protocols.Limits
	IdleTimeout        time.Duration
	Backend            Backend
}

// Listener accepts clients for one protocol and proxies them.
type Listener struct {
	opts ListenerOptions
	srv  *Server
	ln   net.Listener
	live atomic.Int64
}

func (l *Listener) trusted(a netip.Addr) bool {
	a = a.Unmap()
	for _, p := range l.opts.TrustedProxies {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// Addr is the bound address (useful with port 0).
func (l *Listener) Addr() net.Addr { return l.ln.Addr() }

func (l *Listener) serve() {
	var delay time.Duration
	for {
		c, err := l.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// Temporary failure (e.g. EMFILE): back off, keep serving.
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			l.srv.log.Warn("accept failed", "listener", l.opts.Name, "err", err, "retry_in", delay)
			time.Sleep(delay)
			continue
		}
		delay = 0
		if !l.srv.track(c) {
			c.Close()
			return
		}
		go l.handle(c)
	}
}

// session is one proxied connection: what handle set up, what drop and the
// relay's end need. It is the only per-session object that outlives login
// besides the accounting entry, the sockets and the parked pair, so it
// holds fields rather than closures.
type session struct {
	l       *Listener
	raw     net.Conn
	counted bool // in l.live
	acct    *accounting.Conn
	start   time.Time // relay start

	mu       sync.Mutex
	log      *slog.Logger       // pre-auth only: see logger
	cancel   context.CancelFunc // the pre-auth context; nil once relaying
	client   net.Conn           // current client conn (TLS once relaying)
	backend  net.Conn
	relay    bool      // goodbye may be written directly
	greeted  bool      // greeted early: closed with lingerClose until relaying
	reason   string    // why it was dropped
	stopIdle func()    // the goroutine relay's idle watch
	pair     *pair     // the parked relay, once relaying
	bye      sync.Once // a second caller waits until the goodbye is written
}

// newLogger returns a logger that names the session in each line.
func (s *session) newLogger() *slog.Logger {
	return withDeferred(s.l.srv.log, slog.Uint64("conn", s.acct.ID()), slog.String("listener", s.l.opts.Name),
		slog.String("client", s.acct.Info().Client.Addr().String()))
}

// logger is the session's logger: the one the handler used before login,
// or a new one afterwards (a relayed session logs once or twice in its life,
// so keeping a logger for hours would cost more than building it).
func (s *session) logger() *slog.Logger {
	s.mu.Lock()
	lg := s.log
	s.mu.Unlock()
	if lg != nil {
		return lg
	}
	return s.newLogger()
}

// release frees what the session holds, in the reverse order of setup.
func (s *session) release() {
	s.mu.Lock()
	b, cancel := s.backend, s.cancel
	s.cancel = nil
	s.mu.Unlock()
	if b != nil {
		b.Close()
	}
	if cancel != nil {
		cancel()
	}
	if s.acct != nil {
		s.acct.Close()
	}
	if s.counted {
		s.l.live.Add(-1)
	}
	s.mu.Lock()
	raw, linger := s.raw, s.greeted && !s.relay
	s.mu.Unlock()
	if raw == nil { // parked: the pair closed the sockets
		s.l.srv.done()
		return
	}
	if linger {
		lingerClose(raw)
	} else {
		raw.Close()
	}
	s.l.srv.untrack(raw)
}

// lingerTimeout bounds how long lingerClose waits for the client's FIN.
const lingerTimeout = 500 * time.Millisecond

// lingerClose ends a session that failed before login after an early
// greeting. Its client has usually sent its LOGIN already, unread, and
// closing a socket with unread bytes makes the kernel send RST, on which
// some clients (Windows among them) drop what they had not read yet: the
// BYE that says why. So it sends FIN, reads and discards what comes (a few
// KiB at most, for lingerTimeout at most), then closes.
func lingerClose(c net.Conn) {
	tc, ok := c.(*net.TCPConn)
	if !ok || tc.CloseWrite() != nil {
		c.Close()
		return
	}
	tc.SetReadDeadline(time.Now().Add(lingerTimeout))
	var buf [512]byte
	for total := 0; total < 16<<10; {
		n, err := tc.Read(buf[:])
		total += n
		if err != nil {
			break
		}
	}
	tc.Close()
}

func (l *Listener) handle(raw net.Conn) {
	// Until the session is handed to the parked relay, this goroutine owns
	// every resource and releases them when it returns.
	s := &session{l: l, raw: raw}
	handedOff := false
	defer func() {
		if r := recover(); r != nil {
			l.srv.log.Error("panic in session", "listener", l.opts.Name, "panic", fmt.Sprint(r))
		}
		if !handedOff {
			s.release()
		}
	}()
	peer := addrPort(raw.RemoteAddr())
	local := addrPort(raw.LocalAddr())
	h := l.opts.Handler

	// 1. PROXY header (trusted peers only) and implicit TLS.
	var conn net.Conn = raw
	var br *bufio.Reader
	client := peer
	if l.trusted(peer.Addr()) {
		br = bufio.NewReaderSize(raw, 4096)
		var err error
		client, err = ReadProxyHeader(raw, br, peer, l.opts.RequireProxyHeader, l.opts.ProxyHeaderTimeout)
		if err != nil {
			l.srv.log.Warn("PROXY header refused", "listener", l.opts.Name, "peer", peer, "err", err)
			return
		}
		if br.Buffered() > 0 {
			conn = &prefixConn{Conn: raw, r: br}
		}
	} else {
		conn = &guardConn{Conn: raw}
	}
	isTLS := false
	if l.opts.TLS == "implicit" {
		tc := protocols.TLSServer(conn, l.opts.TLSConfig)
		tc.SetDeadline(time.Now().Add(min(l.opts.Limits.LoginTimeout, 30*time.Second)))
		if err := tc.Handshake(); err != nil {
			l.srv.log.Debug("client TLS handshake failed", "listener", l.opts.Name, "client", client, "err", err)
			return
		}
		tc.SetDeadline(time.Time{})
		conn, isTLS = tc, true
	}
	s.client = conn

	// 2. Register and the connect-time gate.
	if l.srv.draining.Load() {
		h.Refuse(conn, protocols.RefuseShutdown)
		return
	}
	if max := l.opts.MaxConnections; max > 0 && l.live.Load() >= int64(max) {
		l.srv.reg.CountRefusal(accounting.ReasonListenerLimit)
		h.Refuse(conn, protocols.RefuseLimit)
		return
	}
	l.live.Add(1)
	s.counted = true
	acct, refusal := l.srv.reg.Admit(accounting.ConnInfo{Protocol: h.Protocol(), Listener: l.opts.Name, Client: client, TLS: isTLS})
	if refusal != "" {
		l.srv.log.Info("connection refused", "listener", l.opts.Name, "client", client, "reason", refusal)
		h.Refuse(conn, refusal)
		return
	}
	s.acct = acct
	s.log = s.newLogger()
	ctx, cancel := context.WithCancel(l.srv.ctx)
	s.cancel = cancel
	acct.SetDropFunc(s.drop)

	var cc *protocols.Conn
	if br != nil && conn == raw {
		cc = protocols.NewConnReader(raw, br)
	} else {
		cc = protocols.NewConn(conn)
	}
	ps := &protocols.Session{
		ID: acct.ID(), Client: cc,
		ClientAddr: client, LocalAddr: local, ClientTLS: isTLS,
		RequireTLSForLogin: l.opts.RequireTLSForLogin,
		Observer:           acct, Gate: acct, Log: s.log, Limits: l.opts.Limits,
	}
	if l.opts.TLS == "starttls" {
		ps.ClientStartTLS = l.opts.TLSConfig
	}
	if l.opts.Backend.TLS == "starttls" {
		ps.BackendStartTLS = l.opts.Backend.TLSConfig
	}
	if ca := l.opts.Backend.ClientAddress; ca != "none" && ca != "proxy-v2" {
		ps.ClientAddrVia = ca
	}
	ps.BackendKnowsClient = l.opts.Backend.ClientAddress == "proxy-v2"

	// 3. Backend. A handler that can tell the backend's greeting in advance
	// greets first: connecting to the backend then overlaps with the client
	// reading the greeting and sending its first command.
	if eg, ok := h.(protocols.EarlyGreeter); ok {
		if g := eg.EarlyGreeting(ps); g != nil {
			cc.W.Write(g)
			if cc.W.Flush() != nil {
				return
			}
			ps.Greeted = true
			s.mu.Lock()
			s.greeted = true
			s.mu.Unlock()
		}
	}
	bconn, err := l.opts.Backend.dial(ctx, client, local)
	if err != nil && acct.Closed() { // dropped while dialing: the dial was cancelled
		s.goodbye(conn)
		return
	}
	if err != nil {
		s.log.Warn("backend dial failed", "backend", l.opts.Backend.Address, "err", err)
		l.srv.reg.CountDialError(h.Protocol())
		h.Refuse(conn, protocols.RefuseUnavailable) // after an early greeting, a BYE too
		return
	}
	s.mu.Lock()
	s.backend = bconn
	s.mu.Unlock()
	if acct.Closed() { // dropped while dialing
		if ps.Greeted {
			s.goodbye(conn)
		}
		return
	}
	ps.Backend = protocols.NewConn(bconn)

	// 4. Pre-auth dialogue.
	err = h.PreAuth(ctx, ps)
	if acct.Closed() { // dropped during the dialogue: the handler has returned
		s.goodbye(ps.Client.Conn)
		return
	}
	if err != nil {
		s.log.Debug("session ended before login", "err", err)
		return
	}

	// 5. Relay: first what either side already sent, then blind copy. The
	// handler's pre-auth deadlines no longer apply.
	ps.Client.Conn.SetDeadline(time.Time{})
	ps.Backend.Conn.SetDeadline(time.Time{})
	if err := flushBuffered(ps.Backend.Conn, ps.Client.R); err != nil {
		return
	}
	if err := flushBuffered(ps.Client.Conn, ps.Backend.R); err != nil {
		return
	}
	ps.Client.Release()
	ps.Backend.Release()
	if acct.Closed() { // dropped between the verdict and now
		s.goodbye(ps.Client.Conn)
		return
	}
	s.start = time.Now()
	// From here the relay owns the session: this goroutine ends while the
	// connection is idle, and relayClosed runs when it closes. The pre-auth
	// context is no longer needed: cancelling it now frees it (and its
	// place among the server context's children) for the session's life.
	s.mu.Lock()
	s.client, s.backend, s.relay = unwrap(ps.Client.Conn), unwrap(ps.Backend.Conn), true
	cancel, s.cancel = s.cancel, nil
	s.log = nil // rebuilt for the rare line, not kept for the session's life
	if l.srv.parker != nil {
		s.pair, handedOff = l.srv.parker.park(ps.Client.Conn, ps.Backend.Conn, s, l.opts.IdleTimeout)
	}
	if handedOff {
		// The pair owns the sockets now (a plain pair has even closed the
		// net.Conns): drop the session's references, so that their memory
		// goes too.
		s.raw, s.client, s.backend = nil, nil, nil
	} else {
		s.stopIdle = idleWatch(ps.Client.Conn, l.opts.IdleTimeout, s.relayIdle)
	}
	s.mu.Unlock()
	if handedOff {
		l.srv.forget(raw) // a drop reaches it through accounting from now on
	}
	cancel()
	if acct.Closed() { // a drop that came just before found no relay yet
		if handedOff {
			s.goodbyePair(s.pair)
		} else {
			s.goodbye(ps.Client.Conn)
		}
		return
	}
	if !handedOff {
		handedOff = true
		s.relayClosed(relay(ps.Client.Conn, ps.Backend.Conn))
	}
}

// relayIdle closes a relayed session that carried nothing for IdleTimeout.
func (s *session) relayIdle() {
	s.logger().Info("idle timeout", "after", s.l.opts.IdleTimeout)
	s.drop(protocols.ByeTimeout)
}

// relayClosed runs once when the relay has ended, with its byte counts.
func (s *session) relayClosed(up, down int64) {
	s.mu.Lock()
	stop := s.stopIdle
	s.mu.Unlock()
	if stop != nil {
		stop()
	}
	s.l.srv.reg.AddRelayBytes(s.l.opts.Handler.Protocol(), up, down)
	s.release()
	if !s.l.srv.log.Enabled(context.Background(), slog.LevelInfo) {
		return // not even the logger is built
	}
	s.logger().Info("session closed", "user", s.acct.Info().User, "duration", time.Since(s.start).Round(time.Millisecond), "bytes_up", up, "bytes_down", down)
}

// drop is the accounting drop function. While relaying it says goodbye and
// closes both sides itself. Before that it only cancels the session's
// context: the handler wakes up (its deadlines move to the past), returns,
// and handle says goodbye on whatever the client link is by then (plain or
// TLS), so a goodbye never interleaves with the handler's own writes.
func (s *session) drop(reason string) {
	s.logger().Info("session dropped", "reason", reason)
	s.mu.Lock()
	s.reason = reason
	c, b, relaying, pr, cancel, raw := s.client, s.backend, s.relay, s.pair, s.cancel, s.raw
	s.mu.Unlock()
	if !relaying {
		if cancel != nil {
			cancel()
		}
		// Wake a handler blocked in a read even if it does not watch ctx.
		past := time.Unix(1, 0)
		raw.SetReadDeadline(past)
		if b != nil {
			b.SetDeadline(past)
		}
		return
	}
	if pr != nil {
		s.goodbyePair(pr)
		return
	}
	s.goodbye(c)
	raw.Close()
	if b != nil {
		b.Close()
	}
}

// goodbye writes the protocol's goodbye once, then closes the client.
func (s *session) goodbye(c net.Conn) {
	s.bye.Do(func() {
		c.SetDeadline(time.Now().Add(2 * time.Second))
		s.l.opts.Handler.Goodbye(c, s.byeReason())
		c.Close()
	})
}

// goodbyePair writes the goodbye through a parked relay (whose sockets may
// have left their net.Conns), then closes it. Two callers at once (an
// administrator's drop and the idle sweep) both close only after the
// goodbye is out.
func (s *session) goodbyePair(pr *pair) {
	s.bye.Do(func() { s.l.opts.Handler.Goodbye(clientWriter{pr}, s.byeReason()) })
	pr.close()
}

// byeReason maps the drop reason to a Goodbye reason.
func (s *session) byeReason() string {
	s.mu.Lock()
	bye := s.reason
	s.mu.Unlock()
	if bye != protocols.ByeShutdown && bye != protocols.ByeTimeout {
		bye = protocols.ByeDropped // disabled, blocked...: an administrator's decision
	}
	return bye
}

// flushBuffered forwards bytes already read into r (pipelined commands held
// during login, or a backend reply) before the blind copy starts.
func flushBuffered(dst io.Writer, r *bufio.Reader) error {
	n := r.Buffered()
	if n == 0 {
		return nil
	}
	b, _ := r.Peek(n)
	_, err := dst.Write(b)
	r.Discard(n)
	return err
}

// prefixConn reads first from a bufio.Reader that already holds bytes read
// from Conn (after a PROXY header).
type prefixConn struct {
	net.Conn
	r *bufio.Reader
}

func (p *prefixConn) Read(b []byte) (int, error) { return p.r.Read(b) }

func addrPort(a net.Addr) netip.AddrPort {
	if t, ok := a.(*net.TCPAddr); ok {
		ap := t.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	ap, _ := netip.ParseAddrPort(a.String())
	return ap
}
