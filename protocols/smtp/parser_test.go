package smtp

import (
	"bufio"
	"errors"
	"io"
	"net/netip"
	"strings"
	"testing"

	"github.com/mailgate/mailgate/protocols"
)

func TestParseCommand(t *testing.T) {
	tests := []struct {
		line string
		verb string
		arg  string
		ok   bool
	}{
		{"EHLO client.test", "EHLO", "client.test", true},
		{"ehlo client.test", "EHLO", "client.test", true},
		{"MAIL FROM:<a@b> SIZE=10", "MAIL", "FROM:<a@b> SIZE=10", true},
		{"QUIT", "QUIT", "", true},
		{"STARTTLS ", "STARTTLS", "", true},
		{"AUTH  PLAIN", "AUTH", " PLAIN", true},
		{"", "", "", true},
		{" NOOP", "", "", true},
		{"NO0P", "", "", true},
		{"wrong-pw", "", "", true},
		{"ABCDEFGHIJKLMNOPQ", "", "", true}, // 17 letters
		{"NOOP\rRSET", "", "", false},
		{"NOOP \x00", "", "", false},
		{"MAIL FROM:<ü@example.com>", "MAIL", "FROM:<ü@example.com>", true},
	}
	for _, tt := range tests {
		cmd, ok := parseCommand([]byte(tt.line))
		if cmd.verb != tt.verb || string(cmd.arg) != tt.arg || ok != tt.ok || string(cmd.line) != tt.line {
			t.Errorf("parseCommand(%q) = %q %q %v, want %q %q %v", tt.line, cmd.verb, cmd.arg, ok, tt.verb, tt.arg, tt.ok)
		}
	}
}

func TestSplitAuth(t *testing.T) {
	tests := []struct {
		arg, mech, ir string
		hasIR, ok     bool
	}{
		{"PLAIN", "PLAIN", "", false, true},
		{"PLAIN AGEAYg==", "PLAIN", "AGEAYg==", true, true},
		{"LOGIN =", "LOGIN", "=", true, true},
		{"", "", "", false, false},
		{"PLAIN ", "", "", false, false},
		{" PLAIN", "", "", false, false},
		{"PLAIN a b", "", "", false, false},
		{"PLAIN a  ", "", "", false, false},
		{strings.Repeat("X", 21), "", "", false, false},
	}
	for _, tt := range tests {
		mech, ir, hasIR, ok := splitAuth([]byte(tt.arg))
		if mech != tt.mech || string(ir) != tt.ir || hasIR != tt.hasIR || ok != tt.ok {
			t.Errorf("splitAuth(%q) = %q %q %v %v, want %q %q %v %v", tt.arg, mech, ir, hasIR, ok, tt.mech, tt.ir, tt.hasIR, tt.ok)
		}
	}
}

func TestHeloName(t *testing.T) {
	for arg, want := range map[string]string{"client.test": "client.test", "  [127.0.0.1] extra": "[127.0.0.1]", "": "", "   ": ""} {
		if got := heloName([]byte(arg)); got != want {
			t.Errorf("heloName(%q) = %q, want %q", arg, got, want)
		}
	}
}

