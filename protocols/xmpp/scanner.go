package xmpp

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"unicode/utf8"
)

// The tokenizer: the restricted XML of RFC 6120 §11 read straight off a
// connection's bufio.Reader. It never reads past the end of the token it
// returns (it only peeks), so after a given element the rest of the input is
// still in the reader: the proxy relays it, or Conn.StartTLSServer discards it.
//
// Refused outright (RFC 6120 §11.1, §4.9.3.18 restricted-xml): comments,
// processing instructions other than the XML declaration that may open a
// document, any DTD (<!DOCTYPE ...>, <!ENTITY ...>) and entity references
// other than the five predefined ones. Character references are decoded and
// checked. Every byte counts against a meter (see meter), so no input can
// make the tokenizer allocate without bound.

// xmlError is a violation of the XML rules or of a limit. cond is the stream
// error condition it deserves (RFC 6120 §4.9.3); text is a fixed description
// that never holds input bytes, so it is safe to log and to send.
type xmlError struct {
	cond string
	text string
}

func (e *xmlError) Error() string { return "xmpp: " + e.cond + ": " + e.text }

func notWellFormed(text string) error { return &xmlError{cond: condNotWellFormed, text: text} }
func restricted(text string) error    { return &xmlError{cond: condRestrictedXML, text: text} }
func overLimit(text string) error     { return &xmlError{cond: condPolicyViolation, text: text} }

// Stream error conditions used for XML problems (RFC 6120 §4.9.3).
const (
	condBadFormat           = "bad-format"
	condNotWellFormed       = "not-well-formed"
	condRestrictedXML       = "restricted-xml"
	condPolicyViolation     = "policy-violation"
	condUnsupportedEncoding = "unsupported-encoding"
)

// Fixed bounds of the tokenizer, below the byte budgets of the meter.
const (
	maxNameLen  = 256 // an element or attribute name
	maxAttrs    = 64  // attributes (namespace declarations included) on one element
	maxDeclLen  = 256 // the XML declaration
	maxEntityLn = 12  // between '&' and ';'
)

// meter counts the bytes a side sends. total is the whole pre-auth phase,
// unit the current top-level unit (a stream header, one first-level element,
// or a run of whitespace between them).
type meter struct {
	total, maxTotal int
	unit, maxUnit   int
}

// resetUnit starts counting a new top-level unit.
func (m *meter) resetUnit() { m.unit = 0 }

type tokKind uint8

const (
	tokText  tokKind = iota // character data (CDATA sections included), decoded
	tokStart                // a start tag or an empty-element tag
	tokEnd                  // an end tag
	tokDecl                 // the XML declaration
)

// rawAttr is an attribute as written: a qualified name and the normalized,
// decoded value.
type rawAttr struct {
	name, value string
}

type token struct {
	kind  tokKind
	name  string    // qualified name of a start or end tag
	attrs []rawAttr // start tag only
	empty bool      // an empty-element tag: <name/>
	text  []byte    // tokText: decoded data; tokDecl: the declaration's content
	space bool      // tokText: the data is XML whitespace only
}

// scanner splits the input into tokens.
type scanner struct {
	r *bufio.Reader
	m *meter
	// rec, when non-nil, receives every byte consumed (the raw form of a
	// stream header that is forwarded as it was written).
	rec *[]byte
	// declOK allows an XML declaration as the next token (set at the start of
	// a document, cleared by any token).
	declOK bool
	// textErr, when set, is returned at the first character of data other
	// than whitespace, rather than waiting for the next '<' (outside the
	// first-level elements only keepalives may stand).
	textErr error
	buf     []byte
}

var errBudget = overLimit("too much data before authentication")
var errUnitSize = overLimit("stanza too large")
var errTextAtStreamLevel = &xmlError{cond: condBadFormat, text: "text at the stream level"}
var errTextBeforeHeader = notWellFormed("text before the stream header")

// readByte consumes one byte, counting it.
func (s *scanner) readByte() (byte, error) {
	b, err := s.r.ReadByte()
	if err != nil {
		return 0, err
	}
	s.m.total++
	s.m.unit++
	if s.rec != nil {
		*s.rec = append(*s.rec, b)
	}
	if s.m.total > s.m.maxTotal {
		return 0, errBudget
	}
	if s.m.unit > s.m.maxUnit {
		return 0, errUnitSize
	}
	return b, nil
}

// take consumes a byte already seen with peek; the only possible error is
// a spent budget.
func (s *scanner) take() error {
	_, err := s.readByte()
	return err
}

// mustByte consumes one byte inside a token: EOF there is unexpected.
func (s *scanner) mustByte() (byte, error) {
	b, err := s.readByte()
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return b, err
}

// peek returns the next byte without consuming it.
func (s *scanner) peek() (byte, error) {
	p, err := s.r.Peek(1)
	if err != nil {
		return 0, err
	}
	return p[0], nil
}

func (s *scanner) mustPeek() (byte, error) {
	b, err := s.peek()
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return b, err
}

