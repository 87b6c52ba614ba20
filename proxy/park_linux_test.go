//go:build linux

package proxy

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mailgate/mailgate/protocols"
	"golang.org/x/sys/unix"
)

// TestIdleSessionsParkWithoutGoroutines: once relayed sessions go quiet they
// cost no goroutine, and they still wake up for traffic in both directions.
func TestIdleSessionsParkWithoutGoroutines(t *testing.T) {
	be := newBackend(t, false)
	r := newRig(t, be, nil)
	if r.srv.parker == nil {
		t.Skip("no epoll on this system")
	}
	const n = 50
	var clients []*bufio.Reader
	var conns []net.Conn
	for i := 0; i < n; i++ {
		c, br := r.login("u@example.com", 30*time.Second)
		clients, conns = append(clients, br), append(conns, c)
	}
	base := runtime.NumGoroutine()
	// Two pumps per session at most until they go quiet.
	time.Sleep(3 * pumpIdle)
	parked := runtime.NumGoroutine()
	if parked > base {
		t.Fatalf("goroutines grew while idle: %d -> %d", base, parked)
	}
	// The backend's serve goroutines (one per session) are the test's own;
	// the proxy side must hold none: compare with a count taken after all
	// sessions end.
	for i, c := range conns {
		io.WriteString(c, "PING\r\n")
		expectLine(t, clients[i], "ECHO PING")
	}
	for _, c := range conns {
		c.Close()
	}
	waitFor(t, "sessions to end", func() bool { return r.reg.Count("imap") == 0 })
	waitFor(t, "backend goroutines to end", func() bool { return runtime.NumGoroutine() <= parked-n })
	t.Logf("goroutines: %d with %d parked sessions, %d after they ended", parked, n, runtime.NumGoroutine())
	if proxySide := parked - runtime.NumGoroutine() - n; proxySide > 2 {
		t.Fatalf("%d proxy goroutines held by %d idle sessions", proxySide, n)
	}
}

// TestDataWithFIN: a client's last bytes and its FIN arriving in one
// segment (TCP_CORK holds the bytes until shutdown sends both) must both
// cross the parked relay: the edge-triggered socket announces them once.
func TestDataWithFIN(t *testing.T) {
	be := newBackend(t, false)
	r := newRig(t, be, nil)
	for i := 0; i < 20; i++ {
		c, br := r.login("u@example.com", 10*time.Second)
		time.Sleep(5 * time.Millisecond) // let the session park
		rc, err := c.(*net.TCPConn).SyscallConn()
		if err != nil {
			t.Fatal(err)
		}
		rc.Control(func(fd uintptr) { unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_CORK, 1) })
		io.WriteString(c, "LAST\r\n")
		c.(*net.TCPConn).CloseWrite()
		expectLine(t, br, "ECHO LAST")
		expectLine(t, br, "BACKEND-SAW-EOF")
		if _, err := br.ReadByte(); err != io.EOF {
			t.Fatalf("session %d: after backend EOF: %v, want EOF", i, err)
		}
		c.Close()
	}
	waitFor(t, "sessions to end", func() bool { return r.reg.Count("imap") == 0 })
}

// hibernating counts the parked pairs whose sockets have left Go's net
// package, and all parked pairs.
func hibernating(p *parker) (hib, all int) {
	var pairs []*pair
	p.mu.Lock()
	for _, d := range p.byFD {
		if d == &d.pair.up {
			pairs = append(pairs, d.pair)
		}
	}
	p.mu.Unlock()
	for _, pr := range pairs { // pr.mu after p.mu is released: the production order is pr.mu, p.mu
		all++
		pr.mu.Lock()
		if pr.hibernating {
			hib++
		}
		pr.mu.Unlock()
	}
	return hib, all
}

