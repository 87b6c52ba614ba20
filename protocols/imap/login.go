package imap

import (
	"bytes"

	"github.com/mailgate/mailgate/protocols"
)

// login handles "LOGIN userid password" (RFC 9051 §6.2.3). The arguments
// were read whole, literals included (the handler sent its own "+" for
// synchronizing ones), so the user is known before anything reaches the
// backend. An allowed login is written anew for the backend.
func (ss *session) login(cmd *command) (bool, error) {
	sc := newArgScanner(cmd)
	var user, pass []byte
	ok := sc.sp()
	if ok {
		user, ok = sc.astring()
	}
	if ok {
		ok = sc.sp()
	}
	if ok {
		pass, ok = sc.astring()
	}
	if !ok || !sc.end() || bytes.IndexByte(user, 0) >= 0 || bytes.IndexByte(pass, 0) >= 0 {
		return false, ss.answer(badCommand(cmd.tag, "Invalid LOGIN arguments"))
	}
	defer clear(pass) // a copy when the quoted form had escapes
	if ss.loginDisabled() {
		// RFC 9051 §6.2.3: LOGINDISABLED means LOGIN answers NO.
		return false, ss.reply(cmd.tag, "NO", privacyRequired)
	}
	if len(user) == 0 || len(pass) == 0 {
		return false, ss.reply(cmd.tag, "NO", "[AUTHENTICATIONFAILED] Authentication failed")
	}
	u := string(user)
	const mech = "LOGIN"
	if code := ss.CheckLogin(u, "", mech); code != protocols.DenyNone {
		return false, ss.deny(cmd.tag, code)
	}
	var b cmdBuilder
	b.raw(cmd.tag + " LOGIN ")
	b.str(user) // NUL was refused above, so str cannot fail
	b.raw(" ")
	b.str(pass)
	segs := b.done()
	early, err := ss.send(cmd.tag, segs, ss.relayUntagged)
	for _, s := range segs {
		clear(s.line) // quoted password; literals alias the command, wiped by the caller
	}
	if err != nil {
		ss.LoginLost(u, mech)
		return false, err
	}
	return ss.awaitVerdict(cmd.tag, u, mech, early)
}
