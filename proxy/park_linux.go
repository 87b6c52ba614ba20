//go:build linux

package proxy

import (
	"os"
	"sync"
	"sync/atomic"
	"syscall"

	"golang.org/x/sys/unix"
)

// The parked relay. Most mail connections sit idle for minutes (IMAP IDLE,
// EAS Ping), so after login a session costs no goroutine while nothing
// moves: both sockets wait in a private epoll set (edge-triggered).
//
// The epoll set is itself a descriptor in Go's netpoller, so the one
// goroutine that waits on it sleeps like any network read, without a thread
// blocked in epoll_wait.
//
// A plain TCP pair hibernates, in the spirit of Dovecot's imap-hibernate:
// its two sockets leave Go's net package altogether (each descriptor is
// duplicated, the net.Conn closed), so an idle session keeps no netFD, no
// addresses and no netpoller descriptor, only two numbers in the epoll set.
// When one becomes readable, the waiting goroutine moves the bytes itself:
// one non-blocking read, one write, and nothing to re-arm. Mail sessions
// mostly exchange short commands and replies; this costs two system calls
// and no goroutine switch. A read that fills the buffer (a bulk transfer) or
// a destination that cannot take the bytes at once wakes the pair up: its
// descriptors become net.Conns again and pump goroutines copy (splice(2))
// until both ways have been quiet for pumpIdle, then it hibernates again.
//
// A pair with TLS on a side cannot hibernate (the tls.Conn holds the
// session's keys and may hold decrypted bytes epoll cannot see): its
// directions are pumped whenever epoll reports data and park again after
// pumpIdle of quiet. Read timeouts are not sticky on net.TCPConn nor on
// tls.Conn, so a quiet pump can stop between two reads without losing or
// corrupting anything.
//
// Descriptor safety: a hibernating pair's descriptors are read, written
// and closed only under the pair's mutex, so a number is never used after
// its close (when the kernel may have handed it to another session). A
// net.Conn's descriptor is re-armed only while held (RawConn.Control) and
// under the pair's mutex (the other direction may be replacing it). A
// duplicated descriptor keeps the socket open, so the epoll registration of
// a descriptor that is closed while its duplicate lives on is deleted
// explicitly first. A wake-up for a number whose session just ended and
// whose number was reused finds nothing to read (a stale event), or a pump
// that times out: both are harmless.

// relayBufSize is the copy buffer between two plain sockets: a read that
// fills it means a bulk transfer, which goes on with splice(2).
const relayBufSize = 16 << 10

// tlsBufSize is the pumps' buffer when one side is TLS: four records per
// read of the plain side, so the plain socket is read a quarter as often.
const tlsBufSize = 64 << 10

// The pumps' copy buffers: they exist only while a pump runs, never while
// a session is parked.
var (
	relayBufs = sync.Pool{New: func() any { b := make([]byte, relayBufSize); return &b }}
	tlsBufs   = sync.Pool{New: func() any { b := make([]byte, tlsBufSize); return &b }}
)

// parker owns one epoll set and the goroutine that waits on it.
type parker struct {
	epfd int
	file *os.File // epfd, registered with Go's netpoller
	mu   sync.Mutex
	byFD map[int32]*direction

	// The idle sweep: one goroutine for every parked session, woken every
	// sweepEvery, instead of a timer per session.
	sweepOnce  sync.Once
	sweepEvery atomic.Int64 // nanoseconds

	// Owned by the waiter goroutine.
	events []unix.EpollEvent
	buf    []byte // the hibernating pairs' copy buffer
}

// newParker creates the epoll set and starts its waiter.
func newParker() (*parker, error) {
	fd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, err
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, err
	}
	p := &parker{epfd: fd, byFD: map[int32]*direction{}, events: make([]unix.EpollEvent, 128), buf: make([]byte, relayBufSize)}
	p.file = os.NewFile(uintptr(fd), "mailgate-park")
	rc, err := p.file.SyscallConn()
	if err != nil {
		p.file.Close()
		return nil, err
	}
	go p.wait(rc)
	return p, nil
}

