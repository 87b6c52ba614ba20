package httpmail

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"

	"github.com/mailgate/mailgate/internal/netx"
)

// ListenTLS serves HTTPS (HTTP/1.1 and HTTP/2 by ALPN) on a TCP address and
// returns the bound address.
func (s *Server) ListenTLS(addr string) (net.Addr, error) {
	if s.opts.TLSConfig == nil {
		return nil, errors.New("httpmail: ListenTLS needs Options.TLSConfig")
	}
	cfg := s.opts.TLSConfig.Clone()
	cfg.NextProtos = []string{"h2", "http/1.1"}
	return s.listenTCP(addr, "https", cfg)
}

// ListenPlain serves plain HTTP/1.1, for use behind a load balancer that
// terminates TLS (list it in TrustedForwarders, or have it send PROXY).
func (s *Server) ListenPlain(addr string) (net.Addr, error) {
	return s.listenTCP(addr, "http", nil)
}

func (s *Server) listenTCP(addr, name string, cfg *tls.Config) (net.Addr, error) {
	ln, err := netx.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	front := newChanListener(ln.Addr())
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		ln.Close()
		return nil, http.ErrServerClosed
	}
	s.listeners = append(s.listeners, ln)
	s.listenAddrs = append(s.listenAddrs, addr)
	s.fronts = append(s.fronts, front)
	s.mu.Unlock()
	go s.hsrv.Serve(front)
	s.wg.Add(1)
	go s.acceptLoop(ln, front, name, cfg)
	return ln.Addr(), nil
}

func (s *Server) acceptLoop(ln net.Listener, front *chanListener, name string, cfg *tls.Config) {
	defer s.wg.Done()
	netx.Serve(ln, s.log, name, func(c net.Conn) bool {
		s.wg.Add(1)
		go s.setUp(c, front, name, cfg)
		return true
	})
}

// setUp runs on its own goroutine per connection: the PROXY header, the TLS
// handshake, then the connection goes to net/http, HTTP/1.x through the
// framing guard.
func (s *Server) setUp(raw net.Conn, front *chanListener, name string, cfg *tls.Config) {
	defer s.wg.Done()
	conn, client, err := s.acceptProxy(raw)
	if err != nil {
		s.log.Log(s.baseCtx, setUpLevel(err), "http connection refused", "listener", name, "peer", raw.RemoteAddr(), "err", err)
		raw.Close()
		return
	}
	cc := &clientConn{id: s.nextID.Add(1), listener: name, peer: client, tls: cfg != nil}
	maxHead := s.opts.maxHeaderBytes() + 4096
	onRefuse := func(reason string) {
		s.log.Info("http request refused", "reason", reason, "listener", name, "client", client)
	}
	if cfg == nil {
		hc := &plainH1Conn{h1Guard: newH1Guard(conn, maxHead, onRefuse), cc: cc}
		cc.closeFn = func() { hc.Close() }
		front.push(hc)
		return
	}
	tc := tls.Server(conn, cfg)
	ctx, cancel := context.WithTimeout(s.baseCtx, s.opts.handshakeTimeout())
	err = tc.HandshakeContext(ctx)
	cancel()
	if err != nil {
		s.log.Debug("http TLS handshake failed", "listener", name, "client", client, "err", err)
		raw.Close()
		return
	}
	if tc.ConnectionState().NegotiatedProtocol == "h2" {
		// HTTP/2 frames its own bodies: net/http gets the *tls.Conn and
		// serves it with its own HTTP/2 server.
		cc.closeFn = func() { tc.Close() }
		s.mu.Lock()
		s.tlsConns[tc] = cc
		s.mu.Unlock()
		if !front.push(tc) {
			s.mu.Lock()
			delete(s.tlsConns, tc)
			s.mu.Unlock()
		}
		return
	}
	hc := &h1Conn{h1Guard: newH1Guard(tc, maxHead, onRefuse), cc: cc, tls: tc}
	cc.closeFn = func() { hc.Close() }
	front.push(hc)
}

// setUpLevel is how loud a connection that ended before TLS or HTTP
// began is logged. One whose peer never sent a byte (closed, reset or
// silent until the timeout: a health check, a port probe) is Debug. A PROXY
// header from a peer outside the trusted networks, or none from a trusted
// one that did send something, is a misconfiguration or an attack the
// operator should see: Warn. Anything else (a PROXY header cut short or
// malformed) is Info.
func setUpLevel(err error) slog.Level {
	var silent *silentPeerError
	switch {
	case errors.As(err, &silent):
		return slog.LevelDebug
	case errors.Is(err, ErrUntrustedProxyHeader), errors.Is(err, ErrMissingProxyHeader):
		return slog.LevelWarn
	}
	return slog.LevelInfo
}

// chanListener hands prepared connections to net/http.
type chanListener struct {
	addr net.Addr
	ch   chan net.Conn
	done chan struct{}
	once sync.Once
}

func newChanListener(a net.Addr) *chanListener {
	return &chanListener{addr: a, ch: make(chan net.Conn), done: make(chan struct{})}
}

