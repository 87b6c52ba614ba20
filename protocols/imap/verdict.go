package imap

import (
	"github.com/mailgate/mailgate/protocols"
)

// The two ends of a login: asking the gate before the credential leaves, and
// reading the backend's verdict after it did (RFC 9051 §6.2.2-§6.2.3,
// response codes RFC 5530).

// deny answers a gated login. The texts follow docs/protocols.md §2.7: a disabled
// account is something the user can act on, a lockout is indistinguishable
// from a wrong password.
func (ss *session) deny(tag, code string) error {
	var text string
	switch code {
	case protocols.DenyDisabled:
		text = "[CONTACTADMIN] IMAP access is disabled for this account, please contact your administrator"
	case protocols.DenyLimit:
		text = "[LIMIT] Too many connections"
	default: // DenyLockout and anything unknown
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
	return ss.verdict(res, user, mech, false)
}

// verdict acts on the tagged result of LOGIN or AUTHENTICATE. cancelled is
// true when the client aborted the exchange with "*": the BAD that follows is
// the expected answer, not a bad command.
func (ss *session) verdict(res *response, user, mech string, cancelled bool) (bool, error) {
	switch res.status {
	case "OK":
		ss.Observer.Authenticated(user, mech)
		ss.Log.Info("login", "user", user, "mechanism", mech, "outcome", "success")
		// Relayed blindly from now on: no STARTTLS, no LOGINDISABLED, and
		// still no UNAUTHENTICATE.
		ss.outBytes(rewriteResponse(res, capPolicy{}))
		return true, nil
	case "NO":
		temporary := temporaryCode(res.code)
		ss.Observer.AuthFailed(user, mech, temporary)
		outcome := "failure"
		if temporary {
			outcome = "tempfail"
		}
		ss.Log.Info("login", "user", user, "mechanism", mech, "outcome", outcome, "code", res.code)
		ss.outBytes(rewriteResponse(res, ss.clientPolicy()))
		return false, ss.Flush()
	default: // BAD
		outcome := "bad"
		if cancelled {
			outcome = "cancelled"
		}
		ss.Log.Info("login", "user", user, "mechanism", mech, "outcome", outcome)
		ss.outBytes(rewriteResponse(res, ss.clientPolicy()))
		if cancelled {
			return false, ss.Flush()
		}
		return false, ss.countBad()
	}
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
