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
)

// The parked relay. Most mail connections sit idle for minutes (IMAP IDLE,
// EAS Ping), so after login a session costs no goroutine while nothing
// moves: both sockets wait in a private epoll set (edge-triggered).
//
// The epoll set is itself a descriptor in Go's netpoller, so the one
// goroutine that waits on it sleeps like any network read, without a thread
// blocked in epoll_wait. When a socket of a plain TCP pair becomes readable,
// that goroutine moves the bytes itself: one non-blocking read, one write,
// re-arm. Mail sessions mostly exchange short commands and replies, and this
// costs four system calls and no goroutine switch. Only when a read fills
// the buffer (a bulk transfer), when the destination cannot take the bytes
// at once, or when TLS is involved (a tls.Conn may hold decrypted bytes epoll
// cannot see, and its writes can block) does a pump goroutine take the
// direction over: it copies (splice(2) between two plain sockets) until it
// has been quiet for pumpIdle, then re-arms the socket and exits. Read
// timeouts are not sticky on net.TCPConn nor on tls.Conn, so a quiet pump
// can stop between two reads without losing or corrupting anything; epoll is
// level triggered, so data that arrived meanwhile wakes the socket at once.
//
// Closing a socket removes it from the epoll set (Go never duplicates the
// descriptor), so sessions are never deleted from it explicitly; every
// epoll_ctl on a socket runs while its descriptor is held (RawConn.Control),
// so it can never reach a later socket that reused the number. A wake-up for
// a number whose session just ended and whose number was reused finds a
// socket with nothing to read, or a pump that times out: both re-arm.

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

	// Owned by the waiter goroutine: the events buffer, the inline copy
	// buffer and the raw read/write callbacks (allocated once).
	events  []unix.EpollEvent
	buf     []byte
	n, w    int
	rerr    error
	werr    error
	readFn  func(uintptr) bool
	writeFn func(uintptr) bool
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
	p.readFn = func(fd uintptr) bool {
		p.n, p.rerr = ignoringEINTR(func() (int, error) { return unix.Read(int(fd), p.buf) })
		return true
	}
	p.writeFn = func(fd uintptr) bool {
		for p.w < p.n {
			m, err := ignoringEINTR(func() (int, error) { return unix.Write(int(fd), p.buf[p.w:p.n]) })
			if err != nil {
				p.werr = err
				break
			}
			p.w += m
		}
		return true
	}
	go p.wait(rc)
	return p, nil
}

func ignoringEINTR(f func() (int, error)) (int, error) {
	for {
		n, err := f()
		if err != unix.EINTR {
			return n, err
		}
	}
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
	d.pair.last.Store(now())
	if d.inline {
		p.serve(d, hup)
	} else {
		go d.pump()
	}
}

// serve moves what a readable plain socket holds to the other side, on the
// waiter's goroutine, without blocking: see the package comment on parking.
// hup says the event reported the peer's end (FIN, reset or error).
func (p *parker) serve(d *direction, hup bool) {
	for {
		p.n, p.w, p.rerr, p.werr = 0, 0, nil, nil
		if d.srcRaw.Read(p.readFn) != nil { // closed under us
			d.finish(false)
			return
		}
		switch {
		case p.rerr == unix.EAGAIN: // a stale wake-up
			d.state.Store(stateParked)
			return
		case p.rerr != nil:
			d.finish(false)
			return
		case p.n == 0: // EOF
			d.finish(true)
			return
		}
		err := d.other().srcRaw.Write(p.writeFn)
		d.bytes.Add(int64(p.w))
		if err != nil || (p.werr != nil && p.werr != unix.EAGAIN) {
			d.finish(false)
			return
		}
		switch {
		case p.w < p.n: // the destination is full: a pump writes the rest
			rest := append([]byte(nil), p.buf[p.w:p.n]...)
			go d.pumpAfter(rest)
			return
		case p.n == len(p.buf): // a bulk transfer
			go d.pump()
			return
		case !hup:
			// Drained: the socket is edge-triggered, so bytes or a FIN
			// that come later bring a new event, which this goroutine
			// handles after this one; no re-arming call.
			d.state.Store(stateParked)
			return
		}
		// The peer's end came with these bytes and no later event will
		// announce it: read on to the EOF.
	}
}

const (
	stateParked int32 = iota
	stateRunning
	stateDone
)

