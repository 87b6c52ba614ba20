package xmpp

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strings"
	"testing"
)

func newTestScanner(in string, unit, total int) *scanner {
	m := &meter{maxUnit: unit, maxTotal: total}
	return &scanner{r: bufio.NewReaderSize(strings.NewReader(in), 16), m: m}
}

// describe renders a token for comparison.
func describe(t token) string {
	switch t.kind {
	case tokStart:
		var b strings.Builder
		b.WriteString("start " + t.name)
		for _, a := range t.attrs {
			fmt.Fprintf(&b, " %s=%q", a.name, a.value)
		}
		if t.empty {
			b.WriteString(" /")
		}
		return b.String()
	case tokEnd:
		return "end " + t.name
	case tokDecl:
		return "decl"
	}
	return fmt.Sprintf("text %q", t.text)
}

// scanTokens tokenizes in to EOF; the first token may be a declaration.
func scanTokens(in string) ([]string, error) {
	s := newTestScanner(in, 1<<16, 1<<16)
	s.declOK = true
	var out []string
	for {
		t, err := s.next()
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		out = append(out, describe(t))
	}
}

func TestScannerTokens(t *testing.T) {
	tests := []struct {
		in   string
		want []string
	}{
		{"<?xml version='1.0' encoding=\"utf-8\"?><a>", []string{"decl", "start a"}},
		{"<a b='1' c=\"2\" d = 'x'/>", []string{`start a b="1" c="2" d="x" /`}},
		{"<s:stream xmlns:s='urn:s'></s:stream >", []string{`start s:stream xmlns:s="urn:s"`, "end s:stream"}},
		{"x &amp; &lt;y&gt; &apos;&quot;", []string{`text "x & <y> '\""`}},
		{"&#65;&#x42;&#x1F600;", []string{`text "AB😀"`}},
		{"a\r\nb\rc\nd", []string{`text "a\nb\nc\nd"`}},
		{"<![CDATA[<x>&amp;]]]>", []string{`text "<x>&amp;]"`}},
		{"<a v='a\tb\nc&#10;d &lt;'>", []string{`start a v="a b c\nd <"`}},
		{"<ñame attr-1.x='é'/>", []string{`start ñame attr-1.x="é" /`}},
		{" \t\n", []string{`text " \t\n"`}},
		{"<a>text</a>", []string{"start a", `text "text"`, "end a"}},
	}
	for _, tt := range tests {
		got, err := scanTokens(tt.in)
		if err != nil || !reflect.DeepEqual(got, tt.want) {
			t.Errorf("scan(%q) = %q, %v, want %q", tt.in, got, err, tt.want)
		}
	}
}

func TestScannerErrors(t *testing.T) {
	tests := []struct {
		in         string
		cond, text string
	}{
		{"<!DOCTYPE x [<!ENTITY a 'b'>]>", condRestrictedXML, "DTD"},
		{"<!ENTITY a 'b'>", condRestrictedXML, "DTD"},
		{"<!-- c -->", condRestrictedXML, "comment"},
		{"<?php x ?>", condRestrictedXML, "processing instruction"},
		{"<?xml-stylesheet href='x'?>", condRestrictedXML, "processing instruction"},
		{"<a>&foo;</a>", condRestrictedXML, "entity reference"},
		{"<a v='&lol9;'/>", condRestrictedXML, "entity reference"},
		{"&#0;", condNotWellFormed, "character reference to a non-character"},
		{"&#xD800;", condNotWellFormed, "character reference to a non-character"},
		{"&#xFFFE;", condNotWellFormed, "character reference to a non-character"},
		{"&#1114112;", condNotWellFormed, "character reference out of range"},
		{"&#x;", condNotWellFormed, "malformed character reference"},
		{"&#12a;", condNotWellFormed, "malformed character reference"},
		{"&;", condNotWellFormed, "malformed reference"},
		{"&verylongentityname;", condNotWellFormed, "malformed reference"},
		{"<a b>", condNotWellFormed, "unexpected character in tag"},
		{"<a b='1' b='2'>", condNotWellFormed, "duplicate attribute"},
		{"<a b='<'>", condNotWellFormed, "'<' in attribute value"},
		{"<a b=1>", condNotWellFormed, "attribute value must be quoted"},
		{"<a b='1'c='2'>", condNotWellFormed, "whitespace expected before attribute"},
		{"<1a>", condNotWellFormed, "name expected"},
		{"< a>", condNotWellFormed, "name expected"},
		{"<a\x00>", condNotWellFormed, "whitespace expected before attribute"},
		{"<a/ >", condNotWellFormed, "unexpected character in tag"},
		{"</a b>", condNotWellFormed, "unexpected character in tag"},
		{"x\x01y", condNotWellFormed, "invalid character"},
		{"x\xffy", condNotWellFormed, "invalid UTF-8"},
		{"x\xc3(", condNotWellFormed, "invalid UTF-8"},
		{"\xef\xbf\xbe", condNotWellFormed, "invalid UTF-8"}, // U+FFFE
		{"<a\u00d7b>", condNotWellFormed, "invalid name character"},
		{"<![CDATX[x]]>", condNotWellFormed, "malformed CDATA section"},
		{"<!x>", condNotWellFormed, "markup declaration"},
		{"<" + strings.Repeat("a", 300) + ">", condPolicyViolation, "name too long"},
		{"<a" + manyAttrs(65) + ">", condPolicyViolation, "too many attributes"},
		{"<?xml version='2.0'?>", condNotWellFormed, "unsupported XML version"},
		{"<?xml encoding='UTF-8'?>", condNotWellFormed, "unsupported XML version"},
		{"<?xml version='1.0' encoding='latin1'?>", condUnsupportedEncoding, "only UTF-8 is supported"},
		{"<?xml version='1.0'" + strings.Repeat(" ", 300) + "?>", condNotWellFormed, "XML declaration too long"},
		{"<a><?xml version='1.0'?>", condNotWellFormed, "XML declaration not at the start of the stream"},
	}
	for _, tt := range tests {
		_, err := scanTokens(tt.in)
		var xe *xmlError
		if !errors.As(err, &xe) || xe.cond != tt.cond || xe.text != tt.text {
			t.Errorf("scan(%q) error = %v, want %s: %s", tt.in, err, tt.cond, tt.text)
		}
	}
}

