package proxy

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mailgate/mailgate/accounting"
	"github.com/mailgate/mailgate/internal/netx"
	"github.com/mailgate/mailgate/protocols"
)

// Server runs a set of listeners over one accounting registry.
type Server struct {
	reg       *accounting.Registry
	log       *slog.Logger
	ctx       context.Context
	cancel    context.CancelFunc
	listeners []*Listener
	draining  atomic.Bool
	parker    *parker // nil: relay with two goroutines per session

	mu    sync.Mutex
	conns map[net.Conn]struct{}
	wg    sync.WaitGroup
}

// NewServer returns a server; add listeners with Listen.
func NewServer(reg *accounting.Registry, log *slog.Logger) *Server {
	ctx, cancel := context.WithCancel(context.Background())
	s := &Server{reg: reg, log: log, ctx: ctx, cancel: cancel, conns: map[net.Conn]struct{}{}}
	p, err := newParker()
	if err != nil {
		log.Warn("epoll unavailable: relayed sessions keep two goroutines each", "err", err)
	} else {
		s.parker = p
	}
	return s
}

// Listen binds a listener and starts serving it.
func (s *Server) Listen(opts ListenerOptions) (*Listener, error) {
	if err := opts.check(); err != nil {
		return nil, err
	}
	// netx.Listen: the socket a parent process passed on an upgrade, or a
	// new one; accepted clients get TCP keep-alive either way.
	ln, err := netx.Listen("tcp", opts.Address)
	if err != nil {
		return nil, fmt.Errorf("listener %s: %w", opts.Name, err)
	}
	l := &Listener{srv: s, ln: ln}
	l.opts.Store(&opts)
	s.mu.Lock()
	s.listeners = append(s.listeners, l)
	s.mu.Unlock()
	go l.serve()
	return l, nil
}

// check fills the options' defaults and refuses what cannot work.
func (o *ListenerOptions) check() error {
	if o.Limits == (protocols.Limits{}) {
		o.Limits = protocols.DefaultLimits
	}
	if o.TLS != protocols.TLSNone && o.TLS != "" && o.TLSConfig == nil {
		return fmt.Errorf("listener %s: tls %s without certificates", o.Name, o.TLS)
	}
	return nil
}

// removeListener forgets a stopped listener.
func (s *Server) removeListener(l *Listener) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.listeners = slices.DeleteFunc(s.listeners, func(x *Listener) bool { return x == l })
}

func (s *Server) track(c net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.draining.Load() {
		return false
	}
	s.conns[c] = struct{}{}
	s.wg.Add(1)
	return true
}

func (s *Server) untrack(c net.Conn) {
	s.forget(c)
	s.done()
}

// forget stops listing c for Shutdown (a relayed session is reached
// through accounting) without ending its count; done ends it.
func (s *Server) forget(c net.Conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
}

func (s *Server) done() { s.wg.Done() }

// Shutdown stops accepting, lets live sessions finish until ctx is done,
// then says goodbye to the rest and closes them. It returns when every
// session has ended.
func (s *Server) Shutdown(ctx context.Context) error { return s.Drain(ctx, 0) }

// StopAccepting closes every listening socket: on an upgrade, the new
// process has them. Live sessions go on, and so do connections accepted
// just before (a shutdown, Drain, refuses those politely instead).
func (s *Server) StopAccepting() {
	s.mu.Lock()
	for _, l := range s.listeners {
		l.ln.Close()
	}
	s.mu.Unlock()
}

// Drain is Shutdown with the goodbyes at the deadline spread evenly over
// spread (0: all at once), so that the clients told to go do not all come
// back in the same second.
func (s *Server) Drain(ctx context.Context, spread time.Duration) error {
	s.draining.Store(true)
	s.StopAccepting()
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
		s.stopParker()
		return nil
	case <-ctx.Done():
	}
	n := 0
	left := s.reg.Connections(accounting.Filter{})
	var gap time.Duration
	if spread > 0 && len(left) > 1 {
		gap = spread / time.Duration(len(left)-1)
	}
	for k, i := range left {
		if k > 0 && gap > 0 {
			select {
			case <-done:
			case <-time.After(gap):
			}
		}
		if s.reg.DropConn(i.ID, protocols.ByeShutdown) {
			n++
		}
	}
	s.cancel()
	s.mu.Lock()
	for c := range s.conns { // not yet registered (TLS handshake, PROXY header)
		c.Close()
	}
	s.mu.Unlock()
	<-done
	s.stopParker()
	s.log.Info("shutdown: closed remaining sessions", "count", n)
	return ctx.Err()
}

func (s *Server) stopParker() {
	if s.parker != nil {
		s.parker.stop()
	}
}

// Close aborts every session at once.
func (s *Server) Close() error {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	s.Shutdown(ctx)
	return nil
}
