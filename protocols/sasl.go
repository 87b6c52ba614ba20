package protocols

// SASL decoding shared by the stream protocols (IMAP AUTHENTICATE, POP3 AUTH,
// SMTP AUTH, XMPP <auth/>). The proxy never verifies a credential; it follows
// an exchange just far enough to learn who is logging in, so the gate can
// decide before the credential leaves for the backend (docs/protocols.md §0.2).
//
// A SASLExchange is fed the decoded client messages (Response) and told of the
// decoded server challenges (Challenge). Each Response reports whether the
// username became known with that message and whether the message carries a
// secret. Errors never contain message bytes: their text is chosen from a
// fixed set of reasons, so they are safe to log and to return to callers.

import (
	"bytes"
	"encoding/base64"
	"errors"
	"strings"
	"unicode/utf8"
)

// SASL mechanism names understood by NewSASLExchange.
const (
	SASLPlain       = "PLAIN"         // RFC 4616
	SASLLogin       = "LOGIN"         // draft-murchison-sasl-login-00, MS-XLOGIN
	SASLCRAMMD5     = "CRAM-MD5"      // RFC 2195
	SASLSCRAMSHA1   = "SCRAM-SHA-1"   // RFC 5802
	SASLSCRAMSHA256 = "SCRAM-SHA-256" // RFC 7677
	SASLXOAuth2     = "XOAUTH2"       // Google XOAUTH2 protocol
	SASLXOAuth2XMPP = "X-OAUTH2"      // Google's XMPP token login: a PLAIN message whose password is a bearer token
	SASLOAuthBearer = "OAUTHBEARER"   // RFC 7628
	SASLExternal    = "EXTERNAL"      // RFC 4422 Appendix A
)

// ErrSASLMechanism is returned by NewSASLExchange for a mechanism the proxy
// cannot attribute to a user (GSSAPI, DIGEST-MD5, any *-PLUS, unknown names).
var ErrSASLMechanism = errors.New("sasl: mechanism not supported by the proxy")

// ErrSASLBase64 is returned by DecodeSASL for anything but canonical base64.
// It deliberately carries no offset or content.
var ErrSASLBase64 = errors.New("sasl: invalid base64")

// SASLError reports a malformed SASL message. Reason is one of a fixed set of
// texts and never contains bytes of the message.
type SASLError struct {
	Mechanism string
	Reason    string
}

func (e *SASLError) Error() string { return "sasl " + e.Mechanism + ": " + e.Reason }

// Fixed reasons used in SASLError. Keep them free of any message content.
const (
	reasonUnexpected   = "unexpected message"
	reasonFields       = "wrong number of fields"
	reasonEmptyUser    = "empty username"
	reasonEmptySecret  = "empty password"
	reasonBadUTF8      = "identity is not valid UTF-8"
	reasonNUL          = "NUL in identity"
	reasonNoChallenge  = "response before the server challenge"
	reasonNoSpace      = "missing space before digest"
	reasonDigest       = "digest is not 32 hex digits"
	reasonGS2          = "malformed GS2 header"
	reasonSASLName     = "malformed saslname escape"
	reasonNoUser       = "missing username"
	reasonNoNonce      = "missing nonce"
	reasonKV           = "malformed key/value list"
	reasonNoAuth       = "missing auth=Bearer"
	reasonTerminator   = "missing final separator"
	reasonFinalMessage = "malformed client-final-message"
)

// saslEncoding is RFC 4648 base64 with padding and canonical trailing bits.
var saslEncoding = base64.StdEncoding.Strict()

// DecodeSASL decodes one base64 SASL message as carried by IMAP, POP3, SMTP
// and XMPP. A lone "=" is the empty message (RFC 4959 §3, RFC 9051 §6.2.2,
// RFC 4954 §4); an empty input is also empty (an empty continuation line).
// Anything else must be canonical padded base64: no whitespace or line
// breaks, and "=" only as trailing padding ("=AAA" and "AAA=BBB" are rejected
// as RFC 9051 §6.2.2 and RFC 4954 §4 require). The error is ErrSASLBase64.
func DecodeSASL(s []byte) ([]byte, error) {
	if len(s) == 0 || (len(s) == 1 && s[0] == '=') {
		return []byte{}, nil
	}
	if len(s)%4 != 0 {
		return nil, ErrSASLBase64
	}
	for i, c := range s {
		switch {
		case 'A' <= c && c <= 'Z', 'a' <= c && c <= 'z', '0' <= c && c <= '9', c == '+', c == '/':
		case c == '=' && i >= len(s)-2:
		default:
			// Also rejects CR and LF, which encoding/base64 would skip.
			return nil, ErrSASLBase64
		}
	}
	dst := make([]byte, saslEncoding.DecodedLen(len(s)))
	n, err := saslEncoding.Decode(dst, s)
	if err != nil {
		clear(dst)
		return nil, ErrSASLBase64
	}
	return dst[:n], nil
}

