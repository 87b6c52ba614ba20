package xmpp

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"reflect"
	"testing"
)

var readerSeeds = []string{
	"<?xml version='1.0'?><stream:stream to='example.com' version='1.0' xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>" +
		"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>AGFsaWNlAHNlY3JldA==</auth></stream:stream>",
	"<stream:stream xmlns:stream='http://etherx.jabber.org/streams' xmlns='jabber:client'><stream:features><mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>" +
		"<mechanism>PLAIN</mechanism></mechanisms><c xmlns='http://jabber.org/protocol/caps' ver='a&amp;b'/></stream:features>",
	"<s:stream xmlns:s='http://etherx.jabber.org/streams' xmlns='jabber:client'> <a xmlns:p='u' p:x='&#x41;' xml:lang='en'><![CDATA[<x>]]>t&lt;</a>\n",
	"<!DOCTYPE x [<!ENTITY a 'b'>]><stream:stream>",
	"<stream:stream xmlns:stream='http://etherx.jabber.org/streams'><a><b><c><d><e><f><g><h><i/></h></g></f></e></d></c></b></a>",
	"<stream:stream xmlns:stream='http://etherx.jabber.org/streams'><a>&lol;</a><!-- x --><?pi?>",
	"<stream:stream xmlns:stream='http://etherx.jabber.org/streams'><a xmlns=''><b xmlns='urn:b' a='\t\n'/></a>",
	"\xef\xbb\xbf<stream:stream/>",
}

// FuzzReader feeds arbitrary input to the stream reader with small limits.
// It must not panic or loop; it must stop within the byte budget; errors are
// classified; and every element read must serialize to XML that re-parses to
// the same tree (no escaping or namespace mistake can change what the other
// side reads).
func FuzzReader(f *testing.F) {
	for _, s := range readerSeeds {
		f.Add([]byte(s))
	}
	l := limits{total: 2048, unit: 512, depth: 8}
	f.Fuzz(func(t *testing.T, in []byte) {
		r := newReader(bufio.NewReaderSize(bytes.NewReader(in), 16), l)
		check := func(err error) {
			var xe *xmlError
			if err != nil && !errors.As(err, &xe) && err != io.EOF && err != io.ErrUnexpectedEOF && err != errStreamEnd {
				t.Fatalf("unclassified error %v", err)
			}
			if r.m.total > l.total+1 || r.m.unit > l.unit+1 {
				t.Fatalf("read %d bytes (%d in the unit) past the budgets", r.m.total, r.m.unit)
			}
		}
		var raw []byte
		hdr, err := r.readHeader(&raw)
		check(err)
		if err != nil {
			return
		}
		if !bytes.HasPrefix(in, raw) {
			t.Fatalf("raw header %q is not the input's prefix", raw)
		}
		for i := 0; ; i++ {
			if i > len(in) {
				t.Fatal("reader made no progress")
			}
			el, err := r.nextElement()
			check(err)
			if err != nil {
				break
			}
			roundTrip(t, el)
			out, mechs := rewriteFeatures(el, featurePolicy{offerStartTLS: i%2 == 0, requireTLS: i%3 == 0}, nil)
			for _, m := range mechs {
				if !attributable(m) {
					t.Fatalf("offered %q", m)
				}
			}
			reparse(t, out)
		}
		_ = hdr
	})
}

// roundTrip serializes el and parses it back.
func roundTrip(t *testing.T, el *Element) {
	t.Helper()
	out := appendElement(nil, el, nsClient)
	back := reparse(t, string(out))
	if !reflect.DeepEqual(back, el) {
		t.Fatalf("round trip changed the element:\n%+v\n%s\n%+v", el, out, back)
	}
}

// reparse parses s as a first-level element of a jabber:client stream.
func reparse(t *testing.T, s string) *Element {
	t.Helper()
	doc := "<stream:stream xmlns:stream='http://etherx.jabber.org/streams' xmlns='jabber:client'>" + s
	r := newReader(bufio.NewReader(bytes.NewReader([]byte(doc))), limits{total: 1 << 24, unit: 1 << 24, depth: 64})
	if _, err := r.readHeader(nil); err != nil {
		t.Fatalf("re-parsing the header: %v", err)
	}
	el, err := r.nextElement()
	if err != nil {
		t.Fatalf("re-parsing %q: %v", s, err)
	}
	return el
}
