package smtp

import (
	"bufio"

	"github.com/mailgate/mailgate/protocols"
)

// headKeep is how much of an over-long line readLine keeps: a verb and a
// space.
const headKeep = 16

// readLine reads one line of at most max bytes, line ending included (a bare
// LF is tolerated); see protocols.ReadLineKeep.
func readLine(r *bufio.Reader, max int) ([]byte, error) {
	return protocols.ReadLineKeep(r, max, headKeep, 0)
}
