package demo

import (
	"bufio"
	"bytes"
	"crypto/hmac"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/xml"
	"errors"
	"fmt"
	"hash"
	"io"
	"net"
	"strings"
	"sync"
	"time"
)

// XMPPBackend is a small XMPP client-to-server service (RFC 6120, RFC 6121)
// on loopback, for `mailgate demo`: SASL PLAIN, SCRAM-SHA-1 and
// SCRAM-SHA-256 (RFC 5802, RFC 7677) for the demo users, the stream restart
// after success, resource binding (RFC 6120 §7), the legacy session request
// (accepted), presence (accepted, not broadcast), roster and ping queries
// (empty answers), and <message/> routing between the users connected to it.
// It speaks plain TCP only: mailgate terminates TLS in front of it, so it
// offers no <starttls/>. Nothing is stored.
type XMPPBackend struct {
	srv    *tcpServer
	domain string
	users  map[string]*xmppUser // by localpart
	secret []byte               // salts for unknown users (no enumeration through SCRAM)

	mu    sync.Mutex
	bound map[string]*xmppConn // full JID -> session
}

type xmppUser struct {
	password string
	salt     []byte
	keys     map[string]scramKeys // by mechanism
}

type scramKeys struct{ stored, server []byte }

// scramIter is the PBKDF2 iteration count (RFC 7677 §4 recommends at least 4096).
const scramIter = 4096

var scramHashes = map[string]func() hash.Hash{"SCRAM-SHA-1": sha1.New, "SCRAM-SHA-256": sha256.New}

const (
	nsStreams = "http://etherx.jabber.org/streams"
	nsSASL    = "urn:ietf:params:xml:ns:xmpp-sasl"
	nsBind    = "urn:ietf:params:xml:ns:xmpp-bind"
	nsStanzas = "urn:ietf:params:xml:ns:xmpp-stanzas"
	nsXML     = "http://www.w3.org/XML/1998/namespace"
)

// StartXMPP serves domain on addr (127.0.0.1:0 for any port). users maps
// addresses (user@domain; other domains are ignored) or bare localparts to
// passwords.
func StartXMPP(addr, domain string, users map[string]string) (*XMPPBackend, error) {
	b := &XMPPBackend{domain: strings.ToLower(domain), users: map[string]*xmppUser{},
		bound: map[string]*xmppConn{}, secret: make([]byte, 32)}
	rand.Read(b.secret)
	for name, pass := range users {
		local, dom, ok := strings.Cut(strings.ToLower(name), "@")
		if ok && dom != b.domain {
			continue
		}
		u := &xmppUser{password: pass, salt: make([]byte, 16), keys: map[string]scramKeys{}}
		rand.Read(u.salt)
		for mech, h := range scramHashes {
			u.keys[mech] = deriveKeys(h, pass, u.salt)
		}
		b.users[local] = u
	}
	srv, err := serveTCP(addr, func(nc net.Conn) {
		c := &xmppConn{b: b, nc: nc, lr: &limitReader{r: bufio.NewReader(nc), max: maxXMPPStanza}}
		c.serve()
	})
	if err != nil {
		return nil, err
	}
	b.srv = srv
	return b, nil
}

// Addr is the backend's address.
func (b *XMPPBackend) Addr() string { return b.srv.Addr() }

// Close stops the backend and ends every session.
func (b *XMPPBackend) Close() error { return b.srv.Close() }

// maxXMPPStanza bounds one stream header or first-level element.
const maxXMPPStanza = 256 << 10

// limitReader is the decoder's input: it counts the bytes of the current
// first-level unit. It is an io.ByteReader, so encoding/xml reads it byte by
// byte and never buffers past an element (a new decoder can take over at a
// stream restart).
type limitReader struct {
	r      *bufio.Reader
	n, max int
}

var errStanzaTooBig = errors.New("stanza too large")

func (l *limitReader) ReadByte() (byte, error) {
	if l.n >= l.max {
		return 0, errStanzaTooBig
	}
	l.n++
	return l.r.ReadByte()
}

func (l *limitReader) Read(p []byte) (int, error) {
	if l.n >= l.max {
		return 0, errStanzaTooBig
	}
	p = p[:min(len(p), l.max-l.n)]
	n, err := l.r.Read(p)
	l.n += n
	return n, err
}

