package xmpp_test

import (
	"bytes"
	"crypto/tls"
	"encoding/base64"
	"encoding/xml"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/mailgate/mailgate/protocols/protocoltest"
)

// fakeBackend is a scripted XMPP server for what the demo backend does not
// do: mechanisms it does not offer, temporary failures, OAuth, stream errors,
// STARTTLS. It records every byte it receives (plaintext, also inside TLS).
// SCRAM here only checks the shape of the exchange; the demo backend checks
// real proofs.
type fakeBackend struct {
	addr      string
	rec       *protocoltest.SyncBuffer
	features  string // children of the first <stream:features/>
	tls       *tls.Config
	users     map[string]string // localpart -> password; "down" fails temporarily
	token     string            // the valid bearer token
	streamErr string            // a stream error sent right after the first header
	noHeader  bool              // close without a stream header
	inject    string            // plaintext sent in the same write as <proceed/>
	postAuth  string            // children of the features after login; default a bind
	// postAuthRaw: postAuth is sent after the new header as it is, without
	// a features element around it.
	postAuthRaw bool
}

const fakeFeatures = "<mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>" +
	"<mechanism>SCRAM-SHA-1-PLUS</mechanism><mechanism>SCRAM-SHA-256</mechanism><mechanism>SCRAM-SHA-1</mechanism>" +
	"<mechanism>PLAIN</mechanism><mechanism>EXTERNAL</mechanism><mechanism>DIGEST-MD5</mechanism>" +
	"<mechanism>OAUTHBEARER</mechanism><mechanism>X-OAUTH2</mechanism><mechanism>ANONYMOUS</mechanism></mechanisms>" +
	"<sasl-channel-binding xmlns='urn:xmpp:sasl-cb:0'><channel-binding type='tls-exporter'/></sasl-channel-binding>" +
	"<authentication xmlns='urn:xmpp:sasl:2'><mechanism>PLAIN</mechanism></authentication>" +
	"<register xmlns='http://jabber.org/features/iq-register'/>" +
	"<c xmlns='http://jabber.org/protocol/caps' hash='sha-1' node='http://prosody.im' ver='abc='/>"

const goodToken = "vF9dft4qmTc2Nvb3RlckBhbHRhdmlzdGEuY29tCg=="

func newFakeBackend(t *testing.T, mods ...func(*fakeBackend)) *fakeBackend {
	t.Helper()
	b := &fakeBackend{
		rec:      &protocoltest.SyncBuffer{},
		features: fakeFeatures,
		users:    map[string]string{"alice": "pass word", "bob": "bob-secret", "down": "x"},
		token:    goodToken,
	}
	for _, m := range mods {
		m(b)
	}
	b.addr = protocoltest.Serve(t, b.serve)
	return b
}

// fconn is one backend connection.
type fconn struct {
	*protocoltest.BackendConn
	b *fakeBackend
	d *xml.Decoder
}

type felem struct {
	XMLName xml.Name
	Mech    string `xml:"mechanism,attr"`
	ID      string `xml:"id,attr"`
	Text    string `xml:",chardata"`
}

func (c *fconn) send(s string) { io.WriteString(c.Conn, s) }

// header reads the client's stream header with a fresh decoder. Like
// ejabberd and Prosody it refuses a new document that puts whitespace in
// front of its XML declaration (XML 1.0 §2.8), with <not-well-formed/>.
func (c *fconn) header() bool {
	c.Conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	n := 0
	for {
		p, err := c.R.Peek(n + 1)
		if err != nil {
			return false
		}
		if b := p[n]; b != ' ' && b != '\t' && b != '\r' && b != '\n' {
			break
		}
		n++
	}
	if p, _ := c.R.Peek(n + 5); n > 0 && bytes.HasSuffix(p, []byte("<?xml")) {
		c.send("<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>" +
			"<stream:error><not-well-formed xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error></stream:stream>")
		return false
	}
	c.Conn.SetReadDeadline(time.Time{})
	c.d = xml.NewDecoder(c.R)
	for {
		tok, err := c.d.Token()
		if err != nil {
			return false
		}
		if _, ok := tok.(xml.StartElement); ok {
			return true
		}
	}
}

func (c *fconn) next() (*felem, bool) {
	for {
		tok, err := c.d.Token()
		if err != nil {
			return nil, false
		}
		switch t := tok.(type) {
		case xml.EndElement:
			c.send("</stream:stream>")
			return nil, false
		case xml.StartElement:
			var e felem
			if c.d.DecodeElement(&e, &t) != nil {
				return nil, false
			}
			return &e, true
		}
	}
}

