package protocols

// Scaffolding shared by the stream handlers' PreAuth (imap, pop3, smtp,
// xmpp): the state of one PreAuth call, the login deadline and its context
// watcher, error classification and the defaults for a Session without an
// Observer or a Gate.

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"time"
)

// Dialogue is the state of one PreAuth call that every stream protocol keeps
// alike. A protocol package embeds it in its own session state; what the
// client is told stays in the protocol's words, passed in by the package.
type Dialogue struct {
	Proto    string // prefixes the errors: "imap", "pop3", "smtp", "xmpp"
	Ctx      context.Context
	Log      *slog.Logger // Session.Log with the session's attributes
	Limits   Limits       // Session.Limits with defaults
	Observer Observer     // never nil
	Gate     Gate         // never nil

	Client, Backend *Conn
	// RawClient and RawBackend are the connections as handed over. Deadlines
	// are set on them: a tls.Conn built on top forwards its deadlines there,
	// and they never change, so the context watcher may use them safely.
	RawClient, RawBackend net.Conn

	// Told is set once the client got its last line (or cannot be written
	// to): Final adds none after it.
	Told bool

	stop func() // WatchContext's
}

// FinalWriteTimeout bounds the last writes after a timeout or failure.
const FinalWriteTimeout = 5 * time.Second

// NewDialogue starts the pre-auth phase of s for the protocol proto: the
// login timeout runs from now on (WatchContext), until Finish. Every log
// line carries "session" and then logAttrs.
func NewDialogue(ctx context.Context, s *Session, proto string, logAttrs ...any) Dialogue {
	log := s.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	d := Dialogue{
		Proto:      proto,
		Ctx:        ctx,
		Log:        log.With(append([]any{"session", s.ID}, logAttrs...)...),
		Limits:     s.Limits.WithDefaults(),
		Observer:   s.Observer,
		Gate:       s.Gate,
		Client:     s.Client,
		Backend:    s.Backend,
		RawClient:  s.Client.Conn,
		RawBackend: s.Backend.Conn,
	}
	if d.Observer == nil {
		d.Observer = NopObserver{}
	}
	if d.Gate == nil {
		d.Gate = AllowAll{}
	}
	d.stop = WatchContext(ctx, d.RawClient, d.RawBackend, d.Limits.LoginTimeout)
	return d
}

// Finish stops the context watcher and clears the deadlines.
func (d *Dialogue) Finish() { d.stop() }

// Flush sends what is pending for the client.
func (d *Dialogue) Flush() error {
	if err := d.Client.W.Flush(); err != nil {
		return ClientError(d.Proto, err)
	}
	return nil
}

// FlushBoth sends what is pending for the client, then for the backend: the
// last step of a successful PreAuth.
func (d *Dialogue) FlushBoth() error {
	if err := d.Flush(); err != nil {
		return err
	}
	if err := d.Backend.W.Flush(); err != nil {
		return BackendError(d.Proto, err)
	}
	return nil
}

// Loop calls next, which handles one client command, until it fails or
// reports the session authenticated; then it sends what is pending on both
// sides.
func (d *Dialogue) Loop(next func() (done bool, err error)) error {
	for {
		done, err := next()
		if err != nil {
			return err
		}
		if done {
			return d.FlushBoth()
		}
	}
}

// Farewell holds the last line a client is sent when its session fails
// before login, by cause, without CRLF.
type Farewell struct {
	Timeout string // the login timeout expired
	Backend string // the backend failed (ErrBackend)
}

