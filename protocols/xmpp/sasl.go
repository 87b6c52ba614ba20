package xmpp

import (
	"errors"
	"strings"

	"github.com/mailgate/mailgate/protocols"
)

// SASL negotiation (RFC 6120 §6.4). An exchange runs in three phases:
//
//  1. Until the user is known the handler talks to the client alone: it
//     decodes the initial response, or sends the empty challenge itself
//     (every mechanism offered is client-first) and reads the <response/>.
//  2. The gate decides. A refusal is a <failure/> from the handler; the
//     credential never leaves.
//  3. The message that named the user goes to the backend as the initial
//     response of a fresh <auth/> (XMPP always allows one, RFC 6120 §6.4.2).
//     From then on challenges and responses are relayed, each checked to be
//     canonical base64 and rewritten, until <success/> or <failure/>.
//
// A new <auth/> during an exchange restarts it (the backend's half is
// aborted first); any other element aborts it and is then handled as if no
// exchange were running.

var errCancelledButAccepted = errors.New("backend accepted an aborted authentication")

// authenticate runs the exchange <auth/> opened. next is an element the
// client sent instead of continuing the exchange, for the caller to handle.
func (ss *session) authenticate(auth *Element) (done bool, next *Element, err error) {
	mech, _ := auth.Attr("mechanism")
	if !ss.offered[mech] {
		ss.Log.Info("login", "mechanism", short(mech), "outcome", "unsupported")
		ss.out(saslFailure("invalid-mechanism", "", ""))
		return false, nil, ss.countBad()
	}
	if ss.tlsRequired() && isCleartextMech(mech) { // not offered: defensive
		ss.out(saslFailure("encryption-required", "", ""))
		return false, nil, ss.countBad()
	}
	decoder := mech
	if mech == mechXOAuth2 {
		decoder = protocols.SASLPlain // \0user\0token
	}
	x, err := protocols.NewSASLExchange(decoder)
	if err != nil {
		ss.out(saslFailure("invalid-mechanism", "", ""))
		return false, nil, ss.countBad()
	}

	// Phase 1: learn the user. held is the message that named the user.
	var held []byte
	defer func() { clear(held) }()
	if ir := strings.TrimSpace(auth.Text); ir != "" {
		msg, cond := ss.decode(ir)
		if cond != "" {
			return false, nil, ss.refuse(mech, cond)
		}
		held = msg
		if _, err := x.Response(msg); err != nil {
			return false, nil, ss.refuse(mech, "malformed-request")
		}
	}
	for !x.UserKnown() {
		ch, ok := x.LocalChallenge()
		if !ok {
			break
		}
		x.Challenge(ch)
		ss.out(saslElement("challenge", "", encodeData(ch)))
		el, err := ss.readClient()
		if err != nil {
			return false, nil, err
		}
		switch el.Name {
		case Name{nsSASL, "response"}:
		case Name{nsSASL, "abort"}:
			ss.Log.Info("login", "mechanism", mech, "outcome", "cancelled")
			ss.out(saslFailure("aborted", "", ""))
			return false, nil, ss.Flush()
		default:
			return false, el, nil
		}
		msg, cond := ss.decode(el.Text)
		if cond != "" {
			return false, nil, ss.refuse(mech, cond)
		}
		clear(held)
		held = msg
		if _, err := x.Response(msg); err != nil {
			return false, nil, ss.refuse(mech, "malformed-request")
		}
	}
	if !x.UserKnown() {
		return false, nil, ss.refuse(mech, "malformed-request")
	}
	user := ss.qualify(x.User())
	authz := ss.qualify(x.AuthzID())
	if strings.EqualFold(authz, user) {
		authz = ""
	}

	// Phase 2: the gate.
	if code := ss.CheckLogin(user, authz, mech); code != protocols.DenyNone {
		return false, nil, ss.deny(code)
	}

	// Phase 3: the backend.
	ss.toBackend(saslElement("auth", mech, encodeData(held)))
	clear(held)
	return ss.relaySASL(x, user, mech)
}