func TestReadReply(t *testing.T) {
	lim := replyLimits{line: 64, lines: 4}
	tests := []struct {
		in      string
		code    int
		lines   []string
		err     error
		enhance string
	}{
		{in: "220 mx.test ESMTP\r\n", code: 220, lines: []string{"mx.test ESMTP"}},
		{in: "250-mx.test\r\n250-PIPELINING\r\n250 AUTH PLAIN\r\n", code: 250, lines: []string{"mx.test", "PIPELINING", "AUTH PLAIN"}},
		{in: "250\r\n", code: 250, lines: []string{""}},
		{in: "334 \r\n", code: 334, lines: []string{""}},
		{in: "235 2.7.0 Authentication successful\n", code: 235, lines: []string{"2.7.0 Authentication successful"}, enhance: "2.7.0"},
		{in: "535 5.7.8 Error\r\n", code: 535, lines: []string{"5.7.8 Error"}, enhance: "5.7.8"},
		{in: "454 5.7.0 mismatched class\r\n", code: 454, lines: []string{"5.7.0 mismatched class"}},
		{in: "250 2.0.0Ok\r\n", code: 250, lines: []string{"2.0.0Ok"}},
		{in: "250-a\r\n251 b\r\n", err: errMalformedReply},
		{in: "250-a\r\n", err: io.EOF},
		{in: "2500 x\r\n", err: errMalformedReply},
		{in: "150 x\r\n", err: errMalformedReply},
		{in: "25 x\r\n", err: errMalformedReply},
		{in: "x\r\n", err: errMalformedReply},
		{in: "250-a\r\n250-b\r\n250-c\r\n250-d\r\n250 e\r\n", err: errReplyTooLong},
		{in: "250 " + strings.Repeat("x", 100) + "\r\n", err: errReplyTooLong},
		{in: "250 cut", err: io.ErrUnexpectedEOF},
	}
	for _, tt := range tests {
		r, err := readReply(bufio.NewReaderSize(strings.NewReader(tt.in), 16), lim)
		if tt.err != nil {
			if !errors.Is(err, tt.err) {
				t.Errorf("readReply(%q) = %v, want %v", tt.in, err, tt.err)
			}
			continue
		}
		if err != nil || r.code != tt.code || strings.Join(r.lines, "|") != strings.Join(tt.lines, "|") || r.enhanced() != tt.enhance {
			t.Errorf("readReply(%q) = %+v (enhanced %q), %v", tt.in, r, r.enhanced(), err)
		}
	}
}

func TestReplyBytes(t *testing.T) {
	r := &reply{code: 250, lines: []string{"mx.test", "PIPELINING", ""}}
	if got := string(r.bytes()); got != "250-mx.test\r\n250-PIPELINING\r\n250 \r\n" {
		t.Errorf("bytes() = %q", got)
	}
	if got := string(newReply(334, "").bytes()); got != "334 \r\n" {
		t.Errorf("empty challenge = %q", got)
	}
}

func TestRewriteEHLO(t *testing.T) {
	backend := &reply{code: 250, lines: []string{
		"mx.test Hello client",
		"PIPELINING",
		"SIZE 10240000",
		"STARTTLS",
		"auth PLAIN login GSSAPI SCRAM-SHA-256-PLUS SCRAM-SHA-256 EXTERNAL xoauth2",
		"AUTH=PLAIN LOGIN NTLM",
		"XCLIENT NAME ADDR PORT",
		"XFORWARD NAME ADDR",
		"ENHANCEDSTATUSCODES",
		"REQUIRETLS",
	}}
	tests := []struct {
		name string
		p    capPolicy
		want []string
	}{
		{"plain link, STARTTLS offered", capPolicy{offerStartTLS: true}, []string{
			"mx.test Hello client", "PIPELINING", "SIZE 10240000",
			"auth PLAIN LOGIN SCRAM-SHA-256 XOAUTH2", "AUTH=PLAIN LOGIN", "ENHANCEDSTATUSCODES", "STARTTLS"}},
		{"TLS link", capPolicy{clientTLS: true}, []string{
			"mx.test Hello client", "PIPELINING", "SIZE 10240000",
			"auth PLAIN LOGIN SCRAM-SHA-256 XOAUTH2", "AUTH=PLAIN LOGIN", "ENHANCEDSTATUSCODES", "REQUIRETLS"}},
		{"AUTH hidden", capPolicy{offerStartTLS: true, hideAuth: true}, []string{
			"mx.test Hello client", "PIPELINING", "SIZE 10240000", "ENHANCEDSTATUSCODES", "STARTTLS"}},
	}
	for _, tt := range tests {
		got := rewriteEHLO(backend, tt.p)
		if got.code != 250 || strings.Join(got.lines, "|") != strings.Join(tt.want, "|") {
			t.Errorf("%s: rewriteEHLO = %q, want %q", tt.name, got.lines, tt.want)
		}
	}
	// Only a greeting line left: the reply is a single "250 " line.
	only := rewriteEHLO(&reply{code: 250, lines: []string{"mx.test", "XCLIENT ADDR", "AUTH GSSAPI"}}, capPolicy{})
	if got := string(only.bytes()); got != "250 mx.test\r\n" {
		t.Errorf("rewriteEHLO of nothing usable = %q", got)
	}

	info := parseEHLO(backend)
	want := "PLAIN LOGIN GSSAPI SCRAM-SHA-256-PLUS SCRAM-SHA-256 EXTERNAL XOAUTH2 NTLM"
	if got := strings.Join(info.mechs, " "); got != want || !info.startTLS || !info.xclient || strings.Join(info.xclientArgs, " ") != "NAME ADDR PORT" {
		t.Errorf("parseEHLO = %+v, want mechanisms %q", info, want)
	}
	if !info.offers("plain") || info.offers("CRAM-MD5") {
		t.Error("offers() is wrong")
	}
}

