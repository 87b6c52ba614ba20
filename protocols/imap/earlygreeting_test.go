package imap_test

import (
	"crypto/tls"
	"errors"
	"strings"
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

// learned returns a handler that has seen one OK greeting and login.
func learned(t *testing.T) *imap.Handler {
	t.Helper()
	h := new(imap.Handler)
	b := newFakeBackend(t)
	first := start(t, h, b.addr)
	first.c.expect("* OK")
	first.c.send(`a LOGIN alice "pass word"`)
	first.c.expect("a OK")
	first.WantResult(nil)
	return h
}

func TestEarlyGreetingLearnedFromBackend(t *testing.T) {
	h := new(imap.Handler)
	if g := h.EarlyGreeting(&protocols.Session{}); g != nil {
		t.Fatalf("early greeting before any backend greeting: %q", g)
	}
	b := newFakeBackend(t)
	first := start(t, h, b.addr)
	greeting := first.c.expect("* OK")
	first.c.send(`a LOGIN alice "pass word"`)
	first.c.expect("a OK")
	first.WantResult(nil)

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
	first := start(t, h, b.addr, func(s *protocols.Session) { s.BackendStartTLS = cliTLS })
	greeting := first.c.expect("* OK")
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
