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

// Closing the tls.Conn while an uncork is stuck on a peer that does not
// read must not hang: the close_notify is queued, the socket closed, and the
// stuck write fails.
func TestCorkCloseDuringStuckUncork(t *testing.T) {
	a, b := net.Pipe() // unbuffered: writes block until read
	cc := &CorkConn{Conn: a}
	cc.Cork()
	cc.Write([]byte("held"))
	done := make(chan error, 1)
	go func() { done <- cc.Uncork() }()
	time.Sleep(20 * time.Millisecond) // let the uncork block in its write
	if n, err := cc.Write([]byte("queued")); err != nil || n != 6 {
		t.Fatalf("write during a flush = %d, %v; want it queued", n, err)
	}
	cc.Close()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("uncork on a closed pipe succeeded")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("uncork still blocked after the conn was closed")
	}
	if _, err := cc.Write([]byte("after")); err == nil {
		t.Fatal("write after a failed flush succeeded")
	}
	b.Close()
	if _, err := cc.Write(nil); !errors.Is(err, io.ErrClosedPipe) {
		t.Fatalf("sticky error = %v, want the flush's", err)
	}
}
