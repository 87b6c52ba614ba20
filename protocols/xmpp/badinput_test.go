package xmpp_test

import (
	"context"
	"errors"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/mailgate/mailgate/protocols"
	"github.com/mailgate/mailgate/protocols/protocoltest"
	"github.com/mailgate/mailgate/protocols/xmpp"
)

func TestLoginTimeout(t *testing.T) {
	for _, greet := range []bool{true, false} {
		t.Run(map[bool]string{true: "after the features", false: "before the header"}[greet], func(t *testing.T) {
			b := newFakeBackend(t)
			h := newHarness(t, b.addr, xmpp.Options{}, func(s *protocols.Session) { s.Limits.LoginTimeout = 300 * time.Millisecond })
			if greet {
				h.c.features(clientHeader)
			}
			rest, err := h.closed()
			if !errors.Is(err, protocols.ErrLoginTimeout) {
				t.Fatalf("PreAuth() = %v, want ErrLoginTimeout", err)
			}
			streamErrorOf(t, rest, "connection-timeout", "Login timeout")
			if !greet && !strings.HasPrefix(rest, "<?xml version='1.0'?><stream:stream ") {
				t.Errorf("no stream header before the error: %q", rest)
			}
		})
	}
}

// TestContextCancel: a drop before login cancels PreAuth; the client has a
// stream header (sent now if it had none), so the proxy's goodbye that
// follows is a well-formed stream error.
func TestContextCancel(t *testing.T) {
	for _, greet := range []bool{true, false} {
		t.Run(map[bool]string{true: "after the features", false: "before the header"}[greet], func(t *testing.T) {
			b := newFakeBackend(t)
			h := newHarness(t, b.addr, xmpp.Options{})
			if greet {
				h.c.features(clientHeader)
			}
			h.Cancel()
			h.WantResult(context.Canceled)
			// Deadlines were cleared: the proxy can still write its goodbye.
			xmpp.New(xmpp.Options{}).Goodbye(h.Session.Client.W, protocols.ByeDropped)
			rest, _ := h.closed()
			if !greet && !strings.HasPrefix(rest, "<?xml version='1.0'?><stream:stream ") {
				t.Errorf("no stream header before the goodbye: %q", rest)
			}
			streamErrorOf(t, rest, "reset", "Connection closed by administrator")
		})
	}
}

func TestClientClosesStream(t *testing.T) {
	b := newFakeBackend(t)
	h := newHarness(t, b.addr, xmpp.Options{})
	h.c.features(clientHeader)
	h.c.write("</stream:stream>")
	rest, err := h.closed()
	if !errors.Is(err, protocols.ErrClientQuit) || rest != "</stream:stream>" {
		t.Fatalf("PreAuth() = %v, then %q, want ErrClientQuit and the closing tag", err, rest)
	}
	time.Sleep(50 * time.Millisecond)
	if !strings.HasSuffix(b.rec.String(), "</stream:stream>") {
		t.Errorf("the backend's stream was not closed: %q", b.rec.String())
	}
}

func TestClientDisconnectMidElement(t *testing.T) {
	b := newFakeBackend(t)
	h := newHarness(t, b.addr, xmpp.Options{})
	h.c.features(clientHeader)
	h.c.write("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>AGFs")
	h.c.Conn.Close()
	h.WantResult(protocols.ErrClientQuit)
}

// TestUnexpectedElements: stanzas before authentication are
// <not-authorized/> (RFC 6120 §4.9.3.12), other elements
// <unsupported-stanza-type/>; none reaches the backend.
func TestUnexpectedElements(t *testing.T) {
	tests := []struct{ name, send, cond, text string }{
		{"in-band registration", "<iq type='get' id='r1'><query xmlns='jabber:iq:register'/></iq>", "not-authorized", "Authenticate first"},
		{"message", "<message to='bob@example.com'><body>hi</body></message>", "not-authorized", "Authenticate first"},
		{"presence", "<presence/>", "not-authorized", "Authenticate first"},
		{"compression", "<compress xmlns='http://jabber.org/protocol/compress'><method>zlib</method></compress>", "unsupported-stanza-type", ""},
		{"SASL2", "<authenticate xmlns='urn:xmpp:sasl:2' mechanism='PLAIN'><initial-response>AGE=</initial-response></authenticate>", "unsupported-stanza-type", ""},
		{"text at stream level", "hello", "bad-format", "text at the stream level"},
		{"mismatched end tag", "<a></b>", "not-well-formed", "mismatched end tag"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, b := greeted(t)
			h.c.write(tt.send + " ")
			h.closedWith(protocols.ErrClientProtocol, tt.cond, tt.text)
			if got := b.rec.String(); strings.Contains(got, "hi") || strings.Contains(got, "register") || strings.Contains(got, "compress") || strings.Contains(got, "authenticate") {
				t.Errorf("backend received %q", got)
			}
		})
	}
}

