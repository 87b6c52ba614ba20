package xmpp

import (
	"fmt"
	"strings"

	"github.com/mailgate/mailgate/protocols"
)

// The two ends of a login: naming the user and asking the gate before the
// credential leaves, and counting what the backend made of it.

// qualify turns a SASL identity into the user the session is attributed to.
// A simple user name is the localpart of the JID (RFC 6120 §6.3.7), so it
// gets the stream's domain; a JID (an authzid is a bare JID, §6.3.8) keeps
// its own, without a resource.
func (ss *session) qualify(name string) string {
	if name == "" {
		return ""
	}
	if i := strings.IndexByte(name, '/'); i >= 0 {
		name = name[:i]
	}
	if strings.IndexByte(name, '@') < 0 {
		name += "@" + ss.domain
	}
	return name
}

// deny answers a gated login with the SASL failure of RFC 6120 §6.5: a
// disabled account is something the user can act on (<account-disabled/>);
// the per-user connection limit is <temporary-auth-failure/> (clients retry
// later instead of asking for a new password); a lockout is
// <not-authorized/>, the failure every client handles, with a text that
// says why (the user should wait, not retype a password).
func (ss *session) deny(code string) error {
	switch code {
	case protocols.DenyDisabled:
		ss.out(saslFailure("account-disabled", "en", "XMPP access is disabled for this account, please contact your administrator"))
	case protocols.DenyLimit:
		ss.out(saslFailure("temporary-auth-failure", "en", "Too many connections, try again later"))
		return ss.Flush()
	case protocols.DenyUnavailable:
		ss.out(saslFailure("temporary-auth-failure", "en", "Login temporarily unavailable, try again later"))
		return ss.Flush()
	case protocols.DenyLockout:
		ss.out(saslFailure("not-authorized", "en", protocols.LockoutText))
	default:
		ss.out(saslFailure("not-authorized", "", ""))
	}
	return ss.countFailure()
}

// countFailure counts a failed authentication, already answered, and ends
// the stream once there were too many (RFC 6120 §6.4.5).
func (ss *session) countFailure() error {
	ss.failures++
	if ss.failures < ss.opts.MaxAuthFailures {
		return ss.Flush()
	}
	ss.Log.Info("too many failed authentications", "outcome", "closed")
	return &streamErr{cond: "policy-violation", text: "Too many failed authentication attempts",
		err: fmt.Errorf("xmpp: %w", protocols.ErrTooManyBadCommands)}
}
