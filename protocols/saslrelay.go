package protocols

// The SASL relay of the stream protocols (IMAP AUTHENTICATE, POP3 AUTH,
// SMTP AUTH, XMPP <auth/>): Dialogue.RelaySASL runs an exchange in three
// phases and keeps the books; a SASLFraming puts each step into the
// protocol's words.
//
//  1. Until the user is known the proxy talks to the client alone where the
//     mechanism allows: it decodes the initial response, or sends the
//     challenge that carries no backend data itself (empty for client-first
//     mechanisms, "Username:" for LOGIN). CRAM-MD5 is server-first: the
//     challenge must be the backend's, so the exchange is opened there, the
//     challenge relayed and the client's answer held.
//  2. The gate decides. A refusal is answered locally (an exchange open at
//     the backend is cancelled there); the credential never leaves.
//  3. The held message goes to the backend, as the initial response where
//     the framing sends one, else as the answer to the backend's first
//     challenge (which the client never sees: it answered the proxy's).
//     Then challenges and responses are relayed, each response checked to
//     be canonical base64 or the cancel form, for a bounded number of
//     rounds, until the verdict. A challenge after the client's last
//     message is no failure (SCRAM's v=, the OAuth error JSON).
//
// What the Observer hears, credSent meaning that a message carrying a
// secret (SASLStep.Credential) reached the backend:
//   - success: Authenticated; after a cancel by the client it is a backend
//     protocol error instead;
//   - a temporary failure: AuthFailed(temporary);
//   - a refusal: AuthFailed, unless the client cancelled before any
//     credential was sent;
//   - no verdict (a cancel confirmed, a command the backend found bad):
//     nothing, or AuthFailed when the client cancelled after a credential
//     (the OAuth error challenge answered with "*" still refused a token);
//   - a refusal before any client message reached the backend (a mechanism
//     it does not offer): AuthFailed(temporary), nothing was checked;
//   - the proxy breaking the exchange off (a client line too long or not
//     base64, the client doing something else): AuthFailed(temporary) if a
//     credential was sent, its verdict is unknown;
//   - the backend failing, closing or breaking the protocol: LoginLost.
//
// Each outcome is one "login" log line (user, mechanism, outcome), never
// SASL data. The decoded messages the driver holds are wiped once used.

import (
	"encoding/base64"
	"errors"
	"strings"
)

// Outcomes named by "login" log lines and passed to SASLFraming.Relay.
const (
	OutcomeSuccess     = "success"
	OutcomeFailure     = "failure"   // the credential was refused
	OutcomeTempfail    = "tempfail"  // the backend could not decide
	OutcomeCancelled   = "cancelled" // the client cancelled
	OutcomeBad         = "bad"       // a command or message was bad
	OutcomeRefused     = "refused"   // refused before any credential
	OutcomeMalformed   = "malformed" // a client message not passed on
	OutcomeUnsupported = "unsupported"
)

// SASLReplyKind classifies a backend's answer in a login.
type SASLReplyKind int

const (
	ReplyChallenge SASLReplyKind = iota // "+ ", "334 ", <challenge/>
	ReplySuccess                        // OK, +OK, 235, <success/>
	ReplyFailure                        // the credential was refused: NO, -ERR, 535, <failure/>
	ReplyTemporary                      // [UNAVAILABLE], [SYS/TEMP], 4xx, <temporary-auth-failure/>
	ReplyCancelled                      // ended as aborted: <aborted/>
	ReplyRejected                       // the command or a message was bad: BAD, 500-504
)

// SASLReply is a backend's answer as a framing classified it; the framing
// keeps the answer itself, to relay it.
type SASLReply struct {
	Kind SASLReplyKind
	// Payload is a challenge's base64 as it came, from a framing that
	// relays it so (a line protocol); nil when the framing checked it.
	// A server-first challenge must be base64.
	Payload []byte
	// Log holds attributes for the "login" line (a code, a condition).
	Log []any
}

// SASLAnswer names what a client sent instead of a message the proxy
// passes on, and so what SASLFraming.Answer tells it. ReadResponse returns
// the first three as errors.
type SASLAnswer int