func manyAttrs(n int) string {
	var b strings.Builder
	for i := range n {
		fmt.Fprintf(&b, " a%d=''", i)
	}
	return b.String()
}

// TestScannerEOF: EOF between tokens is clean, inside one it is unexpected.
func TestScannerEOF(t *testing.T) {
	for _, in := range []string{"<a", "<a b='1", "</a", "&amp", "<![CDATA[x", "<?xml version='1.0'", "<a b", "<a\xc3"} {
		if _, err := scanTokens(in); err != io.ErrUnexpectedEOF {
			t.Errorf("scan(%q) error = %v, want io.ErrUnexpectedEOF", in, err)
		}
	}
	if got, err := scanTokens("<a>x"); err != nil || len(got) != 2 {
		t.Errorf("scan(<a>x) = %q, %v", got, err)
	}
}

// TestScannerBudgets: the unit and total budgets stop the input at the byte.
func TestScannerBudgets(t *testing.T) {
	s := newTestScanner("<aaaaaaaaaaaaaaaaaaaa>", 10, 100)
	if _, err := s.next(); err != errUnitSize {
		t.Errorf("unit budget: %v", err)
	}
	if s.m.unit != 11 {
		t.Errorf("consumed %d bytes, want 11", s.m.unit)
	}
	s = newTestScanner(strings.Repeat("<a/>", 10), 100, 20)
	var err error
	for i := 0; err == nil && i < 20; i++ {
		s.m.resetUnit()
		_, err = s.next()
	}
	if err != errBudget || s.m.total != 21 {
		t.Errorf("total budget: %v after %d bytes", err, s.m.total)
	}
}

// TestScannerDoesNotReadAhead: after a token the rest is still in the
// reader, byte for byte.
func TestScannerDoesNotReadAhead(t *testing.T) {
	for _, tt := range []struct{ in, rest string }{
		{"<a/>PIPELINED", "PIPELINED"},
		{"</a>PIPELINED", "PIPELINED"},
		{"<a b='c'>PIPELINED", "PIPELINED"},
		{"text<x>", "<x>"},
	} {
		s := newTestScanner(tt.in, 1<<10, 1<<10)
		if _, err := s.next(); err != nil {
			t.Fatal(err)
		}
		rest, _ := io.ReadAll(s.r)
		if string(rest) != tt.rest {
			t.Errorf("after the first token of %q: %q left, want %q", tt.in, rest, tt.rest)
		}
	}
}

func testReader(in string, depth int) *reader {
	return newReader(bufio.NewReaderSize(strings.NewReader(in), 16), limits{total: 1 << 16, unit: 1 << 12, depth: depth})
}

const streamOpen = "<s:stream xmlns:s='http://etherx.jabber.org/streams' xmlns='jabber:client'>"

func TestReaderNamespaces(t *testing.T) {
	r := testReader(streamOpen+"<x:y xmlns:x='urn:x' x:a='1' b='2' xml:lang='en'><z/><w xmlns=''/></x:y></s:stream>", 8)
	root, err := r.readHeader(nil)
	if err != nil || root.Name != (Name{nsStreams, "stream"}) || r.rootDefaultNS() != nsClient {
		t.Fatalf("header = %+v, %v", root, err)
	}
	el, err := r.nextElement()
	if err != nil {
		t.Fatal(err)
	}
	want := &Element{Name: Name{"urn:x", "y"}, Attrs: []Attr{{Name{"urn:x", "a"}, "1"}, {Name{"", "b"}, "2"}, {Name{nsXML, "lang"}, "en"}},
		Children: []*Element{{Name: Name{nsClient, "z"}}, {Name: Name{"", "w"}}}}
	if !reflect.DeepEqual(el, want) {
		t.Errorf("element = %+v, want %+v", el, want)
	}
	if _, err := r.nextElement(); err != errStreamEnd {
		t.Errorf("after the stream end: %v, want errStreamEnd", err)
	}
}