// relaySASL relays the rest of an allowed exchange until the backend's
// verdict.
func (ss *session) relaySASL(x *protocols.SASLExchange, user, mech string) (bool, *Element, error) {
	for rounds := 0; ; {
		el, err := ss.readBackend()
		if err != nil {
			ss.LoginLost(user, mech)
			return false, nil, err
		}
		switch el.Name {
		case Name{nsSASL, "success"}:
			return ss.success(el, user, mech)
		case Name{nsSASL, "failure"}:
			return false, nil, ss.failure(el, user, mech)
		case Name{nsSASL, "challenge"}:
		default:
			ss.LoginLost(user, mech)
			return false, nil, backendErr(errBackendProtocol)
		}
		rounds++
		if rounds > ss.opts.MaxSASLRounds {
			ss.LoginLost(user, mech)
			return false, nil, backendErr(errTooManyRounds)
		}
		data, err := protocols.DecodeSASL([]byte(strings.TrimSpace(el.Text)))
		if err != nil {
			ss.LoginLost(user, mech)
			return false, nil, backendErr(errBackendBase64)
		}
		x.Challenge(data)
		ss.out(saslElement("challenge", "", encodeData(data)))
		clear(data)
		cel, err := ss.readClient()
		if err != nil {
			ss.LoginLost(user, mech)
			return false, nil, err
		}
		switch cel.Name {
		case Name{nsSASL, "response"}:
			msg, cond := ss.decode(cel.Text)
			if cond != "" {
				if err := ss.abortBackend(user, mech); err != nil {
					return false, nil, err
				}
				return false, nil, ss.refuse(mech, cond)
			}
			x.Response(msg) // bookkeeping only: the backend judges the content
			ss.toBackend(saslElement("response", "", encodeData(msg)))
			clear(msg)
		case Name{nsSASL, "abort"}:
			// The backend answers with <failure><aborted/></failure>.
			ss.toBackend("<abort xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>")
		default:
			if err := ss.abortBackend(user, mech); err != nil {
				return false, nil, err
			}
			return false, cel, nil
		}
	}
}

// success completes a login: the observer first, then the client, then the
// stream restart both sides owe each other (RFC 6120 §6.4.6). The client's
// new header is forwarded to the backend, which expects it; everything after
// it flows through the blind relay.
func (ss *session) success(el *Element, user, mech string) (bool, *Element, error) {
	text := strings.TrimSpace(el.Text)
	var data []byte
	if text != "" {
		var err error
		if data, err = protocols.DecodeSASL([]byte(text)); err != nil {
			ss.LoginLost(user, mech)
			return false, nil, backendErr(errBackendBase64)
		}
	}
	ss.Observer.Authenticated(user, mech)
	ss.Log.Info("login", "user", user, "mechanism", mech, "outcome", "success")
	form := ""
	if text != "" { // additional data with success, "=" when empty (§6.4.6)
		form = encodeData(data)
	}
	clear(data)
	ss.out(saslElement("success", "", form))
	// Both streams are new documents now: the client's next stream is the
	// backend's to open, and ours to the backend waits for the client's
	// header, so neither can be closed with a closing tag any more.
	ss.headerSent = false
	ss.backendUp = false
	if err := ss.readClientHeader(true); err != nil {
		return false, nil, err
	}
	if err := ss.restartedBackend(); err != nil {
		return false, nil, err
	}
	return true, nil, nil
}

// failure relays the backend's <failure/> and reports it. An abort is not a
// failed password; a temporary failure counts as a backend problem.
func (ss *session) failure(el *Element, user, mech string) error {
	cond, lang, text := "", "", ""
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
	ss.out(saslFailure(cond, lang, text))
	switch cond {
	case "aborted":
		ss.Log.Info("login", "user", user, "mechanism", mech, "outcome", "cancelled")
		return ss.Flush()
	case "temporary-auth-failure":
		ss.Observer.AuthFailed(user, mech, true)
		ss.Log.Info("login", "user", user, "mechanism", mech, "outcome", "tempfail")
		return ss.Flush()
	}
	ss.Observer.AuthFailed(user, mech, false)
	ss.Log.Info("login", "user", user, "mechanism", mech, "outcome", "failure", "condition", cond)
	return ss.countFailure()
}

// abortBackend aborts the backend's half of an exchange (RFC 6120 §6.4.4)
// and consumes its answer.
func (ss *session) abortBackend(user, mech string) error {
	ss.toBackend("<abort xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>")
	el, err := ss.readBackend()
	if err != nil {
		ss.LoginLost(user, mech)
		return err
	}
	switch el.Name {
	case Name{nsSASL, "failure"}:
		ss.Log.Info("login", "user", user, "mechanism", mech, "outcome", "cancelled")
		return nil
	case Name{nsSASL, "success"}:
		ss.LoginLost(user, mech)
		return backendErr(errCancelledButAccepted)
	}
	ss.LoginLost(user, mech)
	return backendErr(errBackendProtocol)
}

// decode checks and decodes base64 SASL data from the client (surrounding
// whitespace ignored). cond is the <failure/> condition when it is refused.
func (ss *session) decode(text string) ([]byte, string) {
	t := strings.TrimSpace(text)
	if len(t) > (ss.Limits.MaxLiteral+2)/3*4 {
		return nil, "malformed-request"
	}
	msg, err := protocols.DecodeSASL([]byte(t))
	if err != nil {
		return nil, "incorrect-encoding"
	}
	return msg, ""
}

// refuse answers a SASL message the handler will not forward (it is
// malformed, or names no user it can attribute) and counts it.
func (ss *session) refuse(mech, cond string) error {
	ss.Log.Info("login", "mechanism", mech, "outcome", "malformed", "condition", cond)
	ss.out(saslFailure(cond, "", ""))
	return ss.countBad()
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
