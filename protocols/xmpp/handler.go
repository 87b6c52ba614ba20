package xmpp

import (
	"context"
	"io"

	"github.com/mailgate/mailgate/protocols"
)

// Options tune the handler. The zero value is ready to use; every zero field
// takes the default stated next to it.
type Options struct {
	// DefaultDomain is the domain assumed when a client's stream header has
	// no 'to' (RFC 6120 §4.7.2). Default "": such a stream is refused with
	// <host-unknown/>, since the domain is needed to name the user.
	DefaultDomain string
	// MaxStanzaSize bounds a stream header or one first-level element
	// before login, from either side, in bytes. Default 65536.
	MaxStanzaSize int
	// MaxPreAuthBytes bounds everything read before login, from each side
	// separately, in bytes. Default 262144.
	MaxPreAuthBytes int
	// MaxDepth bounds element nesting, the stream root included. Default 32.
	MaxDepth int
	// MaxSASLRounds bounds the backend challenges relayed in one SASL
	// exchange (SCRAM needs 1). Default 8.
	MaxSASLRounds int
	// MaxAuthFailures is the number of failed authentications (refused by
	// the backend or by the gate) after which the stream is closed with
	// <policy-violation/> (RFC 6120 §6.4.5). Default 5.
	MaxAuthFailures int
}

func (o Options) withDefaults() Options {
	def := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&o.MaxStanzaSize, 65536)
	def(&o.MaxPreAuthBytes, 262144)
	def(&o.MaxDepth, 32)
	def(&o.MaxSASLRounds, 8)
	def(&o.MaxAuthFailures, 5)
	if o.MaxPreAuthBytes < o.MaxStanzaSize {
		o.MaxPreAuthBytes = o.MaxStanzaSize
	}
	return o
}

func (o Options) limits() limits {
	return limits{total: o.MaxPreAuthBytes, unit: o.MaxStanzaSize, depth: o.MaxDepth}
}

// Handler is the XMPP client-to-server protocols.Handler. The zero value is
// usable and has default Options. A Handler holds no per-session state and
// is safe for concurrent use.
type Handler struct {
	opts Options
}

var _ protocols.Handler = (*Handler)(nil)

// New returns a Handler with the given options.
func New(opts Options) *Handler { return &Handler{opts: opts} }

// Protocol returns "xmpp".
func (h *Handler) Protocol() string { return "xmpp" }

// PreAuth runs stream negotiation up to a successful SASL authentication and
// the client's stream restart; see the package documentation. It returns nil
// when the backend accepted the login, the client's new stream header was
// forwarded to it and its answer (header and post-login features) to the
// client: whatever either side sent next is still unread in
// s.Client.R and s.Backend.R. Errors wrap the protocols.Err* values where one
// applies, or the context's error on cancellation. Read and write deadlines
// on both connections are cleared on return.
func (h *Handler) PreAuth(ctx context.Context, s *protocols.Session) error {
	if h == nil {
		h = &Handler{}
	}
	ss := newSession(ctx, h, s)
	defer ss.Finish()
	if err := ss.run(); err != nil {
		return ss.fail(err)
	}
	return nil
}

// Refuse writes a connect-time refusal: the stream header (the server may
// speak first, RFC 6120 §4.9.1.2), a stream error and the closing tag.
// Blocked and over-limit clients get <policy-violation/>, a draining proxy
// <system-shutdown/>, an unreachable backend <remote-connection-failed/>.
func (h *Handler) Refuse(w io.Writer, reason string) {
	var cond, text string
	switch reason {
	case protocols.RefuseBlocked:
		cond, text = "policy-violation", "Access denied"
	case protocols.RefuseLimit:
		cond, text = "policy-violation", "Too many connections, try again later"
	case protocols.RefuseShutdown:
		cond, text = "system-shutdown", "Server shutting down"
	default:
		cond, text = "remote-connection-failed", "Service temporarily unavailable, try again later"
	}
	protocols.WriteFlush(w, headerToClient("", newStreamID(), "")+streamError(cond, text)+streamClose)
}

// Goodbye ends an established stream, whose header the client has already
// read: an administrator's drop is <reset/> (RFC 6120 §4.9.3.19: the client
// reconnects and negotiates again, meeting the gate), a shutdown
// <system-shutdown/>, a timeout <connection-timeout/>.
func (h *Handler) Goodbye(w io.Writer, reason string) {
	var cond, text string
	switch reason {
	case protocols.ByeShutdown:
		cond, text = "system-shutdown", "Server shutting down"
	case protocols.ByeTimeout:
		cond, text = "connection-timeout", "Idle for too long"
	default:
		cond, text = "reset", "Connection closed by administrator"
	}
	protocols.WriteFlush(w, streamError(cond, text)+streamClose)
}
