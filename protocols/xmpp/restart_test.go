package xmpp_test

import (
	"strings"
	"testing"
	"time"

	"github.com/mailgate/mailgate/protocols"
	"github.com/mailgate/mailgate/protocols/xmpp"
)

// Regression tests for the stream restart after SASL success, found with
// go-sendxmpp and slixmpp against Prosody 0.12 and ejabberd 23.01.

// TestIssue19_1_RestartAfterNewline: go-sendxmpp writes "</auth>\n" and then
// its new stream with an XML declaration. The newline belongs between the
// two documents; forwarded in front of the declaration it made the backend
// answer <not-well-formed/>. The fake backend is as strict as ejabberd.
func TestIssue19_1_RestartAfterNewline(t *testing.T) {
	for _, tt := range []struct{ name, before, header string }{
		{"newline", "\n", clientHeader},
		{"CRLF", "\r\n", clientHeader},
		{"spaces and tabs", " \t \n\t", clientHeader},
		{"no declaration", "\n", strings.TrimPrefix(clientHeader, "<?xml version='1.0'?>")},
		{"double-quoted declaration", "\n", strings.Replace(clientHeader, "<?xml version='1.0'?>", `<?xml version="1.0" encoding="UTF-8"?>`, 1)},
	} {
		t.Run(tt.name, func(t *testing.T) {
			h, b := greeted(t)
			h.c.write(auth("PLAIN", b64("\x00alice\x00pass word")) + tt.before)
			h.c.expect(success)
			h.c.write(tt.header)
			h.WantResult(nil)
			post := h.c.until("</stream:features>")
			if strings.Contains(post, "not-well-formed") || !strings.Contains(post, "urn:ietf:params:xml:ns:xmpp-bind") {
				t.Fatalf("client read %q after login, want the backend's new stream with a bind feature", post)
			}
			if got := b.rec.String(); !strings.HasSuffix(got, "</auth>"+tt.header) {
				t.Errorf("backend received %q, want the restart header right after </auth>", got)
			}
			h.WantEvents("attempt alice@example.com PLAIN", "ok alice@example.com PLAIN")
		})
	}
}

// TestIssue19_1_BackendRefusesRestart: a backend that answers the restart
// with a stream error has its error relayed into the client's new stream,
// and the session ends as a backend failure, not as a relayed session.
func TestIssue19_1_BackendRefusesRestart(t *testing.T) {
	b := newFakeBackend(t, func(b *fakeBackend) {
		b.postAuth = "<stream:error><not-well-formed xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error>"
		b.postAuthRaw = true
	})
	h := newHarness(t, b.addr, xmpp.Options{}, withTLS)
	h.c.features(clientHeader)
	h.c.write(auth("PLAIN", b64("\x00alice\x00pass word")))
	h.c.expect(success)
	h.c.write(clientHeader)
	rest := h.closedWith(protocols.ErrBackend, "not-well-formed", "")
	if !strings.HasPrefix(rest, "<?xml version='1.0'?><stream:stream ") {
		t.Errorf("client read %q, want a stream header before the error", rest)
	}
}

// TestIssue19_2_NoStartTLSAfterLogin: with a plain link to the backend, its
// post-login features offer <starttls/>; a client whose own link is TLS (or
// any client: TLS comes before SASL, RFC 6120 §5.3.1) must not see it, and
// everything else in them passes.
func TestIssue19_2_NoStartTLSAfterLogin(t *testing.T) {
	const post = "<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>" +
		"<bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><required/></bind>" +
		"<session xmlns='urn:ietf:params:xml:ns:xmpp-session'><optional/></session>" +
		"<sm xmlns='urn:xmpp:sm:3'/><csi xmlns='urn:xmpp:csi:0'/>" +
		"<c xmlns='http://jabber.org/protocol/caps' hash='sha-1' node='http://prosody.im' ver='x&amp;y='/>" +
		"<limits xmlns='urn:xmpp:stream-limits:0'><max-bytes>10000</max-bytes></limits>"
	for _, tls := range []bool{true, false} {
		t.Run(map[bool]string{true: "TLS client link", false: "plain client link"}[tls], func(t *testing.T) {
			b := newFakeBackend(t, func(b *fakeBackend) { b.postAuth = post })
			var h *harness
			if tls {
				h = newHarness(t, b.addr, xmpp.Options{}, withTLS)
			} else {
				h = newHarness(t, b.addr, xmpp.Options{})
			}
			h.c.features(clientHeader)
			h.c.write(auth("PLAIN", b64("\x00alice\x00pass word")))
			h.c.expect(success)
			h.c.write(clientHeader)
			h.WantResult(nil)
			got := h.c.until("</stream:features>")
			if strings.Contains(got, "starttls") || strings.Contains(got, "xmpp-tls") {
				t.Errorf("post-login features offer STARTTLS: %q", got)
			}
			want := "<stream:features xmlns:stream='http://etherx.jabber.org/streams'>" + strings.TrimPrefix(post, "<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>") + "</stream:features>"
			if !strings.HasSuffix(got, want) {
				t.Errorf("post-login features = %q, want suffix %q", got, want)
			}
			if !strings.HasPrefix(got, "<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' id='backend-id-1'") {
				t.Errorf("post-login header = %q, want the backend's as written", got)
			}
			// The relay goes on from here: an iq reaches the backend and
			// its answer comes back.
			h.Session.Backend.W.WriteString("<iq type='get' id='ping1'/>")
			h.Session.Backend.W.Flush()
			h.Session.Backend.Conn.SetReadDeadline(time.Now().Add(5 * time.Second))
			buf := make([]byte, 64)
			n, _ := h.Session.Backend.R.Read(buf)
			if !strings.Contains(string(buf[:n]), "id='ping1'") {
				t.Errorf("backend answered %q, want the iq result", buf[:n])
			}
		})
	}
}
