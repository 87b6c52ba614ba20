package imap_test

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mailgate/mailgate/protocols"
	"github.com/mailgate/mailgate/protocols/imap"
	"github.com/mailgate/mailgate/protocols/protocoltest"
)

// start runs one PreAuth of the shared handler h against backendAddr.
func start(t *testing.T, h *imap.Handler, backendAddr string, mods ...func(*protocols.Session)) *harness {
	t.Helper()
	hs := protocoltest.Start(t, backendAddr, h,
		protocoltest.Timeouts{IO: 5 * time.Second, Result: 10 * time.Second, Cleanup: 5 * time.Second}, mods...)
	return &harness{Harness: hs, c: &tclient{hs.Client}}
}

func greetedEarly(s *protocols.Session) { s.Greeted = true }

// login runs one session of h to backendAddr up to a successful LOGIN and
// returns the greeting its client read.
func login(t *testing.T, h *imap.Handler, backendAddr string, mods ...func(*protocols.Session)) string {
	t.Helper()
	s := start(t, h, backendAddr, mods...)
	greeting := s.c.expect("* OK")
	s.c.send(`a LOGIN alice "pass word"`)
	s.c.expect("a OK")
	s.WantResult(nil)
	return greeting
}

// from sets the session's client address.
func from(addr string) func(*protocols.Session) {
	return func(s *protocols.Session) { s.ClientAddr = netip.MustParseAddrPort(addr) }
}

// learned returns a handler that has seen the same OK greeting twice.
func learned(t *testing.T) *imap.Handler {
	t.Helper()
	h := new(imap.Handler)
	b := newFakeBackend(t)
	login(t, h, b.addr)
	login(t, h, b.addr)
	if h.EarlyGreeting(&protocols.Session{}) == nil {
		t.Fatal("no early greeting after the same OK greeting twice")
	}
	return h
}

func TestEarlyGreetingLearnedFromBackend(t *testing.T) {
	h := new(imap.Handler)
	if g := h.EarlyGreeting(&protocols.Session{}); g != nil {
		t.Fatalf("early greeting before any backend greeting: %q", g)
	}
	b := newFakeBackend(t)
	greeting := login(t, h, b.addr)
	if g := h.EarlyGreeting(&protocols.Session{}); g != nil {
		t.Fatalf("early greeting after one backend greeting (not yet confirmed): %q", g)
	}
	if again := login(t, h, b.addr); again != greeting {
		t.Fatalf("second greeting %q, want %q", again, greeting)
	}

	// The same policy as the first client's link (plain, STARTTLS offered):
	// what the first client read.
	offer := &protocols.Session{ClientStartTLS: &tls.Config{}}
	if g := string(h.EarlyGreeting(offer)); g != greeting+"\r\n" {
		t.Fatalf("early greeting %q, want the backend's as the first client read it, %q", g, greeting)
	}
	// Each link gets its own policy: no STARTTLS over TLS; LOGINDISABLED
	// and no cleartext mechanisms where TLS is required for login.
	if g := string(h.EarlyGreeting(&protocols.Session{ClientTLS: true})); strings.Contains(g, "STARTTLS") || !strings.Contains(g, "AUTH=PLAIN") {
		t.Fatalf("early greeting over TLS: %q", g)
	}
	g := string(h.EarlyGreeting(&protocols.Session{RequireTLSForLogin: true, ClientStartTLS: &tls.Config{}}))
	if !strings.Contains(g, "LOGINDISABLED") || !strings.Contains(g, "STARTTLS") || strings.Contains(g, "AUTH=PLAIN") {
		t.Fatalf("early greeting on a plain link that requires TLS: %q", g)
	}

	// A session whose client has been greeted already: PreAuth reads the
	// backend's greeting and does not pass it on.
	second := start(t, h, b.addr, greetedEarly)
	second.c.send(`b LOGIN alice "pass word"`)
	if line := second.c.line(); !strings.HasPrefix(line, "b OK") {
		t.Fatalf("greeted session: first line %q, want the LOGIN result (no second greeting)", line)
	}
	second.WantResult(nil)
}