// TestHibernation: a plain session hibernates at login, wakes up for a
// bulk transfer (pumps, splice), hibernates again once quiet, and still
// relays small messages both ways afterwards.
func TestHibernation(t *testing.T) {
	be := newBackend(t, false)
	r := newRig(t, be, nil)
	if r.srv.parker == nil {
		t.Skip("no epoll on this system")
	}
	c, br := r.login("u@example.com", 30*time.Second)
	waitFor(t, "hibernation at login", func() bool { h, a := hibernating(r.srv.parker); return a == 1 && h == 1 })
	line := strings.Repeat("y", 4095) + "\n"
	go func() {
		for i := 0; i < 1024; i++ { // 4 MiB: reads fill the buffer
			if _, err := io.WriteString(c, line); err != nil {
				return
			}
		}
	}()
	awake := false
	for i := 0; i < 1024; i++ {
		got, err := br.ReadString('\n')
		if err != nil || got != "ECHO "+line {
			t.Fatalf("line %d: %.20q, %v", i, got, err)
		}
		if h, _ := hibernating(r.srv.parker); h == 0 {
			awake = true
		}
	}
	if !awake {
		t.Error("the pair never woke up for the bulk transfer")
	}
	waitFor(t, "hibernation after the transfer", func() bool { h, a := hibernating(r.srv.parker); return a == 1 && h == 1 })
	for i := 0; i < 3; i++ {
		io.WriteString(c, "PING\r\n")
		expectLine(t, br, "ECHO PING")
	}
	if n := r.reg.DropUser("u@example.com", "imap", protocols.ByeDropped); n != 1 {
		t.Fatalf("DropUser = %d", n)
	}
	expectLine(t, br, "BYE dropped")
	if _, err := br.ReadByte(); err == nil {
		t.Fatal("connection still open after drop")
	}
	waitFor(t, "the pair to leave the epoll set", func() bool { _, a := hibernating(r.srv.parker); return a == 0 })
}

// TestRelayNoCrossTalk: many sessions at once, each moving its own bytes in
// small and bulk pieces while others are dropped or close; every session
// reads back exactly what it sent, so no descriptor was ever used for a
// session after its number had been given to another.
func TestRelayNoCrossTalk(t *testing.T) {
	be := newBackend(t, false)
	r := newRig(t, be, nil)
	const sessions = 24
	var wg sync.WaitGroup
	errs := make(chan error, sessions)
	for i := 0; i < sessions; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			user := fmt.Sprintf("u%d@example.com", i)
			c, br := r.dial("")
			defer c.Close()
			c.SetDeadline(time.Now().Add(60 * time.Second))
			if l, err := br.ReadString('\n'); err != nil || l != "HELLO\r\n" {
				errs <- fmt.Errorf("%s: greeting %q %v", user, l, err)
				return
			}
			io.WriteString(c, "LOGIN "+user+"\r\n")
			if l, err := br.ReadString('\n'); err != nil || l != "OK\r\n" {
				errs <- fmt.Errorf("%s: login %q %v", user, l, err)
				return
			}
			for round := 0; round < 6; round++ {
				size := 8 + (i*977+round*331)%(3*relayBufSize) // small and bulk
				line := fmt.Sprintf("%s-%d-", user, round) + strings.Repeat(string(rune('a'+i%26)), size) + "\n"
				if _, err := io.WriteString(c, line); err != nil {
					errs <- fmt.Errorf("%s: write: %v", user, err)
					return
				}
				got, err := br.ReadString('\n')
				if err != nil || got != "ECHO "+line {
					errs <- fmt.Errorf("%s round %d: got %.40q (%d bytes), %v", user, round, got, len(got), err)
					return
				}
				if round == 2 && i%4 == 0 {
					time.Sleep(2 * pumpIdle) // hibernate in between
				}
			}
			if i%3 == 0 {
				r.reg.DropUser(user, "imap", protocols.ByeDropped)
				if l, _ := br.ReadString('\n'); l != "BYE dropped\r\n" {
					errs <- fmt.Errorf("%s: after drop %q", user, l)
				}
			}
		}(i)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	waitFor(t, "sessions to end", func() bool { return r.reg.Count("imap") == 0 })
}