// direction is one way of a pair: bytes read from src are written to dst.
type direction struct {
	pair   *pair
	src    net.Conn // as read from (TLS or TCP)
	dst    net.Conn
	srcRaw syscall.RawConn // the socket under src
	fd     int32           // the socket under src
	splice bool            // both sides plain TCP
	inline bool            // served on the waiter's goroutine (both plain TCP)
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
	p      *parker
	up     direction // client -> backend
	down   direction // backend -> client
	done   atomic.Int32
	closed atomic.Bool
	owner  pairOwner
	idle   time.Duration // close after this long without traffic (0: never)
	last   atomic.Int64  // when a direction last woke (UnixNano)
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

// park starts relaying client<->backend. onClose runs once, when both
// directions have ended or the pair was closed. It returns false when the
// sockets cannot be parked (the caller then relays with goroutines).
func (p *parker) park(client, backend net.Conn, owner pairOwner, idle time.Duration) (*pair, bool) {
	client, backend = unwrap(client), unwrap(backend)
	craw, cfd, ok1 := rawOf(client)
	braw, bfd, ok2 := rawOf(backend)
	if !ok1 || !ok2 {
		return nil, false
	}
	_, ctcp := client.(*net.TCPConn)
	_, btcp := backend.(*net.TCPConn)
	plain := ctcp && btcp
	pr := &pair{p: p, owner: owner, idle: idle}
	pr.last.Store(time.Now().UnixNano())
	pr.up = direction{pair: pr, src: client, dst: backend, srcRaw: craw, fd: cfd, splice: plain, inline: plain}
	pr.down = direction{pair: pr, src: backend, dst: client, srcRaw: braw, fd: bfd, splice: plain, inline: plain}
	p.mu.Lock()
	if p.byFD == nil { // stopped
		p.mu.Unlock()
		return nil, false
	}
	p.byFD[cfd], p.byFD[bfd] = &pr.up, &pr.down
	p.mu.Unlock()
	if idle > 0 {
		p.watchIdle(idle)
	}
	// A plain socket hides nothing from epoll: its direction starts parked
	// (the registration reports data that is already there at once). A TLS
	// connection may hold decrypted bytes or whole records epoll cannot
	// see, so its direction starts with a pump that drains them first.
	for _, d := range []*direction{&pr.up, &pr.down} {
		if _, isTLS := d.src.(*tls.Conn); isTLS {
			d.state.Store(stateRunning)
		} else {
			d.state.Store(stateParked)
		}
	}
	for _, d := range []*direction{&pr.up, &pr.down} {
		ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLET, Fd: d.fd}
		if err := unix.EpollCtl(p.epfd, unix.EPOLL_CTL_ADD, int(d.fd), &ev); err != nil {
			p.mu.Lock()
			delete(p.byFD, cfd)
			delete(p.byFD, bfd)
			p.mu.Unlock()
			unix.EpollCtl(p.epfd, unix.EPOLL_CTL_DEL, int(cfd), nil)
			return nil, false
		}
	}
	for _, d := range []*direction{&pr.up, &pr.down} {
		if d.state.Load() == stateRunning {
			go d.pump()
		}
	}
	return pr, true
}

// park re-arms the direction's socket in the epoll set. The descriptor is
// held meanwhile, so a concurrent close cannot hand its number to another
// socket before the call.
func (d *direction) park() {
	d.state.Store(stateParked)
	var err error
	cerr := d.srcRaw.Control(func(fd uintptr) {
		ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLET, Fd: d.fd}
		err = unix.EpollCtl(d.pair.p.epfd, unix.EPOLL_CTL_MOD, int(fd), &ev)
	})
	if cerr != nil || err != nil {
		// The pair is being closed under us.
		if d.state.CompareAndSwap(stateParked, stateRunning) {
			d.finish(false)
		}
	}
}

// pumpAfter writes what the waiter could not, then pumps on.
func (d *direction) pumpAfter(rest []byte) {
	n, err := d.dst.Write(rest)
	d.bytes.Add(int64(n))
	if err != nil {
		d.finish(false)
		return
	}
	d.pump()
}

// pump copies while data flows, then parks the direction again.
func (d *direction) pump() {
	for {
		d.src.SetReadDeadline(time.Now().Add(pumpIdle))
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
		if n > 0 {
			d.pair.last.Store(now())
			continue // still flowing
		}
		// Quiet. Nothing complete can be left in a tls.Conn here: Read
		// returns buffered plaintext and decrypts complete buffered records
		// without touching the socket, so it only timed out waiting for the
		// socket, which epoll watches. The deadline is cleared: the
		// waiter's raw reads would refuse to run past it.
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
	for {
		n, err := d.src.Read(buf)
		if n > 0 {
			if _, werr := d.dst.Write(buf[:n]); werr != nil {
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

// finish ends a direction: a clean EOF half-closes dst; anything else, or
// both directions done, closes the pair.
func (d *direction) finish(clean bool) {
	d.state.Store(stateDone)
	// When the other way has already ended, closing sends the FIN: no
	// separate shutdown(2).
	if clean && d.pair.done.Load() == 0 {
		if cw, ok := d.dst.(interface{ CloseWrite() error }); ok && cw.CloseWrite() == nil {
			if d.pair.done.Add(1) < 2 {
				return
			}
		}
	}
	d.pair.close()
}

// close tears the pair down once: both sockets closed (which takes them out
// of the epoll set), then onClose.
func (pr *pair) close() {
	if !pr.closed.CompareAndSwap(false, true) {
		return
	}
	p := pr.p
	p.mu.Lock()
	if p.byFD[pr.up.fd] == &pr.up {
		delete(p.byFD, pr.up.fd)
	}
	if p.byFD[pr.down.fd] == &pr.down {
		delete(p.byFD, pr.down.fd)
	}
	p.mu.Unlock()
	pr.up.src.Close()
	pr.down.src.Close()
	if pr.owner != nil {
		pr.owner.relayClosed(pr.up.bytes.Load(), pr.down.bytes.Load())
	}
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

// sweep closes parked sessions that have been quiet for their idle limit.
// A session with a pump running is not quiet.
func (p *parker) sweep() {
	var idle []*pair
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
			if d != &pr.up || pr.idle <= 0 || t-pr.last.Load() < int64(pr.idle) {
				continue
			}
			if pr.up.state.Load() == stateRunning || pr.down.state.Load() == stateRunning {
				continue
			}
			idle = append(idle, pr)
		}
		p.mu.Unlock()
		for i, pr := range idle {
			pr.owner.relayIdle()
			idle[i] = nil
		}
		idle = idle[:0]
	}
}
