package protocols_test

import (
	"bytes"
	"encoding/base64"
	"errors"
	"strings"
	"testing"

	"github.com/mailgate/mailgate/protocols"
)

func TestDecodeSASL(t *testing.T) {
	tests := []struct {
		in      string
		want    string
		wantErr bool
	}{
		{in: "=", want: ""},
		{in: "", want: ""},
		{in: "dXNlcg==", want: "user"},
		{in: "dXNlcjE=", want: "user1"},
		{in: "dXNlcjEy", want: "user12"},
		{in: "AGJvYgBzZWNyZXQ=", want: "\x00bob\x00secret"},
		{in: "=AAA", wantErr: true},
		{in: "AAA=BBB", wantErr: true},
		{in: "AA=A", wantErr: true},
		{in: "AAAA====", wantErr: true},
		{in: "==", wantErr: true},
		{in: "dXNlcg", wantErr: true},       // missing padding
		{in: "dXNl\r\ncg==", wantErr: true}, // line breaks inside
		{in: "dXNl cg==", wantErr: true},
		{in: "dXNlcg==\n", wantErr: true},
		{in: "dXNlcR==", wantErr: true}, // non-canonical trailing bits
		{in: "*", wantErr: true},
		{in: "dXNl-g==", wantErr: true}, // URL alphabet
	}
	for _, tt := range tests {
		got, err := protocols.DecodeSASL([]byte(tt.in))
		if tt.wantErr {
			if !errors.Is(err, protocols.ErrSASLBase64) {
				t.Errorf("DecodeSASL(%q) = %q, %v, want ErrSASLBase64", tt.in, got, err)
			}
			continue
		}
		if err != nil || string(got) != tt.want {
			t.Errorf("DecodeSASL(%q) = %q, %v, want %q", tt.in, got, err, tt.want)
		}
	}
}

func TestEncodeSASL(t *testing.T) {
	if got := protocols.EncodeSASL(nil); got != "" {
		t.Errorf("EncodeSASL(nil) = %q, want empty", got)
	}
	if got := protocols.EncodeSASL([]byte("Username:")); got != "VXNlcm5hbWU6" {
		t.Errorf("EncodeSASL(Username:) = %q", got)
	}
}

func TestNewSASLExchangeUnsupported(t *testing.T) {
	for _, m := range []string{"GSSAPI", "DIGEST-MD5", "SCRAM-SHA-256-PLUS", "SCRAM-SHA-1-PLUS", "NTLM", "", "X"} {
		if _, err := protocols.NewSASLExchange(m); !errors.Is(err, protocols.ErrSASLMechanism) {
			t.Errorf("NewSASLExchange(%q) = %v, want ErrSASLMechanism", m, err)
		}
	}
	x, err := protocols.NewSASLExchange("scram-sha-256")
	if err != nil || x.Mechanism() != "SCRAM-SHA-256" {
		t.Fatalf("NewSASLExchange(scram-sha-256) = %v, %v", x, err)
	}
}

// event is one step of a SASL exchange in a table test: a challenge the
// client was sent, or a client message with its expected outcome.
type event struct {
	challenge  *string
	msg        string
	wantKnown  bool
	wantCred   bool
	wantErr    bool
	wantReason string
}

func chal(s string) event { return event{challenge: &s} }

const secret = "S3cr3t-Pa55"

