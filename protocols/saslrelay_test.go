package protocols_test

import (
	"context"
	"encoding/base64"
	"errors"
	"strings"
	"testing"

	"github.com/mailgate/mailgate/protocols"
	"github.com/mailgate/mailgate/protocols/protocoltest"
)

// framing is a scripted SASLFraming that records what the driver asks of
// it.
type framing struct {
	client  []string // ReadResponse in turn: base64, or "*", "long", "left"
	backend []protocols.SASLReply
	takesIR bool
	calls   []string
}

func (f *framing) do(s string) { f.calls = append(f.calls, s) }

func (f *framing) Challenge(data []byte) { f.do("challenge " + string(data)) }
func (f *framing) RelayChallenge()       { f.do("relay challenge") }
func (f *framing) Respond(b64 []byte)    { f.do("respond " + string(b64)) }
func (f *framing) Cancel()               { f.do("cancel") }
func (f *framing) Relay(o string) error  { f.do("relay " + o); return nil }
func (f *framing) Deny(code string) error {
	f.do("deny " + code)
	return nil
}
func (f *framing) Answer(a protocols.SASLAnswer) error { f.do("answer " + a.Text("M")); return nil }

func (f *framing) Open(mech string, ir []byte) (bool, error) {
	sent := f.takesIR && ir != nil
	if sent {
		f.do("open " + mech + " " + string(ir))
	} else {
		f.do("open " + mech)
	}
	return sent, nil
}

func (f *framing) ReadResponse() ([]byte, error) {
	if len(f.client) == 0 {
		return nil, errors.New("client gone")
	}
	m := f.client[0]
	f.client = f.client[1:]
	switch m {
	case "*":
		return nil, protocols.AnswerCancelled
	case "long":
		return nil, protocols.AnswerTooLong
	case "left":
		return nil, protocols.AnswerLeft
	}
	return []byte(m), nil
}

func (f *framing) ReadBackend() (protocols.SASLReply, error) {
	if len(f.backend) == 0 {
		return protocols.SASLReply{}, protocols.BackendError("test", errors.New("closed"))
	}
	r := f.backend[0]
	f.backend = f.backend[1:]
	return r, nil
}

var (
	challenge = protocols.SASLReply{Kind: protocols.ReplyChallenge, Payload: []byte("PDFAeD4=")}
	success   = protocols.SASLReply{Kind: protocols.ReplySuccess}
	failure   = protocols.SASLReply{Kind: protocols.ReplyFailure}
	rejected  = protocols.SASLReply{Kind: protocols.ReplyRejected}
)

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

