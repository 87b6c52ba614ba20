package proxy

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mailgate/mailgate/protocols"
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

// pumpIdle is how long a pump waits for more data before it parks.
const pumpIdle = 250 * time.Millisecond

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

const (
	stateParked int32 = iota
	stateRunning
	stateDone
	stateMoving // being moved between hibernation and net.Conns
)

// direction is one way of a pair: bytes read from its socket go to the
// other direction's socket.
type direction struct {
	pair *pair
	// While awake: the conns (TLS or TCP) and the socket under src.
	src, dst net.Conn
	srcRaw   syscall.RawConn
	// The descriptor in the epoll set: the one under src while awake, the
	// duplicated one while hibernating.
	fd     int32
	splice bool                // both sides plain TCP
	cork   *protocols.CorkConn // under dst when dst is a tls.Conn
	state  atomic.Int32
	bytes  atomic.Int64
}

// pairOwner is told when its relayed pair went idle and when it closed.
type pairOwner interface {
	relayIdle()                 // nothing moved for the idle limit
	relayClosed(up, down int64) // once, after both sockets are closed
}

// pair is a relayed session: client<->backend.
type pair struct {
	p     *parker
	up    direction // client -> backend
	down  direction // backend -> client
	plain bool      // both sides plain TCP: may hibernate
	owner pairOwner
	idle  time.Duration // close after this long without traffic (0: never)
	last  atomic.Int64  // when a direction last woke (UnixNano)

	mu          sync.Mutex
	hibernating bool // the directions' fds are duplicated descriptors, no conns
	closing     bool // a goodbye is being written: stay as it is
	closed      bool
}

// rawOf returns the socket under c and its descriptor.
func rawOf(c net.Conn) (syscall.RawConn, int32, bool) {
	tc := tcpOf(c)
	if tc == nil {
		return nil, 0, false
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return nil, 0, false
	}
	var fd int32
	if rc.Control(func(f uintptr) { fd = int32(f) }) != nil {
		return nil, 0, false
	}
	return rc, fd, true
}

// park starts relaying client<->backend. relayClosed runs once, when both
// directions have ended or the pair was closed. It returns false when the
// sockets cannot be parked (the caller then relays with goroutines).
func (p *parker) park(client, backend net.Conn, owner pairOwner, idle time.Duration) (*pair, bool) {
	client, backend = unwrap(client), unwrap(backend)
	_, ctcp := client.(*net.TCPConn)
	_, btcp := backend.(*net.TCPConn)
	pr := &pair{p: p, owner: owner, idle: idle, plain: ctcp && btcp}
	pr.last.Store(now())
	pr.up.pair, pr.down.pair = pr, pr
	if !pr.attach(client, backend) {
		return nil, false
	}
	if pr.plain {
		pr.mu.Lock()
		ok := pr.hibernateLocked(false)
		if !ok {
			// No descriptor or epoll entry to spare (EMFILE, ENOSPC): the
			// caller relays with goroutines. Marked closed (nothing is) so
			// that a waiter that took an event for a duplicate lets go.
			pr.closed = true
		}
		pr.mu.Unlock()
		if !ok {
			return nil, false
		}
		if idle > 0 {
			p.watchIdle(idle)
		}
		return pr, true
	}
	// A plain socket hides nothing from epoll: its direction starts parked
	// (the registration reports data that is already there at once). A TLS
	// connection (or any other wrapper) may hold bytes epoll cannot see, so
	// its direction starts with a drain.
	var drain []*direction // decided here: once registered, the waiter may start pumps too
	for _, d := range []*direction{&pr.up, &pr.down} {
		if _, isTCP := d.src.(*net.TCPConn); isTCP {
			d.state.Store(stateParked)
		} else {
			d.state.Store(stateRunning)
			drain = append(drain, d)
		}
	}
	// Registered under pr.mu: a waiter that takes an event meanwhile waits,
	// and lets go if the registration failed (the caller then relays with
	// goroutines, and nothing else may read the sockets).
	pr.mu.Lock()
	for _, d := range []*direction{&pr.up, &pr.down} {
		if !p.register(d, unix.EPOLL_CTL_ADD, d.fd) {
			pr.closed = true
			for _, x := range []*direction{&pr.up, &pr.down} {
				p.forget(x, x.fd)
				x.srcRaw.Control(func(fd uintptr) { unix.EpollCtl(p.epfd, unix.EPOLL_CTL_DEL, int(fd), nil) })
			}
			pr.mu.Unlock()
			return nil, false
		}
	}
	pr.mu.Unlock()
	if idle > 0 {
		p.watchIdle(idle)
	}
	for _, d := range drain {
		go d.drain()
	}
	return pr, true
}

