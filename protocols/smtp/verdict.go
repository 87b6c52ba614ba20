package smtp

import (
	"github.com/mailgate/mailgate/protocols"
)

// The two ends of a login: asking the gate before the credential leaves, and
// reading the backend's verdict after it did (RFC 4954 §4, §6; enhanced
// codes RFC 3463, RFC 5248).

// deny answers a gated login; the session stays open (docs/protocols.md §4.6). A
// disabled account gets a text the user can act on, with the code every
// client knows for a failed AUTH; a lockout is indistinguishable from a wrong
// password; a connection limit is temporary.
func (ss *session) deny(code string) error {
	var rep *reply
	switch code {
	case protocols.DenyDisabled:
		rep = newReply(535, "5.7.8 SMTP access is disabled for this account, please contact your administrator")
	case protocols.DenyLimit:
		rep = newReply(454, "4.7.0 Too many connections")
	default: // DenyLockout and anything unknown
		rep = newReply(535, "5.7.8 Authentication credentials invalid")
	}
	ss.outReply(rep)
	return ss.Flush()
}

// verdict acts on the backend's final reply to AUTH. cancelled is true when
// the client aborted the exchange with "*": the 501 that follows is the
// expected answer, not a bad command.
//
//	2xx (235)        authenticated: Observer.Authenticated, then the reply
//	4xx (454, 432)   temporary failure: never a failed password
//	500-504          syntax, sequence, unknown mechanism, cancelled: no verdict
//	other 5xx (535)  the credential was refused
func (ss *session) verdict(rep *reply, user, mech string, cancelled bool) (bool, error) {
	switch {
	case rep.class() == 2:
		// Before the client can read its 235: the registry must know the
		// user by the time the client acts on it.
		ss.Observer.Authenticated(user, mech)
		ss.Log.Info("login", "user", user, "mechanism", mech, "outcome", "success")
		ss.outReply(rep)
		return true, nil
	case rep.class() == 3:
		ss.LoginLost(user, mech)
		return false, backendErr(errUnexpected334)
	case rep.class() == 4:
		ss.Observer.AuthFailed(user, mech, true)
		ss.Log.Info("login", "user", user, "mechanism", mech, "outcome", "tempfail", "code", rep.code, "enhanced", rep.enhanced())
		return false, ss.relay(rep)
	case cancelled:
		ss.Log.Info("login", "user", user, "mechanism", mech, "outcome", "cancelled")
		ss.outReply(rep)
		return false, ss.Flush()
	case countable(rep):
		ss.Log.Info("login", "user", user, "mechanism", mech, "outcome", "bad", "code", rep.code)
		return false, ss.relay(rep)
	}
	ss.Observer.AuthFailed(user, mech, false)
	ss.Log.Info("login", "user", user, "mechanism", mech, "outcome", "failure", "code", rep.code, "enhanced", rep.enhanced())
	ss.outReply(rep)
	return false, ss.Flush()
}