func TestSASLExchange(t *testing.T) {
	tests := []struct {
		name      string
		mech      string
		events    []event
		wantUser  string
		wantAuthz string
	}{
		{name: "plain", mech: "PLAIN", wantUser: "bob",
			events: []event{{msg: "\x00bob\x00" + secret, wantKnown: true, wantCred: true}}},
		{name: "plain authzid", mech: "PLAIN", wantUser: "admin", wantAuthz: "alice",
			events: []event{{msg: "alice\x00admin\x00" + secret, wantKnown: true, wantCred: true}}},
		{name: "plain authzid same as authcid", mech: "PLAIN", wantUser: "bob",
			events: []event{{msg: "bob\x00bob\x00" + secret, wantKnown: true, wantCred: true}}},
		{name: "plain utf8 user", mech: "plain", wantUser: "jösé@example.org",
			events: []event{{msg: "\x00jösé@example.org\x00" + secret, wantKnown: true, wantCred: true}}},
		{name: "plain one NUL", mech: "PLAIN",
			events: []event{{msg: "bob\x00" + secret, wantErr: true, wantReason: "wrong number of fields"}}},
		{name: "plain three NULs", mech: "PLAIN",
			events: []event{{msg: "\x00bob\x00" + secret + "\x00x", wantErr: true}}},
		{name: "plain empty user", mech: "PLAIN",
			events: []event{{msg: "\x00\x00" + secret, wantErr: true, wantReason: "empty username"}}},
		{name: "plain empty password", mech: "PLAIN",
			events: []event{{msg: "\x00bob\x00", wantErr: true}}},
		{name: "plain empty", mech: "PLAIN", events: []event{{msg: "", wantErr: true}}},
		{name: "plain bad utf8", mech: "PLAIN",
			events: []event{{msg: "\x00b\xffob\x00" + secret, wantErr: true}}},
		{name: "plain second message", mech: "PLAIN", wantUser: "bob",
			events: []event{{msg: "\x00bob\x00" + secret, wantKnown: true, wantCred: true}, {msg: "", wantErr: true}}},

		{name: "login", mech: "LOGIN", wantUser: "bob",
			events: []event{chal("Username:"), {msg: "bob", wantKnown: true}, chal("Password:"), {msg: secret, wantCred: true}}},
		{name: "login initial response", mech: "LOGIN", wantUser: "bob",
			events: []event{{msg: "bob", wantKnown: true}, chal("Password:"), {msg: secret, wantCred: true}}},
		{name: "login empty initial response", mech: "LOGIN", wantUser: "bob",
			events: []event{{msg: ""}, chal("Username:"), {msg: "bob", wantKnown: true}, chal("Password:"), {msg: secret, wantCred: true}}},
		{name: "login empty username", mech: "LOGIN",
			events: []event{chal("Username:"), {msg: "", wantErr: true, wantReason: "empty username"}}},
		{name: "login empty IR then empty username", mech: "LOGIN",
			events: []event{{msg: ""}, chal("Username:"), {msg: "", wantErr: true}}},
		{name: "login third message", mech: "LOGIN", wantUser: "bob",
			events: []event{{msg: "bob", wantKnown: true}, {msg: secret, wantCred: true}, {msg: "x", wantErr: true}}},

		{name: "cram-md5", mech: "CRAM-MD5", wantUser: "tim",
			events: []event{chal("<1896.697170952@postoffice.reston.mci.net>"),
				{msg: "tim b913a602c7eda7a495b4e6e7334d3890", wantKnown: true, wantCred: true}}},
		{name: "cram-md5 user with spaces", mech: "CRAM-MD5", wantUser: "tim smith",
			events: []event{chal("<1@x>"), {msg: "tim smith B913A602C7EDA7A495B4E6E7334D3890", wantKnown: true, wantCred: true}}},
		{name: "cram-md5 before challenge", mech: "CRAM-MD5",
			events: []event{{msg: "tim b913a602c7eda7a495b4e6e7334d3890", wantErr: true}}},
		{name: "cram-md5 short digest", mech: "CRAM-MD5",
			events: []event{chal("<1@x>"), {msg: "tim b913a602", wantErr: true}}},
		{name: "cram-md5 no space", mech: "CRAM-MD5",
			events: []event{chal("<1@x>"), {msg: "timb913a602c7eda7a495b4e6e7334d3890", wantErr: true}}},
		{name: "cram-md5 empty user", mech: "CRAM-MD5",
			events: []event{chal("<1@x>"), {msg: " b913a602c7eda7a495b4e6e7334d3890", wantErr: true}}},

		{name: "scram-sha-256", mech: "SCRAM-SHA-256", wantUser: "user",
			events: []event{
				{msg: "n,,n=user,r=rOprNGfwEbeRWgbNEkqO", wantKnown: true},
				chal("r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"),
				{msg: "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=", wantCred: true},
				chal("v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="),
				{msg: ""},
			}},
		{name: "scram escaped names", mech: "SCRAM-SHA-1", wantUser: "a,b=c", wantAuthz: "x=y,z",
			events: []event{{msg: "y,a=x=3Dy=2cz,n=a=2Cb=3Dc,r=abc", wantKnown: true}}},
		{name: "scram channel binding flag", mech: "SCRAM-SHA-1", wantUser: "u",
			events: []event{{msg: "p=tls-server-end-point,,n=u,r=abc", wantKnown: true}}},
		{name: "scram reserved mext", mech: "SCRAM-SHA-1", wantUser: "u",
			events: []event{{msg: "n,,m=ext,n=u,r=abc", wantKnown: true}}},
		{name: "scram bad escape", mech: "SCRAM-SHA-1",
			events: []event{{msg: "n,,n=a=2Db,r=abc", wantErr: true, wantReason: "malformed saslname escape"}}},
		{name: "scram truncated escape", mech: "SCRAM-SHA-1",
			events: []event{{msg: "n,,n=ab=2,r=abc", wantErr: true}}},
		{name: "scram bad flag", mech: "SCRAM-SHA-1",
			events: []event{{msg: "x,,n=u,r=abc", wantErr: true, wantReason: "malformed GS2 header"}}},
		{name: "scram no nonce", mech: "SCRAM-SHA-1",
			events: []event{{msg: "n,,n=u", wantErr: true}}},
		{name: "scram empty nonce", mech: "SCRAM-SHA-1",
			events: []event{{msg: "n,,n=u,r=", wantErr: true}}},
		{name: "scram no user", mech: "SCRAM-SHA-1",
			events: []event{{msg: "n,,r=abc,n=u", wantErr: true}}},
		{name: "scram bad final", mech: "SCRAM-SHA-1", wantUser: "u",
			events: []event{{msg: "n,,n=u,r=abc", wantKnown: true}, chal("r=abcdef,s=c2FsdA==,i=4096"), {msg: "p=" + secret, wantErr: true}}},

		{name: "xoauth2", mech: "XOAUTH2", wantUser: "someuser@example.com",
			events: []event{{msg: "user=someuser@example.com\x01auth=Bearer " + secret + "\x01\x01", wantKnown: true, wantCred: true}}},
		{name: "xoauth2 failure dummy", mech: "XOAUTH2", wantUser: "u@x",
			events: []event{{msg: "user=u@x\x01auth=Bearer " + secret + "\x01\x01", wantKnown: true, wantCred: true},
				chal(`{"status":"401","schemes":"bearer","scope":"https://mail.google.com/"}`), {msg: ""}}},
		{name: "xoauth2 no auth", mech: "XOAUTH2",
			events: []event{{msg: "user=u@x\x01\x01", wantErr: true, wantReason: "missing auth=Bearer"}}},
		{name: "xoauth2 no terminator", mech: "XOAUTH2",
			events: []event{{msg: "user=u@x\x01auth=Bearer " + secret, wantErr: true}}},
		{name: "xoauth2 no user", mech: "XOAUTH2",
			events: []event{{msg: "auth=Bearer " + secret + "\x01\x01", wantErr: true}}},
		{name: "xoauth2 dummy without challenge", mech: "XOAUTH2", wantUser: "u@x",
			events: []event{{msg: "user=u@x\x01auth=Bearer " + secret + "\x01\x01", wantKnown: true, wantCred: true}, {msg: "", wantErr: true}}},

		{name: "oauthbearer", mech: "OAUTHBEARER", wantUser: "user@example.com",
			events: []event{{msg: "n,a=user@example.com,\x01host=server.example.com\x01port=143\x01auth=Bearer " + secret + "\x01\x01", wantKnown: true, wantCred: true}}},
		{name: "oauthbearer nonstandard user=", mech: "OAUTHBEARER", wantUser: "user@example.com",
			events: []event{{msg: "n,user=user@example.com,\x01auth=Bearer " + secret + "\x01\x01", wantKnown: true, wantCred: true}}},
		{name: "oauthbearer failure dummy", mech: "OAUTHBEARER", wantUser: "u@x",
			events: []event{{msg: "n,a=u@x,\x01auth=Bearer " + secret + "\x01\x01", wantKnown: true, wantCred: true},
				chal(`{"status":"invalid_token"}`), {msg: "\x01"}}},
		{name: "oauthbearer missing a=", mech: "OAUTHBEARER",
			events: []event{{msg: "n,,\x01auth=Bearer " + secret + "\x01\x01", wantErr: true, wantReason: "missing username"}}},
		{name: "oauthbearer bad kv", mech: "OAUTHBEARER",
			events: []event{{msg: "n,a=u,\x01auth\x01\x01", wantErr: true}}},

		{name: "external empty", mech: "EXTERNAL", events: []event{{msg: ""}}},
		{name: "external authzid", mech: "EXTERNAL", wantUser: "fred@example.com",
			events: []event{{msg: "fred@example.com", wantKnown: true}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			x, err := protocols.NewSASLExchange(tt.mech)
			if err != nil {
				t.Fatalf("NewSASLExchange(%q) = %v", tt.mech, err)
			}
			for i, ev := range tt.events {
				if ev.challenge != nil {
					x.Challenge([]byte(*ev.challenge))
					continue
				}
				step, err := x.Response([]byte(ev.msg))
				if ev.wantErr {
					var se *protocols.SASLError
					if !errors.As(err, &se) {
						t.Fatalf("event %d: Response() = %+v, %v, want *SASLError", i, step, err)
					}
					if ev.wantReason != "" && se.Reason != ev.wantReason {
						t.Errorf("event %d: reason = %q, want %q", i, se.Reason, ev.wantReason)
					}
					if strings.Contains(err.Error(), secret) || strings.Contains(err.Error(), "bob") {
						t.Errorf("event %d: error %q leaks message content", i, err)
					}
					break
				}
				if err != nil {
					t.Fatalf("event %d: Response() = %v", i, err)
				}
				if step.UserKnown != ev.wantKnown || step.Credential != ev.wantCred {
					t.Errorf("event %d: step = %+v, want UserKnown=%v Credential=%v", i, step, ev.wantKnown, ev.wantCred)
				}
			}
			if x.User() != tt.wantUser || x.AuthzID() != tt.wantAuthz || x.UserKnown() != (tt.wantUser != "") {
				t.Errorf("User, AuthzID, UserKnown = %q, %q, %v, want %q, %q", x.User(), x.AuthzID(), x.UserKnown(), tt.wantUser, tt.wantAuthz)
			}
		})
	}
}

