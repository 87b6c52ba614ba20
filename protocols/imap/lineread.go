package imap

import (
	"bufio"

	"github.com/mailgate/mailgate/protocols"
)

// What readLine keeps of an over-long line: the tag to answer with, and the
// end, where a literal may be announced whose octets are already in flight.
const (
	headKeep = 64
	tailKeep = 32
)

// readLine reads one line of at most max bytes (line ending included); see
// protocols.ReadLineKeep.
func readLine(r *bufio.Reader, max int) ([]byte, error) {
	return protocols.ReadLineKeep(r, max, headKeep, tailKeep)
}