// TestBadStreamHeaders: the client gets our header, then the stream error
// the header deserves (RFC 6120 §4.9.1.2); the backend hears nothing.
func TestBadStreamHeaders(t *testing.T) {
	const rest = " xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>"
	tests := []struct{ name, send, cond, text string }{
		{"stream namespace", "<stream:stream to='example.com' version='1.0' xmlns='jabber:client' xmlns:stream='urn:wrong'>", "invalid-namespace", "Expected a jabber:client stream"},
		{"server stream", "<stream:stream to='example.com' version='1.0' xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams'>", "invalid-namespace", "Expected a jabber:client stream"},
		{"no version", "<stream:stream to='example.com'" + rest, "unsupported-version", "XMPP 1.0 is required"},
		{"version 0.9", "<stream:stream to='example.com' version='0.9'" + rest, "unsupported-version", "XMPP 1.0 is required"},
		{"version 2.0", "<stream:stream to='example.com' version='2.0'" + rest, "unsupported-version", "XMPP 1.0 is required"},
		{"no to", "<stream:stream version='1.0'" + rest, "host-unknown", "The stream header names no domain"},
		{"bad to", "<stream:stream to='a b' version='1.0'" + rest, "host-unknown", ""},
		{"empty stream", "<stream:stream to='example.com' version='1.0' xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'/>", "bad-format", "empty stream"},
		{"text first", "hello<stream:stream to='example.com' version='1.0'" + rest, "not-well-formed", "text before the stream header"},
		{"comment", "<!-- hi --><stream:stream to='example.com' version='1.0'" + rest, "restricted-xml", "comment"},
		{"processing instruction", "<?php echo 1; ?><stream:stream to='example.com' version='1.0'" + rest, "restricted-xml", "processing instruction"},
		{"encoding", "<?xml version='1.0' encoding='ISO-8859-1'?><stream:stream to='example.com' version='1.0'" + rest, "unsupported-encoding", "only UTF-8 is supported"},
		{"two declarations", "<?xml version='1.0'?><?xml version='1.0'?><stream:stream to='example.com' version='1.0'" + rest, "not-well-formed", "XML declaration not at the start of the stream"},
		{"undeclared prefix", "<stream:stream to='example.com' version='1.0' xmlns='jabber:client'>", "not-well-formed", "undeclared namespace prefix"},
		{"invalid UTF-8", "<stream:stream to='ex\xffample.com' version='1.0'" + rest, "not-well-formed", "invalid UTF-8"},
		{"end tag", "</stream:stream>", "not-well-formed", "end tag before the stream header"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := newFakeBackend(t)
			h := newHarness(t, b.addr, xmpp.Options{})
			h.c.write(tt.send)
			got := h.closedWith(protocols.ErrClientProtocol, tt.cond, tt.text)
			if !strings.HasPrefix(got, "<?xml version='1.0'?><stream:stream ") {
				t.Errorf("no stream header before the error: %q", got)
			}
			if b.rec.String() != "" {
				t.Errorf("backend received %q", b.rec.String())
			}
		})
	}
}

// TestHeaderForms: another stream prefix, double quotes, whitespace and no
// XML declaration are all fine; the header sent after success reaches the
// backend as written, less the whitespace in front of it.
func TestHeaderForms(t *testing.T) {
	h, b := greeted(t)
	h.c.write(auth("PLAIN", b64("\x00alice\x00pass word")))
	h.c.expect(success)
	hdr := "\n <s:stream xmlns:s=\"http://etherx.jabber.org/streams\" xmlns=\"jabber:client\" to=\"Example.COM\" version=\"1.0\" from=\"alice@example.com\" xml:lang=\"de\" >"
	h.c.write(hdr)
	h.WantResult(nil)
	time.Sleep(50 * time.Millisecond)
	if got := b.rec.String(); !strings.HasSuffix(got, "</auth>"+strings.TrimLeft(hdr, "\n ")) {
		t.Errorf("backend received %q, want the header forwarded as written", got)
	}
}

func TestDefaultDomain(t *testing.T) {
	b := newFakeBackend(t)
	h := newHarness(t, b.addr, xmpp.Options{DefaultDomain: "Example.com"}, withTLS)
	h.c.features(strings.Replace(clientHeader, "to='example.com' ", "", 1))
	h.c.write(auth("PLAIN", b64("\x00alice\x00pass word")))
	h.c.expect(success)
	h.WantEvents("attempt alice@example.com PLAIN", "ok alice@example.com PLAIN")
	if !strings.Contains(b.rec.String(), "to='example.com'") {
		t.Errorf("backend received %q", b.rec.String())
	}
}

