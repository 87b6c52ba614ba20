package imap

import (
	"bufio"
	"errors"
	"io"
)

// longLineError reports a line longer than the limit. The line was consumed
// up to its end; head and tail keep its first and last bytes so the caller can
// still answer with the tag and notice a literal announced at the end of the
// line (RFC 7888 §4: octets of a non-synchronizing literal are already in
// flight and must not be parsed as commands).
type longLineError struct {
	head []byte // up to headKeep bytes from the start
	tail []byte // up to tailKeep bytes before the line ending
}

func (e *longLineError) Error() string { return "line too long" }

const (
	headKeep = 64
	tailKeep = 32
)

// readLine reads one line of at most max bytes (line ending included) and
// returns it without CRLF or LF. The returned slice is a fresh copy. A line
// cut by EOF is io.ErrUnexpectedEOF.
func readLine(r *bufio.Reader, max int) ([]byte, error) {
	var line []byte
	var long *longLineError
	for {
		chunk, err := r.ReadSlice('\n')
		if long == nil && len(line)+len(chunk) > max {
			long = &longLineError{}
			long.head = append(long.head, line...)
			long.head = append(long.head, chunk...)
			if len(long.head) > headKeep {
				long.head = long.head[:headKeep:headKeep]
			}
			long.tail = keepTail(nil, line, chunk)
			clear(line)
			line = nil
		} else if long != nil {
			long.tail = keepTail(long.tail, chunk)
		} else {
			line = append(line, chunk...)
		}
		if err == bufio.ErrBufferFull {
			continue
		}
		if err != nil {
			clear(line)
			if err == io.EOF && (len(line) > 0 || long != nil) {
				err = io.ErrUnexpectedEOF
			}
			return nil, err
		}
		break
	}
	if long != nil {
		long.tail = trimEOL(long.tail)
		return nil, long
	}
	return trimEOL(line), nil
}

// keepTail returns the last tailKeep+2 bytes of the concatenation (the two
// extra bytes leave room for the CRLF that trimEOL removes).
func keepTail(tail []byte, parts ...[]byte) []byte {
	for _, p := range parts {
		tail = append(tail, p...)
	}
	if n := len(tail) - (tailKeep + 2); n > 0 {
		tail = append(tail[:0], tail[n:]...)
	}
	return tail
}

func trimEOL(b []byte) []byte {
	if n := len(b); n > 0 && b[n-1] == '\n' {
		b = b[:n-1]
	}
	if n := len(b); n > 0 && b[n-1] == '\r' {
		b = b[:n-1]
	}
	return b
}

func isLongLine(err error) (*longLineError, bool) {
	var le *longLineError
	ok := errors.As(err, &le)
	return le, ok
}
