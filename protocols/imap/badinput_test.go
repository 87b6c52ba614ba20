package imap_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/mailgate/mailgate/protocols"
	"github.com/mailgate/mailgate/protocols/imap"
	"github.com/mailgate/mailgate/protocols/protocoltest"
)

func TestLineTooLong(t *testing.T) {
	h, b := greeted(t)
	c := h.c
	c.send("a NOOP " + strings.Repeat("x", 9000))
	c.expect("a BAD Line too long")
	c.send(strings.Repeat("y", 9000))
	c.expect("* BAD Line too long")
	c.send("b NOOP")
	c.expect("b OK")
	if strings.Contains(b.rec.String(), "xxxx") {
		t.Error("the long line reached the backend")
	}
}

func TestTooManyBadCommands(t *testing.T) {
	h, _ := greeted(t)
	c := h.c
	c.send("a \x01garbage")
	c.expect("a BAD")
	c.send("* NOOP")
	c.expect("* BAD Invalid tag")
	c.send("c XYZZY") // forwarded; the backend's BAD counts too
	c.expect("c BAD")
	c.expect("* BYE Too many invalid commands")
	h.WantClosed(protocols.ErrTooManyBadCommands)
}

func TestOversizeLiteral(t *testing.T) {
	h, b := greeted(t)
	c := h.c
	c.send("a LOGIN alice {100000}")
	// BAD instead of "+": the client sends no data.
	c.expect("a BAD [TOOBIG]")
	c.send("b NOOP")
	c.expect("b OK")
	c.send("c LOGIN alice {100000+}")
	c.expect("c BAD [TOOBIG]")
	c.expect("* BYE")
	h.WantClosed(protocols.ErrClientProtocol)
	if strings.Contains(b.rec.String(), "LOGIN") {
		t.Error("backend saw a refused LOGIN")
	}
}

func TestGarbageAfterTag(t *testing.T) {
	h, _ := greeted(t)
	c := h.c
	for _, cmd := range []string{"a (LOGIN", "b"} {
		c.send(cmd)
		c.expect(strings.Fields(cmd)[0] + " BAD")
	}
	c.send("c LOGIN alice") // one argument
	c.expect("c BAD")
	c.expect("* BYE Too many invalid commands")
}

func TestLoginTimeout(t *testing.T) {
	h, _ := greeted(t, func(s *protocols.Session) { s.Limits.LoginTimeout = 300 * time.Millisecond })
	c := h.c
	start := time.Now()
	c.expect("* BYE Login timeout")
	h.WantResult(protocols.ErrLoginTimeout)
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("timeout took %v", d)
	}
}

// TestLoginTimeoutMidLiteral: a client that stalls inside a literal is cut
// off too.
func TestLoginTimeoutMidLiteral(t *testing.T) {
	h, _ := greeted(t, func(s *protocols.Session) { s.Limits.LoginTimeout = 300 * time.Millisecond })
	c := h.c
	c.write("a LOGIN alice {10+}\r\nabc")
	c.expect("* BYE Login timeout")
	h.WantResult(protocols.ErrLoginTimeout)
}

func TestContextCancel(t *testing.T) {
	h, _ := greeted(t)
	h.Cancel()
	h.WantResult(context.Canceled)
	// Deadlines were cleared: the proxy can still write its goodbye.
	imap.New(imap.Options{}).Goodbye(h.Session.Client.W, protocols.ByeShutdown)
	h.c.expect("* BYE [UNAVAILABLE] Server shutting down")
}

