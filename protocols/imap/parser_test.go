package imap

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"strconv"
	"strings"
	"testing"
)

func TestSplitLiteral(t *testing.T) {
	tests := []struct {
		line    string
		text    string
		n       int64
		nonSync bool
		ok      bool
	}{
		{line: "a LOGIN {5}", text: "a LOGIN ", n: 5, ok: true},
		{line: "a LOGIN {5+}", text: "a LOGIN ", n: 5, nonSync: true, ok: true},
		{line: "a LOGIN {0}", text: "a LOGIN ", n: 0, ok: true},
		{line: "a APPEND x ~{12}", text: "a APPEND x ~", n: 12, ok: true},
		{line: "a LOGIN \"x {5}\"", text: "a LOGIN \"x {5}\"", ok: false},
		{line: "a LOGIN \"x {5}", text: "a LOGIN \"x {5}", ok: false},         // inside an open quoted string
		{line: "a LOGIN \"x\\\" {5}", text: "a LOGIN \"x\\\" {5}", ok: false}, // escaped quote keeps it open
		{line: "a LOGIN \"x\\\\\" {5}", text: "a LOGIN \"x\\\\\" ", n: 5, ok: true},
		{line: "a LOGIN {}", text: "a LOGIN {}", ok: false},
		{line: "a LOGIN {+}", text: "a LOGIN {+}", ok: false},
		{line: "a LOGIN {5a}", text: "a LOGIN {5a}", ok: false},
		{line: "a LOGIN {-5}", text: "a LOGIN {-5}", ok: false},
		{line: "a LOGIN {99999999999999999999}", text: "a LOGIN {99999999999999999999}", ok: false},
		{line: "}", text: "}", ok: false},
		{line: "", text: "", ok: false},
	}
	for _, tt := range tests {
		text, n, nonSync, ok := splitLiteral([]byte(tt.line))
		if string(text) != tt.text || n != tt.n || nonSync != tt.nonSync || ok != tt.ok {
			t.Errorf("splitLiteral(%q) = %q, %d, %v, %v, want %q, %d, %v, %v",
				tt.line, text, n, nonSync, ok, tt.text, tt.n, tt.nonSync, tt.ok)
		}
	}
}

func TestParseHead(t *testing.T) {
	tests := []struct {
		text     string
		tag      string
		name     string
		wantErr  bool
		wantText string
	}{
		{text: "a1 LOGIN x y", tag: "a1", name: "LOGIN"},
		{text: "a1 login", tag: "a1", name: "LOGIN"},
		{text: "A001 CAPABILITY", tag: "A001", name: "CAPABILITY"},
		{text: "x] NOOP", tag: "x]", name: "NOOP"},
		{text: "", wantErr: true, wantText: "Empty command line"},
		{text: "a+b NOOP", wantErr: true, wantText: "Invalid tag"},
		{text: "* NOOP", wantErr: true, wantText: "Invalid tag"},
		{text: "a(b NOOP", wantErr: true, wantText: "Invalid tag"},
		{text: " a NOOP", wantErr: true, wantText: "Invalid tag"},
		{text: "a", tag: "a", wantErr: true, wantText: "Missing command"},
		{text: "a ", tag: "a", wantErr: true, wantText: "Invalid command name"},
		{text: "a  NOOP", tag: "a", wantErr: true, wantText: "Invalid command name"},
		{text: "a \x01\x02", tag: "a", wantErr: true, wantText: "Invalid command name"},
		{text: "a (NOOP)", tag: "a", wantErr: true, wantText: "Invalid command name"},
		{text: "a \xff", tag: "a", wantErr: true},
	}
	for _, tt := range tests {
		tag, name, err := parseHead([]byte(tt.text))
		if (err != nil) != tt.wantErr {
			t.Errorf("parseHead(%q) error = %v, want error %v", tt.text, err, tt.wantErr)
			continue
		}
		if err != nil {
			if err.tag != tt.tag || (tt.wantText != "" && err.text != tt.wantText) || err.status != "BAD" {
				t.Errorf("parseHead(%q) = %+v, want tag %q text %q", tt.text, err, tt.tag, tt.wantText)
			}
			continue
		}
		if tag != tt.tag || name != tt.name {
			t.Errorf("parseHead(%q) = %q, %q, want %q, %q", tt.text, tag, name, tt.tag, tt.name)
		}
	}
}

