package pop3

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
)

func TestParseCommand(t *testing.T) {
	tests := []struct {
		line    string
		name    string
		args    string
		hasArgs bool
		err     error
	}{
		{line: "CAPA", name: "CAPA"},
		{line: "capa", name: "CAPA"},
		{line: "USER alice", name: "USER", args: "alice", hasArgs: true},
		{line: "PASS pass word ", name: "PASS", args: "pass word ", hasArgs: true},
		{line: "PASS", name: "PASS"},
		{line: "PASS ", name: "PASS", args: "", hasArgs: true},
		{line: "PASS tab\there", name: "PASS", args: "tab\there", hasArgs: true},
		{line: "AUTH PLAIN AGFsaWNl", name: "AUTH", args: "PLAIN AGFsaWNl", hasArgs: true},
		{line: "X-FOO bar", name: "X-FOO", args: "bar", hasArgs: true},
		{line: "USER pässword", name: "USER", args: "pässword", hasArgs: true},
		{line: "", err: errEmptyLine},
		{line: " USER alice", err: errKeyword},
		{line: "US!ER alice", err: errKeyword},
		{line: strings.Repeat("A", 17), err: errKeyword},
		{line: "USER a\rb", err: errCTL},
		{line: "USER a\x00b", err: errCTL},
		{line: "USER a\x7f", err: errCTL},
		{line: "USER a\x1b[31m", err: errCTL},
	}
	for _, tt := range tests {
		cmd, err := parseCommand([]byte(tt.line))
		if tt.err != nil {
			if !errors.Is(err, tt.err) {
				t.Errorf("parseCommand(%q) error = %v, want %v", tt.line, err, tt.err)
			}
			continue
		}
		if err != nil || cmd.name != tt.name || string(cmd.args) != tt.args || cmd.hasArgs != tt.hasArgs {
			t.Errorf("parseCommand(%q) = %q %q %v, %v; want %q %q %v", tt.line, cmd.name, cmd.args, cmd.hasArgs, err, tt.name, tt.args, tt.hasArgs)
		}
	}
}

func TestParseAPOP(t *testing.T) {
	const d = "c4c9334bac560ecc979e58001b3e22fb"
	tests := []struct {
		args, name string
		ok         bool
	}{
		{"mrose " + d, "mrose", true},
		{"tim smith " + strings.ToUpper(d), "tim smith", true},
		{"mrose", "", false},
		{"mrose " + d[:31], "", false},
		{"mrose " + d + "0", "", false},
		{"mrose " + d[:31] + "g", "", false},
		{" " + d, "", false},
		{"mrose  " + d, "", false}, // name ends in a space
		{"\xff " + d, "", false},
	}
	for _, tt := range tests {
		name, _, ok := parseAPOP([]byte(tt.args))
		if ok != tt.ok || string(name) != tt.name {
			t.Errorf("parseAPOP(%q) = %q, %v; want %q, %v", tt.args, name, ok, tt.name, tt.ok)
		}
	}
}

func TestParseAUTH(t *testing.T) {
	tests := []struct {
		args, mech, ir string
		hasIR, ok      bool
	}{
		{"PLAIN", "PLAIN", "", false, true},
		{"plain AGE=", "PLAIN", "AGE=", true, true},
		{"SCRAM-SHA-256 =", "SCRAM-SHA-256", "=", true, true},
		{"X_Y", "X_Y", "", false, true},
		{"PLAIN ", "", "", false, false},
		{"PLAIN a b", "", "", false, false},
		{" PLAIN", "", "", false, false},
		{"PL@IN", "", "", false, false},
		{strings.Repeat("M", 41), "", "", false, false},
	}
	for _, tt := range tests {
		mech, ir, hasIR, ok := parseAUTH([]byte(tt.args))
		if ok != tt.ok || mech != tt.mech || string(ir) != tt.ir || hasIR != tt.hasIR {
			t.Errorf("parseAUTH(%q) = %q %q %v %v; want %q %q %v %v", tt.args, mech, ir, hasIR, ok, tt.mech, tt.ir, tt.hasIR, tt.ok)
		}
	}
}

