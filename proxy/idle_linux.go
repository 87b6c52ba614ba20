//go:build linux

package proxy

import (
	"golang.org/x/sys/unix"
	"net"
	"time"
)

// Idle limits: the sweep that closes parked sessions which carried nothing
// for their limit, and idleFor, the kernel's view of a socket's last data
// (TCP_INFO) for sessions relayed by goroutines.

func now() int64 { return time.Now().UnixNano() }

// sweepInterval is how often sessions with the given idle limit are
// checked: a sixteenth of it (a one-hour limit is enforced within 61
// minutes), at least 50 ms and at most a minute.
func sweepInterval(limit time.Duration) time.Duration {
	return min(max(limit/16, 50*time.Millisecond), time.Minute)
}

// watchIdle makes sure the sweep runs often enough for limit.
func (p *parker) watchIdle(limit time.Duration) {
	every := int64(sweepInterval(limit))
	for {
		cur := p.sweepEvery.Load()
		if cur != 0 && cur <= every {
			break
		}
		if p.sweepEvery.CompareAndSwap(cur, every) {
			break
		}
	}
	p.sweepOnce.Do(func() { go p.sweep() })
}

// sweep closes sessions that carried nothing for their idle limit. Pumps
// refresh last with every chunk they move, so a pump blocked on a peer that
// stopped reading does not keep its session alive.
func (p *parker) sweep() {
	var idle []*pair
	seen := map[*pair]bool{}
	for {
		time.Sleep(time.Duration(p.sweepEvery.Load()))
		t := now()
		p.mu.Lock()
		if p.byFD == nil { // stopped
			p.mu.Unlock()
			return
		}
		for _, d := range p.byFD {
			pr := d.pair
			// A pair moving in or out of hibernation is listed under
			// both its old and new descriptors: once is enough.
			if pr.idle <= 0 || t-pr.last.Load() < int64(pr.idle) || seen[pr] {
				continue
			}
			seen[pr] = true
			idle = append(idle, pr)
		}
		p.mu.Unlock()
		for i, pr := range idle {
			pr.owner.relayIdle()
			idle[i] = nil
		}
		idle = idle[:0]
		clear(seen)
	}
}

// idleFor reports how long the socket has carried no data either way,
// from the kernel's TCP_INFO (so it works while splice moves the bytes).
func idleFor(c *net.TCPConn) (time.Duration, bool) {
	rc, err := c.SyscallConn()
	if err != nil {
		return 0, false
	}
	var info *unix.TCPInfo
	var gerr error
	if err := rc.Control(func(fd uintptr) {
		info, gerr = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO)
	}); err != nil || gerr != nil {
		return 0, false
	}
	ms := min(info.Last_data_recv, info.Last_data_sent)
	return time.Duration(ms) * time.Millisecond, true
}