// attach points the directions at client and backend conns.
func (pr *pair) attach(client, backend net.Conn) bool {
	craw, cfd, ok1 := rawOf(client)
	braw, bfd, ok2 := rawOf(backend)
	if !ok1 || !ok2 {
		return false
	}
	pr.up.src, pr.up.dst, pr.up.srcRaw, pr.up.fd, pr.up.splice = client, backend, craw, cfd, pr.plain
	pr.down.src, pr.down.dst, pr.down.srcRaw, pr.down.fd, pr.down.splice = backend, client, braw, bfd, pr.plain
	pr.up.cork, pr.down.cork = protocols.CorkOf(backend), protocols.CorkOf(client)
	return true
}

// register adds (or modifies) fd in the epoll set for d.
func (p *parker) register(d *direction, op int, fd int32) bool {
	p.mu.Lock()
	if p.byFD == nil {
		p.mu.Unlock()
		return false
	}
	p.byFD[fd] = d
	p.mu.Unlock()
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLET, Fd: fd}
	return unix.EpollCtl(p.epfd, op, int(fd), &ev) == nil
}

// forget drops fd from the lookup table if it still names d.
func (p *parker) forget(d *direction, fd int32) {
	p.mu.Lock()
	if p.byFD[fd] == d {
		delete(p.byFD, fd)
	}
	p.mu.Unlock()
}

// unregister forgets fd and takes it out of the epoll set, for a descriptor
// that goes while a duplicate keeps its socket (closing it would not).
func (p *parker) unregister(d *direction, fd int32) {
	p.forget(d, fd)
	unix.EpollCtl(p.epfd, unix.EPOLL_CTL_DEL, int(fd), nil)
}

// hibernateLocked moves an awake plain pair to duplicated descriptors and
// closes its conns. No pump may be running (both directions are parked or
// moving). registered says the conns' descriptors are in the epoll set.
// pr.mu is held. On failure nothing has changed but the directions' states,
// which are parked, or running if the waiter took an event meanwhile (it
// then finds the pair awake and pumps).
func (pr *pair) hibernateLocked(registered bool) bool {
	p := pr.p
	dirs := []*direction{&pr.up, &pr.down}
	var dup [2]int32
	for i, d := range dirs {
		var nfd int
		err := error(net.ErrClosed)
		d.srcRaw.Control(func(fd uintptr) { nfd, err = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0) })
		if err != nil {
			if i == 1 {
				unix.Close(int(dup[0]))
			}
			return false
		}
		dup[i] = int32(nfd)
	}
	// Parked before registering: the registration reports bytes already
	// there, and the waiter must be able to take them (it then waits for
	// pr.mu, and finds the pair hibernating).
	pr.up.state.Store(stateParked)
	pr.down.state.Store(stateParked)
	for i, d := range dirs {
		if !p.register(d, unix.EPOLL_CTL_ADD, dup[i]) {
			for j := 0; j <= i; j++ {
				p.unregister(dirs[j], dup[j])
			}
			unix.Close(int(dup[0]))
			unix.Close(int(dup[1]))
			return false
		}
	}
	for i, d := range dirs {
		if registered {
			p.unregister(d, d.fd)
		}
		d.src.Close()
		d.src, d.dst, d.srcRaw, d.fd = nil, nil, nil, dup[i]
	}
	pr.hibernating = true
	return true
}

// connOf returns a net.Conn for a duplicate of fd (fd stays open).
func connOf(fd int32) (net.Conn, error) {
	tmp, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(tmp), "")
	c, err := net.FileConn(f) // its own duplicate
	f.Close()
	return c, err
}

// wakeLocked turns a hibernating pair's descriptors back into net.Conns
// (for a bulk transfer or a full destination). pr.mu is held. The
// direction being served stays running; the other one keeps its state
// (parked: its new registration reports bytes already there). On failure
// the caller closes the pair.
func (pr *pair) wakeLocked() bool {
	p := pr.p
	dirs := []*direction{&pr.up, &pr.down}
	var conns [2]net.Conn
	for i, d := range dirs {
		c, err := connOf(d.fd)
		if err != nil {
			if i == 1 {
				conns[0].Close()
			}
			return false
		}
		conns[i] = c
	}
	for _, d := range dirs {
		p.unregister(d, d.fd)
		unix.Close(int(d.fd))
		d.fd = -1
	}
	pr.hibernating = false
	if !pr.attach(conns[0], conns[1]) {
		conns[0].Close()
		conns[1].Close()
		return false
	}
	for _, d := range dirs {
		if !p.register(d, unix.EPOLL_CTL_ADD, d.fd) {
			return false
		}
	}
	return true
}

