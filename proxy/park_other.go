//go:build !linux

package proxy

import (
	"errors"
	"net"
	"time"
)

// Without epoll there is no parked relay: NewServer logs that and every
// relayed session keeps its two copy goroutines (relay in relay.go). These
// stand-ins keep the listener's code the same on every platform.

type parker struct{}

type pair struct{}

var errNoParker = errors.New("the parked relay needs epoll (Linux only)")

func newParker() (*parker, error) { return nil, errNoParker }

func (p *parker) stop() {}

func (p *parker) park(client, backend net.Conn, owner pairOwner, idle time.Duration) (*pair, bool) {
	return nil, false
}

func (pr *pair) close() {}

// clientWriter writes to a parked pair's client; there is none here.
type clientWriter struct{ pr *pair }

func (w clientWriter) Write(b []byte) (int, error) { return 0, net.ErrClosed }