// next returns the next token. io.EOF means the input ended cleanly between
// tokens; inside a token it is io.ErrUnexpectedEOF.
func (s *scanner) next() (token, error) {
	declOK := s.declOK
	s.declOK = false
	b, err := s.peek()
	if err != nil {
		return token{}, err
	}
	if b != '<' {
		return s.text()
	}
	if err := s.take(); err != nil {
		return token{}, err
	}
	c, err := s.mustPeek()
	if err != nil {
		return token{}, err
	}
	switch c {
	case '/':
		if err := s.take(); err != nil {
			return token{}, err
		}
		return s.endTag()
	case '?':
		if err := s.take(); err != nil {
			return token{}, err
		}
		return s.procInst(declOK)
	case '!':
		if err := s.take(); err != nil {
			return token{}, err
		}
		return s.bang()
	}
	return s.startTag()
}

// skipBOM consumes a UTF-8 byte order mark at the start of a document (XML
// 1.0 §4.3.3 allows one; expat-based servers such as Prosody accept it).
func (s *scanner) skipBOM() error {
	if b, err := s.peek(); err != nil || b != 0xEF {
		return nil // errors surface at the next read
	}
	for _, want := range []byte{0xEF, 0xBB, 0xBF} {
		b, err := s.mustByte()
		if err != nil {
			return err
		}
		if b != want {
			return errTextBeforeHeader
		}
	}
	return nil
}

// name reads a qualified name.
func (s *scanner) name() (string, error) {
	s.buf = s.buf[:0]
	for {
		b, err := s.mustPeek()
		if err != nil {
			return "", err
		}
		if b < utf8.RuneSelf {
			r := rune(b)
			if len(s.buf) == 0 && !isNameStart(r) || len(s.buf) > 0 && !isNameChar(r) {
				break
			}
			if err := s.take(); err != nil {
				return "", err
			}
			s.buf = append(s.buf, b)
		} else {
			// A non-ASCII character can only belong to the name: every
			// delimiter after a name is ASCII.
			if err := s.take(); err != nil {
				return "", err
			}
			r, err := s.readRune(b)
			if err != nil {
				return "", err
			}
			if len(s.buf) == 0 && !isNameStart(r) || !isNameChar(r) {
				return "", notWellFormed("invalid name character")
			}
			s.buf = utf8.AppendRune(s.buf, r)
		}
		if len(s.buf) > maxNameLen {
			return "", overLimit("name too long")
		}
	}
	if len(s.buf) == 0 {
		return "", notWellFormed("name expected")
	}
	return string(s.buf), nil
}

// skipSpace consumes whitespace and reports whether there was any.
func (s *scanner) skipSpace() (bool, error) {
	any := false
	for {
		b, err := s.mustPeek()
		if err != nil {
			return any, err
		}
		if !isSpace(b) {
			return any, nil
		}
		if err := s.take(); err != nil {
			return any, err
		}
		any = true
	}
}

// expect consumes one byte that must be want.
func (s *scanner) expect(want byte) error {
	b, err := s.mustByte()
	if err != nil {
		return err
	}
	if b != want {
		return notWellFormed("unexpected character in tag")
	}
	return nil
}

// startTag reads the rest of "<name attr='v' ...>" or ".../>" after '<'.
func (s *scanner) startTag() (token, error) {
	name, err := s.name()
	if err != nil {
		return token{}, err
	}
	t := token{kind: tokStart, name: name}
	for {
		sp, err := s.skipSpace()
		if err != nil {
			return token{}, err
		}
		b, err := s.mustPeek()
		if err != nil {
			return token{}, err
		}
		switch b {
		case '>':
			if err := s.take(); err != nil {
				return token{}, err
			}
			return t, nil
		case '/':
			if err := s.take(); err != nil {
				return token{}, err
			}
			if err := s.expect('>'); err != nil {
				return token{}, err
			}
			t.empty = true
			return t, nil
		}
		if !sp {
			return token{}, notWellFormed("whitespace expected before attribute")
		}
		if len(t.attrs) == maxAttrs {
			return token{}, overLimit("too many attributes")
		}
		an, err := s.name()
		if err != nil {
			return token{}, err
		}
		if _, err := s.skipSpace(); err != nil {
			return token{}, err
		}
		if err := s.expect('='); err != nil {
			return token{}, err
		}
		if _, err := s.skipSpace(); err != nil {
			return token{}, err
		}
		v, err := s.attrValue()
		if err != nil {
			return token{}, err
		}
		for _, a := range t.attrs {
			if a.name == an {
				return token{}, notWellFormed("duplicate attribute")
			}
		}
		t.attrs = append(t.attrs, rawAttr{name: an, value: v})
	}
}

