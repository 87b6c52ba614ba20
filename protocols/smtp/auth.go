package smtp

import (
	"errors"

	"github.com/mailgate/mailgate/protocols"
)

// auth handles "AUTH mechanism [initial-response]" (RFC 4954 §4). The
// exchange runs in three phases:
//
//  1. Until the user is known, the handler talks to the client alone where
//     the mechanism allows: it decodes the initial response, or sends the
//     challenge that carries no backend data itself ("334 " for
//     client-first mechanisms, "334 VXNlcm5hbWU6" for LOGIN). CRAM-MD5 is
//     server-first: its challenge must come from the backend, so the
//     exchange is opened there and the client's response is held.
//  2. The gate decides. A refusal is answered locally (a CRAM-MD5 exchange
//     is cancelled at the backend with "*"); the credential never leaves.
//  3. The held message goes to the backend as an initial response when the
//     AUTH line stays within 512 octets, else after the backend's empty
//     "334 " (RFC 4954 §4); LOGIN answers the backend's "Username:" with
//     it. From then on challenges and responses are relayed, responses
//     checked to be base64 or "*", until the backend's verdict.
func (ss *session) auth(cmd command) (bool, error) {
	switch {
	case ss.role == RoleMX:
		return false, ss.reject(503, "5.5.1", "Error: authentication not enabled")
	case ss.helo == "" || !ss.esmtp:
		return false, ss.reject(503, "5.5.1", "Error: send EHLO first")
	case ss.loginDisabled():
		return false, ss.reject(530, "5.7.0", "Must issue a STARTTLS command first")
	case len(attributableMechs(ss.ehlo.mechs)) == 0:
		return false, ss.reject(503, "5.5.1", "Error: authentication not enabled")
	}
	mechName, ir, hasIR, ok := splitAuth(cmd.arg)
	if !ok {
		return false, ss.reject(501, "5.5.4", "Syntax: AUTH mechanism [initial-response]")
	}
	x, err := protocols.NewSASLExchange(mechName)
	if err != nil || !attributable(x.Mechanism()) || !ss.ehlo.offers(x.Mechanism()) {
		logged := "other" // client text: only names from a fixed set are logged
		if err == nil {
			logged = x.Mechanism()
		}
		ss.Log.Info("login", "mechanism", logged, "outcome", "unsupported")
		return false, ss.reject(504, "5.5.4", "Unrecognized authentication type")
	}
	mech := x.Mechanism()

	// Phase 1: learn the user. held is the message that named the user.
	var held []byte
	defer func() { clear(held) }()
	if hasIR {
		if x.ServerFirst() {
			return false, ss.reject(501, "5.7.0", "Initial response not allowed for "+mech)
		}
		msg, err := protocols.DecodeSASL(ir)
		if err != nil {
			return false, ss.reject(501, "5.5.2", "Invalid base64 data")
		}
		held = msg
		if _, err := x.Response(msg); err != nil {
			return false, ss.malformed(mech)
		}
	}
	for !x.UserKnown() {
		ch, ok := x.LocalChallenge()
		if !ok {
			break
		}
		x.Challenge(ch)
		ss.outReply(newReply(334, protocols.EncodeSASL(ch)))
		msg, ended, err := ss.readSASL()
		if err != nil || ended {
			return false, err
		}
		clear(held)
		held = msg
		if _, err := x.Response(msg); err != nil {
			return false, ss.malformed(mech)
		}
	}
	started := false
	if !x.UserKnown() && x.ServerFirst() {
		var done bool
		held, done, err = ss.serverFirst(x)
		if err != nil || done {
			return false, err
		}
		started = true
	}
	if !x.UserKnown() {
		ss.outReply(newReply(535, "5.7.8 Authentication credentials invalid"))
		return false, ss.Flush()
	}
	user := x.User()

	// Phase 2: the gate.
	if code := ss.CheckLogin(user, x.AuthzID(), mech); code != protocols.DenyNone {
		if started {
			if err := ss.cancelSASL(); err != nil {
				return false, err
			}
		}
		return false, ss.deny(code)
	}

	// Phase 3: the backend.
	if started {
		ss.toBackend(held) // CRAM-MD5: the client's base64 line as it came
	} else {
		early, err := ss.openSASL(mech, held)
		if err != nil {
			ss.LoginLost(user, mech)
			return false, err
		}
		if early != nil {
			return ss.verdict(early, user, mech, false)
		}
	}
	clear(held)
	return ss.relaySASL(x)
}

