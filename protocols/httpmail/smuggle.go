package httpmail

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
)

// Request smuggling (docs/protocols.md §7.6; RFC 9112 §6.1, §6.3). Go's server
// already refuses differing duplicate Content-Length values, malformed
// Content-Length, and any Transfer-Encoding other than a single "chunked"
// (501), but it accepts Content-Length together with Transfer-Encoding
// (dropping Content-Length), repeated identical Content-Length headers,
// Transfer-Encoding on HTTP/1.0 (ignored), whitespace before the colon of a
// header name, and bare LF line ends. Once it has parsed a request the
// handler can no longer tell, so HTTP/1.x client connections pass through
// h1Guard, which reads every request head and body framing before net/http
// does and refuses anything ambiguous: the connection gets 400 and is closed
// (net/http writes the 400 when a read fails with a non-network error).
// HTTP/2 and HTTP/3 frame bodies themselves and both servers reject
// connection-specific headers; the handler re-checks Transfer-Encoding.

// FramingError is a request the guard refused.
type FramingError struct{ Reason string }

func (e *FramingError) Error() string { return "refused request framing: " + e.Reason }

const (
	stHead = iota
	stBody
	stChunkSize
	stChunkData
	stChunkEnd
	stTrailers
)

// maxChunkLine bounds a chunk-size line with its extensions.
const maxChunkLine = 4096

// h1Guard checks the HTTP/1.x framing of everything a client sends and hands
// net/http only bytes it has validated. After a websocket upgrade or CONNECT
// request it passes bytes through unchecked (the handler refuses CONNECT and
// closes the connection after any upgrade request that was not upgraded).
//
// Reads may be interrupted by deadlines (net/http aborts its background read
// that way), so the guard keeps partial lines and heads between calls and
// only a FramingError is final.
type h1Guard struct {
	net.Conn
	br        *bufio.Reader
	maxHead   int
	onRefuse  func(reason string)
	out       []byte
	err       error // a FramingError: final
	state     int
	remaining int64
	pass      bool
	partial   []byte // the line being read
	head      []byte // the head being read, complete lines
}

func newH1Guard(c net.Conn, maxHead int, onRefuse func(string)) *h1Guard {
	return &h1Guard{Conn: c, br: bufio.NewReaderSize(c, 4096), maxHead: maxHead, onRefuse: onRefuse}
}

// Read returns validated bytes, or the FramingError that stopped the stream.
func (g *h1Guard) Read(p []byte) (int, error) {
	for len(g.out) == 0 {
		if g.err != nil {
			return 0, g.err
		}
		if g.pass {
			return g.br.Read(p)
		}
		if err := g.step(); err != nil {
			return 0, err
		}
	}
	n := copy(p, g.out)
	g.out = g.out[n:]
	return n, nil
}

