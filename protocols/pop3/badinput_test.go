package pop3_test

import (
	"context"
	"crypto/sha1"
	"errors"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/mailgate/mailgate/protocols"
	"github.com/mailgate/mailgate/protocols/pop3"
	"github.com/mailgate/mailgate/protocols/protocoltest"
)

// TestLineTooLong: RFC 2449 §4 caps commands at 255 octets with CRLF. A
// longer line is consumed whole, answered and counted; nothing reaches the
// backend.
func TestLineTooLong(t *testing.T) {
	h, b := greeted(t)
	c := h.c
	c.cmd("USER "+strings.Repeat("a", 248), "+OK") // 253 + CRLF = 255
	c.cmd("USER "+strings.Repeat("a", 249), "-ERR Line too long")
	c.cmd(strings.Repeat("y", 100000), "-ERR Line too long") // past the SASL bound too
	c.cmd("NOOP", "+OK")
	if got := b.rec.String(); got != "" {
		t.Errorf("backend received %q", got)
	}
}

// TestAuthLineLimits: AUTH lines may exceed 255 octets (RFC 5034 §4 lets
// continuations be long; long initial responses are tolerated), up to a
// base64 message of Limits.MaxLiteral octets.
func TestAuthLineLimits(t *testing.T) {
	h, _ := greeted(t, func(s *protocols.Session) { s.ClientTLS = true; s.Limits.MaxLiteral = 1024 })
	c := h.c
	long := strings.Repeat("x", 600) // a long token: the line is about 850 octets
	c.send("AUTH XOAUTH2 " + b64("user=alice\x01auth=Bearer "+long+"\x01\x01"))
	c.challenge() // the backend's error challenge: the line was accepted
	c.cmd("", "-ERR [AUTH]")
	c.send("AUTH PLAIN")
	c.challenge()
	c.cmd(b64(strings.Repeat("z", 1100)), "-ERR SASL message too long")
	c.cmd("AUTH PLAIN "+b64(strings.Repeat("z", 1100)), "-ERR Line too long")
	c.cmd("NOOP", "+OK")
}

func TestTooManyBadCommands(t *testing.T) {
	h, b := greeted(t)
	c := h.c
	c.cmd("", "-ERR Empty command")
	c.cmd("STAT", "-ERR Not logged in")
	c.cmd("XYZZY", "-ERR Unknown command; too many invalid commands, closing connection")
	h.WantClosed(protocols.ErrTooManyBadCommands)
	if got := b.rec.String(); got != "" {
		t.Errorf("backend received %q", got)
	}
}

// TestNotCountedAsBad: refusals that are not protocol errors leave the
// bad-command count alone.
func TestNotCountedAsBad(t *testing.T) {
	h, _ := greeted(t, func(s *protocols.Session) { s.ClientStartTLS = nil; s.RequireTLSForLogin = true })
	c := h.c
	for i := 0; i < 4; i++ {
		c.cmd("STLS", "-ERR STLS not available")
		c.cmd("PASS x", "-ERR No username given")
		c.cmd("USER alice", "-ERR [AUTH] Plaintext authentication is disabled")
		c.cmd("AUTH GSSAPI", "-ERR Unsupported authentication mechanism")
	}
	h.Running()
}

func TestPreAuthByteBudget(t *testing.T) {
	b := newFakeBackend(t)
	h := newHarnessWith(t, pop3.New(pop3.Options{MaxPreAuthBytes: 64}), b.addr)
	c := h.c
	c.expect("+OK")
	for i := 0; i < 10; i++ {
		c.cmd("NOOP", "+OK") // 60 octets
	}
	c.send("NOOP")
	c.expect("-ERR Too much data before login")
	h.WantClosed(protocols.ErrClientProtocol)
}

func TestLoginTimeout(t *testing.T) {
	h, _ := greeted(t, func(s *protocols.Session) { s.Limits.LoginTimeout = 300 * time.Millisecond })
	c := h.c
	c.expect("-ERR Login timeout")
	h.WantResult(protocols.ErrLoginTimeout)
}

// TestLoginTimeoutMidSASL: a client that stalls inside an exchange is cut
// off too, and the login does not count as a failed password.
func TestLoginTimeoutMidSASL(t *testing.T) {
	h, _ := greeted(t, func(s *protocols.Session) {
		s.ClientTLS = true
		s.Limits.LoginTimeout = 500 * time.Millisecond
	})
	c := h.c
	c.send("AUTH LOGIN " + b64("alice"))
	c.challenge()
	c.write("cGFz") // half a line
	c.expect("-ERR Login timeout")
	h.WantResult(protocols.ErrLoginTimeout)
	h.WantEvents("attempt alice LOGIN", "fail alice LOGIN temporary")
}

