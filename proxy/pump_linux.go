//go:build linux

package proxy

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// The pumps: moving one direction's bytes while it is awake (splice for
// plain pairs, gathered TLS records otherwise) and parking it again once
// quiet. The overview is in park_linux.go.

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

// other is the opposite direction of the same pair.
func (d *direction) other() *direction {
	if d == &d.pair.up {
		return &d.pair.down
	}
	return &d.pair.up
}
