package imap

import (
	"errors"

	"github.com/mailgate/mailgate/protocols"
)

// authenticate handles "AUTHENTICATE mech [initial-response]" (RFC 9051
// §6.2.2, RFC 4959). The exchange runs in three phases:
//
//  1. Until the user is known, the handler talks to the client alone where
//     the mechanism allows: it decodes the initial response, or sends the
//     challenge that carries no backend data itself ("+ " for client-first
//     mechanisms, "Username:" for LOGIN). CRAM-MD5 is server-first: its
//     challenge must come from the backend, so the exchange is opened there
//     and the client's response is held.
//  2. The gate decides. A refusal is answered locally (a CRAM-MD5 exchange
//     is cancelled at the backend with "*"); the credential never leaves.
//  3. The held message goes to the backend, as an initial response if it
//     advertised SASL-IR, else as the answer to its first challenge. From then
//     on challenges and responses are relayed, validated as base64, until the
//     tagged result.
//
// Mechanisms the proxy cannot attribute are refused with NO.
func (ss *session) authenticate(cmd *command) (bool, error) {
	tag := cmd.tag
	sc := newArgScanner(cmd)
	var mechName string
	var ir []byte
	ok := sc.sp()
	if ok {
		mechName, ok = sc.atom()
	}
	hasIR := false
	if ok && sc.sp() {
		ir, ok = sc.rest()
		hasIR = true
		ok = ok && len(ir) > 0
	}
	if !ok || !sc.end() {
		return false, ss.answer(badCommand(tag, "Invalid AUTHENTICATE arguments"))
	}
	x, err := protocols.NewSASLExchange(mechName)
	if err != nil || x.Mechanism() == protocols.SASLExternal {
		if len(mechName) > 40 {
			mechName = mechName[:40] // client-chosen text: keep log lines bounded
		}
		ss.Log.Info("login", "mechanism", mechName, "outcome", "unsupported")
		return false, ss.reply(tag, "NO", "[CANNOT] Unsupported authentication mechanism")
	}
	mech := x.Mechanism()
	if ss.loginDisabled() && isCleartextMech(mech) {
		return false, ss.reply(tag, "NO", privacyRequired)
	}

	// Phase 1: learn the user. held is the message that named the user.
	var held []byte
	defer func() { clear(held) }()
	if hasIR {
		if x.ServerFirst() {
			return false, ss.answer(badCommand(tag, "Initial response not allowed for "+mech))
		}
		msg, err := protocols.DecodeSASL(ir)
		if err != nil {
			return false, ss.answer(badCommand(tag, "Invalid base64 in initial response"))
		}
		held = msg
		if _, err := x.Response(msg); err != nil {
			return false, ss.malformed(tag, mech)
		}
	}
	for !x.UserKnown() {
		ch, ok := x.LocalChallenge()
		if !ok {
			break
		}
		x.Challenge(ch)
		ss.out("+ " + protocols.EncodeSASL(ch) + "\r\n")
		msg, ended, err := ss.readSASL(tag)
		if err != nil || ended {
			return false, err
		}
		clear(held)
		held = msg
		if _, err := x.Response(msg); err != nil {
			return false, ss.malformed(tag, mech)
		}
	}
	started := false
	if !x.UserKnown() && x.ServerFirst() {
		var done bool
		held, done, err = ss.serverFirst(tag, x)
		if err != nil || done {
			return false, err
		}
		started = true
	}
	if !x.UserKnown() {
		return false, ss.reply(tag, "NO", "[AUTHENTICATIONFAILED] Authentication failed")
	}
	user := x.User()

	// Phase 2: the gate.
	if code := ss.CheckLogin(user, x.AuthzID(), mech); code != protocols.DenyNone {
		if started {
			if err := ss.cancelSASL(tag); err != nil {
				return false, err
			}
		}
		return false, ss.deny(tag, code)
	}

	// Phase 3: the backend.
	if started {
		ss.toBackend(held)
	} else {
		early, err := ss.openSASL(tag, mech, held)
		if err != nil {
			ss.LoginLost(user, mech)
			return false, err
		}
		if early != nil {
			return ss.verdict(early, user, mech, false)
		}
	}
	clear(held)
	return ss.relaySASL(tag, x)
}

// malformed answers a message the mechanism cannot parse: it is not
// forwarded, since the user it names is unknown.
func (ss *session) malformed(tag, mech string) error {
	ss.Log.Info("login", "mechanism", mech, "outcome", "malformed")
	return ss.answer(badCommand(tag, "Malformed SASL message"))
}

