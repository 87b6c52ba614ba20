package xmpp_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/mailgate/mailgate/protocols"
	"github.com/mailgate/mailgate/protocols/xmpp"
)

const (
	success     = "<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>"
	notAuth     = "<failure xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><not-authorized/></failure>"
	emptyChal   = "<challenge xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>=</challenge>"
	aborted     = "<failure xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><aborted/></failure>"
	badMech     = "<failure xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><invalid-mechanism/></failure>"
	badEncoding = "<failure xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><incorrect-encoding/></failure>"
	malformed   = "<failure xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><malformed-request/></failure>"
)

// greeted starts a harness on a TLS client link against a fake backend and
// reads the features.
func greeted(t *testing.T, mods ...func(*fakeBackend)) (*harness, *fakeBackend) {
	t.Helper()
	b := newFakeBackend(t, mods...)
	h := newHarness(t, b.addr, xmpp.Options{}, withTLS)
	h.c.features(clientHeader)
	return h, b
}

// loggedIn finishes a login after <success/>: the restart, PreAuth's nil.
func loggedIn(t *testing.T, h *harness) {
	t.Helper()
	h.c.write(clientHeader)
	if err := h.Result(); err != nil {
		t.Fatalf("PreAuth() = %v, want nil", err)
	}
}

func TestPlain(t *testing.T) {
	ir := b64("\x00alice\x00pass word")
	for _, withIR := range []bool{true, false} {
		t.Run(map[bool]string{true: "with IR", false: "without IR"}[withIR], func(t *testing.T) {
			h, b := greeted(t)
			if withIR {
				h.c.write(auth("PLAIN", ir))
			} else {
				h.c.write(auth("PLAIN", ""))
				h.c.expect(emptyChal)
				h.c.write(response(ir))
			}
			h.c.expect(success)
			loggedIn(t, h)
			h.WantEvents("attempt alice@example.com PLAIN", "ok alice@example.com PLAIN")
			// The backend always gets the initial response, in canonical form.
			if want := "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>" + ir + "</auth>"; !strings.Contains(b.rec.String(), want) {
				t.Errorf("backend received %q, want %q", b.rec.String(), want)
			}
		})
	}
}

func TestXOAuth2(t *testing.T) {
	h, _ := greeted(t)
	h.c.write(auth("X-OAUTH2", b64("\x00alice\x00"+goodToken)))
	h.c.expect(success)
	loggedIn(t, h)
	h.WantEvents("attempt alice@example.com X-OAUTH2", "ok alice@example.com X-OAUTH2")
}

// TestOAuthBearer: a bad token gets the JSON error challenge, the client's
// dummy response goes through, and the failure follows (RFC 7628 §3.2.2);
// then a good token logs in as the a= identity.
func TestOAuthBearer(t *testing.T) {
	h, b := greeted(t)
	h.c.write(auth("OAUTHBEARER", b64("n,a=alice@example.com,\x01auth=Bearer expired\x01\x01")))
	if got := challengeData(t, h.c.until("</challenge>")); !strings.Contains(got, "invalid_token") {
		t.Fatalf("error challenge = %q", got)
	}
	h.c.write(response("AQ=="))
	h.c.expect(notAuth)
	h.c.write(auth("OAUTHBEARER", b64("n,a=alice@example.com,\x01host=example.com\x01auth=Bearer "+goodToken+"\x01\x01")))
	h.c.expect(success)
	loggedIn(t, h)
	h.WantEvents("attempt alice@example.com OAUTHBEARER", "fail alice@example.com OAUTHBEARER",
		"attempt alice@example.com OAUTHBEARER", "ok alice@example.com OAUTHBEARER")
	if !strings.Contains(b.rec.String(), response("AQ==")) {
		t.Errorf("the dummy response did not reach the backend: %q", b.rec.String())
	}
}