// newCmdReader returns a command reader over input with small limits, and
// the buffer it writes back to (once its writer is flushed).
func newCmdReader(input string, refuse func(tag, name string) *cmdError) (*cmdReader, *bytes.Buffer) {
	out := &bytes.Buffer{}
	return &cmdReader{
		r:        bufio.NewReader(strings.NewReader(input)),
		w:        bufio.NewWriter(out),
		maxLine:  64,
		maxLit:   16,
		maxTotal: 64 + 32,
		refuse:   refuse,
	}, out
}

// readCmd runs the command reader over input and returns the command, what
// the reader wrote back and its error.
func readCmd(t *testing.T, input string, refuse func(tag, name string) *cmdError) (*command, string, error) {
	t.Helper()
	cr, out := newCmdReader(input, refuse)
	cmd, err := cr.read()
	cr.w.Flush()
	return cmd, out.String(), err
}

// loginArgs extracts LOGIN's two astrings.
func loginArgs(cmd *command) (string, string, bool) {
	sc := newArgScanner(cmd)
	if !sc.sp() {
		return "", "", false
	}
	u, ok := sc.astring()
	if !ok || !sc.sp() {
		return "", "", false
	}
	p, ok := sc.astring()
	if !ok || !sc.end() {
		return "", "", false
	}
	return string(u), string(p), true
}

func TestReadCommandLogin(t *testing.T) {
	tests := []struct {
		name     string
		input    string
		user     string
		pass     string
		wantOut  string
		badArgs  bool
		wantSegs int
	}{
		{name: "atoms", input: "a LOGIN fred secret\r\n", user: "fred", pass: "secret", wantSegs: 1},
		{name: "LF only", input: "a LOGIN fred secret\n", user: "fred", pass: "secret", wantSegs: 1},
		{name: "quoted", input: "a LOGIN \"fred smith\" \"se\\\"cr\\\\et\"\r\n", user: "fred smith", pass: "se\"cr\\et", wantSegs: 1},
		{name: "empty quoted", input: "a LOGIN \"\" \"\"\r\n", user: "", pass: "", wantSegs: 1},
		{name: "atom with bracket", input: "a LOGIN fr]ed x\r\n", user: "fr]ed", pass: "x", wantSegs: 1},
		{name: "sync literals", input: "a LOGIN {4}\r\nfred {6}\r\nsecret\r\n", user: "fred", pass: "secret",
			wantOut: "+ Ready for literal data\r\n+ Ready for literal data\r\n", wantSegs: 3},
		{name: "non-sync literals", input: "A001 LOGIN {11+}\r\nFRED FOOBAR {7+}\r\nfat man\r\n", user: "FRED FOOBAR", pass: "fat man", wantSegs: 3},
		{name: "literal with CRLF", input: "a LOGIN fred {4+}\r\na\r\nb\r\n", user: "fred", pass: "a\r\nb", wantSegs: 2},
		{name: "zero literal", input: "a LOGIN fred {0}\r\n\r\n", user: "fred", pass: "", wantOut: "+ Ready for literal data\r\n", wantSegs: 2},
		{name: "quoted then literal", input: "a LOGIN \"fred\" {3+}\r\nabc\r\n", user: "fred", pass: "abc", wantSegs: 2},
		{name: "bad escape", input: "a LOGIN \"fr\\ed\" x\r\n", badArgs: true, wantSegs: 1},
		{name: "unterminated", input: "a LOGIN \"fred x\r\n", badArgs: true, wantSegs: 1},
		{name: "three args", input: "a LOGIN a b c\r\n", badArgs: true, wantSegs: 1},
		{name: "one arg", input: "a LOGIN a\r\n", badArgs: true, wantSegs: 1},
		{name: "double space", input: "a LOGIN a  b\r\n", badArgs: true, wantSegs: 1},
		{name: "trailing space", input: "a LOGIN a b \r\n", badArgs: true, wantSegs: 1},
		{name: "parenthesis", input: "a LOGIN (a) b\r\n", badArgs: true, wantSegs: 1},
		{name: "literal glued", input: "a LOGIN {1+}\r\na{1+}\r\nb\r\n", badArgs: true, wantSegs: 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cmd, out, err := readCmd(t, tt.input, nil)
			if err != nil {
				t.Fatalf("read() = %v", err)
			}
			if out != tt.wantOut {
				t.Errorf("reader wrote %q, want %q", out, tt.wantOut)
			}
			if cmd.tag == "" || cmd.name != "LOGIN" || len(cmd.segs) != tt.wantSegs {
				t.Errorf("command = %q %q with %d segments, want LOGIN with %d", cmd.tag, cmd.name, len(cmd.segs), tt.wantSegs)
			}
			u, p, ok := loginArgs(cmd)
			if ok == tt.badArgs {
				t.Fatalf("loginArgs ok = %v, want %v", ok, !tt.badArgs)
			}
			if ok && (u != tt.user || p != tt.pass) {
				t.Errorf("loginArgs = %q, %q, want %q, %q", u, p, tt.user, tt.pass)
			}
			cmd.wipe()
			for _, s := range cmd.segs {
				if bytes.ContainsFunc(append(s.line, s.lit...), func(r rune) bool { return r != 0 }) {
					t.Errorf("wipe left bytes in %q / %q", s.line, s.lit)
				}
			}
		})
	}
}

