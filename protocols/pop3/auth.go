package pop3

import (
	"errors"

	"github.com/mailgate/mailgate/protocols"
)

// auth handles "AUTH mechanism [initial-response]" (RFC 5034 §4) with
// protocols.Dialogue.RelaySASL, which describes the exchange, and a bare
// "AUTH" (the mechanism listing). The backend always gets the message that
// named the user as the answer to its first challenge. Mechanisms the
// proxy cannot attribute are refused with -ERR.
func (ss *session) auth(cmd command) (bool, error) {
	if !cmd.hasArgs {
		return false, ss.mechList()
	}
	mechName, ir, hasIR, ok := parseAUTH(cmd.args)
	if !ok {
		return false, ss.badCmd("Invalid AUTH arguments")
	}
	x, err := ss.saslOffer().Exchange(mechName)
	switch {
	case errors.Is(err, protocols.ErrSASLNeedsTLS):
		return false, ss.reply(privacyRequired)
	case err != nil:
		ss.SASLUnsupported(mechName)
		return false, ss.reply("-ERR Unsupported authentication mechanism")
	}
	ss.forgetUser()
	f := &saslFraming{SASLLines: protocols.SASLLines{Backend: ss.Backend}, ss: ss, mech: x.Mechanism()}
	return ss.RelaySASL(f, protocols.SASLRelay{Exchange: x, IR: ir, HasIR: hasIR, MaxRounds: ss.opts.saslRounds})
}

// saslFraming is AUTH on the wire: "+ base64" challenges, base64 lines or
// "*" from the client, +OK or -ERR.
type saslFraming struct {
	protocols.SASLLines
	ss   *session
	mech string
	last *response // the backend's response ReadBackend returned last
}

func (f *saslFraming) Challenge(data []byte) { f.ss.out("+ " + protocols.EncodeSASL(data)) }

func (f *saslFraming) RelayChallenge() {
	f.ss.outBytes(f.last.line)
	f.ss.out("")
}

// ReadResponse reads one client line of up to a base64 message of
// Limits.MaxLiteral octets.
func (f *saslFraming) ReadResponse() ([]byte, error) {
	line, err := f.ss.readClientLine(f.ss.saslMax)
	switch {
	case errors.Is(err, protocols.ErrLineTooLong):
		return nil, protocols.AnswerTooLong
	case err == nil && string(line) == "*":
		return nil, protocols.AnswerCancelled
	}
	return line, err
}

// Open never sends an initial response: the backend's first challenge is
// answered instead, which every POP3 server takes.
func (f *saslFraming) Open(mech string, _ []byte) (bool, error) {
	f.ss.queueBackend("AUTH ", []byte(mech))
	return false, nil
}

func (f *saslFraming) ReadBackend() (protocols.SASLReply, error) {
	res, err := f.ss.readBackend(false)
	if err != nil {
		return protocols.SASLReply{}, err
	}
	f.last = res
	if res.kind == respCont {
		return protocols.SASLReply{Kind: protocols.ReplyChallenge, Payload: res.text()}, nil
	}
	return replyOf(res), nil
}

func (f *saslFraming) Relay(outcome string) error { return f.ss.result(f.last, outcome) }

func (f *saslFraming) Deny(code string) error { return f.ss.deny(code) }

// Answer: -ERR, which counts, except for a cancel (RFC 5034 §4).
func (f *saslFraming) Answer(a protocols.SASLAnswer) error {
	switch a {
	case protocols.AnswerCancelled:
		return f.ss.reply("-ERR " + a.Text(f.mech))
	case protocols.AnswerBadIR:
		return f.ss.badCmd("Invalid base64 data in initial response")
	case protocols.AnswerBadBase64:
		return f.ss.badCmd("Invalid base64 data")
	}
	return f.ss.badCmd(a.Text(f.mech))
}