// xmppConn is one client session.
type xmppConn struct {
	b   *XMPPBackend
	nc  net.Conn
	lr  *limitReader
	d   *xml.Decoder
	wmu sync.Mutex

	user string // localpart, once authenticated
	jid  string // full JID, once bound
}

// element is a first-level element as read: its attributes and raw content.
type element struct {
	XMLName xml.Name
	Attrs   []xml.Attr `xml:",any,attr"`
	Inner   []byte     `xml:",innerxml"`
}

func (e *element) attr(space, local string) string { return attrOf(e.Attrs, space, local) }

func (c *xmppConn) send(s string) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.nc.SetWriteDeadline(time.Now().Add(30 * time.Second))
	_, err := io.WriteString(c.nc, s)
	return err
}

// streamError ends the stream (RFC 6120 §4.9).
func (c *xmppConn) streamError(cond string) error {
	c.send("<stream:error><" + cond + " xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error></stream:stream>")
	return errors.New("stream error " + cond)
}

func (c *xmppConn) serve() {
	defer func() { // serveTCP closes nc
		c.b.mu.Lock()
		if c.jid != "" && c.b.bound[c.jid] == c {
			delete(c.b.bound, c.jid)
		}
		c.b.mu.Unlock()
	}()
	c.nc.SetReadDeadline(time.Now().Add(2 * time.Minute)) // until authenticated
	if err := c.openStream(); err != nil {
		return
	}
	for c.user == "" {
		el, err := c.next()
		if err != nil {
			return
		}
		if el.XMLName != (xml.Name{Space: nsSASL, Local: "auth"}) {
			c.streamError("not-authorized")
			return
		}
		if err := c.authenticate(el); err != nil {
			return
		}
	}
	c.nc.SetReadDeadline(time.Time{})
	// RFC 6120 §6.4.6: the client opens a new stream; a new decoder starts
	// where the old one stopped.
	if err := c.openStream(); err != nil {
		return
	}
	for {
		el, err := c.next()
		if err != nil {
			if errors.Is(err, io.EOF) {
				c.send("</stream:stream>")
			}
			return
		}
		if err := c.stanza(el); err != nil {
			return
		}
	}
}

// openStream reads the client's stream header and answers with ours and the
// features of the stream's state.
// Errors before it are sent after a header of ours (RFC 6120 §4.9.1.2).
func (c *xmppConn) openStream() error {
	c.d = xml.NewDecoder(c.lr)
	c.lr.n = 0
	header := "<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' id='" +
		randomID() + "' from='" + c.b.domain + "' version='1.0' xml:lang='en'>"
	fail := func(cond string) error {
		c.send(header)
		return c.streamError(cond)
	}
	for {
		tok, err := c.d.Token()
		if err != nil {
			return fail("not-well-formed")
		}
		switch t := tok.(type) {
		case xml.CharData:
		case xml.ProcInst:
			if t.Target != "xml" {
				return fail("restricted-xml")
			}
		case xml.StartElement:
			switch {
			case t.Name.Space != nsStreams || t.Name.Local != "stream":
				return fail("invalid-namespace")
			case !strings.EqualFold(attrOf(t.Attr, "", "to"), c.b.domain):
				return fail("host-unknown")
			}
			features := "<mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><mechanism>SCRAM-SHA-256</mechanism>" +
				"<mechanism>SCRAM-SHA-1</mechanism><mechanism>PLAIN</mechanism></mechanisms>"
			if c.user != "" {
				features = "<bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/><session xmlns='urn:ietf:params:xml:ns:xmpp-session'><optional/></session>"
			}
			return c.send(header + "<stream:features>" + features + "</stream:features>")
		default: // DTDs and comments have no place in XMPP (RFC 6120 §11.1)
			return fail("restricted-xml")
		}
	}
}

// next reads the next first-level element; io.EOF means the stream was
// closed.
func (c *xmppConn) next() (*element, error) {
	for {
		c.lr.n = 0
		tok, err := c.d.Token()
		var syntax *xml.SyntaxError
		if errors.As(err, &syntax) {
			return nil, c.streamError("not-well-formed")
		} else if err != nil {
			return nil, err
		}
		switch t := tok.(type) {
		case xml.CharData:
			continue
		case xml.EndElement:
			return nil, io.EOF
		case xml.StartElement:
			el := &element{}
			if err := c.d.DecodeElement(el, &t); err != nil {
				if errors.As(err, &syntax) {
					return nil, c.streamError("not-well-formed")
				}
				return nil, err
			}
			return el, nil
		default:
			return nil, c.streamError("restricted-xml")
		}
	}
}