// Fail turns the error that ended the session into what PreAuth returns,
// telling the client why with f's line where it has not been told yet. A
// cancelled context is the proxy's business: it says goodbye itself once
// PreAuth returned.
func (d *Dialogue) Fail(err error, f Farewell) error {
	if d.Ctx.Err() != nil {
		d.Log.Debug("pre-auth cancelled")
		return fmt.Errorf("%s: %w", d.Proto, context.Cause(d.Ctx))
	}
	switch {
	case IsTimeout(err):
		d.Final(f.Timeout)
		d.Log.Info("login timeout", "outcome", "timeout")
		return fmt.Errorf("%s: %w", d.Proto, ErrLoginTimeout)
	case errors.Is(err, ErrBackend):
		d.Final(f.Backend)
		d.Log.Warn("backend failure before login", "err", err)
	default:
		d.Final("")
		d.Log.Debug("pre-auth ended", "err", err)
	}
	return err
}

// Final flushes what is pending for the client (a relayed BYE, say) and
// adds line and CRLF unless the client was told already or line is empty.
// It uses a fresh short write deadline: the login deadline may have passed.
func (d *Dialogue) Final(line string) {
	d.RawClient.SetWriteDeadline(time.Now().Add(FinalWriteTimeout))
	if !d.Told && line != "" {
		d.Told = true
		d.Client.W.WriteString(line + "\r\n")
	}
	d.Client.W.Flush()
}

// CheckLogin reports the user to the observer and asks the gate, for the
// authorization identity too when the client asked to act as someone else
// (the mailbox opened would be that one's). It returns a Deny* code.
func (d *Dialogue) CheckLogin(user, authzid, mech string) string {
	d.Observer.AuthAttempt(user, mech)
	code := d.Gate.CheckLogin(user)
	if code == DenyNone && authzid != "" {
		code = d.Gate.CheckLogin(authzid)
	}
	if code != DenyNone {
		d.Log.Info("login refused by policy", "user", user, "mechanism", mech, "outcome", "denied", "reason", code)
	}
	return code
}

// UpgradeClient switches the client's link to TLS once the protocol's
// go-ahead was written (Conn.StartTLSServer: what the client pipelined in
// the clear is thrown away, CVE-2011-0411) and logs what was thrown away,
// never its content: at WARN when it held more than whitespace, which is an
// injection attempt or a broken client, either worth an operator's look; at
// Debug for whitespace alone, which XMPP allows between elements and some
// clients write after a command. verb names the command in the log line.
func (d *Dialogue) UpgradeClient(cfg *tls.Config, verb string) error {
	pending, _ := d.Client.R.Peek(d.Client.R.Buffered())
	blank := isBlank(pending)
	discarded, err := d.Client.StartTLSServer(cfg)
	switch {
	case discarded > 0 && blank:
		d.Log.Debug("whitespace pipelined after "+verb+" discarded", "bytes", discarded)
	case discarded > 0:
		d.Log.Warn("plaintext pipelined after "+verb+" discarded", "bytes", discarded)
	}
	return err
}

// isBlank reports whether b is only spaces, tabs, CRs and LFs.
func isBlank(b []byte) bool {
	for _, c := range b {
		if c != ' ' && c != '\t' && c != '\r' && c != '\n' {
			return false
		}
	}
	return true
}

// LoginLost records a login whose verdict never came (the backend closed,
// failed or broke the protocol): a backend problem, not a wrong password.
func (d *Dialogue) LoginLost(user, mech string) {
	d.Observer.AuthFailed(user, mech, true)
	d.Log.Info("login", "user", user, "mechanism", mech, "outcome", "tempfail")
}

