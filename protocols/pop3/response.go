package pop3

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"strings"
)

// Backend responses (RFC 1939 §3, RFC 2449 §8, RFC 5034 §4): a status line
// "+OK text" or "-ERR [CODE] text", optionally followed (for multi-line
// answers) by dot-stuffed lines and a line holding a single "."; or, inside
// AUTH, a continuation "+ base64".

type respKind int

const (
	respOK   respKind = iota // "+OK ..."
	respErr                  // "-ERR ..."
	respCont                 // "+ ..." (SASL challenge)
)

// response is one parsed backend response.
type response struct {
	kind  respKind
	line  []byte   // first line, without its line ending
	code  string   // response code, upper-case ("SYS/TEMP", "AUTH"); "" if none
	body  [][]byte // multi-line body, dot-unstuffed, without the terminator
	multi bool     // body was read
}

var (
	errMalformedResponse = errors.New("malformed response")
	errResponseTooLong   = errors.New("response too long")
)

// parseStatus classifies one response line. Status indicators are upper
// case (RFC 1939 §3); lower case is accepted from lenient servers.
func parseStatus(line []byte) (*response, error) {
	r := &response{line: line}
	switch {
	case hasWord(line, "+OK"):
		r.kind = respOK
	case hasWord(line, "-ERR"):
		r.kind = respErr
		r.code = codeOf(line[len("-ERR"):])
	case len(line) >= 1 && line[0] == '+' && (len(line) == 1 || line[1] == ' '):
		r.kind = respCont
	default:
		return nil, errMalformedResponse
	}
	return r, nil
}

// hasWord reports whether line starts with w (case-insensitive) followed by
// a space or the end of the line.
func hasWord(line []byte, w string) bool {
	if len(line) < len(w) || !strings.EqualFold(string(line[:len(w)]), w) {
		return false
	}
	return len(line) == len(w) || line[len(w)] == ' '
}

// codeOf returns the response code at the start of the text after the
// status indicator: " [SYS/TEMP] text" gives "SYS/TEMP" (RFC 2449 §8).
func codeOf(rest []byte) string {
	rest = bytes.TrimPrefix(rest, []byte(" "))
	if len(rest) == 0 || rest[0] != '[' {
		return ""
	}
	end := bytes.IndexByte(rest, ']')
	if end < 2 || end > 64 {
		return ""
	}
	code := rest[1:end]
	for _, c := range code {
		if !isAlnum(c) && c != '/' && c != '-' {
			return ""
		}
	}
	return strings.ToUpper(string(code))
}

// text returns the payload of a continuation, or the text after the status
// indicator of a status line.
func (r *response) text() []byte {
	var n int
	switch r.kind {
	case respOK:
		n = len("+OK")
	case respErr:
		n = len("-ERR")
	default:
		n = 1
	}
	if n >= len(r.line) {
		return nil
	}
	return r.line[n+1:]
}

// respLimits bound what is read from the backend before login.
type respLimits struct {
	line  int // one line, line ending included
	total int // a whole multi-line response
}

// readResponse reads one response. With multi, a +OK is followed by a
// multi-line body, which is read to its terminator and unstuffed (RFC 1939
// §3: a line starting with "." has an extra "." in front). An -ERR or a
// continuation is always one line.
func readResponse(r *bufio.Reader, multi bool, lim respLimits) (*response, error) {
	line, err := readLine(r, lim.line)
	if err != nil {
		return nil, err
	}
	res, err := parseStatus(line)
	if err != nil {
		return nil, err
	}
	if !multi || res.kind != respOK {
		return res, nil
	}
	res.multi = true
	total := len(line)
	for {
		l, err := readLine(r, lim.line)
		if err != nil {
			return nil, err
		}
		if total += len(l) + 2; total > lim.total {
			return nil, errResponseTooLong
		}
		if len(l) > 0 && l[0] == '.' {
			if len(l) == 1 {
				return res, nil
			}
			l = l[1:]
		}
		res.body = append(res.body, l)
	}
}

// readLine reads one line of at most max octets with its ending (CRLF or a
// bare LF) and returns a fresh copy without the ending. EOF inside a line is
// io.ErrUnexpectedEOF.
func readLine(r *bufio.Reader, max int) ([]byte, error) {
	var line []byte
	for {
		chunk, err := r.ReadSlice('\n')
		if len(line)+len(chunk) > max {
			return nil, errResponseTooLong
		}
		line = append(line, chunk...)
		if err == bufio.ErrBufferFull {
			continue
		}
		if err != nil {
			if err == io.EOF && len(line) > 0 {
				err = io.ErrUnexpectedEOF
			}
			return nil, err
		}
		break
	}
	line = line[:len(line)-1]
	if n := len(line); n > 0 && line[n-1] == '\r' {
		line = line[:n-1]
	}
	return line, nil
}

// appendMulti writes a multi-line response: the first line, the body lines
// dot-stuffed, and the terminator.
func appendMulti(b []byte, first []byte, body [][]byte) []byte {
	b = append(b, first...)
	b = append(b, '\r', '\n')
	for _, l := range body {
		if len(l) > 0 && l[0] == '.' {
			b = append(b, '.')
		}
		b = append(b, l...)
		b = append(b, '\r', '\n')
	}
	return append(b, '.', '\r', '\n')
}

// temporaryCode reports -ERR codes that say nothing about the credential:
// the backend is busy or broken ([SYS/TEMP], [SYS/PERM], RFC 3206 §4), the
// maildrop is locked ([IN-USE], RFC 2449 §8.1.1) or the user logged in too
// recently ([LOGIN-DELAY], §8.1.2). The last two even follow a correct
// password. None of them may count as a failed password.
func temporaryCode(code string) bool {
	for _, c := range []string{"SYS/TEMP", "SYS/PERM", "IN-USE", "LOGIN-DELAY"} {
		if code == c || strings.HasPrefix(code, c+"/") {
			return true
		}
	}
	return false
}