const (
	AnswerCancelled SASLAnswer = iota // "*", <abort/>
	AnswerTooLong                     // a message over the limit
	AnswerLeft                        // something else (XMPP: another element, kept by the framing); not answered
	AnswerNoIR                        // an initial response for a server-first mechanism
	AnswerBadIR                       // an initial response that is not base64
	AnswerBadBase64                   // a response that is not base64
	AnswerMalformed                   // a message the mechanism cannot parse

	answerNone SASLAnswer = -1
)

func (a SASLAnswer) Error() string { return "sasl: " + a.Text("") }

// Text is the plain wording of a, as IMAP puts it after "tag BAD"; mech
// names the mechanism.
func (a SASLAnswer) Text(mech string) string {
	switch a {
	case AnswerCancelled:
		return "Authentication cancelled"
	case AnswerTooLong:
		return "SASL message too long"
	case AnswerLeft:
		return "Exchange left"
	case AnswerNoIR:
		return "Initial response not allowed for " + mech
	case AnswerBadIR:
		return "Invalid base64 in initial response"
	case AnswerBadBase64:
		return "Invalid base64"
	}
	return "Malformed SASL message"
}

// SASLLines is Respond and Cancel for a line protocol (IMAP, POP3, SMTP),
// for its framing to embed.
type SASLLines struct{ Backend *Conn }

func (l SASLLines) Respond(b64 []byte) {
	l.Backend.W.Write(b64)
	l.Backend.W.WriteString("\r\n")
}

func (l SASLLines) Cancel() { l.Backend.W.WriteString("*\r\n") }

// SASLFraming is one protocol's side of a relayed exchange. Writes are
// queued: the driver flushes the client's writer before ReadResponse and
// the backend's before ReadBackend.
type SASLFraming interface {
	// Challenge queues a challenge of the proxy's own for the client.
	Challenge(data []byte)
	// RelayChallenge queues the challenge ReadBackend returned last.
	RelayChallenge()
	// ReadResponse reads the client's next message, still in base64 (the
	// caller wipes it), or returns AnswerCancelled, AnswerTooLong or
	// AnswerLeft; any other error ends the session.
	ReadResponse() ([]byte, error)
	// Open queues the start of the exchange for mech, with ir (base64,
	// "=" when empty; nil: none) as the initial response where the
	// framing sends one. If it did not (sent false), the backend's first
	// challenge is answered with the message instead.
	Open(mech string, ir []byte) (sent bool, err error)
	// Respond queues a client message for the backend, in base64.
	Respond(b64 []byte)
	// Cancel queues the protocol's cancel ("*", <abort/>) for the backend.
	Cancel()
	// ReadBackend reads the backend's next step; a backend breaking the
	// protocol is an error wrapping ErrBackend.
	ReadBackend() (SASLReply, error)
	// Relay passes the answer ReadBackend returned last to the client;
	// outcome is what the driver made of it, so that the framing counts
	// bad commands or failures its own way. After OutcomeSuccess it
	// completes the login (nothing needs flushing).
	Relay(outcome string) error
	// Deny answers a login the gate refused with code (a Deny* value).
	Deny(code string) error
	// Answer gives the client the proxy's own answer a.
	Answer(a SASLAnswer) error
}

// SASLRelay is what RelaySASL needs besides the framing.
type SASLRelay struct {
	Exchange  *SASLExchange // the mechanism the client chose
	IR        []byte        // the initial response in base64, as it came
	HasIR     bool
	MaxIR     int // bounds IR; 0 leaves it to the command line's limit
	MaxRounds int // bounds the backend challenges relayed
	// Qualify, when set, turns a SASL identity into the user the session
	// is attributed to (XMPP: a localpart gets the stream's domain).
	Qualify func(name string) string
}

// RelaySASL runs one exchange through f. done means the backend accepted
// the login and the framing completed it; with a nil error and done false
// the client was answered (or left, AnswerLeft) and pre-auth goes on.
func (d *Dialogue) RelaySASL(f SASLFraming, p SASLRelay) (done bool, err error) {
	r := &saslRun{d: d, f: f, p: p, x: p.Exchange, mech: p.Exchange.Mechanism()}
	defer func() { clear(r.held) }()
	if ended, err := r.learnUser(); ended || err != nil {
		return false, err
	}
	user, authz := r.identity()
	if code := d.CheckLogin(user, authz, r.mech); code != DenyNone {
		if r.started {
			if err := r.closeBackend(); err != nil {
				return false, err
			}
		}
		return false, f.Deny(code)
	}
	r.user = user
	if ended, err := r.sendHeld(); ended || err != nil {
		return false, err
	}
	return r.relay()
}

