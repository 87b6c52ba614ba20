package protocols_test

import (
	"bytes"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	. "github.com/mailgate/mailgate/protocols"
	"github.com/mailgate/mailgate/protocols/protocoltest"
)

// countingConn counts the writes that reach the socket; with slow set, a
// large write waits a little before it reaches the socket, as one would on
// a busy machine, so that another writer has time to slip in.
type countingConn struct {
	net.Conn
	mu     sync.Mutex
	writes int
	slow   bool
}

func (c *countingConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	c.writes++
	slow := c.slow
	c.mu.Unlock()
	if slow && len(p) > 1<<10 {
		time.Sleep(100 * time.Microsecond)
	}
	return c.Conn.Write(p)
}

func (c *countingConn) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.writes
}

// tlsPair returns a server tls.Conn made by TLSServer over a counted TCP
// socket, and the client's end, handshaken.
func tlsPair(t *testing.T) (*tls.Conn, *countingConn, *tls.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	type accepted struct {
		c   net.Conn
		err error
	}
	ch := make(chan accepted, 1)
	go func() {
		c, err := ln.Accept()
		ch <- accepted{c, err}
	}()
	cc, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	a := <-ch
	if a.err != nil {
		t.Fatal(a.err)
	}
	counted := &countingConn{Conn: a.c}
	scfg, ccfg := protocoltest.TLSConfigs(t)
	srv := TLSServer(counted, scfg)
	cli := tls.Client(cc, ccfg)
	errc := make(chan error, 1)
	go func() { errc <- srv.Handshake() }()
	if err := cli.Handshake(); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close(); cli.Close() })
	return srv, counted, cli
}

func TestCorkGathersRecords(t *testing.T) {
	srv, counted, cli := tlsPair(t)
	cork := CorkOf(srv)
	if cork == nil {
		t.Fatal("CorkOf found no CorkConn under a TLSServer conn")
	}
	payload := bytes.Repeat([]byte("0123456789abcdef"), 4096) // 64 KiB: four records
	got := make(chan []byte, 1)
	go func() {
		b, _ := io.ReadAll(io.LimitReader(cli, int64(2*len(payload))))
		got <- b
	}()

	before := counted.count()
	if _, err := srv.Write(payload); err != nil {
		t.Fatal(err)
	}
	uncorked := counted.count() - before
	if uncorked < 4 {
		t.Fatalf("uncorked 64 KiB write reached the socket in %d writes, want one per record (4+)", uncorked)
	}

	before = counted.count()
	cork.Cork()
	if _, err := srv.Write(payload); err != nil {
		t.Fatal(err)
	}
	if n := counted.count() - before; n != 0 {
		t.Fatalf("%d writes reached the socket while corked", n)
	}
	if err := cork.Uncork(); err != nil {
		t.Fatal(err)
	}
	if n := counted.count() - before; n != 1 {
		t.Fatalf("corked 64 KiB write reached the socket in %d writes, want 1", n)
	}
	select {
	case b := <-got:
		if !bytes.Equal(b, append(append([]byte{}, payload...), payload...)) {
			t.Fatalf("client read %d bytes, not the two payloads", len(b))
		}
	case <-time.After(10 * time.Second):
		t.Fatal("client did not receive the payloads")
	}
}

// A record sealed by another writer while the pump is corked goes out
// behind the held ones, in order: the client decrypts every record.
func TestCorkKeepsRecordOrder(t *testing.T) {
	srv, counted, cli := tlsPair(t)
	counted.slow = true
	cork := CorkOf(srv)
	const rounds = 200
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { // the pump: corked 20 KiB writes of 'a'
		defer wg.Done()
		chunk := bytes.Repeat([]byte{'a'}, 20<<10)
		for range rounds {
			cork.Cork()
			srv.Write(chunk)
			cork.Uncork()
		}
	}()
	go func() { // another writer: small uncorked writes of 'b'
		defer wg.Done()
		for range rounds {
			srv.Write([]byte("b"))
		}
	}()
	want := rounds*20<<10 + rounds
	b, err := io.ReadAll(io.LimitReader(cli, int64(want)))
	wg.Wait()
	if err != nil {
		t.Fatalf("client read failed after %d bytes (records out of order?): %v", len(b), err)
	}
	if len(b) != want || bytes.Count(b, []byte{'b'}) != rounds {
		t.Fatalf("client read %d bytes with %d b's, want %d and %d", len(b), bytes.Count(b, []byte{'b'}), want, rounds)
	}
}

// Closing while an uncork is stuck on a peer that does not read must not
// hang: Close waits for the flush at most closeFlushTimeout (its write
// deadline), then closes; the stuck write fails, and so does a write that
// was waiting for it.
func TestCorkCloseDuringStuckUncork(t *testing.T) {
	a, b := net.Pipe() // unbuffered: writes block until read
	defer b.Close()
	cc := &CorkConn{Conn: a}
	cc.Cork()
	cc.Write([]byte("held"))
	uncorked := make(chan error, 1)
	go func() { uncorked <- cc.Uncork() }()
	time.Sleep(20 * time.Millisecond) // let the uncork block in its write
	wrote := make(chan error, 1)
	go func() { _, err := cc.Write([]byte("waiting")); wrote <- err }()
	closed := make(chan struct{})
	go func() { cc.Close(); close(closed) }()
	for what, ch := range map[string]chan error{"uncork": uncorked, "waiting write": wrote} {
		select {
		case err := <-ch:
			if err == nil {
				t.Fatalf("%s to a peer that never reads succeeded", what)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("%s still blocked 5 s after Close", what)
		}
	}
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("Close still blocked 5 s after the flush failed")
	}
	if _, err := cc.Write([]byte("after")); err == nil {
		t.Fatal("write after a failed flush and a close succeeded")
	}
}

