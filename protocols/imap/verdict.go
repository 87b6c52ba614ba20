package imap

import (
	"github.com/mailgate/mailgate/protocols"
)

// The two ends of a login: asking the gate before the credential leaves, and
// reading the backend's verdict after it did (RFC 9051 §6.2.2-§6.2.3,
// response codes RFC 5530).

// deny answers a gated login. The texts follow docs/protocols.md §2.7: a disabled
// account is something the user can act on; a lockout keeps the code of a
// failed login (clients know it) with a text that says why.
func (ss *session) deny(tag, code string) error {
	var text string
	switch code {
	case protocols.DenyDisabled:
		text = "[CONTACTADMIN] IMAP access is disabled for this account, please contact your administrator"
	case protocols.DenyLimit:
		text = "[LIMIT] Too many connections"
	case protocols.DenyUnavailable:
		text = "[UNAVAILABLE] Login temporarily unavailable, try again later"
	case protocols.DenyLockout:
		text = "[AUTHENTICATIONFAILED] " + protocols.LockoutText
	default:
		text = "[AUTHENTICATIONFAILED] Authentication failed"
	}
	return ss.reply(tag, "NO", text)
}

// awaitVerdict reads the backend's answer to a login whose credential was
// sent, unless early already holds it.
func (ss *session) awaitVerdict(tag, user, mech string, early *response) (bool, error) {
	res := early
	if res == nil {
		var err error
		res, err = ss.readResult(tag, ss.relayUntagged)
		if err != nil {
			ss.LoginLost(user, mech)
			return false, err
		}
	}
	return ss.verdict(res, user, mech)
}

// verdict acts on the tagged result of LOGIN.
func (ss *session) verdict(res *response, user, mech string) (bool, error) {
	outcome := ss.Verdict(user, mech, replyOf(res))
	return outcome == protocols.OutcomeSuccess, ss.result(res, outcome)
}

// result passes the tagged result of a login to the client; outcome is
// what was made of it. After success the session is relayed blindly: no
// STARTTLS, no LOGINDISABLED, and still no UNAUTHENTICATE. A BAD that was
// no answer to a cancel counts as a bad command.
func (ss *session) result(res *response, outcome string) error {
	if outcome == protocols.OutcomeSuccess {
		ss.outBytes(rewriteResponse(res, capPolicy{}))
		return nil
	}
	ss.outBytes(rewriteResponse(res, ss.clientPolicy()))
	if outcome == protocols.OutcomeBad {
		return ss.countBad()
	}
	return ss.Flush()
}

// replyOf classifies a tagged result (RFC 9051 §7.1, RFC 5530).
func replyOf(res *response) protocols.SASLReply {
	switch {
	case res.status == "OK":
		return protocols.SASLReply{Kind: protocols.ReplySuccess}
	case res.status == "NO" && temporaryCode(res.code):
		return protocols.SASLReply{Kind: protocols.ReplyTemporary, Log: []any{"code", res.code}}
	case res.status == "NO":
		return protocols.SASLReply{Kind: protocols.ReplyFailure, Log: []any{"code", res.code}}
	}
	return protocols.SASLReply{Kind: protocols.ReplyRejected}
}

// temporaryCode reports NO codes that say nothing about the credential
// (RFC 5530): the backend is unavailable, broken or busy. These must never
// count as a failed password.
func temporaryCode(code string) bool {
	switch code {
	case "UNAVAILABLE", "SERVERBUG", "INUSE", "LIMIT":
		return true
	}
	return false
}
