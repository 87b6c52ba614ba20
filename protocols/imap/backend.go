package imap

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// The backend side: greeting, STARTTLS and ID toward the backend, sending
// commands and reading their results.

var (
	errGreetingBye          = errors.New("backend refused the connection (BYE greeting)")
	errPreauthAfterGreeting = errors.New("backend greeted PREAUTH, but the client was greeted as not authenticated")
	errBadGreeting          = errors.New("unexpected backend greeting")
	errPreauthWithTLS       = errors.New("backend greeted PREAUTH but STARTTLS to it is required")
	errNoBackendSTARTTLS    = errors.New("backend does not offer STARTTLS")
	errBackendSTARTTLS      = errors.New("backend refused STARTTLS")
	errUnexpectedTag        = errors.New("tagged response for a command that was not sent")
	errUnexpectedContinue   = errors.New("unexpected continuation request")
	errBackendCapability    = errors.New("backend CAPABILITY failed")
)

// greet reads the backend greeting (RFC 9051 §7.1: OK, PREAUTH or BYE),
// secures and informs the backend as configured, then greets the client,
// unless the proxy already did with the handler's EarlyGreeting.
func (ss *session) greet() error {
	res, err := ss.readBackend()
	if err != nil {
		return err
	}
	if res.kind != respUntagged {
		return backendErr(errBadGreeting)
	}
	ss.learnCaps(res)
	switch res.status {
	case "OK":
	case "PREAUTH":
		ss.h.greeting.Store(nil) // not to be predicted
		if ss.ps.Greeted {
			return backendErr(errPreauthAfterGreeting)
		}
		// Authenticated by external means: no STARTTLS is possible, so a
		// required backend TLS cannot be had (docs/protocols.md §9.2).
		if ss.ps.BackendStartTLS != nil {
			return backendErr(errPreauthWithTLS)
		}
		ss.preauth = true
	case "BYE":
		ss.outBytes(res.raw) // after an early greeting too: a BYE may come at any time
		ss.Told = true
		ss.Flush()
		return backendErr(errGreetingBye)
	default:
		return backendErr(errBadGreeting)
	}
	greeting := res // as the client is to see it, before the capability policy
	if ss.ps.BackendStartTLS != nil {
		if err := ss.backendStartTLS(); err != nil {
			return err
		}
		// The greeting's capabilities described the plaintext link.
		line := "* OK [CAPABILITY " + strings.Join(ss.capList(), " ") + "] " + string(res.text())
		if greeting, err = parseResponseLine([]byte(line)); err != nil {
			return backendErr(errBadGreeting)
		}
		greeting.raw = []byte(line + "\r\n")
	}
	if ss.ps.ClientAddrVia == "imap-id" {
		if err := ss.sendID(); err != nil {
			return err
		}
	}
	if ss.preauth {
		ss.outBytes(rewriteResponse(greeting, capPolicy{}))
		ss.Log.Info("backend greeted PREAUTH", "outcome", "preauth")
		return ss.Flush()
	}
	ss.h.remember(greeting, ss.ps)
	if !ss.ps.Greeted {
		ss.outBytes(rewriteResponse(greeting, ss.clientPolicy()))
	}
	return ss.Flush()
}

// backendStartTLS upgrades the backend link right after its greeting, then
// asks for the capabilities again (RFC 9051 §6.2.1: cached ones are void).
func (ss *session) backendStartTLS() error {
	if ss.capsKnown && !ss.caps["STARTTLS"] {
		return backendErr(errNoBackendSTARTTLS)
	}
	tag := ss.nextTag()
	res, err := ss.roundTrip(tag, lineCommand(tag+" STARTTLS"), ss.swallow)
	if err != nil {
		return err
	}
	if res.status != "OK" {
		return backendErr(errBackendSTARTTLS)
	}
	// StartTLSClient drops plaintext the backend sent after its OK
	// (response injection, docs/protocols.md §9.2).
	if err := ss.Backend.StartTLSClient(ss.ps.BackendStartTLS); err != nil {
		return backendErr(fmt.Errorf("TLS handshake: %w", err))
	}
	ss.caps, ss.capNames, ss.capsKnown = nil, nil, false
	tag = ss.nextTag()
	res, err = ss.roundTrip(tag, lineCommand(tag+" CAPABILITY"), ss.swallow)
	if err != nil {
		return err
	}
	if res.status != "OK" || !ss.capsKnown {
		return backendErr(errBackendCapability)
	}
	return nil
}

// sendID passes the client address with ID (RFC 2971) the way Dovecot's
// proxy does, and hides the exchange from the client.
func (ss *session) sendID() error {
	tag := ss.nextTag()
	var b cmdBuilder
	b.raw(tag + " ID (")
	sep := ""
	field := func(k, v string) {
		b.raw(sep)
		b.str([]byte(k))
		b.raw(" ")
		b.str([]byte(v))
		sep = " "
	}
	if a := ss.ps.ClientAddr; a.IsValid() {
		field("x-originating-ip", a.Addr().Unmap().String())
		field("x-originating-port", strconv.Itoa(int(a.Port())))
	}
	if a := ss.ps.LocalAddr; a.IsValid() {
		field("x-connected-ip", a.Addr().Unmap().String())
		field("x-connected-port", strconv.Itoa(int(a.Port())))
	}
	field("x-session-id", strconv.FormatUint(ss.ps.ID, 10))
	b.raw(")")
	res, err := ss.roundTrip(tag, b.done(), ss.swallow)
	if err != nil {
		return err
	}
	if res.status != "OK" {
		ss.Log.Warn("backend did not accept ID; client address not passed", "status", res.status)
	}
	return nil
}