func TestReadCommandErrors(t *testing.T) {
	refuseLogin := func(tag, name string) *cmdError {
		if name == "LOGIN" {
			return &cmdError{tag: tag, status: "NO", text: "refused"}
		}
		return nil
	}
	tests := []struct {
		name      string
		input     string
		refuse    func(tag, name string) *cmdError
		wantTag   string
		wantStat  string
		wantText  string
		wantBye   bool
		wantOut   string
		wantAfter string // what the next read returns as a command name
	}{
		{name: "long line", input: "a NOOP " + strings.Repeat("x", 100) + "\r\nb NOOP\r\n",
			wantTag: "a", wantStat: "BAD", wantText: "Line too long", wantAfter: "b NOOP"},
		{name: "long line no tag", input: strings.Repeat("x", 100) + "\r\nb NOOP\r\n",
			wantTag: "", wantStat: "BAD", wantText: "Line too long", wantAfter: "b NOOP"},
		{name: "long line with sync literal", input: "a LOGIN " + strings.Repeat("x", 100) + " {5}\r\nb NOOP\r\n",
			wantTag: "a", wantStat: "BAD", wantText: "Line too long", wantAfter: "b NOOP"},
		{name: "long line with non-sync literal", input: "a LOGIN " + strings.Repeat("x", 100) + " {5+}\r\nhello\r\n",
			wantTag: "a", wantStat: "BAD", wantBye: true},
		{name: "oversize sync literal", input: "a LOGIN {17}\r\nb NOOP\r\n",
			wantTag: "a", wantStat: "BAD", wantText: "[TOOBIG] Literal too large", wantAfter: "b NOOP"},
		{name: "oversize non-sync literal", input: "a LOGIN {1000+}\r\n",
			wantTag: "a", wantStat: "BAD", wantBye: true},
		{name: "command too long", input: "a X {16}\r\n" + strings.Repeat(strings.Repeat("y", 16)+" {16}\r\n", 4) + "b NOOP\r\n",
			wantTag: "a", wantStat: "BAD", wantText: "[TOOBIG] Command too long",
			wantOut: strings.Repeat("+ Ready for literal data\r\n", 4), wantAfter: "b NOOP"},
		{name: "refused before literal", input: "a LOGIN {4}\r\nb NOOP\r\n", refuse: refuseLogin,
			wantTag: "a", wantStat: "NO", wantText: "refused", wantAfter: "b NOOP"},
		{name: "refused non-sync literal drained", input: "a LOGIN {4+}\r\nfred {6+}\r\nsecret\r\nb NOOP\r\n", refuse: refuseLogin,
			wantTag: "a", wantStat: "NO", wantText: "refused", wantAfter: "b NOOP"},
		{name: "garbage after tag", input: "a \x00\x01\r\nb NOOP\r\n",
			wantTag: "a", wantStat: "BAD", wantAfter: "b NOOP"},
		{name: "garbage tag with literal", input: "a+ LOGIN {3+}\r\nabc\r\nb NOOP\r\n",
			wantTag: "", wantStat: "BAD", wantText: "Invalid tag", wantAfter: "b NOOP"},
		{name: "empty line", input: "\r\nb NOOP\r\n",
			wantTag: "", wantStat: "BAD", wantText: "Empty command line", wantAfter: "b NOOP"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cr, out := newCmdReader(tt.input, tt.refuse)
			_, err := cr.read()
			cr.w.Flush()
			var ce *cmdError
			if !errors.As(err, &ce) {
				t.Fatalf("read() = %v, want *cmdError", err)
			}
			if ce.tag != tt.wantTag || ce.status != tt.wantStat || (tt.wantText != "" && ce.text != tt.wantText) || (ce.bye != "") != tt.wantBye {
				t.Errorf("read() = %+v, want tag %q %s %q bye %v", ce, tt.wantTag, tt.wantStat, tt.wantText, tt.wantBye)
			}
			if out.String() != tt.wantOut {
				t.Errorf("reader wrote %q, want %q", out.String(), tt.wantOut)
			}
			if tt.wantAfter != "" {
				cmd, err := cr.read()
				if err != nil || cmd.tag+" "+cmd.name != tt.wantAfter {
					t.Errorf("next read() = %+v, %v, want %q", cmd, err, tt.wantAfter)
				}
			}
		})
	}
}