func (l *chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

// push hands c over; when the listener is closed c is closed instead.
func (l *chanListener) push(c net.Conn) bool {
	select {
	case l.ch <- c:
		return true
	case <-l.done:
		c.Close()
		return false
	}
}

func (l *chanListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *chanListener) Addr() net.Addr { return l.addr }

// ListenHTTP3 serves HTTP/3 on a UDP address (normally the HTTPS port) and
// advertises it on HTTPS responses with Alt-Svc.
func (s *Server) ListenHTTP3(addr string) (net.Addr, error) {
	if s.opts.TLSConfig == nil {
		return nil, errors.New("httpmail: ListenHTTP3 needs Options.TLSConfig")
	}
	pc, err := netx.ListenPacket("udp", addr)
	if err != nil {
		return nil, err
	}
	h3 := &http3.Server{
		Handler:        s,
		TLSConfig:      http3.ConfigureTLSConfig(s.opts.TLSConfig.Clone()),
		MaxHeaderBytes: s.opts.maxHeaderBytes(),
		IdleTimeout:    s.opts.idleTimeout(),
		// QUIC closes a connection after MaxIdleTimeout without packets;
		// a long poll is silent for up to an hour, so this side pings.
		QUICConfig:  &quic.Config{MaxIdleTimeout: 60 * time.Second, KeepAlivePeriod: 20 * time.Second},
		ConnContext: s.quicConnContext,
		Logger:      s.log,
	}
	s.mu.Lock()
	if s.closing || s.h3 != nil {
		s.mu.Unlock()
		pc.Close()
		if s.h3 != nil {
			return nil, errors.New("httpmail: HTTP/3 is already listening")
		}
		return nil, http.ErrServerClosed
	}
	s.h3, s.udp, s.udpAddr = h3, pc, addr
	s.mu.Unlock()
	port := addrPortOf(pc.LocalAddr()).Port()
	alt := fmt.Sprintf(`h3=":%d"; ma=86400`, port)
	s.altSvc.Store(&alt)
	go h3.Serve(pc)
	return pc.LocalAddr(), nil
}

// Sockets are the listening sockets (TCP, and UDP for HTTP/3), to pass to a
// new process on an upgrade, named by the addresses they were asked for.
func (s *Server) Sockets() ([]netx.Socket, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []netx.Socket
	for i, ln := range s.listeners {
		so, err := netx.SocketOf("tcp", s.listenAddrs[i], ln)
		if err != nil {
			return nil, err
		}
		out = append(out, so)
	}
	if s.udp != nil {
		so, err := netx.SocketOf("udp", s.udpAddr, s.udp)
		if err != nil {
			return nil, err
		}
		out = append(out, so)
	}
	return out, nil
}

// quicConnContext gives the requests of an HTTP/3 connection their
// clientConn; it is released when the QUIC connection ends.
func (s *Server) quicConnContext(ctx context.Context, c *quic.Conn) context.Context {
	cc := &clientConn{id: s.nextID.Add(1), listener: "http3", peer: addrPortOf(c.RemoteAddr()), tls: true}
	cc.closeFn = func() { c.CloseWithError(quic.ApplicationErrorCode(http3.ErrCodeNoError), "dropped") }
	context.AfterFunc(c.Context(), cc.release)
	return withConn(ctx, cc)
}

// Shutdown stops accepting, closes open websockets with 1001 (going away),
// tells HTTP/2 and HTTP/3 clients to go away, and waits for requests in
// flight (long polls included) until ctx ends; then it closes what is left.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closing = true
	lns, fronts, h3 := s.listeners, s.fronts, s.h3
	s.mu.Unlock()
	for _, ln := range lns {
		ln.Close()
	}
	s.closeSockets(closeGoingAway)
	var wg sync.WaitGroup
	var h3err error
	if h3 != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			h3err = h3.Shutdown(ctx)
		}()
	}
	err := s.hsrv.Shutdown(ctx)
	if err != nil {
		s.hsrv.Close() // the drain timed out: cut what is left
	}
	for _, f := range fronts {
		f.Close()
	}
	wg.Wait()
	s.closeAll()
	return errors.Join(err, h3err)
}

// Close closes everything at once: listeners, connections, websockets.
func (s *Server) Close() error {
	s.mu.Lock()
	s.closing = true
	lns, fronts := s.listeners, s.fronts
	s.mu.Unlock()
	for _, ln := range lns {
		ln.Close()
	}
	for _, f := range fronts {
		f.Close()
	}
	s.closeSockets(closeGoingAway)
	err := s.hsrv.Close()
	s.closeAll()
	return err
}

func (s *Server) closeAll() {
	s.mu.Lock()
	h3, udp := s.h3, s.udp
	tcs := make([]*tls.Conn, 0, len(s.tlsConns))
	for tc := range s.tlsConns {
		tcs = append(tcs, tc)
	}
	s.mu.Unlock()
	for _, tc := range tcs {
		tc.Close()
	}
	if h3 != nil {
		h3.Close()
	}
	if udp != nil {
		udp.Close()
	}
	s.cancel()
	s.wg.Wait()
	for _, rt := range s.table.Load().routes {
		rt.shared.CloseIdleConnections()
	}
}

// Addrs lists the bound listener addresses (TCP, then UDP).
func (s *Server) Addrs() []net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []net.Addr
	for _, ln := range s.listeners {
		out = append(out, ln.Addr())
	}
	if s.udp != nil {
		out = append(out, s.udp.LocalAddr())
	}
	return slices.Clip(out)
}

// StopAccepting closes the listening sockets (on an upgrade the new process
// has them) and stops HTTP/3, whose datagrams the new process now reads;
// requests in flight, websockets and kept-alive connections go on until
// Shutdown.
func (s *Server) StopAccepting() {
	s.mu.Lock()
	lns, h3 := s.listeners, s.h3
	s.mu.Unlock()
	for _, ln := range lns {
		ln.Close()
	}
	// Kept-alive connections end after the request in flight, so their
	// clients come back through the new process.
	s.hsrv.SetKeepAlivesEnabled(false)
	if h3 != nil {
		h3.Close()
	}
}
