package xmpp

import (
	"crypto/rand"
	"encoding/hex"
	"strconv"
	"strings"
)

// Everything mailgate sends before login is written here, from parsed
// values: nothing the client or the backend wrote is copied through as raw
// bytes except the two stream headers of the restart after SASL success,
// which each side must see as the other wrote it (their namespace
// declarations scope the rest of the stream).

// escape appends s escaped for character data (attr false) or for a
// single-quoted attribute value (attr true). Whitespace controls are written
// as character references in attributes so they survive normalization.
func escape(b []byte, s string, attr bool) []byte {
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '&':
			b = append(b, "&amp;"...)
		case c == '<':
			b = append(b, "&lt;"...)
		case c == '>':
			b = append(b, "&gt;"...)
		case c == '\'' && attr:
			b = append(b, "&apos;"...)
		case c == '"' && attr:
			b = append(b, "&quot;"...)
		case c == '\r':
			b = append(b, "&#13;"...)
		case (c == '\n' || c == '\t') && attr:
			b = append(b, "&#"...)
			b = strconv.AppendInt(b, int64(c), 10)
			b = append(b, ';')
		default:
			b = append(b, c)
		}
	}
	return b
}

// appendElement serializes el. parentNS is the default namespace in scope
// where el is written; el declares its own namespace when it differs.
// Attributes in a namespace other than xml: get a generated prefix declared
// on the element itself.
func appendElement(b []byte, el *Element, parentNS string) []byte {
	b = append(b, '<')
	b = append(b, el.Name.Local...)
	if el.Name.Space != parentNS {
		b = append(b, " xmlns='"...)
		b = escape(b, el.Name.Space, true)
		b = append(b, '\'')
	}
	n := 0
	for _, a := range el.Attrs {
		b = append(b, ' ')
		switch a.Name.Space {
		case "":
		case nsXML:
			b = append(b, "xml:"...)
		default:
			p := "ns" + strconv.Itoa(n)
			n++
			b = append(b, "xmlns:"...)
			b = append(b, p...)
			b = append(b, "='"...)
			b = escape(b, a.Name.Space, true)
			b = append(b, "' "...)
			b = append(b, p...)
			b = append(b, ':')
		}
		b = append(b, a.Name.Local...)
		b = append(b, "='"...)
		b = escape(b, a.Value, true)
		b = append(b, '\'')
	}
	if len(el.Children) == 0 && el.Text == "" {
		return append(b, "/>"...)
	}
	b = append(b, '>')
	b = escape(b, el.Text, false)
	for _, c := range el.Children {
		b = appendElement(b, c, el.Name.Space)
	}
	b = append(b, "</"...)
	b = append(b, el.Name.Local...)
	return append(b, '>')
}

// streamHeader is how both stream headers start.
const streamHeader = "<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'"

// headerToBackend opens the stream to the backend for the client's domain.
func headerToBackend(domain, lang string) string {
	var b strings.Builder
	b.WriteString(streamHeader)
	writeAttr(&b, "to", domain)
	b.WriteString(" version='1.0'")
	if lang != "" {
		writeAttr(&b, "xml:lang", lang)
	}
	b.WriteString(">")
	return b.String()
}

// headerToClient opens the stream to the client (RFC 6120 §4.7). from may be
// empty when the domain is unknown (a refusal before the client spoke).
func headerToClient(from, id, lang string) string {
	var b strings.Builder
	b.WriteString(streamHeader)
	writeAttr(&b, "id", id)
	if from != "" {
		writeAttr(&b, "from", from)
	}
	b.WriteString(" version='1.0'")
	if lang == "" {
		lang = "en"
	}
	writeAttr(&b, "xml:lang", lang)
	b.WriteString(">")
	return b.String()
}

// writeAttr writes " name='value'", value escaped.
func writeAttr(b *strings.Builder, name, value string) {
	b.WriteString(" " + name + "='")
	b.Write(escape(nil, value, true))
	b.WriteString("'")
}

// streamError builds <stream:error> with a defined condition and optional
// text (RFC 6120 §4.9.2). The stream prefix is declared on the element, so
// it is well-formed whatever prefix the stream it ends was opened with
// (Goodbye writes into a stream the backend opened).
func streamError(cond, text string) string {
	var b strings.Builder
	b.WriteString("<stream:error xmlns:stream='http://etherx.jabber.org/streams'><")
	b.WriteString(cond)
	b.WriteString(" xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>")
	if text != "" {
		b.WriteString("<text xmlns='urn:ietf:params:xml:ns:xmpp-streams' xml:lang='en'>")
		b.Write(escape(nil, text, false))
		b.WriteString("</text>")
	}
	b.WriteString("</stream:error>")
	return b.String()
}

const streamClose = "</stream:stream>"

// saslElement builds a SASL element (auth, challenge, response, success)
// carrying base64 data. data "" writes an empty element; callers pass "="
// for zero-length data where the profile wants it (RFC 6120 §6.4.2, §6.4.6).
func saslElement(name, mech, data string) string {
	var b strings.Builder
	b.WriteString("<")
	b.WriteString(name)
	b.WriteString(" xmlns='urn:ietf:params:xml:ns:xmpp-sasl'")
	if mech != "" {
		writeAttr(&b, "mechanism", mech)
	}
	if data == "" {
		b.WriteString("/>")
		return b.String()
	}
	b.WriteString(">")
	b.WriteString(data) // base64: nothing to escape
	b.WriteString("</")
	b.WriteString(name)
	b.WriteString(">")
	return b.String()
}

// saslFailure builds <failure> with a condition of RFC 6120 §6.5 and
// optional text.
func saslFailure(cond, lang, text string) string {
	var b strings.Builder
	b.WriteString("<failure xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><")
	b.WriteString(cond)
	b.WriteString("/>")
	if text != "" {
		if lang == "" {
			lang = "en"
		}
		b.WriteString("<text xml:lang='")
		b.Write(escape(nil, lang, true))
		b.WriteString("'>")
		b.Write(escape(nil, text, false))
		b.WriteString("</text>")
	}
	b.WriteString("</failure>")
	return b.String()
}

// newStreamID returns a random stream id for streams mailgate opens itself.
func newStreamID() string {
	var b [8]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
