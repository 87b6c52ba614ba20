// Package protocols is the small contract between the protocol-agnostic proxy
// core and the per-protocol packages (protocols/imap, pop3, smtp, xmpp), plus
// helpers they share.
//
// The proxy accepts a client, registers it, dials the backend and hands both
// streams to a Handler. The Handler runs the pre-authentication dialogue: it
// relays greetings and capabilities (rewriting them so the client sees the
// truth about its own link), terminates client STARTTLS itself, extracts the
// username from the login command or SASL exchange, asks the Gate, forwards the
// credential only when allowed, reads the backend's verdict and reports it to
// the Observer. PreAuth returns nil once the session may be relayed blindly.
//
// Rules for implementations:
//   - Never log a password, SASL payload, token or literal body, at any level.
//     Log the username, mechanism, outcome and session id only.
//   - A gated login never reaches the backend.
//   - Anything the client pipelined behind STARTTLS is discarded (Conn.StartTLSServer).
//   - Bytes the client pipelined behind a successful login stay in Session.Client.R:
//     the proxy forwards them to the backend before relaying.
package protocols

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"
)

// Handler drives one stream protocol.
type Handler interface {
	// Protocol is the accounting key: "imap", "pop", "smtp", "xmpp".
	Protocol() string
	// PreAuth runs the dialogue up to a successful login. It returns nil when
	// the session is authenticated and may be relayed blindly (Client.W and
	// Backend.W flushed). Any error means the session is over; the handler has
	// already told the client why where the protocol allows it.
	PreAuth(ctx context.Context, s *Session) error
	// Refuse writes a connect-time refusal to the client (the backend was not
	// dialed or is unreachable). reason is one of the Refuse* constants.
	Refuse(w io.Writer, reason string)
	// Goodbye writes what the client should read before the proxy closes an
	// established session (admin drop, shutdown). reason is one of Bye*.
	Goodbye(w io.Writer, reason string)
}

// EarlyGreeter is a Handler that can greet the client before the backend
// has answered, from the greeting the backend sent last time: the proxy
// then connects to the backend while the client reads the greeting and
// sends its first command, instead of before (nginx's and Dovecot's mail
// proxies greet with their own banner for the same reason).
type EarlyGreeter interface {
	// EarlyGreeting returns the greeting to send the client of s now, or
	// nil to wait for the backend's (nothing learned yet, or a backend
	// whose greeting cannot be predicted). s.Backend is nil at that point.
	// When the proxy sent it, it sets s.Greeted before PreAuth.
	EarlyGreeting(s *Session) []byte
}

// Connect-time refusal reasons passed to Handler.Refuse.
const (
	RefuseUnavailable = "unavailable" // backend down or dial failed
	RefuseBlocked     = "blocked"     // client IP blocked or locked out
	RefuseLimit       = "limit"       // too many connections
	RefuseShutdown    = "shutdown"    // proxy is draining
)

// Reasons passed to Handler.Goodbye.
const (
	ByeDropped  = "dropped"  // an administrator dropped the session
	ByeShutdown = "shutdown" // the proxy is shutting down
	ByeTimeout  = "timeout"  // login or idle timeout
)

// Gate denial codes returned by Gate.CheckLogin. The empty string allows.
// accounting declares the same strings; a test keeps them in step.
const (
	DenyNone     = ""
	DenyDisabled = "disabled" // protocol disabled for the user, or domain disabled
	DenyLimit    = "limit"    // too many connections for the user (or user+IP)
	DenyLockout  = "lockout"  // brute-force lockout
	// DenyUnavailable is a temporary refusal that says nothing about the
	// account: the policy cannot be known now (a cluster's store is down).
	DenyUnavailable = "unavailable"
)

// LockoutText is what a locked-out client is told, in every protocol, with
// that protocol's code for a failed login: why, and that waiting helps
// (retyping the password does not).
const (
	LockoutText = "Too many failed logins, try again later"
)

// Observer receives the events of one connection. accounting implements it
// structurally (it does not import this package), so only builtin types appear.
type Observer interface {
	// TLSStarted is called when the client link switches to TLS (STARTTLS).
	TLSStarted()
	// AuthAttempt is called when a username is known, before the gate is asked.
	AuthAttempt(user, mech string)
	// Authenticated is called once, when the backend accepted the login.
	Authenticated(user, mech string)
	// AuthFailed is called when the backend refused the login. temporary is
	// true for a backend outage ([UNAVAILABLE], 454, [SYS/TEMP]...), which must
	// never count as a failed password. It is not called for gated logins.
	AuthFailed(user, mech string, temporary bool)
}

// Gate decides whether a login may proceed, before the credential leaves.
type Gate interface {
	// CheckLogin returns DenyNone to allow, otherwise a Deny* code.
	CheckLogin(user string) string
}

// Limits bound the pre-auth phase.
type Limits struct {
	MaxLine        int           // longest command line accepted (IMAP: 8192)
	MaxBadCommands int           // bad commands before the session is closed (3)
	LoginTimeout   time.Duration // whole pre-auth phase (3 min)
	MaxLiteral     int           // longest LOGIN literal / SASL message (8192)
}

// DefaultLimits are Dovecot's pre-login values.
var DefaultLimits = Limits{MaxLine: 8192, MaxBadCommands: 3, LoginTimeout: 3 * time.Minute, MaxLiteral: 8192}

