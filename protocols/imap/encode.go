package imap

import "errors"

// cmdBuilder assembles a command for the backend as segments: strings are
// written as quoted strings when that is safe in both IMAP4rev1 and rev2, and
// as literals otherwise (8-bit, CR, LF). Literals are always sent
// synchronizing (session.send waits for the backend's "+"), which every
// backend understands whatever it advertised (RFC 9051 §4.3).
type cmdBuilder struct {
	segs []segment
	cur  []byte
}

var errNULInString = errors.New("imap: NUL cannot be sent in a string")

func (b *cmdBuilder) raw(s string) { b.cur = append(b.cur, s...) }

// str appends value as a string (RFC 9051 §4.3).
func (b *cmdBuilder) str(v []byte) error {
	quotable := true
	for _, c := range v {
		switch {
		case c == 0:
			return errNULInString
		case c == '\r' || c == '\n' || c >= 0x80:
			quotable = false
		}
	}
	if !quotable {
		b.segs = append(b.segs, segment{line: b.cur, lit: v, hasLit: true})
		b.cur = nil
		return nil
	}
	b.cur = append(b.cur, '"')
	for _, c := range v {
		if c == '"' || c == '\\' {
			b.cur = append(b.cur, '\\')
		}
		b.cur = append(b.cur, c)
	}
	b.cur = append(b.cur, '"')
	return nil
}

// done returns the segments; the last one carries no literal.
func (b *cmdBuilder) done() []segment {
	segs := append(b.segs, segment{line: b.cur})
	b.segs, b.cur = nil, nil
	return segs
}

// lineCommand is a command without literals.
func lineCommand(s string) []segment { return []segment{{line: []byte(s)}} }
