package proxy

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// The parked relay. Most mail connections sit idle for minutes (IMAP IDLE,
// EAS Ping), so after login a session costs no goroutine while nothing
// moves: both sockets wait in a private epoll set (EPOLLONESHOT), and when
// one becomes readable a short-lived pump goroutine copies from it (splice(2)
// between two plain TCP sockets, a pooled buffer otherwise) until it has been
// quiet for pumpIdle, then re-arms the socket and exits. Read timeouts are
// not sticky on net.TCPConn nor on tls.Conn, so a quiet pump can stop
// between two reads without losing or corrupting anything; epoll is level
// triggered, so data that arrived meanwhile wakes the socket again at once.

// pumpIdle is how long a pump waits for more data before it parks.
const pumpIdle = 250 * time.Millisecond

// relayBufs holds the pumps' copy buffers: they exist only while a pump
// runs, never while a session is parked.
var relayBufs = sync.Pool{New: func() any { b := make([]byte, 16<<10); return &b }} // one TLS record

// parker owns one epoll set and the goroutine that waits on it.
type parker struct {
	epfd int
	wake int // eventfd: written by stop to end the waiter
	mu   sync.Mutex
	byFD map[int32]*direction
	once sync.Once
}

// newParker creates the epoll set and starts its waiter.
func newParker() (*parker, error) {
	fd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, err
	}
	wake, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		unix.Close(fd)
		return nil, err
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: -1}
	if err := unix.EpollCtl(fd, unix.EPOLL_CTL_ADD, wake, &ev); err != nil {
		unix.Close(fd)
		unix.Close(wake)
		return nil, err
	}
	p := &parker{epfd: fd, wake: wake, byFD: map[int32]*direction{}}
	go p.wait()
	return p, nil
}

// stop ends the waiter and closes the epoll set (closing an epoll fd does
// not wake epoll_wait, the eventfd does). Pairs still parked are not woken
// again: call it once every session has ended.
func (p *parker) stop() {
	p.once.Do(func() { unix.Write(p.wake, []byte{1, 0, 0, 0, 0, 0, 0, 0}) })
}

func (p *parker) wait() {
	events := make([]unix.EpollEvent, 128)
	for {
		n, err := unix.EpollWait(p.epfd, events, -1)
		if err != nil {
			if errors.Is(err, unix.EINTR) {
				continue
			}
			return
		}
		for i := 0; i < n; i++ {
			if events[i].Fd == -1 { // stop
				unix.Close(p.epfd)
				unix.Close(p.wake)
				return
			}
			p.mu.Lock()
			d := p.byFD[events[i].Fd]
			p.mu.Unlock()
			if d != nil && d.state.CompareAndSwap(stateParked, stateRunning) {
				go d.pump()
			}
		}
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
	fd     int32 // the socket under src
	splice bool  // both sides plain TCP
	state  atomic.Int32
	bytes  atomic.Int64
}

// pair is a relayed session: client<->backend.
type pair struct {
	p       *parker
	up      direction // client -> backend
	down    direction // backend -> client
	done    atomic.Int32
	once    sync.Once
	onClose func(up, down int64)
}

// fdOf returns the descriptor of the socket under c.
func fdOf(c net.Conn) (int32, bool) {
	tc := tcpOf(c)
	if tc == nil {
		return 0, false
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return 0, false
	}
	var fd int32
	if rc.Control(func(f uintptr) { fd = int32(f) }) != nil {
		return 0, false
	}
	return fd, true
}

// park starts relaying client<->backend. onClose runs once, when both
// directions have ended or the pair was closed. It returns false when the
// sockets cannot be parked (the caller then relays with goroutines).
func (p *parker) park(client, backend net.Conn, onClose func(up, down int64)) (*pair, bool) {
	client, backend = unwrap(client), unwrap(backend)
	cfd, ok1 := fdOf(client)
	bfd, ok2 := fdOf(backend)
	if !ok1 || !ok2 {
		return nil, false
	}
	_, ctcp := client.(*net.TCPConn)
	_, btcp := backend.(*net.TCPConn)
	pr := &pair{p: p, onClose: onClose}
	pr.up = direction{pair: pr, src: client, dst: backend, fd: cfd, splice: ctcp && btcp}
	pr.down = direction{pair: pr, src: backend, dst: client, fd: bfd, splice: ctcp && btcp}
	p.mu.Lock()
	p.byFD[cfd], p.byFD[bfd] = &pr.up, &pr.down
	p.mu.Unlock()
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
		ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLONESHOT, Fd: d.fd}
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
			continue // still flowing
		}
		// Quiet. Nothing complete can be left in a tls.Conn here: Read
		// returns buffered plaintext and decrypts complete buffered records
		// without touching the socket, so it only timed out waiting for the
		// socket, which epoll watches.
		d.state.Store(stateParked)
		ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLONESHOT, Fd: d.fd}
		if unix.EpollCtl(d.pair.p.epfd, unix.EPOLL_CTL_MOD, int(d.fd), &ev) != nil {
			// The pair is being closed under us.
			if d.state.CompareAndSwap(stateParked, stateRunning) {
				d.finish(false)
			}
		}
		return
	}
}

// copy moves bytes from src to dst until EOF (nil error) or an error. Mail
// sessions mostly exchange small messages, for which one read and one write
// cost fewer system calls than splice (two splices through a pipe per
// chunk), so it reads into a pooled buffer and switches to splice(2) only
// when a read fills the buffer: a bulk transfer between two plain sockets.
func (d *direction) copy() (int64, error) {
	bp := relayBufs.Get().(*[]byte)
	defer relayBufs.Put(bp)
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
	if clean {
		if cw, ok := d.dst.(interface{ CloseWrite() error }); ok && cw.CloseWrite() == nil {
			if d.pair.done.Add(1) < 2 {
				return
			}
		}
	}
	d.pair.close()
}

// close tears the pair down once: out of the epoll set, both sockets closed,
// then onClose.
func (pr *pair) close() {
	pr.once.Do(func() {
		p := pr.p
		p.mu.Lock()
		delete(p.byFD, pr.up.fd)
		delete(p.byFD, pr.down.fd)
		p.mu.Unlock()
		unix.EpollCtl(p.epfd, unix.EPOLL_CTL_DEL, int(pr.up.fd), nil)
		unix.EpollCtl(p.epfd, unix.EPOLL_CTL_DEL, int(pr.down.fd), nil)
		pr.up.src.Close()
		pr.down.src.Close()
		if pr.onClose != nil {
			pr.onClose(pr.up.bytes.Load(), pr.down.bytes.Load())
		}
	})
}
