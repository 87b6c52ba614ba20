// Package proxy is mailgate's protocol-agnostic core: listeners, the PROXY
// protocol (trusted networks only), implicit TLS, backend dialing, the blind
// relay after login and graceful shutdown. The protocol dialogue before login
// belongs to a protocols.Handler; accounting keeps the numbers.
package proxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mailgate/mailgate/accounting"
	"github.com/mailgate/mailgate/internal/netx"
	"github.com/mailgate/mailgate/protocols"
)

// ListenerOptions configure one client-facing listener.
type ListenerOptions struct {
	Name    string
	Address string // IP:port
	Handler protocols.Handler
	// TLS toward the client; TLSConfig holds the certificates (chosen by
	// SNI).
	TLS       protocols.TLSMode
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
	opts atomic.Pointer[ListenerOptions] // Update replaces them for new sessions
	srv  *Server
	ln   net.Listener
	live atomic.Int64
}

// Name is the listener's name.
func (l *Listener) Name() string { return l.opts.Load().Name }

// Options returns the options new sessions get.
func (l *Listener) Options() ListenerOptions { return *l.opts.Load() }

// Update replaces the options sessions accepted from now on get: another
// backend, handler settings, limits, timeouts, TLS settings. Sessions
// already accepted keep the ones they started with. The address cannot
// change: Stop this listener and Listen again.
func (l *Listener) Update(opts ListenerOptions) error {
	cur := l.opts.Load()
	if opts.Address != cur.Address || opts.Name != cur.Name {
		return fmt.Errorf("listener %s: the name and address cannot change (%s -> %s)", cur.Name, cur.Address, opts.Address)
	}
	if err := opts.check(); err != nil {
		return err
	}
	l.opts.Store(&opts)
	return nil
}

// Stop closes the listening socket: nothing new is accepted there, and the
// sessions it accepted go on until they end (or the server shuts down).
func (l *Listener) Stop() {
	l.ln.Close()
	l.srv.removeListener(l)
}

// Socket is the listening socket, to pass to a new process on an upgrade,
// named by the configured address (which the new process asks for).
func (l *Listener) Socket() (netx.Socket, error) {
	return netx.SocketOf("tcp", l.opts.Load().Address, l.ln)
}

// Addr is the bound address (useful with port 0).
func (l *Listener) Addr() net.Addr { return l.ln.Addr() }

func (l *Listener) serve() {
	netx.Serve(l.ln, l.srv.log, l.Name(), func(c net.Conn) bool {
		if !l.srv.track(c) {
			c.Close()
			return false
		}
		go l.handle(c)
		return true
	})
}

// sessionState is where a session is in its life. drop acts on it, and
// handle moves it forward under the same lock, so that a drop and a stage
// change never miss each other: whichever comes second sees the other.
type sessionState uint8

const (
	sessSetup    sessionState = iota // PROXY header, TLS, admission: nothing to drop yet
	sessPreAuth                      // dialing and the handler's dialogue: a drop cancels ctx
	sessRelaying                     // copied by two goroutines: a drop says goodbye and closes
	sessParked                       // owned by the parked relay: a drop goes through the pair
)

// dropCause is the cause of a pre-auth context cancelled by a drop: the
// handler sees it as context.Cause, and the reason is the Goodbye reason.
type dropCause struct{ reason string }

func (d dropCause) Error() string { return "session dropped: " + d.reason }

// session is one proxied connection: what handle set up, what drop and the
// relay's end need. It is the only per-session object that outlives login
// besides the accounting entry, the sockets and the parked pair, so it
// holds fields rather than closures.
type session struct {
	l       *Listener
	opts    *ListenerOptions // the listener's, as the session was accepted
	raw     net.Conn
	counted bool // in l.live
	acct    *accounting.Conn
	start   time.Time // relay start

	mu       sync.Mutex
	state    sessionState
	reason   string                  // why it was dropped; "" while it was not (the first drop wins)
	log      *slog.Logger            // pre-auth only: see logger
	cancel   context.CancelCauseFunc // the pre-auth context; nil once relaying
	client   net.Conn                // current client conn (TLS once relaying)
	backend  net.Conn
	greeted  bool      // greeted early: closed with lingerClose unless it relayed
	stopIdle func()    // the goroutine relay's idle watch
	pair     *pair     // the parked relay, once relaying
	bye      sync.Once // a second caller waits until the goodbye is written
}

