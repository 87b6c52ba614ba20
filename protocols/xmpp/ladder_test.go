package xmpp_test

import (
	"crypto/sha1"
	"crypto/sha256"
	"encoding/base64"
	"hash"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/mailgate/mailgate/internal/demo"
	"github.com/mailgate/mailgate/protocols/protocoltest"
	"github.com/mailgate/mailgate/protocols/xmpp"
)

var demoUsers = map[string]string{"alice@example.com": "alice-secret", "bob@example.com": "bob-secret"}

// demoBackend starts the in-process demo XMPP server for example.com.
func demoBackend(t *testing.T) *demo.XMPPBackend {
	t.Helper()
	b, err := demo.StartXMPP("127.0.0.1:0", "example.com", demoUsers)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

var streamIDRe = regexp.MustCompile(`<stream:stream [^>]* id='([^']+)'`)

func streamID(t *testing.T, s string) string {
	t.Helper()
	m := streamIDRe.FindStringSubmatch(s)
	if m == nil {
		t.Fatalf("no stream header with an id in %q", s)
	}
	return m[1]
}

// TestLadder walks header -> features -> STARTTLS -> new stream -> SASL
// PLAIN -> success -> restart against the demo backend, with the client's
// resource binding pipelined behind its new stream header.
func TestLadder(t *testing.T) {
	b := demoBackend(t)
	h := newHarness(t, b.Addr(), xmpp.Options{})
	c := h.c
	c.write(clientHeader)
	first := c.until("</stream:features>")
	id := streamID(t, first)
	if !strings.HasPrefix(first, "<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' id='"+id+"' from='example.com' version='1.0' xml:lang='en'>") {
		t.Errorf("client stream header = %q", first)
	}
	wantFeatures := "<stream:features><starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/><mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>" +
		"<mechanism>SCRAM-SHA-256</mechanism><mechanism>SCRAM-SHA-1</mechanism><mechanism>PLAIN</mechanism></mechanisms></stream:features>"
	if !strings.HasSuffix(first, wantFeatures) {
		t.Errorf("features = %q, want %q", first, wantFeatures)
	}

	c.negotiateTLS(h.ClientTLS)
	c.write(clientHeader)
	second := c.until("</stream:features>")
	if got := streamID(t, second); got != id {
		t.Errorf("stream id after STARTTLS = %q, want the backend's %q", got, id)
	}
	if want := "<stream:features><mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><mechanism>SCRAM-SHA-256</mechanism><mechanism>SCRAM-SHA-1</mechanism><mechanism>PLAIN</mechanism></mechanisms></stream:features>"; !strings.HasSuffix(second, want) {
		t.Errorf("features after STARTTLS = %q, want %q", second, want)
	}

	c.write(auth("PLAIN", b64("\x00alice\x00alice-secret")))
	c.expect("<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>")
	bind := "<iq type='set' id='bind1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>ladder</resource></bind></iq>"
	c.write(clientHeader + bind)
	if err := h.Result(); err != nil {
		t.Fatalf("PreAuth() = %v, want nil", err)
	}
	if !h.Session.ClientTLS {
		t.Error("Session.ClientTLS = false after STARTTLS")
	}
	h.WantEvents("tls", "attempt alice@example.com PLAIN", "ok alice@example.com PLAIN")

	// The backend's new stream and its post-login features reached the
	// client in PreAuth, rewritten like the first ones.
	post := c.until("</stream:features>")
	if !strings.HasPrefix(post, "<?xml version='1.0'?><stream:stream ") ||
		!strings.Contains(post, "<stream:features xmlns:stream='http://etherx.jabber.org/streams'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/>") {
		t.Errorf("client read after login %q, want the backend's header and features with the bind", post)
	}
	// The bind is still in Client.R. Relay it by hand, as the proxy would:
	// the backend answers with the bound JID.
	h.Session.Client.Conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	held := make([]byte, len(bind))
	if _, err := h.Session.Client.R.Read(held); err != nil || string(held) != bind {
		t.Fatalf("Client.R held %q, %v, want the pipelined bind", held, err)
	}
	h.Session.Backend.W.Write(held)
	h.Session.Backend.W.Flush()
	h.Session.Backend.Conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	var got strings.Builder
	for !strings.Contains(got.String(), "</iq>") {
		b, err := h.Session.Backend.R.ReadByte()
		if err != nil {
			t.Fatalf("backend after login: %v (got %q)", err, got.String())
		}
		got.WriteByte(b)
	}
	if !strings.Contains(got.String(), "<jid>alice@example.com/ladder</jid>") {
		t.Errorf("backend after login = %q, want the bound JID", got.String())
	}
}

// challengeData extracts and decodes the data of the <challenge/> in s.
func challengeData(t *testing.T, s string) string {
	t.Helper()
	return elementData(t, s, "challenge")
}

func elementData(t *testing.T, s, name string) string {
	t.Helper()
	open := "<" + name + " xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>"
	i := strings.Index(s, open)
	j := strings.Index(s, "</"+name+">")
	if i < 0 || j < i {
		t.Fatalf("no <%s> with data in %q", name, s)
	}
	d, err := base64.StdEncoding.DecodeString(s[i+len(open) : j])
	if err != nil {
		t.Fatalf("<%s> data: %v", name, err)
	}
	return string(d)
}

// TestSCRAM runs real SCRAM-SHA-1 and SCRAM-SHA-256 exchanges against the
// demo backend through the handler, with and without an initial response:
// the server's proof (v= in <success/>) arrives intact.
func TestSCRAM(t *testing.T) {
	for _, tt := range []struct {
		mech string
		h    func() hash.Hash
		ir   bool
	}{{"SCRAM-SHA-1", sha1.New, true}, {"SCRAM-SHA-256", sha256.New, true}, {"SCRAM-SHA-1", sha1.New, false}} {
		t.Run(tt.mech, func(t *testing.T) {
			b := demoBackend(t)
			h := newHarness(t, b.Addr(), xmpp.Options{}, withTLS)
			c := h.c
			c.features(clientHeader)
			bare := "n=bob,r=fyko+d2lbbFgONRv9qkxdawL"
			if tt.ir {
				c.write(auth(tt.mech, b64("n,,"+bare)))
			} else {
				c.write(auth(tt.mech, ""))
				c.expect("<challenge xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>=</challenge>")
				c.write(response(b64("n,," + bare)))
			}
			serverFirst := challengeData(t, c.until("</challenge>"))
			final, wantV := protocoltest.SCRAMClientFinal(tt.h, "bob-secret", bare, serverFirst)
			c.write(response(b64(final)))
			if got := elementData(t, c.until("</success>"), "success"); got != wantV {
				t.Fatalf("success data = %q, want %q", got, wantV)
			}
			c.write(clientHeader)
			h.WantResult(nil)
			h.WantEvents("attempt bob@example.com "+tt.mech, "ok bob@example.com "+tt.mech)
		})
	}
}