func TestContextCancel(t *testing.T) {
	h, _ := greeted(t)
	h.Cancel()
	h.WantResult(context.Canceled)
	// Deadlines were cleared: the proxy can still write its goodbye.
	pop3.New(pop3.Options{}).Goodbye(h.Session.Client.W, protocols.ByeShutdown)
	h.c.expect("-ERR [SYS/TEMP] Server shutting down")
}

func TestBackendGreetings(t *testing.T) {
	tests := []struct {
		name, greeting, want string
		wantErr              error
	}{
		{"negative", "-ERR [SYS/TEMP] Overloaded", "-ERR [SYS/TEMP] Overloaded", protocols.ErrBackend},
		{"continuation", "+ hello", "-ERR [SYS/TEMP] Internal server error", protocols.ErrBackend},
		{"garbage", "HTTP/1.1 400 Bad Request", "-ERR [SYS/TEMP] Internal server error", protocols.ErrBackend},
		{"IMAP", "* OK IMAP4rev1 ready", "-ERR [SYS/TEMP] Internal server error", protocols.ErrBackend},
		{"bare", "+OK", "+OK", nil},
		{"lower case", "+ok hi", "+ok hi", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := newFakeBackend(t, func(b *fakeBackend) { b.greeting = tt.greeting })
			h := newHarness(t, b.addr)
			if l := h.c.line(); !strings.HasPrefix(l, tt.want) {
				t.Fatalf("greeting = %q, want %q", l, tt.want)
			}
			if tt.wantErr == nil {
				h.Running()
				return
			}
			h.WantClosed(tt.wantErr)
			h.WantEvents()
		})
	}
}

func TestQuit(t *testing.T) {
	h, _ := greeted(t)
	h.c.cmd("QUIT", "+OK fake signing off")
	h.WantResult(protocols.ErrClientQuit)
}

func TestClientDisconnect(t *testing.T) {
	h, _ := greeted(t)
	h.c.write("USER al")
	h.c.Conn.Close()
	h.WantResult(protocols.ErrClientQuit)
}

// TestSASLBadInput: cancel, invalid base64 and malformed messages end the
// exchange locally; nothing reaches the backend.
func TestSASLBadInput(t *testing.T) {
	h, b := greeted(t, func(s *protocols.Session) { s.ClientTLS = true; s.Limits.MaxBadCommands = 10 })
	c := h.c
	c.send("AUTH PLAIN")
	c.challenge()
	c.cmd("*", "-ERR Authentication cancelled")
	c.cmd("AUTH PLAIN =AAA", "-ERR Invalid base64 data in initial response")
	c.cmd("AUTH PLAIN "+b64("no-nul-here"), "-ERR Malformed SASL message")
	c.cmd("AUTH CRAM-MD5 "+b64("x"), "-ERR Initial response not allowed for CRAM-MD5")
	c.cmd("AUTH", "+OK")
	c.body()
	c.cmd("AUTH PLAIN a b", "-ERR Invalid AUTH arguments")
	c.send("AUTH LOGIN")
	c.challenge()
	c.cmd("not base64!", "-ERR Invalid base64 data")
	if got := b.rec.String(); got != "AUTH\r\n" {
		t.Errorf("backend received %q, want the mechanism listing only", got)
	}
	// A bad line in the middle of a relayed exchange cancels it at the
	// backend.
	c.send("AUTH LOGIN " + b64("alice"))
	c.challenge()
	c.cmd("%%%%", "-ERR Invalid base64 data")
	if got := b.rec.String(); !strings.HasSuffix(got, "AUTH LOGIN\r\n"+b64("alice")+"\r\n*\r\n") {
		t.Errorf("backend received %q, want the exchange cancelled with *", got)
	}
	// CRAM-MD5 with a malformed response: cancelled at the backend.
	c.send("AUTH CRAM-MD5")
	c.challenge()
	c.cmd(b64("alice nodigest"), "-ERR Malformed SASL message")
	if got := b.rec.String(); !strings.HasSuffix(got, "AUTH CRAM-MD5\r\n*\r\n") {
		t.Errorf("backend received %q", got)
	}
	h.c.cmd("NOOP", "+OK")
}