func TestSASLLocalChallenge(t *testing.T) {
	tests := []struct {
		mech   string
		want   string
		wantOK bool
	}{
		{"PLAIN", "", true},
		{"LOGIN", "Username:", true},
		{"CRAM-MD5", "", false},
		{"SCRAM-SHA-256", "", true},
		{"XOAUTH2", "", true},
		{"OAUTHBEARER", "", true},
		{"EXTERNAL", "", true},
	}
	for _, tt := range tests {
		x, _ := protocols.NewSASLExchange(tt.mech)
		got, ok := x.LocalChallenge()
		if string(got) != tt.want || ok != tt.wantOK {
			t.Errorf("%s: LocalChallenge() = %q, %v, want %q, %v", tt.mech, got, ok, tt.want, tt.wantOK)
		}
		if x.ServerFirst() != (tt.mech == "CRAM-MD5") {
			t.Errorf("%s: ServerFirst() = %v", tt.mech, x.ServerFirst())
		}
	}
	// Once the naming message arrived there is nothing more to make up.
	x, _ := protocols.NewSASLExchange("LOGIN")
	x.Response([]byte("bob"))
	if _, ok := x.LocalChallenge(); ok {
		t.Error("LOGIN: LocalChallenge() ok after the username")
	}
	x, _ = protocols.NewSASLExchange("PLAIN")
	x.Response([]byte("\x00bob\x00pw"))
	if _, ok := x.LocalChallenge(); ok {
		t.Error("PLAIN: LocalChallenge() ok after the first message")
	}
}