// dropped reports whether the session was dropped (and so whether handle,
// between two stages, must say goodbye instead of going on).
func (s *session) dropped() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.reason != ""
}

// newLogger returns a logger that names the session in each line.
func (s *session) newLogger() *slog.Logger {
	return withDeferred(s.l.srv.log, slog.Uint64("conn", s.acct.ID()), slog.String("listener", s.opts.Name),
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
		cancel(nil)
	}
	if s.acct != nil {
		s.acct.Close()
	}
	if s.counted {
		s.l.live.Add(-1)
	}
	s.mu.Lock()
	raw, linger := s.raw, s.greeted && s.state < sessRelaying
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

// handle runs one connection through its stages: the front door (PROXY
// header, implicit TLS), admission, the backend, the handler's pre-auth
// dialogue and the relay. Each stage returns false when the session ends
// there; the deferred release frees what was set up, unless the parked
// relay took the session over.
func (l *Listener) handle(raw net.Conn) {
	s := &session{l: l, raw: raw, opts: l.opts.Load()}
	handedOff := false
	defer func() {
		if r := recover(); r != nil {
			l.srv.reg.CountPanic()
			l.srv.log.Error("panic in session", "listener", s.opts.Name, "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
		}
		if !handedOff {
			s.release()
		}
	}()
	fd, ok := l.frontDoor(raw, s.opts)
	if !ok {
		return
	}
	s.client = fd.conn
	ctx, ps, ok := s.admit(fd)
	if !ok {
		return
	}
	if !s.connect(ctx, ps) || !s.preAuth(ctx, ps) {
		return
	}
	handedOff = s.startRelay(ps)
}

// front is a client connection through the front door.
type front struct {
	conn          net.Conn      // what the handler talks to (TLS for implicit TLS)
	br            *bufio.Reader // holds what followed a PROXY header; nil without one
	client, local netip.AddrPort
	tls           bool
}

// frontDoor reads the PROXY header of a trusted peer (anyone else is
// guarded against sending one) and does the implicit TLS handshake.
func (l *Listener) frontDoor(raw net.Conn, o *ListenerOptions) (front, bool) {
	peer := addrPort(raw.RemoteAddr())
	f := front{conn: raw, client: peer, local: addrPort(raw.LocalAddr())}
	if netx.Contains(o.TrustedProxies, peer.Addr()) {
		f.br = bufio.NewReaderSize(raw, 4096)
		var err error
		f.client, err = netx.ReadProxyHeader(raw, f.br, peer, o.RequireProxyHeader, o.ProxyHeaderTimeout)
		if err != nil {
			l.srv.log.Warn("PROXY header refused", "listener", o.Name, "peer", peer, "err", err)
			return f, false
		}
		if f.br.Buffered() > 0 {
			f.conn = &netx.PrefixConn{Conn: raw, R: f.br}
		}
	} else {
		f.conn = &netx.GuardConn{Conn: raw}
	}
	if o.TLS == protocols.TLSImplicit {
		tc := protocols.TLSServer(f.conn, o.TLSConfig)
		tc.SetDeadline(time.Now().Add(min(o.Limits.LoginTimeout, 30*time.Second)))
		if err := tc.Handshake(); err != nil {
			l.srv.log.Debug("client TLS handshake failed", "listener", o.Name, "client", f.client, "err", err)
			return f, false
		}
		tc.SetDeadline(time.Time{})
		f.conn, f.tls = tc, true
	}
	return f, true
}

// admit applies the connect-time gate (draining, the listener's cap, the
// registry's blocks and per-IP limit), registers the connection and builds
// the handler's Session. From here a drop reaches the session.
func (s *session) admit(f front) (context.Context, *protocols.Session, bool) {
	l := s.l
	h := s.opts.Handler
	if l.srv.draining.Load() {
		h.Refuse(f.conn, protocols.RefuseShutdown)
		return nil, nil, false
	}
	if max := s.opts.MaxConnections; max > 0 && l.live.Load() >= int64(max) {
		l.srv.reg.CountRefusal(accounting.ReasonListenerLimit)
		h.Refuse(f.conn, protocols.RefuseLimit)
		return nil, nil, false
	}
	l.live.Add(1)
	s.counted = true
	acct, refusal := l.srv.reg.Admit(accounting.ConnInfo{Protocol: h.Protocol(), Listener: s.opts.Name, Client: f.client, TLS: f.tls})
	if refusal != "" {
		l.srv.log.Info("connection refused", "listener", s.opts.Name, "client", f.client, "reason", refusal)
		h.Refuse(f.conn, refusal)
		return nil, nil, false
	}
	s.acct = acct
	s.log = s.newLogger()
	ctx, cancel := context.WithCancelCause(l.srv.ctx)
	s.mu.Lock()
	s.cancel, s.state = cancel, sessPreAuth
	s.mu.Unlock()
	acct.SetDropFunc(s.drop)

	var cc *protocols.Conn
	if f.br != nil && f.conn == s.raw {
		cc = protocols.NewConnReader(s.raw, f.br)
	} else {
		cc = protocols.NewConn(f.conn)
	}
	ps := &protocols.Session{
		ID: acct.ID(), Client: cc,
		ClientAddr: f.client, LocalAddr: f.local, ClientTLS: f.tls,
		RequireTLSForLogin: s.opts.RequireTLSForLogin,
		Observer:           acct, Gate: acct, Log: s.log, Limits: s.opts.Limits,
	}
	if s.opts.TLS == protocols.TLSStartTLS {
		ps.ClientStartTLS = s.opts.TLSConfig
	}
	if s.opts.Backend.TLS == protocols.TLSStartTLS {
		ps.BackendStartTLS = s.opts.Backend.TLSConfig
	}
	if ca := s.opts.Backend.ClientAddress; ca != "none" && ca != "proxy-v2" {
		ps.ClientAddrVia = ca
	}
	ps.BackendKnowsClient = s.opts.Backend.ClientAddress == "proxy-v2"
	return ctx, ps, true
}

// connect dials the backend. A handler that can tell the backend's greeting
// in advance greets first: the dial then overlaps with the client reading
// the greeting and sending its first command.
func (s *session) connect(ctx context.Context, ps *protocols.Session) bool {
	l := s.l
	h := s.opts.Handler
	cc := ps.Client
	if eg, ok := h.(protocols.EarlyGreeter); ok {
		if g := eg.EarlyGreeting(ps); g != nil {
			cc.W.Write(g)
			if cc.W.Flush() != nil {
				return false
			}
			ps.Greeted = true
			s.mu.Lock()
			s.greeted = true
			s.mu.Unlock()
		}
	}
	bconn, err := s.opts.Backend.dial(ctx, ps.ClientAddr, ps.LocalAddr)
	if err != nil {
		if s.dropped() { // the drop cancelled the dial
			s.goodbye(cc.Conn)
			return false
		}
		s.log.Warn("backend dial failed", "backend", s.opts.Backend.Address, "err", err)
		l.srv.reg.CountDialError(h.Protocol())
		h.Refuse(cc.Conn, protocols.RefuseUnavailable) // after an early greeting, a BYE too
		return false
	}
	s.mu.Lock()
	s.backend = bconn
	s.mu.Unlock()
	if s.dropped() { // dropped while dialing
		if ps.Greeted {
			s.goodbye(cc.Conn)
		}
		return false
	}
	ps.Backend = protocols.NewConn(bconn)
	return true
}

// preAuth runs the handler's dialogue up to a successful login.
func (s *session) preAuth(ctx context.Context, ps *protocols.Session) bool {
	err := s.opts.Handler.PreAuth(ctx, ps)
	if s.dropped() { // the handler has returned: the goodbye is ours to write
		s.goodbye(ps.Client.Conn)
		return false
	}
	if err != nil {
		s.log.Debug("session ended before login", "err", err)
		return false
	}
	return true
}

// startRelay forwards what either side already sent, then hands the pair
// to the parked relay, or copies with two goroutines until it ends. It
// reports whether the session was released by the relay (parked, or copied
// to its end) rather than left to handle's release.
func (s *session) startRelay(ps *protocols.Session) (handedOff bool) {
	l := s.l
	// The handler's pre-auth deadlines no longer apply.
	ps.Client.Conn.SetDeadline(time.Time{})
	ps.Backend.Conn.SetDeadline(time.Time{})
	if flushBuffered(ps.Backend.Conn, ps.Client.R) != nil || flushBuffered(ps.Client.Conn, ps.Backend.R) != nil {
		return false
	}
	ps.Client.Release()
	ps.Backend.Release()
	s.start = time.Now()
	// The state changes under the lock a drop takes: a drop that came
	// before found no relay and left the goodbye to us; one that comes
	// after finds the relay. The pre-auth context is no longer needed:
	// cancelling it frees it (and its place among the server context's
	// children) for the session's life.
	raw := s.raw
	s.mu.Lock()
	s.client, s.backend = unwrap(ps.Client.Conn), unwrap(ps.Backend.Conn)
	cancel := s.cancel
	s.cancel = nil
	s.log = nil // rebuilt for the rare line, not kept for the session's life
	if l.srv.parker != nil {
		s.pair, handedOff = l.srv.parker.park(ps.Client.Conn, ps.Backend.Conn, s, s.opts.IdleTimeout)
	}
	if handedOff {
		// The pair owns the sockets now (a plain pair has even closed the
		// net.Conns): drop the session's references, so that their memory
		// goes too.
		s.state = sessParked
		s.raw, s.client, s.backend = nil, nil, nil
	} else {
		s.state = sessRelaying
		s.stopIdle = idleWatch(ps.Client.Conn, s.opts.IdleTimeout, s.relayIdle)
	}
	droppedBefore := s.reason != ""
	s.mu.Unlock()
	cancel(nil)
	if handedOff {
		l.srv.forget(raw) // a drop reaches it through accounting from now on
	}
	switch {
	case droppedBefore && handedOff:
		s.goodbyePair(s.pair)
	case droppedBefore:
		s.stopIdle()
		s.goodbye(ps.Client.Conn)
		return false // release closes the rest
	case !handedOff:
		s.relayClosed(relay(ps.Client.Conn, ps.Backend.Conn))
	}
	return true // the relay (parked or finished) has released the session
}

// relayIdle closes a relayed session that carried nothing for IdleTimeout.
func (s *session) relayIdle() {
	s.logger().Info("idle timeout", "after", s.opts.IdleTimeout)
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
	s.l.srv.reg.AddRelayBytes(s.opts.Handler.Protocol(), up, down)
	s.release()
	if !s.l.srv.log.Enabled(context.Background(), slog.LevelInfo) {
		return // not even the logger is built
	}
	s.logger().Info("session closed", "user", s.acct.Info().User, "duration", time.Since(s.start).Round(time.Millisecond), "bytes_up", up, "bytes_down", down)
}

// drop is the accounting drop function. Before login it only cancels the
// session's context (with the reason as its cause): the handler wakes up
// (its deadlines move to the past), returns, and handle says goodbye on
// whatever the client link is by then (plain or TLS), so a goodbye never
// interleaves with the handler's own writes. While relaying it says goodbye
// and closes both sides itself.
func (s *session) drop(reason string) {
	s.logger().Info("session dropped", "reason", reason)
	s.mu.Lock()
	if s.reason == "" {
		s.reason = reason
	}
	st, c, b, pr, cancel, raw := s.state, s.client, s.backend, s.pair, s.cancel, s.raw
	s.mu.Unlock()
	switch st {
	case sessSetup:
		// Not registered yet: accounting cannot reach it. Nothing to do.
	case sessPreAuth:
		if cancel != nil {
			cancel(dropCause{reason})
		}
		// Wake a handler blocked in a read even if it does not watch ctx.
		past := time.Unix(1, 0)
		raw.SetReadDeadline(past)
		if b != nil {
			b.SetDeadline(past)
		}
	case sessParked:
		s.goodbyePair(pr)
	case sessRelaying:
		s.goodbye(c)
		raw.Close()
		if b != nil {
			b.Close()
		}
	}
}

// goodbye writes the protocol's goodbye once, then closes the client.
func (s *session) goodbye(c net.Conn) {
	s.bye.Do(func() {
		c.SetDeadline(time.Now().Add(2 * time.Second))
		s.opts.Handler.Goodbye(c, s.byeReason())
		c.Close()
	})
}

// goodbyePair writes the goodbye through a parked relay (whose sockets may
// have left their net.Conns), then closes it. Two callers at once (an
// administrator's drop and the idle sweep) both close only after the
// goodbye is out.
func (s *session) goodbyePair(pr *pair) {
	s.bye.Do(func() { s.opts.Handler.Goodbye(clientWriter{pr}, s.byeReason()) })
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

func addrPort(a net.Addr) netip.AddrPort {
	if t, ok := a.(*net.TCPAddr); ok {
		ap := t.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	ap, _ := netip.ParseAddrPort(a.String())
	return ap
}