func TestParseStatus(t *testing.T) {
	tests := []struct {
		line string
		kind respKind
		code string
		text string
		err  bool
	}{
		{line: "+OK", kind: respOK},
		{line: "+OK Logged in.", kind: respOK, text: "Logged in."},
		{line: "+ok lenient", kind: respOK, text: "lenient"},
		{line: "-ERR", kind: respErr},
		{line: "-ERR [AUTH] Authentication failed.", kind: respErr, code: "AUTH", text: "[AUTH] Authentication failed."},
		{line: "-ERR [SYS/TEMP] later", kind: respErr, code: "SYS/TEMP"},
		{line: "-ERR [in-use] locked", kind: respErr, code: "IN-USE"},
		{line: "-ERR [LOGIN-DELAY/600]", kind: respErr, code: "LOGIN-DELAY/600"},
		{line: "-ERR [] empty", kind: respErr},
		{line: "-ERR [AU TH] spaced", kind: respErr},
		{line: "-ERR no code [AUTH]", kind: respErr},
		{line: "+", kind: respCont},
		{line: "+ ", kind: respCont},
		{line: "+ VXNlcm5hbWU6", kind: respCont, text: "VXNlcm5hbWU6"},
		{line: "+OKAY", err: true},
		{line: "-ERRORS", err: true},
		{line: "+VXNl", err: true},
		{line: "* OK imap", err: true},
		{line: "", err: true},
	}
	for _, tt := range tests {
		r, err := parseStatus([]byte(tt.line))
		if tt.err {
			if err == nil {
				t.Errorf("parseStatus(%q) = kind %v, want an error", tt.line, r.kind)
			}
			continue
		}
		if err != nil || r.kind != tt.kind || r.code != tt.code {
			t.Errorf("parseStatus(%q) = %+v, %v; want kind %v code %q", tt.line, r, err, tt.kind, tt.code)
			continue
		}
		if tt.text != "" && string(r.text()) != tt.text {
			t.Errorf("parseStatus(%q).text() = %q, want %q", tt.line, r.text(), tt.text)
		}
	}
}

func TestReadResponse(t *testing.T) {
	lim := respLimits{line: 64, total: 256}
	tests := []struct {
		name  string
		in    string
		multi bool
		body  []string
		kind  respKind
		rest  string // what must remain unread
		err   error
	}{
		{name: "single", in: "+OK hi\r\n+OK next\r\n", kind: respOK, rest: "+OK next\r\n"},
		{name: "multi", in: "+OK caps\r\nUSER\r\nSASL PLAIN\r\n.\r\n+OK next\r\n", multi: true, kind: respOK, body: []string{"USER", "SASL PLAIN"}, rest: "+OK next\r\n"},
		{name: "multi LF only", in: "+OK\nA\n.\n", multi: true, kind: respOK, body: []string{"A"}},
		{name: "dot-stuffed", in: "+OK\r\n..\r\n..x\r\n.y\r\n\r\n.\r\n", multi: true, kind: respOK, body: []string{".", ".x", "y", ""}},
		{name: "terminator-like line in body", in: "+OK\r\n. \r\n.\r\n", multi: true, kind: respOK, body: []string{" "}},
		{name: "multi -ERR is one line", in: "-ERR no\r\nUSER\r\n.\r\n", multi: true, kind: respErr, rest: "USER\r\n.\r\n"},
		{name: "continuation", in: "+ abc\r\n", multi: true, kind: respCont},
		{name: "unterminated", in: "+OK\r\nUSER\r\n", multi: true, err: io.EOF},
		{name: "cut line", in: "+OK\r\nUSER", multi: true, err: io.ErrUnexpectedEOF},
		{name: "long line", in: "+OK " + strings.Repeat("x", 100) + "\r\n", err: errResponseTooLong},
		{name: "long body", in: "+OK\r\n" + strings.Repeat(strings.Repeat("x", 50)+"\r\n", 6) + ".\r\n", multi: true, err: errResponseTooLong},
		{name: "garbage", in: "hello\r\n", err: errMalformedResponse},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := bufio.NewReader(strings.NewReader(tt.in))
			res, err := readResponse(r, tt.multi, lim)
			if tt.err != nil {
				if !errors.Is(err, tt.err) {
					t.Fatalf("readResponse() error = %v, want %v", err, tt.err)
				}
				return
			}
			if err != nil || res.kind != tt.kind {
				t.Fatalf("readResponse() = %+v, %v", res, err)
			}
			var body []string
			for _, l := range res.body {
				body = append(body, string(l))
			}
			if fmt.Sprintf("%q", body) != fmt.Sprintf("%q", tt.body) {
				t.Errorf("body = %q, want %q", body, tt.body)
			}
			rest, _ := io.ReadAll(r)
			if string(rest) != tt.rest {
				t.Errorf("unread = %q, want %q", rest, tt.rest)
			}
		})
	}
}

func TestAppendMultiRoundTrip(t *testing.T) {
	body := [][]byte{[]byte("."), []byte(".x"), []byte("y"), nil}
	wire := appendMulti(nil, []byte("+OK"), body)
	if want := "+OK\r\n..\r\n..x\r\ny\r\n\r\n.\r\n"; string(wire) != want {
		t.Fatalf("appendMulti = %q, want %q", wire, want)
	}
	res, err := readResponse(bufio.NewReader(strings.NewReader(string(wire))), true, respLimits{line: 64, total: 256})
	if err != nil || len(res.body) != 4 || string(res.body[0]) != "." || string(res.body[1]) != ".x" {
		t.Fatalf("read back %+v, %v", res, err)
	}
}