func TestReadCommandEOF(t *testing.T) {
	for _, in := range []string{"", "a NOOP", "a LOGIN {5+}\r\nab", "a LOGIN {2+}\r\nab"} {
		_, _, err := readCmd(t, in, nil)
		if err == nil || (!errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF)) {
			t.Errorf("read(%q) = %v, want EOF", in, err)
		}
	}
}

func TestParseResponseLine(t *testing.T) {
	tests := []struct {
		line    string
		kind    respKind
		tag     string
		status  string
		code    string
		keyword string
		text    string
		wantErr bool
	}{
		{line: "* OK [CAPABILITY IMAP4rev1 STARTTLS] Dovecot ready.", kind: respUntagged, status: "OK", code: "CAPABILITY", text: "Dovecot ready."},
		{line: "* PREAUTH IMAP4rev1 server logged in as Smith", kind: respUntagged, status: "PREAUTH", text: "IMAP4rev1 server logged in as Smith"},
		{line: "* BYE Autologout; idle for too long", kind: respUntagged, status: "BYE", text: "Autologout; idle for too long"},
		{line: "* CAPABILITY IMAP4rev1 AUTH=PLAIN", kind: respUntagged, keyword: "CAPABILITY"},
		{line: "* 3 EXISTS", kind: respUntagged, keyword: "3"},
		{line: "* ok [alert] hi", kind: respUntagged, status: "OK", code: "ALERT", text: "hi"},
		{line: "a1 OK [CAPABILITY IMAP4rev1] Logged in", kind: respTagged, tag: "a1", status: "OK", code: "CAPABILITY", text: "Logged in"},
		{line: "a1 NO [UNAVAILABLE] Backend down", kind: respTagged, tag: "a1", status: "NO", code: "UNAVAILABLE", text: "Backend down"},
		{line: "a1 NO [AUTHENTICATIONFAILED]", kind: respTagged, tag: "a1", status: "NO", code: "AUTHENTICATIONFAILED", text: ""},
		{line: "a1 BAD", kind: respTagged, tag: "a1", status: "BAD"},
		{line: "a[1 OK [CAPABILITY X] y", kind: respTagged, tag: "a[1", status: "OK", code: "CAPABILITY", text: "y"},
		{line: "a1 NO [broken text", kind: respTagged, tag: "a1", status: "NO", text: "[broken text"},
		{line: "+ dGVzdA==", kind: respContinuation, text: "dGVzdA=="},
		{line: "+ ", kind: respContinuation, text: ""},
		{line: "+", kind: respContinuation, text: ""},
		{line: "+x", wantErr: true},
		{line: "", wantErr: true},
		{line: "*", wantErr: true},
		{line: "* ", wantErr: true},
		{line: "a1 MAYBE", wantErr: true},
		{line: "a1", wantErr: true},
		{line: "a+1 OK", wantErr: true},
	}
	for _, tt := range tests {
		r, err := parseResponseLine([]byte(tt.line))
		if (err != nil) != tt.wantErr {
			t.Errorf("parseResponseLine(%q) = %v, %v", tt.line, r, err)
			continue
		}
		if err != nil {
			continue
		}
		if r.kind != tt.kind || r.tag != tt.tag || r.status != tt.status || r.code != tt.code || r.keyword != tt.keyword || string(r.text()) != tt.text {
			t.Errorf("parseResponseLine(%q) = kind %d tag %q status %q code %q keyword %q text %q", tt.line,
				r.kind, r.tag, r.status, r.code, r.keyword, r.text())
		}
	}
}