// TestRelaySASL pins the driver's phases and what it reports.
func TestRelaySASL(t *testing.T) {
	plain := b64("\x00alice\x00secret")
	oauth := b64("user=alice\x01auth=Bearer t\x01\x01")
	cram := b64("alice 0123456789abcdef0123456789abcdef")
	tests := []struct {
		name    string
		mech    string
		ir      string // "" for none
		deny    bool
		f       framing
		done    bool
		err     bool
		calls   string
		events  string
		noCalls string // never asked of the framing
	}{
		{name: "PLAIN with IR", mech: "PLAIN", ir: plain,
			f:    framing{takesIR: true, backend: []protocols.SASLReply{success}},
			done: true, calls: "open PLAIN " + plain + "|relay success", events: "attempt alice PLAIN|ok alice PLAIN"},
		{name: "PLAIN without IR, backend without IR", mech: "PLAIN",
			f:     framing{client: []string{plain}, backend: []protocols.SASLReply{challenge, failure}},
			calls: "challenge |open PLAIN|respond " + plain + "|relay failure", events: "attempt alice PLAIN|fail alice PLAIN"},
		{name: "refused before the credential", mech: "PLAIN", ir: plain,
			f:     framing{backend: []protocols.SASLReply{failure}},
			calls: "open PLAIN|relay refused", events: "attempt alice PLAIN|fail alice PLAIN temporary", noCalls: "respond"},
		{name: "gate refuses", mech: "PLAIN", ir: plain, deny: true,
			calls: "deny disabled", events: "attempt alice PLAIN", noCalls: "open"},
		{name: "CRAM-MD5", mech: "CRAM-MD5",
			f:     framing{client: []string{cram}, backend: []protocols.SASLReply{challenge, success}},
			done:  true,
			calls: "open CRAM-MD5|relay challenge|respond " + cram + "|relay success", events: "attempt alice CRAM-MD5|ok alice CRAM-MD5"},
		{name: "CRAM-MD5 refused by the gate is cancelled", mech: "CRAM-MD5", deny: true,
			f:     framing{client: []string{cram}, backend: []protocols.SASLReply{challenge, rejected}},
			calls: "open CRAM-MD5|relay challenge|cancel|deny disabled", events: "attempt alice CRAM-MD5", noCalls: "respond"},
		{name: "CRAM-MD5 cancelled by the client", mech: "CRAM-MD5",
			f:     framing{client: []string{"*"}, backend: []protocols.SASLReply{challenge, rejected}},
			calls: "open CRAM-MD5|relay challenge|cancel|relay cancelled", events: ""},
		{name: "CRAM-MD5 with IR", mech: "CRAM-MD5", ir: cram,
			calls: "answer Initial response not allowed for M", noCalls: "open"},
		{name: "local cancel", mech: "PLAIN",
			f:     framing{client: []string{"*"}},
			calls: "challenge |answer Authentication cancelled", noCalls: "open"},
		{name: "bad base64 locally", mech: "LOGIN",
			f:     framing{client: []string{"%%%%"}},
			calls: "challenge Username:|answer Invalid base64", noCalls: "open"},
		{name: "left locally", mech: "PLAIN",
			f:     framing{client: []string{"left"}},
			calls: "challenge ", noCalls: "answer"},
		{name: "cancel after the token still fails", mech: "XOAUTH2", ir: oauth,
			f:     framing{takesIR: true, client: []string{"*"}, backend: []protocols.SASLReply{challenge, rejected}},
			calls: "open XOAUTH2 " + oauth + "|relay challenge|cancel|relay failure", events: "attempt alice XOAUTH2|fail alice XOAUTH2"},
		{name: "cancel before the password is no failure", mech: "LOGIN", ir: b64("alice"),
			f:     framing{client: []string{"*"}, backend: []protocols.SASLReply{challenge, challenge, failure}},
			calls: "open LOGIN|respond " + b64("alice") + "|relay challenge|cancel|relay cancelled", events: "attempt alice LOGIN"},
		{name: "broken off after the credential", mech: "PLAIN", ir: plain,
			f:      framing{takesIR: true, client: []string{"long"}, backend: []protocols.SASLReply{challenge, rejected}},
			calls:  "open PLAIN " + plain + "|relay challenge|cancel|answer SASL message too long",
			events: "attempt alice PLAIN|fail alice PLAIN temporary"},
		{name: "left in the relayed phase", mech: "SCRAM-SHA-1", ir: b64("n,,n=alice,r=x"),
			f:     framing{takesIR: true, client: []string{"left"}, backend: []protocols.SASLReply{challenge, failure}},
			calls: "open SCRAM-SHA-1 " + b64("n,,n=alice,r=x") + "|relay challenge|cancel", events: "attempt alice SCRAM-SHA-1", noCalls: "answer"},
		{name: "success after a cancel", mech: "XOAUTH2", ir: oauth, err: true,
			f:      framing{takesIR: true, client: []string{"*"}, backend: []protocols.SASLReply{challenge, success}},
			events: "attempt alice XOAUTH2|fail alice XOAUTH2 temporary", noCalls: "relay success"},
		{name: "success before the credential", mech: "PLAIN", ir: plain, err: true,
			f:      framing{backend: []protocols.SASLReply{success}},
			events: "attempt alice PLAIN|fail alice PLAIN temporary", noCalls: "relay"},
		{name: "too many challenges", mech: "SCRAM-SHA-1", ir: b64("n,,n=alice,r=x"), err: true,
			f:      framing{takesIR: true, client: []string{"", "", ""}, backend: []protocols.SASLReply{challenge, challenge, challenge}},
			events: "attempt alice SCRAM-SHA-1|fail alice SCRAM-SHA-1 temporary"},
		{name: "backend gone", mech: "PLAIN", ir: plain, err: true,
			f:      framing{takesIR: true},
			events: "attempt alice PLAIN|fail alice PLAIN temporary"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			gate := protocoltest.NewGate()
			if tt.deny {
				gate.Set("alice", protocols.DenyDisabled)
			}
			s := protocoltest.FuzzSession(protocoltest.NewMemConn(nil, 143), protocoltest.NewMemConn(nil, 143), gate, protocols.Limits{})
			d := protocols.NewDialogue(context.Background(), s, "test")
			defer d.Finish()
			x, err := protocols.NewSASLExchange(tt.mech)
			if err != nil {
				t.Fatal(err)
			}
			f := tt.f
			done, err := d.RelaySASL(&f, protocols.SASLRelay{Exchange: x, IR: []byte(tt.ir), HasIR: tt.ir != "", MaxRounds: 2})
			if done != tt.done || (err != nil) != tt.err {
				t.Errorf("RelaySASL() = %v, %v; want %v, error %v", done, err, tt.done, tt.err)
			}
			if tt.err && !errors.Is(err, protocols.ErrBackend) {
				t.Errorf("error %v does not wrap ErrBackend", err)
			}
			calls := strings.Join(f.calls, "|")
			if tt.calls != "" && calls != tt.calls {
				t.Errorf("calls = %q\nwant    %q", calls, tt.calls)
			}
			if tt.noCalls != "" && strings.Contains(calls, tt.noCalls) {
				t.Errorf("calls = %q, want no %q", calls, tt.noCalls)
			}
			if got := strings.Join(s.Observer.(*protocoltest.Observer).Events(), "|"); got != tt.events {
				t.Errorf("events = %q, want %q", got, tt.events)
			}
		})
	}
}
