package pop3

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
	opts resolved
	rlim respLimits

	cmdMax  int  // longest command line, CRLF included
	saslMax int  // longest AUTH line, CRLF included
	budget  int  // client octets still allowed before login
	apop    bool // the greeting carries an APOP timestamp
	user    []byte
	hasUser bool // USER was accepted and PASS may follow
	bad     int  // bad commands so far
}

func newSession(ctx context.Context, h *Handler, s *protocols.Session) *session {
	if h == nil {
		h = &Handler{}
	}
	opts := h.opts.resolve()
	ss := &session{
		Dialogue: protocols.NewDialogue(ctx, s, "pop3", "protocol", "pop"),
		h:        h,
		ps:       s,
		opts:     opts,
		rlim:     respLimits{line: opts.respLine, total: opts.respTotal},
		budget:   opts.preAuth,
	}
	ss.cmdMax = min(opts.cmdLine, ss.Limits.MaxLine)
	// A base64 message of MaxLiteral octets, and its CRLF.
	ss.saslMax = max(ss.cmdMax, (ss.Limits.MaxLiteral+2)/3*4+2)
	return ss
}

// finish stops the context watcher, clears the deadlines and forgets a
// pending user name.
func (ss *session) finish() {
	ss.Finish()
	ss.forgetUser()
}

// errClientAddrVia reports a client address method this handler does not
// implement (see the package documentation).
var errClientAddrVia = errors.New("client address method not supported for POP3 (use proxy-v2 or none)")

// run is the AUTHORIZATION state: greeting, then commands until a login
// succeeds.
func (ss *session) run() error {
	if via := ss.ps.ClientAddrVia; via != "" && via != "none" {
		ss.Log.Error("cannot pass the client address", "client_address", via, "err", errClientAddrVia)
		return fmt.Errorf("pop3: %w: %q", errClientAddrVia, via)
	}
	if err := ss.greet(); err != nil {
		return err
	}
	return ss.Loop(ss.next)
}

// next reads and handles one client command; done means authenticated.
func (ss *session) next() (done bool, err error) {
	line, err := ss.readCommand()
	if err != nil {
		return false, err
	}
	defer clear(line) // PASS and AUTH lines hold secrets
	if line == nil {
		return false, nil // answered already (too long)
	}
	cmd, perr := parseCommand(line)
	if perr != nil {
		return false, ss.badCmd(perr.Error())
	}
	if len(line)+2 > ss.cmdMax && cmd.name != "AUTH" {
		return false, ss.badCmd("Line too long")
	}
	switch cmd.name {
	case "CAPA":
		if cmd.hasArgs {
			return false, ss.badCmd("CAPA takes no arguments")
		}
		return false, ss.capa()
	case "STLS":
		return false, ss.startTLS(cmd)
	case "USER":
		return false, ss.userCmd(cmd)
	case "PASS":
		return ss.pass(cmd)
	case "APOP":
		return ss.apopCmd(cmd)
	case "AUTH":
		return ss.auth(cmd)
	case "QUIT":
		return false, ss.quit()
	case "NOOP":
		return false, ss.reply("+OK")
	case "STAT", "LIST", "RETR", "DELE", "RSET", "TOP", "UIDL", "LAST":
		// Valid in the TRANSACTION state only (RFC 1939 §5).
		return false, ss.badCmd("Not logged in")
	default:
		// Never forwarded: an unknown command might get a multi-line
		// answer, and trusted-peer commands (XCLIENT) would let the client
		// rewrite what the backend believes about it.
		return false, ss.badCmd("Unknown command")
	}
}

// readCommand flushes pending output, then reads one client line within
// the limits. A nil line with a nil error means the line was too long and
// has been answered.
func (ss *session) readCommand() ([]byte, error) {
	if err := ss.Flush(); err != nil {
		return nil, err
	}
	line, err := ss.readClientLine(ss.saslMax)
	if errors.Is(err, protocols.ErrLineTooLong) {
		return nil, ss.badCmd("Line too long")
	}
	return line, err
}