var testRespLimits = respLimits{line: 128, literal: 64, total: 256}

// readAll reads responses until the input ends.
func readAll(t *testing.T, input string) []*response {
	t.Helper()
	r := bufio.NewReader(strings.NewReader(input))
	var out []*response
	for {
		res, err := readResponse(r, testRespLimits)
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatalf("readResponse() after %d responses = %v", len(out), err)
		}
		out = append(out, res)
	}
}

func TestReadResponseLiteralsCannotFakeTagged(t *testing.T) {
	lit := "x\r\nA1 OK fake\r\n"
	input := "* ID (\"name\" {" + strconv.Itoa(len(lit)) + "}\r\n" + lit + " \"v\" {3}\r\nabc)\r\n" +
		"* OK [ALERT] text ending like a literal {5}\r\n" +
		"A1 NO real\r\n"
	rs := readAll(t, input)
	if len(rs) != 3 {
		t.Fatalf("got %d responses, want 3", len(rs))
	}
	if rs[0].keyword != "ID" || !strings.HasSuffix(string(rs[0].raw), "abc)\r\n") || !strings.Contains(string(rs[0].raw), lit) {
		t.Errorf("ID response raw = %q", rs[0].raw)
	}
	if rs[1].status != "OK" || rs[1].code != "ALERT" {
		t.Errorf("second response = %v", rs[1])
	}
	if rs[2].kind != respTagged || rs[2].tag != "A1" || rs[2].status != "NO" {
		t.Errorf("tagged response = %v, want A1 NO", rs[2])
	}
}

func TestReadResponseLimits(t *testing.T) {
	tests := []string{
		"* " + strings.Repeat("x", 200) + "\r\n",
		"* ID ({65}\r\n" + strings.Repeat("x", 65) + ")\r\n",
		"* ID ({60}\r\n" + strings.Repeat("x", 60) + " {60}\r\n" + strings.Repeat("x", 60) + " {60}\r\n" + strings.Repeat("x", 60) + " {60}\r\n" + strings.Repeat("x", 60) + " {60}\r\n",
		"* ID ({10}\r\nabc",
		"garbage\r\n",
	}
	for _, in := range tests {
		_, err := readResponse(bufio.NewReader(strings.NewReader(in)), testRespLimits)
		if err == nil {
			t.Errorf("readResponse(%.40q...) = nil error", in)
		}
	}
}