func TestRewriteCapa(t *testing.T) {
	in := []string{"TOP", "USER", "STLS", "sasl PLAIN login CRAM-MD5 GSSAPI EXTERNAL SCRAM-SHA-256-PLUS XOAUTH2 SCRAM-SHA-1",
		"XCLIENT", "xforward", "RESP-CODES", "", "IMPLEMENTATION Dovecot"}
	tests := []struct {
		name string
		p    capPolicy
		want string
	}{
		{"TLS link", capPolicy{}, "TOP|USER|SASL PLAIN login CRAM-MD5 XOAUTH2 SCRAM-SHA-1|RESP-CODES|IMPLEMENTATION Dovecot"},
		{"plain link", capPolicy{offerSTLS: true}, "TOP|USER|SASL PLAIN login CRAM-MD5 XOAUTH2 SCRAM-SHA-1|RESP-CODES|IMPLEMENTATION Dovecot|STLS"},
		{"plain link, TLS required", capPolicy{offerSTLS: true, loginDisabled: true}, "TOP|SASL CRAM-MD5 SCRAM-SHA-1|RESP-CODES|IMPLEMENTATION Dovecot|STLS"},
	}
	for _, tt := range tests {
		var lines [][]byte
		for _, l := range in {
			lines = append(lines, []byte(l))
		}
		var got []string
		for _, l := range rewriteCapa(lines, tt.p) {
			got = append(got, string(l))
		}
		if strings.Join(got, "|") != tt.want {
			t.Errorf("%s: rewriteCapa = %q, want %q", tt.name, got, tt.want)
		}
	}
	// A SASL line with nothing usable disappears.
	if got := rewriteCapa([][]byte{[]byte("SASL GSSAPI EXTERNAL")}, capPolicy{}); len(got) != 0 {
		t.Errorf("rewriteCapa(SASL GSSAPI EXTERNAL) = %q, want nothing", got)
	}
	if got := filterMechList([][]byte{[]byte("PLAIN"), []byte("GSSAPI"), []byte("cram-md5"), []byte("")}, capPolicy{loginDisabled: true}); len(got) != 1 || string(got[0]) != "cram-md5" {
		t.Errorf("filterMechList = %q", got)
	}
}

func TestRewriteGreeting(t *testing.T) {
	tests := []struct{ in, want string }{
		{"+OK [XCLIENT] Dovecot ready. <1.2@host>", "+OK Dovecot ready. <1.2@host>"},
		{"+OK [xclient]", "+OK"},
		{"+OK Dovecot ready.", "+OK Dovecot ready."},
		{"+OK [XCLIENTS] x", "+OK [XCLIENTS] x"},
		{"+OK text [XCLIENT]", "+OK text [XCLIENT]"},
		{"-ERR [XCLIENT]", "-ERR [XCLIENT]"},
	}
	for _, tt := range tests {
		if got := string(rewriteGreeting([]byte(tt.in))); got != tt.want {
			t.Errorf("rewriteGreeting(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestAPOPTimestamp(t *testing.T) {
	tests := []struct {
		greeting string
		want     bool
	}{
		{"+OK POP3 server ready <1896.697170952@dbc.mtview.ca.us>", true},
		{"+OK Dovecot ready. <4d2.1.5f2a@host>", true},
		{"+OK Dovecot ready.", false},
		{"+OK <no-at>", false},
		{"+OK <@host>", false},
		{"+OK <a@>", false},
		{"+OK <a b@c>", false},
		{"+OK <unterminated@x", false},
	}
	for _, tt := range tests {
		if got := apopTimestamp([]byte(tt.greeting)); got != tt.want {
			t.Errorf("apopTimestamp(%q) = %v, want %v", tt.greeting, got, tt.want)
		}
	}
}

func TestTemporaryCode(t *testing.T) {
	for code, want := range map[string]bool{
		"SYS/TEMP": true, "SYS/PERM": true, "IN-USE": true, "LOGIN-DELAY": true, "LOGIN-DELAY/900": true,
		"AUTH": false, "": false, "SYS": false, "IN-USED": false, "UTF8": false,
	} {
		if got := temporaryCode(code); got != want {
			t.Errorf("temporaryCode(%q) = %v, want %v", code, got, want)
		}
	}
}

func TestOptionsDefaults(t *testing.T) {
	r := Options{}.resolve()
	if r.cmdLine != 255 || r.preAuth != 65536 || r.respLine != 4096 || r.respTotal != 65536 || r.saslRounds != 8 {
		t.Errorf("defaults = %+v", r)
	}
	r = Options{MaxCommandLine: 512, MaxPreAuthBytes: 1, MaxResponseLine: 2, MaxResponseBytes: 3, MaxSASLRounds: 4}.resolve()
	if r.cmdLine != 512 || r.preAuth != 1 || r.respLine != 2 || r.respTotal != 3 || r.saslRounds != 4 {
		t.Errorf("explicit = %+v", r)
	}
}
