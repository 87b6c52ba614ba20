package pop3

import (
	"bytes"
	"errors"
	"unicode/utf8"
)

// Client commands (RFC 1939 §3): a case-insensitive keyword, then arguments
// separated by single spaces. USER and PASS take the rest of the line as one
// argument (a password may hold spaces, RFC 1939 §7), so the parser keeps
// everything after the first space and leaves splitting to the command.

// command is one parsed client line.
type command struct {
	name    string // keyword, upper-case
	args    []byte // what follows "KEYWORD " (aliases the line)
	hasArgs bool   // a space followed the keyword, even if nothing came after it
}

// Reasons a line is not a command. The texts go to the client after "-ERR ".
var (
	errEmptyLine = errors.New("Empty command")
	errKeyword   = errors.New("Invalid command keyword")
	errCTL       = errors.New("Invalid characters in command")
)

// maxKeyword bounds a keyword: RFC 1939 keywords have 3 or 4 characters,
// extensions a few more.
const maxKeyword = 16

// parseCommand splits a line (without its line ending) into keyword and
// arguments. Control characters other than TAB are refused anywhere in the
// line: a CR in an argument could end the line early at a backend that
// accepts bare CR, smuggling a second command behind the gate.
func parseCommand(line []byte) (command, error) {
	if len(line) == 0 {
		return command{}, errEmptyLine
	}
	for _, c := range line {
		if (c < 0x20 && c != '\t') || c == 0x7f {
			return command{}, errCTL
		}
	}
	kw, args, hasArgs := bytes.Cut(line, []byte{' '})
	if len(kw) == 0 || len(kw) > maxKeyword {
		return command{}, errKeyword
	}
	for _, c := range kw {
		if !isAlnum(c) && c != '-' {
			return command{}, errKeyword
		}
	}
	return command{name: string(bytes.ToUpper(kw)), args: args, hasArgs: hasArgs}, nil
}

func isAlnum(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z'
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

// validName checks a user name taken from USER or APOP: non-empty UTF-8
// without spaces at either end, which a backend would trim or split on. The
// command parser already refused control characters.
func validName(name []byte) bool {
	return len(name) > 0 && utf8.Valid(name) &&
		name[0] != ' ' && name[len(name)-1] != ' ' &&
		name[0] != '\t' && name[len(name)-1] != '\t'
}

// parseAPOP splits "name digest" (RFC 1939 §7) at the last space, so a name
// may hold spaces; the digest is 32 hex digits (MD5).
func parseAPOP(args []byte) (name, digest []byte, ok bool) {
	i := bytes.LastIndexByte(args, ' ')
	if i < 0 {
		return nil, nil, false
	}
	name, digest = args[:i], args[i+1:]
	if !validName(name) || len(digest) != 32 {
		return nil, nil, false
	}
	for _, c := range digest {
		if !isHex(c) {
			return nil, nil, false
		}
	}
	return name, digest, true
}

// parseAUTH splits "mechanism [initial-response]" (RFC 5034 §4).
func parseAUTH(args []byte) (mech string, ir []byte, hasIR, ok bool) {
	m, rest, hasIR := bytes.Cut(args, []byte{' '})
	if len(m) == 0 || len(m) > 40 || bytes.IndexByte(rest, ' ') >= 0 || (hasIR && len(rest) == 0) {
		return "", nil, false, false
	}
	for _, c := range m {
		if !isAlnum(c) && c != '-' && c != '_' {
			return "", nil, false, false
		}
	}
	return string(bytes.ToUpper(m)), rest, hasIR, true
}
