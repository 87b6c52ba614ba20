package imap

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"

	"github.com/mailgate/mailgate/protocols"
)

// Backend responses (RFC 9051 §7, §9 "response"). The reader returns one
// whole response at a time: the first line plus, for untagged data, every
// literal and continuation line that belongs to it. Consuming literal octets
// is what keeps a literal from faking a tagged line: text inside "{n}" data
// is never looked at as a response (docs/protocols.md §2.5).

type respKind int

const (
	respUntagged     respKind = iota // "* ..."
	respTagged                       // "tag OK|NO|BAD ..."
	respContinuation                 // "+ ..."
)

// response is one parsed backend response.
type response struct {
	kind    respKind
	tag     string // tagged responses
	status  string // OK NO BAD BYE PREAUTH (upper-case); "" for untagged data
	code    string // response code name, upper-case ("CAPABILITY", "UNAVAILABLE"); "" if none
	keyword string // untagged data: first word, upper-case ("CAPABILITY", "ID", "3")
	line    []byte // first line, without CRLF
	textAt  int    // offset in line of resp-text after the code (status, continuation)
	codeAt  int    // offset in line of "[" when code != ""
	codeEnd int    // offset in line of "]" when code != ""
	raw     []byte // the whole response with CRLF line endings and literals
}

// text returns the human-readable text of a status response or the payload
// of a continuation request.
func (r *response) text() []byte {
	if (r.kind == respUntagged && r.status == "") || r.textAt > len(r.line) {
		return nil
	}
	return r.line[r.textAt:]
}

// codeArgs returns what follows the code name inside the brackets.
func (r *response) codeArgs() []byte {
	if r.code == "" {
		return nil
	}
	args := r.line[r.codeAt+1+len(r.code) : r.codeEnd]
	return bytes.TrimPrefix(args, []byte(" "))
}

var (
	errMalformedResponse = errors.New("malformed response")
	errResponseTooLong   = errors.New("response too long")
)

// parseResponseLine classifies the first line of a response. It does not
// look at literals.
func parseResponseLine(line []byte) (*response, error) {
	r := &response{line: line}
	switch {
	case len(line) == 0:
		return nil, errMalformedResponse
	case line[0] == '+':
		if len(line) > 1 && line[1] != ' ' {
			return nil, errMalformedResponse
		}
		r.kind = respContinuation
		r.textAt = min(2, len(line))
		return r, nil
	case bytes.HasPrefix(line, []byte("* ")):
		r.kind = respUntagged
		word, at := nextWord(line, 2)
		if isStatus(word) {
			r.status = word
			r.parseCode(at)
			return r, nil
		}
		if word == "" {
			return nil, errMalformedResponse
		}
		r.keyword = word
		return r, nil
	}
	sp := bytes.IndexByte(line, ' ')
	if sp <= 0 || !isTag(line[:sp]) {
		return nil, errMalformedResponse
	}
	r.kind = respTagged
	r.tag = string(line[:sp])
	word, at := nextWord(line, sp+1)
	if word != "OK" && word != "NO" && word != "BAD" {
		return nil, errMalformedResponse
	}
	r.status = word
	r.parseCode(at)
	return r, nil
}

func isStatus(w string) bool {
	switch w {
	case "OK", "NO", "BAD", "BYE", "PREAUTH":
		return true
	}
	return false
}

// nextWord returns the upper-cased word starting at i and the offset after
// it and its following space.
func nextWord(line []byte, i int) (string, int) {
	end := bytes.IndexByte(line[i:], ' ')
	if end < 0 {
		return string(bytes.ToUpper(line[i:])), len(line)
	}
	return string(bytes.ToUpper(line[i : i+end])), i + end + 1
}

// parseCode reads an optional "[" resp-text-code "]" at offset at.
func (r *response) parseCode(at int) {
	r.textAt = at
	if at >= len(r.line) || r.line[at] != '[' {
		return
	}
	closing := bytes.IndexByte(r.line[at:], ']')
	if closing < 0 {
		return // no code; the whole thing is text
	}
	inner := r.line[at+1 : at+closing]
	name := inner
	if sp := bytes.IndexByte(inner, ' '); sp >= 0 {
		name = inner[:sp]
	}
	if !isAtom(name) {
		return
	}
	r.code = string(bytes.ToUpper(name))
	r.codeAt, r.codeEnd = at, at+closing
	r.textAt = min(at+closing+2, len(r.line))
}

// respLimits bound what the reader accepts from a backend before login.
type respLimits struct {
	line    int // one line
	literal int // one literal
	total   int // one whole response
}

// readResponse reads one response. Literals are only recognised in untagged
// data (status responses and continuation requests carry text, where "{5}"
// is just text).
func readResponse(r *bufio.Reader, lim respLimits) (*response, error) {
	line, err := readLine(r, lim.line)
	if err != nil {
		if _, ok := protocols.AsLongLine(err); ok {
			return nil, errResponseTooLong
		}
		return nil, err
	}
	resp, err := parseResponseLine(line)
	if err != nil {
		return nil, err
	}
	raw := append(append(make([]byte, 0, len(line)+2), line...), '\r', '\n')
	if resp.kind == respUntagged && resp.status == "" {
		cur := line
		for {
			_, n, _, ok := splitLiteral(cur)
			if !ok {
				break
			}
			if n > int64(lim.literal) || int64(len(raw))+n > int64(lim.total) {
				return nil, errResponseTooLong
			}
			start := len(raw)
			raw = append(raw, make([]byte, n)...)
			if _, err := io.ReadFull(r, raw[start:]); err != nil {
				return nil, noEOF(err)
			}
			cur, err = readLine(r, lim.line)
			if err != nil {
				if _, ok := protocols.AsLongLine(err); ok {
					return nil, errResponseTooLong
				}
				return nil, noEOF(err)
			}
			raw = append(append(raw, cur...), '\r', '\n')
			if len(raw) > lim.total {
				return nil, errResponseTooLong
			}
		}
	}
	resp.raw = raw
	return resp, nil
}

func (r *response) String() string {
	switch r.kind {
	case respTagged:
		return fmt.Sprintf("tagged %s [%s]", r.status, r.code)
	case respContinuation:
		return "continuation"
	}
	if r.status != "" {
		return fmt.Sprintf("untagged %s [%s]", r.status, r.code)
	}
	return "untagged " + r.keyword
}