// CloseWrite half-closes when the underlying connection can (net/http uses
// it so that the client reads the 400 before the close).
func (g *h1Guard) CloseWrite() error {
	if cw, ok := g.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

func (g *h1Guard) refuse(reason string) error {
	g.err = &FramingError{Reason: reason}
	if g.onRefuse != nil {
		g.onRefuse(reason)
	}
	return g.err
}

// step produces the next validated bytes in g.out, or returns an error
// (transient ones, such as a deadline, leave the state intact).
func (g *h1Guard) step() error {
	switch g.state {
	case stHead:
		return g.readHead()
	case stBody, stChunkData:
		n := int64(32 << 10)
		if g.remaining < n {
			n = g.remaining
		}
		buf := make([]byte, n)
		m, err := g.br.Read(buf)
		g.out = buf[:m]
		g.remaining -= int64(m)
		if g.remaining == 0 {
			if g.state == stBody {
				g.state = stHead
			} else {
				g.state = stChunkEnd
			}
		}
		if m == 0 {
			return err
		}
	case stChunkSize:
		line, err := g.line(maxChunkLine)
		if err != nil {
			return err
		}
		size, ok := chunkSize(line)
		if !ok {
			return g.refuse("malformed chunk size line")
		}
		g.out = line
		g.remaining = size
		g.state = stChunkData
		if size == 0 {
			g.state = stTrailers
		}
	case stChunkEnd:
		line, err := g.line(maxChunkLine)
		if err != nil {
			return err
		}
		if len(line) != 2 {
			return g.refuse("chunk data not followed by CRLF")
		}
		g.out = line
		g.state = stChunkSize
	case stTrailers:
		line, err := g.line(g.maxHead)
		if err != nil {
			return err
		}
		if len(line) > 2 {
			if _, _, bad := headerField(line); bad != "" {
				return g.refuse("trailer: " + bad)
			}
		} else {
			g.state = stHead
		}
		g.out = line
	}
	return nil
}

// line reads one CRLF-terminated line (returned with the CRLF) of at most
// max bytes. A bare LF or CR and an over-long line are refused.
func (g *h1Guard) line(max int) ([]byte, error) {
	for {
		chunk, err := g.br.ReadSlice('\n')
		if len(g.partial)+len(chunk) > max {
			return nil, g.refuse("line too long")
		}
		g.partial = append(g.partial, chunk...)
		if err == bufio.ErrBufferFull {
			continue
		}
		if err != nil {
			if err == io.EOF && len(g.partial) > 0 {
				err = io.ErrUnexpectedEOF
			}
			return nil, err
		}
		break
	}
	line := g.partial
	g.partial = nil
	n := len(line)
	if n < 2 || line[n-2] != '\r' {
		return nil, g.refuse("bare LF line end")
	}
	if bytes.IndexByte(line[:n-2], '\r') >= 0 {
		return nil, g.refuse("bare CR in a line")
	}
	return line, nil
}

// readHead reads a whole request head, checks it and decides the framing
// of its body.
func (g *h1Guard) readHead() error {
	for {
		l, err := g.line(g.maxHead - len(g.head))
		if err != nil {
			return err
		}
		if len(l) == 2 && len(g.head) == 0 { // an empty line before a request line (RFC 9112 §2.2)
			g.out = l
			return nil
		}
		g.head = append(g.head, l...)
		if len(l) == 2 {
			break
		}
	}
	head := g.head
	g.head = nil
	lines := strings.Split(string(head[:len(head)-4]), "\r\n")
	method, target, _ := strings.Cut(lines[0], " ")
	_, version, _ := strings.Cut(target, " ")
	var cl, te []string
	var upgrade string
	for _, l := range lines[1:] {
		name, value, bad := headerField([]byte(l + "\r\n"))
		if bad != "" {
			return g.refuse(bad)
		}
		switch {
		case strings.EqualFold(name, "Content-Length"):
			cl = append(cl, value)
		case strings.EqualFold(name, "Transfer-Encoding"):
			te = append(te, value)
		case strings.EqualFold(name, "Upgrade"):
			upgrade += "," + value
		}
	}
	switch {
	case len(cl) > 0 && len(te) > 0:
		return g.refuse("both Content-Length and Transfer-Encoding")
	case len(cl) > 1:
		return g.refuse("more than one Content-Length")
	case len(te) > 1:
		return g.refuse("more than one Transfer-Encoding")
	}
	state, remaining := stHead, int64(0)
	if len(te) == 1 {
		if version == "HTTP/1.0" {
			return g.refuse("Transfer-Encoding in an HTTP/1.0 request")
		}
		if !strings.EqualFold(strings.TrimSpace(te[0]), "chunked") {
			return g.refuse("Transfer-Encoding other than chunked")
		}
		state = stChunkSize
	}
	if len(cl) == 1 {
		n, ok := contentLength(cl[0])
		if !ok {
			return g.refuse("invalid Content-Length")
		}
		if n > 0 {
			state, remaining = stBody, n
		}
	}
	g.out, g.state, g.remaining = head, state, remaining
	if method == http.MethodConnect || headerHasToken(upgrade, "websocket") {
		g.pass = true
	}
	return nil
}

// headerField splits a header line (with CRLF). bad explains a refusal:
// obs-fold (RFC 9112 §5.2), or whitespace or a non-token byte in the name,
// including before the colon (RFC 9112 §5.1 requires 400 for that).
func headerField(l []byte) (name, value, bad string) {
	s := string(l[:len(l)-2])
	if s[0] == ' ' || s[0] == '\t' {
		return "", "", "obsolete line folding"
	}
	name, value, ok := strings.Cut(s, ":")
	if !ok || name == "" {
		return "", "", "header line without a name"
	}
	for i := 0; i < len(name); i++ {
		if !isTokenChar(name[i]) {
			return "", "", "invalid header name"
		}
	}
	return name, strings.TrimSpace(value), ""
}

func isTokenChar(c byte) bool {
	if c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' {
		return true
	}
	return strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}

func contentLength(v string) (int64, bool) {
	v = strings.TrimSpace(v)
	if v == "" || len(v) > 18 {
		return 0, false
	}
	for i := 0; i < len(v); i++ {
		if v[i] < '0' || v[i] > '9' {
			return 0, false
		}
	}
	n, err := strconv.ParseInt(v, 10, 64)
	return n, err == nil
}

// chunkSize parses "1a;ext=1\r\n" (RFC 9112 §7.1).
func chunkSize(line []byte) (int64, bool) {
	s := string(line[:len(line)-2])
	if i := strings.IndexByte(s, ';'); i >= 0 {
		s = s[:i]
	}
	s = strings.TrimRight(s, " \t")
	if s == "" || len(s) > 15 {
		return 0, false
	}
	n, err := strconv.ParseInt(s, 16, 64)
	if err != nil || n < 0 || strings.HasPrefix(s, "+") || strings.HasPrefix(s, "-") {
		return 0, false
	}
	return n, true
}

// headerHasToken reports whether a comma-separated header value lists tok.
func headerHasToken(v, tok string) bool {
	for _, t := range strings.Split(v, ",") {
		if strings.EqualFold(strings.TrimSpace(t), tok) {
			return true
		}
	}
	return false
}

// checkFraming is the handler's part: HTTP/2 and HTTP/3 carry no
// Transfer-Encoding, CONNECT is not proxied, and an Upgrade outside webmail
// is refused (none of the mail protocols uses one).
func checkFraming(r *http.Request) string {
	if r.ProtoMajor >= 2 && len(r.TransferEncoding) > 0 {
		return "Transfer-Encoding in HTTP/2 or HTTP/3"
	}
	if r.Method == http.MethodConnect {
		return "CONNECT"
	}
	return ""
}