var mechs = []string{"PLAIN", "LOGIN", "CRAM-MD5", "SCRAM-SHA-1", "SCRAM-SHA-256", "XOAUTH2", "OAUTHBEARER", "EXTERNAL"}

// FuzzSASL feeds arbitrary exchanges to every mechanism. It must never panic
// and errors must never contain the secret marker embedded in the messages.
func FuzzSASL(f *testing.F) {
	f.Add(uint8(0), []byte("\x00bob\x00"), []byte(""), true)
	f.Add(uint8(1), []byte("bob"), []byte(""), true)
	f.Add(uint8(2), []byte("tim "), []byte("b913a602c7eda7a495b4e6e7334d3890"), true)
	f.Add(uint8(3), []byte("n,,n=user,r="), []byte("c=biws,r=x,p="), true)
	f.Add(uint8(4), []byte("n,a=a=2Cb,n=u=3D,r=x"), []byte(""), false)
	f.Add(uint8(5), []byte("user=a@b\x01auth=Bearer "), []byte("\x01\x01"), true)
	f.Add(uint8(6), []byte("n,a=u@x,\x01auth=Bearer "), []byte("\x01\x01"), false)
	f.Add(uint8(7), []byte("authz"), []byte(""), true)
	f.Add(uint8(6), []byte("n,user=u,\x01"), []byte("\x01"), true)
	f.Fuzz(func(t *testing.T, m uint8, head, tail []byte, challenge bool) {
		const marker = "SEKRIT-MARKER"
		x, err := protocols.NewSASLExchange(mechs[int(m)%len(mechs)])
		if err != nil {
			t.Fatal(err)
		}
		if challenge {
			x.Challenge([]byte("<1@x>"))
		}
		msg := append(append(append([]byte{}, head...), marker...), tail...)
		for _, in := range [][]byte{msg, tail, msg} {
			if _, err := x.Response(in); err != nil {
				if strings.Contains(err.Error(), marker) {
					t.Fatalf("error leaks the message: %v", err)
				}
				var se *protocols.SASLError
				if !errors.As(err, &se) {
					t.Fatalf("Response error %T, want *SASLError", err)
				}
			}
			x.Challenge(nil)
		}
		if bytes.Contains([]byte(x.User()+x.AuthzID()), []byte{0}) {
			t.Fatalf("identity contains NUL")
		}
	})
}

