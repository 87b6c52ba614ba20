//go:build !linux

package proxy

import (
	"net"
	"time"
)

// idleFor would read the socket's last send and receive times from the
// kernel; outside Linux there is no TCP_INFO with both, so the idle limit
// of a relayed session is not enforced there (README: platforms).
func idleFor(c *net.TCPConn) (time.Duration, bool) { return 0, false }
