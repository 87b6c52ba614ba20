package pop3

import (
	"errors"
	"fmt"

	"github.com/mailgate/mailgate/protocols"
)

// The backend side: greeting, STLS toward the backend, CAPA and the AUTH
// mechanism list, QUIT, and the helpers that send a line and read the
// answer.

var (
	errGreetingErr    = errors.New("backend refused the connection (negative greeting)")
	errBadGreeting    = errors.New("unexpected backend greeting")
	errBackendSTLS    = errors.New("backend refused STLS")
	errUnexpectedCont = errors.New("unexpected continuation request")
	errOKWithoutAuth  = errors.New("backend accepted an authentication before any credential")
)

// greet reads the backend greeting, secures the backend link as
// configured, then greets the client with the backend's own line.
func (ss *session) greet() error {
	res, err := ss.readBackend(false)
	if err != nil {
		return err
	}
	switch res.kind {
	case respOK:
	case respErr:
		// Relayed: it tells the client why (e.g. [SYS/TEMP] overload).
		ss.outBytes(res.line)
		ss.out("")
		ss.Told = true
		ss.Flush()
		return backendErr(errGreetingErr)
	default:
		return backendErr(errBadGreeting)
	}
	ss.apop = apopTimestamp(res.line)
	if ss.ps.BackendStartTLS != nil {
		if err := ss.backendSTLS(); err != nil {
			return err
		}
	}
	ss.outBytes(rewriteGreeting(res.line))
	ss.out("")
	return ss.Flush()
}

// backendSTLS upgrades the backend link right after its greeting (RFC 2595
// §4). A refusal is a hard error: TLS to the backend was required. Nothing
// learned before is kept (the handler caches no CAPA); the greeting and its
// APOP timestamp stay valid for the session.
func (ss *session) backendSTLS() error {
	res, err := ss.roundTrip("STLS", false)
	if err != nil {
		return err
	}
	if res.kind != respOK {
		return backendErr(errBackendSTLS)
	}
	// StartTLSClient drops plaintext the backend sent after its +OK
	// (response injection, docs/protocols.md §9.2).
	if err := ss.Backend.StartTLSClient(ss.ps.BackendStartTLS); err != nil {
		return backendErr(fmt.Errorf("TLS handshake: %w", err))
	}
	ss.Log.Debug("backend STLS done")
	return nil
}

// capa forwards CAPA and relays the answer rewritten for the client link.
func (ss *session) capa() error {
	res, err := ss.roundTrip("CAPA", true)
	if err != nil {
		return err
	}
	p := ss.policy()
	switch {
	case res.kind == respOK:
		ss.outBytes(appendMulti(nil, res.line, rewriteCapa(res.body, p)))
	case p.offerSTLS:
		// No CAPA at the backend (RFC 2449 is optional), but the client
		// must learn it can have TLS here: list that, and nothing the
		// backend was not shown to support. After STLS the client asks
		// again and gets the backend's -ERR.
		ss.outBytes(appendMulti(nil, []byte("+OK Capability list follows"), [][]byte{[]byte("STLS")}))
	default:
		ss.outBytes(res.line)
		ss.out("")
	}
	return ss.Flush()
}

// mechList forwards a bare AUTH (the mechanism listing of RFC 1734
// servers) and relays the answer, filtered like CAPA's SASL line.
func (ss *session) mechList() error {
	res, err := ss.roundTrip("AUTH", true)
	if err != nil {
		return err
	}
	if res.kind == respOK {
		ss.outBytes(appendMulti(nil, res.line, filterMechList(res.body, ss.policy())))
	} else {
		ss.outBytes(res.line)
		ss.out("")
	}
	return ss.Flush()
}

// quit forwards QUIT, relays the answer and ends the session. A backend
// that is already gone still gets the client a +OK (RFC 1939 §6: QUIT in
// the AUTHORIZATION state only closes).
func (ss *session) quit() error {
	ss.Told = true
	res, err := ss.roundTrip("QUIT", false)
	if err != nil {
		ss.out("+OK Bye")
	} else {
		ss.outBytes(res.line)
		ss.out("")
	}
	ss.Flush()
	return fmt.Errorf("pop3: %w", protocols.ErrClientQuit)
}

// roundTrip sends one line to the backend and reads a status answer; a
// continuation is a protocol error here.
func (ss *session) roundTrip(line string, multi bool) (*response, error) {
	if err := ss.toBackend(line); err != nil {
		return nil, err
	}
	res, err := ss.readBackend(multi)
	if err != nil {
		return nil, err
	}
	if res.kind == respCont {
		return nil, backendErr(errUnexpectedCont)
	}
	return res, nil
}

// toBackend writes one line to the backend and flushes.
func (ss *session) toBackend(line string) error {
	ss.Backend.W.WriteString(line)
	ss.Backend.W.WriteString("\r\n")
	if err := ss.Backend.W.Flush(); err != nil {
		return backendErr(err)
	}
	return nil
}

// queueBackend queues prefix and b as one line for the backend; the next
// read flushes it.
func (ss *session) queueBackend(prefix string, b []byte) {
	ss.Backend.W.WriteString(prefix)
	ss.Backend.W.Write(b)
	ss.Backend.W.WriteString("\r\n")
}

// toBackendBytes is toBackend for a line held in a byte slice (a password
// or a SASL line the caller wipes).
func (ss *session) toBackendBytes(prefix string, b []byte) error {
	ss.queueBackend(prefix, b)
	if err := ss.Backend.W.Flush(); err != nil {
		return backendErr(err)
	}
	return nil
}

// readBackend reads one backend response.
func (ss *session) readBackend(multi bool) (*response, error) {
	res, err := readResponse(ss.Backend.R, multi, ss.rlim)
	if err != nil {
		return nil, backendErr(err)
	}
	return res, nil
}
