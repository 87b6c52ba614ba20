package smtp

import (
	"bytes"
	"strings"
)

// Client commands (RFC 5321 §4.1.1): a verb, then arguments after one
// space. The parser is pure: it takes a line without its CRLF.

// command is one parsed client command line.
type command struct {
	verb string // upper-case; "" when the line starts with no valid verb
	arg  []byte // everything after the verb and one space (aliases line)
	line []byte // the whole line, without CRLF
}

// maxVerb bounds a verb; the longest standard one is 8 (STARTTLS).
const maxVerb = 16

// parseCommand splits a command line. A verb is 1-16 ASCII letters followed
// by a space or the end of the line; anything else leaves verb empty (a
// syntax error). ok is false when the line holds a NUL or a CR, which no
// command may carry and which must never be forwarded.
func parseCommand(line []byte) (cmd command, ok bool) {
	if bytes.IndexByte(line, 0) >= 0 || bytes.IndexByte(line, '\r') >= 0 {
		return command{line: line}, false
	}
	cmd.line = line
	verb, arg, _ := bytes.Cut(line, []byte{' '})
	if len(verb) == 0 || len(verb) > maxVerb {
		return cmd, true
	}
	for _, c := range verb {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z') {
			return cmd, true
		}
	}
	cmd.verb = strings.ToUpper(string(verb))
	cmd.arg = arg
	return cmd, true
}

// Verbs of a mail transaction and the other commands a submission port
// answers only after login. On the mx role the first of them switches the
// session to blind relay.
var mailVerbs = map[string]bool{
	"MAIL": true, "RCPT": true, "DATA": true, "BDAT": true, "BURL": true,
	"VRFY": true, "EXPN": true, "HELP": true, "ETRN": true, "TURN": true, "ATRN": true,
}

// knownVerb returns verb when it is one the handler may name in a log line,
// else "other": an unknown "verb" could be a password sent out of turn.
func knownVerb(verb string) string {
	switch verb {
	case "EHLO", "HELO", "STARTTLS", "AUTH", "NOOP", "RSET", "QUIT":
		return verb
	}
	if mailVerbs[verb] {
		return verb
	}
	return "other"
}

// heloName returns the domain or address literal of "EHLO domain" and
// "HELO domain": the first space-separated word of the argument.
func heloName(arg []byte) string {
	f := bytes.Fields(arg)
	if len(f) == 0 {
		return ""
	}
	return string(f[0])
}

// splitAuth parses the arguments of "AUTH mechanism [initial-response]"
// (RFC 4954 §4). ir aliases arg: it may be a credential.
func splitAuth(arg []byte) (mech string, ir []byte, hasIR, ok bool) {
	m, rest, found := bytes.Cut(arg, []byte{' '})
	switch {
	case len(m) == 0 || len(m) > maxMech:
		return "", nil, false, false
	case !found:
		return string(m), nil, false, true
	case len(rest) == 0 || bytes.IndexByte(rest, ' ') >= 0:
		return "", nil, false, false
	}
	return string(m), rest, true, true
}

// maxMech bounds a SASL mechanism name (RFC 4422 §3.1: 1-20 characters).
const maxMech = 20
