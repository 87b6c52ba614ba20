//go:build linux

package proxy

import (
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

// A parked pair's life: parking a relayed session, hibernation (its
// sockets leave Go's net package) and waking up, closing, and the goodbye
// written into a pair in any state. The overview is in park_linux.go.

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
