package smtp

import "github.com/mailgate/mailgate/protocols"

// auth handles "AUTH mechanism [initial-response]" (RFC 4954 §4) with
// protocols.Dialogue.RelaySASL, which describes the exchange. Only
// mechanisms the backend offered and the proxy can attribute are taken.
func (ss *session) auth(cmd command) (bool, error) {
	switch {
	case ss.role == RoleMX:
		return false, ss.reject(503, "5.5.1", "Error: authentication not enabled")
	case ss.helo == "" || !ss.esmtp:
		return false, ss.reject(503, "5.5.1", "Error: send EHLO first")
	case ss.loginDisabled():
		return false, ss.reject(530, "5.7.0", "Must issue a STARTTLS command first")
	case len(attributableMechs(ss.ehlo.mechs)) == 0:
		return false, ss.reject(503, "5.5.1", "Error: authentication not enabled")
	}
	mechName, ir, hasIR, ok := splitAuth(cmd.arg)
	if !ok {
		return false, ss.reject(501, "5.5.4", "Syntax: AUTH mechanism [initial-response]")
	}
	x, err := protocols.SASLOffer{}.Exchange(mechName)
	if err != nil || !ss.ehlo.offers(x.Mechanism()) {
		ss.SASLUnsupported(mechName)
		return false, ss.reject(504, "5.5.4", "Unrecognized authentication type")
	}
	f := &saslFraming{SASLLines: protocols.SASLLines{Backend: ss.Backend}, ss: ss, mech: x.Mechanism()}
	return ss.RelaySASL(f, protocols.SASLRelay{Exchange: x, IR: ir, HasIR: hasIR, MaxRounds: ss.h.opts.saslRounds()})
}

// saslFraming is AUTH on the wire: "334 base64" challenges, base64 lines
// or "*" from the client, the final reply.
type saslFraming struct {
	protocols.SASLLines
	ss   *session
	mech string
	last *reply // the backend's reply ReadBackend returned last
}

func (f *saslFraming) Challenge(data []byte) {
	f.ss.outReply(newReply(334, protocols.EncodeSASL(data)))
}

func (f *saslFraming) RelayChallenge() { f.ss.outReply(f.last) }

func (f *saslFraming) ReadResponse() ([]byte, error) {
	line, err := f.ss.readClientLine(maxAuthLine)
	if _, ok := protocols.AsLongLine(err); ok {
		return nil, protocols.AnswerTooLong
	}
	if err == nil && string(line) == "*" {
		return nil, protocols.AnswerCancelled
	}
	return line, err
}

// Open puts the initial response on the AUTH line when the line stays
// within 512 octets; a longer one follows the backend's empty "334 "
// (RFC 4954 §4). LOGIN's never goes there: not every server takes it
// (MS-XLOGIN is an extension), so it answers the backend's "Username:".
func (f *saslFraming) Open(mech string, ir []byte) (bool, error) {
	if ir != nil && mech != protocols.SASLLogin && len("AUTH  \r\n")+len(mech)+len(ir) <= maxCommandLine {
		line := make([]byte, 0, len("AUTH  ")+len(mech)+len(ir))
		line = append(append(append(line, "AUTH "...), mech...), ' ')
		line = append(line, ir...)
		f.ss.toBackend(line)
		clear(line)
		return true, nil
	}
	f.ss.toBackend([]byte("AUTH " + mech))
	return false, nil
}

// ReadBackend classifies the reply (RFC 4954 §6): 334 a challenge (of one
// line), 2xx success, 4xx temporary, 500-504 a bad command or a cancel,
// other 5xx a refused credential. A 421 ends the session.
func (f *saslFraming) ReadBackend() (protocols.SASLReply, error) {
	ss := f.ss
	rep, err := ss.readBackend()
	switch {
	case err != nil:
		return protocols.SASLReply{}, err
	case rep.code == 421:
		return protocols.SASLReply{}, ss.relay(rep)
	case rep.code == 334 && len(rep.lines) == 1:
		f.last = rep
		return protocols.SASLReply{Kind: protocols.ReplyChallenge, Payload: []byte(rep.text())}, nil
	case rep.class() == 3:
		return protocols.SASLReply{}, backendErr(errUnexpected334)
	}
	f.last = rep
	out := protocols.SASLReply{Kind: protocols.ReplyFailure, Log: []any{"code", rep.code, "enhanced", rep.enhanced()}}
	switch {
	case rep.class() == 2:
		out = protocols.SASLReply{Kind: protocols.ReplySuccess}
	case rep.class() == 4:
		out.Kind = protocols.ReplyTemporary
	case countable(rep):
		out.Kind = protocols.ReplyRejected
	}
	return out, nil
}

// Relay passes the final reply on. Before the client can read a 235 the
// registry knows the user (the driver reported it); a bad command counts.
func (f *saslFraming) Relay(outcome string) error {
	switch outcome {
	case protocols.OutcomeSuccess:
		f.ss.outReply(f.last)
		return nil
	case protocols.OutcomeBad:
		return f.ss.relay(f.last)
	}
	f.ss.outReply(f.last)
	return f.ss.Flush()
}

func (f *saslFraming) Deny(code string) error { return f.ss.deny(code) }

func (f *saslFraming) Answer(a protocols.SASLAnswer) error {
	switch a {
	case protocols.AnswerCancelled:
		f.ss.outReply(newReply(501, "5.7.0 Authentication cancelled"))
		return f.ss.Flush()
	case protocols.AnswerNoIR:
		return f.ss.reject(501, "5.7.0", "Initial response not allowed for "+f.mech)
	case protocols.AnswerTooLong:
		return f.ss.reject(500, "5.5.6", "Authentication Exchange line is too long")
	case protocols.AnswerMalformed:
		return f.ss.reject(501, "5.5.2", "Malformed authentication data")
	}
	return f.ss.reject(501, "5.5.2", "Invalid base64 data")
}