// Verdict reports the backend's final answer to a login whose credential
// it received (IMAP LOGIN, POP3 PASS and APOP) and returns the outcome.
func (d *Dialogue) Verdict(user, mech string, rep SASLReply) string {
	return d.judge(user, mech, rep, true, false)
}

// RefusedEarly reports a backend that ended a login before any credential
// reached it (POP3 USER refused, a mechanism it does not offer): nothing
// was checked, so a known user gets a temporary failure. It returns the
// outcome.
func (d *Dialogue) RefusedEarly(user, mech string, rep SASLReply) string {
	outcome := OutcomeRefused
	switch {
	case rep.Kind == ReplyRejected:
		outcome = OutcomeBad
	case user != "":
		d.Observer.AuthFailed(user, mech, true)
	}
	d.logLogin(user, mech, outcome, rep.Log...)
	return outcome
}

// SASLUnsupported logs a client asking for a mechanism it may not use.
func (d *Dialogue) SASLUnsupported(mech string) {
	d.logLogin("", SASLLogName(mech), OutcomeUnsupported)
}

// judge reports a final answer as the file comment says and returns the
// outcome. cancelled: the client cancelled the exchange.
func (d *Dialogue) judge(user, mech string, rep SASLReply, credSent, cancelled bool) string {
	var outcome string
	switch {
	case rep.Kind == ReplySuccess:
		d.Observer.Authenticated(user, mech)
		outcome = OutcomeSuccess
	case rep.Kind == ReplyTemporary:
		d.Observer.AuthFailed(user, mech, true)
		outcome = OutcomeTempfail
	case cancelled && !credSent:
		outcome = OutcomeCancelled
	case rep.Kind == ReplyFailure, cancelled:
		d.Observer.AuthFailed(user, mech, false)
		outcome = OutcomeFailure
	case rep.Kind == ReplyCancelled:
		outcome = OutcomeCancelled
	default:
		outcome = OutcomeBad
	}
	d.logLogin(user, mech, outcome, rep.Log...)
	return outcome
}

// logLogin writes the "login" line, without user while it is unknown.
func (d *Dialogue) logLogin(user, mech, outcome string, extra ...any) {
	attrs := make([]any, 0, 6+len(extra))
	if user != "" {
		attrs = append(attrs, "user", user)
	}
	attrs = append(attrs, "mechanism", mech, "outcome", outcome)
	d.Log.Info("login", append(attrs, extra...)...)
}

var (
	errSASLRounds         = errors.New("too many SASL challenges")
	errSASLChallenge      = errors.New("unexpected SASL challenge")
	errSASLCancelAccepted = errors.New("backend accepted a cancelled authentication")
	errSASLEarlySuccess   = errors.New("backend accepted an authentication before any credential")
)

// saslRun is one exchange in progress.
type saslRun struct {
	d    *Dialogue
	f    SASLFraming
	p    SASLRelay
	x    *SASLExchange
	mech string
	user string // set once the gate allowed the login

	held      []byte // the decoded message that named the user
	heldCred  bool   // it carries a secret itself
	started   bool   // the exchange is open at the backend (server-first)
	credSent  bool
	cancelled bool // the client cancelled in the relayed phase
}

