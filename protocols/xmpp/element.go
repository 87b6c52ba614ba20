package xmpp

import (
	"bufio"
	"errors"
	"io"
	"strings"
)

// The element layer: namespaces (Namespaces in XML 1.0), nesting, and whole
// first-level elements read into small trees. A stream is one XML document
// whose root, the stream header, stays open; every first-level child is a
// unit read whole and bounded (RFC 6120 §4.1, §4.2).

// Namespace names used by the handler.
const (
	nsStreams   = "http://etherx.jabber.org/streams"
	nsClient    = "jabber:client"
	nsTLS       = "urn:ietf:params:xml:ns:xmpp-tls"
	nsSASL      = "urn:ietf:params:xml:ns:xmpp-sasl"
	nsStreamErr = "urn:ietf:params:xml:ns:xmpp-streams"
	nsXML       = "http://www.w3.org/XML/1998/namespace"
	nsXMLNS     = "http://www.w3.org/2000/xmlns/"
)

// Name is an expanded name: a namespace name and a local name.
type Name struct {
	Space, Local string
}

// Attr is an attribute with its expanded name.
type Attr struct {
	Name  Name
	Value string
}

// Element is a parsed element. Character data directly inside it is
// concatenated in Text (XMPP elements the handler reads carry either text or
// children, never meaningful mixed content).
type Element struct {
	Name     Name
	Attrs    []Attr
	Children []*Element
	Text     string
}

// Attr returns the value of the attribute with no namespace called local.
func (e *Element) Attr(local string) (string, bool) {
	return e.AttrNS("", local)
}

// AttrNS returns the value of an attribute by expanded name.
func (e *Element) AttrNS(space, local string) (string, bool) {
	for _, a := range e.Attrs {
		if a.Name.Space == space && a.Name.Local == local {
			return a.Value, true
		}
	}
	return "", false
}

// Child returns the first child with the given name.
func (e *Element) Child(space, local string) *Element {
	for _, c := range e.Children {
		if c.Name.Space == space && c.Name.Local == local {
			return c
		}
	}
	return nil
}

// maxElements bounds the elements in one first-level unit, so that a stanza
// of tiny elements cannot cost far more memory than its size.
const maxElements = 1024

// errStreamEnd is returned by nextElement when the peer closed its stream
// with the end tag of the stream root.
var errStreamEnd = errors.New("xmpp: stream closed by the peer")

// nsBinding is one namespace declaration.
type nsBinding struct {
	prefix, uri string
}

// frame is one open element: its name as written (to match the end tag) and
// the declarations it made.
type frame struct {
	raw      string
	bindings []nsBinding
}

// reader reads one side's stream.
type reader struct {
	sc       scanner
	m        meter
	stack    []frame
	maxDepth int
	elements int // elements in the current unit
}

func newReader(r *bufio.Reader, l limits) *reader {
	rd := &reader{maxDepth: l.depth}
	rd.m = meter{maxTotal: l.total, maxUnit: l.unit}
	rd.sc = scanner{r: r, m: &rd.m}
	return rd
}

// limits bound one side of a pre-auth dialogue.
type limits struct {
	total int // bytes in the whole phase
	unit  int // bytes in a stream header or one first-level element
	depth int // open elements, the stream root included
}

// lookup resolves a prefix ("" is the default namespace).
func (r *reader) lookup(prefix string) (string, bool) {
	switch prefix {
	case "xml":
		return nsXML, true
	case "xmlns":
		return "", false // reserved: never a valid element or attribute prefix
	}
	for i := len(r.stack) - 1; i >= 0; i-- {
		bs := r.stack[i].bindings
		for j := len(bs) - 1; j >= 0; j-- {
			if bs[j].prefix == prefix {
				return bs[j].uri, true
			}
		}
	}
	if prefix == "" {
		return "", true // no default namespace declared
	}
	return "", false
}

// splitQName splits "prefix:local"; both parts must be non-empty and there
// is at most one colon (Namespaces in XML 1.0 §3).
func splitQName(q string) (prefix, local string, ok bool) {
	i := strings.IndexByte(q, ':')
	if i < 0 {
		return "", q, true
	}
	prefix, local = q[:i], q[i+1:]
	if prefix == "" || local == "" || strings.IndexByte(local, ':') >= 0 {
		return "", "", false
	}
	return prefix, local, true
}

