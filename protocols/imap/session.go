package imap

import (
	"context"
	"errors"
	"fmt"

	"github.com/mailgate/mailgate/protocols"
)

// session is the state of one PreAuth call.
type session struct {
	protocols.Dialogue
	h    *Handler
	ps   *protocols.Session
	rlim respLimits

	caps      map[string]bool // backend capabilities last seen, upper-case
	capNames  []string        // the same, as the backend spelled them
	capsKnown bool
	tagSeq    int
	bad       int  // bad commands so far
	preauth   bool // the backend greeted with PREAUTH
}

func newSession(ctx context.Context, h *Handler, s *protocols.Session) *session {
	if h == nil {
		h = &Handler{}
	}
	return &session{
		Dialogue: protocols.NewDialogue(ctx, s, "imap", "protocol", "imap"),
		h:        h,
		ps:       s,
		rlim:     h.opts.respLimits(),
	}
}

// run is the not-authenticated state: greeting, then commands until a login
// succeeds.
func (ss *session) run() error {
	if err := ss.greet(); err != nil {
		return err
	}
	if ss.preauth {
		// Authenticated by the backend, name unknown: the connection leaves
		// the pre-auth state in the registry.
		ss.Observer.Authenticated("", "PREAUTH")
		return ss.FlushBoth()
	}
	return ss.Loop(ss.next)
}

// next reads and handles one client command; done means authenticated.
func (ss *session) next() (done bool, err error) {
	cmd, err := ss.readCommand()
	if err != nil {
		var ce *cmdError
		if errors.As(err, &ce) {
			return false, ss.answer(ce)
		}
		return false, err
	}
	defer cmd.wipe()
	switch cmd.name {
	case "STARTTLS":
		return false, ss.startTLS(cmd)
	case "LOGIN":
		return ss.login(cmd)
	case "AUTHENTICATE":
		return ss.authenticate(cmd)
	case "ID":
		return false, ss.clientID(cmd)
	case "LOGOUT":
		if err := ss.forward(cmd); err != nil {
			return false, err
		}
		ss.Told = true
		return false, fmt.Errorf("imap: %w", protocols.ErrClientQuit)
	case "UNAUTHENTICATE", "COMPRESS":
		// Never valid before login (RFC 8437, RFC 4978) and never wanted
		// from a proxied client: refuse rather than let the backend judge.
		return false, ss.answer(badCommand(cmd.tag, "Command not allowed before authentication"))
	default:
		return false, ss.forward(cmd)
	}
}

// readCommand flushes pending output, then reads one command.
func (ss *session) readCommand() (*command, error) {
	if err := ss.Flush(); err != nil {
		return nil, err
	}
	cr := cmdReader{
		r:        ss.Client.R,
		w:        ss.Client.W,
		maxLine:  ss.Limits.MaxLine,
		maxLit:   ss.Limits.MaxLiteral,
		maxTotal: ss.Limits.MaxLine + 2*ss.Limits.MaxLiteral,
		refuse:   ss.refuseLiteral,
	}
	cmd, err := cr.read()
	if err != nil {
		if _, ok := err.(*cmdError); ok {
			return nil, err
		}
		return nil, clientErr(err)
	}
	return cmd, nil
}

// refuseLiteral refuses, before the "+" go-ahead, commands that can never
// take a literal here.
func (ss *session) refuseLiteral(tag, name string) *cmdError {
	switch name {
	case "LOGIN":
		if ss.loginDisabled() {
			return &cmdError{tag: tag, status: "NO", text: privacyRequired}
		}
	case "AUTHENTICATE", "STARTTLS", "CAPABILITY", "NOOP", "LOGOUT":
		return badCommand(tag, "Unexpected literal")
	}
	return nil
}

const privacyRequired = "[PRIVACYREQUIRED] Plaintext authentication is disabled, use STARTTLS first"

// loginDisabled reports whether cleartext login is refused right now.
func (ss *session) loginDisabled() bool { return policyFor(ss.ps).loginDisabled }

// clientPolicy is the capability policy for the client link before login.
func (ss *session) clientPolicy() capPolicy {
	if ss.preauth {
		return capPolicy{}
	}
	return policyFor(ss.ps)
}

// policyFor is the capability policy for the not-authenticated client link
// of s.
func policyFor(s *protocols.Session) capPolicy {
	return capPolicy{
		offerStartTLS: !s.ClientTLS && s.ClientStartTLS != nil,
		loginDisabled: s.RequireTLSForLogin && !s.ClientTLS,
	}
}

// answer sends the reply for a command the handler refuses itself.
func (ss *session) answer(ce *cmdError) error {
	tag := ce.tag
	if tag == "" {
		tag = "*"
	}
	ss.out(tag + " " + ce.status + " " + ce.text + "\r\n")
	if ce.bye != "" {
		ss.out("* BYE " + ce.bye + "\r\n")
		ss.Told = true
		if err := ss.Flush(); err != nil {
			return err
		}
		return fmt.Errorf("imap: %w", protocols.ErrClientProtocol)
	}
	if ce.counts {
		return ss.countBad()
	}
	return ss.Flush()
}

// reply sends a tagged reply and flushes.
func (ss *session) reply(tag, status, text string) error {
	ss.out(tag + " " + status + " " + text + "\r\n")
	return ss.Flush()
}

// countBad counts a command answered with BAD and ends the session at the
// limit.
func (ss *session) countBad() error {
	ss.bad++
	if ss.bad < ss.Limits.MaxBadCommands {
		return ss.Flush()
	}
	ss.out("* BYE Too many invalid commands\r\n")
	ss.Told = true
	if err := ss.Flush(); err != nil {
		return err
	}
	ss.Log.Info("too many invalid commands", "outcome", "closed")
	return fmt.Errorf("imap: %w", protocols.ErrTooManyBadCommands)
}

// out queues bytes for the client; errors surface at the next flush.
func (ss *session) out(s string) { ss.Client.W.WriteString(s) }

func (ss *session) outBytes(b []byte) { ss.Client.W.Write(b) }

// farewell is what the client is told when the session fails before login.
var farewell = protocols.Farewell{
	Timeout: "* BYE Login timeout",
	Backend: "* BYE [UNAVAILABLE] Internal server error, try again later",
}

// clientErr wraps an I/O error on the client side; a closed connection is the
// client going away.
func clientErr(err error) error { return protocols.ClientError("imap", err) }

// backendErr wraps any backend-side failure in protocols.ErrBackend.
func backendErr(err error) error { return protocols.BackendError("imap", err) }