// attrValue reads a quoted attribute value, decoding references and
// normalizing literal whitespace to spaces (XML 1.0 §3.3.3).
func (s *scanner) attrValue() (string, error) {
	q, err := s.mustByte()
	if err != nil {
		return "", err
	}
	if q != '\'' && q != '"' {
		return "", notWellFormed("attribute value must be quoted")
	}
	s.buf = s.buf[:0]
	for {
		b, err := s.mustByte()
		if err != nil {
			return "", err
		}
		switch {
		case b == q:
			return string(s.buf), nil
		case b == '<':
			return "", notWellFormed("'<' in attribute value")
		case b == '&':
			if s.buf, err = s.reference(s.buf); err != nil {
				return "", err
			}
		case isSpace(b):
			s.buf = append(s.buf, ' ')
		default:
			r, err := s.readRune(b)
			if err != nil {
				return "", err
			}
			s.buf = utf8.AppendRune(s.buf, r)
		}
	}
}

// endTag reads the rest of "</name>" after "</".
func (s *scanner) endTag() (token, error) {
	name, err := s.name()
	if err != nil {
		return token{}, err
	}
	if _, err := s.skipSpace(); err != nil {
		return token{}, err
	}
	if err := s.expect('>'); err != nil {
		return token{}, err
	}
	return token{kind: tokEnd, name: name}, nil
}

// text reads character data up to the next '<' (not consumed), with line
// ends normalized to LF (XML 1.0 §2.11).
func (s *scanner) text() (token, error) {
	s.buf = s.buf[:0]
	space := true
	for {
		b, err := s.peek()
		if err == io.EOF || err == nil && b == '<' {
			break
		}
		if err != nil {
			return token{}, err
		}
		if err := s.take(); err != nil {
			return token{}, err
		}
		switch {
		case b == '&' && s.textErr != nil:
			return token{}, s.textErr
		case b == '&':
			space = false
			if s.buf, err = s.reference(s.buf); err != nil {
				return token{}, err
			}
		case b == '\r':
			s.buf = append(s.buf, '\n')
			if nb, err := s.peek(); err == nil && nb == '\n' {
				if err := s.take(); err != nil {
					return token{}, err
				}
			}
		case isSpace(b):
			s.buf = append(s.buf, b)
		case s.textErr != nil:
			return token{}, s.textErr
		default:
			space = false
			r, err := s.readRune(b)
			if err != nil {
				return token{}, err
			}
			s.buf = utf8.AppendRune(s.buf, r)
		}
	}
	return token{kind: tokText, text: bytes.Clone(s.buf), space: space}, nil
}

// bang handles "<!": CDATA sections are character data; comments and every
// DTD declaration are restricted XML (RFC 6120 §11.1).
func (s *scanner) bang() (token, error) {
	b, err := s.mustPeek()
	if err != nil {
		return token{}, err
	}
	switch {
	case b == '-':
		return token{}, restricted("comment")
	case b >= 'A' && b <= 'Z':
		return token{}, restricted("DTD")
	case b != '[':
		return token{}, notWellFormed("markup declaration")
	}
	for _, want := range []byte("[CDATA[") {
		if err := s.expect(want); err != nil {
			return token{}, notWellFormed("malformed CDATA section")
		}
	}
	s.buf = s.buf[:0]
	space := true
	for {
		b, err := s.mustByte()
		if err != nil {
			return token{}, err
		}
		if b == '>' && bytes.HasSuffix(s.buf, []byte("]]")) {
			s.buf = s.buf[:len(s.buf)-2]
			return token{kind: tokText, text: bytes.Clone(s.buf), space: space}, nil
		}
		switch {
		case b == '\r':
			s.buf = append(s.buf, '\n')
			if nb, err := s.peek(); err == nil && nb == '\n' {
				if err := s.take(); err != nil {
					return token{}, err
				}
			}
		case isSpace(b):
			s.buf = append(s.buf, b)
		default:
			if b != ']' {
				space = false
			}
			r, err := s.readRune(b)
			if err != nil {
				return token{}, err
			}
			s.buf = utf8.AppendRune(s.buf, r)
		}
	}
}

// procInst handles "<?": the XML declaration where one may stand, a
// restricted processing instruction anywhere else.
func (s *scanner) procInst(declOK bool) (token, error) {
	target, err := s.name()
	if err != nil {
		var xe *xmlError
		if errors.As(err, &xe) {
			return token{}, restricted("processing instruction")
		}
		return token{}, err
	}
	if target != "xml" {
		return token{}, restricted("processing instruction")
	}
	if !declOK {
		return token{}, notWellFormed("XML declaration not at the start of the stream")
	}
	s.buf = s.buf[:0]
	for {
		b, err := s.mustByte()
		if err != nil {
			return token{}, err
		}
		if b == '>' && bytes.HasSuffix(s.buf, []byte("?")) {
			content := bytes.Clone(s.buf[:len(s.buf)-1])
			if err := checkDecl(content); err != nil {
				return token{}, err
			}
			return token{kind: tokDecl, text: content}, nil
		}
		if len(s.buf) == maxDeclLen {
			return token{}, notWellFormed("XML declaration too long")
		}
		s.buf = append(s.buf, b)
	}
}
