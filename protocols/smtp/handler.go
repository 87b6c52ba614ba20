package smtp

import (
	"context"
	"io"
	"os"

	"github.com/mailgate/mailgate/protocols"
)

// Roles a Handler serves (Options.Role).
const (
	RoleSubmission  = "submission"  // port 587: STARTTLS, AUTH expected (RFC 6409)
	RoleSubmissions = "submissions" // port 465: implicit TLS by the proxy (RFC 8314 §3.3)
	RoleMX          = "mx"          // port 25: no login; relayed blindly from MAIL on
)

// Limits of SMTP itself; Session.Limits.MaxLine and MaxBadCommands are IMAP
// shaped (8192, 3) and do not apply here.
const (
	maxCommandLine = 512   // RFC 5321 §4.5.3.1.4, CRLF included
	maxAuthLine    = 12288 // RFC 4954 §4, CRLF included
)

// Options tune the handler. The zero value is ready to use; every zero field
// takes the default stated next to it.
type Options struct {
	// Role is RoleSubmission, RoleSubmissions or RoleMX. Default (and for
	// any other value) RoleSubmission.
	Role string
	// Hostname names the proxy in 421 replies and is the EHLO argument the
	// handler uses toward the backend for STARTTLS. Default os.Hostname(),
	// or "localhost".
	Hostname string
	// MaxBadCommands is how many rejected commands end the session with
	// 421. Default 10 (Dovecot submission-login).
	MaxBadCommands int
	// MaxReplyLine bounds one backend reply line, CRLF included. Default
	// 4096 (RFC 5321 §4.5.3.1.5 asks for 512; real servers stay below).
	MaxReplyLine int
	// MaxReplyLines bounds the lines of one backend reply. Default 128.
	MaxReplyLines int
	// MaxSASLRounds bounds the backend challenges relayed in one AUTH
	// exchange (SCRAM needs 2). Default 8.
	MaxSASLRounds int
}

func (o Options) role() string {
	switch o.Role {
	case RoleMX, RoleSubmissions:
		return o.Role
	}
	return RoleSubmission
}

func (o Options) hostname() string {
	if o.Hostname != "" {
		return o.Hostname
	}
	if h, err := os.Hostname(); err == nil && h != "" {
		return h
	}
	return "localhost"
}

func (o Options) badCommands() int {
	if o.MaxBadCommands <= 0 {
		return 10
	}
	return o.MaxBadCommands
}

func (o Options) replyLimits() replyLimits {
	l := replyLimits{line: o.MaxReplyLine, lines: o.MaxReplyLines}
	if l.line <= 0 {
		l.line = 4096
	}
	if l.lines <= 0 {
		l.lines = 128
	}
	return l
}

func (o Options) saslRounds() int {
	if o.MaxSASLRounds <= 0 {
		return 8
	}
	return o.MaxSASLRounds
}

// Handler is the SMTP protocols.Handler. The zero value is usable (role
// submission, default options). A Handler holds no per-session state and is
// safe for concurrent use.
type Handler struct {
	opts Options
	host string
}

var _ protocols.Handler = (*Handler)(nil)

// New returns a Handler with the given options.
func New(opts Options) *Handler {
	return &Handler{opts: opts, host: opts.hostname()}
}

// Protocol returns "smtp", the accounting key of every role.
func (h *Handler) Protocol() string { return "smtp" }

// Role returns the role the handler serves.
func (h *Handler) Role() string { return h.opts.role() }

func (h *Handler) hostname() string {
	if h.host == "" {
		return h.opts.hostname()
	}
	return h.host
}

// PreAuth runs one connection up to a successful AUTH (or, on the mx role,
// up to the first mail command); see the package documentation. On nil the
// commands the client pipelined behind that point are still unread in
// s.Client.R. Errors wrap the protocols.Err* values where one applies, or the
// context's error on cancellation. Read and write deadlines on both
// connections are cleared on return.
func (h *Handler) PreAuth(ctx context.Context, s *protocols.Session) error {
	if h == nil {
		h = &Handler{}
	}
	ss := newSession(ctx, h, s)
	defer ss.Finish()
	if err := ss.run(); err != nil {
		return ss.Fail(err, ss.farewell())
	}
	return nil
}

// Refuse writes a connect-time refusal in place of the greeting: 421 makes
// the client (or the sending MTA, on port 25) try again later (RFC 5321
// §3.1, §3.8).
func (h *Handler) Refuse(w io.Writer, reason string) {
	var text string
	switch reason {
	case protocols.RefuseBlocked:
		text = "Service not available, access denied"
	case protocols.RefuseLimit:
		text = "Service not available, too many connections"
	case protocols.RefuseShutdown:
		text = "Service not available, server shutting down"
	default:
		text = "Service not available, closing transmission channel"
	}
	protocols.WriteFlush(w, "421 4.7.0 "+h.hostname()+" "+text+"\r\n")
}

// Goodbye writes the 421 an established session gets before the proxy
// closes it (RFC 5321 §3.8: a server may close after a 421 at any time).
func (h *Handler) Goodbye(w io.Writer, reason string) {
	var line string
	switch reason {
	case protocols.ByeDropped:
		line = "421 4.7.0 " + h.hostname() + " Connection closed by administrator"
	case protocols.ByeShutdown:
		line = "421 4.7.0 " + h.hostname() + " Server shutting down"
	case protocols.ByeTimeout:
		line = "421 4.4.2 " + h.hostname() + " Idle timeout, closing transmission channel"
	default:
		line = "421 4.7.0 " + h.hostname() + " Closing transmission channel"
	}
	protocols.WriteFlush(w, line+"\r\n")
}
