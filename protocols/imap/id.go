package imap

import (
	"bytes"
	"strings"
)

// clientID forwards the client's ID command (RFC 2971; valid in any state)
// without the fields a proxy or a trusted peer uses to describe the
// connection. Backends that trust the proxy's address for ID "x-originating-ip"
// and friends (Dovecot's login_trusted_networks) would otherwise believe
// whatever the client claims, so every field whose name starts with "x-" is
// dropped (docs/protocols.md §2.4, §9.6). An ID the handler cannot parse is
// refused rather than forwarded: what it cannot read, it cannot filter.
func (ss *session) clientID(cmd *command) error {
	pairs, ok := parseID(cmd)
	if !ok {
		return ss.answer(badCommand(cmd.tag, "Invalid ID arguments"))
	}
	var b cmdBuilder
	b.raw(cmd.tag + " ID ")
	kept := 0
	for _, p := range pairs {
		if strings.HasPrefix(strings.ToLower(string(p.key)), "x-") {
			continue
		}
		if kept == 0 {
			b.raw("(")
		} else {
			b.raw(" ")
		}
		kept++
		if b.str(p.key) != nil {
			return ss.answer(badCommand(cmd.tag, "Invalid ID arguments"))
		}
		b.raw(" ")
		if p.value == nil {
			b.raw("NIL")
		} else if b.str(p.value) != nil {
			return ss.answer(badCommand(cmd.tag, "Invalid ID arguments"))
		}
	}
	if kept == 0 {
		b.raw("NIL")
	} else {
		b.raw(")")
	}
	fwd := &command{tag: cmd.tag, name: cmd.name, segs: b.done()}
	return ss.forward(fwd)
}

type idPair struct {
	key   []byte
	value []byte // nil for NIL
}

// parseID parses: "ID" SP ( "(" [string SP nstring *(SP string SP nstring)] ")" / "NIL" ).
func parseID(cmd *command) ([]idPair, bool) {
	sc := newArgScanner(cmd)
	if !sc.sp() {
		return nil, false
	}
	if !sc.char('(') {
		a, ok := sc.atom()
		return nil, ok && strings.EqualFold(a, "NIL") && sc.end()
	}
	var pairs []idPair
	for !sc.char(')') {
		if len(pairs) > 0 && !sc.sp() {
			return nil, false
		}
		key, ok := sc.str()
		if !ok || !sc.sp() {
			return nil, false
		}
		var value []byte
		if v, ok := sc.str(); ok {
			value = v
			if value == nil {
				value = []byte{}
			}
		} else if a, ok := sc.atom(); !ok || !strings.EqualFold(a, "NIL") {
			return nil, false
		}
		pairs = append(pairs, idPair{key: bytes.Clone(key), value: bytes.Clone(value)})
	}
	return pairs, sc.end()
}
