package smtp

import (
	"bufio"
	"errors"
	"strconv"

	"github.com/mailgate/mailgate/protocols"
)

// Backend replies (RFC 5321 §4.2). A reply is one or more lines that all
// carry the same three-digit code; every line but the last has "-" after the
// code, the last a space or nothing:
//
//	Reply-line = *( Reply-code "-" [ textstring ] CRLF )
//	             Reply-code [ SP textstring ] CRLF
//
// The reader returns one whole reply at a time, so a multi-line reply is
// never taken for several. Replies are written back with CRLF endings
// whatever the backend used.

// reply is one complete reply.
type reply struct {
	code  int
	lines []string // each line's text, without code, separator and line ending
}

// replyLimits bound one reply.
type replyLimits struct {
	line  int // bytes per line, line ending included
	lines int // lines per reply
}

var (
	errMalformedReply = errors.New("malformed reply")
	errReplyTooLong   = errors.New("reply too long")
)

// readReply reads one complete reply.
func readReply(r *bufio.Reader, lim replyLimits) (*reply, error) {
	rep := &reply{}
	for {
		line, err := readLine(r, lim.line)
		if err != nil {
			if _, ok := protocols.AsLongLine(err); ok {
				return nil, errReplyTooLong
			}
			return nil, err
		}
		code, last, text, ok := parseReplyLine(line)
		if !ok || (len(rep.lines) > 0 && code != rep.code) {
			return nil, errMalformedReply
		}
		rep.code = code
		rep.lines = append(rep.lines, text)
		if last {
			return rep, nil
		}
		if len(rep.lines) >= lim.lines {
			return nil, errReplyTooLong
		}
	}
}

// parseReplyLine splits one reply line. last is false for "code-".
func parseReplyLine(line []byte) (code int, last bool, text string, ok bool) {
	if len(line) < 3 || line[0] < '2' || line[0] > '5' || !isDigit(line[1]) || !isDigit(line[2]) {
		return 0, false, "", false
	}
	code = int(line[0]-'0')*100 + int(line[1]-'0')*10 + int(line[2]-'0')
	switch {
	case len(line) == 3:
		return code, true, "", true
	case line[3] == ' ':
		return code, true, string(line[4:]), true
	case line[3] == '-':
		return code, false, string(line[4:]), true
	}
	return 0, false, "", false
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

// class is the first digit: 2 success, 3 intermediate, 4 transient, 5 permanent.
func (r *reply) class() int { return r.code / 100 }

// text is the first line's text.
func (r *reply) text() string {
	if len(r.lines) == 0 {
		return ""
	}
	return r.lines[0]
}

// enhanced returns the RFC 3463 enhanced status code that starts the first
// line ("5.7.8"), or "". Its class must match the reply's.
func (r *reply) enhanced() string {
	t := r.text()
	end := 0
	for part := 0; part < 3; part++ {
		start := end
		for end < len(t) && isDigit(t[end]) {
			end++
		}
		if n := end - start; n == 0 || n > 3 {
			return ""
		}
		if part < 2 {
			if end >= len(t) || t[end] != '.' {
				return ""
			}
			end++
		}
	}
	if end < len(t) && t[end] != ' ' {
		return ""
	}
	if int(t[0]-'0') != r.class() {
		return ""
	}
	return t[:end]
}

// bytes formats the reply with CRLF line endings. An empty last text still
// gets its space ("334 "), which RFC 4954 §4 shows for empty challenges.
func (r *reply) bytes() []byte {
	c := strconv.Itoa(r.code)
	var b []byte
	for i, t := range r.lines {
		b = append(b, c...)
		if i < len(r.lines)-1 {
			b = append(b, '-')
		} else {
			b = append(b, ' ')
		}
		b = append(b, t...)
		b = append(b, '\r', '\n')
	}
	return b
}

// newReply builds a single-line reply the handler sends itself.
func newReply(code int, text string) *reply {
	return &reply{code: code, lines: []string{text}}
}