// TestSASLRoundLimit: a backend that keeps challenging is cut off.
func TestSASLRoundLimit(t *testing.T) {
	b := newFakeBackend(t)
	h := newHarnessWith(t, pop3.New(pop3.Options{MaxSASLRounds: 1}), b.addr, func(s *protocols.Session) { s.ClientTLS = true })
	c := h.c
	c.expect("+OK")
	c.send("AUTH SCRAM-SHA-256 " + b64("n,,n=alice,r=abcdefgh"))
	c.challenge() // server-first: round 1
	c.send(b64("c=biws,r=abcdefghsrvnonce,p=AAAA"))
	// The failure comes as -ERR, not as a challenge: still within the limit.
	c.expect("-ERR [AUTH]")
	c.send("AUTH LOGIN")
	c.challenge()
	c.send(b64("alice"))
	c.challenge() // "Password:", the one relayed challenge
	c.send(b64("pass word"))
	c.expect("+OK Logged in")
	h.WantResult(nil)
	b2 := newFakeBackend(t)
	h2 := newHarnessWith(t, pop3.New(pop3.Options{MaxSASLRounds: 1}), b2.addr, func(s *protocols.Session) { s.ClientTLS = true })
	h2.c.expect("+OK")
	bare := "n=alice,r=abcdefgh"
	h2.c.send("AUTH SCRAM-SHA-1 " + b64("n,,"+bare))
	final, _ := protocoltest.SCRAMClientFinal(sha1.New, "pass word", bare, h2.c.challenge())
	h2.c.send(b64(final)) // the v= challenge is round 2: over the limit
	if rest, err := h2.Closed(); !errors.Is(err, protocols.ErrBackend) || !strings.HasPrefix(rest, "-ERR [SYS/TEMP]") {
		t.Fatalf("PreAuth() = %v, then %q, want ErrBackend", err, rest)
	}
}

func TestRefuseAndGoodbye(t *testing.T) {
	protocoltest.Farewells{
		Protocol: "pop",
		Refuse: map[string]string{
			protocols.RefuseUnavailable: "-ERR [SYS/TEMP] Service temporarily unavailable\r\n",
			protocols.RefuseBlocked:     "-ERR Access denied\r\n",
			protocols.RefuseLimit:       "-ERR [SYS/TEMP] Too many connections, try again later\r\n",
			protocols.RefuseShutdown:    "-ERR [SYS/TEMP] Server shutting down\r\n",
		},
		Goodbye: map[string]string{
			protocols.ByeDropped:  "-ERR Connection closed by administrator\r\n",
			protocols.ByeShutdown: "-ERR [SYS/TEMP] Server shutting down\r\n",
			protocols.ByeTimeout:  "-ERR Autologout; idle for too long\r\n",
		},
	}.Check(t, pop3.New(pop3.Options{}))
}

// TestZeroSession: a Session with zero Limits and no Observer, Gate or Log
// works with defaults (the harness also runs the zero Handler).
func TestZeroSession(t *testing.T) {
	h, _ := greeted(t, protocoltest.ZeroSession)
	h.c.cmd("USER alice", "+OK")
	h.c.cmd("PASS pass word", "+OK")
	h.WantResult(nil)
}

// TestNoGoroutineLeak ends sessions in every way (login, quit, bad
// commands, timeout, cancel, client gone, backend gone) and checks that no
// goroutine outlives them.
func TestNoGoroutineLeak(t *testing.T) {
	b := newFakeBackend(t)
	drop := newFakeBackend(t, func(b *fakeBackend) { b.dropAuth = true })
	runtime.GC()
	base := runtime.NumGoroutine()
	ends := map[string]func(h *harness){
		"login": func(h *harness) {
			h.c.cmd("USER alice", "+OK")
			h.c.cmd("PASS pass word", "+OK")
			h.Result()
		},
		"quit":         func(h *harness) { h.c.cmd("QUIT", "+OK"); h.Result() },
		"bad commands": func(h *harness) { h.c.send("A\r\nB\r\nC"); h.Closed() },
		"timeout":      func(h *harness) { h.c.expect("-ERR Login timeout"); h.Result() },
		"cancel":       func(h *harness) { h.Cancel(); h.Result() },
		"client gone":  func(h *harness) { h.c.Conn.Close(); h.Result() },
		"backend gone": func(h *harness) { h.c.send("AUTH PLAIN " + b64("\x00alice\x00x")); h.Closed() },
	}
	for name, end := range ends {
		t.Run(name, func(t *testing.T) {
			addr := b.addr
			if name == "backend gone" {
				addr = drop.addr
			}
			h := newHarness(t, addr, func(s *protocols.Session) {
				s.ClientTLS = true
				if name == "timeout" {
					s.Limits.LoginTimeout = 200 * time.Millisecond
				}
			})
			h.c.expect("+OK")
			end(h)
		})
	}
	deadline := time.Now().Add(ioTimeout)
	for runtime.NumGoroutine() > base {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<16)
			t.Fatalf("%d goroutines, %d before:\n%s", runtime.NumGoroutine(), base, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond)
	}
}