// stop ends the waiter and closes the epoll set. Pairs still parked are not
// woken again: call it once every session has ended.
func (p *parker) stop() {
	p.file.Close()
	p.mu.Lock()
	p.byFD = nil
	p.mu.Unlock()
}

// wait sleeps in the netpoller until the epoll set has events, then serves
// them. It runs inside one RawConn.Read call for its whole life: the
// callback drains the set with non-blocking epoll_waits and returns false
// to sleep again. The netpoller watches the set edge-triggered and keeps
// an edge that came while the callback ran, so the next sleep returns at
// once and nothing is lost, and one quiet epoll_wait per wake-up is enough.
func (p *parker) wait(rc syscall.RawConn) {
	rc.Read(func(fd uintptr) bool {
		for {
			n, err := unix.EpollWait(int(fd), p.events, 0)
			if err != nil {
				if err == unix.EINTR {
					continue
				}
				return true // closed: stop
			}
			for i := 0; i < n; i++ {
				p.event(p.events[i].Fd, p.events[i].Events&(unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0)
			}
			if n < len(p.events) {
				return false // drained: sleep
			}
		}
	})
}

// event handles one readable (or closed) socket.
func (p *parker) event(fd int32, hup bool) {
	p.mu.Lock()
	d := p.byFD[fd]
	p.mu.Unlock()
	if d == nil || !d.state.CompareAndSwap(stateParked, stateRunning) {
		return
	}
	pr := d.pair
	pr.last.Store(now())
	pr.mu.Lock()
	if pr.closed {
		pr.mu.Unlock()
		return
	}
	if !pr.hibernating {
		pr.mu.Unlock()
		go d.pump()
		return
	}
	closeNow := p.serve(d, hup)
	pr.mu.Unlock()
	if closeNow {
		pr.close()
	}
}

// serve moves what a hibernating socket holds to the other side, on the
// waiter's goroutine, without blocking; the pair's mutex is held. hup says
// the event reported the peer's end (FIN, reset or error). It reports
// whether the pair must be closed.
func (p *parker) serve(d *direction, hup bool) (closeNow bool) {
	o := d.other()
	for {
		n, err := ignoringEINTR(func() (int, error) { return unix.Read(int(d.fd), p.buf) })
		switch {
		case err == unix.EAGAIN: // a stale wake-up
			d.state.Store(stateParked)
			return false
		case err != nil:
			d.state.Store(stateDone)
			return true
		case n == 0: // EOF: half-close toward the other side
			d.state.Store(stateDone)
			if o.state.Load() == stateDone || unix.Shutdown(int(o.fd), unix.SHUT_WR) != nil {
				return true
			}
			return false
		}
		w := 0
		for w < n {
			m, err := ignoringEINTR(func() (int, error) { return unix.Write(int(o.fd), p.buf[w:n]) })
			if err != nil {
				if err != unix.EAGAIN {
					d.state.Store(stateDone)
					return true
				}
				break
			}
			w += m
		}
		d.bytes.Add(int64(w))
		switch {
		case w < n || n == len(p.buf):
			// The destination is full, or a bulk transfer: wake the
			// pair up; a pump writes what is left and copies on.
			rest := append([]byte(nil), p.buf[w:n]...)
			if !d.pair.wakeLocked() {
				d.state.Store(stateDone)
				return true
			}
			go d.pumpAfter(rest)
			return false
		case !hup:
			// Drained: the socket is edge-triggered, so bytes or a FIN
			// that come later bring a new event, which this goroutine
			// handles after this one; no re-arming call.
			d.state.Store(stateParked)
			return false
		}
		// The peer's end came with these bytes and no later event will
		// announce it: read on to the EOF.
	}
}

func ignoringEINTR(f func() (int, error)) (int, error) {
	for {
		n, err := f()
		if err != unix.EINTR {
			return n, err
		}
	}
}