// readClientLine reads one client line of at most max octets and charges
// it to the pre-auth budget; an over-long line is consumed and reported as
// protocols.ErrLineTooLong.
func (ss *session) readClientLine(max int) ([]byte, error) {
	line, err := ss.Client.ReadLine(max)
	n := len(line) + 2
	if errors.Is(err, protocols.ErrLineTooLong) {
		n = max
	} else if err != nil {
		return nil, clientErr(err)
	}
	if ss.budget -= n; ss.budget < 0 {
		clear(line)
		ss.out("-ERR Too much data before login")
		ss.Told = true
		ss.Log.Info("pre-auth byte budget exhausted", "outcome", "closed")
		return nil, errors.Join(ss.Flush(), fmt.Errorf("pop3: %w: pre-auth byte budget exhausted", protocols.ErrClientProtocol))
	}
	return line, err
}

// loginDisabled reports whether cleartext login is refused right now.
func (ss *session) loginDisabled() bool {
	return ss.ps.RequireTLSForLogin && !ss.ps.ClientTLS
}

// policy is the capability policy for the client link before login.
func (ss *session) policy() capPolicy {
	return capPolicy{
		offerSTLS:     !ss.ps.ClientTLS && ss.ps.ClientStartTLS != nil,
		loginDisabled: ss.loginDisabled(),
	}
}

// saslOffer is the rule for the mechanisms the client may use now.
func (ss *session) saslOffer() protocols.SASLOffer {
	return protocols.SASLOffer{HideCleartext: ss.loginDisabled()}
}

const privacyRequired = "-ERR [AUTH] Plaintext authentication is disabled, use STLS first"

// forgetUser drops a user name given with USER.
func (ss *session) forgetUser() {
	clear(ss.user)
	ss.user, ss.hasUser = nil, false
}

// reply queues one line for the client and flushes.
func (ss *session) reply(line string) error {
	ss.out(line)
	return ss.Flush()
}

// badCmd answers a bad command with "-ERR text" and counts it; at the limit
// the answer says so and the session ends (Dovecot: 3 in pop3-login).
func (ss *session) badCmd(text string) error {
	ss.bad++
	if ss.bad < ss.Limits.MaxBadCommands {
		return ss.reply("-ERR " + text)
	}
	ss.out("-ERR " + text + "; too many invalid commands, closing connection")
	ss.Told = true
	if err := ss.Flush(); err != nil {
		return err
	}
	ss.Log.Info("too many invalid commands", "outcome", "closed")
	return fmt.Errorf("pop3: %w", protocols.ErrTooManyBadCommands)
}

// out queues a line for the client; errors surface at the next flush.
func (ss *session) out(line string) {
	ss.Client.W.WriteString(line)
	ss.Client.W.WriteString("\r\n")
}

func (ss *session) outBytes(b []byte) { ss.Client.W.Write(b) }

// farewell is what the client is told when the session fails before login.
var farewell = protocols.Farewell{
	Timeout: "-ERR Login timeout",
	Backend: "-ERR [SYS/TEMP] Internal server error, try again later",
}

// fail turns the error that ended the session into what PreAuth returns.
func (ss *session) fail(err error) error {
	if errors.Is(err, errClientAddrVia) && ss.Ctx.Err() == nil {
		// run has logged why.
		ss.Final("-ERR [SYS/TEMP] Service temporarily unavailable")
		return err
	}
	return ss.Fail(err, farewell)
}

// clientErr wraps an I/O error on the client side; a closed connection is the
// client going away.
func clientErr(err error) error { return protocols.ClientError("pop3", err) }

// backendErr wraps any backend-side failure in protocols.ErrBackend.
func backendErr(err error) error { return protocols.BackendError("pop3", err) }
