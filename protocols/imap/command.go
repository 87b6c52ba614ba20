package imap

import (
	"bufio"
	"bytes"
	"io"
	"strconv"

	"github.com/mailgate/mailgate/protocols"
)

// A command as the client sent it: a sequence of lines, each but the last
// ending with a literal announcement (RFC 9051 §4.3, RFC 7888) whose octets
// follow the line. Literal markers are removed from the stored lines; when a
// command is forwarded the literals are announced again in the form the
// backend needs.

// segment is one line of a command without its line ending. When the line
// announced a literal, the marker ("{n}", "{n+}") is cut off and the literal
// octets are in lit.
type segment struct {
	line   []byte
	lit    []byte
	hasLit bool
}

// command is one complete client command.
type command struct {
	tag  string
	name string // upper-case
	segs []segment
}

// wipe zeroes every byte of the command: lines and literals may hold a
// password.
func (c *command) wipe() {
	for _, s := range c.segs {
		clear(s.line)
		clear(s.lit)
	}
}

// cmdError is a command the handler answers itself. The client has been told
// nothing yet.
type cmdError struct {
	tag    string // "" when the tag could not be parsed: the reply is untagged
	status string // "BAD" or "NO"
	text   string // response text, may start with a response code
	counts bool   // counts against Limits.MaxBadCommands
	bye    string // non-empty: the session must end with "* BYE <bye>"
}

func (e *cmdError) Error() string { return "imap: " + e.status + " " + e.text }

func badCommand(tag, text string) *cmdError {
	return &cmdError{tag: tag, status: "BAD", text: text, counts: true}
}

// cmdReader reads client commands, answering synchronizing literals with its
// own continuation request, and bounds every part of a command.
type cmdReader struct {
	r        *bufio.Reader
	w        *bufio.Writer
	maxLine  int // one line
	maxLit   int // one literal
	maxTotal int // all lines and literals of one command
	// refuse, when non-nil, may refuse a command at its first literal, before
	// the continuation request is sent (RFC 9051 §7.5: the server answers with
	// a tagged result instead of "+"), e.g. LOGIN under LOGINDISABLED.
	refuse func(tag, name string) *cmdError
}

// maxSegments bounds the number of literals in one pre-auth command. RFC 2971
// allows 30 ID field-value pairs, each value possibly a literal.
const maxSegments = 64

// read reads one command. A *cmdError means the command must be answered by
// the handler (and the rest of the command, if any, was discarded); other
// errors are I/O errors.
func (cr *cmdReader) read() (*command, error) {
	line, err := readLine(cr.r, cr.maxLine)
	if err != nil {
		return nil, cr.lineError(err, "")
	}
	text, n, nonSync, hasLit := splitLiteral(line)
	tag, name, herr := parseHead(text)
	cmd := &command{tag: tag, name: name}
	total := len(line)
	for {
		if !hasLit {
			cmd.segs = append(cmd.segs, segment{line: text})
			if herr != nil {
				cmd.wipe()
				return nil, herr
			}
			return cmd, nil
		}
		refusal := herr
		switch {
		case refusal != nil:
		case n > int64(cr.maxLit):
			refusal = badCommand(tag, "[TOOBIG] Literal too large")
		case int64(total)+n > int64(cr.maxTotal) || len(cmd.segs) >= maxSegments:
			refusal = badCommand(tag, "[TOOBIG] Command too long")
		case cr.refuse != nil:
			refusal = cr.refuse(tag, name)
		}
		if refusal != nil {
			cmd.segs = append(cmd.segs, segment{line: text})
			cmd.wipe()
			if nonSync {
				// The octets are on their way (RFC 7888 §4): skip them, or
				// give up when they are too many to skip.
				if err := cr.drain(n); err != nil {
					if ce, ok := err.(*cmdError); ok {
						ce.tag, ce.status, ce.text = refusal.tag, refusal.status, refusal.text
						return nil, ce
					}
					return nil, err
				}
			}
			return nil, refusal
		}
		if !nonSync {
			if _, err := cr.w.WriteString("+ Ready for literal data\r\n"); err != nil {
				return nil, err
			}
			if err := cr.w.Flush(); err != nil {
				return nil, err
			}
		}
		lit := make([]byte, n)
		if _, err := io.ReadFull(cr.r, lit); err != nil {
			cmd.wipe()
			clear(lit)
			return nil, noEOF(err)
		}
		cmd.segs = append(cmd.segs, segment{line: text, lit: lit, hasLit: true})
		total += int(n)
		line, err = readLine(cr.r, cr.maxLine)
		if err != nil {
			cmd.wipe()
			return nil, cr.lineError(err, tag)
		}
		total += len(line)
		text, n, nonSync, hasLit = splitLiteral(line)
	}
}

