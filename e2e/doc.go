// Package e2e holds mailgate's end-to-end tests: they build ./cmd/mailgate
// once, run the binary as a subprocess with a generated config (or as
// `mailgate demo`), and drive it with real clients: Python's imaplib
// (testdata/imapc.py) and curl.
//
// The tests against a real Dovecot need the MAILGATE_DOVECOT_* variables
// that scripts/test.sh exports after scripts/dovecot.sh start; without them
// they skip. To run them by hand:
//
//	scripts/dovecot.sh start && eval "$(scripts/dovecot.sh env)"
//	go test -count=1 -v ./e2e
package e2e
