package protocols

import (
	"crypto/tls"
	"net"
	"sync"
	"time"
)

// CorkConn sits under a tls.Conn and lets its owner gather the records of
// one large Write into one system call. crypto/tls writes each record (at
// most 16 KiB of plaintext) to the socket as soon as it is sealed, so
// relaying 64 KiB costs four writes; corked, it costs one, and the peer is
// woken once. This is TCP_CORK done above the socket, where the number of
// system calls is what it saves.
//
// Records must reach the socket in the order they were sealed (each carries
// a sequence number), so no write goes around what is held. A write arriving
// while the conn is corked is appended to what is held (the uncork sends
// it). A write arriving while an uncork is writing waits for it to end, as
// it would wait for the socket without the cork: it must not return at once,
// or a peer that stops reading could make the proxy queue without limit
// (each KeyUpdate the peer sends is answered with a write). Close sends what
// is held (a goodbye written behind a relay write, the close_notify alert)
// before it closes the socket, waiting at most closeFlushTimeout for a peer
// that does not read.
type CorkConn struct {
	net.Conn

	mu       sync.Mutex
	flushed  sync.Cond // broadcast when an uncork ends (L set by the first waiter)
	corked   bool
	flushing bool
	held     *[]byte // from corkBufs while anything is held
	err      error   // a failed flush or a close: nothing more is written
}

// closeFlushTimeout bounds how long Close waits for queued bytes to leave.
const closeFlushTimeout = 2 * time.Second

// corkBufs holds the buffers of corked writes: 64 KiB of plaintext plus
// four records' overhead, the most a relay pump writes at once.
var corkBufs = sync.Pool{New: func() any { b := make([]byte, 0, 64<<10+4*64); return &b }}

// TLSServer starts the server side of TLS over c, with a CorkConn between.
func TLSServer(c net.Conn, cfg *tls.Config) *tls.Conn {
	return tls.Server(&CorkConn{Conn: c}, cfg)
}

// TLSClient starts the client side of TLS over c, with a CorkConn between.
func TLSClient(c net.Conn, cfg *tls.Config) *tls.Conn {
	return tls.Client(&CorkConn{Conn: c}, cfg)
}

// CorkOf returns the CorkConn under a tls.Conn made by TLSServer or
// TLSClient, or nil.
func CorkOf(c net.Conn) *CorkConn {
	if tc, ok := c.(*tls.Conn); ok {
		cc, _ := tc.NetConn().(*CorkConn)
		return cc
	}
	return nil
}

// Write writes p, or queues it behind what is held while corked; during an
// uncork it first waits for the uncork to end.
func (c *CorkConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	for c.flushing && c.err == nil {
		c.wait()
	}
	if c.err != nil {
		err := c.err
		c.mu.Unlock()
		return 0, err
	}
	if c.corked {
		if c.held == nil {
			c.held = corkBufs.Get().(*[]byte)
		}
		*c.held = append(*c.held, p...)
		c.mu.Unlock()
		return len(p), nil
	}
	c.mu.Unlock()
	// Nothing held, nobody flushing: the caller's tls.Conn holds its output
	// lock, so no other record can be sealed before this one is written.
	return c.Conn.Write(p)
}

// Cork holds the writes that follow until Uncork.
func (c *CorkConn) Cork() {
	c.mu.Lock()
	c.corked = true
	c.mu.Unlock()
}

// Uncork writes what was held in one system call (more if the socket takes
// it piecemeal) and anything queued meanwhile, then lets writes through.
func (c *CorkConn) Uncork() error {
	c.mu.Lock()
	c.corked = false
	if c.flushing { // another uncork is writing and will send it
		err := c.err
		c.mu.Unlock()
		return err
	}
	c.flushing = true
	c.flushLocked()
	c.flushing = false
	c.flushed.Broadcast()
	err := c.err
	c.mu.Unlock()
	return err
}

// wait waits, with c.mu held, for the next end of an uncork.
func (c *CorkConn) wait() {
	if c.flushed.L == nil {
		c.flushed.L = &c.mu
	}
	c.flushed.Wait()
}

// flushLocked writes what is held, and what is queued meanwhile, until
// nothing is left or a write fails. It is called with c.mu held and
// releases it around each write: the socket is not ours to hold a lock over.
func (c *CorkConn) flushLocked() {
	for c.held != nil && c.err == nil {
		b := c.held
		c.held = nil
		c.mu.Unlock()
		_, err := c.Conn.Write(*b)
		*b = (*b)[:0]
		corkBufs.Put(b)
		c.mu.Lock()
		if err != nil {
			c.err = err
		}
	}
	if c.held != nil { // failed: drop what was queued behind
		*c.held = (*c.held)[:0]
		corkBufs.Put(c.held)
		c.held = nil
	}
}

// Close sends what is held or queued (within closeFlushTimeout), then
// closes the socket. Writes afterwards fail with net.ErrClosed.
func (c *CorkConn) Close() error {
	c.mu.Lock()
	if c.flushing || c.held != nil {
		c.Conn.SetWriteDeadline(time.Now().Add(closeFlushTimeout))
		for c.flushing {
			c.wait()
		}
		c.flushing = true // a late Uncork leaves it to us
		c.flushLocked()
		c.flushing = false
		c.flushed.Broadcast()
	}
	if c.err == nil {
		c.err = net.ErrClosed
	}
	c.mu.Unlock()
	return c.Conn.Close()
}