func TestReaderErrors(t *testing.T) {
	tests := []struct {
		in         string
		cond, text string
	}{
		{"<p:a/>", condNotWellFormed, "undeclared namespace prefix"},
		{"<a p:b='1'/>", condNotWellFormed, "undeclared namespace prefix"},
		{"<a xmlns:xml='urn:other'/>", condNotWellFormed, "invalid namespace declaration"},
		{"<a xmlns:p=''/>", condNotWellFormed, "invalid namespace declaration"},
		{"<a xmlns:xmlns='urn:x'/>", condNotWellFormed, "invalid namespace declaration"},
		{"<a xmlns='http://www.w3.org/XML/1998/namespace'/>", condNotWellFormed, "reserved namespace as default"},
		{"<xmlns:a xmlns:xmlns='u'/>", condNotWellFormed, "invalid namespace declaration"},
		{"<a xmlns:p='u' xmlns:q='u' p:x='1' q:x='2'/>", condNotWellFormed, "duplicate attribute"},
		{"<a:b:c xmlns:a='u'/>", condNotWellFormed, "malformed qualified name"},
		{"<:a/>", condNotWellFormed, "malformed qualified name"},
		{"<a></b>", condNotWellFormed, "mismatched end tag"},
		{"<a><b><c><d/></c></b></a>", condPolicyViolation, "elements nested too deeply"},
		{"<a>" + strings.Repeat("<b/>", maxElements) + "</a>", condPolicyViolation, "too many elements"},
		{"x", condBadFormat, "text at the stream level"},
		{"<![CDATA[x]]>", condBadFormat, "text at the stream level"},
		{"<a><?xml version='1.0'?></a>", condNotWellFormed, "XML declaration not at the start of the stream"},
	}
	for _, tt := range tests {
		r := testReader(streamOpen+tt.in, 4)
		if _, err := r.readHeader(nil); err != nil {
			t.Fatal(err)
		}
		r.m.maxUnit = 1 << 16
		_, err := r.nextElement()
		var xe *xmlError
		if !errors.As(err, &xe) || xe.cond != tt.cond || xe.text != tt.text {
			t.Errorf("nextElement(%q) error = %v, want %s: %s", tt.in, err, tt.cond, tt.text)
		}
	}
}

// TestReaderHeaderRaw: the raw header (here with a byte order mark) is
// recorded byte for byte, and reading stops right after it.
func TestReaderHeaderRaw(t *testing.T) {
	hdr := "\xef\xbb\xbf<?xml version='1.0'?>\n " + streamOpen
	r := testReader(hdr+"<iq/>", 8)
	var raw []byte
	if _, err := r.readHeader(&raw); err != nil {
		t.Fatal(err)
	}
	if string(raw) != hdr {
		t.Errorf("raw header = %q, want %q", raw, hdr)
	}
	rest, _ := io.ReadAll(r.sc.r)
	if string(rest) != "<iq/>" {
		t.Errorf("left after the header: %q", rest)
	}
}

// TestAppendElement: serialization escapes, declares namespaces where they
// change and re-parses to the same tree.
func TestAppendElement(t *testing.T) {
	el := &Element{Name: Name{"urn:x", "y"}, Attrs: []Attr{{Name{"", "a"}, "'\"<&>\t\n\r"}, {Name{nsXML, "lang"}, "en"}, {Name{"urn:other", "b"}, "1"}},
		Text: "<&>\r\n]]>", Children: []*Element{{Name: Name{"urn:x", "c"}}, {Name: Name{"", "d"}, Text: "x"}}}
	out := string(appendElement(nil, el, nsClient))
	want := `<y xmlns='urn:x' a='&apos;&quot;&lt;&amp;&gt;&#9;&#10;&#13;' xml:lang='en' xmlns:ns0='urn:other' ns0:b='1'>&lt;&amp;&gt;&#13;` + "\n" + `]]&gt;<c/><d xmlns=''>x</d></y>`
	if out != want {
		t.Errorf("appendElement = %q, want %q", out, want)
	}
	r := testReader(streamOpen+out, 8)
	r.readHeader(nil)
	back, err := r.nextElement()
	if err != nil || !reflect.DeepEqual(back, el) {
		t.Errorf("re-parsed %+v, %v, want %+v", back, err, el)
	}
}

// TestReaderMixedContent: text around children is kept, in order, in Text.
func TestReaderMixedContent(t *testing.T) {
	r := testReader(streamOpen+"<a>x<b/>y<c>z<d>q</d></c>w</a>", 8)
	r.readHeader(nil)
	el, err := r.nextElement()
	if err != nil {
		t.Fatal(err)
	}
	if el.Text != "xyw" || len(el.Children) != 2 || el.Children[1].Text != "z" || el.Children[1].Children[0].Text != "q" {
		t.Errorf("element = %+v", el)
	}
}