func TestRewriteCaps(t *testing.T) {
	backend := strings.Fields("IMAP4rev1 SASL-IR LITERAL+ STARTTLS LOGINDISABLED UNAUTHENTICATE AUTH=PLAIN AUTH=LOGIN AUTH=EXTERNAL AUTH=SCRAM-SHA-256 AUTH=SCRAM-SHA-256-PLUS AUTH=GSSAPI AUTH=XOAUTH2 AUTH=CRAM-MD5 ID")
	tests := []struct {
		name string
		p    capPolicy
		want string
	}{
		{name: "plain link, STARTTLS offered", p: capPolicy{offerStartTLS: true},
			want: "IMAP4rev1 SASL-IR LITERAL+ AUTH=PLAIN AUTH=LOGIN AUTH=SCRAM-SHA-256 AUTH=XOAUTH2 AUTH=CRAM-MD5 ID STARTTLS"},
		{name: "plain link, TLS required", p: capPolicy{offerStartTLS: true, loginDisabled: true},
			want: "IMAP4rev1 SASL-IR LITERAL+ AUTH=SCRAM-SHA-256 AUTH=CRAM-MD5 ID STARTTLS LOGINDISABLED"},
		{name: "TLS link", p: capPolicy{},
			want: "IMAP4rev1 SASL-IR LITERAL+ AUTH=PLAIN AUTH=LOGIN AUTH=SCRAM-SHA-256 AUTH=XOAUTH2 AUTH=CRAM-MD5 ID"},
	}
	for _, tt := range tests {
		if got := strings.Join(rewriteCaps(backend, tt.p), " "); got != tt.want {
			t.Errorf("%s: rewriteCaps() =\n %s\nwant\n %s", tt.name, got, tt.want)
		}
	}
}

func TestRewriteResponse(t *testing.T) {
	p := capPolicy{offerStartTLS: true}
	tests := []struct{ in, want string }{
		{"* OK [CAPABILITY IMAP4rev1 STARTTLS AUTH=PLAIN] Ready\r\n", "* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN STARTTLS] Ready\r\n"},
		{"* OK [CAPABILITY IMAP4rev1]\r\n", "* OK [CAPABILITY IMAP4rev1 STARTTLS]\r\n"},
		{"* CAPABILITY IMAP4rev1 UNAUTHENTICATE\r\n", "* CAPABILITY IMAP4rev1 STARTTLS\r\n"},
		{"a OK [CAPABILITY IMAP4rev2 UNAUTHENTICATE] Logged in\r\n", "a OK [CAPABILITY IMAP4rev2 STARTTLS] Logged in\r\n"},
		{"* OK Ready\r\n", "* OK Ready\r\n"},
		{"* OK [ALERT] Hello\r\n", "* OK [ALERT] Hello\r\n"},
		{"a NO [UNAVAILABLE] later\r\n", "a NO [UNAVAILABLE] later\r\n"},
	}
	for _, tt := range tests {
		rs := readAll(t, tt.in)
		if got := string(rewriteResponse(rs[0], p)); got != tt.want {
			t.Errorf("rewriteResponse(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestCmdBuilder(t *testing.T) {
	var b cmdBuilder
	b.raw("a LOGIN ")
	if err := b.str([]byte(`fr"ed\`)); err != nil {
		t.Fatal(err)
	}
	b.raw(" ")
	if err := b.str([]byte("pässword")); err != nil {
		t.Fatal(err)
	}
	segs := b.done()
	if len(segs) != 2 || string(segs[0].line) != `a LOGIN "fr\"ed\\" ` || string(segs[0].lit) != "pässword" || !segs[0].hasLit || string(segs[1].line) != "" {
		t.Errorf("segments = %+v", segs)
	}
	if err := b.str([]byte("a\x00b")); err == nil {
		t.Error("str with NUL: no error")
	}
}