// open pushes a start tag: it records the namespace declarations, resolves
// the names and checks the nesting depth.
func (r *reader) open(t token) (*Element, error) {
	if len(r.stack) >= r.maxDepth {
		return nil, overLimit("elements nested too deeply")
	}
	r.elements++
	if r.elements > maxElements {
		return nil, overLimit("too many elements")
	}
	f := frame{raw: t.name}
	var plain []rawAttr
	for _, a := range t.attrs {
		switch {
		case a.name == "xmlns":
			if a.value == nsXML || a.value == nsXMLNS {
				return nil, notWellFormed("reserved namespace as default")
			}
			f.bindings = append(f.bindings, nsBinding{"", a.value})
		case strings.HasPrefix(a.name, "xmlns:"):
			p := a.name[len("xmlns:"):]
			if p == "" || strings.IndexByte(p, ':') >= 0 || a.value == "" || p == "xmlns" ||
				(p == "xml") != (a.value == nsXML) || a.value == nsXMLNS {
				return nil, notWellFormed("invalid namespace declaration")
			}
			f.bindings = append(f.bindings, nsBinding{p, a.value})
		default:
			plain = append(plain, a)
		}
	}
	r.stack = append(r.stack, f)
	prefix, local, ok := splitQName(t.name)
	if !ok {
		return nil, notWellFormed("malformed qualified name")
	}
	space, ok := r.lookup(prefix)
	if !ok {
		return nil, notWellFormed("undeclared namespace prefix")
	}
	el := &Element{Name: Name{space, local}}
	if len(plain) > 0 {
		el.Attrs = make([]Attr, 0, len(plain))
	}
	for _, a := range plain {
		ap, al, ok := splitQName(a.name)
		if !ok {
			return nil, notWellFormed("malformed qualified name")
		}
		var as string
		if ap != "" { // unprefixed attributes are in no namespace
			if as, ok = r.lookup(ap); !ok {
				return nil, notWellFormed("undeclared namespace prefix")
			}
		}
		n := Name{as, al}
		if _, dup := el.AttrNS(n.Space, n.Local); dup {
			return nil, notWellFormed("duplicate attribute")
		}
		el.Attrs = append(el.Attrs, Attr{n, a.value})
	}
	return el, nil
}

// close pops an end tag, which must match the innermost open element.
func (r *reader) close(t token) error {
	if len(r.stack) == 0 || r.stack[len(r.stack)-1].raw != t.name {
		return notWellFormed("mismatched end tag")
	}
	r.stack = r.stack[:len(r.stack)-1]
	return nil
}

// readHeader starts a new document and reads its root start tag, the stream
// header: an optional XML declaration, whitespace, the start tag. The root
// stays open. With raw non-nil every byte consumed is appended to it.
func (r *reader) readHeader(raw *[]byte) (*Element, error) {
	r.stack = r.stack[:0]
	r.m.resetUnit()
	r.elements = 0
	r.sc.rec = raw
	defer func() { r.sc.rec = nil }()
	if err := r.sc.skipBOM(); err != nil {
		return nil, err
	}
	decl := false
	for {
		// Whitespace before the declaration is tolerated.
		r.sc.declOK = !decl
		r.sc.textErr = errTextBeforeHeader
		t, err := r.sc.next()
		r.sc.textErr = nil
		if err != nil {
			return nil, err
		}
		switch t.kind {
		case tokDecl:
			decl = true
			continue
		case tokText:
			if !t.space { // a CDATA section: textErr covers plain text
				return nil, errTextBeforeHeader
			}
			continue
		case tokEnd:
			return nil, notWellFormed("end tag before the stream header")
		}
		el, err := r.open(t)
		if err != nil {
			return nil, err
		}
		if t.empty {
			return nil, &xmlError{cond: condBadFormat, text: "empty stream"}
		}
		return el, nil
	}
}

// nextElement reads the next first-level element whole. Whitespace between
// elements (keepalives, RFC 6120 §4.6.1) is skipped. It returns errStreamEnd
// when the stream root is closed.
func (r *reader) nextElement() (*Element, error) {
	if len(r.stack) != 1 {
		return nil, notWellFormed("no open stream")
	}
	for {
		r.m.resetUnit()
		r.elements = 0
		r.sc.textErr = errTextAtStreamLevel
		t, err := r.sc.next()
		r.sc.textErr = nil
		if err != nil {
			return nil, err
		}
		switch t.kind {
		case tokText:
			if !t.space { // a CDATA section: textErr covers plain text
				return nil, errTextAtStreamLevel
			}
			continue // whitespace: a keepalive
		case tokEnd:
			if err := r.close(t); err != nil {
				return nil, err
			}
			return nil, errStreamEnd
		case tokDecl:
			return nil, notWellFormed("unexpected XML declaration")
		}
		return r.subtree(t)
	}
}

// subtree reads the element that starts with t, to its end tag.
func (r *reader) subtree(t token) (*Element, error) {
	root, err := r.open(t)
	if err != nil {
		return nil, err
	}
	if t.empty {
		r.stack = r.stack[:len(r.stack)-1]
		return root, nil
	}
	open := []*Element{root}
	text := [][]byte{nil} // character data of each open element
	for len(open) > 0 {
		t, err := r.sc.next()
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		if err != nil {
			return nil, err
		}
		cur := open[len(open)-1]
		switch t.kind {
		case tokText:
			text[len(text)-1] = append(text[len(text)-1], t.text...)
		case tokDecl:
			return nil, notWellFormed("unexpected XML declaration")
		case tokEnd:
			if err := r.close(t); err != nil {
				return nil, err
			}
			cur.Text = string(text[len(text)-1])
			open = open[:len(open)-1]
			text = text[:len(text)-1]
		case tokStart:
			el, err := r.open(t)
			if err != nil {
				return nil, err
			}
			cur.Children = append(cur.Children, el)
			if t.empty {
				r.stack = r.stack[:len(r.stack)-1]
				continue
			}
			open = append(open, el)
			text = append(text, nil)
		}
	}
	return root, nil
}

// rootDefaultNS is the default namespace declared on the stream root.
func (r *reader) rootDefaultNS() string {
	if len(r.stack) == 0 {
		return ""
	}
	for _, b := range r.stack[0].bindings {
		if b.prefix == "" {
			return b.uri
		}
	}
	return ""
}
