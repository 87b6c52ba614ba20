package smtp

import (
	"bufio"
	"errors"
	"io"
)

// longLineError reports a line longer than the limit. The line was consumed
// up to its end, so the caller can answer and read the next one; head keeps
// its first bytes (enough to see the verb).
type longLineError struct {
	head []byte
}

func (e *longLineError) Error() string { return "line too long" }

// headKeep is how much of an over-long line is kept: a verb and a space.
const headKeep = 16

// readLine reads one line of at most max bytes, line ending included, and
// returns a fresh copy without CRLF (or a bare LF, which is tolerated). A line
// cut by EOF is io.ErrUnexpectedEOF; an over-long one is *longLineError.
func readLine(r *bufio.Reader, max int) ([]byte, error) {
	var line []byte
	var long *longLineError
	for {
		chunk, err := r.ReadSlice('\n')
		switch {
		case long != nil:
		case len(line)+len(chunk) > max:
			long = &longLineError{}
			long.head = append(long.head, line...)
			long.head = append(long.head, chunk...)
			if len(long.head) > headKeep {
				long.head = long.head[:headKeep:headKeep]
			}
			clear(line)
			line = nil
		default:
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
		return nil, long
	}
	return trimEOL(line), nil
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