// TestKeepalives: whitespace between elements is fine (RFC 6120 §4.6.1).
func TestKeepalives(t *testing.T) {
	h, _ := greeted(t)
	h.c.write(" \n\t ")
	h.c.write(" " + auth("PLAIN", " "+b64("\x00alice\x00pass word")+"\n") + " ")
	h.c.expect(success)
	loggedIn(t, h)
}

func TestBackendStreamErrors(t *testing.T) {
	tests := []struct{ name, backend, cond, text string }{
		{"host-unknown", "<stream:error><host-unknown xmlns='urn:ietf:params:xml:ns:xmpp-streams'/><text xmlns='urn:ietf:params:xml:ns:xmpp-streams'>No such &lt;host&gt;</text></stream:error>",
			"host-unknown", "No such &lt;host&gt;"},
		{"see-other-host is not relayed", "<stream:error><see-other-host xmlns='urn:ietf:params:xml:ns:xmpp-streams'>10.0.0.7:5222</see-other-host></stream:error>",
			"remote-connection-failed", ""},
		{"unknown condition", "<stream:error><x-custom xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error>", "undefined-condition", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := newFakeBackend(t, func(b *fakeBackend) { b.streamErr = tt.backend })
			h := newHarness(t, b.addr, xmpp.Options{})
			h.c.write(clientHeader)
			rest := h.closedWith(protocols.ErrBackend, tt.cond, tt.text)
			if strings.Contains(rest, "10.0.0.7") {
				t.Errorf("the redirect target reached the client: %q", rest)
			}
		})
	}
}

func TestBackendGone(t *testing.T) {
	b := newFakeBackend(t, func(b *fakeBackend) { b.noHeader = true })
	h := newHarness(t, b.addr, xmpp.Options{})
	h.c.write(clientHeader)
	h.closedWith(protocols.ErrBackend, "remote-connection-failed", "Service temporarily unavailable, try again later")
}

// TestBackendGoneDuringLogin: a login whose verdict never comes is a
// temporary failure, never a wrong password.
func TestBackendGoneDuringLogin(t *testing.T) {
	h, _ := greeted(t)
	h.c.write(auth("PLAIN", b64("\x00crash\x00x")))
	h.closedWith(protocols.ErrBackend, "remote-connection-failed", "Service temporarily unavailable, try again later")
	h.WantEvents("attempt crash@example.com PLAIN", "fail crash@example.com PLAIN temporary")
}

func TestBackendSTARTTLS(t *testing.T) {
	srvTLS, cliTLS := protocoltest.TLSConfigs(t)
	b := newFakeBackend(t, func(b *fakeBackend) { b.tls = srvTLS })
	h := newHarness(t, b.addr, xmpp.Options{}, withTLS, func(s *protocols.Session) { s.BackendStartTLS = cliTLS })
	if f := h.c.features(clientHeader); strings.Contains(f, "starttls") || !strings.Contains(f, "<mechanism>PLAIN</mechanism>") {
		t.Fatalf("features = %q", f)
	}
	h.c.write(auth("PLAIN", b64("\x00alice\x00pass word")))
	h.c.expect(success)
	loggedIn(t, h)
	// The recorder sees the backend's plaintext, inside TLS too: STARTTLS,
	// then a second stream header, then the login.
	got := b.rec.String()
	i := strings.Index(got, "<starttls")
	j := strings.Index(got[i+1:], "<stream:stream") + i + 1
	k := strings.Index(got, "<auth")
	if i < 0 || j <= i || k < j {
		t.Errorf("backend received %q", got)
	}
}

func TestBackendSTARTTLSMissing(t *testing.T) {
	_, cliTLS := protocoltest.TLSConfigs(t)
	b := newFakeBackend(t)
	h := newHarness(t, b.addr, xmpp.Options{}, func(s *protocols.Session) { s.BackendStartTLS = cliTLS })
	h.c.write(clientHeader)
	h.closedWith(protocols.ErrBackend, "remote-connection-failed", "Service temporarily unavailable, try again later")
}

