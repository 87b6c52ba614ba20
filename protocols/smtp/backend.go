package smtp

import (
	"errors"
	"fmt"
)

// The backend side: greeting, STARTTLS toward the backend, relaying the
// commands the backend judges, and the client's HELO/EHLO.

var (
	errBadGreeting       = errors.New("unexpected backend greeting")
	errGreeting421       = errors.New("backend refused the connection (421 greeting)")
	errNoBackendSTARTTLS = errors.New("backend does not offer STARTTLS")
	errBackendSTARTTLS   = errors.New("backend refused STARTTLS")
	errBackendClosing    = errors.New("backend is closing the connection (421)")
	errUnexpected334     = errors.New("unexpected 334 continuation")
)

// greet reads the backend greeting (RFC 5321 §3.1, §4.2), secures the
// backend link as configured, then greets the client with it.
func (ss *session) greet() error {
	g, err := ss.readBackend()
	if err != nil {
		return err
	}
	switch {
	case g.code == 220:
	case g.code == 554:
		// Refused for policy: the backend now waits for QUIT and answers
		// 503 to the rest (RFC 5321 §3.1). It can talk for itself.
		ss.Log.Info("backend greeted 554", "outcome", "refused")
	case g.class() == 4:
		ss.outReply(g)
		ss.Told = true
		ss.Flush()
		return backendErr(errGreeting421)
	default:
		return backendErr(errBadGreeting)
	}
	if ss.ps.BackendStartTLS != nil {
		if g.code != 220 {
			return backendErr(errNoBackendSTARTTLS)
		}
		if err := ss.backendStartTLS(); err != nil {
			return err
		}
	}
	ss.outReply(g)
	return ss.Flush()
}

// backendStartTLS upgrades the backend link right after its greeting:
// EHLO, STARTTLS, "220", TLS (RFC 3207 §4). The backend forgets the EHLO;
// the client's own EHLO follows later.
func (ss *session) backendStartTLS() error {
	rep, err := ss.roundTrip([]byte("EHLO " + ss.host))
	if err != nil {
		return err
	}
	if rep.code != 250 || !parseEHLO(rep).startTLS {
		return backendErr(errNoBackendSTARTTLS)
	}
	if rep, err = ss.roundTrip([]byte("STARTTLS")); err != nil {
		return err
	}
	if rep.code != 220 {
		return backendErr(errBackendSTARTTLS)
	}
	// StartTLSClient drops plaintext the backend sent after its 220
	// (response injection, docs/protocols.md §9.2).
	if err := ss.Backend.StartTLSClient(ss.ps.BackendStartTLS); err != nil {
		return backendErr(fmt.Errorf("TLS handshake: %w", err))
	}
	ss.Log.Debug("backend STARTTLS done")
	return nil
}

// readBackend reads one backend reply.
func (ss *session) readBackend() (*reply, error) {
	rep, err := readReply(ss.Backend.R, ss.rlim)
	if err != nil {
		return nil, backendErr(err)
	}
	return rep, nil
}

// toBackend queues one line for the backend.
func (ss *session) toBackend(line []byte) {
	ss.Backend.W.Write(line)
	ss.Backend.W.WriteString("\r\n")
}

// roundTrip sends one line to the backend and reads the whole reply.
func (ss *session) roundTrip(line []byte) (*reply, error) {
	ss.toBackend(line)
	if err := ss.Backend.W.Flush(); err != nil {
		return nil, backendErr(err)
	}
	return ss.readBackend()
}

// relay writes a backend reply to the client. A 421 means the backend is
// closing: the session ends with it.
func (ss *session) relay(rep *reply) error {
	ss.outReply(rep)
	if rep.code == 421 {
		ss.Told = true
		ss.Flush()
		return backendErr(errBackendClosing)
	}
	if countable(rep) {
		return ss.countBad()
	}
	return ss.Flush()
}

// forward relays a client command the backend judges (NOOP, RSET).
func (ss *session) forward(cmd command) error {
	rep, err := ss.roundTrip(cmd.line)
	if err != nil {
		return err
	}
	return ss.relay(rep)
}

// hello relays HELO and EHLO (RFC 5321 §4.1.1.1). An EHLO reply is
// rewritten for the client's link and remembered for AUTH; a HELO reply
// passes through. The first one carries the client address with XCLIENT
// when configured.
func (ss *session) hello(cmd command) error {
	name := heloName(cmd.arg)
	if name == "" {
		return ss.reject(501, "5.5.4", "Syntax: "+cmd.verb+" hostname")
	}
	var rep *reply
	if ss.ps.ClientAddrVia == "xclient" && !ss.xclientDone {
		ss.xclientDone = true
		var err error
		if rep, err = ss.xclient(cmd, name); err != nil {
			return err
		}
	}
	if rep == nil {
		var err error
		if rep, err = ss.roundTrip(cmd.line); err != nil {
			return err
		}
	}
	if rep.code != 250 {
		return ss.relay(rep)
	}
	ss.helo, ss.esmtp = name, cmd.verb == "EHLO"
	ss.ehlo = ehloInfo{}
	if !ss.esmtp {
		ss.outReply(rep)
		return ss.Flush()
	}
	ss.ehlo = parseEHLO(rep)
	ss.outReply(rewriteEHLO(rep, ss.capPolicy()))
	return ss.Flush()
}

// capPolicy is what the client may see of the backend's extensions now.
func (ss *session) capPolicy() capPolicy {
	return capPolicy{
		clientTLS:     ss.ps.ClientTLS,
		offerStartTLS: !ss.ps.ClientTLS && ss.ps.ClientStartTLS != nil,
		hideAuth:      ss.role == RoleMX || ss.loginDisabled(),
	}
}

// loginDisabled reports whether AUTH is refused right now: TLS is required
// for login and the client link is plain.
func (ss *session) loginDisabled() bool {
	return ss.ps.RequireTLSForLogin && !ss.ps.ClientTLS
}

// xclient passes the client address (Postfix XCLIENT_README) before the
// client's first HELO/EHLO reaches the backend: EHLO to learn whether
// XCLIENT is offered, then "XCLIENT ADDR=... PORT=... PROTO=... HELO=...",
// whose success is a new 220 greeting (older Postfix: 250); the caller then
// sends the client's own command. When XCLIENT is not offered and the client
// sent EHLO, the probe's reply is the answer and is returned.
func (ss *session) xclient(cmd command, name string) (*reply, error) {
	probe, err := ss.roundTrip([]byte("EHLO " + name))
	if err != nil {
		return nil, err
	}
	info := parseEHLO(probe)
	if probe.code != 250 || !info.xclient {
		ss.Log.Warn("backend does not offer XCLIENT; client address not passed")
		if cmd.verb == "EHLO" {
			return probe, nil
		}
		return nil, nil
	}
	line := xclientLine(ss.ps.ClientAddr, ss.ps.LocalAddr, cmd.verb == "EHLO", name, info.xclientArgs)
	rep, err := ss.roundTrip([]byte(line))
	if err != nil {
		return nil, err
	}
	switch {
	case rep.code == 421:
		return nil, ss.relay(rep)
	case rep.class() == 2:
		ss.Log.Debug("client address passed with XCLIENT")
	default:
		ss.Log.Warn("backend refused XCLIENT; client address not passed", "code", rep.code)
	}
	return nil, nil
}