// TestFailures: the backend's failures are relayed with their text; a wrong
// password counts, a temporary failure does not; the stream stays open.
func TestFailures(t *testing.T) {
	h, _ := greeted(t)
	h.c.write(auth("PLAIN", b64("\x00alice\x00wrong")))
	h.c.expect("<failure xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><not-authorized/><text xml:lang='en'>Invalid username or password</text></failure>")
	h.c.write(auth("PLAIN", b64("\x00down\x00x")))
	h.c.expect("<failure xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><temporary-auth-failure/><text xml:lang='en'>Storage down</text></failure>")
	h.Running()
	h.c.write(auth("PLAIN", b64("\x00alice\x00pass word")))
	h.c.expect(success)
	loggedIn(t, h)
	h.WantEvents("attempt alice@example.com PLAIN", "fail alice@example.com PLAIN",
		"attempt down@example.com PLAIN", "fail down@example.com PLAIN temporary",
		"attempt alice@example.com PLAIN", "ok alice@example.com PLAIN")
}

// TestSuccessWithData: the additional data with success (SCRAM's v=)
// reaches the client re-encoded but unchanged.
func TestSuccessWithData(t *testing.T) {
	h, _ := greeted(t)
	h.c.write(auth("SCRAM-SHA-256", b64("n,,n=alice,r=cnonce")))
	if got := challengeData(t, h.c.until("</challenge>")); !strings.HasPrefix(got, "r=cnoncesnonce,s=") {
		t.Fatalf("server-first = %q", got)
	}
	h.c.write(response(b64("c=biws,r=cnoncesnonce,p=cHJvb2Y=")))
	if got := elementData(t, h.c.until("</success>"), "success"); got != "v=c2lnbmF0dXJl" {
		t.Fatalf("success data = %q", got)
	}
	loggedIn(t, h)
}

// TestAbort: <abort/> before the backend is involved is answered locally; in
// the relayed phase it goes to the backend, whose <aborted/> is relayed. No
// abort counts as a failed password.
func TestAbort(t *testing.T) {
	h, b := greeted(t)
	h.c.write(auth("PLAIN", ""))
	h.c.expect(emptyChal)
	h.c.write(abort)
	h.c.expect(aborted)
	if strings.Contains(b.rec.String(), "<auth") {
		t.Errorf("backend saw the locally aborted exchange: %q", b.rec.String())
	}
	h.c.write(auth("SCRAM-SHA-1", b64("n,,n=alice,r=cnonce")))
	h.c.until("</challenge>")
	h.c.write(abort)
	h.c.expect(aborted)
	h.Running()
	h.WantEvents("attempt alice@example.com SCRAM-SHA-1")
	if !strings.Contains(b.rec.String(), abort) {
		t.Errorf("the abort did not reach the backend: %q", b.rec.String())
	}
}

// TestAuthRestartsExchange: a new <auth/> in the middle of an exchange
// aborts the backend's half and starts over (RFC 6120 §6.4).
func TestAuthRestartsExchange(t *testing.T) {
	h, b := greeted(t)
	h.c.write(auth("SCRAM-SHA-1", b64("n,,n=alice,r=cnonce")))
	h.c.until("</challenge>")
	h.c.write(auth("PLAIN", b64("\x00alice\x00pass word")))
	h.c.expect(success)
	loggedIn(t, h)
	got := b.rec.String()
	if i, j := strings.Index(got, abort), strings.Index(got, "mechanism='PLAIN'"); i < 0 || j < i {
		t.Errorf("backend received %q, want an abort before the new auth", got)
	}
	h.WantEvents("attempt alice@example.com SCRAM-SHA-1", "attempt alice@example.com PLAIN", "ok alice@example.com PLAIN")
}