// readSASL reads and decodes one client SASL line after a local challenge.
// ended means the exchange is over and the client was answered: it sent "*"
// (RFC 9051 §6.2.2: BAD) or a line that is not base64.
func (ss *session) readSASL(tag string) (msg []byte, ended bool, err error) {
	line, err := ss.readSASLLine()
	if err != nil {
		if _, ok := protocols.AsLongLine(err); ok {
			return nil, true, ss.answer(badCommand(tag, "SASL message too long"))
		}
		return nil, true, err
	}
	defer clear(line)
	if string(line) == "*" {
		ss.Log.Info("login", "outcome", "cancelled")
		return nil, true, ss.reply(tag, "BAD", "Authentication cancelled")
	}
	msg, err = protocols.DecodeSASL(line)
	if err != nil {
		return nil, true, ss.answer(badCommand(tag, "Invalid base64"))
	}
	return msg, false, nil
}

// readSASLLine flushes, then reads one client line, bounded to a base64
// message of Limits.MaxLiteral octets (and never less than MaxLine).
func (ss *session) readSASLLine() ([]byte, error) {
	if err := ss.Flush(); err != nil {
		return nil, err
	}
	max := max(ss.Limits.MaxLine, (ss.Limits.MaxLiteral+2)/3*4+2)
	line, err := readLine(ss.Client.R, max)
	if err != nil {
		if _, ok := protocols.AsLongLine(err); ok {
			return nil, err
		}
		return nil, clientErr(err)
	}
	return line, nil
}

// serverFirst opens a CRAM-MD5 exchange at the backend, relays its challenge
// and reads the client's response without forwarding it. done means the
// exchange already ended (answered to the client).
func (ss *session) serverFirst(tag string, x *protocols.SASLExchange) (held []byte, done bool, err error) {
	mech := x.Mechanism()
	ss.Backend.W.WriteString(tag + " AUTHENTICATE " + mech + "\r\n")
	if err := ss.Backend.W.Flush(); err != nil {
		return nil, true, backendErr(err)
	}
	var ch *response
	for ch == nil {
		res, err := ss.readBackend()
		if err != nil {
			return nil, true, err
		}
		switch res.kind {
		case respUntagged:
			ss.relayUntagged(res)
		case respTagged:
			if res.tag != tag {
				return nil, true, backendErr(errUnexpectedTag)
			}
			// Refused before any credential (e.g. mechanism not offered).
			ss.outBytes(rewriteResponse(res, ss.clientPolicy()))
			if res.status == "BAD" {
				return nil, true, ss.countBad()
			}
			return nil, true, ss.Flush()
		case respContinuation:
			ch = res
		}
	}
	data, err := protocols.DecodeSASL(ch.text())
	if err != nil {
		return nil, true, backendErr(protocols.ErrSASLBase64)
	}
	x.Challenge(data)
	ss.outBytes(ch.raw)
	line, err := ss.readSASLLine()
	if err != nil {
		if _, ok := protocols.AsLongLine(err); ok {
			if err := ss.cancelSASL(tag); err != nil {
				return nil, true, err
			}
			return nil, true, ss.answer(badCommand(tag, "SASL message too long"))
		}
		return nil, true, err
	}
	if string(line) == "*" {
		ss.toBackend(line)
		if err := ss.Backend.W.Flush(); err != nil {
			return nil, true, backendErr(err)
		}
		res, err := ss.readResult(tag, ss.relayUntagged)
		if err != nil {
			return nil, true, err
		}
		ss.outBytes(rewriteResponse(res, ss.clientPolicy()))
		return nil, true, ss.Flush()
	}
	if _, derr := x.ResponseLine(line); derr != nil {
		clear(line)
		if err := ss.cancelSASL(tag); err != nil {
			return nil, true, err
		}
		if errors.Is(derr, protocols.ErrSASLBase64) {
			return nil, true, ss.answer(badCommand(tag, "Invalid base64"))
		}
		return nil, true, ss.malformed(tag, mech)
	}
	// The raw line is forwarded as is once the gate allows it.
	return line, false, nil
}

// toBackend queues one SASL line for the backend. held is either a decoded
// message (encoded here) or, for CRAM-MD5, the client's raw base64 line.
func (ss *session) toBackend(line []byte) {
	ss.Backend.W.Write(line)
	ss.Backend.W.WriteString("\r\n")
}