// The backend's greeting after STARTTLS toward it is the one to predict:
// its capabilities describe the secured link.
func TestEarlyGreetingAfterBackendSTARTTLS(t *testing.T) {
	srvTLS, cliTLS := protocoltest.TLSConfigs(t)
	b := newFakeBackend(t, func(b *fakeBackend) {
		b.tls = srvTLS
		b.greeting = "* OK [CAPABILITY IMAP4rev1 STARTTLS LOGINDISABLED] fake ready"
	})
	h := new(imap.Handler)
	backendTLS := func(s *protocols.Session) { s.BackendStartTLS = cliTLS }
	greeting := login(t, h, b.addr, backendTLS)
	login(t, h, b.addr, backendTLS)
	if strings.Contains(greeting, "LOGINDISABLED") || !strings.Contains(greeting, "AUTH=PLAIN") {
		t.Fatalf("greeting after backend STARTTLS: %q", greeting)
	}
	if g := string(h.EarlyGreeting(&protocols.Session{ClientStartTLS: &tls.Config{}})); g != greeting+"\r\n" {
		t.Fatalf("early greeting %q, want %q", g, greeting)
	}
}

// A backend that greets PREAUTH cannot be predicted: a client already
// greeted as not authenticated is told BYE, and no early greeting is
// offered afterwards.
func TestEarlyGreetingThenPREAUTH(t *testing.T) {
	h := learned(t)
	if h.EarlyGreeting(&protocols.Session{}) == nil {
		t.Fatal("no early greeting after an OK greeting")
	}

	pre := newFakeBackend(t, func(b *fakeBackend) { b.greeting = "* PREAUTH [CAPABILITY IMAP4rev1] welcome back" })
	second := start(t, h, pre.addr, greetedEarly)
	rest, err := second.Closed()
	if !errors.Is(err, protocols.ErrBackend) {
		t.Fatalf("PreAuth = %v, want a backend error", err)
	}
	if !strings.HasPrefix(rest, "* BYE [UNAVAILABLE]") {
		t.Fatalf("client read %q, want a BYE", rest)
	}
	if g := h.EarlyGreeting(&protocols.Session{}); g != nil {
		t.Fatalf("early greeting offered after a PREAUTH greeting: %q", g)
	}
}

// A BYE greeting after an early greeting reaches the client as it is.
func TestEarlyGreetingThenBYE(t *testing.T) {
	h := learned(t)
	bye := newFakeBackend(t, func(b *fakeBackend) { b.greeting = "* BYE [UNAVAILABLE] too busy" })
	second := start(t, h, bye.addr, greetedEarly)
	rest, err := second.Closed()
	if !errors.Is(err, protocols.ErrBackend) || rest != "* BYE [UNAVAILABLE] too busy\r\n" {
		t.Fatalf("PreAuth = %v, client read %q; want a backend error and the backend's BYE", err, rest)
	}
}

// A greeting that changes from one connection to the next (a session
// number here) is never sent early: another client would read a greeting
// that was not its own.
func TestEarlyGreetingNotForChangingGreetings(t *testing.T) {
	var n atomic.Int64
	b := newFakeBackend(t, func(b *fakeBackend) {
		b.greetingFunc = func() string { return fmt.Sprintf("* OK [CAPABILITY %s] session %d ready", fakeCaps, n.Add(1)) }
	})
	h := new(imap.Handler)
	for range 4 {
		login(t, h, b.addr)
		if g := h.EarlyGreeting(&protocols.Session{}); g != nil {
			t.Fatalf("early greeting from a greeting that changes per connection: %q", g)
		}
	}
}

// When the backend learns the client's address before it greets (a PROXY
// header), its greeting may name the client: it is confirmed only by an
// identical greeting to another client address.
func TestEarlyGreetingWhenBackendKnowsClient(t *testing.T) {
	knows := func(s *protocols.Session) { s.BackendKnowsClient = true }
	b := newFakeBackend(t)
	h := new(imap.Handler)
	login(t, h, b.addr, knows, from("192.0.2.1:1000"))
	login(t, h, b.addr, knows, from("192.0.2.1:1001"))
	if g := h.EarlyGreeting(&protocols.Session{}); g != nil {
		t.Fatalf("early greeting confirmed by the same client address twice: %q", g)
	}
	login(t, h, b.addr, knows, from("198.51.100.7:1000"))
	if h.EarlyGreeting(&protocols.Session{}) == nil {
		t.Fatal("no early greeting after the same greeting to two client addresses")
	}
}
