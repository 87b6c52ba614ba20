package smtp

import (
	"github.com/mailgate/mailgate/protocols"
)

// Answering a login the gate refused (RFC 4954 §6; enhanced codes RFC
// 3463, RFC 5248). The backend's verdict is classified in auth.go.

// deny answers a gated login; the session stays open (docs/protocols.md §4.6). A
// disabled account gets a text the user can act on, with the code every
// client knows for a failed AUTH; a lockout gets that code too, with a text
// that says why; a connection limit is temporary.
func (ss *session) deny(code string) error {
	var rep *reply
	switch code {
	case protocols.DenyDisabled:
		rep = newReply(535, "5.7.8 SMTP access is disabled for this account, please contact your administrator")
	case protocols.DenyLimit:
		rep = newReply(454, "4.7.0 Too many connections")
	case protocols.DenyUnavailable:
		rep = newReply(454, "4.7.0 Temporary authentication failure, try again later")
	case protocols.DenyLockout:
		rep = newReply(535, "5.7.8 "+protocols.LockoutText)
	default:
		rep = newReply(535, "5.7.8 Authentication credentials invalid")
	}
	ss.outReply(rep)
	return ss.Flush()
}