// Session is what the proxy hands a Handler.
type Session struct {
	ID         uint64
	Client     *Conn
	Backend    *Conn
	ClientAddr netip.AddrPort // the real client (from PROXY when trusted)
	LocalAddr  netip.AddrPort // the address the client connected to
	// ClientTLS is true while the client link is TLS (implicit, or after STARTTLS).
	ClientTLS bool
	// ClientStartTLS is non-nil when the listener offers STARTTLS to the client.
	ClientStartTLS *tls.Config
	// BackendStartTLS is non-nil when the handler must STARTTLS to the backend
	// right after its greeting, before anything else.
	BackendStartTLS *tls.Config
	// ClientAddrVia is how the handler must pass ClientAddr to the backend
	// itself: "imap-id" (IMAP ID x-originating-ip) or "xclient"; empty when the
	// proxy already did it (PROXY v2) or nothing is to be passed.
	ClientAddrVia string
	// RequireTLSForLogin hides LOGIN and plaintext SASL (LOGINDISABLED) on a
	// plain client link.
	RequireTLSForLogin bool
	// Greeted is true when the client already has its greeting (see
	// EarlyGreeter): PreAuth reads and checks the backend's, without
	// passing it on.
	Greeted bool
	// BackendKnowsClient is true when the backend learns ClientAddr before
	// it greets (a PROXY header): its greeting may then name the client.
	BackendKnowsClient bool
	Observer           Observer
	Gate               Gate
	Log                *slog.Logger
	Limits             Limits
}

// Conn is one side of a proxied stream with its buffers. Conn.Conn changes
// when TLS starts.
type Conn struct {
	net.Conn
	R *bufio.Reader
	W *bufio.Writer
}

// The pre-auth buffers are pooled: a session needs them only until login,
// and thousands of logins a second would otherwise leave 16 KiB of garbage
// each for the collector (and in the process's RSS until it is scavenged).
var (
	readerPool = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, 4096) }}
	writerPool = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, 4096) }}
)

// NewConn wraps c with 4 KiB buffers.
func NewConn(c net.Conn) *Conn {
	r := readerPool.Get().(*bufio.Reader)
	r.Reset(c)
	return NewConnReader(c, r)
}

// NewConnReader wraps c, keeping r (which already reads from c and may hold
// buffered bytes, e.g. after a PROXY header was parsed from it).
func NewConnReader(c net.Conn, r *bufio.Reader) *Conn {
	w := writerPool.Get().(*bufio.Writer)
	w.Reset(c)
	return &Conn{Conn: c, R: r, W: w}
}

// Release gives the buffers back for other sessions. Call it once nothing
// is buffered any more (the proxy forwards what R holds first); the Conn's
// R and W must not be used afterwards. A reader of another size (not from
// NewConn) is simply dropped.
func (c *Conn) Release() {
	if c.R != nil && c.R.Size() == 4096 {
		c.R.Reset(nil)
		readerPool.Put(c.R)
	}
	if c.W != nil {
		c.W.Reset(nil)
		writerPool.Put(c.W)
	}
	c.R, c.W = nil, nil
}

// ErrInjection reports plaintext pipelined after STARTTLS (it was discarded).
var ErrInjection = errors.New("plaintext pipelined after STARTTLS discarded")

// StartTLSServer switches the client side to TLS. Anything the client sent
// after the STARTTLS line and before the handshake is thrown away (RFC 9051
// §6.2.1, CVE-2011-0411); the number of discarded bytes is returned so the
// caller may log it. W must have been flushed (the go-ahead line sent).
func (c *Conn) StartTLSServer(cfg *tls.Config) (discarded int, err error) {
	discarded = c.R.Buffered()
	c.R.Discard(discarded)
	tc := TLSServer(c.Conn, cfg)
	if err := tc.Handshake(); err != nil {
		return discarded, err
	}
	c.Conn = tc
	c.R.Reset(tc)
	c.W.Reset(tc)
	return discarded, nil
}

// StartTLSClient switches the backend side to TLS after the backend's
// go-ahead. Buffered plaintext from the backend is discarded (response
// injection, docs/protocols.md §9.2).
func (c *Conn) StartTLSClient(cfg *tls.Config) error {
	c.R.Discard(c.R.Buffered())
	tc := TLSClient(c.Conn, cfg)
	if err := tc.Handshake(); err != nil {
		return err
	}
	c.Conn = tc
	c.R.Reset(tc)
	c.W.Reset(tc)
	return nil
}

// WriteLine writes s and CRLF and flushes.
func (c *Conn) WriteLine(s string) error {
	c.W.WriteString(s)
	c.W.WriteString("\r\n")
	return c.W.Flush()
}

// ErrLineTooLong is returned by ReadLine when a line exceeds the limit. The
// rest of the line has been consumed.
var ErrLineTooLong = errors.New("line too long")

// ReadLine reads one line up to max bytes (CRLF or LF included in the count),
// returning it without the line ending. An over-long line is consumed up to
// its end and reported as ErrLineTooLong, so the caller can answer and go on.
func (c *Conn) ReadLine(max int) ([]byte, error) {
	var line []byte
	tooLong := false
	for {
		chunk, err := c.R.ReadSlice('\n')
		if !tooLong {
			if len(line)+len(chunk) > max {
				tooLong = true
				line = nil
			} else {
				line = append(line, chunk...)
			}
		}
		if err == bufio.ErrBufferFull {
			continue
		}
		if err != nil {
			return nil, err
		}
		break
	}
	if tooLong {
		return nil, ErrLineTooLong
	}
	line = line[:len(line)-1]
	if n := len(line); n > 0 && line[n-1] == '\r' {
		line = line[:n-1]
	}
	return line, nil
}