// park re-arms an awake direction's socket in the epoll set, or lets a
// plain pair hibernate when the other way is parked as well.
func (d *direction) park() {
	pr := d.pair
	o := d.other()
	if pr.plain && o.state.CompareAndSwap(stateParked, stateMoving) {
		d.state.Store(stateMoving)
		pr.mu.Lock()
		ok := !pr.closed && !pr.closing && !pr.hibernating && pr.hibernateLocked(true)
		pr.mu.Unlock()
		if ok {
			return
		}
		// Still awake. A direction still parked may have missed an edge
		// while it was moving: re-arm it. One the waiter took is pumped.
		for _, x := range []*direction{o, d} {
			if x.state.CompareAndSwap(stateMoving, stateParked) || x.state.Load() == stateParked {
				x.rearm()
			}
		}
		return
	}
	d.state.Store(stateParked)
	d.rearm()
}

// rearm asks epoll to report the socket again if it is readable now. It
// runs under pr.mu: the other direction may be moving the pair into or out
// of hibernation, which replaces the descriptors.
func (d *direction) rearm() {
	pr := d.pair
	pr.mu.Lock()
	if pr.closed || pr.hibernating || d.srcRaw == nil {
		pr.mu.Unlock()
		return
	}
	var err error
	cerr := d.srcRaw.Control(func(fd uintptr) {
		ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLET, Fd: d.fd}
		err = unix.EpollCtl(pr.p.epfd, unix.EPOLL_CTL_MOD, int(fd), &ev)
	})
	pr.mu.Unlock()
	if cerr != nil || err != nil {
		// The pair is being closed under us.
		if d.state.CompareAndSwap(stateParked, stateRunning) {
			d.finish(false)
		}
	}
}

// pumpAfter writes what the waiter could not, then pumps on.
func (d *direction) pumpAfter(rest []byte) {
	if len(rest) > 0 {
		n, err := d.write(rest)
		d.bytes.Add(int64(n))
		if err != nil {
			d.finish(false)
			return
		}
	}
	d.pump()
}

// write writes b to dst, the records of a TLS destination in one system call.
func (d *direction) write(b []byte) (int, error) {
	return corked{d.dst, d.cork}.Write(b)
}

// drain forwards what a tls.Conn already holds (it never waits for the
// socket: the deadline is already past), then parks the direction.
func (d *direction) drain() { d.pumpFor(0) }

// pump copies while data flows, then parks the direction again.
func (d *direction) pump() { d.pumpFor(pumpIdle) }

// pumpFor copies until nothing came for quiet, then parks the direction.
func (d *direction) pumpFor(quiet time.Duration) {
	for {
		d.src.SetReadDeadline(time.Now().Add(quiet))
		n, err := d.copy()
		d.bytes.Add(n)
		if err == nil { // EOF: half-close toward dst
			d.finish(true)
			return
		}
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			d.finish(false)
			return
		}
		if n > 0 && quiet > 0 {
			d.pair.last.Store(now())
			continue // still flowing
		}
		// Quiet. Nothing complete can be left in a tls.Conn here: Read
		// returns buffered plaintext and decrypts complete buffered records
		// without touching the socket, so it only timed out waiting for the
		// socket, which epoll watches. The deadline is cleared so that it
		// cannot fire on a later read.
		d.src.SetReadDeadline(time.Time{})
		d.park()
		return
	}
}

// copy moves bytes from src to dst until EOF (nil error) or an error. It
// reads into a pooled buffer and switches to splice(2) when a read fills the
// buffer between two plain sockets: a bulk transfer.
func (d *direction) copy() (int64, error) {
	pool := &relayBufs
	if !d.splice {
		pool = &tlsBufs
	}
	bp := pool.Get().(*[]byte)
	defer pool.Put(bp)
	buf := *bp
	var total int64
	_, fromTLS := d.src.(*tls.Conn)
	for {
		n, err := d.src.Read(buf)
		if fromTLS && err == nil && n > 0 && n < len(buf) {
			n, err = d.gather(buf, n)
		}
		if n > 0 {
			if _, werr := d.write(buf[:n]); werr != nil {
				return total, werr
			}
			total += int64(n)
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				return total, nil
			}
			return total, err
		}
		if d.splice && n == len(buf) {
			m, err := io.Copy(d.dst.(*net.TCPConn), d.src.(*net.TCPConn)) // splice(2)
			return total + m, err
		}
	}
}

// gather appends to buf[:n] the records a tls.Conn has already received
// (a Read returns one record at most), without waiting for the socket: one
// write of up to 64 KiB to the plain side instead of one per record. The
// read deadline is restored to pumpIdle from now.
func (d *direction) gather(buf []byte, n int) (int, error) {
	d.src.SetReadDeadline(time.Unix(1, 0))
	for n < len(buf) {
		m, err := d.src.Read(buf[n:])
		n += m
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				break
			}
			return n, err
		}
	}
	d.src.SetReadDeadline(time.Now().Add(pumpIdle))
	return n, nil
}