// FuzzDecodeSASL checks DecodeSASL against encoding/base64 on every input.
func FuzzDecodeSASL(f *testing.F) {
	for _, s := range []string{"=", "", "dXNlcg==", "=AAA", "AAA=BBB", "dXNl\ncg==", "AAAA", "A==="} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		got, err := protocols.DecodeSASL(in)
		if err != nil {
			if err != protocols.ErrSASLBase64 {
				t.Fatalf("DecodeSASL error %v", err)
			}
			return
		}
		if len(in) <= 1 {
			if len(got) != 0 {
				t.Fatalf("DecodeSASL(%q) = %q, want empty", in, got)
			}
			return
		}
		// Whatever is accepted must round-trip to the same text.
		if enc := base64.StdEncoding.EncodeToString(got); enc != string(in) {
			t.Fatalf("DecodeSASL(%q) accepted a non-canonical form (re-encodes to %q)", in, enc)
		}
	})
}

func TestSASLResponseLine(t *testing.T) {
	x, err := protocols.NewSASLExchange(protocols.SASLPlain)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := x.ResponseLine([]byte("=AAA")); !errors.Is(err, protocols.ErrSASLBase64) {
		t.Errorf("ResponseLine(bad base64) = %v, want ErrSASLBase64", err)
	}
	if _, err := x.ResponseLine([]byte(protocols.EncodeSASL([]byte("no-nul")))); err == nil || errors.Is(err, protocols.ErrSASLBase64) {
		t.Errorf("ResponseLine(malformed PLAIN) = %v, want a SASLError", err)
	}
	step, err := x.ResponseLine([]byte(protocols.EncodeSASL([]byte("\x00alice\x00pw"))))
	if err != nil || !step.Credential || x.User() != "alice" {
		t.Errorf("ResponseLine(PLAIN) = %+v, %v; user %q", step, err, x.User())
	}
}
