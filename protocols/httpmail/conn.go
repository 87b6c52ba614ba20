package httpmail

import (
	"context"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
)

// clientConn is one client connection: a TCP connection (HTTP/1.x or
// HTTP/2) or a QUIC connection (HTTP/3). NTLM and Negotiate authenticate the
// connection, not the request (docs/protocols.md §6.3), so the user they named is
// remembered here, and such a connection gets backend connections of its
// own (pinned), which are closed with it and never serve another client.
type clientConn struct {
	id       uint64
	listener string         // "https", "http3" or "http"
	peer     netip.AddrPort // the real client: the socket peer, or the PROXY header's source
	tls      bool
	closeFn  func() // closes the client connection
	closed   atomic.Bool

	mu       sync.Mutex
	authUser string // user an NTLM/Negotiate handshake on this connection authenticated
	authMech string
	pins     map[*route]*pinnedBackend
	done     bool
}

type connKey struct{}

func withConn(ctx context.Context, cc *clientConn) context.Context {
	return context.WithValue(ctx, connKey{}, cc)
}

func connFrom(ctx context.Context) *clientConn {
	cc, _ := ctx.Value(connKey{}).(*clientConn)
	return cc
}

// close closes the client connection (an administrator's drop, shutdown).
func (c *clientConn) close() {
	if c.closeFn != nil {
		c.closeFn()
	}
}

// release frees what the connection holds: its pinned backend connections.
// It runs once, when the client connection is gone.
func (c *clientConn) release() {
	if !c.closed.CompareAndSwap(false, true) {
		return
	}
	c.mu.Lock()
	pins := c.pins
	c.pins = nil
	c.done = true
	c.mu.Unlock()
	for _, p := range pins {
		p.close()
	}
}

// connAuth returns the user an NTLM/Negotiate handshake authenticated on
// this connection, if any.
func (c *clientConn) connAuth() (user, mech string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.authUser, c.authMech
}

func (c *clientConn) setConnAuth(user, mech string) {
	c.mu.Lock()
	c.authUser, c.authMech = user, mech
	c.mu.Unlock()
}

// pinned returns the connection's own backend transport for rt, creating it
// on first use; nil once the client connection is gone.
func (c *clientConn) pinned(rt *route) *pinnedBackend {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.done {
		return nil
	}
	if p := c.pins[rt]; p != nil {
		return p
	}
	if c.pins == nil {
		c.pins = map[*route]*pinnedBackend{}
	}
	p := newPinnedBackend(rt)
	c.pins[rt] = p
	return p
}

// hasPins reports whether the connection has started NTLM/Negotiate: later
// requests on it stay on its pinned backend connections.
func (c *clientConn) hasPin(rt *route) *pinnedBackend {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.pins[rt]
}

// unpin closes the pinned backend connections for rt (a gated NTLM leg 3:
// the backend holds a half-done handshake) and forgets the connection's user.
func (c *clientConn) unpin(rt *route) {
	c.mu.Lock()
	p := c.pins[rt]
	delete(c.pins, rt)
	c.authUser, c.authMech = "", ""
	c.mu.Unlock()
	if p != nil {
		p.close()
	}
}

// pinnedBackend is an http.Transport that belongs to one client connection:
// at most one backend connection at a time (NTLM authenticates exactly one),
// closed when the client connection closes.
type pinnedBackend struct {
	tr     *http.Transport
	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
}

func newPinnedBackend(rt *route) *pinnedBackend {
	p := &pinnedBackend{conns: map[net.Conn]struct{}{}}
	tr := rt.newTransport()
	tr.MaxConnsPerHost = 1
	tr.MaxIdleConnsPerHost = 1
	dial := tr.DialContext
	tr.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := dial(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		p.mu.Lock()
		defer p.mu.Unlock()
		if p.closed {
			c.Close()
			return nil, net.ErrClosed
		}
		p.conns[c] = struct{}{}
		return &trackedConn{Conn: c, p: p}, nil
	}
	p.tr = tr
	return p
}

func (p *pinnedBackend) close() {
	p.mu.Lock()
	p.closed = true
	conns := p.conns
	p.conns = map[net.Conn]struct{}{}
	p.mu.Unlock()
	for c := range conns {
		c.Close()
	}
	p.tr.CloseIdleConnections()
}

// dialed reports how many backend connections are open (tests).
func (p *pinnedBackend) dialed() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.conns)
}

type trackedConn struct {
	net.Conn
	p    *pinnedBackend
	once sync.Once
}

func (t *trackedConn) Close() error {
	t.once.Do(func() {
		t.p.mu.Lock()
		delete(t.p.conns, t.Conn)
		t.p.mu.Unlock()
	})
	return t.Conn.Close()
}
