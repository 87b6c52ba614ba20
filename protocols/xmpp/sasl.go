package xmpp

import (
	"strings"

	"github.com/mailgate/mailgate/protocols"
)

// SASL negotiation (RFC 6120 §6.4) with protocols.Dialogue.RelaySASL,
// which describes the exchange. The message that names the user goes to
// the backend as the initial response of a fresh <auth/> (XMPP always
// allows one, §6.4.2), except LOGIN's. Everything relayed is rebuilt from
// checked base64.
//
// A new <auth/> during an exchange restarts it (the backend's half is
// aborted first); any other element aborts it and is then handled as if no
// exchange were running.

// authenticate runs the exchange <auth/> opened. next is an element the
// client sent instead of continuing the exchange, for the caller to handle.
func (ss *session) authenticate(auth *Element) (done bool, next *Element, err error) {
	mech, _ := auth.Attr("mechanism")
	if !ss.offered[mech] {
		ss.SASLUnsupported(mech)
		ss.out(saslFailure("invalid-mechanism", "", ""))
		return false, nil, ss.countBad()
	}
	x, err := protocols.SASLOffer{HideCleartext: ss.tlsRequired()}.Exchange(mech)
	if err != nil { // not offered then: defensive
		ss.out(saslFailure("encryption-required", "", ""))
		return false, nil, ss.countBad()
	}
	ir := []byte(strings.TrimSpace(auth.Text))
	defer clear(ir)
	f := &saslFraming{ss: ss}
	defer func() { clear(f.data) }()
	done, err = ss.RelaySASL(f, protocols.SASLRelay{
		Exchange:  x,
		IR:        ir,
		HasIR:     len(ir) > 0,
		MaxIR:     ss.maxSASL(),
		MaxRounds: ss.opts.MaxSASLRounds,
		Qualify:   ss.qualify,
	})
	return done, f.next, err
}

// maxSASL bounds the base64 of one client message: Limits.MaxLiteral
// octets decoded.
func (ss *session) maxSASL() int { return (ss.Limits.MaxLiteral + 2) / 3 * 4 }

// saslFraming is SASL on the stream: <challenge/>, <response/> or <abort/>
// from the client, <success/> or <failure/>.
type saslFraming struct {
	ss   *session
	last *Element // the backend's element ReadBackend returned last
	data []byte   // its decoded payload
	next *Element // what the client sent instead of a response
}

func (f *saslFraming) Challenge(data []byte) {
	f.ss.out(saslElement("challenge", "", encodeData(data)))
}

func (f *saslFraming) RelayChallenge() { f.Challenge(f.data) }

// ReadResponse reads the client's next element: a <response/> (its text,
// surrounding whitespace ignored), an <abort/>, or anything else, kept for
// the caller.
func (f *saslFraming) ReadResponse() ([]byte, error) {
	el, err := f.ss.readClient()
	if err != nil {
		return nil, err
	}
	switch el.Name {
	case Name{nsSASL, "response"}:
		t := strings.TrimSpace(el.Text)
		if len(t) > f.ss.maxSASL() {
			return nil, protocols.AnswerTooLong
		}
		return []byte(t), nil
	case Name{nsSASL, "abort"}:
		return nil, protocols.AnswerCancelled
	}
	f.next = el
	return nil, protocols.AnswerLeft
}

// Open sends the initial response with <auth/>, but not LOGIN's: its
// username goes as the answer to the backend's first challenge.
func (f *saslFraming) Open(mech string, ir []byte) (bool, error) {
	if ir == nil || mech == protocols.SASLLogin {
		f.ss.toBackend(saslElement("auth", mech, ""))
		return false, nil
	}
	f.ss.toBackend(saslElement("auth", mech, string(ir)))
	return true, nil
}

// Respond writes zero-length data as "=" (RFC 6120 §6.4.2).
func (f *saslFraming) Respond(b64 []byte) {
	if len(b64) == 0 {
		b64 = []byte{'='}
	}
	f.ss.toBackend(saslElement("response", "", string(b64)))
}

func (f *saslFraming) Cancel() { f.ss.toBackend("<abort xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>") }