// EncodeSASL encodes a SASL message as base64. The empty message encodes as
// the empty string; protocols that need "=" for an empty initial response
// must write it themselves.
func EncodeSASL(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

// SASLStep is what one client message revealed.
type SASLStep struct {
	// UserKnown is true on the message that made the username known (it is
	// reported once; SASLExchange.User holds it afterwards).
	UserKnown bool
	// Credential is true when this message carries a secret: a password, a
	// bearer token, a SCRAM proof or a CRAM-MD5 digest. Such a message must
	// not reach the backend before the gate allowed the user.
	Credential bool
}

// SASLExchange follows one SASL exchange from the proxy's seat. The zero value
// is not usable; call NewSASLExchange. It is not safe for concurrent use.
type SASLExchange struct {
	mech       string
	user       string
	authzid    string
	known      bool
	responses  int // client messages accepted so far
	challenges int // server challenges seen so far
	loginStage int // LOGIN: 0 awaiting username, 1 awaiting password, 2 done
}

// NewSASLExchange starts following mechanism mech (case-insensitive). It
// returns ErrSASLMechanism for mechanisms the proxy cannot attribute,
// including every channel-binding *-PLUS variant (docs/protocols.md §1.8).
func NewSASLExchange(mech string) (*SASLExchange, error) {
	m, ok := saslName(mech)
	if !ok {
		return nil, ErrSASLMechanism
	}
	return &SASLExchange{mech: m}, nil
}

// saslName returns the canonical name of a mechanism NewSASLExchange
// follows.
func saslName(mech string) (string, bool) {
	m := strings.ToUpper(mech)
	switch m {
	case SASLPlain, SASLLogin, SASLCRAMMD5, SASLSCRAMSHA1, SASLSCRAMSHA256,
		SASLXOAuth2, SASLXOAuth2XMPP, SASLOAuthBearer, SASLExternal:
		return m, true
	}
	return "", false
}

// Mechanism returns the canonical (upper-case) mechanism name.
func (x *SASLExchange) Mechanism() string { return x.mech }

// User returns the identity the session is attributed to and gated on, or ""
// while unknown: the authcid for PLAIN and SCRAM, the username for LOGIN and
// CRAM-MD5, user= for XOAUTH2, a= for OAUTHBEARER, the authzid for EXTERNAL.
// X-OAUTH2 carries a PLAIN message and names the user as PLAIN does.
func (x *SASLExchange) User() string { return x.user }

// AuthzID returns a distinct authorization identity (PLAIN authzid, SCRAM
// a=) when the client asked to act as someone else, or "". Proxies should gate
// it too: it names the mailbox that will be opened.
func (x *SASLExchange) AuthzID() string { return x.authzid }

// UserKnown reports whether User is known.
func (x *SASLExchange) UserKnown() bool { return x.known }

// ServerFirst reports whether the first challenge must come from the server
// (CRAM-MD5: the backend's challenge is what the digest covers, so a proxy
// cannot make it up). Such mechanisms accept no initial response.
func (x *SASLExchange) ServerFirst() bool { return x.mech == SASLCRAMMD5 }

// LocalChallenge returns the challenge a proxy may send the client itself,
// before the backend is involved, to obtain the message that names the user:
// the empty challenge for client-first mechanisms, "Username:" for LOGIN. ok
// is false once that message has been received, and always for server-first
// mechanisms.
func (x *SASLExchange) LocalChallenge() (challenge []byte, ok bool) {
	switch {
	case x.mech == SASLLogin && x.loginStage == 0:
		return []byte("Username:"), true
	case x.mech == SASLLogin, x.ServerFirst(), x.responses > 0:
		return nil, false
	}
	return []byte{}, true
}

// Challenge records a decoded challenge the client was sent, whether it came
// from the backend or from LocalChallenge. CRAM-MD5 needs one before the
// response; OAUTHBEARER and XOAUTH2 accept their dummy message only after the
// server's error challenge.
func (x *SASLExchange) Challenge(data []byte) { x.challenges++ }

// Response interprets the next decoded client message. An error means the
// message is malformed for the mechanism; a proxy should then fail the
// exchange itself rather than forward what it cannot attribute.
func (x *SASLExchange) Response(msg []byte) (SASLStep, error) {
	n := x.responses
	var step SASLStep
	var err error
	switch x.mech {
	case SASLPlain, SASLXOAuth2XMPP:
		step, err = x.plain(n, msg)
	case SASLLogin:
		step, err = x.login(msg)
	case SASLCRAMMD5:
		step, err = x.cramMD5(n, msg)
	case SASLSCRAMSHA1, SASLSCRAMSHA256:
		step, err = x.scram(n, msg)
	case SASLXOAuth2:
		step, err = x.xoauth2(n, msg)
	case SASLOAuthBearer:
		step, err = x.oauthBearer(n, msg)
	case SASLExternal:
		step, err = x.external(n, msg)
	default:
		return SASLStep{}, ErrSASLMechanism
	}
	if err != nil {
		return SASLStep{}, err
	}
	x.responses++
	return step, nil
}

// ResponseLine is Response for a message still in base64, as a client's
// continuation line carries it; the decoded copy is wiped. Invalid base64 is
// ErrSASLBase64.
func (x *SASLExchange) ResponseLine(line []byte) (SASLStep, error) {
	msg, err := DecodeSASL(line)
	if err != nil {
		return SASLStep{}, err
	}
	defer clear(msg)
	return x.Response(msg)
}

func (x *SASLExchange) fail(reason string) error {
	return &SASLError{Mechanism: x.mech, Reason: reason}
}

// setUser records the identity after checking it is printable-safe text.
func (x *SASLExchange) setUser(user, authzid []byte) (SASLStep, error) {
	if len(user) == 0 {
		return SASLStep{}, x.fail(reasonEmptyUser)
	}
	for _, id := range [][]byte{user, authzid} {
		if !utf8.Valid(id) {
			return SASLStep{}, x.fail(reasonBadUTF8)
		}
		if bytes.IndexByte(id, 0) >= 0 {
			return SASLStep{}, x.fail(reasonNUL)
		}
	}
	x.user = string(user)
	x.authzid = string(authzid)
	if x.authzid == x.user {
		x.authzid = ""
	}
	x.known = true
	return SASLStep{UserKnown: true}, nil
}

// plain: message = [authzid] NUL authcid NUL passwd (RFC 4616 §2).
func (x *SASLExchange) plain(n int, msg []byte) (SASLStep, error) {
	if n > 0 {
		return SASLStep{}, x.fail(reasonUnexpected)
	}
	authzid, rest, ok := bytes.Cut(msg, []byte{0})
	if !ok {
		return SASLStep{}, x.fail(reasonFields)
	}
	authcid, passwd, ok := bytes.Cut(rest, []byte{0})
	if !ok || bytes.IndexByte(passwd, 0) >= 0 {
		return SASLStep{}, x.fail(reasonFields)
	}
	if len(passwd) == 0 {
		return SASLStep{}, x.fail(reasonEmptySecret)
	}
	step, err := x.setUser(authcid, authzid)
	step.Credential = true
	return step, err
}

// login: the first non-empty message is the username (as a reply to
// "Username:", or as the initial response per MS-XLOGIN §3.1.5.1), the next
// one the password. An empty message sent before any challenge is an empty
// initial response and leaves the exchange waiting for the username; an empty
// answer to "Username:" is an error.
func (x *SASLExchange) login(msg []byte) (SASLStep, error) {
	switch x.loginStage {
	case 0:
		if len(msg) == 0 && x.responses == 0 && x.challenges == 0 {
			return SASLStep{}, nil // "=" initial response: LocalChallenge still offers "Username:"
		}
		step, err := x.setUser(msg, nil)
		if err == nil {
			x.loginStage = 1
		}
		return step, err
	case 1:
		x.loginStage = 2
		return SASLStep{Credential: true}, nil
	}
	return SASLStep{}, x.fail(reasonUnexpected)
}

// cramMD5: response = user SP hex(HMAC-MD5(secret, challenge)), split at the
// last space because user names may contain spaces (RFC 2195 §2).
func (x *SASLExchange) cramMD5(n int, msg []byte) (SASLStep, error) {
	if n > 0 {
		return SASLStep{}, x.fail(reasonUnexpected)
	}
	if x.challenges == 0 {
		return SASLStep{}, x.fail(reasonNoChallenge)
	}
	i := bytes.LastIndexByte(msg, ' ')
	if i < 0 {
		return SASLStep{}, x.fail(reasonNoSpace)
	}
	digest := msg[i+1:]
	if len(digest) != 32 {
		return SASLStep{}, x.fail(reasonDigest)
	}
	for _, c := range digest {
		if !isHex(c) {
			return SASLStep{}, x.fail(reasonDigest)
		}
	}
	step, err := x.setUser(msg[:i], nil)
	step.Credential = true
	return step, err
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

// scram follows RFC 5802 §7: client-first-message names the user, the
// client-final-message carries the proof, and (IMAP, POP3, SMTP) an empty
// message answers the server-final v= sent as a challenge (§5).
func (x *SASLExchange) scram(n int, msg []byte) (SASLStep, error) {
	switch n {
	case 0:
		authzid, bare, err := x.gs2Header(msg, false)
		if err != nil {
			return SASLStep{}, err
		}
		// client-first-message-bare = [reserved-mext ","] username "," nonce ["," extensions]
		attrs := bytes.Split(bare, []byte{','})
		if len(attrs) > 0 && bytes.HasPrefix(attrs[0], []byte("m=")) {
			attrs = attrs[1:] // reserved-mext: the backend will fail it
		}
		if len(attrs) < 2 || !bytes.HasPrefix(attrs[0], []byte("n=")) {
			return SASLStep{}, x.fail(reasonNoUser)
		}
		if !bytes.HasPrefix(attrs[1], []byte("r=")) || len(attrs[1]) == 2 {
			return SASLStep{}, x.fail(reasonNoNonce)
		}
		user, ok := unescapeSASLName(attrs[0][2:])
		if !ok {
			return SASLStep{}, x.fail(reasonSASLName)
		}
		return x.setUser(user, authzid)
	case 1:
		// client-final-message = channel-binding "," nonce ["," extensions] "," proof
		if !bytes.HasPrefix(msg, []byte("c=")) {
			return SASLStep{}, x.fail(reasonFinalMessage)
		}
		return SASLStep{Credential: true}, nil
	case 2:
		if len(msg) != 0 {
			return SASLStep{}, x.fail(reasonUnexpected)
		}
		return SASLStep{}, nil
	}
	return SASLStep{}, x.fail(reasonUnexpected)
}

// gs2Header parses "gs2-cbind-flag , [a=saslname] ," (RFC 5802 §7, RFC 5801
// §4) and returns the authzid and what follows. With tolerateUser, the
// nonstandard "user=" seen in RFC 7628 §4.4's example is accepted for "a=".
func (x *SASLExchange) gs2Header(msg []byte, tolerateUser bool) (authzid, rest []byte, err error) {
	flag, rest, ok := bytes.Cut(msg, []byte{','})
	if !ok {
		return nil, nil, x.fail(reasonGS2)
	}
	switch {
	case len(flag) == 1 && (flag[0] == 'n' || flag[0] == 'y'):
	case len(flag) > 2 && flag[0] == 'p' && flag[1] == '=':
		for _, c := range flag[2:] {
			if !(isAlnum(c) || c == '.' || c == '-') {
				return nil, nil, x.fail(reasonGS2)
			}
		}
	default:
		return nil, nil, x.fail(reasonGS2)
	}
	az, rest, ok := bytes.Cut(rest, []byte{','})
	if !ok {
		return nil, nil, x.fail(reasonGS2)
	}
	switch {
	case len(az) == 0:
		return nil, rest, nil
	case bytes.HasPrefix(az, []byte("a=")):
		az = az[2:]
	case tolerateUser && bytes.HasPrefix(az, []byte("user=")):
		az = az[5:]
	default:
		return nil, nil, x.fail(reasonGS2)
	}
	name, ok := unescapeSASLName(az)
	if !ok || len(name) == 0 {
		return nil, nil, x.fail(reasonSASLName)
	}
	return name, rest, nil
}

func isAlnum(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z'
}

// unescapeSASLName undoes RFC 5802 §7 saslname escaping: "=2C" is ",", "=3D"
// is "=" (ABNF strings are case-insensitive), any other "=" is an error.
func unescapeSASLName(s []byte) ([]byte, bool) {
	if bytes.IndexByte(s, '=') < 0 {
		return s, true
	}
	out := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		if s[i] != '=' {
			out = append(out, s[i])
			continue
		}
		if i+2 >= len(s) {
			return nil, false
		}
		switch strings.ToUpper(string(s[i+1 : i+3])) {
		case "2C":
			out = append(out, ',')
		case "3D":
			out = append(out, '=')
		default:
			return nil, false
		}
		i += 2
	}
	return out, true
}

// xoauth2: "user=" User ^A "auth=Bearer " token ^A ^A (Google XOAUTH2). After
// a failure the server sends a JSON challenge and the client answers with an
// empty (or ^A) dummy message before the tagged failure.
func (x *SASLExchange) xoauth2(n int, msg []byte) (SASLStep, error) {
	if n > 0 {
		return x.oauthDummy(n, msg)
	}
	kv, err := x.kvList(msg)
	if err != nil {
		return SASLStep{}, err
	}
	user, ok := kv["user"]
	if !ok {
		return SASLStep{}, x.fail(reasonNoUser)
	}
	if !hasBearer(kv) {
		return SASLStep{}, x.fail(reasonNoAuth)
	}
	step, err := x.setUser(user, nil)
	step.Credential = true
	return step, err
}

// oauthBearer: gs2-header ^A *(key "=" value ^A) ^A (RFC 7628 §3.1). The user
// is the gs2 authzid a= (Dovecot requires it); "n,user=...," is tolerated.
func (x *SASLExchange) oauthBearer(n int, msg []byte) (SASLStep, error) {
	if n > 0 {
		return x.oauthDummy(n, msg)
	}
	authzid, rest, err := x.gs2Header(msg, true)
	if err != nil {
		return SASLStep{}, err
	}
	if len(rest) == 0 || rest[0] != 0x01 {
		return SASLStep{}, x.fail(reasonKV)
	}
	kv, err := x.kvList(rest[1:])
	if err != nil {
		return SASLStep{}, err
	}
	if !hasBearer(kv) {
		return SASLStep{}, x.fail(reasonNoAuth)
	}
	if len(authzid) == 0 {
		return SASLStep{}, x.fail(reasonNoUser)
	}
	step, err := x.setUser(authzid, nil)
	step.Credential = true
	return step, err
}

// oauthDummy accepts the one message a client sends after the server's error
// challenge: empty, or a single ^A (RFC 7628 §3.2.3).
func (x *SASLExchange) oauthDummy(n int, msg []byte) (SASLStep, error) {
	if n == 1 && x.challenges > 0 && (len(msg) == 0 || (len(msg) == 1 && msg[0] == 0x01)) {
		return SASLStep{}, nil
	}
	return SASLStep{}, x.fail(reasonUnexpected)
}

// kvList parses key=value pairs each ended by ^A, followed by a final ^A.
// Values are returned as sub-slices of msg; later duplicates are ignored.
func (x *SASLExchange) kvList(msg []byte) (map[string][]byte, error) {
	if !bytes.HasSuffix(msg, []byte{0x01, 0x01}) {
		return nil, x.fail(reasonTerminator)
	}
	body := msg[:len(msg)-1] // each pair keeps its ^A terminator
	kv := make(map[string][]byte)
	for len(body) > 0 {
		pair, rest, _ := bytes.Cut(body, []byte{0x01})
		body = rest
		k, v, ok := bytes.Cut(pair, []byte{'='})
		if !ok || len(k) == 0 {
			return nil, x.fail(reasonKV)
		}
		for _, c := range k {
			if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z') {
				return nil, x.fail(reasonKV)
			}
		}
		key := strings.ToLower(string(k))
		if _, dup := kv[key]; !dup {
			kv[key] = v
		}
	}
	return kv, nil
}

func hasBearer(kv map[string][]byte) bool {
	auth, ok := kv["auth"]
	if !ok || len(auth) <= len("Bearer ") {
		return false
	}
	return strings.EqualFold(string(auth[:len("Bearer ")]), "Bearer ")
}

// external: the message is an optional authzid (RFC 4422 Appendix A). The
// user stays unknown when it is empty: the identity is the client
// certificate, which a TLS-terminating proxy keeps to itself.
func (x *SASLExchange) external(n int, msg []byte) (SASLStep, error) {
	if n > 0 {
		return SASLStep{}, x.fail(reasonUnexpected)
	}
	if len(msg) == 0 {
		return SASLStep{}, nil
	}
	return x.setUser(msg, nil)
}
