package pop3

import (
	"bytes"

	"github.com/mailgate/mailgate/protocols"
)

// USER/PASS and APOP (RFC 1939 §7), and the two ends every login shares:
// asking the gate before the credential leaves, and reading the backend's
// verdict after it did.

// Mechanism names reported to the Observer for the non-SASL logins.
const (
	mechUser = "USER"
	mechAPOP = "APOP"
)

// userCmd takes "USER name" locally. +OK says nothing about the user
// (RFC 1939 §7); nothing goes to the backend before PASS, so a refused
// login never shows it even the name.
func (ss *session) userCmd(cmd command) error {
	if ss.loginDisabled() {
		return ss.reply(privacyRequired)
	}
	if !validName(cmd.args) {
		return ss.badCmd("Invalid USER arguments")
	}
	ss.forgetUser()
	ss.user, ss.hasUser = bytes.Clone(cmd.args), true
	return ss.reply("+OK")
}

// pass handles "PASS string": the whole rest of the line is the password.
// The gate decides on the name from USER; an allowed login is sent to the
// backend as USER then PASS.
func (ss *session) pass(cmd command) (bool, error) {
	if !ss.hasUser {
		return false, ss.reply("-ERR No username given")
	}
	user := string(ss.user)
	ss.forgetUser() // one PASS per USER, whatever the outcome (RFC 1939 §7)
	if len(cmd.args) == 0 {
		return false, ss.reply("-ERR [AUTH] Authentication failed")
	}
	if code := ss.CheckLogin(user, "", mechUser); code != protocols.DenyNone {
		return false, ss.deny(code)
	}
	res, err := ss.roundTrip("USER "+user, false)
	if err != nil {
		ss.LoginLost(user, mechUser)
		return false, err
	}
	if res.kind != respOK {
		// Refused before the password left: nothing was verified.
		return ss.refusedEarly(res, user, mechUser)
	}
	if err := ss.toBackendBytes("PASS ", cmd.args); err != nil {
		ss.LoginLost(user, mechUser)
		return false, err
	}
	return ss.awaitVerdict(user, mechUser)
}

// apopCmd handles "APOP name digest": the digest covers the backend's
// greeting timestamp, which the client saw unchanged, so the command is
// forwarded as is once the gate allows the name.
func (ss *session) apopCmd(cmd command) (bool, error) {
	name, _, ok := parseAPOP(cmd.args)
	if !ok {
		return false, ss.badCmd("Invalid APOP arguments")
	}
	ss.forgetUser()
	if !ss.apop {
		// The greeting had no timestamp: the backend does not do APOP.
		return false, ss.reply("-ERR APOP not supported")
	}
	user := string(name)
	if code := ss.CheckLogin(user, "", mechAPOP); code != protocols.DenyNone {
		return false, ss.deny(code)
	}
	if err := ss.toBackendBytes("APOP ", cmd.args); err != nil {
		ss.LoginLost(user, mechAPOP)
		return false, err
	}
	return ss.awaitVerdict(user, mechAPOP)
}

// deny answers a gated login (RFC 3206 §5: [AUTH] covers "an attempt to
// authenticate in violation of policy"). A disabled account is something
// the user can act on; a lockout says why, with [AUTH]; a connection
// limit is [IN-USE], as Dovecot answers its own per-user limit, so clients
// retry later instead of asking for a new password.
func (ss *session) deny(code string) error {
	switch code {
	case protocols.DenyDisabled:
		return ss.reply("-ERR [AUTH] POP3 access is disabled for this account, please contact your administrator")
	case protocols.DenyLimit:
		return ss.reply("-ERR [IN-USE] Too many connections for this account, try again later")
	case protocols.DenyUnavailable:
		return ss.reply("-ERR [SYS/TEMP] Login temporarily unavailable, try again later")
	case protocols.DenyLockout:
		return ss.reply("-ERR [AUTH] " + protocols.LockoutText)
	default:
		return ss.reply("-ERR [AUTH] Authentication failed")
	}
}

// awaitVerdict reads the backend's answer to a login whose credential was
// sent.
func (ss *session) awaitVerdict(user, mech string) (bool, error) {
	res, err := ss.readBackend(false)
	if err != nil {
		ss.LoginLost(user, mech)
		return false, err
	}
	if res.kind == respCont {
		ss.LoginLost(user, mech)
		return false, backendErr(errUnexpectedCont)
	}
	return ss.verdict(res, user, mech)
}

// verdict acts on the backend's +OK or -ERR to a login whose credential it
// received. Authenticated is reported before the +OK reaches the client.
func (ss *session) verdict(res *response, user, mech string) (bool, error) {
	outcome := ss.Verdict(user, mech, replyOf(res))
	return outcome == protocols.OutcomeSuccess, ss.result(res, outcome)
}

// refusedEarly relays a -ERR the backend gave before any credential reached
// it (USER refused).
func (ss *session) refusedEarly(res *response, user, mech string) (bool, error) {
	if res.kind == respOK {
		ss.LoginLost(user, mech)
		return false, backendErr(errOKWithoutAuth)
	}
	return false, ss.result(res, ss.RefusedEarly(user, mech, replyOf(res)))
}

// result passes the backend's status line in a login to the client. After
// success nothing is flushed: the proxy relays from there.
func (ss *session) result(res *response, outcome string) error {
	ss.outBytes(res.line)
	ss.out("")
	if outcome == protocols.OutcomeSuccess {
		return nil
	}
	return ss.Flush()
}

// replyOf classifies a status line (RFC 2449 §8, RFC 3206).
func replyOf(res *response) protocols.SASLReply {
	switch {
	case res.kind == respOK:
		return protocols.SASLReply{Kind: protocols.ReplySuccess}
	case temporaryCode(res.code):
		return protocols.SASLReply{Kind: protocols.ReplyTemporary, Log: []any{"code", res.code}}
	}
	return protocols.SASLReply{Kind: protocols.ReplyFailure, Log: []any{"code", res.code}}
}
