package imap

import (
	"bytes"
	"context"
	"io"
	"net/netip"
	"sync/atomic"

	"github.com/mailgate/mailgate/protocols"
)

// Options tune the handler. The zero value is ready to use; every zero field
// takes the default stated next to it.
type Options struct {
	// MaxResponseLine bounds one backend response line before login.
	// Default 65536.
	MaxResponseLine int
	// MaxResponseLiteral bounds a literal in a backend response before login,
	// and a whole multi-line response to four times that. Default 65536.
	MaxResponseLiteral int
	// MaxSASLRounds bounds the backend challenges relayed in one
	// AUTHENTICATE exchange (SCRAM needs 2). Default 8.
	MaxSASLRounds int
}

func (o Options) respLimits() respLimits {
	l := respLimits{line: o.MaxResponseLine, literal: o.MaxResponseLiteral}
	if l.line <= 0 {
		l.line = 65536
	}
	if l.literal <= 0 {
		l.literal = 65536
	}
	l.total = 4 * l.literal
	return l
}

func (o Options) saslRounds() int {
	if o.MaxSASLRounds <= 0 {
		return 8
	}
	return o.MaxSASLRounds
}

// Handler is the IMAP protocols.Handler. The zero value is usable and has
// default Options. A Handler holds no per-session state and is safe for
// concurrent use.
type Handler struct {
	opts Options
	// greeting is the backend's last OK greeting (after backend STARTTLS,
	// with the capabilities of the secured link), for EarlyGreeting.
	greeting atomic.Pointer[greetingSeen]
}

// greetingSeen is a backend greeting and whether it may be sent early.
type greetingSeen struct {
	res  *response
	from netip.Addr // the client of the connection that first saw it
	// confirmed: seen again, identical, on another connection (from another
	// client when the backend knows who the client is).
	confirmed bool
}

var _ protocols.Handler = (*Handler)(nil)

// New returns a Handler with the given options.
func New(opts Options) *Handler { return &Handler{opts: opts} }

// Protocol returns "imap".
func (h *Handler) Protocol() string { return "imap" }

// PreAuth runs the not-authenticated state of one connection; see the
// package documentation. It returns nil when the backend accepted a login (or
// greeted with PREAUTH); any command the client pipelined behind the login is
// then still unread in s.Client.R. Errors wrap the protocols.Err* values where
// one applies, or the context's error on cancellation. Read and write
// deadlines on both connections are cleared on return.
func (h *Handler) PreAuth(ctx context.Context, s *protocols.Session) error {
	ss := newSession(ctx, h, s)
	defer ss.Finish()
	if err := ss.run(); err != nil {
		return ss.Fail(err, farewell)
	}
	return nil
}

// EarlyGreeting returns the backend's OK greeting with the capability
// policy of s applied (see protocols.EarlyGreeter), once the backend has
// sent the same greeting on two connections; nil before that, after a
// greeting that changed, or after a PREAUTH greeting. A greeting that
// changes from one connection to the next (a session number, a time) is
// thus not replayed to another client; where the backend knows the client
// before it greets (a PROXY header), the two connections must come from two
// client addresses, so that a greeting naming its client never reaches
// another. The capabilities a client reads there are the backend's
// pre-login ones; the ones that matter after login come from the backend.
func (h *Handler) EarlyGreeting(s *protocols.Session) []byte {
	g := h.greeting.Load()
	if g == nil || !g.confirmed {
		return nil
	}
	return rewriteResponse(g.res, policyFor(s))
}

// remember records the OK greeting g, which the backend sent on the
// connection of s, for EarlyGreeting; a greeting equal to the confirmed one
// costs a comparison.
func (h *Handler) remember(g *response, s *protocols.Session) {
	client := s.ClientAddr.Addr().Unmap()
	old := h.greeting.Load()
	if old != nil && bytes.Equal(old.res.raw, g.raw) {
		if !old.confirmed && (!s.BackendKnowsClient || client != old.from) {
			h.greeting.Store(&greetingSeen{res: old.res, from: old.from, confirmed: true})
		}
		return
	}
	if len(g.raw) != len(g.line)+2 {
		h.greeting.Store(nil) // a literal in a greeting: not worth predicting
		return
	}
	raw := bytes.Clone(g.raw)
	c, err := parseResponseLine(raw[:len(g.line)])
	if err != nil {
		h.greeting.Store(nil)
		return
	}
	c.raw = raw
	h.greeting.Store(&greetingSeen{res: c, from: client})
}

// Refuse writes a connect-time refusal as the greeting (RFC 9051 §7.1.5:
// the server closes right after a BYE greeting).
func (h *Handler) Refuse(w io.Writer, reason string) { refusals.WriteFlush(w, reason) }

var refusals = protocols.Lines{
	protocols.RefuseBlocked:  "* BYE Access denied",
	protocols.RefuseLimit:    "* BYE [UNAVAILABLE] Too many connections, try again later",
	protocols.RefuseShutdown: "* BYE [UNAVAILABLE] Server shutting down",
	"":                       "* BYE [UNAVAILABLE] Service temporarily unavailable",
}

// Goodbye writes the untagged BYE an established session gets before the
// proxy closes it.
func (h *Handler) Goodbye(w io.Writer, reason string) { goodbyes.WriteFlush(w, reason) }

var goodbyes = protocols.Lines{
	protocols.ByeDropped:  "* BYE Connection closed by administrator",
	protocols.ByeShutdown: "* BYE [UNAVAILABLE] Server shutting down",
	protocols.ByeTimeout:  "* BYE Autologout; idle for too long",
	"":                    "* BYE Connection closed",
}