// WatchContext bounds a pre-auth phase. It sets a deadline of now+timeout on
// both connections and, should ctx be cancelled before stop is called, moves
// both deadlines to the past so that every blocked read and write returns at
// once.
//
// client and backend must be the connections as handed over (Session.Client.Conn
// and Session.Backend.Conn at the start of PreAuth), not a tls.Conn built on
// them later: a tls.Conn forwards its deadlines to the connection beneath,
// and these never change, so the watcher may use them safely from its own
// goroutine.
//
// stop stops the watcher and clears both deadlines. Once stop has returned,
// the watcher no longer touches the connections, even if ctx is cancelled
// while stop runs. Call it exactly once, when PreAuth returns.
func WatchContext(ctx context.Context, client, backend net.Conn, timeout time.Duration) (stop func()) {
	var (
		mu       sync.Mutex // guards finished against the watcher
		finished bool
	)
	deadline := time.Now().Add(timeout)
	client.SetDeadline(deadline)
	backend.SetDeadline(deadline)
	stopWatch := context.AfterFunc(ctx, func() {
		mu.Lock()
		defer mu.Unlock()
		if !finished {
			past := time.Unix(1, 0)
			client.SetDeadline(past)
			backend.SetDeadline(past)
		}
	})
	return func() {
		stopWatch()
		mu.Lock()
		defer mu.Unlock()
		finished = true
		client.SetDeadline(time.Time{})
		backend.SetDeadline(time.Time{})
	}
}

// WithDefaults returns l with every zero or negative field replaced by the
// one of DefaultLimits.
func (l Limits) WithDefaults() Limits {
	def := DefaultLimits
	if l.MaxLine <= 0 {
		l.MaxLine = def.MaxLine
	}
	if l.MaxBadCommands <= 0 {
		l.MaxBadCommands = def.MaxBadCommands
	}
	if l.LoginTimeout <= 0 {
		l.LoginTimeout = def.LoginTimeout
	}
	if l.MaxLiteral <= 0 {
		l.MaxLiteral = def.MaxLiteral
	}
	return l
}

// IsTimeout reports whether err is a deadline expiring (the login timeout,
// or a cancellation made visible by WatchContext).
func IsTimeout(err error) bool {
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// ClientError wraps an I/O error on the client side for the protocol named
// proto ("imap", "pop3", ...): a closed connection (io.EOF,
// io.ErrUnexpectedEOF) is the client going away and wraps ErrClientQuit, as
// "proto: client ended the session before login: EOF"; anything else reads
// "proto: client: err".
func ClientError(proto string, err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("%s: %w: %w", proto, ErrClientQuit, err)
	}
	return fmt.Errorf("%s: client: %w", proto, err)
}

// BackendError wraps any backend-side failure of the protocol named proto in
// ErrBackend, as "proto: backend failure: err". An error that already wraps
// ErrBackend is returned as it is.
func BackendError(proto string, err error) error {
	if errors.Is(err, ErrBackend) {
		return err
	}
	return fmt.Errorf("%s: %w: %w", proto, ErrBackend, err)
}

// NopObserver is the Observer of a Session that has none: it ignores every
// event.
type NopObserver struct{}

var _ Observer = NopObserver{}

func (NopObserver) TLSStarted()                     {}
func (NopObserver) AuthAttempt(string, string)      {}
func (NopObserver) Authenticated(string, string)    {}
func (NopObserver) AuthFailed(string, string, bool) {}

// AllowAll is the Gate of a Session that has none: it allows every login.
type AllowAll struct{}

var _ Gate = AllowAll{}

// CheckLogin returns DenyNone.
func (AllowAll) CheckLogin(string) string { return DenyNone }

// WriteFlush writes s to w and flushes w when it has a Flush method (a
// *bufio.Writer, say). Errors are ignored: it serves Handler.Refuse and
// Handler.Goodbye, written just before the connection is closed.
func WriteFlush(w io.Writer, s string) {
	io.WriteString(w, s)
	if f, ok := w.(interface{ Flush() error }); ok {
		f.Flush()
	}
}

// Lines are a protocol's last words by reason, for Handler.Refuse (Refuse*
// reasons) or Handler.Goodbye (Bye* reasons). The line under "" answers any
// other reason.
type Lines map[string]string

// WriteFlush writes the line for reason and CRLF to w, as WriteFlush does.
func (l Lines) WriteFlush(w io.Writer, reason string) {
	line, ok := l[reason]
	if !ok {
		line = l[""]
	}
	WriteFlush(w, line+"\r\n")
}
