package pop3

import (
	"errors"

	"github.com/mailgate/mailgate/protocols"
)

// auth handles "AUTH mechanism [initial-response]" (RFC 5034 §4), and a
// bare "AUTH" (the mechanism listing). The exchange runs in three phases:
//
//  1. Until the user is known, the handler talks to the client alone where
//     the mechanism allows: it decodes the initial response, or sends the
//     challenge that carries no backend data itself ("+ " for client-first
//     mechanisms, "Username:" for LOGIN). CRAM-MD5 is server-first: its
//     challenge must come from the backend, so the exchange is opened there
//     and the client's response is held.
//  2. The gate decides. A refusal is answered locally (a CRAM-MD5 exchange
//     is cancelled at the backend with "*"); the credential never leaves.
//  3. The held message goes to the backend as the answer to its first
//     challenge. From then on challenges and responses are relayed,
//     validated as base64, until +OK or -ERR.
//
// Mechanisms the proxy cannot attribute are refused with -ERR.
func (ss *session) auth(cmd command) (bool, error) {
	if !cmd.hasArgs {
		return false, ss.mechList()
	}
	mechName, ir, hasIR, ok := parseAUTH(cmd.args)
	if !ok {
		return false, ss.badCmd("Invalid AUTH arguments")
	}
	x, err := protocols.NewSASLExchange(mechName)
	if err != nil || x.Mechanism() == protocols.SASLExternal {
		ss.Log.Info("login", "mechanism", mechName, "outcome", "unsupported")
		return false, ss.reply("-ERR Unsupported authentication mechanism")
	}
	mech := x.Mechanism()
	if ss.loginDisabled() && isCleartextMech(mech) {
		return false, ss.reply(privacyRequired)
	}
	ss.forgetUser()

	// Phase 1: learn the user. held is the message that named the user;
	// heldCred says it carries a secret itself.
	var held []byte
	heldCred := false
	defer func() { clear(held) }()
	if hasIR {
		if x.ServerFirst() {
			return false, ss.badCmd("Initial response not allowed for " + mech)
		}
		msg, err := protocols.DecodeSASL(ir)
		if err != nil {
			return false, ss.badCmd("Invalid base64 data in initial response")
		}
		held = msg
		step, err := x.Response(msg)
		if err != nil {
			return false, ss.malformed(mech)
		}
		heldCred = step.Credential
	}
	for !x.UserKnown() {
		ch, ok := x.LocalChallenge()
		if !ok {
			break
		}
		x.Challenge(ch)
		ss.out("+ " + protocols.EncodeSASL(ch))
		msg, ended, err := ss.readSASL()
		if err != nil || ended {
			return false, err
		}
		clear(held)
		held = msg
		step, err := x.Response(msg)
		if err != nil {
			return false, ss.malformed(mech)
		}
		heldCred = step.Credential
	}
	started := false
	if !x.UserKnown() && x.ServerFirst() {
		var done bool
		held, done, err = ss.serverFirst(x)
		if err != nil || done {
			return false, err
		}
		started, heldCred = true, true
	}
	if !x.UserKnown() {
		return false, ss.reply("-ERR [AUTH] Authentication failed")
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
	if !started {
		early, err := ss.openSASL(mech)
		if err != nil {
			ss.LoginLost(user, mech)
			return false, err
		}
		if early != nil {
			return ss.refusedEarly(early, user, mech)
		}
	}
	// A raw base64 line for CRAM-MD5, a decoded message otherwise.
	line := held
	if !started {
		line = []byte(protocols.EncodeSASL(held))
		defer clear(line)
	}
	if err := ss.toBackendBytes("", line); err != nil {
		ss.LoginLost(user, mech)
		return false, err
	}
	return ss.relaySASL(x, heldCred)
}

// malformed answers a message the mechanism cannot parse: it is not
// forwarded, since the user it names is unknown.
func (ss *session) malformed(mech string) error {
	ss.Log.Info("login", "mechanism", mech, "outcome", "malformed")
	return ss.badCmd("Malformed SASL message")
}

// readSASL reads and decodes one client SASL line after a local challenge.
// ended means the exchange is over and the client was answered: it sent "*"
// (RFC 5034 §4: -ERR) or a line that is not base64.
func (ss *session) readSASL() (msg []byte, ended bool, err error) {
	line, err := ss.readSASLLine()
	if err != nil {
		if errors.Is(err, protocols.ErrLineTooLong) {
			return nil, true, ss.badCmd("SASL message too long")
		}
		return nil, true, err
	}
	defer clear(line)
	if string(line) == "*" {
		ss.Log.Info("login", "outcome", "cancelled")
		return nil, true, ss.reply("-ERR Authentication cancelled")
	}
	msg, err = protocols.DecodeSASL(line)
	if err != nil {
		return nil, true, ss.badCmd("Invalid base64 data")
	}
	return msg, false, nil
}

// readSASLLine flushes, then reads one client line of up to a base64
// message of Limits.MaxLiteral octets.
func (ss *session) readSASLLine() ([]byte, error) {
	if err := ss.Flush(); err != nil {
		return nil, err
	}
	return ss.readClientLine(ss.saslMax)
}

// serverFirst opens a CRAM-MD5 exchange at the backend, relays its challenge
// and reads the client's response without forwarding it. done means the
// exchange already ended (answered to the client).
func (ss *session) serverFirst(x *protocols.SASLExchange) (held []byte, done bool, err error) {
	if err := ss.toBackend("AUTH " + x.Mechanism()); err != nil {
		return nil, true, err
	}
	ch, err := ss.readBackend(false)
	if err != nil {
		return nil, true, err
	}
	if ch.kind != respCont {
		// Refused before any credential (mechanism not offered), or an
		// absurd +OK.
		if ch.kind == respOK {
			return nil, true, backendErr(errOKWithoutAuth)
		}
		ss.outBytes(ch.line)
		ss.out("")
		return nil, true, ss.Flush()
	}
	data, err := protocols.DecodeSASL(ch.text())
	if err != nil {
		return nil, true, backendErr(errBadChallenge)
	}
	x.Challenge(data)
	ss.outBytes(ch.line)
	ss.out("")
	line, err := ss.readSASLLine()
	if err != nil {
		if errors.Is(err, protocols.ErrLineTooLong) {
			if err := ss.cancelSASL(); err != nil {
				return nil, true, err
			}
			return nil, true, ss.badCmd("SASL message too long")
		}
		return nil, true, err
	}
	if string(line) == "*" {
		ss.Log.Info("login", "mechanism", x.Mechanism(), "outcome", "cancelled")
		if err := ss.cancelSASL(); err != nil {
			return nil, true, err
		}
		return nil, true, ss.reply("-ERR Authentication cancelled")
	}
	if _, derr := x.ResponseLine(line); derr != nil {
		clear(line)
		if err := ss.cancelSASL(); err != nil {
			return nil, true, err
		}
		if errors.Is(derr, protocols.ErrSASLBase64) {
			return nil, true, ss.badCmd("Invalid base64 data")
		}
		return nil, true, ss.malformed(x.Mechanism())
	}
	// The raw line is forwarded as is once the gate allows it.
	return line, false, nil
}

// openSASL starts the backend exchange without an initial response and
// waits for the first challenge, which is not shown to the client (it
// already answered the proxy's). A status line arriving instead is returned
// as early.
func (ss *session) openSASL(mech string) (early *response, err error) {
	if err := ss.toBackend("AUTH " + mech); err != nil {
		return nil, err
	}
	res, err := ss.readBackend(false)
	if err != nil {
		return nil, err
	}
	if res.kind != respCont {
		return res, nil
	}
	return nil, nil
}

// relaySASL relays the rest of an allowed exchange: backend challenges to
// the client, client responses (checked to be base64, or "*") to the
// backend, until +OK or -ERR. A challenge after the client's last message is
// not a failure (SCRAM's server-final v=, the OAuth error JSON): only the
// status line decides. credSent says a secret already reached the backend;
// once it has, a -ERR is a failed login even if the client then cancelled
// (the OAuth error challenge is answered with "*" by some clients).
func (ss *session) relaySASL(x *protocols.SASLExchange, credSent bool) (bool, error) {
	user, mech := x.User(), x.Mechanism()
	cancelled := false
	for rounds := 0; ; {
		res, err := ss.readBackend(false)
		if err != nil {
			ss.LoginLost(user, mech)
			return false, err
		}
		switch {
		case res.kind == respOK && cancelled:
			ss.LoginLost(user, mech)
			return false, backendErr(errCancelledButOK)
		case res.kind == respErr && cancelled && !credSent:
			ss.Log.Info("login", "user", user, "mechanism", mech, "outcome", "cancelled")
			ss.outBytes(res.line)
			ss.out("")
			return false, ss.Flush()
		case res.kind != respCont:
			return ss.verdict(res, user, mech)
		}
		rounds++
		if rounds > ss.opts.saslRounds || cancelled {
			ss.LoginLost(user, mech)
			return false, backendErr(errTooManyChallenges)
		}
		if data, err := protocols.DecodeSASL(res.text()); err == nil {
			x.Challenge(data)
		}
		ss.outBytes(res.line)
		ss.out("")
		line, err := ss.readSASLLine()
		if err != nil {
			if errors.Is(err, protocols.ErrLineTooLong) {
				return false, ss.abortSASL(user, mech, credSent, "SASL message too long")
			}
			ss.LoginLost(user, mech)
			return false, err
		}
		if string(line) == "*" {
			cancelled = true
		} else {
			step, err := x.ResponseLine(line)
			if errors.Is(err, protocols.ErrSASLBase64) {
				clear(line)
				return false, ss.abortSASL(user, mech, credSent, "Invalid base64 data")
			}
			// Bookkeeping only: the backend judges the content.
			if err == nil && step.Credential {
				credSent = true
			}
		}
		err = ss.toBackendBytes("", line)
		clear(line)
		if err != nil {
			ss.LoginLost(user, mech)
			return false, err
		}
	}
}

// abortSASL cancels a relayed exchange because of a bad client line.
func (ss *session) abortSASL(user, mech string, credSent bool, text string) error {
	if err := ss.cancelSASL(); err != nil {
		ss.LoginLost(user, mech)
		return err
	}
	if credSent {
		// The backend judged a credential before the client broke off;
		// its verdict is unknown, so it counts as nothing.
		ss.Observer.AuthFailed(user, mech, true)
	}
	ss.Log.Info("login", "user", user, "mechanism", mech, "outcome", "bad")
	return ss.badCmd(text)
}

// cancelSASL aborts a backend AUTH with "*" (RFC 5034 §4) and consumes its
// -ERR.
func (ss *session) cancelSASL() error {
	res, err := ss.roundTrip("*", false)
	if err != nil {
		return err
	}
	if res.kind == respOK {
		return backendErr(errCancelledButOK)
	}
	return nil
}