func attrOf(attrs []xml.Attr, space, local string) string {
	for _, a := range attrs {
		if a.Name.Space == space && a.Name.Local == local {
			return a.Value
		}
	}
	return ""
}

func randomID() string {
	var b [8]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// esc escapes text for character data and quoted attribute values alike.
func esc(s string) string {
	var b strings.Builder
	xml.EscapeText(&b, []byte(s))
	return b.String()
}

// SASL (RFC 6120 §6.4).

// saslFailure answers with a failure condition (RFC 6120 §6.5).
func (c *xmppConn) saslFailure(cond string) error {
	return c.send("<failure xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><" + cond + "/></failure>")
}

// saslData decodes base64 SASL data; "=" and nothing are both empty.
func saslData(inner []byte) ([]byte, bool) {
	t := bytes.TrimSpace(inner)
	if len(t) == 0 || string(t) == "=" {
		return []byte{}, true
	}
	b, err := base64.StdEncoding.Strict().DecodeString(string(t))
	return b, err == nil
}

// challenge sends a challenge and reads the answer. ok is false when the
// exchange ended (aborted or broken, already answered).
func (c *xmppConn) challenge(data []byte) (resp []byte, ok bool, err error) {
	enc := base64.StdEncoding.EncodeToString(data)
	if enc == "" {
		enc = "="
	}
	if err := c.send("<challenge xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>" + enc + "</challenge>"); err != nil {
		return nil, false, err
	}
	el, err := c.next()
	if err != nil {
		return nil, false, err
	}
	switch el.XMLName {
	case xml.Name{Space: nsSASL, Local: "response"}:
		if resp, ok = saslData(el.Inner); !ok {
			return nil, false, c.saslFailure("incorrect-encoding")
		}
		return resp, true, nil
	case xml.Name{Space: nsSASL, Local: "abort"}:
		return nil, false, c.saslFailure("aborted")
	}
	return nil, false, c.streamError("not-authorized")
}

// authenticate runs one exchange; on success c.user is set and the client
// was told.
func (c *xmppConn) authenticate(auth *element) error {
	mech := auth.attr("", "mechanism")
	ir, ok := saslData(auth.Inner)
	if !ok {
		return c.saslFailure("incorrect-encoding")
	}
	if len(ir) == 0 { // no initial response: ask for it with an empty challenge
		var err error
		if ir, ok, err = c.challenge(nil); !ok {
			return err
		}
	}
	var user string
	var final []byte
	switch {
	case mech == "PLAIN":
		user = c.plain(ir)
	case scramHashes[mech] != nil:
		var err error
		if user, final, err = c.scram(mech, ir); err != nil || user == "" {
			return err
		}
	default:
		return c.saslFailure("invalid-mechanism")
	}
	if user == "" {
		return c.saslFailure("not-authorized")
	}
	data := ""
	if final != nil {
		data = base64.StdEncoding.EncodeToString(final)
	}
	c.user = user
	return c.send("<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>" + data + "</success>")
}

// localpart accepts "user" or "user@domain" for this domain.
func (c *xmppConn) localpart(name string) string {
	local, dom, ok := strings.Cut(strings.ToLower(name), "@")
	if ok && dom != c.b.domain {
		return ""
	}
	return local
}

// plain checks [authzid] NUL authcid NUL passwd (RFC 4616 §2); the authzid
// may only name the user itself.
func (c *xmppConn) plain(msg []byte) string {
	f := strings.Split(string(msg), "\x00")
	if len(f) != 3 {
		return ""
	}
	local := c.localpart(f[1])
	u := c.b.users[local]
	if u == nil || (f[0] != "" && c.localpart(f[0]) != local) {
		return ""
	}
	if subtle.ConstantTimeCompare([]byte(f[2]), []byte(u.password)) != 1 {
		return ""
	}
	return local
}

// deriveKeys computes StoredKey and ServerKey (RFC 5802 §3). The password is
// used as given (the demo's are ASCII, which SASLprep leaves alone).
func deriveKeys(h func() hash.Hash, password string, salt []byte) scramKeys {
	salted, err := pbkdf2.Key(h, password, salt, scramIter, h().Size())
	if err != nil {
		panic(err) // only for invalid parameters, which these are not
	}
	clientKey := hmacOf(h, salted, "Client Key")
	stored := h()
	stored.Write(clientKey)
	return scramKeys{stored: stored.Sum(nil), server: hmacOf(h, salted, "Server Key")}
}

func hmacOf(h func() hash.Hash, key []byte, s string) []byte {
	m := hmac.New(h, key)
	m.Write([]byte(s))
	return m.Sum(nil)
}

// scram is the server side of RFC 5802 §5 without channel binding (no *-PLUS
// is offered, so "p=" is refused and "y" accepted). It returns the user and
// the server-final-message (v=) on success; user "" means the client was told
// of the failure.
func (c *xmppConn) scram(mech string, clientFirst []byte) (user string, final []byte, err error) {
	h := scramHashes[mech]
	parts := strings.SplitN(string(clientFirst), ",", 3)
	if len(parts) != 3 || (parts[0] != "n" && parts[0] != "y") || !strings.HasPrefix(parts[2], "n=") {
		return "", nil, c.saslFailure("malformed-request")
	}
	gs2, bare := parts[0]+","+parts[1]+",", parts[2]
	var name, cnonce string
	for _, a := range strings.Split(bare, ",") {
		if v, ok := strings.CutPrefix(a, "n="); ok {
			name = strings.NewReplacer("=2C", ",", "=3D", "=").Replace(v)
		} else if v, ok := strings.CutPrefix(a, "r="); ok {
			cnonce = v
		}
	}
	local := c.localpart(name)
	authz := strings.TrimPrefix(parts[1], "a=")
	if cnonce == "" || local == "" || (authz != "" && c.localpart(authz) != local) {
		return "", nil, c.saslFailure("malformed-request")
	}
	u := c.b.users[local]
	salt, keys := hmacOf(sha256.New, c.b.secret, local)[:16], scramKeys{}
	if u != nil {
		salt, keys = u.salt, u.keys[mech]
	}
	serverFirst := fmt.Sprintf("r=%s%s,s=%s,i=%d", cnonce, randomID(), base64.StdEncoding.EncodeToString(salt), scramIter)
	resp, ok, err := c.challenge([]byte(serverFirst))
	if !ok {
		return "", nil, err
	}
	withoutProof, proofB64, _ := strings.Cut(string(resp), ",p=")
	nonce := strings.TrimPrefix(serverFirst[:strings.IndexByte(serverFirst, ',')], "r=")
	proof, err := base64.StdEncoding.DecodeString(proofB64)
	if err != nil || withoutProof != "c="+base64.StdEncoding.EncodeToString([]byte(gs2))+",r="+nonce || u == nil {
		return "", nil, c.saslFailure("not-authorized")
	}
	authMsg := bare + "," + serverFirst + "," + withoutProof
	sig := hmacOf(h, keys.stored, authMsg)
	if len(proof) != len(sig) {
		return "", nil, c.saslFailure("not-authorized")
	}
	for i := range proof {
		proof[i] ^= sig[i] // proof XOR ClientSignature = ClientKey
	}
	stored := h()
	stored.Write(proof)
	if subtle.ConstantTimeCompare(stored.Sum(nil), keys.stored) != 1 {
		return "", nil, c.saslFailure("not-authorized")
	}
	return local, []byte("v=" + base64.StdEncoding.EncodeToString(hmacOf(h, keys.server, authMsg))), nil
}

// Stanzas (RFC 6120 §8, RFC 6121).

// stanza handles one first-level element of the authenticated stream.
func (c *xmppConn) stanza(el *element) error {
	if el.XMLName.Space != "jabber:client" {
		return c.streamError("unsupported-stanza-type")
	}
	switch el.XMLName.Local {
	case "iq":
		return c.iq(el)
	case "message":
		if c.jid == "" {
			return c.streamError("not-authorized") // RFC 6120 §7.1: bind first
		}
		return c.route(el)
	case "presence":
		return nil
	}
	return c.streamError("unsupported-stanza-type")
}

// payload returns the name and inner content of an iq's first child.
func payload(inner []byte) (xml.Name, string) {
	d := xml.NewDecoder(bytes.NewReader(inner))
	for {
		tok, err := d.Token()
		if err != nil {
			return xml.Name{}, ""
		}
		if t, ok := tok.(xml.StartElement); ok {
			var v struct {
				Resource string `xml:"resource"`
			}
			d.DecodeElement(&v, &t)
			return t.Name, v.Resource
		}
	}
}

func (c *xmppConn) iq(el *element) error {
	id, typ := el.attr("", "id"), el.attr("", "type")
	if typ != "get" && typ != "set" {
		return nil // results and errors need no answer
	}
	reply := "<iq type='result' id='" + esc(id) + "'"
	if c.jid != "" {
		reply += " to='" + esc(c.jid) + "'"
	}
	name, resource := payload(el.Inner)
	switch {
	case name == xml.Name{Space: nsBind, Local: "bind"} && typ == "set" && c.jid == "":
		return c.send(reply + "><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><jid>" + esc(c.bind(resource)) + "</jid></bind></iq>")
	case name == xml.Name{Space: "urn:ietf:params:xml:ns:xmpp-session", Local: "session"},
		name == xml.Name{Space: "urn:xmpp:ping", Local: "ping"}:
		return c.send(reply + "/>")
	case name == xml.Name{Space: "jabber:iq:roster", Local: "query"} && typ == "get":
		return c.send(reply + "><query xmlns='jabber:iq:roster'/></iq>")
	}
	return c.send("<iq type='error' id='" + esc(id) + "'><error type='cancel'><service-unavailable xmlns='" + nsStanzas + "'/></error></iq>")
}

// bind assigns the full JID (RFC 6120 §7.6): the requested resource unless
// it is empty, odd or taken, else a generated one.
func (c *xmppConn) bind(resource string) string {
	bare := c.user + "@" + c.b.domain
	c.b.mu.Lock()
	defer c.b.mu.Unlock()
	if resource == "" || len(resource) > 64 || strings.ContainsAny(resource, "<>&'\"/") || c.b.bound[bare+"/"+resource] != nil {
		resource = "mailgate-demo-" + randomID()
	}
	c.jid = bare + "/" + resource
	c.b.bound[c.jid] = c
	return c.jid
}

// route delivers a message to the recipient's bound sessions (a full JID:
// that session; a bare JID: all of them), with 'from' set to the sender
// (RFC 6120 §8.1.2.1). Undeliverable messages bounce with
// <service-unavailable/> (RFC 6121 §8.5.2).
func (c *xmppConn) route(el *element) error {
	to := el.attr("", "to")
	typ := el.attr("", "type")
	bare, _, _ := strings.Cut(strings.ToLower(to), "/")
	var targets []*xmppConn
	c.b.mu.Lock()
	for j, s := range c.b.bound {
		if strings.EqualFold(j, to) || (!strings.Contains(to, "/") && strings.HasPrefix(strings.ToLower(j), bare+"/")) {
			targets = append(targets, s)
		}
	}
	c.b.mu.Unlock()
	var b strings.Builder
	b.WriteString("<message from='" + esc(c.jid) + "' to='" + esc(to) + "'")
	for _, a := range el.Attrs {
		switch {
		case a.Name.Space == "" && (a.Name.Local == "type" || a.Name.Local == "id"):
			b.WriteString(" " + a.Name.Local + "='" + esc(a.Value) + "'")
		case a.Name.Space == nsXML && a.Name.Local == "lang":
			b.WriteString(" xml:lang='" + esc(a.Value) + "'")
		case a.Name.Space == "xmlns": // prefixes the content may use
			b.WriteString(" xmlns:" + a.Name.Local + "='" + esc(a.Value) + "'")
		}
	}
	b.WriteString(">")
	b.Write(el.Inner)
	b.WriteString("</message>")
	if len(targets) == 0 {
		if typ == "error" {
			return nil
		}
		return c.send("<message type='error' from='" + esc(to) + "' to='" + esc(c.jid) + "' id='" + esc(el.attr("", "id")) +
			"'><error type='cancel'><service-unavailable xmlns='" + nsStanzas + "'/></error></message>")
	}
	for _, t := range targets {
		if err := t.send(b.String()); err != nil {
			t.nc.Close() // a stuck recipient does not hold up the sender
		}
	}
	return nil
}
