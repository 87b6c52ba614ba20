package pop3

import (
	"context"
	"io"

	"github.com/mailgate/mailgate/protocols"
)

// Options tune the handler. The zero value is ready to use; every zero field
// takes the default stated next to it.
type Options struct {
	// MaxCommandLine bounds a command line with its CRLF, except AUTH lines
	// (see the package documentation). Default 255 (RFC 2449 §4).
	// Session.Limits.MaxLine lowers it further when smaller.
	MaxCommandLine int
	// MaxPreAuthBytes bounds everything the client sends before login.
	// Default 65536.
	MaxPreAuthBytes int
	// MaxResponseLine bounds one backend response line before login.
	// Default 4096 (RFC 2449 §4 keeps first lines under 512).
	MaxResponseLine int
	// MaxResponseBytes bounds a whole multi-line backend response (CAPA, the
	// AUTH mechanism list). Default 65536.
	MaxResponseBytes int
	// MaxSASLRounds bounds the backend challenges relayed in one AUTH
	// exchange (SCRAM needs 2). Default 8.
	MaxSASLRounds int
}

// resolved are the options with defaults applied.
type resolved struct {
	cmdLine    int
	preAuth    int
	respLine   int
	respTotal  int
	saslRounds int
}

func (o Options) resolve() resolved {
	r := resolved{
		cmdLine:    o.MaxCommandLine,
		preAuth:    o.MaxPreAuthBytes,
		respLine:   o.MaxResponseLine,
		respTotal:  o.MaxResponseBytes,
		saslRounds: o.MaxSASLRounds,
	}
	if r.cmdLine <= 0 {
		r.cmdLine = 255
	}
	if r.preAuth <= 0 {
		r.preAuth = 65536
	}
	if r.respLine <= 0 {
		r.respLine = 4096
	}
	if r.respTotal <= 0 {
		r.respTotal = 65536
	}
	if r.saslRounds <= 0 {
		r.saslRounds = 8
	}
	return r
}

// Handler is the POP3 protocols.Handler. The zero value is usable and has
// default Options. A Handler holds no per-session state and is safe for
// concurrent use.
type Handler struct {
	opts Options
}

var _ protocols.Handler = (*Handler)(nil)

// New returns a Handler with the given options.
func New(opts Options) *Handler { return &Handler{opts: opts} }

// Protocol returns "pop", the accounting key.
func (h *Handler) Protocol() string { return "pop" }

// PreAuth runs the AUTHORIZATION state of one connection; see the package
// documentation. It returns nil when the backend accepted a login; any
// command the client pipelined behind it is then still unread in
// s.Client.R. Errors wrap the protocols.Err* values where one applies, or
// the context's error on cancellation. Read and write deadlines on both
// connections are cleared on return.
func (h *Handler) PreAuth(ctx context.Context, s *protocols.Session) error {
	ss := newSession(ctx, h, s)
	defer ss.finish()
	if err := ss.run(); err != nil {
		return ss.fail(err)
	}
	return nil
}

// Refuse writes a connect-time refusal in place of the greeting. RFC 1939
// defines only positive greetings; a negative one followed by a close is
// what Dovecot sends, and clients report its text (docs/protocols.md §3.5).
func (h *Handler) Refuse(w io.Writer, reason string) { refusals.WriteFlush(w, reason) }

var refusals = protocols.Lines{
	protocols.RefuseBlocked:  "-ERR Access denied",
	protocols.RefuseLimit:    "-ERR [SYS/TEMP] Too many connections, try again later",
	protocols.RefuseShutdown: "-ERR [SYS/TEMP] Server shutting down",
	"":                       "-ERR [SYS/TEMP] Service temporarily unavailable",
}

// Goodbye writes the -ERR an established session gets before the proxy
// closes it.
func (h *Handler) Goodbye(w io.Writer, reason string) { goodbyes.WriteFlush(w, reason) }

var goodbyes = protocols.Lines{
	protocols.ByeDropped:  "-ERR Connection closed by administrator",
	protocols.ByeShutdown: "-ERR [SYS/TEMP] Server shutting down",
	protocols.ByeTimeout:  "-ERR Autologout; idle for too long",
	"":                    "-ERR Connection closed",
}
