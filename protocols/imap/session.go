package imap

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/mailgate/mailgate/protocols"
)

// session is the state of one PreAuth call.
type session struct {
	h    *Handler
	ps   *protocols.Session
	ctx  context.Context
	log  *slog.Logger
	lim  protocols.Limits
	rlim respLimits
	obs  protocols.Observer
	gate protocols.Gate

	client, backend *protocols.Conn
	// rawClient and rawBackend are the connections as handed over. Deadlines
	// are set on them: a tls.Conn built on top forwards its deadlines there,
	// and they never change, so the context watcher may use them safely.
	rawClient, rawBackend net.Conn

	stopWatch func() // protocols.WatchContext's stop

	caps      map[string]bool // backend capabilities last seen, upper-case
	capNames  []string        // the same, as the backend spelled them
	capsKnown bool
	tagSeq    int
	bad       int  // bad commands so far
	told      bool // the client was sent a BYE
	preauth   bool // the backend greeted with PREAUTH
}

// byeWriteTimeout bounds the final BYE written after a timeout or failure.
const byeWriteTimeout = 5 * time.Second

func newSession(ctx context.Context, h *Handler, s *protocols.Session) *session {
	if h == nil {
		h = &Handler{}
	}
	lim := s.Limits.WithDefaults()
	log := s.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ss := &session{
		h:          h,
		ps:         s,
		ctx:        ctx,
		log:        log.With("session", s.ID, "protocol", "imap"),
		lim:        lim,
		rlim:       h.opts.respLimits(),
		obs:        s.Observer,
		gate:       s.Gate,
		client:     s.Client,
		backend:    s.Backend,
		rawClient:  s.Client.Conn,
		rawBackend: s.Backend.Conn,
	}
	if ss.obs == nil {
		ss.obs = protocols.NopObserver{}
	}
	if ss.gate == nil {
		ss.gate = protocols.AllowAll{}
	}
	ss.stopWatch = protocols.WatchContext(ctx, ss.rawClient, ss.rawBackend, lim.LoginTimeout)
	return ss
}

// finish stops the context watcher and clears the deadlines.
func (ss *session) finish() {
	ss.stopWatch()
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
		ss.obs.Authenticated("", "PREAUTH")
		return ss.flushBoth()
	}
	for {
		done, err := ss.next()
		if err != nil {
			return err
		}
		if done {
			return ss.flushBoth()
		}
	}
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
		ss.told = true
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
	if err := ss.flush(); err != nil {
		return nil, err
	}
	cr := cmdReader{
		r:        ss.client.R,
		w:        ss.client.W,
		maxLine:  ss.lim.MaxLine,
		maxLit:   ss.lim.MaxLiteral,
		maxTotal: ss.lim.MaxLine + 2*ss.lim.MaxLiteral,
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
func (ss *session) loginDisabled() bool {
	return ss.ps.RequireTLSForLogin && !ss.ps.ClientTLS
}

// clientPolicy is the capability policy for the client link before login.
func (ss *session) clientPolicy() capPolicy {
	if ss.preauth {
		return capPolicy{}
	}
	return capPolicy{
		offerStartTLS: !ss.ps.ClientTLS && ss.ps.ClientStartTLS != nil,
		loginDisabled: ss.loginDisabled(),
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
		ss.told = true
		if err := ss.flush(); err != nil {
			return err
		}
		return fmt.Errorf("imap: %w", protocols.ErrClientProtocol)
	}
	if ce.counts {
		return ss.countBad()
	}
	return ss.flush()
}

// reply sends a tagged reply and flushes.
func (ss *session) reply(tag, status, text string) error {
	ss.out(tag + " " + status + " " + text + "\r\n")
	return ss.flush()
}

// countBad counts a command answered with BAD and ends the session at the
// limit.
func (ss *session) countBad() error {
	ss.bad++
	if ss.bad < ss.lim.MaxBadCommands {
		return ss.flush()
	}
	ss.out("* BYE Too many invalid commands\r\n")
	ss.told = true
	if err := ss.flush(); err != nil {
		return err
	}
	ss.log.Info("too many invalid commands", "outcome", "closed")
	return fmt.Errorf("imap: %w", protocols.ErrTooManyBadCommands)
}

// out queues bytes for the client; errors surface at the next flush.
func (ss *session) out(s string) { ss.client.W.WriteString(s) }

func (ss *session) outBytes(b []byte) { ss.client.W.Write(b) }

func (ss *session) flush() error {
	if err := ss.client.W.Flush(); err != nil {
		return clientErr(err)
	}
	return nil
}

func (ss *session) flushBoth() error {
	if err := ss.flush(); err != nil {
		return err
	}
	if err := ss.backend.W.Flush(); err != nil {
		return backendErr(err)
	}
	return nil
}

// fail turns the error that ended the session into what PreAuth returns,
// telling the client why where it has not been told yet.
func (ss *session) fail(err error) error {
	if ss.ctx.Err() != nil {
		ss.log.Debug("pre-auth cancelled")
		return fmt.Errorf("imap: %w", context.Cause(ss.ctx))
	}
	switch {
	case protocols.IsTimeout(err):
		ss.finalBye("Login timeout")
		ss.log.Info("login timeout", "outcome", "timeout")
		return fmt.Errorf("imap: %w", protocols.ErrLoginTimeout)
	case errors.Is(err, protocols.ErrBackend):
		ss.finalBye("[UNAVAILABLE] Internal server error, try again later")
		ss.log.Warn("backend failure before login", "err", err)
	default:
		ss.finalBye("")
		ss.log.Debug("pre-auth ended", "err", err)
	}
	return err
}

// finalBye flushes what is pending for the client (a relayed BYE, say) and
// adds "* BYE text" unless a BYE was already sent or text is empty. It uses a
// fresh short write deadline: the login deadline may have passed.
func (ss *session) finalBye(text string) {
	ss.rawClient.SetWriteDeadline(time.Now().Add(byeWriteTimeout))
	if !ss.told && text != "" {
		ss.told = true
		ss.out("* BYE " + text + "\r\n")
	}
	ss.client.W.Flush()
}

// clientErr wraps an I/O error on the client side; a closed connection is the
// client going away.
func clientErr(err error) error { return protocols.ClientError("imap", err) }

// backendErr wraps any backend-side failure in protocols.ErrBackend.
func backendErr(err error) error { return protocols.BackendError("imap", err) }