// TestRefusedMechanisms: what the client was not offered, and malformed or
// badly encoded messages, are refused by the handler and never forwarded.
func TestRefusedMechanisms(t *testing.T) {
	tests := []struct{ name, send, want string }{
		{"EXTERNAL", auth("EXTERNAL", "="), badMech},
		{"SCRAM-SHA-1-PLUS", auth("SCRAM-SHA-1-PLUS", b64("p=tls-exporter,,n=alice,r=x")), badMech},
		{"DIGEST-MD5", auth("DIGEST-MD5", ""), badMech},
		{"no mechanism", "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>AGEAYg==</auth>", badMech},
		{"lower case", auth("plain", b64("\x00alice\x00pass word")), badMech},
		{"bad base64", auth("PLAIN", "AGFsaWNl=AHg="), badEncoding},
		{"PLAIN without password", auth("PLAIN", b64("\x00alice\x00")), malformed},
		{"PLAIN with one field", auth("PLAIN", b64("alice")), malformed},
		{"SCRAM without n=", auth("SCRAM-SHA-1", b64("n,,r=abc")), malformed},
		{"empty initial response", auth("PLAIN", "="), malformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, b := greeted(t)
			h.c.write(tt.send)
			h.c.expect(tt.want)
			h.Running()
			h.WantEvents()
			if strings.Contains(b.rec.String(), "<auth") {
				t.Errorf("backend saw a refused exchange: %q", b.rec.String())
			}
		})
	}
}

// TestBadResponseInRelayedPhase: a response that is not base64 aborts the
// backend's exchange and the client gets <incorrect-encoding/>.
func TestBadResponseInRelayedPhase(t *testing.T) {
	h, b := greeted(t)
	h.c.write(auth("SCRAM-SHA-1", b64("n,,n=alice,r=cnonce")))
	h.c.until("</challenge>")
	h.c.write(response("not base64!"))
	h.c.expect(badEncoding)
	h.Running()
	if got := b.rec.String(); !strings.Contains(got, abort) || strings.Contains(got, "not base64") {
		t.Errorf("backend received %q", got)
	}
}

func TestTooManyFailures(t *testing.T) {
	h, _ := greeted(t)
	for i := 0; i < 4; i++ {
		h.c.write(auth("PLAIN", b64("\x00alice\x00wrong")))
		h.c.until("</failure>")
	}
	h.c.write(auth("PLAIN", b64("\x00alice\x00wrong")))
	h.c.until("</failure>")
	rest, err := h.closed()
	if !errors.Is(err, protocols.ErrTooManyBadCommands) {
		t.Fatalf("PreAuth() = %v, want ErrTooManyBadCommands", err)
	}
	if want := "<stream:error xmlns:stream='http://etherx.jabber.org/streams'><policy-violation xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>" +
		"<text xmlns='urn:ietf:params:xml:ns:xmpp-streams' xml:lang='en'>Too many failed authentication attempts</text></stream:error></stream:stream>"; rest != want {
		t.Errorf("after the 5th failure: %q, want %q", rest, want)
	}
}

func TestTooManyBadRequests(t *testing.T) {
	h, _ := greeted(t)
	h.c.write(auth("EXTERNAL", "="))
	h.c.expect(badMech)
	h.c.write(response("AAAA"))
	h.c.expect(malformed)
	h.c.write(abort)
	h.c.expect(aborted)
	rest, err := h.closed()
	if !errors.Is(err, protocols.ErrTooManyBadCommands) || !strings.Contains(rest, "<policy-violation") {
		t.Fatalf("PreAuth() = %v, then %q, want ErrTooManyBadCommands and policy-violation", err, rest)
	}
}

// TestSASLMessageTooLong: a message above Limits.MaxLiteral is refused
// before decoding.
func TestSASLMessageTooLong(t *testing.T) {
	h, b := greeted(t)
	h.c.write(auth("PLAIN", b64("\x00alice\x00"+strings.Repeat("x", 9000))))
	h.c.expect(malformed)
	if strings.Contains(b.rec.String(), "<auth") {
		t.Error("backend saw the oversized message")
	}
}
