package xmpp_test

import (
	"bytes"
	"context"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/mailgate/mailgate/protocols"
	"github.com/mailgate/mailgate/protocols/protocoltest"
	"github.com/mailgate/mailgate/protocols/xmpp"
)

// scriptConn is a backend that answers each element it is written as soon as
// it arrives (the handler writes whole elements): a stream header and
// features, then challenges, successes or failures as mode says. It notes
// whether a SASL message ever reached it.
type scriptConn struct {
	*protocoltest.MemConn
	pending    bytes.Buffer
	mode       uint8
	rounds     int
	credential bool
}

func (c *scriptConn) Read(p []byte) (int, error) {
	if c.pending.Len() == 0 {
		return 0, io.EOF
	}
	return c.pending.Read(p)
}

var fuzzFeatures = []string{
	"<mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><mechanism>PLAIN</mechanism><mechanism>SCRAM-SHA-1</mechanism><mechanism>OAUTHBEARER</mechanism><mechanism>X-OAUTH2</mechanism></mechanisms>",
	"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'><required/></starttls><mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><mechanism>SCRAM-SHA-256</mechanism></mechanisms>",
	"<mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><mechanism>EXTERNAL</mechanism></mechanisms><c xmlns='http://jabber.org/protocol/caps' ver='x'/>",
}

func (c *scriptConn) Write(p []byte) (int, error) {
	c.Out.Write(p)
	s := string(p)
	switch {
	case strings.Contains(s, "<stream:stream") || strings.Contains(s, ":stream "):
		if c.mode&0x40 != 0 {
			c.pending.WriteString("<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>" +
				"<stream:error><host-unknown xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error></stream:stream>")
			break
		}
		c.pending.WriteString("<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' id='f1' from='example.com' version='1.0'>" +
			"<stream:features>" + fuzzFeatures[int(c.mode)%len(fuzzFeatures)] + "</stream:features>")
	case strings.Contains(s, "<starttls"):
		c.pending.WriteString("<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
	case strings.Contains(s, "<abort"):
		c.pending.WriteString("<failure xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><aborted/></failure>")
	case strings.Contains(s, "<auth"), strings.Contains(s, "<response"):
		c.credential = true
		c.rounds++
		switch {
		case c.rounds < 2 && c.mode&0x08 != 0:
			c.pending.WriteString("<challenge xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>cj1hYmM=</challenge>")
		case c.mode&0x10 != 0:
			c.pending.WriteString("<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>dj1hYmM=</success>")
		default:
			c.pending.WriteString("<failure xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><temporary-auth-failure/><text>x</text></failure>")
		}
	}
	return len(p), nil
}

// FuzzPreAuth drives whole pre-auth sessions from arbitrary client input
// against a scripted backend. It must not panic or hang, and when the gate
// denies every user no SASL message may reach the backend.
func FuzzPreAuth(f *testing.F) {
	seeds := []string{
		clientHeader + auth("PLAIN", b64("\x00alice\x00secret")),
		clientHeader + auth("PLAIN", "") + response(b64("\x00alice\x00secret")) + clientHeader + "<iq type='set' id='1'/>",
		clientHeader + auth("SCRAM-SHA-1", b64("n,,n=alice,r=abc")) + response(b64("c=biws,r=abc,p=eA==")) + clientHeader,
		clientHeader + auth("OAUTHBEARER", b64("n,a=alice@example.com,\x01auth=Bearer t\x01\x01")) + response("AQ==") + abort,
		clientHeader + "<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>" + auth("PLAIN", "AGEAYg=="),
		clientHeader + "<message to='a@b'><body>x</body></message>",
		clientHeader + auth("EXTERNAL", "=") + abort + response("=") + "</stream:stream>",
		billionLaughs + clientHeader,
		clientHeader + strings.Repeat("<a>", 40),
		strings.Replace(clientHeader, "example.com", "", 1),
	}
	protocoltest.AddSeeds(f, seeds)
	// Restarted streams after success (mode 0x90: TLS client link, the
	// backend accepts, plain features; 0x94: features with <starttls/>
	// before and after login): whitespace and declaration variants.
	for _, sep := range []string{"\n", "\r\n", " \t\n", ""} {
		f.Add([]byte(clientHeader+auth("PLAIN", b64("\x00alice\x00secret"))+sep+clientHeader), uint8(0x90))
		f.Add([]byte(clientHeader+auth("PLAIN", b64("\x00alice\x00secret"))+sep+strings.Replace(clientHeader, "<?xml version='1.0'?>", `<?xml version="1.0" encoding="UTF-8"?>`+sep, 1)), uint8(0x90))
		f.Add([]byte(clientHeader+auth("SCRAM-SHA-256", b64("n,,n=alice,r=abc"))+sep+strings.TrimPrefix(clientHeader, "<?xml version='1.0'?>")+"<iq/>"), uint8(0x94))
	}
	srvTLS, _ := protocoltest.TLSConfigs(f)
	f.Fuzz(func(t *testing.T, in []byte, mode uint8) {
		cli := protocoltest.NewMemConn(in, 5222)
		be := &scriptConn{MemConn: protocoltest.NewMemConn(nil, 5222), mode: mode}
		denyAll := mode&0x01 != 0
		lim := protocols.Limits{MaxBadCommands: 3, LoginTimeout: time.Minute, MaxLiteral: 128}
		s := protocoltest.FuzzSession(cli, be, protocoltest.DenyAll{All: denyAll}, lim)
		s.RequireTLSForLogin = mode&0x02 != 0
		s.ClientTLS = mode&0x80 != 0
		if mode&0x04 != 0 {
			s.ClientStartTLS = srvTLS
		}
		xmpp.New(xmpp.Options{MaxStanzaSize: 512, MaxPreAuthBytes: 4096, MaxDepth: 8}).PreAuth(context.Background(), s)
		if denyAll && be.credential {
			t.Fatalf("a SASL message reached the backend although the gate denied everyone; backend got %q", be.Out.String())
		}
		// A document's XML declaration comes first (XML 1.0 §2.8): nothing,
		// not even whitespace, may stand before one the backend reads.
		toBackend := be.Out.String()
		for i := 0; ; i++ {
			j := strings.Index(toBackend[i:], "<?xml")
			if j < 0 {
				break
			}
			if i += j; i > 0 && toBackend[i-1] != '>' {
				t.Fatalf("the backend got %q in front of an XML declaration: %q", toBackend[i-1], toBackend)
			}
		}
		// After <success/> the client is never offered STARTTLS again.
		toClient := cli.Out.String()
		if i := strings.Index(toClient, "<success "); i >= 0 && strings.Contains(toClient[i:], "xmpp-tls") {
			t.Fatalf("STARTTLS offered after login: %q", toClient)
		}
	})
}
