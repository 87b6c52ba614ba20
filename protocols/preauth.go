package protocols

// Scaffolding shared by the stream handlers' PreAuth (imap, pop3, smtp,
// xmpp): the login deadline and its context watcher, error classification
// and the defaults for a Session without an Observer or a Gate.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"time"
)

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