func (c *fconn) open(features string) {
	c.send("<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' id='backend-id-1' from='example.com' version='1.0' xml:lang='en'>" +
		"<stream:features>" + features + "</stream:features>")
}

func (b *fakeBackend) serve(nc net.Conn) {
	defer nc.Close()
	c := &fconn{BackendConn: protocoltest.NewBackendConn(nc, b.rec), b: b}
	if b.noHeader || !c.header() {
		return
	}
	if b.streamErr != "" {
		c.send("<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' id='e1' from='example.com' version='1.0'>" +
			b.streamErr + "</stream:stream>")
		return
	}
	feats := b.features
	if b.tls != nil {
		feats = "<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'><required/></starttls>" + feats
	}
	c.open(feats)
	for {
		e, ok := c.next()
		if !ok {
			return
		}
		switch e.XMLName.Local {
		case "starttls":
			c.send("<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>" + b.inject)
			if !c.StartTLS(b.tls) || !c.header() {
				return
			}
			c.open(b.features)
		case "auth":
			if c.authenticate(e) {
				c.relayed()
				return
			}
		default:
			c.send("<stream:error><not-authorized xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error></stream:stream>")
			return
		}
	}
}

// relayed is the stream after authentication: a new header, then an echo of
// iq ids as results.
func (c *fconn) relayed() {
	if !c.header() {
		return
	}
	post := c.b.postAuth
	if post == "" {
		post = "<bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/>"
	}
	if c.b.postAuthRaw {
		c.send("<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' id='backend-id-2' from='example.com' version='1.0'>" + post)
		return
	}
	c.open(post)
	for {
		e, ok := c.next()
		if !ok {
			return
		}
		if e.XMLName.Local == "iq" {
			c.send("<iq type='result' id='" + e.ID + "'/>")
		}
	}
}

func (c *fconn) fail(cond string) {
	c.send("<failure xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><" + cond + "/></failure>")
}

// step sends a challenge and reads the next SASL element. ok is false when
// the client aborted (answered) or the connection ended.
func (c *fconn) step(challenge string) (data []byte, ok bool) {
	c.send("<challenge xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>" + base64.StdEncoding.EncodeToString([]byte(challenge)) + "</challenge>")
	e, ok := c.next()
	if !ok {
		return nil, false
	}
	switch e.XMLName.Local {
	case "abort":
		c.fail("aborted")
		return nil, false
	case "response":
		d, err := decode(e.Text)
		if err != nil {
			c.fail("incorrect-encoding")
			return nil, false
		}
		return d, true
	}
	return nil, false
}

func decode(s string) ([]byte, error) {
	s = strings.TrimSpace(s)
	if s == "=" {
		return nil, nil
	}
	return base64.StdEncoding.DecodeString(s)
}

// authenticate runs one exchange; true means success.
func (c *fconn) authenticate(e *felem) bool {
	ir, err := decode(e.Text)
	if err != nil {
		c.fail("incorrect-encoding")
		return false
	}
	switch e.Mech {
	case "PLAIN", "X-OAUTH2":
		f := bytes.Split(ir, []byte{0})
		if len(f) != 3 {
			c.fail("malformed-request")
			return false
		}
		user, secret := string(f[1]), string(f[2])
		switch {
		case user == "crash":
			c.Conn.Close()
			return false
		case user == "down":
			c.send("<failure xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><temporary-auth-failure/><text xml:lang='en'>Storage down</text></failure>")
			return false
		case e.Mech == "PLAIN" && c.b.users[user] == secret && secret != "",
			e.Mech == "X-OAUTH2" && secret == c.b.token:
			c.send("<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>")
			return true
		}
		c.send("<failure xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><not-authorized/><text xml:lang='en'>Invalid username or password</text></failure>")
		return false
	case "OAUTHBEARER":
		if strings.Contains(string(ir), "auth=Bearer "+c.b.token+"\x01") {
			c.send("<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>")
			return true
		}
		// RFC 7628 §3.2.2: an error challenge, the client's dummy, then failure.
		if _, ok := c.step(`{"status":"invalid_token","scope":"xmpp"}`); !ok {
			return false
		}
		c.fail("not-authorized")
		return false
	case "SCRAM-SHA-1", "SCRAM-SHA-256":
		if _, ok := c.step("r=cnoncesnonce,s=" + base64.StdEncoding.EncodeToString([]byte("salt")) + ",i=4096"); !ok {
			return false
		}
		c.send("<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>" + base64.StdEncoding.EncodeToString([]byte("v=c2lnbmF0dXJl")) + "</success>")
		return true
	}
	c.fail("invalid-mechanism")
	return false
}