// malformed answers a message the mechanism cannot parse: it is not
// forwarded, since the user it names is unknown.
func (ss *session) malformed(mech string) error {
	ss.Log.Info("login", "mechanism", mech, "outcome", "malformed")
	return ss.reject(501, "5.5.2", "Malformed authentication data")
}

// readSASL reads and decodes one client line after a local challenge.
// ended means the exchange is over and the client was answered: it sent "*"
// (RFC 4954 §4: 501), a line that is not base64, or one too long.
func (ss *session) readSASL() (msg []byte, ended bool, err error) {
	line, err := ss.readClientLine(maxAuthLine)
	if err != nil {
		if _, ok := protocols.AsLongLine(err); ok {
			return nil, true, ss.reject(500, "5.5.6", "Authentication Exchange line is too long")
		}
		return nil, true, err
	}
	defer clear(line)
	if string(line) == "*" {
		ss.Log.Info("login", "outcome", "cancelled")
		ss.outReply(newReply(501, "5.7.0 Authentication cancelled"))
		return nil, true, ss.Flush()
	}
	msg, err = protocols.DecodeSASL(line)
	if err != nil {
		return nil, true, ss.reject(501, "5.5.2", "Invalid base64 data")
	}
	return msg, false, nil
}

// serverFirst opens a CRAM-MD5 exchange at the backend, relays its challenge
// and reads the client's response without forwarding it. done means the
// exchange already ended (the client was answered).
func (ss *session) serverFirst(x *protocols.SASLExchange) (held []byte, done bool, err error) {
	rep, err := ss.roundTrip([]byte("AUTH " + x.Mechanism()))
	if err != nil {
		return nil, true, err
	}
	if rep.code != 334 {
		return nil, true, ss.relay(rep) // refused before any credential
	}
	data, err := protocols.DecodeSASL([]byte(rep.text()))
	if err != nil || len(rep.lines) != 1 {
		return nil, true, backendErr(protocols.ErrSASLBase64)
	}
	x.Challenge(data)
	ss.outReply(rep)
	line, err := ss.readClientLine(maxAuthLine)
	if err != nil {
		if _, ok := protocols.AsLongLine(err); ok {
			if err := ss.cancelSASL(); err != nil {
				return nil, true, err
			}
			return nil, true, ss.reject(500, "5.5.6", "Authentication Exchange line is too long")
		}
		return nil, true, err
	}
	if string(line) == "*" {
		rep, err := ss.roundTrip(line)
		if err != nil {
			return nil, true, err
		}
		ss.Log.Info("login", "mechanism", x.Mechanism(), "outcome", "cancelled")
		return nil, true, ss.relayCancelled(rep)
	}
	if _, derr := x.ResponseLine(line); derr != nil {
		clear(line)
		if err := ss.cancelSASL(); err != nil {
			return nil, true, err
		}
		if errors.Is(derr, protocols.ErrSASLBase64) {
			return nil, true, ss.reject(501, "5.5.2", "Invalid base64 data")
		}
		return nil, true, ss.malformed(x.Mechanism())
	}
	// The raw line is forwarded as is once the gate allows it.
	return line, false, nil
}

