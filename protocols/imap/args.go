package imap

// argScanner walks the arguments of a command across its segments: when the
// position reaches the end of a line that announced a literal, the literal is
// the next string token.
type argScanner struct {
	segs []segment
	seg  int
	pos  int
}

// newArgScanner starts right after "tag SP name".
func newArgScanner(c *command) *argScanner {
	return &argScanner{segs: c.segs, pos: len(c.tag) + 1 + len(c.name)}
}

func (s *argScanner) line() []byte { return s.segs[s.seg].line }

// atLiteral reports whether the next token is a literal.
func (s *argScanner) atLiteral() bool {
	return s.pos == len(s.line()) && s.segs[s.seg].hasLit
}

// end reports whether all arguments were consumed.
func (s *argScanner) end() bool {
	return s.pos == len(s.line()) && !s.segs[s.seg].hasLit
}

// char consumes c if it is next.
func (s *argScanner) char(c byte) bool {
	if s.pos < len(s.line()) && s.line()[s.pos] == c {
		s.pos++
		return true
	}
	return false
}

func (s *argScanner) sp() bool { return s.char(' ') }

// atom consumes 1*ATOM-CHAR.
func (s *argScanner) atom() (string, bool) {
	l := s.line()
	start := s.pos
	for s.pos < len(l) && isAtomChar(l[s.pos]) {
		s.pos++
	}
	return string(l[start:s.pos]), s.pos > start
}

// astring consumes an astring (RFC 9051 §9): 1*ASTRING-CHAR, a quoted
// string or a literal. The value aliases the command's buffers, except for
// quoted strings with escapes.
func (s *argScanner) astring() ([]byte, bool) {
	if v, ok := s.str(); ok {
		return v, true
	}
	if s.atLiteral() {
		return nil, false
	}
	l := s.line()
	start := s.pos
	for s.pos < len(l) && isAStringChar(l[s.pos]) {
		s.pos++
	}
	return l[start:s.pos], s.pos > start
}

// str consumes a string: quoted or literal.
func (s *argScanner) str() ([]byte, bool) {
	if s.atLiteral() {
		v := s.segs[s.seg].lit
		s.seg++
		s.pos = 0
		return v, true
	}
	if s.pos < len(s.line()) && s.line()[s.pos] == '"' {
		return s.quoted()
	}
	return nil, false
}

// quoted consumes DQUOTE *QUOTED-CHAR DQUOTE; only \" and \\ are escapes.
// 8-bit bytes are accepted (UTF-8 in IMAP4rev2, RFC 9051 §4.3).
func (s *argScanner) quoted() ([]byte, bool) {
	l := s.line()
	start := s.pos + 1
	var out []byte
	for i := start; i < len(l); i++ {
		switch c := l[i]; c {
		case '"':
			s.pos = i + 1
			if out == nil {
				return l[start:i], true
			}
			return out, true
		case '\\':
			if i+1 >= len(l) || (l[i+1] != '"' && l[i+1] != '\\') {
				return nil, false
			}
			if out == nil {
				out = append([]byte{}, l[start:i]...)
			}
			i++
			out = append(out, l[i])
		case 0:
			return nil, false
		default:
			if out != nil {
				out = append(out, c)
			}
		}
	}
	return nil, false
}

// rest consumes the remainder of the current line; it fails if a literal
// follows (AUTHENTICATE's initial response must not be a literal, RFC 9051
// §6.2.2).
func (s *argScanner) rest() ([]byte, bool) {
	if s.segs[s.seg].hasLit {
		return nil, false
	}
	l := s.line()
	v := l[s.pos:]
	s.pos = len(l)
	return v, true
}
