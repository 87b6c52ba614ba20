package demo

import (
	"net"
	"sync"

	"github.com/mailgate/mailgate/internal/netx"
)

// tcpServer is the accept loop of the plain-TCP backends (POP3, XMPP): it
// serves each connection in a goroutine of its own and closes it when the
// handler returns. Close closes the listener and every open connection and
// returns when all those goroutines have ended.
type tcpServer struct {
	ln     net.Listener
	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
	wg     sync.WaitGroup
}

// serveTCP listens on addr (127.0.0.1:0 for any port) and serves every
// connection with serve.
func serveTCP(addr string, serve func(net.Conn)) (*tcpServer, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	s := &tcpServer{ln: ln, conns: map[net.Conn]struct{}{}}
	s.wg.Add(1)
	go s.accept(serve)
	return s, nil
}

// Addr is the listener's address.
func (s *tcpServer) Addr() string { return s.ln.Addr().String() }

// Close stops the server: the listener and every connection are closed, and
// Close returns when their goroutines have ended.
func (s *tcpServer) Close() error {
	s.mu.Lock()
	s.closed = true
	err := s.ln.Close()
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
	return err
}

func (s *tcpServer) accept(serve func(net.Conn)) {
	defer s.wg.Done()
	netx.Serve(s.ln, nil, "demo", func(c net.Conn) bool {
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			c.Close()
			return false
		}
		s.conns[c] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		go func() {
			defer s.wg.Done()
			defer func() {
				s.mu.Lock()
				delete(s.conns, c)
				s.mu.Unlock()
				c.Close()
			}()
			serve(c)
		}()
		return true
	})
}
