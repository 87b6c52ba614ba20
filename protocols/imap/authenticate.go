package imap

import (
	"errors"

	"github.com/mailgate/mailgate/protocols"
)

// authenticate handles "AUTHENTICATE mech [initial-response]" (RFC 9051
// §6.2.2, RFC 4959) with protocols.Dialogue.RelaySASL, which describes the
// exchange. Mechanisms the proxy cannot attribute are refused with NO.
func (ss *session) authenticate(cmd *command) (bool, error) {
	tag := cmd.tag
	sc := newArgScanner(cmd)
	var mechName string
	var ir []byte
	ok := sc.sp()
	if ok {
		mechName, ok = sc.atom()
	}
	hasIR := false
	if ok && sc.sp() {
		ir, ok = sc.rest()
		hasIR = true
		ok = ok && len(ir) > 0
	}
	if !ok || !sc.end() {
		return false, ss.answer(badCommand(tag, "Invalid AUTHENTICATE arguments"))
	}
	x, err := protocols.SASLOffer{HideCleartext: ss.loginDisabled()}.Exchange(mechName)
	switch {
	case errors.Is(err, protocols.ErrSASLNeedsTLS):
		return false, ss.reply(tag, "NO", privacyRequired)
	case err != nil:
		ss.SASLUnsupported(mechName)
		return false, ss.reply(tag, "NO", "[CANNOT] Unsupported authentication mechanism")
	}
	f := &saslFraming{SASLLines: protocols.SASLLines{Backend: ss.Backend}, ss: ss, tag: tag, mech: x.Mechanism()}
	return ss.RelaySASL(f, protocols.SASLRelay{Exchange: x, IR: ir, HasIR: hasIR, MaxRounds: ss.h.opts.saslRounds()})
}

// saslFraming is AUTHENTICATE on the wire: "+ base64" challenges, base64
// lines or "*" from the client, the tagged result.
type saslFraming struct {
	protocols.SASLLines
	ss   *session
	tag  string
	mech string
	last *response // the backend's response ReadBackend returned last
}

func (f *saslFraming) Challenge(data []byte) { f.ss.out("+ " + protocols.EncodeSASL(data) + "\r\n") }

func (f *saslFraming) RelayChallenge() { f.ss.outBytes(f.last.raw) }

// ReadResponse reads one client line, bounded to a base64 message of
// Limits.MaxLiteral octets (and never less than MaxLine).
func (f *saslFraming) ReadResponse() ([]byte, error) {
	lim := f.ss.Limits
	line, err := readLine(f.ss.Client.R, max(lim.MaxLine, (lim.MaxLiteral+2)/3*4+2))
	switch {
	case err == nil && string(line) == "*":
		return nil, protocols.AnswerCancelled
	case err == nil:
		return line, nil
	}
	if _, ok := protocols.AsLongLine(err); ok {
		return nil, protocols.AnswerTooLong
	}
	return nil, clientErr(err)
}

// Open sends the initial response only to a backend that takes one
// (SASL-IR), and never LOGIN's: not every server accepts it (MS-XLOGIN is
// an extension).
func (f *saslFraming) Open(mech string, ir []byte) (bool, error) {
	w := f.ss.Backend.W
	w.WriteString(f.tag + " AUTHENTICATE " + mech)
	sent := ir != nil && f.ss.backendSASLIR() && mech != protocols.SASLLogin
	if sent {
		w.WriteString(" ")
		w.Write(ir)
	}
	w.WriteString("\r\n")
	return sent, nil
}

// ReadBackend relays untagged responses and returns the continuation or
// the tagged result of the exchange.
func (f *saslFraming) ReadBackend() (protocols.SASLReply, error) {
	ss := f.ss
	for {
		res, err := ss.readBackend()
		if err != nil {
			return protocols.SASLReply{}, err
		}
		switch {
		case res.kind == respUntagged:
			ss.relayUntagged(res)
			continue
		case res.kind == respTagged && res.tag != f.tag:
			return protocols.SASLReply{}, backendErr(errUnexpectedTag)
		}
		f.last = res
		if res.kind == respContinuation {
			return protocols.SASLReply{Kind: protocols.ReplyChallenge, Payload: res.text()}, nil
		}
		return replyOf(res), nil
	}
}

func (f *saslFraming) Relay(outcome string) error { return f.ss.result(f.last, outcome) }

func (f *saslFraming) Deny(code string) error { return f.ss.deny(f.tag, code) }

// Answer: BAD, which counts, except for a cancel (RFC 9051 §6.2.2).
func (f *saslFraming) Answer(a protocols.SASLAnswer) error {
	if a == protocols.AnswerCancelled {
		return f.ss.reply(f.tag, "BAD", a.Text(f.mech))
	}
	return f.ss.answer(badCommand(f.tag, a.Text(f.mech)))
}
