package protocols

import (
	"bufio"
	"errors"
	"io"
)

// LongLineError reports a line longer than the limit of ReadLineKeep. The
// line was consumed up to its end, so the caller can answer and read on;
// Head and Tail keep its first and last bytes, enough to answer with the tag
// or verb and to notice a literal announced at the end of the line (RFC 7888
// §4: octets of a non-synchronizing literal are already in flight).
type LongLineError struct {
	Head []byte // up to headKeep bytes from the start
	Tail []byte // up to tailKeep bytes before the line ending
}

func (e *LongLineError) Error() string { return "line too long" }

// AsLongLine returns the *LongLineError in err's chain, if any.
func AsLongLine(err error) (*LongLineError, bool) {
	var le *LongLineError
	ok := errors.As(err, &le)
	return le, ok
}

// ReadLineKeep reads one line of at most max bytes, line ending included,
// and returns a fresh copy without CRLF (or a bare LF). A line cut by EOF is
// io.ErrUnexpectedEOF; an over-long one is a *LongLineError keeping headKeep
// and tailKeep bytes of it. Unlike Conn.ReadLine it wipes what it read of a
// line it does not return.
func ReadLineKeep(r *bufio.Reader, max, headKeep, tailKeep int) ([]byte, error) {
	var line []byte
	var long *LongLineError
	for {
		chunk, err := r.ReadSlice('\n')
		switch {
		case long == nil && len(line)+len(chunk) > max:
			long = &LongLineError{}
			long.Head = append(long.Head, line...)
			long.Head = append(long.Head, chunk...)
			if len(long.Head) > headKeep {
				long.Head = long.Head[:headKeep:headKeep]
			}
			long.Tail = keepTail(nil, tailKeep, line, chunk)
			clear(line)
			line = nil
		case long != nil:
			long.Tail = keepTail(long.Tail, tailKeep, chunk)
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
		long.Tail = TrimEOL(long.Tail)
		return nil, long
	}
	return TrimEOL(line), nil
}

// keepTail returns the last n+2 bytes of tail and parts (the two extra bytes
// leave room for the CRLF that TrimEOL removes); nothing when n is 0.
func keepTail(tail []byte, n int, parts ...[]byte) []byte {
	if n <= 0 {
		return nil
	}
	for _, p := range parts {
		tail = append(tail, p...)
	}
	if over := len(tail) - (n + 2); over > 0 {
		tail = append(tail[:0], tail[over:]...)
	}
	return tail
}

// TrimEOL removes a trailing LF and then a trailing CR.
func TrimEOL(b []byte) []byte {
	if n := len(b); n > 0 && b[n-1] == '\n' {
		b = b[:n-1]
	}
	if n := len(b); n > 0 && b[n-1] == '\r' {
		b = b[:n-1]
	}
	return b
}
