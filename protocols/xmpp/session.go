package xmpp

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/mailgate/mailgate/protocols"
)

// session is the state of one PreAuth call.
type session struct {
	protocols.Dialogue
	h      *Handler
	opts   Options
	ps     *protocols.Session
	cr, br *reader // the client's and the backend's streams

	domain     string // the client's 'to', lowercased: the users' domain
	lang       string // the client's xml:lang, if well-formed
	streamID   string // the id of the stream the client sees (the backend's)
	from       string // the 'from' of the stream the client sees
	features   *Element
	offered    map[string]bool // mechanisms the client was offered
	headerSent bool            // our stream header reached the client's current stream
	backendUp  bool            // our stream to the backend is open and usable
	bad        int             // recoverable protocol errors so far
	failures   int             // failed authentications so far
}

// streamErr ends the client's stream with a stream error (cond) or, with
// cond "", with the closing tag alone. err classifies the ending.
type streamErr struct {
	cond, text string
	err        error
}

func (e *streamErr) Error() string {
	if e.cond == "" {
		return "xmpp: stream closed: " + e.err.Error()
	}
	return "xmpp: " + e.cond + ": " + e.text + ": " + e.err.Error()
}

func (e *streamErr) Unwrap() error { return e.err }

var (
	errBackendStreamError = errors.New("backend sent a stream error")
	errBackendProtocol    = errors.New("unexpected element from the backend")
	errBackendHeader      = errors.New("bad stream header from the backend")
	errNoBackendStartTLS  = errors.New("backend does not offer STARTTLS")
	errBackendStartTLS    = errors.New("backend refused STARTTLS")
	errBackendBase64      = errors.New("backend sent invalid base64")
)

func newSession(ctx context.Context, h *Handler, s *protocols.Session) *session {
	opts := h.opts.withDefaults()
	return &session{
		Dialogue: protocols.NewDialogue(ctx, s, "xmpp", "protocol", "xmpp"),
		h:        h,
		opts:     opts,
		ps:       s,
		cr:       newReader(s.Client.R, opts.limits()),
		br:       newReader(s.Backend.R, opts.limits()),
	}
}

// run is stream negotiation: headers, features, STARTTLS and SASL until a
// login succeeds.
func (ss *session) run() error {
	if via := ss.ps.ClientAddrVia; via != "" {
		ss.Log.Warn("client address passing is not supported for xmpp; use proxy-v2", "client_address", via)
	}
	if err := ss.readClientHeader(false); err != nil {
		return err
	}
	if err := ss.openBackend(); err != nil {
		return err
	}
	if err := ss.sendHeaderAndFeatures(); err != nil {
		return err
	}
	var next *Element
	for {
		el := next
		if el == nil {
			var err error
			if el, err = ss.readClient(); err != nil {
				return err
			}
		}
		var done bool
		var err error
		done, next, err = ss.dispatch(el)
		if err != nil || done {
			return err
		}
	}
}

// dispatch acts on one first-level element from the client; done means
// authenticated. next is an element read while handling this one (a SASL
// exchange the client left for something else) that is still to be handled.
func (ss *session) dispatch(el *Element) (done bool, next *Element, err error) {
	switch el.Name {
	case Name{nsTLS, "starttls"}:
		return false, nil, ss.startTLS()
	case Name{nsSASL, "auth"}:
		return ss.authenticate(el)
	case Name{nsSASL, "abort"}:
		// No exchange is running: nothing to abort (RFC 6120 §6.4.4).
		ss.out(saslFailure("aborted", "", ""))
		return false, nil, ss.countBad()
	case Name{nsSASL, "response"}:
		ss.out(saslFailure("malformed-request", "", ""))
		return false, nil, ss.countBad()
	}
	if el.Name.Space == nsClient && (el.Name.Local == "iq" || el.Name.Local == "message" || el.Name.Local == "presence") {
		// RFC 6120 §4.9.3.12: stanzas before authentication. In-band
		// registration (XEP-0077) and legacy auth (XEP-0078) are not
		// offered through the proxy, so no stanza is valid here.
		ss.Log.Info("stanza before authentication", "element", short(el.Name.Local), "outcome", "closed")
		return false, nil, &streamErr{cond: "not-authorized", text: "Authenticate first", err: protocols.ErrClientProtocol}
	}
	ss.Log.Info("unsupported element before authentication", "element", short(el.Name.Local), "outcome", "closed")
	return false, nil, &streamErr{cond: "unsupported-stanza-type", err: protocols.ErrClientProtocol}
}

// countBad counts a recoverable protocol error, already answered, and ends
// the stream at the limit.
func (ss *session) countBad() error {
	ss.bad++
	if ss.bad < ss.Limits.MaxBadCommands {
		return ss.Flush()
	}
	ss.Log.Info("too many invalid requests", "outcome", "closed")
	return &streamErr{cond: "policy-violation", text: "Too many invalid requests",
		err: fmt.Errorf("xmpp: %w", protocols.ErrTooManyBadCommands)}
}