// TestSTARTTLSRefused: <starttls/> where none is offered (no TLS configured,
// or the link is TLS already) gets <failure/> and the stream is closed
// (RFC 6120 §5.4.2.2).
func TestSTARTTLSRefused(t *testing.T) {
	for _, mod := range []func(*protocols.Session){withTLS, func(s *protocols.Session) { s.ClientStartTLS = nil }} {
		b := newFakeBackend(t)
		h := newHarness(t, b.addr, xmpp.Options{}, mod)
		if f := h.c.features(clientHeader); strings.Contains(f, "starttls") {
			t.Errorf("STARTTLS offered: %q", f)
		}
		h.c.write("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
		rest, err := h.closed()
		if rest != "<failure xmlns='urn:ietf:params:xml:ns:xmpp-tls'/></stream:stream>" || !errors.Is(err, protocols.ErrClientProtocol) {
			t.Errorf("PreAuth() = %v, then %q", err, rest)
		}
		if strings.Contains(b.rec.String(), "starttls") {
			t.Errorf("backend received %q", b.rec.String())
		}
	}
}

// TestRequireTLSForLogin: on a plain link STARTTLS is required and only
// SCRAM is offered; after TLS the cleartext mechanisms appear.
func TestRequireTLSForLogin(t *testing.T) {
	b := newFakeBackend(t)
	h := newHarness(t, b.addr, xmpp.Options{}, func(s *protocols.Session) { s.RequireTLSForLogin = true })
	want := "<stream:features><starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'><required/></starttls><mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>" +
		"<mechanism>SCRAM-SHA-256</mechanism><mechanism>SCRAM-SHA-1</mechanism></mechanisms>" +
		"<c xmlns='http://jabber.org/protocol/caps' hash='sha-1' node='http://prosody.im' ver='abc='/></stream:features>"
	if f := h.c.features(clientHeader); f != want {
		t.Errorf("plain-link features = %q, want %q", f, want)
	}
	h.c.write(auth("PLAIN", b64("\x00alice\x00pass word")))
	h.c.expect(badMech)
	h.c.negotiateTLS(h.ClientTLS)
	want = "<stream:features><mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><mechanism>SCRAM-SHA-256</mechanism><mechanism>SCRAM-SHA-1</mechanism>" +
		"<mechanism>PLAIN</mechanism><mechanism>OAUTHBEARER</mechanism><mechanism>X-OAUTH2</mechanism></mechanisms>" +
		"<c xmlns='http://jabber.org/protocol/caps' hash='sha-1' node='http://prosody.im' ver='abc='/></stream:features>"
	if f := h.c.features(clientHeader); f != want {
		t.Errorf("TLS-link features = %q, want %q", f, want)
	}
	h.c.write(auth("PLAIN", b64("\x00alice\x00pass word")))
	h.c.expect(success)
	if strings.Contains(b.rec.String(), "starttls") {
		t.Error("the client's STARTTLS reached the backend")
	}
}

var idRe = regexp.MustCompile(`id='[0-9a-f]{16}'`)

func TestRefuseAndGoodbye(t *testing.T) {
	const header = "<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' id='ID' version='1.0' xml:lang='en'>"
	errOf := func(cond, text string) string {
		return "<stream:error xmlns:stream='http://etherx.jabber.org/streams'><" + cond + " xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>" +
			"<text xmlns='urn:ietf:params:xml:ns:xmpp-streams' xml:lang='en'>" + text + "</text></stream:error></stream:stream>"
	}
	// Stream ids are random.
	sameID := func(s string) string { return idRe.ReplaceAllString(s, "id='ID'") }
	protocoltest.Farewells{
		Protocol: "xmpp",
		Norm:     sameID,
		Refuse: map[string]string{
			protocols.RefuseUnavailable: header + errOf("remote-connection-failed", "Service temporarily unavailable, try again later"),
			protocols.RefuseBlocked:     header + errOf("policy-violation", "Access denied"),
			protocols.RefuseLimit:       header + errOf("policy-violation", "Too many connections, try again later"),
			protocols.RefuseShutdown:    header + errOf("system-shutdown", "Server shutting down"),
		},
		Goodbye: map[string]string{
			protocols.ByeDropped:  errOf("reset", "Connection closed by administrator"),
			protocols.ByeShutdown: errOf("system-shutdown", "Server shutting down"),
			protocols.ByeTimeout:  errOf("connection-timeout", "Idle for too long"),
		},
	}.Check(t, xmpp.New(xmpp.Options{}))
}

// TestZeroValues: the zero Handler, and a Session with zero Limits and no
// Observer, Gate or Log, work with defaults.
func TestZeroValues(t *testing.T) {
	b := newFakeBackend(t)
	h := newHarnessWith(t, b.addr, new(xmpp.Handler), withTLS, protocoltest.ZeroSession)
	h.c.features(clientHeader)
	h.c.write(auth("PLAIN", b64("\x00alice\x00pass word")))
	h.c.expect(success)
	loggedIn(t, h)
}
