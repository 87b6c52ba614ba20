// Package e2e holds mailgate's end-to-end tests: they build ./cmd/mailgate
// once, run the binary as a subprocess with a generated config (or as
// `mailgate demo`), and drive it with real clients: Python's imaplib,
// poplib and smtplib (testdata/*.py), slixmpp, go-sendxmpp, mbsync, mpop,
// msmtp, swaks, litmus, python3-caldav, vdirsyncer, curl and headless
// Chromium, in front of real
// Dovecot, Postfix, Prosody, ejabberd, Radicale and Apache mod_dav.
//
// The tests against a real server need the MAILGATE_<SERVER>_* variables
// that scripts/test.sh exports after scripts/<server>.sh start; without them
// they skip. To run them by hand, for instance:
//
//	scripts/dovecot.sh start && eval "$(scripts/dovecot.sh env)"
//	go test -count=1 -v ./e2e
package e2e