func TestXCLIENTLine(t *testing.T) {
	cli := netip.MustParseAddrPort("192.0.2.7:50123")
	loc := netip.MustParseAddrPort("[::ffff:198.51.100.1]:587")
	tests := []struct {
		name   string
		client netip.AddrPort
		esmtp  bool
		helo   string
		listed []string
		want   string
	}{
		{"Postfix attribute list", cli, true, "client.test", []string{"NAME", "ADDR", "PORT", "PROTO", "HELO", "LOGIN", "DESTADDR", "DESTPORT"},
			"XCLIENT ADDR=192.0.2.7 PORT=50123 DESTADDR=198.51.100.1 DESTPORT=587 PROTO=ESMTP HELO=client.test"},
		{"no list", cli, false, "old", nil, "XCLIENT ADDR=192.0.2.7 PORT=50123 PROTO=SMTP HELO=old"},
		{"only ADDR", cli, true, "x", []string{"addr"}, "XCLIENT ADDR=192.0.2.7"},
		{"IPv6", netip.MustParseAddrPort("[2001:db8::1]:25"), true, "[IPv6:2001:db8::1]", []string{"ADDR", "HELO"},
			"XCLIENT ADDR=IPV6:2001:db8::1 HELO=[IPv6:2001:db8::1]"},
		{"xtext", cli, true, "a+b=c d\x01é", []string{"HELO"}, "XCLIENT HELO=a+2Bb+3Dc+20d+01+C3+A9"},
		{"unknown client", netip.AddrPort{}, true, "x", []string{"ADDR", "PORT"}, "XCLIENT ADDR=[UNAVAILABLE]"},
		{"long HELO", cli, true, strings.Repeat("\x7f", 200), []string{"HELO"}, "XCLIENT HELO=[UNAVAILABLE]"},
	}
	for _, tt := range tests {
		got := xclientLine(tt.client, loc, tt.esmtp, tt.helo, tt.listed)
		if got != tt.want {
			t.Errorf("%s: xclientLine = %q, want %q", tt.name, got, tt.want)
		}
		if len(got)+2 > maxCommandLine {
			t.Errorf("%s: %d octets", tt.name, len(got))
		}
	}
}

func TestReadLine(t *testing.T) {
	r := bufio.NewReaderSize(strings.NewReader("short\r\n"+strings.Repeat("x", 40)+"\r\nbare lf\nnext"), 16)
	if l, err := readLine(r, 20); err != nil || string(l) != "short" {
		t.Fatalf("readLine = %q, %v", l, err)
	}
	_, err := readLine(r, 20)
	if le, ok := protocols.AsLongLine(err); !ok || string(le.Head) != strings.Repeat("x", headKeep) {
		t.Fatalf("readLine of a long line = %v", err)
	}
	if l, err := readLine(r, 20); err != nil || string(l) != "bare lf" {
		t.Fatalf("readLine after a long line = %q, %v", l, err)
	}
	if _, err := readLine(r, 20); err != io.ErrUnexpectedEOF {
		t.Fatalf("readLine of a cut line = %v", err)
	}
}