// learnUser is phase 1; ended means the client was answered (or left).
func (r *saslRun) learnUser() (ended bool, err error) {
	x := r.x
	if r.p.HasIR {
		switch {
		case x.ServerFirst():
			return true, r.refuse(AnswerNoIR)
		case r.p.MaxIR > 0 && len(r.p.IR) > r.p.MaxIR:
			return true, r.refuse(AnswerTooLong)
		}
		msg, err := DecodeSASL(r.p.IR)
		if err != nil {
			return true, r.refuse(AnswerBadIR)
		}
		if !r.hold(msg) {
			return true, r.refuse(AnswerMalformed)
		}
	}
	for !x.UserKnown() {
		ch, ok := x.LocalChallenge()
		if !ok {
			break
		}
		x.Challenge(ch)
		r.f.Challenge(ch)
		raw, msg, stop, err := r.next()
		clear(raw)
		switch {
		case err != nil:
			return true, err
		case stop != answerNone:
			return true, r.refuse(stop)
		case !r.hold(msg):
			return true, r.refuse(AnswerMalformed)
		}
	}
	switch {
	case !x.UserKnown() && x.ServerFirst():
		return r.serverFirst()
	case !x.UserKnown():
		return true, r.refuse(AnswerMalformed) // no mechanism offered stops here
	}
	return false, nil
}

// serverFirst opens the exchange at the backend, relays its challenge and
// holds the client's answer.
func (r *saslRun) serverFirst() (ended bool, err error) {
	f := r.f
	if _, err := f.Open(r.mech, nil); err != nil {
		return true, err
	}
	rep, err := r.readBackend()
	switch {
	case err != nil:
		return true, err
	case rep.Kind != ReplyChallenge:
		return true, r.refused(rep)
	}
	if _, err := DecodeSASL(rep.Payload); err != nil {
		return true, BackendError(r.d.Proto, ErrSASLBase64)
	}
	r.started = true
	r.x.Challenge(nil)
	f.RelayChallenge()
	raw, msg, stop, err := r.next()
	clear(raw)
	switch {
	case err != nil:
		return true, err
	case stop == AnswerCancelled:
		// The backend's own answer to the cancel goes to the client.
		if err := r.closeBackend(); err != nil {
			return true, err
		}
		r.d.logLogin("", r.mech, OutcomeCancelled)
		return true, f.Relay(OutcomeCancelled)
	case stop != answerNone:
		return true, r.breakOff(stop)
	case !r.hold(msg):
		return true, r.breakOff(AnswerMalformed)
	}
	return false, nil
}

// sendHeld starts phase 3: the held message goes to the backend.
func (r *saslRun) sendHeld() (ended bool, err error) {
	f := r.f
	if !r.started {
		ir := encodeSASL(r.held, true)
		sent, err := f.Open(r.mech, ir)
		clear(ir)
		if err != nil {
			return true, r.lost(err)
		}
		if sent {
			r.credSent = r.heldCred
			return false, nil
		}
		rep, err := r.readBackend()
		if err != nil {
			return true, r.lost(err)
		}
		if rep.Kind != ReplyChallenge {
			return true, r.refused(rep)
		}
	}
	b := encodeSASL(r.held, false)
	f.Respond(b)
	clear(b)
	r.credSent = r.heldCred
	return false, nil
}

// relay is the rest of phase 3, up to the verdict.
func (r *saslRun) relay() (bool, error) {
	f, x := r.f, r.x
	for rounds := 0; ; rounds++ {
		rep, err := r.readBackend()
		if err != nil {
			return false, r.lost(err)
		}
		if rep.Kind != ReplyChallenge {
			if rep.Kind == ReplySuccess && r.cancelled {
				return false, r.lost(BackendError(r.d.Proto, errSASLCancelAccepted))
			}
			outcome := r.d.judge(r.user, r.mech, rep, r.credSent, r.cancelled)
			err := f.Relay(outcome)
			return outcome == OutcomeSuccess && err == nil, err
		}
		switch {
		case r.cancelled:
			return false, r.lost(BackendError(r.d.Proto, errSASLChallenge))
		case rounds >= r.p.MaxRounds:
			return false, r.lost(BackendError(r.d.Proto, errSASLRounds))
		}
		x.Challenge(nil)
		f.RelayChallenge()
		raw, msg, stop, err := r.next()
		switch {
		case err != nil:
			return false, r.lost(err)
		case stop == AnswerCancelled:
			r.cancelled = true
			f.Cancel()
			continue
		case stop != answerNone:
			return false, r.breakOff(stop)
		}
		// Bookkeeping only: the backend judges the content.
		if step, err := x.Response(msg); err == nil && step.Credential {
			r.credSent = true
		}
		clear(msg)
		f.Respond(raw)
		clear(raw)
	}
}

