package smtp

import (
	"context"
	"fmt"

	"github.com/mailgate/mailgate/protocols"
)

// session is the state of one PreAuth call.
type session struct {
	protocols.Dialogue
	h    *Handler
	ps   *protocols.Session
	role string
	host string
	rlim replyLimits

	helo        string   // the client's HELO/EHLO name since the last STARTTLS; "" before
	esmtp       bool     // that greeting was EHLO
	ehlo        ehloInfo // the backend's answer to the client's last EHLO
	xclientDone bool     // the client address was passed (or could not be)
	bad         int      // rejected commands so far
	maxBad      int
}

func newSession(ctx context.Context, h *Handler, s *protocols.Session) *session {
	role := h.opts.role()
	ss := &session{
		Dialogue: protocols.NewDialogue(ctx, s, "smtp", "protocol", "smtp", "role", role),
		h:        h,
		ps:       s,
		role:     role,
		host:     h.hostname(),
		rlim:     h.opts.replyLimits(),
		maxBad:   h.opts.badCommands(),
	}
	if v := s.ClientAddrVia; v != "" && v != "xclient" {
		ss.Log.Warn("client address method not available for SMTP; not passed", "client_address", v)
	}
	return ss
}

// run is the session before login: greeting, then commands until a login
// succeeds (or, on the mx role, mail starts).
func (ss *session) run() error {
	if err := ss.greet(); err != nil {
		return err
	}
	return ss.Loop(ss.next)
}

// next reads and handles one client command; done means relay from now on.
func (ss *session) next() (done bool, err error) {
	line, err := ss.readClientLine(maxAuthLine)
	if err != nil {
		if le, ok := protocols.AsLongLine(err); ok {
			if verbOf(le.Head) == "AUTH" {
				return false, ss.reject(500, "5.5.6", "Authentication Exchange line is too long")
			}
			return false, ss.reject(500, "5.5.2", "Error: line too long")
		}
		return false, err
	}
	defer clear(line) // an AUTH initial response is a credential
	cmd, ok := parseCommand(line)
	switch {
	case !ok, cmd.verb == "":
		return false, ss.reject(500, "5.5.2", "Error: bad syntax")
	case len(line)+2 > maxCommandLine && cmd.verb != "AUTH":
		return false, ss.reject(500, "5.5.2", "Error: line too long")
	}
	switch cmd.verb {
	case "EHLO", "HELO":
		return false, ss.hello(cmd)
	case "STARTTLS":
		return false, ss.startTLS(cmd)
	case "AUTH":
		return ss.auth(cmd)
	case "NOOP", "RSET":
		return false, ss.forward(cmd)
	case "QUIT":
		return false, ss.quit(cmd)
	}
	if !mailVerbs[cmd.verb] {
		// Unknown, XCLIENT, XFORWARD...: never forwarded before login.
		return false, ss.reject(502, "5.5.1", "Error: command not implemented")
	}
	if ss.role != RoleMX {
		return false, ss.reject(530, "5.7.0", "Authentication required")
	}
	if ss.helo == "" {
		return false, ss.reject(503, "5.5.1", "Error: send HELO/EHLO first")
	}
	// Port 25: mail from here on, relayed blindly, the connection stays
	// unauthenticated.
	ss.toBackend(cmd.line)
	ss.Log.Info("relaying without login", "command", knownVerb(cmd.verb))
	return true, nil
}

// verbOf returns the upper-cased verb at the start of a line head.
func verbOf(head []byte) string {
	cmd, _ := parseCommand(protocols.TrimEOL(head))
	return cmd.verb
}

// readClientLine flushes pending output, then reads one client line.
func (ss *session) readClientLine(max int) ([]byte, error) {
	if err := ss.Flush(); err != nil {
		return nil, err
	}
	line, err := readLine(ss.Client.R, max)
	if err != nil {
		if _, ok := protocols.AsLongLine(err); ok {
			return nil, err
		}
		return nil, clientErr(err)
	}
	return line, nil
}

// quit forwards QUIT and relays the backend's 221; the session is over.
func (ss *session) quit(cmd command) error {
	rep, err := ss.roundTrip(cmd.line)
	if err != nil {
		rep = newReply(221, "2.0.0 "+ss.host+" Bye")
	}
	ss.outReply(rep)
	ss.Told = true
	if err := ss.Flush(); err != nil {
		return err
	}
	return fmt.Errorf("smtp: %w", protocols.ErrClientQuit)
}

// reject answers a command the handler refuses itself and counts it.
func (ss *session) reject(code int, enhanced, text string) error {
	ss.outReply(newReply(code, enhanced+" "+text))
	return ss.countBad()
}

// countBad counts a rejected command and ends the session at the limit.
func (ss *session) countBad() error {
	ss.bad++
	if ss.bad < ss.maxBad {
		return ss.Flush()
	}
	ss.outReply(newReply(421, "4.7.0 "+ss.host+" Error: too many errors"))
	ss.Told = true
	if err := ss.Flush(); err != nil {
		return err
	}
	ss.Log.Info("too many invalid commands", "outcome", "closed")
	return fmt.Errorf("smtp: %w", protocols.ErrTooManyBadCommands)
}

// countable reports backend replies that mean the command was bad
// (RFC 5321 §4.2.2: 500-504 syntax, not implemented, bad sequence).
func countable(r *reply) bool { return r.code >= 500 && r.code <= 504 }

// outReply queues a reply for the client; errors surface at the next flush.
func (ss *session) outReply(r *reply) { ss.Client.W.Write(r.bytes()) }

// farewell is what the client is told when the session fails before login.
func (ss *session) farewell() protocols.Farewell {
	return protocols.Farewell{
		Timeout: "421 4.4.2 " + ss.host + " Error: timeout exceeded",
		Backend: "421 4.7.0 " + ss.host + " Service not available, closing transmission channel",
	}
}

// clientErr wraps an I/O error on the client side; a closed connection is the
// client going away.
func clientErr(err error) error { return protocols.ClientError("smtp", err) }

// backendErr wraps any backend-side failure in protocols.ErrBackend.
func backendErr(err error) error { return protocols.BackendError("smtp", err) }