// ReadBackend reads <challenge/>, <success/> (with its additional data) or
// <failure/>; their base64 must be canonical.
func (f *saslFraming) ReadBackend() (protocols.SASLReply, error) {
	el, err := f.ss.readBackend()
	if err != nil {
		return protocols.SASLReply{}, err
	}
	clear(f.data)
	f.last, f.data = el, nil
	kind := protocols.ReplySuccess
	switch el.Name {
	case Name{nsSASL, "failure"}:
		return failureReply(el), nil
	case Name{nsSASL, "challenge"}:
		kind = protocols.ReplyChallenge
	case Name{nsSASL, "success"}:
	default:
		return protocols.SASLReply{}, backendErr(errBackendProtocol)
	}
	if text := strings.TrimSpace(el.Text); text != "" || kind == protocols.ReplyChallenge {
		if f.data, err = protocols.DecodeSASL([]byte(text)); err != nil {
			return protocols.SASLReply{}, backendErr(errBackendBase64)
		}
	}
	return protocols.SASLReply{Kind: kind}, nil
}

// failureReply classifies a <failure/>: <aborted/> ends an exchange without
// a verdict, <temporary-auth-failure/> is a backend problem, any other
// condition a refused credential.
func failureReply(el *Element) protocols.SASLReply {
	cond, _, _ := failureOf(el)
	rep := protocols.SASLReply{Kind: protocols.ReplyFailure, Log: []any{"condition", cond}}
	switch cond {
	case "aborted":
		rep.Kind = protocols.ReplyCancelled
	case "temporary-auth-failure":
		rep.Kind = protocols.ReplyTemporary
	}
	return rep
}

// failureOf reads the first defined condition of a <failure/> (RFC 6120
// §6.5; none is <not-authorized/>) and its text.
func failureOf(el *Element) (cond, lang, text string) {
	for _, c := range el.Children {
		switch {
		case c.Name.Space != nsSASL:
		case c.Name.Local == "text":
			text = clip(c.Text, 1024)
			if l, ok := c.AttrNS(nsXML, "lang"); ok && validLang(l) {
				lang = l
			}
		case saslConditions[c.Name.Local] && cond == "":
			cond = c.Name.Local
		}
	}
	if cond == "" {
		cond = "not-authorized"
	}
	return cond, lang, text
}

// Relay passes the verdict on. A refused credential counts towards
// MaxAuthFailures.
func (f *saslFraming) Relay(outcome string) error {
	if outcome == protocols.OutcomeSuccess {
		return f.ss.success(f.last, f.data)
	}
	f.ss.out(saslFailure(failureOf(f.last)))
	if outcome == protocols.OutcomeFailure {
		return f.ss.countFailure()
	}
	return f.ss.Flush()
}

func (f *saslFraming) Deny(code string) error { return f.ss.deny(code) }

func (f *saslFraming) Answer(a protocols.SASLAnswer) error {
	cond := "malformed-request"
	switch a {
	case protocols.AnswerCancelled:
		f.ss.out(saslFailure("aborted", "", ""))
		return f.ss.Flush()
	case protocols.AnswerBadIR, protocols.AnswerBadBase64:
		cond = "incorrect-encoding"
	}
	f.ss.out(saslFailure(cond, "", ""))
	return f.ss.countBad()
}

// success completes a login the observer already knows of: <success/> to
// the client, then the stream restart both sides owe each other (RFC 6120
// §6.4.6). The client's new header is forwarded to the backend, which
// expects it; everything after it flows through the blind relay.
func (ss *session) success(el *Element, data []byte) error {
	form := ""
	if strings.TrimSpace(el.Text) != "" { // additional data with success, "=" when empty (§6.4.6)
		form = encodeData(data)
	}
	ss.out(saslElement("success", "", form))
	// Both streams are new documents now: the client's next stream is the
	// backend's to open, and ours to the backend waits for the client's
	// header, so neither can be closed with a closing tag any more.
	ss.headerSent = false
	ss.backendUp = false
	if err := ss.readClientHeader(true); err != nil {
		return err
	}
	return ss.restartedBackend()
}

// encodeData writes SASL data as base64, zero-length data as "=".
func encodeData(b []byte) string {
	if len(b) == 0 {
		return "="
	}
	return protocols.EncodeSASL(b)
}

// saslConditions are the defined SASL failure conditions (RFC 6120 §6.5).
var saslConditions = map[string]bool{
	"aborted": true, "account-disabled": true, "credentials-expired": true, "encryption-required": true,
	"incorrect-encoding": true, "invalid-authzid": true, "invalid-mechanism": true, "malformed-request": true,
	"mechanism-too-weak": true, "not-authorized": true, "temporary-auth-failure": true,
}