// openSASL starts the backend exchange with the message that named the
// user. A reply other than the expected "334" is returned as early: the
// backend refused before the credential was sent.
func (ss *session) openSASL(mech string, msg []byte) (early *reply, err error) {
	if mech == protocols.SASLLogin {
		// Not every server takes LOGIN's username as an initial response
		// (MS-XLOGIN is an extension): answer its "Username:" instead.
		rep, err := ss.roundTrip([]byte("AUTH LOGIN"))
		if err != nil || rep.code != 334 {
			return rep, err
		}
		ss.toBackend([]byte(protocols.EncodeSASL(msg)))
		return nil, nil
	}
	enc := []byte(protocols.EncodeSASL(msg))
	defer clear(enc)
	if len(enc) == 0 {
		enc = append(enc, '=') // RFC 4954 §4: an empty initial response
	}
	line := make([]byte, 0, len("AUTH  ")+len(mech)+len(enc))
	line = append(append(append(line, "AUTH "...), mech...), ' ')
	line = append(line, enc...)
	defer clear(line)
	if len(line)+2 <= maxCommandLine {
		ss.toBackend(line)
		return nil, nil
	}
	// Too long for the command line: the response follows the empty
	// challenge instead (RFC 4954 §4).
	rep, err := ss.roundTrip([]byte("AUTH " + mech))
	if err != nil || rep.code != 334 {
		return rep, err
	}
	ss.toBackend(enc)
	return nil, nil
}

// relaySASL relays the rest of an allowed exchange: backend challenges to
// the client, client responses (checked to be base64, or "*") to the
// backend, until the verdict. A challenge after the client's last message
// is not a failure (SCRAM's server-final v=, the OAuth error JSON): only the
// final reply decides.
func (ss *session) relaySASL(x *protocols.SASLExchange) (bool, error) {
	user, mech := x.User(), x.Mechanism()
	if err := ss.Backend.W.Flush(); err != nil {
		ss.LoginLost(user, mech)
		return false, backendErr(err)
	}
	cancelled := false
	for rounds := 0; ; {
		rep, err := ss.readBackend()
		if err != nil {
			ss.LoginLost(user, mech)
			return false, err
		}
		if rep.code != 334 {
			if cancelled && rep.code/100 == 5 && (mech == protocols.SASLXOAuth2 || mech == protocols.SASLOAuthBearer) {
				// The bearer token went out first and drew the backend's
				// error challenge; cancelling it does not unsay the failure.
				ss.Observer.AuthFailed(user, mech, false)
			}
			return ss.verdict(rep, user, mech, cancelled)
		}
		rounds++
		if rounds > ss.h.opts.saslRounds() || cancelled || len(rep.lines) != 1 {
			ss.LoginLost(user, mech)
			return false, backendErr(errUnexpected334)
		}
		if data, err := protocols.DecodeSASL([]byte(rep.text())); err == nil {
			x.Challenge(data)
		}
		ss.outReply(rep)
		line, err := ss.readClientLine(maxAuthLine)
		if err != nil {
			if _, ok := protocols.AsLongLine(err); ok {
				return false, ss.abortSASL(user, mech, 500, "5.5.6", "Authentication Exchange line is too long")
			}
			ss.LoginLost(user, mech)
			return false, err
		}
		if string(line) == "*" {
			cancelled = true
		} else if _, err := x.ResponseLine(line); errors.Is(err, protocols.ErrSASLBase64) {
			// Only the encoding is checked: the backend judges the content.
			clear(line)
			return false, ss.abortSASL(user, mech, 501, "5.5.2", "Invalid base64 data")
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
func (ss *session) abortSASL(user, mech string, code int, enhanced, text string) error {
	if err := ss.cancelSASL(); err != nil {
		ss.LoginLost(user, mech)
		return err
	}
	ss.Log.Info("login", "user", user, "mechanism", mech, "outcome", "bad")
	return ss.reject(code, enhanced, text)
}

// cancelSASL aborts a backend exchange with "*" (RFC 4954 §4) and consumes
// the backend's answer, which must not be a success.
func (ss *session) cancelSASL() error {
	rep, err := ss.roundTrip([]byte("*"))
	if err != nil {
		return err
	}
	switch {
	case rep.code == 421:
		return ss.relay(rep)
	case rep.class() != 5 && rep.class() != 4:
		return backendErr(errCancelledAccepted)
	}
	return nil
}

// relayCancelled relays the backend's answer to a "*" the client sent.
func (ss *session) relayCancelled(rep *reply) error {
	switch {
	case rep.code == 421:
		return ss.relay(rep)
	case rep.class() != 5 && rep.class() != 4:
		return backendErr(errCancelledAccepted)
	}
	ss.outReply(rep)
	return ss.Flush()
}