func TestBackendGreetings(t *testing.T) {
	_, cliTLS := protocoltest.TLSConfigs(t)
	tests := []struct {
		name     string
		greeting string
		mod      func(*protocols.Session)
		want     string
		wantErr  error
	}{
		{name: "BYE", greeting: "* BYE [UNAVAILABLE] Overloaded", want: "* BYE [UNAVAILABLE] Overloaded", wantErr: protocols.ErrBackend},
		{name: "PREAUTH", greeting: "* PREAUTH [CAPABILITY IMAP4rev1 STARTTLS UNAUTHENTICATE] Logged in as alice",
			want: "* PREAUTH [CAPABILITY IMAP4rev1] Logged in as alice"},
		{name: "PREAUTH with backend TLS required", greeting: "* PREAUTH Logged in",
			mod: func(s *protocols.Session) { s.BackendStartTLS = cliTLS }, want: "* BYE [UNAVAILABLE]", wantErr: protocols.ErrBackend},
		{name: "tagged", greeting: "a OK hello", want: "* BYE [UNAVAILABLE]", wantErr: protocols.ErrBackend},
		{name: "garbage", greeting: "HTTP/1.1 400 Bad Request", want: "* BYE [UNAVAILABLE]", wantErr: protocols.ErrBackend},
		{name: "no capabilities", greeting: "* OK ready", want: "* OK ready"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := newFakeBackend(t, func(b *fakeBackend) { b.greeting = tt.greeting })
			mods := []func(*protocols.Session){}
			if tt.mod != nil {
				mods = append(mods, tt.mod)
			}
			h := newHarness(t, b.addr, mods...)
			h.c.expect(tt.want)
			if tt.wantErr == nil && tt.name == "no capabilities" {
				h.Running()
				return
			}
			if err := h.Result(); !errors.Is(err, tt.wantErr) && (tt.wantErr != nil || err != nil) {
				t.Fatalf("PreAuth() = %v, want %v", err, tt.wantErr)
			}
			if tt.name == "PREAUTH" {
				// The connection leaves the pre-auth state, user unknown.
				h.WantEvents("ok  PREAUTH")
				return
			}
			h.WantEvents()
		})
	}
}

func TestBackendByeDuringLogin(t *testing.T) {
	b := newFakeBackend(t, func(b *fakeBackend) { b.byeLogin = true })
	h := newHarness(t, b.addr)
	h.c.expect("* OK")
	h.c.send(`a LOGIN alice "pass word"`)
	h.c.expect("* BYE Server going down")
	h.WantClosed(protocols.ErrBackend)
	h.WantEvents("attempt alice LOGIN", "fail alice LOGIN temporary")
}

func TestBackendUnavailableIsTemporary(t *testing.T) {
	h, _ := greeted(t)
	h.c.send("a LOGIN down x")
	h.c.expect("a NO [UNAVAILABLE]")
	h.WantEvents("attempt down LOGIN", "fail down LOGIN temporary")
}

func TestLogout(t *testing.T) {
	h, _ := greeted(t)
	h.c.send("a LOGOUT")
	h.c.expect("* BYE")
	h.c.expect("a OK")
	h.WantResult(protocols.ErrClientQuit)
}

func TestClientDisconnect(t *testing.T) {
	h, _ := greeted(t)
	h.c.write("a NOO")
	h.c.Conn.Close()
	h.WantResult(protocols.ErrClientQuit)
}

func TestRefusedCommands(t *testing.T) {
	b := newFakeBackend(t)
	h := newHarness(t, b.addr, func(s *protocols.Session) { s.ClientStartTLS = nil })
	c := h.c
	if caps := capsOfLine(t, c.expect("* OK [CAPABILITY ")); protocoltest.HasCap(caps, "STARTTLS") {
		t.Errorf("STARTTLS advertised without a TLS config: %q", caps)
	}
	c.send("a STARTTLS")
	c.expect("a BAD STARTTLS not available")
	c.send("b UNAUTHENTICATE")
	c.expect("b BAD")
	if strings.Contains(b.rec.String(), "UNAUTHENTICATE") || strings.Contains(b.rec.String(), "STARTTLS") {
		t.Errorf("backend saw a refused command: %q", b.rec.String())
	}
}

func TestRefuseAndGoodbye(t *testing.T) {
	protocoltest.Farewells{
		Protocol: "imap",
		Refuse: map[string]string{
			protocols.RefuseUnavailable: "* BYE [UNAVAILABLE] Service temporarily unavailable\r\n",
			protocols.RefuseBlocked:     "* BYE Access denied\r\n",
			protocols.RefuseLimit:       "* BYE [UNAVAILABLE] Too many connections, try again later\r\n",
			protocols.RefuseShutdown:    "* BYE [UNAVAILABLE] Server shutting down\r\n",
		},
		Goodbye: map[string]string{
			protocols.ByeDropped:  "* BYE Connection closed by administrator\r\n",
			protocols.ByeShutdown: "* BYE [UNAVAILABLE] Server shutting down\r\n",
			protocols.ByeTimeout:  "* BYE Autologout; idle for too long\r\n",
		},
	}.Check(t, imap.New(imap.Options{}))
}

// TestZeroSession: a Session with zero Limits and no Observer, Gate or Log
// works with defaults (the harness also runs the zero Handler).
func TestZeroSession(t *testing.T) {
	h, _ := greeted(t, protocoltest.ZeroSession)
	h.c.send(`a LOGIN alice "pass word"`)
	h.c.expect("a OK")
	h.WantResult(nil)
}