// readClient flushes pending output, then reads the client's next
// first-level element.
func (ss *session) readClient() (*Element, error) {
	if err := ss.Flush(); err != nil {
		return nil, err
	}
	el, err := ss.cr.nextElement()
	if err != nil {
		return nil, ss.clientReadErr(err)
	}
	return el, nil
}

// clientReadErr classifies a failure to read the client's stream.
func (ss *session) clientReadErr(err error) error {
	var xe *xmlError
	switch {
	case errors.As(err, &xe):
		ss.Log.Info("client broke the XML rules", "condition", xe.cond, "reason", xe.text, "outcome", "closed")
		return &streamErr{cond: xe.cond, text: xe.text, err: protocols.ErrClientProtocol}
	case errors.Is(err, errStreamEnd):
		return &streamErr{err: fmt.Errorf("xmpp: %w", protocols.ErrClientQuit)}
	}
	return clientErr(err)
}

// readBackend flushes what is pending for the backend and reads its next
// first-level element. A stream error from the backend is relayed to the
// client and ends the session.
func (ss *session) readBackend() (*Element, error) {
	if err := ss.flushBackend(); err != nil {
		return nil, err
	}
	el, err := ss.br.nextElement()
	if err != nil {
		ss.backendUp = false
		return nil, backendErr(err)
	}
	if el.Name == (Name{nsStreams, "error"}) {
		ss.backendUp = false
		ss.relayStreamError(el)
		return nil, backendErr(errBackendStreamError)
	}
	return el, nil
}

// out queues text for the client; errors surface at the next flush.
func (ss *session) out(s string) { ss.Client.W.WriteString(s) }

func (ss *session) toBackend(s string) { ss.Backend.W.WriteString(s) }

func (ss *session) flushBackend() error {
	if err := ss.Backend.W.Flush(); err != nil {
		ss.backendUp = false
		return backendErr(err)
	}
	return nil
}

// fail turns the error that ended the session into what PreAuth returns,
// closing the client's stream with the fitting stream error where it is
// still open (RFC 6120 §4.9.1: the error, then the closing tag).
func (ss *session) fail(err error) error {
	if ss.Ctx.Err() != nil {
		// The proxy writes its goodbye (a stream error) after we return:
		// make sure the client has a stream header to read it in.
		ss.openClientStream()
		ss.Log.Debug("pre-auth cancelled")
		return fmt.Errorf("xmpp: %w", context.Cause(ss.Ctx))
	}
	var se *streamErr
	switch {
	case protocols.IsTimeout(err):
		ss.closeClient("connection-timeout", "Login timeout")
		ss.Log.Info("login timeout", "outcome", "timeout")
		err = fmt.Errorf("xmpp: %w", protocols.ErrLoginTimeout)
	case errors.As(err, &se):
		ss.closeClient(se.cond, se.text)
		ss.Log.Debug("pre-auth ended", "err", err)
	case errors.Is(err, protocols.ErrBackend):
		ss.closeClient("remote-connection-failed", "Service temporarily unavailable, try again later")
		ss.Log.Warn("backend failure before login", "err", err)
	case errors.Is(err, protocols.ErrClientQuit):
		ss.Told = true
		ss.Log.Debug("client went away before login")
	default:
		ss.closeClient("internal-server-error", "")
		ss.Log.Debug("pre-auth ended", "err", err)
	}
	ss.closeBackend()
	return err
}

// openClientStream sends our stream header if the client's current stream
// has none yet.
func (ss *session) openClientStream() {
	if ss.Told || ss.headerSent {
		return
	}
	ss.RawClient.SetWriteDeadline(time.Now().Add(protocols.FinalWriteTimeout))
	if ss.streamID == "" {
		ss.streamID = newStreamID()
	}
	ss.out(headerToClient(ss.from, ss.streamID, ss.lang))
	ss.headerSent = true
	ss.Client.W.Flush()
}

// closeClient ends the client's stream: our header first if it was not sent
// (RFC 6120 §4.9.1.2), the stream error unless cond is "", the closing tag.
// It uses a fresh short write deadline: the login deadline may have passed.
func (ss *session) closeClient(cond, text string) {
	if ss.Told {
		return
	}
	ss.openClientStream()
	ss.Told = true
	ss.RawClient.SetWriteDeadline(time.Now().Add(protocols.FinalWriteTimeout))
	if cond != "" {
		ss.out(streamError(cond, text))
	}
	ss.out(streamClose)
	ss.Client.W.Flush()
}

// closeBackend politely closes our stream to the backend, if it is open.
func (ss *session) closeBackend() {
	if !ss.backendUp {
		return
	}
	ss.backendUp = false
	ss.RawBackend.SetWriteDeadline(time.Now().Add(protocols.FinalWriteTimeout))
	ss.toBackend(streamClose)
	ss.Backend.W.Flush()
}

// clientErr wraps an I/O error on the client side; a closed connection is the
// client going away.
func clientErr(err error) error { return protocols.ClientError("xmpp", err) }

// backendErr wraps any backend-side failure in protocols.ErrBackend.
func backendErr(err error) error { return protocols.BackendError("xmpp", err) }

// short bounds client-chosen names in log lines.
func short(s string) string {
	if len(s) > 40 {
		return s[:40]
	}
	return s
}
