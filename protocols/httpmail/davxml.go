package httpmail

import (
	"bytes"
	"encoding/xml"
	"errors"
	"io"
	"strconv"
	"strings"
)

// The DAV:href rewriter. It tokenizes an XML body with encoding/xml, which
// resolves namespace prefixes (D:href, d:href, a default xmlns="DAV:" and
// any other prefix bound to DAV: are all the same element), but it never
// re-serializes the document: the bytes go out as they came, except the
// text of the hrefs it maps. It streams: what it holds back is the
// decoder's look-ahead and the text of the href being read. When the body
// stops being well-formed XML (or declares a charset other than UTF-8),
// the rest passes unchanged.

var (
	davHref  = xml.Name{Space: "DAV:", Local: "href"}
	davOwner = xml.Name{Space: "DAV:", Local: "owner"}
)

// maxHrefText bounds the text of one href; a longer one passes unchanged.
const maxHrefText = 16 << 10

// hrefRewriter is an io.ReadCloser over a body whose DAV:href texts (those
// outside DAV:owner, which holds the client's own words) are replaced by
// what mapFn returns when its ok is true.
type hrefRewriter struct {
	src        io.ReadCloser
	rec        *recorder
	dec        *xml.Decoder
	mapFn      func(string) (string, bool)
	onSkip     func(reason string)
	out        bytes.Buffer
	depth      int
	ownerDepth int // depth of the DAV:owner being read, or 0
	hrefDepth  int
	inHref     bool
	hrefBad    bool // the href holds more than text, or too much of it
	text       []byte
	raw        bool // parsing stopped: the rest is copied
	done       bool
	err        error // returned once out is drained
}

// recorder keeps the bytes the decoder read and that were not yet written
// out (or skipped).
type recorder struct {
	r    io.Reader
	buf  []byte
	head int   // buf[:head] is written out or skipped
	base int64 // stream offset of buf[0]
	err  error
}

func (c *recorder) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.buf = append(c.buf, p[:n]...)
	if err != nil {
		c.err = err
	}
	return n, err
}

func newHrefRewriter(src io.ReadCloser, mapFn func(string) (string, bool), onSkip func(string)) *hrefRewriter {
	rec := &recorder{r: src}
	return &hrefRewriter{src: src, rec: rec, dec: xml.NewDecoder(rec), mapFn: mapFn, onSkip: onSkip}
}

func (h *hrefRewriter) Close() error { return h.src.Close() }

func (h *hrefRewriter) Read(p []byte) (int, error) {
	// Gather up to a good write's worth before returning: the proxy
	// flushes every read of a body of unknown length.
	want := min(len(p), 16<<10)
	for h.out.Len() < want && !h.done && !h.raw {
		h.step()
	}
	for h.out.Len() == 0 {
		switch {
		case h.done:
			return 0, h.err
		case h.raw:
			if h.rec.head < len(h.rec.buf) {
				h.emitAll()
				continue
			}
			if h.rec.err != nil {
				h.done, h.err = true, h.rec.err
				continue
			}
			return h.src.Read(p)
		default:
			h.step()
		}
	}
	return h.out.Read(p)
}

// emit writes out the recorded bytes up to stream offset off.
func (h *hrefRewriter) emit(off int64) {
	k := int(off - h.rec.base)
	h.out.Write(h.rec.buf[h.rec.head:k])
	h.rec.head = k
	h.compact()
}

// skip drops the recorded bytes up to stream offset off.
func (h *hrefRewriter) skip(off int64) {
	h.rec.head = int(off - h.rec.base)
	h.compact()
}

func (h *hrefRewriter) emitAll() {
	h.out.Write(h.rec.buf[h.rec.head:])
	h.rec.head = len(h.rec.buf)
	h.compact()
}

func (h *hrefRewriter) compact() {
	r := h.rec
	if r.head >= 32<<10 && r.head*2 >= len(r.buf) {
		n := copy(r.buf, r.buf[r.head:])
		r.buf = r.buf[:n]
		r.base += int64(r.head)
		r.head = 0
	}
}

// step reads one token and writes out what it can.
func (h *hrefRewriter) step() {
	before := h.dec.InputOffset()
	tok, err := h.dec.Token()
	if err != nil {
		h.emitAll()
		switch {
		case h.rec.err != nil && h.rec.err != io.EOF:
			h.done, h.err = true, h.rec.err // the body itself failed
		case err == io.EOF:
			h.done, h.err = true, io.EOF
		default:
			if h.onSkip != nil {
				h.onSkip("not parsed as XML from offset " + strconv.FormatInt(before, 10) + ": " + err.Error())
			}
			h.raw = true
		}
		return
	}
	off := h.dec.InputOffset()
	switch t := tok.(type) {
	case xml.StartElement:
		h.depth++
		if h.inHref {
			h.hrefBad = true
			break
		}
		if h.ownerDepth == 0 && t.Name == davOwner {
			h.ownerDepth = h.depth
		}
		if h.ownerDepth == 0 && t.Name == davHref {
			h.emit(off) // through the start tag
			h.inHref, h.hrefBad, h.hrefDepth, h.text = true, false, h.depth, h.text[:0]
			return
		}
	case xml.EndElement:
		if h.inHref && h.depth == h.hrefDepth {
			h.inHref = false
			if !h.hrefBad {
				if v, ok := h.mapped(); ok {
					h.out.WriteString(v)
					h.skip(before) // the old text; the end tag follows
				}
			}
		}
		if h.ownerDepth == h.depth {
			h.ownerDepth = 0
		}
		h.depth--
	case xml.CharData:
		if h.inHref {
			if len(h.text)+len(t) > maxHrefText {
				h.hrefBad = true
			} else {
				h.text = append(h.text, t...)
			}
		}
	default: // comments, processing instructions, directives
		if h.inHref {
			h.hrefBad = true
		}
	}
	if !h.inHref {
		h.emit(off)
	}
}

// mapped returns the href's new text, escaped, keeping the whitespace
// around the URL.
func (h *hrefRewriter) mapped() (string, bool) {
	s := string(h.text)
	v := strings.TrimSpace(s)
	if v == "" {
		return "", false
	}
	m, ok := h.mapFn(v)
	if !ok || m == v {
		return "", false
	}
	i := strings.Index(s, v)
	return s[:i] + xmlEscaper.Replace(m) + s[i+len(v):], true
}

var xmlEscaper = strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;")

// rewriteHrefs maps the hrefs of a whole body in memory; a body that does
// not parse comes back unchanged, with the reason.
func rewriteHrefs(body []byte, mapFn func(string) (string, bool)) ([]byte, error) {
	var skipped error
	h := newHrefRewriter(io.NopCloser(bytes.NewReader(body)), mapFn, func(reason string) { skipped = errors.New(reason) })
	out, err := io.ReadAll(h)
	if err == nil {
		err = skipped
	}
	if err != nil {
		return body, err
	}
	return out, nil
}