// openSASL starts the backend exchange with the message that named the user.
// With SASL-IR it is the initial response; otherwise it answers the
// backend's first challenge, which is not shown to the client (it already
// answered the proxy's). LOGIN always takes the second path: not every server
// accepts its initial response (MS-XLOGIN is an extension). A tagged result
// arriving instead of the challenge is returned as early.
func (ss *session) openSASL(tag, mech string, msg []byte) (early *response, err error) {
	w := ss.Backend.W
	enc := protocols.EncodeSASL(msg)
	if ss.backendSASLIR() && mech != protocols.SASLLogin {
		if enc == "" {
			enc = "="
		}
		w.WriteString(tag + " AUTHENTICATE " + mech + " " + enc + "\r\n")
		if err := w.Flush(); err != nil {
			return nil, backendErr(err)
		}
		return nil, nil
	}
	w.WriteString(tag + " AUTHENTICATE " + mech + "\r\n")
	if err := w.Flush(); err != nil {
		return nil, backendErr(err)
	}
	for {
		res, err := ss.readBackend()
		if err != nil {
			return nil, err
		}
		switch res.kind {
		case respUntagged:
			ss.relayUntagged(res)
			continue
		case respTagged:
			if res.tag != tag {
				return nil, backendErr(errUnexpectedTag)
			}
			return res, nil
		}
		break
	}
	w.WriteString(enc + "\r\n")
	if err := w.Flush(); err != nil {
		return nil, backendErr(err)
	}
	return nil, nil
}

// relaySASL relays the rest of an allowed exchange: backend challenges to the
// client, client responses (checked to be base64, or "*") to the backend,
// until the tagged result. A challenge after the client's last message is not
// a failure (SCRAM's server-final v=, the OAuth error JSON): only the tagged
// result decides.
func (ss *session) relaySASL(tag string, x *protocols.SASLExchange) (bool, error) {
	user, mech := x.User(), x.Mechanism()
	if err := ss.Backend.W.Flush(); err != nil {
		ss.LoginLost(user, mech)
		return false, backendErr(err)
	}
	cancelled := false
	for rounds := 0; ; {
		res, err := ss.readBackend()
		if err != nil {
			ss.LoginLost(user, mech)
			return false, err
		}
		switch res.kind {
		case respUntagged:
			ss.relayUntagged(res)
			continue
		case respTagged:
			if res.tag != tag {
				ss.LoginLost(user, mech)
				return false, backendErr(errUnexpectedTag)
			}
			if cancelled && res.status == "BAD" && (mech == protocols.SASLXOAuth2 || mech == protocols.SASLOAuthBearer) {
				// The bearer token went out in the first message and the
				// backend answered with its error challenge; a client that
				// then cancels instead of sending the dummy response still
				// had its token refused: a failed login for brute force.
				ss.Observer.AuthFailed(user, mech, false)
			}
			return ss.verdict(res, user, mech, cancelled)
		}
		rounds++
		if rounds > ss.h.opts.saslRounds() || cancelled {
			ss.LoginLost(user, mech)
			return false, backendErr(errUnexpectedContinue)
		}
		if data, err := protocols.DecodeSASL(res.text()); err == nil {
			x.Challenge(data)
		}
		ss.outBytes(res.raw)
		line, err := ss.readSASLLine()
		if err != nil {
			if _, ok := protocols.AsLongLine(err); ok {
				return false, ss.abortSASL(tag, user, mech, "SASL message too long")
			}
			ss.LoginLost(user, mech)
			return false, err
		}
		if string(line) == "*" {
			cancelled = true
		} else if _, err := x.ResponseLine(line); errors.Is(err, protocols.ErrSASLBase64) {
			// Only the encoding is checked: the backend judges the content.
			return false, ss.abortSASL(tag, user, mech, "Invalid base64")
		}
		ss.toBackend(line)
		clear(line)
		if err := ss.Backend.W.Flush(); err != nil {
			ss.LoginLost(user, mech)
			return false, backendErr(err)
		}
	}
}

// abortSASL cancels a relayed exchange because of a bad client line.
func (ss *session) abortSASL(tag, user, mech, text string) error {
	if err := ss.cancelSASL(tag); err != nil {
		ss.LoginLost(user, mech)
		return err
	}
	ss.Log.Info("login", "user", user, "mechanism", mech, "outcome", "bad")
	return ss.answer(badCommand(tag, text))
}