// next reads the client's next message: raw as it came and msg decoded,
// both for the caller to wipe, or what the client sent instead (stop).
func (r *saslRun) next() (raw, msg []byte, stop SASLAnswer, err error) {
	if err := r.d.Flush(); err != nil {
		return nil, nil, answerNone, err
	}
	raw, err = r.f.ReadResponse()
	if errors.As(err, &stop) {
		return nil, nil, stop, nil
	} else if err != nil {
		return nil, nil, answerNone, err
	}
	if msg, err = DecodeSASL(raw); err != nil {
		clear(raw)
		return nil, nil, AnswerBadBase64, nil
	}
	return raw, msg, answerNone, nil
}

// readBackend sends what is queued for the backend and reads its answer.
func (r *saslRun) readBackend() (SASLReply, error) {
	if err := r.d.Backend.W.Flush(); err != nil {
		return SASLReply{}, BackendError(r.d.Proto, err)
	}
	return r.f.ReadBackend()
}

// hold keeps msg as the message that names the user; false means the
// mechanism cannot parse it.
func (r *saslRun) hold(msg []byte) bool {
	clear(r.held)
	r.held = msg
	step, err := r.x.Response(msg)
	r.heldCred = step.Credential
	return err == nil
}

// identity is the user and the distinct authorization identity the gate
// is asked about.
func (r *saslRun) identity() (user, authz string) {
	user, authz = r.x.User(), r.x.AuthzID()
	if q := r.p.Qualify; q != nil {
		user, authz = q(user), q(authz)
	}
	if strings.EqualFold(authz, user) {
		authz = ""
	}
	return user, authz
}

// refuse answers a client message the proxy does not pass on, no exchange
// being open at the backend.
func (r *saslRun) refuse(a SASLAnswer) error {
	switch a {
	case AnswerLeft:
		return nil
	case AnswerCancelled:
		r.d.logLogin(r.user, r.mech, OutcomeCancelled)
	default:
		r.d.logLogin(r.user, r.mech, OutcomeMalformed)
	}
	return r.f.Answer(a)
}

// refused handles a backend that ended the exchange before any client
// message reached it.
func (r *saslRun) refused(rep SASLReply) error {
	if rep.Kind == ReplySuccess {
		return r.lost(BackendError(r.d.Proto, errSASLEarlySuccess))
	}
	return r.f.Relay(r.d.RefusedEarly(r.user, r.mech, rep))
}

// breakOff cancels the exchange open at the backend because of what the
// client sent (a), then answers the client.
func (r *saslRun) breakOff(a SASLAnswer) error {
	if err := r.closeBackend(); err != nil {
		return r.lost(err)
	}
	if r.credSent {
		r.d.Observer.AuthFailed(r.user, r.mech, true)
	}
	if a == AnswerLeft {
		r.d.logLogin(r.user, r.mech, OutcomeCancelled)
		return nil
	}
	r.d.logLogin(r.user, r.mech, OutcomeBad)
	return r.f.Answer(a)
}

// closeBackend cancels the exchange at the backend and reads its answer,
// which must end the exchange without success.
func (r *saslRun) closeBackend() error {
	r.f.Cancel()
	rep, err := r.readBackend()
	switch {
	case err != nil:
		return err
	case rep.Kind == ReplySuccess:
		return BackendError(r.d.Proto, errSASLCancelAccepted)
	case rep.Kind == ReplyChallenge:
		return BackendError(r.d.Proto, errSASLChallenge)
	}
	return nil
}

// lost reports a login whose verdict will not come, once the user is known.
func (r *saslRun) lost(err error) error {
	if r.user != "" {
		r.d.LoginLost(r.user, r.mech)
	}
	return err
}

// encodeSASL returns msg in base64, in a buffer the caller wipes; with ir
// an empty message is "=" (RFC 4959 §3, RFC 4954 §4).
func encodeSASL(msg []byte, ir bool) []byte {
	if len(msg) == 0 && ir {
		return []byte{'='}
	}
	b := make([]byte, base64.StdEncoding.EncodedLen(len(msg)))
	base64.StdEncoding.Encode(b, msg)
	return b
}