// A write during an uncork waits for it, as it would wait for the socket:
// a peer that stops reading cannot make the proxy queue without limit (a
// TLS peer can make it write, e.g. with KeyUpdate requests, while it does
// not read).
func TestCorkWriteWaitsForFlush(t *testing.T) {
	a, b := net.Pipe()
	defer b.Close()
	cc := &CorkConn{Conn: a}
	cc.Cork()
	cc.Write([]byte("relayed "))
	go cc.Uncork() // blocks until b reads
	time.Sleep(20 * time.Millisecond)
	wrote := make(chan error, 1)
	go func() { _, err := cc.Write([]byte("reply")); wrote <- err }()
	select {
	case err := <-wrote:
		t.Fatalf("write during a stuck flush returned (%v) instead of waiting", err)
	case <-time.After(100 * time.Millisecond):
	}
	got := make(chan string, 1)
	go func() {
		buf := make([]byte, len("relayed reply"))
		_, err := io.ReadFull(b, buf)
		if err != nil {
			got <- err.Error()
			return
		}
		got <- string(buf)
	}()
	if err := <-wrote; err != nil {
		t.Fatalf("write after the flush ended: %v", err)
	}
	if s := <-got; s != "relayed reply" {
		t.Fatalf("peer read %q, want the flushed bytes then the reply, in order", s)
	}
}

// What is held or waiting when the conn closes still leaves before the FIN:
// a goodbye written behind a relay write, or a write still held by a cork.
func TestCorkCloseSendsQueued(t *testing.T) {
	for _, tc := range []struct {
		name string
		run  func(cc *CorkConn) // writes, then closes
	}{
		{"held by a cork", func(cc *CorkConn) {
			cc.Cork()
			cc.Write([]byte("relayed "))
			cc.Write([]byte("goodbye"))
			cc.Close()
		}},
		{"written during a flush", func(cc *CorkConn) {
			cc.Cork()
			cc.Write([]byte("relayed "))
			go cc.Uncork() // blocks until the peer reads
			time.Sleep(20 * time.Millisecond)
			cc.Write([]byte("goodbye")) // waits for the uncork
			cc.Close()
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, b := net.Pipe()
			defer b.Close()
			cc := &CorkConn{Conn: a}
			got := make(chan string, 1)
			go func() {
				all, _ := io.ReadAll(b)
				got <- string(all)
			}()
			done := make(chan struct{})
			go func() { tc.run(cc); close(done) }()
			select {
			case s := <-got:
				if s != "relayed goodbye" {
					t.Fatalf("peer read %q before EOF, want %q", s, "relayed goodbye")
				}
			case <-time.After(5 * time.Second):
				t.Fatal("peer saw no EOF")
			}
			<-done
			if _, err := cc.Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
				t.Fatalf("write after Close: %v, want net.ErrClosed", err)
			}
		})
	}
}

// tls.Conn.Close during a flush toward a slow reader: the close_notify
// alert waits for the flush instead of cutting it (crypto/tls moves the
// write deadline to now once the alert is out), so the peer reads every
// byte, the goodbye and a clean close_notify.
func TestCorkTLSCloseDuringFlush(t *testing.T) {
	srv, _, cli := tlsPair(t)
	tcpOf(t, srv).SetWriteBuffer(4096)
	tcpOf(t, cli).SetReadBuffer(4096)
	cork := CorkOf(srv)
	payload := bytes.Repeat([]byte("p"), 64<<10)
	go func() {
		cork.Cork()
		srv.Write(payload)
		cork.Uncork() // blocks: the client does not read yet
	}()
	time.Sleep(100 * time.Millisecond)
	closed := make(chan struct{})
	go func() {
		srv.SetWriteDeadline(time.Now().Add(2 * time.Second))
		srv.Write([]byte("BYE"))
		srv.Close()
		close(closed)
	}()
	time.Sleep(200 * time.Millisecond)
	cli.SetReadDeadline(time.Now().Add(5 * time.Second))
	all, err := io.ReadAll(cli)
	if err != nil || !bytes.Equal(all, append(payload, "BYE"...)) {
		t.Fatalf("client read %d of %d bytes (goodbye at the end: %v), err %v", len(all), len(payload)+3, bytes.HasSuffix(all, []byte("BYE")), err)
	}
	<-closed
}

// tcpOf returns the TCP socket under a tls.Conn made by tlsPair.
func tcpOf(t *testing.T, c *tls.Conn) *net.TCPConn {
	t.Helper()
	nc := c.NetConn()
	for {
		switch x := nc.(type) {
		case *net.TCPConn:
			return x
		case *CorkConn:
			nc = x.Conn
		case *countingConn:
			nc = x.Conn
		default:
			t.Fatalf("no TCP socket under %T", nc)
		}
	}
}
