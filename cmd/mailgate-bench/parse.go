package main

import (
	"bufio"
	"errors"
	"io"
	"strconv"
	"strings"
)

// The bench backend's command reader: tagged commands with atom, quoted
// string, literal and parenthesized-list arguments (RFC 3501 §4, RFC 7888
// for non-synchronizing literals), lenient where the bench does not care.

// command is one parsed client command.
type command struct {
	tag  string
	name string // upper case
	args []string
}

// parseError is a command the server answers with BAD.
type parseError struct {
	tag, msg string
	fatal    bool // the rest of the stream cannot be trusted
}

func (e *parseError) Error() string { return e.msg }

// readLine reads one CRLF- (or LF-) terminated line without its ending.
func readLine(r *bufio.Reader) ([]byte, error) {
	line, err := r.ReadSlice('\n')
	if errors.Is(err, bufio.ErrBufferFull) {
		return nil, errLineTooLong
	}
	if err != nil {
		return nil, err
	}
	line = line[:len(line)-1]
	if len(line) > 0 && line[len(line)-1] == '\r' {
		line = line[:len(line)-1]
	}
	return line, nil
}

// readCommand reads a tagged command and its arguments: atoms, quoted
// strings and literals ({n} synchronizing, answered with "+", or {n+}
// non-synchronizing, RFC 7888), a literal continuing the command on the
// next line. Parenthesized lists (ID's) are kept as one raw argument.
func (s *session) readCommand() (*command, error) {
	line, err := readLine(s.r)
	if err != nil {
		return nil, err
	}
	p := &lineParser{s: string(line)}
	tag := p.atom()
	if tag == "" || !p.sp() {
		return nil, &parseError{msg: "missing tag or command"}
	}
	cmd := &command{tag: tag, name: strings.ToUpper(p.atom())}
	if cmd.name == "" {
		return nil, &parseError{tag: tag, msg: "missing command"}
	}
	for !p.done() {
		if !p.sp() {
			return nil, &parseError{tag: tag, msg: "expected a space between arguments"}
		}
		switch p.peek() {
		case '"':
			v, ok := p.quoted()
			if !ok {
				return nil, &parseError{tag: tag, msg: "bad quoted string"}
			}
			cmd.args = append(cmd.args, v)
		case '(':
			v, ok := p.list()
			if !ok {
				return nil, &parseError{tag: tag, msg: "bad list"}
			}
			cmd.args = append(cmd.args, v)
		case '{':
			n, sync, ok := p.literal()
			if !ok {
				return nil, &parseError{tag: tag, msg: "bad literal"}
			}
			if n > maxArgLiteral {
				// A synchronizing literal was never invited, so the stream
				// is still in step; a non-synchronizing one is on its way.
				return nil, &parseError{tag: tag, msg: "literal too large", fatal: !sync}
			}
			if sync {
				s.w.WriteString("+ ready for literal\r\n")
				if err := s.w.Flush(); err != nil {
					return nil, err
				}
			}
			buf := make([]byte, n)
			if _, err := io.ReadFull(s.r, buf); err != nil {
				return nil, err
			}
			cmd.args = append(cmd.args, string(buf))
			rest, err := readLine(s.r)
			if err != nil {
				return nil, err
			}
			p = &lineParser{s: string(rest)}
		default:
			v := p.atom()
			if v == "" {
				return nil, &parseError{tag: tag, msg: "bad argument"}
			}
			cmd.args = append(cmd.args, v)
		}
	}
	return cmd, nil
}

// lineParser walks one command line.
type lineParser struct {
	s string
	i int
}

func (p *lineParser) done() bool { return p.i >= len(p.s) }

func (p *lineParser) peek() byte {
	if p.done() {
		return 0
	}
	return p.s[p.i]
}

func (p *lineParser) sp() bool {
	if p.peek() == ' ' {
		p.i++
		return true
	}
	return false
}

// atom reads up to the next space (lenient: the bench does not need the
// full atom-char grammar, and a stray special is the client's problem).
func (p *lineParser) atom() string {
	start := p.i
	for !p.done() && p.s[p.i] != ' ' {
		p.i++
	}
	return p.s[start:p.i]
}

// quoted reads a quoted string with \" and \\ escapes.
func (p *lineParser) quoted() (string, bool) {
	p.i++ // opening quote
	var b strings.Builder
	for !p.done() {
		c := p.s[p.i]
		p.i++
		switch c {
		case '"':
			return b.String(), true
		case '\\':
			if p.done() {
				return "", false
			}
			e := p.s[p.i]
			if e != '"' && e != '\\' {
				return "", false
			}
			b.WriteByte(e)
			p.i++
		default:
			b.WriteByte(c)
		}
	}
	return "", false
}

// list reads a parenthesized list whole (nested lists and quoted strings
// respected), returned with its parentheses.
func (p *lineParser) list() (string, bool) {
	start, depth, inQuote := p.i, 0, false
	for !p.done() {
		c := p.s[p.i]
		p.i++
		switch {
		case inQuote && c == '\\':
			p.i++
		case c == '"':
			inQuote = !inQuote
		case !inQuote && c == '(':
			depth++
		case !inQuote && c == ')':
			depth--
			if depth == 0 {
				return p.s[start:p.i], true
			}
		}
	}
	return "", false
}

// literal reads "{n}" or "{n+}", which must end the line.
func (p *lineParser) literal() (n int, sync bool, ok bool) {
	rest := p.s[p.i:]
	if len(rest) < 3 || rest[len(rest)-1] != '}' {
		return 0, false, false
	}
	num := rest[1 : len(rest)-1]
	sync = true
	if strings.HasSuffix(num, "+") {
		num, sync = num[:len(num)-1], false
	}
	v, err := strconv.Atoi(num)
	if err != nil || v < 0 {
		return 0, false, false
	}
	p.i = len(p.s)
	return v, sync, true
}
