package proxy

import (
	"bufio"
	"context"
	"io"
	"net"
	"testing"
	"time"

	"github.com/mailgate/mailgate/accounting"
	"github.com/mailgate/mailgate/protocols"
)

// earlyHandler is lineHandler with a greeting known in advance.
type earlyHandler struct{ lineHandler }

func (earlyHandler) EarlyGreeting(*protocols.Session) []byte { return []byte("HELLO\r\n") }

func (h earlyHandler) PreAuth(ctx context.Context, s *protocols.Session) error {
	if !s.Greeted {
		return h.lineHandler.PreAuth(ctx, s)
	}
	// The client has its greeting: read the backend's and keep it.
	if _, err := s.Backend.ReadLine(512); err != nil {
		return err
	}
	return lineDialogue(s)
}

// The client is greeted before the backend is even connected: the backend
// here accepts only after the client has read its greeting, which would
// never come if the proxy waited for the backend's.
func TestEarlyGreetingBeforeBackend(t *testing.T) {
	bln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer bln.Close()
	r := newRig(t, &backend{ln: bln}, func(o *ListenerOptions) { o.Handler = earlyHandler{} })
	c, br := r.dial("")
	expectLine(t, br, "HELLO") // before any backend accept

	bc, err := bln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer bc.Close()
	bc.SetDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(bc, "HELLO\r\n") // the backend's own greeting: not passed on
	bbr := bufio.NewReader(bc)
	io.WriteString(c, "LOGIN alice\r\n")
	if line, err := bbr.ReadString('\n'); err != nil || line != "LOGIN alice\r\n" {
		t.Fatalf("backend read %q, %v", line, err)
	}
	io.WriteString(bc, "OK\r\n")
	expectLine(t, br, "OK") // not a second HELLO
	waitFor(t, "alice counted", func() bool {
		return len(r.reg.Connections(accounting.Filter{User: "alice"})) == 1
	})
	io.WriteString(c, "PING\r\n")
	if line, err := bbr.ReadString('\n'); err != nil || line != "PING\r\n" {
		t.Fatalf("relayed: backend read %q, %v", line, err)
	}
}

// A backend that cannot be reached after an early greeting: the client
// reads the greeting, then the refusal, then EOF.
func TestEarlyGreetingBackendDown(t *testing.T) {
	bln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := bln.Addr().String()
	bln.Close() // nothing listens there now
	r := newRig(t, &backend{ln: bln}, func(o *ListenerOptions) {
		o.Handler = earlyHandler{}
		o.Backend.Address = addr
	})
	c, br := r.dial("")
	expectLine(t, br, "HELLO")
	expectLine(t, br, "BYE refused "+protocols.RefuseUnavailable)
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if rest, err := io.ReadAll(br); err != nil || len(rest) != 0 {
		t.Fatalf("after the refusal: %q, %v", rest, err)
	}
}

// A session that fails after an early greeting, with the client's LOGIN
// unread, ends with the goodbye and a FIN, not a reset: the client reads
// everything and a clean EOF.
func TestEarlyGreetingFailureClosesCleanly(t *testing.T) {
	bln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer bln.Close()
	go func() {
		for {
			c, err := bln.Accept()
			if err != nil {
				return
			}
			go func() { // slow, then not a greeting the handler takes
				time.Sleep(100 * time.Millisecond)
				c.Close()
			}()
		}
	}()
	r := newRig(t, &backend{ln: bln}, func(o *ListenerOptions) { o.Handler = earlyHandler{} })
	for i := range 5 {
		c, br := r.dial("")
		expectLine(t, br, "HELLO")
		io.WriteString(c, "LOGIN alice\r\n") // unread when the session fails
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		rest, err := io.ReadAll(br)
		if err != nil {
			t.Fatalf("session %d: after the greeting the client read %q, then %v (want a clean EOF)", i, rest, err)
		}
	}
}
