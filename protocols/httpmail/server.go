package httpmail

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"

	"github.com/quic-go/quic-go/http3"
)

// Server is the HTTP front for EAS, EWS, MAPI, WebDAV and webmail: it
// routes, attributes, gates and counts every request and proxies it to the
// protocol's backend. Listen on it with ListenTLS (HTTP/1.1 and HTTP/2),
// ListenHTTP3 (UDP) and ListenPlain (behind a TLS-terminating balancer).
type Server struct {
	opts     Options
	log      *slog.Logger
	errorLog *log.Logger
	table    atomic.Pointer[routeTable] // SetRoutes replaces it
	tracker  Tracker
	webmail  Webmail
	hsrv     *http.Server
	creds    *credCache
	nextID   atomic.Uint64
	altSvc   atomic.Pointer[string]
	baseCtx  context.Context
	cancel   context.CancelFunc

	mu        sync.Mutex
	listeners []net.Listener
	// listenAddrs are the addresses the listeners were asked for (an
	// upgrade passes them on by these names), udpAddr HTTP/3's.
	listenAddrs []string
	fronts      []*chanListener
	h3          *http3.Server
	udp         net.PacketConn
	udpAddr     string
	tlsConns    map[*tls.Conn]*clientConn // HTTP/2 connections handed to net/http
	sockets     map[*socketEntry]struct{}
	closing     bool
	wg          sync.WaitGroup // accept loops and connection set-up goroutines
}

// New builds a Server; it listens nowhere yet.
func New(opts Options) (*Server, error) {
	s := &Server{opts: opts, log: opts.Log, tracker: opts.Tracker, webmail: opts.Webmail,
		tlsConns: map[*tls.Conn]*clientConn{}, sockets: map[*socketEntry]struct{}{}}
	if s.log == nil {
		s.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if s.tracker == nil {
		s.tracker = nopTracker{}
	}
	s.errorLog = slog.NewLogLogger(s.log.Handler(), slog.LevelDebug)
	s.baseCtx, s.cancel = context.WithCancel(context.Background())
	if err := s.SetRoutes(opts.Routes); err != nil {
		return nil, err
	}
	s.creds = newCredCache(opts.credentialTTL())
	protos := new(http.Protocols)
	protos.SetHTTP1(true)
	protos.SetHTTP2(true)
	s.hsrv = &http.Server{
		Handler:           s,
		ReadHeaderTimeout: opts.readHeaderTimeout(),
		IdleTimeout:       opts.idleTimeout(),
		MaxHeaderBytes:    opts.maxHeaderBytes(),
		ConnContext:       s.connContext,
		ConnState:         s.connState,
		ErrorLog:          s.errorLog,
		Protocols:         protos,
		BaseContext:       func(net.Listener) context.Context { return s.baseCtx },
	}
	return s, nil
}

// routeTable is the routes requests are matched against, replaced whole.
type routeTable struct {
	routes  []*route
	webmail *route // also in routes
}

// SetRoutes replaces the routes: requests that start from now on are
// routed by the new ones, requests in flight (an EAS Ping, an open
// websocket) finish on the route they started on. The new set is checked
// whole (one webmail route at most, no prefix twice) before it replaces
// anything. The webmail session handler (Options.Webmail) stays.
func (s *Server) SetRoutes(routes []Route) error {
	t := &routeTable{}
	seen := map[string]string{}
	for _, r := range routes {
		rt, err := s.newRoute(r)
		if err != nil {
			return err
		}
		if rt.Protocol == ProtoWebmail {
			if t.webmail != nil {
				return errors.New("httpmail: more than one webmail route")
			}
			t.webmail = rt
		} else {
			for _, p := range rt.prefixes {
				key := rt.Host + " " + p
				if other, dup := seen[key]; dup {
					return fmt.Errorf("httpmail: prefix %q is routed to both %s and %s", p, other, rt.Protocol)
				}
				seen[key] = rt.Protocol
			}
		}
		t.routes = append(t.routes, rt)
	}
	if len(t.routes) == 0 {
		return errors.New("httpmail: no route")
	}
	if old := s.table.Swap(t); old != nil {
		// Pooled backend connections of the replaced routes close once
		// idle; those in use finish their request first.
		for _, rt := range old.routes {
			rt.shared.CloseIdleConnections()
		}
	}
	return nil
}

// nopTracker admits everything and records nothing.
type nopTracker struct{}

func (nopTracker) Admit(ConnInfo) (Conn, string) { return nopConn{}, "" }

type nopConn struct{}

func (nopConn) TLSStarted()                     {}
func (nopConn) AuthAttempt(string, string)      {}
func (nopConn) Authenticated(string, string)    {}
func (nopConn) AuthFailed(string, string, bool) {}
func (nopConn) CheckLogin(string) string        { return "" }
func (nopConn) SetDropFunc(func(reason string)) {}
func (nopConn) Close() bool                     { return true }

// connContext gives every request of a connection its clientConn.
func (s *Server) connContext(ctx context.Context, c net.Conn) context.Context {
	switch v := c.(type) {
	case *h1Conn:
		return withConn(ctx, v.cc)
	case *plainH1Conn:
		return withConn(ctx, v.cc)
	case *tls.Conn:
		s.mu.Lock()
		cc := s.tlsConns[v]
		s.mu.Unlock()
		if cc != nil {
			return withConn(ctx, cc)
		}
	}
	return ctx
}

// connState releases an HTTP/2 connection's state when net/http is done
// with it (HTTP/1 connections release in their Close).
func (s *Server) connState(c net.Conn, st http.ConnState) {
	if st != http.StateClosed && st != http.StateHijacked {
		return
	}
	if tc, ok := c.(*tls.Conn); ok {
		s.mu.Lock()
		cc := s.tlsConns[tc]
		delete(s.tlsConns, tc)
		s.mu.Unlock()
		if cc != nil {
			cc.release()
		}
	}
}
