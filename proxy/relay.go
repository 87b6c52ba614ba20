package proxy

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
	"sync"
	"time"

	"github.com/mailgate/mailgate/internal/netx"
	"github.com/mailgate/mailgate/protocols"
)

// unwrap returns the connection to copy with: the raw *net.TCPConn behind a
// GuardConn once its check is done (or a PrefixConn once drained), so
// io.Copy between two TCP sockets uses splice(2); TLS connections are
// returned as they are.
func unwrap(c net.Conn) net.Conn {
	switch x := c.(type) {
	case *netx.GuardConn:
		if x.Passed() {
			return x.Conn
		}
	case *netx.PrefixConn:
		if x.Drained() {
			return x.Conn
		}
	}
	return c
}

// tcpOf returns the TCP socket under c (through TLS and guard wrappers).
func tcpOf(c net.Conn) *net.TCPConn {
	for {
		switch x := c.(type) {
		case *net.TCPConn:
			return x
		case *tls.Conn:
			c = x.NetConn()
		case *netx.GuardConn:
			c = x.Conn
		case *netx.PrefixConn:
			c = x.Conn
		case *protocols.CorkConn:
			c = x.Conn
		default:
			return nil
		}
	}
}

// relay copies bytes both ways until both directions have ended, honouring
// half-close: EOF from one side becomes a write shutdown on the other. An
// error on either side closes both. It returns the byte counts.
func relay(client, backend net.Conn) (up, down int64) {
	client, backend = unwrap(client), unwrap(backend)
	var wg sync.WaitGroup
	var once sync.Once
	closeBoth := func() {
		once.Do(func() {
			client.Close()
			backend.Close()
		})
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		down = pipe(client, backend, closeBoth)
	}()
	up = pipe(backend, client, closeBoth)
	wg.Wait()
	closeBoth()
	return up, down
}

// pipe copies src to dst; a clean EOF half-closes dst, anything else tears
// the pair down.
func pipe(dst, src net.Conn, closeBoth func()) int64 {
	var w io.Writer = dst
	if cork := protocols.CorkOf(dst); cork != nil {
		w = corked{dst, cork}
	}
	n, err := io.Copy(w, src)
	if err != nil && !errors.Is(err, net.ErrClosed) {
		closeBoth()
		return n
	}
	if err == nil {
		if cw, ok := dst.(interface{ CloseWrite() error }); ok && cw.CloseWrite() == nil {
			return n
		}
	}
	closeBoth()
	return n
}

// corked writes to a tls.Conn over a CorkConn: the records sealed for one
// Write leave in one system call.
type corked struct {
	dst  net.Conn
	cork *protocols.CorkConn
}

func (c corked) Write(b []byte) (int, error) {
	if c.cork == nil {
		return c.dst.Write(b)
	}
	c.cork.Cork()
	n, err := c.dst.Write(b)
	if uerr := c.cork.Uncork(); err == nil {
		err = uerr
	}
	return n, err
}

// idleWatch closes the session when its client socket has carried no data
// for limit. It costs a timer, not a goroutine; stop it when the session ends.
func idleWatch(client net.Conn, limit time.Duration, onIdle func()) (stop func()) {
	tc := tcpOf(client)
	if tc == nil || limit <= 0 {
		return func() {}
	}
	var mu sync.Mutex
	var t *time.Timer
	stopped := false
	var check func()
	check = func() {
		idle, ok := idleFor(tc)
		mu.Lock()
		defer mu.Unlock()
		if stopped {
			return
		}
		if ok && idle >= limit {
			stopped = true
			go onIdle()
			return
		}
		t = time.AfterFunc(limit-idle+time.Second, check)
	}
	mu.Lock()
	t = time.AfterFunc(limit, check)
	mu.Unlock()
	return func() {
		mu.Lock()
		stopped = true
		t.Stop()
		mu.Unlock()
	}
}

// pumpIdle is how long a pump of the parked relay (Linux) waits for more
// data before it parks.
const pumpIdle = 250 * time.Millisecond

// pairOwner is told when its relayed pair went idle and when it closed.
type pairOwner interface {
	relayIdle()                 // nothing moved for the idle limit
	relayClosed(up, down int64) // once, after both sockets are closed
}
