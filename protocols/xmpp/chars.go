package xmpp

import (
	"bytes"
	"unicode/utf8"
)

// Character-level rules of XML 1.0 (fifth edition) as the tokenizer applies
// them: characters, names, references and the XML declaration.

// readRune consumes one UTF-8 encoded character whose first byte is b (already
// consumed) and checks it is an XML Char.
func (s *scanner) readRune(b byte) (rune, error) {
	if b < utf8.RuneSelf {
		if !isChar(rune(b)) {
			return 0, notWellFormed("invalid character")
		}
		return rune(b), nil
	}
	var enc [utf8.UTFMax]byte
	enc[0] = b
	n := 0
	switch {
	case b&0xE0 == 0xC0:
		n = 2
	case b&0xF0 == 0xE0:
		n = 3
	case b&0xF8 == 0xF0:
		n = 4
	default:
		return 0, notWellFormed("invalid UTF-8")
	}
	for i := 1; i < n; i++ {
		c, err := s.mustByte()
		if err != nil {
			return 0, err
		}
		enc[i] = c
	}
	r, size := utf8.DecodeRune(enc[:n])
	if r == utf8.RuneError || size != n || !isChar(r) {
		return 0, notWellFormed("invalid UTF-8")
	}
	return r, nil
}

// isChar is the XML 1.0 Char production.
func isChar(r rune) bool {
	switch {
	case r == 0x9, r == 0xA, r == 0xD:
		return true
	case r >= 0x20 && r <= 0xD7FF, r >= 0xE000 && r <= 0xFFFD, r >= 0x10000 && r <= 0x10FFFF:
		return true
	}
	return false
}

func isSpace(b byte) bool { return b == ' ' || b == '\t' || b == '\n' || b == '\r' }

// isNameStart and isNameChar are the XML 1.0 (fifth edition) NameStartChar
// and NameChar productions.
func isNameStart(r rune) bool {
	switch {
	case r == ':', r == '_', r >= 'A' && r <= 'Z', r >= 'a' && r <= 'z':
		return true
	case r >= 0xC0 && r <= 0xD6, r >= 0xD8 && r <= 0xF6, r >= 0xF8 && r <= 0x2FF,
		r >= 0x370 && r <= 0x37D, r >= 0x37F && r <= 0x1FFF, r >= 0x200C && r <= 0x200D,
		r >= 0x2070 && r <= 0x218F, r >= 0x2C00 && r <= 0x2FEF, r >= 0x3001 && r <= 0xD7FF,
		r >= 0xF900 && r <= 0xFDCF, r >= 0xFDF0 && r <= 0xFFFD, r >= 0x10000 && r <= 0xEFFFF:
		return true
	}
	return false
}

func isNameChar(r rune) bool {
	switch {
	case isNameStart(r), r == '-', r == '.', r >= '0' && r <= '9', r == 0xB7,
		r >= 0x300 && r <= 0x36F, r >= 0x203F && r <= 0x2040:
		return true
	}
	return false
}

// reference decodes an entity or character reference after '&' and appends
// it to dst. Only the predefined entities exist (RFC 6120 §11.1).
func (s *scanner) reference(dst []byte) ([]byte, error) {
	var ref [maxEntityLn]byte
	n := 0
	for {
		b, err := s.mustByte()
		if err != nil {
			return dst, err
		}
		if b == ';' {
			break
		}
		if n == len(ref) {
			return dst, notWellFormed("malformed reference")
		}
		ref[n] = b
		n++
	}
	name := ref[:n]
	switch string(name) {
	case "lt":
		return append(dst, '<'), nil
	case "gt":
		return append(dst, '>'), nil
	case "amp":
		return append(dst, '&'), nil
	case "apos":
		return append(dst, '\''), nil
	case "quot":
		return append(dst, '"'), nil
	}
	if n < 2 || name[0] != '#' {
		if n > 0 && isNameStart(rune(name[0])) {
			return dst, restricted("entity reference")
		}
		return dst, notWellFormed("malformed reference")
	}
	digits, base := name[1:], rune(10)
	if digits[0] == 'x' {
		digits, base = digits[1:], 16
	}
	if len(digits) == 0 {
		return dst, notWellFormed("malformed character reference")
	}
	var r rune
	for _, c := range digits {
		var d rune
		switch {
		case c >= '0' && c <= '9':
			d = rune(c - '0')
		case base == 16 && c >= 'a' && c <= 'f':
			d = rune(c-'a') + 10
		case base == 16 && c >= 'A' && c <= 'F':
			d = rune(c-'A') + 10
		default:
			return dst, notWellFormed("malformed character reference")
		}
		r = r*base + d
		if r > utf8.MaxRune {
			return dst, notWellFormed("character reference out of range")
		}
	}
	if !isChar(r) {
		return dst, notWellFormed("character reference to a non-character")
	}
	return utf8.AppendRune(dst, r), nil
}

// checkDecl accepts version 1.x and, if named, the UTF-8 encoding (RFC 6120
// §11.6: XMPP is UTF-8 only).
func checkDecl(content []byte) error {
	if len(content) == 0 || !isSpace(content[0]) {
		return notWellFormed("malformed XML declaration")
	}
	if v, ok := pseudoAttr(content, "version"); !ok || !bytes.HasPrefix(v, []byte("1.")) {
		return notWellFormed("unsupported XML version")
	}
	if e, ok := pseudoAttr(content, "encoding"); ok && !bytes.EqualFold(e, []byte("UTF-8")) {
		return &xmlError{cond: condUnsupportedEncoding, text: "only UTF-8 is supported"}
	}
	return nil
}

// pseudoAttr finds name='value' or name="value" in a declaration.
func pseudoAttr(content []byte, name string) ([]byte, bool) {
	i := bytes.Index(content, []byte(name))
	if i < 0 {
		return nil, false
	}
	rest := bytes.TrimLeft(content[i+len(name):], " \t\r\n")
	if len(rest) == 0 || rest[0] != '=' {
		return nil, false
	}
	rest = bytes.TrimLeft(rest[1:], " \t\r\n")
	if len(rest) < 2 || rest[0] != '\'' && rest[0] != '"' {
		return nil, false
	}
	end := bytes.IndexByte(rest[1:], rest[0])
	if end < 0 {
		return nil, false
	}
	return rest[1 : 1+end], true
}
