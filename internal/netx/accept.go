package netx

import (
	"errors"
	"log/slog"
	"net"
	"time"
)

// Serve accepts connections on ln and hands each to handle, until ln is
// closed. A failed Accept that is not the close (EMFILE, ENFILE: out of
// descriptors) is logged at WARN with the listener's name and retried after a
// back-off doubling from 5 ms up to 1 s, reset by the next success: an
// operator must act on it, and a busy loop would only make it worse. handle
// runs on the accepting goroutine: it starts its own when it blocks. Serve
// returns false when handle returned false (stop accepting), true when ln was
// closed.
func Serve(ln net.Listener, log *slog.Logger, name string, handle func(net.Conn) bool) bool {
	var delay time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return true
			}
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			if log != nil {
				log.Warn("accept failed", "listener", name, "err", err, "retry_in", delay)
			}
			time.Sleep(delay)
			continue
		}
		delay = 0
		if !handle(c) {
			return false
		}
	}
}
