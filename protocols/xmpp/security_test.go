package xmpp_test

import (
	"errors"
	"fmt"
	"io"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/mailgate/mailgate/protocols"
	"github.com/mailgate/mailgate/protocols/protocoltest"
	"github.com/mailgate/mailgate/protocols/xmpp"
)

// TestIssue19_5_NewlineAfterSTARTTLS: whitespace behind <starttls/> is
// legal between elements; it is dropped like any pipelined byte, without a
// warning, and the login goes on over TLS.
func TestIssue19_5_NewlineAfterSTARTTLS(t *testing.T) {
	b := newFakeBackend(t)
	h := newHarness(t, b.addr, xmpp.Options{})
	c := h.c
	c.features(clientHeader)
	c.write("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>\n")
	c.expect("<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
	c.startTLS(h.ClientTLS)
	c.features(clientHeader)
	h.WantBlankDiscarded("STARTTLS")
	c.write(auth("PLAIN", b64("\x00alice\x00pass word")))
	c.expect(success)
	loggedIn(t, h)
}

// TestSTARTTLSInjection: an <auth/> pipelined behind <starttls/> in the same
// write was sent in the clear and must never be answered or forwarded
// (CVE-2011-0411).
func TestSTARTTLSInjection(t *testing.T) {
	b := newFakeBackend(t)
	h := newHarness(t, b.addr, xmpp.Options{})
	c := h.c
	c.features(clientHeader)
	c.write("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>" + auth("PLAIN", b64("\x00alice\x00pass word")))
	c.expect("<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
	c.startTLS(h.ClientTLS)
	if f := c.features(clientHeader); strings.Contains(f, "starttls") {
		t.Errorf("features after TLS offer STARTTLS: %q", f)
	}
	h.WantInjectionDiscarded("STARTTLS")
	if strings.Contains(b.rec.String(), "<auth") {
		t.Errorf("the backend received the injected auth: %q", b.rec.String())
	}
	// Nothing was answered for the injected element: the next reply is for
	// the next request.
	c.write(auth("PLAIN", b64("\x00alice\x00wrong")))
	if got := c.until("</failure>"); strings.Contains(got, "<success") {
		t.Errorf("after TLS the client read %q", got)
	}
}

const disabledFailure = "<failure xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><account-disabled/><text xml:lang='en'>XMPP access is disabled for this account, please contact your administrator</text></failure>"

// TestGatedLoginNeverReachesBackend: with the gate denying the user, the
// credential in every form stays away from the backend.
func TestGatedLoginNeverReachesBackend(t *testing.T) {
	const pass = "Sup3r-S3cret pw"
	plain := b64("\x00alice\x00" + pass)
	tests := []struct {
		name, mech string
		run        func(c *tclient)
	}{
		{"PLAIN with IR", "PLAIN", func(c *tclient) { c.write(auth("PLAIN", plain)) }},
		{"PLAIN without IR", "PLAIN", func(c *tclient) {
			c.write(auth("PLAIN", ""))
			c.expect(emptyChal)
			c.write(response(plain))
		}},
		{"PLAIN with the full JID", "PLAIN", func(c *tclient) { c.write(auth("PLAIN", b64("\x00alice@example.com\x00"+pass))) }},
		{"X-OAUTH2", "X-OAUTH2", func(c *tclient) { c.write(auth("X-OAUTH2", b64("\x00alice\x00"+pass))) }},
		{"OAUTHBEARER", "OAUTHBEARER", func(c *tclient) {
			c.write(auth("OAUTHBEARER", b64("n,a=alice@example.com,\x01auth=Bearer "+pass+"\x01\x01")))
		}},
		{"SCRAM-SHA-1 with IR", "SCRAM-SHA-1", func(c *tclient) { c.write(auth("SCRAM-SHA-1", b64("n,,n=alice,r=abcdef"))) }},
		{"SCRAM-SHA-256 without IR", "SCRAM-SHA-256", func(c *tclient) {
			c.write(auth("SCRAM-SHA-256", ""))
			c.expect(emptyChal)
			c.write(response(b64("y,,n=alice,r=abcdef")))
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := newFakeBackend(t)
			h := newHarness(t, b.addr, xmpp.Options{}, withTLS)
			h.Gate.Deny["alice@example.com"] = protocols.DenyDisabled
			h.c.features(clientHeader)
			tt.run(h.c)
			h.c.expect(disabledFailure)
			h.Running()
			h.WantEvents("attempt alice@example.com " + tt.mech)
			got := b.rec.String()
			protocoltest.CheckWithheld(t, got, "<auth", "<response", pass, plain, b64(pass), "abcdef")
			// Still negotiating: another user may log in.
			h.c.write(auth("PLAIN", b64("\x00bob\x00bob-secret")))
			h.c.expect(success)
		})
	}
}

func TestGateDenials(t *testing.T) {
	tests := []struct{ code, want string }{
		{protocols.DenyDisabled, disabledFailure},
		{protocols.DenyLockout, "<failure xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><not-authorized/><text xml:lang='en'>Too many failed logins, try again later</text></failure>"},
		{protocols.DenyLimit, "<failure xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><temporary-auth-failure/><text xml:lang='en'>Too many connections, try again later</text></failure>"},
		{"something-new", notAuth},
	}
	for _, tt := range tests {
		t.Run(tt.code, func(t *testing.T) {
			h, _ := greeted(t)
			h.Gate.Deny["alice@example.com"] = tt.code
			h.c.write(auth("PLAIN", b64("\x00alice\x00pass word")))
			h.c.expect(tt.want)
		})
	}
}

// TestGateChecksAuthzid: PLAIN naming another account as the authorization
// identity is gated on it too; naming oneself is not a second identity.
func TestGateChecksAuthzid(t *testing.T) {
	h, b := greeted(t)
	h.Gate.Deny["bob@example.com"] = protocols.DenyDisabled
	h.c.write(auth("PLAIN", b64("bob@example.com\x00alice\x00pass word")))
	h.c.expect(disabledFailure)
	h.c.write(auth("SCRAM-SHA-1", b64("n,a=bob,n=alice,r=xyz")))
	h.c.expect(disabledFailure)
	if strings.Contains(b.rec.String(), "<auth") {
		t.Error("backend saw a refused exchange")
	}
	h.c.write(auth("PLAIN", b64("alice@example.com/phone\x00alice\x00pass word")))
	h.c.expect(success)
	want := "alice@example.com|bob@example.com|alice@example.com|bob@example.com|alice@example.com"
	if got := strings.Join(h.Gate.Asked(), "|"); got != want {
		t.Errorf("gate asked about %s, want %s", got, want)
	}
}

// TestDomainCannotChange: the domain names the user the gate was asked
// about, so a restarted stream may not name another one.
func TestDomainCannotChange(t *testing.T) {
	other := strings.Replace(clientHeader, "to='example.com'", "to='other.org'", 1)
	const violation = "<stream:error xmlns:stream='http://etherx.jabber.org/streams'><policy-violation xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>" +
		"<text xmlns='urn:ietf:params:xml:ns:xmpp-streams' xml:lang='en'>The domain may not change when the stream restarts</text></stream:error></stream:stream>"
	t.Run("after STARTTLS", func(t *testing.T) {
		b := newFakeBackend(t)
		h := newHarness(t, b.addr, xmpp.Options{})
		h.c.features(clientHeader)
		h.c.negotiateTLS(h.ClientTLS)
		h.c.write(other)
		rest, err := h.closed()
		if !errors.Is(err, protocols.ErrClientProtocol) || !strings.HasSuffix(rest, violation) {
			t.Fatalf("PreAuth() = %v, then %q", err, rest)
		}
	})
	t.Run("after success", func(t *testing.T) {
		h, b := greeted(t)
		h.c.write(auth("PLAIN", b64("\x00alice\x00pass word")))
		h.c.expect(success)
		h.c.write(other)
		rest, err := h.closed()
		if !errors.Is(err, protocols.ErrClientProtocol) || !strings.HasSuffix(rest, violation) {
			t.Fatalf("PreAuth() = %v, then %q", err, rest)
		}
		if strings.Contains(b.rec.String(), "other.org") {
			t.Error("the backend received the second domain")
		}
	})
	t.Run("no to after STARTTLS", func(t *testing.T) {
		b := newFakeBackend(t)
		h := newHarness(t, b.addr, xmpp.Options{})
		h.c.features(clientHeader)
		h.c.negotiateTLS(h.ClientTLS)
		if f := h.c.features(strings.Replace(clientHeader, "to='example.com' ", "", 1)); !strings.Contains(f, "<mechanism>PLAIN</mechanism>") {
			t.Fatalf("features = %q", f)
		}
	})
}

// TestNoSecretInLogs runs logins of every outcome with a debug logger and
// checks no password, token or SASL payload is in the output.
func TestNoSecretInLogs(t *testing.T) {
	const pass = "pass word"
	scram := b64("n,,n=alice,r=secretnonce")
	secrets := []string{pass, b64("\x00alice\x00" + pass), b64(pass), goodToken, "expired-token", "wrong-pw",
		b64("\x00mallory\x00wrong-pw"), scram, "secretnonce", "cHJvb2Y="}
	h, _ := greeted(t)
	h.Gate.Deny["mallory@example.com"] = protocols.DenyLockout
	c := h.c
	c.write(auth("PLAIN", b64("\x00mallory\x00wrong-pw")))
	c.until("</failure>")
	c.write(auth("PLAIN", b64("\x00alice\x00wrong-pw")))
	c.until("</failure>")
	c.write(auth("OAUTHBEARER", b64("n,a=alice@example.com,\x01auth=Bearer expired-token\x01\x01")))
	c.until("</challenge>")
	c.write(response("AQ=="))
	c.until("</failure>")
	c.write(auth("SCRAM-SHA-1", scram))
	c.until("</challenge>")
	c.write(response(b64("c=biws,r=cnoncesnonce,p=cHJvb2Y=")))
	c.until("</success>")
	loggedIn(t, h)
	h.CheckLogs(secrets, []string{"user=alice@example.com", "mechanism=SCRAM-SHA-1", "outcome=success", "session=42", "outcome=denied", "user=mallory@example.com", "outcome=failure"})
}

// allocated runs f and returns the bytes allocated meanwhile (by every
// goroutine, so an upper bound of what the handler allocated).
func allocated(f func()) uint64 {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	f()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

const xmppStreamClose = "</stream:stream>"

const billionLaughs = `<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol9 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
]>`

// streamErrorOf checks that what the client read ends with exactly the
// given stream error and the closing tag.
func streamErrorOf(t *testing.T, rest, cond, text string) {
	t.Helper()
	want := "<stream:error xmlns:stream='http://etherx.jabber.org/streams'><" + cond + " xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>"
	if text != "" {
		want += "<text xmlns='urn:ietf:params:xml:ns:xmpp-streams' xml:lang='en'>" + text + "</text>"
	}
	want += "</stream:error></stream:stream>"
	if !strings.HasSuffix(rest, want) {
		t.Fatalf("client read %q, want it to end with %q", rest, want)
	}
}

// TestXMLBomb: a "billion laughs" DTD before the stream header, or an entity
// reference inside a stanza, is refused at once with <restricted-xml/>;
// nothing is expanded and the backend never hears of it.
func TestXMLBomb(t *testing.T) {
	t.Run("DTD before the header", func(t *testing.T) {
		b := newFakeBackend(t)
		h := newHarness(t, b.addr, xmpp.Options{})
		var rest string
		var err error
		n := allocated(func() {
			h.c.write(billionLaughs + clientHeader + "<x>&lol9;</x>")
			rest, err = h.closed()
		})
		streamErrorOf(t, rest, "restricted-xml", "DTD")
		if !strings.HasPrefix(rest, "<?xml version='1.0'?><stream:stream ") {
			t.Errorf("no stream header before the error (RFC 6120 §4.9.1.2): %q", rest)
		}
		if !errors.Is(err, protocols.ErrClientProtocol) {
			t.Errorf("PreAuth() = %v, want ErrClientProtocol", err)
		}
		if b.rec.String() != "" {
			t.Errorf("backend received %q", b.rec.String())
		}
		if n > 4<<20 {
			t.Errorf("refusing the bomb allocated %d bytes", n)
		}
	})
	t.Run("entity in a stanza", func(t *testing.T) {
		h, b := greeted(t)
		h.c.write(auth("PLAIN", "&lol9;"))
		rest, err := h.closed()
		streamErrorOf(t, rest, "restricted-xml", "entity reference")
		if !errors.Is(err, protocols.ErrClientProtocol) || strings.Contains(b.rec.String(), "<auth") {
			t.Errorf("PreAuth() = %v; backend received %q", err, b.rec.String())
		}
	})
}

// flood writes s n times from a goroutine (the server stops reading at some
// point; the write then fails, which is fine) and returns when done.
func flood(c *tclient, prefix, s string, n int) <-chan struct{} {
	done := make(chan struct{})
	conn := c.Conn
	go func() {
		defer close(done)
		conn.SetWriteDeadline(time.Now().Add(20 * time.Second))
		io.WriteString(conn, prefix)
		if s == "" {
			return
		}
		chunk := strings.Repeat(s, max(1, 4096/len(s)))
		for sent := 0; sent < n; sent += 4096 / len(s) {
			if _, err := io.WriteString(conn, chunk); err != nil {
				return
			}
		}
	}()
	return done
}

// TestLimits: deep nesting, an oversized stanza and a pre-auth flood are
// refused with <policy-violation/>, in bounded memory.
func TestLimits(t *testing.T) {
	tests := []struct {
		name          string
		opts          xmpp.Options
		prefix, flood string
		n             int
		text          string
	}{
		{"deep nesting", xmpp.Options{}, "<message xmlns='jabber:client'>", "<a>", 1 << 20, "elements nested too deeply"},
		{"oversized stanza", xmpp.Options{}, "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>", "AAAA", 1 << 20, "stanza too large"},
		{"many attributes", xmpp.Options{}, "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl'" + manyAttrs(100) + ">", "", 0, "too many attributes"},
		{"many elements", xmpp.Options{}, "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>", "<a/>", 1 << 16, "too many elements"},
		{"whitespace flood", xmpp.Options{MaxStanzaSize: 1024, MaxPreAuthBytes: 4096}, "", "    " + abort, 1 << 12, "too much data before authentication"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := newFakeBackend(t)
			h := newHarness(t, b.addr, tt.opts, withTLS, func(s *protocols.Session) { s.Limits.MaxBadCommands = 1 << 20 })
			h.c.features(clientHeader)
			var rest string
			var err error
			n := allocated(func() {
				done := flood(h.c, tt.prefix, tt.flood, tt.n)
				// Read while flooding: closing a socket with unread input
				// resets the connection, which may destroy what the client
				// has not read yet.
				rest = h.c.until(xmppStreamClose)
				err = h.Result()
				h.Session.Client.Close()
				<-done
			})
			rest = strings.ReplaceAll(rest, aborted, "")
			streamErrorOf(t, rest, "policy-violation", tt.text)
			if !errors.Is(err, protocols.ErrClientProtocol) {
				t.Errorf("PreAuth() = %v, want ErrClientProtocol", err)
			}
			if n > 16<<20 {
				t.Errorf("refusing the flood allocated %d bytes", n)
			}
		})
	}
}

// TestMarkupIsRebuilt: what reaches the backend is rebuilt from parsed
// values; extra attributes, children and CDATA in the client's element do
// not travel.
func TestMarkupIsRebuilt(t *testing.T) {
	h, b := greeted(t)
	h.c.write("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' xmlns:x='urn:x' mechanism='PLAIN' x:evil='1'><![CDATA[" + b64("\x00alice\x00pass word") + "]]><x:inject/></auth>")
	h.c.expect(success)
	loggedIn(t, h)
	got := b.rec.String()
	if !strings.Contains(got, "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>"+b64("\x00alice\x00pass word")+"</auth>") ||
		strings.Contains(got, "evil") || strings.Contains(got, "inject") || strings.Contains(got, "CDATA") {
		t.Errorf("backend received %q", got)
	}
}

func manyAttrs(n int) string {
	var b strings.Builder
	for i := range n {
		fmt.Fprintf(&b, " a%d=''", i)
	}
	return b.String()
}

// TestBackendResponseInjection: plaintext the backend sends behind
// <proceed/> (here a fake feature list) is discarded before TLS starts
// (docs/protocols.md §9.2); the client only sees what came over TLS.
func TestBackendResponseInjection(t *testing.T) {
	srvTLS, cliTLS := protocoltest.TLSConfigs(t)
	b := newFakeBackend(t, func(b *fakeBackend) {
		b.tls = srvTLS
		b.inject = "<stream:features><mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><mechanism>PLAIN</mechanism></mechanisms></stream:features>" +
			"<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>"
	})
	h := newHarness(t, b.addr, xmpp.Options{}, withTLS, func(s *protocols.Session) { s.BackendStartTLS = cliTLS })
	f := h.c.features(clientHeader)
	if !strings.Contains(f, "<mechanism>SCRAM-SHA-1</mechanism>") {
		t.Fatalf("features = %q, want the ones sent over TLS", f)
	}
	h.c.write(auth("PLAIN", b64("\x00alice\x00wrong")))
	h.c.expect("<failure xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><not-authorized/><text xml:lang='en'>Invalid username or password</text></failure>")
	h.Running()
}