// finish ends an awake direction: a clean EOF half-closes dst; anything
// else, or both directions done, closes the pair.
func (d *direction) finish(clean bool) {
	d.state.Store(stateDone)
	// When the other way has already ended, closing sends the FIN: no
	// separate shutdown(2).
	if clean && d.other().state.Load() != stateDone {
		if cw, ok := d.dst.(interface{ CloseWrite() error }); ok && cw.CloseWrite() == nil {
			return
		}
	}
	d.pair.close()
}

// close tears the pair down once: both sockets closed (which takes them out
// of the epoll set), then relayClosed. Conns are closed after the lock is
// released: a tls.Conn's close may wait for its peer to read an alert.
func (pr *pair) close() {
	pr.mu.Lock()
	first, conns := pr.closeLocked()
	pr.mu.Unlock()
	if !first {
		return
	}
	for _, c := range conns {
		if c != nil {
			c.Close()
		}
	}
	if pr.owner != nil {
		pr.owner.relayClosed(pr.up.bytes.Load(), pr.down.bytes.Load())
	}
}

// closeLocked marks the pair closed once and closes hibernating
// descriptors; it returns whether it did, and the conns left to close.
func (pr *pair) closeLocked() (bool, [2]net.Conn) {
	var conns [2]net.Conn
	if pr.closed {
		return false, conns
	}
	pr.closed = true
	for i, d := range []*direction{&pr.up, &pr.down} {
		pr.p.forget(d, d.fd)
		if pr.hibernating {
			unix.Close(int(d.fd))
		} else {
			conns[i] = d.src
		}
	}
	return true, conns
}

// clientWriter writes to the client side of the pair, whatever its state:
// a goodbye on drop. It does not block: what does not fit is dropped.
type clientWriter struct{ pr *pair }

func (w clientWriter) Write(b []byte) (int, error) {
	pr := w.pr
	pr.mu.Lock()
	if pr.closed {
		pr.mu.Unlock()
		return 0, net.ErrClosed
	}
	pr.closing = true // no more hibernation: this conn must stay
	if pr.hibernating {
		n, err := ignoringEINTR(func() (int, error) { return unix.Write(int(pr.up.fd), b) })
		pr.mu.Unlock()
		if err == nil && n < len(b) {
			err = io.ErrShortWrite
		}
		return max(n, 0), err
	}
	c := pr.up.src
	pr.mu.Unlock()
	if c == nil {
		return 0, net.ErrClosed
	}
	c.SetWriteDeadline(time.Now().Add(2 * time.Second))
	return c.Write(b)
}

// other is the opposite direction of the same pair.
func (d *direction) other() *direction {
	if d == &d.pair.up {
		return &d.pair.down
	}
	return &d.pair.up
}

func now() int64 { return time.Now().UnixNano() }

// sweepInterval is how often sessions with the given idle limit are
// checked: a sixteenth of it (a one-hour limit is enforced within 61
// minutes), at least 50 ms and at most a minute.
func sweepInterval(limit time.Duration) time.Duration {
	return min(max(limit/16, 50*time.Millisecond), time.Minute)
}

// watchIdle makes sure the sweep runs often enough for limit.
func (p *parker) watchIdle(limit time.Duration) {
	every := int64(sweepInterval(limit))
	for {
		cur := p.sweepEvery.Load()
		if cur != 0 && cur <= every {
			break
		}
		if p.sweepEvery.CompareAndSwap(cur, every) {
			break
		}
	}
	p.sweepOnce.Do(func() { go p.sweep() })
}

// sweep closes sessions that carried nothing for their idle limit. Pumps
// refresh last with every chunk they move, so a pump blocked on a peer that
// stopped reading does not keep its session alive.
func (p *parker) sweep() {
	var idle []*pair
	seen := map[*pair]bool{}
	for {
		time.Sleep(time.Duration(p.sweepEvery.Load()))
		t := now()
		p.mu.Lock()
		if p.byFD == nil { // stopped
			p.mu.Unlock()
			return
		}
		for _, d := range p.byFD {
			pr := d.pair
			// A pair moving in or out of hibernation is listed under
			// both its old and new descriptors: once is enough.
			if pr.idle <= 0 || t-pr.last.Load() < int64(pr.idle) || seen[pr] {
				continue
			}
			seen[pr] = true
			idle = append(idle, pr)
		}
		p.mu.Unlock()
		for i, pr := range idle {
			pr.owner.relayIdle()
			idle[i] = nil
		}
		idle = idle[:0]
		clear(seen)
	}
}
