package main

import (
	"fmt"
	"net"
	"net/netip"
	"strings"

	"golang.org/x/sys/unix"
)

// checkLoopback refuses any address that is not on this machine's loopback:
// the bench never sends traffic anywhere else.
func checkLoopback(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%q: %w", addr, err)
	}
	if host == "localhost" {
		return nil
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return fmt.Errorf("%q: want a loopback IP address (127.0.0.0/8 or ::1)", addr)
	}
	if !ip.Unmap().IsLoopback() {
		return fmt.Errorf("%q is not a loopback address; the bench only talks to 127.0.0.0/8 and ::1", addr)
	}
	return nil
}

// listenLoopback binds a TCP listener on a loopback address.
func listenLoopback(addr string) (net.Listener, error) {
	if err := checkLoopback(addr); err != nil {
		return nil, err
	}
	return net.Listen("tcp", addr)
}

// raiseNoFile lifts the soft RLIMIT_NOFILE to the hard limit (Go's runtime
// already does this at start-up since Go 1.19; doing it here too keeps the
// tool right whatever runs it) and returns the limit in force.
func raiseNoFile() uint64 {
	var rl unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &rl); err != nil {
		return 0
	}
	if rl.Cur < rl.Max {
		rl.Cur = rl.Max
		if unix.Setrlimit(unix.RLIMIT_NOFILE, &rl) != nil {
			unix.Getrlimit(unix.RLIMIT_NOFILE, &rl)
		}
	}
	return uint64(rl.Cur) // int64 on FreeBSD
}

// Target is one thing to measure: a name (direct, mailgate, haproxy,
// nginx...), the address a client connects to, and whether the client
// speaks implicit TLS to it.
type Target struct {
	Name string
	Addr string
	TLS  bool
}

// Variant is "tls" or "plain".
func (t Target) Variant() string {
	if t.TLS {
		return "tls"
	}
	return "plain"
}

func (t Target) String() string { return t.Name + "/" + t.Variant() }

// parseTarget reads NAME=ADDR[,tls].
func parseTarget(s string) (Target, error) {
	name, rest, ok := strings.Cut(s, "=")
	if !ok || name == "" || rest == "" {
		return Target{}, fmt.Errorf("target %q: want NAME=ADDR[,tls]", s)
	}
	parts := strings.Split(rest, ",")
	t := Target{Name: name, Addr: parts[0]}
	for _, opt := range parts[1:] {
		switch opt {
		case "tls":
			t.TLS = true
		case "plain":
		default:
			return Target{}, fmt.Errorf("target %q: unknown option %q (want tls)", s, opt)
		}
	}
	if err := checkLoopback(t.Addr); err != nil {
		return Target{}, fmt.Errorf("target %s: %w", name, err)
	}
	return t, nil
}