func (ss *session) nextTag() string {
	ss.tagSeq++
	return "mg" + strconv.Itoa(ss.tagSeq)
}

// readBackend reads one backend response.
func (ss *session) readBackend() (*response, error) {
	res, err := readResponse(ss.Backend.R, ss.rlim)
	if err != nil {
		return nil, backendErr(err)
	}
	return res, nil
}

// send writes a command to the backend. Each literal is announced
// synchronizing and sent after the backend's "+"; untagged responses met
// meanwhile go to onUntagged. If the backend answers the command with its
// tagged result before all of it was sent (refusing a literal), that result
// is returned.
func (ss *session) send(tag string, segs []segment, onUntagged func(*response) error) (*response, error) {
	w := ss.Backend.W
	for _, seg := range segs {
		w.Write(seg.line)
		if !seg.hasLit {
			w.WriteString("\r\n")
			break
		}
		w.WriteString("{" + strconv.Itoa(len(seg.lit)) + "}\r\n")
		if err := w.Flush(); err != nil {
			return nil, backendErr(err)
		}
		for ready := false; !ready; {
			res, err := ss.readBackend()
			if err != nil {
				return nil, err
			}
			switch res.kind {
			case respContinuation:
				ready = true
			case respUntagged:
				if err := onUntagged(res); err != nil {
					return nil, err
				}
			case respTagged:
				if res.tag != tag {
					return nil, backendErr(errUnexpectedTag)
				}
				return res, nil
			}
		}
		w.Write(seg.lit)
	}
	if err := w.Flush(); err != nil {
		return nil, backendErr(err)
	}
	return nil, nil
}

// readResult reads responses up to the tagged result of tag. A continuation
// request is a protocol error here: relaying it would let the client talk to
// the backend unparsed.
func (ss *session) readResult(tag string, onUntagged func(*response) error) (*response, error) {
	for {
		res, err := ss.readBackend()
		if err != nil {
			return nil, err
		}
		switch res.kind {
		case respUntagged:
			if err := onUntagged(res); err != nil {
				return nil, err
			}
		case respContinuation:
			return nil, backendErr(errUnexpectedContinue)
		case respTagged:
			if res.tag != tag {
				return nil, backendErr(errUnexpectedTag)
			}
			return res, nil
		}
	}
}

// roundTrip sends a command and returns its tagged result.
func (ss *session) roundTrip(tag string, segs []segment, onUntagged func(*response) error) (*response, error) {
	res, err := ss.send(tag, segs, onUntagged)
	if err != nil || res != nil {
		return res, err
	}
	return ss.readResult(tag, onUntagged)
}

// forward relays a client command the backend judges, and its result.
func (ss *session) forward(cmd *command) error {
	res, err := ss.roundTrip(cmd.tag, cmd.segs, ss.relayUntagged)
	if err != nil {
		return err
	}
	ss.learnCaps(res)
	ss.outBytes(rewriteResponse(res, ss.clientPolicy()))
	if res.status == "BAD" {
		return ss.countBad()
	}
	return ss.Flush()
}

// relayUntagged passes an untagged response to the client before login.
// Status responses, CAPABILITY (rewritten) and ID are relayed; other data has
// no meaning before login and is dropped (RFC 9051 §11.3, docs/protocols.md §2.5).
func (ss *session) relayUntagged(res *response) error {
	ss.learnCaps(res)
	switch {
	case res.status == "PREAUTH":
		return nil
	case res.status != "", res.keyword == "CAPABILITY":
		ss.outBytes(rewriteResponse(res, ss.clientPolicy()))
		if res.status == "BYE" {
			ss.Told = true
		}
	case res.keyword == "ID":
		ss.outBytes(res.raw)
	default:
		ss.Log.Debug("dropped untagged response before login", "keyword", res.keyword)
	}
	return nil
}

// swallow consumes untagged responses to the handler's own commands.
func (ss *session) swallow(res *response) error {
	ss.learnCaps(res)
	return nil
}

// learnCaps records the backend's capabilities when res carries them.
func (ss *session) learnCaps(res *response) {
	caps, ok := capsOf(res)
	if !ok {
		return
	}
	ss.capNames = caps
	ss.caps = make(map[string]bool, len(caps))
	for _, c := range caps {
		ss.caps[strings.ToUpper(c)] = true
	}
	ss.capsKnown = true
}

// capList returns the backend capabilities as the backend spelled them.
func (ss *session) capList() []string { return ss.capNames }

// backendSASLIR reports whether the backend takes an initial response
// (RFC 4959; built into IMAP4rev2, RFC 9051 §6.2.2).
func (ss *session) backendSASLIR() bool {
	return ss.caps["SASL-IR"] || ss.caps["IMAP4REV2"]
}