// lineError maps a readLine error. An over-long line is answered with BAD; if
// it announced a non-synchronizing literal, the session cannot recover.
func (cr *cmdReader) lineError(err error, tag string) error {
	le, ok := protocols.AsLongLine(err)
	if !ok {
		return err
	}
	if tag == "" && bytes.IndexByte(le.Head, ' ') > 0 {
		// Only trust a tag that ended within the bytes kept.
		tag, _, _ = parseHead(le.Head)
	}
	ce := badCommand(tag, "Line too long")
	if _, _, nonSync, ok := splitLiteral(le.Tail); ok && nonSync {
		ce.bye = "Line too long"
	}
	return ce
}

// drain discards the rest of a refused command whose non-synchronizing
// literal of n octets is in flight, following further non-synchronizing
// literals. It stops at a line without a literal or announcing a synchronizing
// one (the client waits for a "+" that never comes and reads our reply).
func (cr *cmdReader) drain(n int64) error {
	budget := int64(cr.maxTotal)
	for {
		if n > budget {
			return &cmdError{status: "BAD", counts: true, bye: "Literal too large"}
		}
		budget -= n
		if _, err := cr.r.Discard(int(n)); err != nil {
			return noEOF(err)
		}
		line, err := readLine(cr.r, cr.maxLine)
		if err != nil {
			if _, ok := protocols.AsLongLine(err); ok {
				return &cmdError{status: "BAD", counts: true, bye: "Line too long"}
			}
			return err
		}
		budget -= int64(len(line))
		var nonSync, ok bool
		_, n, nonSync, ok = splitLiteral(line)
		clear(line)
		if !ok || !nonSync {
			return nil
		}
	}
}

func noEOF(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// splitLiteral reports whether line ends with a literal announcement outside
// a quoted string: "{" number ["+"] "}" (RFC 9051 §9 literal, RFC 7888
// literal+). It returns the line without the marker.
func splitLiteral(line []byte) (text []byte, n int64, nonSync, ok bool) {
	if len(line) < 3 || line[len(line)-1] != '}' {
		return line, 0, false, false
	}
	inQuote := false
	for i := 0; i < len(line); i++ {
		switch c := line[i]; {
		case inQuote && c == '\\':
			i++
		case c == '"':
			inQuote = !inQuote
		}
	}
	if inQuote {
		return line, 0, false, false
	}
	open := bytes.LastIndexByte(line, '{')
	if open < 0 {
		return line, 0, false, false
	}
	num := line[open+1 : len(line)-1]
	if len(num) > 0 && num[len(num)-1] == '+' {
		nonSync = true
		num = num[:len(num)-1]
	}
	if len(num) == 0 || len(num) > 18 {
		return line, 0, false, false
	}
	for _, c := range num {
		if c < '0' || c > '9' {
			return line, 0, false, false
		}
	}
	n, err := strconv.ParseInt(string(num), 10, 64)
	if err != nil {
		return line, 0, false, false
	}
	return line[:open], n, nonSync, true
}

// parseHead parses "tag SP command-name" at the start of a command line. The
// tag is returned whenever it is valid, so even a bad command gets a tagged
// reply.
func parseHead(text []byte) (tag, name string, err *cmdError) {
	sp := bytes.IndexByte(text, ' ')
	rawTag := text
	if sp >= 0 {
		rawTag = text[:sp]
	}
	if len(text) == 0 {
		return "", "", badCommand("", "Empty command line")
	}
	if !isTag(rawTag) {
		return "", "", badCommand("", "Invalid tag")
	}
	tag = string(rawTag)
	if sp < 0 {
		return tag, "", badCommand(tag, "Missing command")
	}
	rest := text[sp+1:]
	end := bytes.IndexByte(rest, ' ')
	if end < 0 {
		end = len(rest)
	}
	if end == 0 || !isAtom(rest[:end]) {
		return tag, "", badCommand(tag, "Invalid command name")
	}
	return tag, string(bytes.ToUpper(rest[:end])), nil
}

// isAtomChar reports whether c is an ATOM-CHAR: any CHAR except
// atom-specials "(" ")" "{" SP CTL "%" "*" DQUOTE "\" "]" (RFC 9051 §9).
func isAtomChar(c byte) bool {
	if c <= 0x20 || c >= 0x7f {
		return false
	}
	switch c {
	case '(', ')', '{', '%', '*', '"', '\\', ']':
		return false
	}
	return true
}

// isAStringChar: ATOM-CHAR or resp-specials "]".
func isAStringChar(c byte) bool { return isAtomChar(c) || c == ']' }

// isTag: tag = 1*<any ASTRING-CHAR except "+">.
func isTag(b []byte) bool {
	if len(b) == 0 {
		return false
	}
	for _, c := range b {
		if !isAStringChar(c) || c == '+' {
			return false
		}
	}
	return true
}

func isAtom(b []byte) bool {
	for _, c := range b {
		if !isAtomChar(c) {
			return false
		}
	}
	return len(b) > 0
}
