package pop3

import (
	"bufio"
	"bytes"
	"testing"
)

// FuzzParseCommand runs the command parser and the argument splitters over
// arbitrary lines. They must not panic, and whatever they accept must be
// safe to forward: no control characters but TAB, a clean keyword, names
// that are UTF-8 without edge spaces, and an APOP digest of 32 hex digits.
func FuzzParseCommand(f *testing.F) {
	for _, s := range []string{
		"USER alice", "PASS pass word", "APOP mrose c4c9334bac560ecc979e58001b3e22fb",
		"APOP tim smith c4c9334bac560ecc979e58001b3e22fb", "AUTH PLAIN AGFsaWNlAHg=", "AUTH", "CAPA",
		"STLS", "QUIT", "", " ", "USER a\rPASS b", "user \xff\xfe", "AUTH PLAIN =", "AUTH  PLAIN",
		"XCLIENT ADDR=1.2.3.4", "\x00", "A B C D",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, line []byte) {
		cmd, err := parseCommand(line)
		if err != nil {
			return
		}
		for _, c := range line {
			if (c < 0x20 && c != '\t') || c == 0x7f {
				t.Fatalf("accepted control character %#x in %q", c, line)
			}
		}
		if cmd.name == "" || len(cmd.name) > maxKeyword || cmd.name != string(bytes.ToUpper([]byte(cmd.name))) {
			t.Fatalf("keyword %q from %q", cmd.name, line)
		}
		if !bytes.HasSuffix(line, cmd.args) {
			t.Fatalf("args %q are not the tail of %q", cmd.args, line)
		}
		if name, digest, ok := parseAPOP(cmd.args); ok {
			if !validName(name) || len(digest) != 32 {
				t.Fatalf("parseAPOP(%q) = %q %q", cmd.args, name, digest)
			}
		}
		if mech, ir, hasIR, ok := parseAUTH(cmd.args); ok {
			if mech == "" || bytes.IndexByte(ir, ' ') >= 0 || (hasIR && len(ir) == 0) {
				t.Fatalf("parseAUTH(%q) = %q %q %v", cmd.args, mech, ir, hasIR)
			}
		}
	})
}

// FuzzReadResponse reads arbitrary backend output as single- and
// multi-line responses. It must not panic or loop; what it returns respects
// the limits; and a body written back dot-stuffed reads back the same.
func FuzzReadResponse(f *testing.F) {
	for _, s := range []string{
		"+OK Capability list follows\r\nUSER\r\nSASL PLAIN LOGIN\r\nSTLS\r\n.\r\n",
		"+OK [XCLIENT] Dovecot ready. <1.2@h>\r\n",
		"-ERR [SYS/TEMP] later\r\n", "+ VXNlcm5hbWU6\r\n+\r\n", "+OK\r\n..\r\n...\r\n.\r\n",
		"+OK\r\n" + string(bytes.Repeat([]byte("x"), 100)) + "\r\n.\r\n", "+OK\nA\n.\n", "+OK\r\nA", "garbage\r\n",
		"-ERR [", "+OK\r\n.\r\n-ERR [AUTH] x\r\n",
	} {
		f.Add([]byte(s), true)
		f.Add([]byte(s), false)
	}
	lim := respLimits{line: 128, total: 512}
	f.Fuzz(func(t *testing.T, in []byte, multi bool) {
		r := bufio.NewReaderSize(bytes.NewReader(in), 16)
		for i := 0; ; i++ {
			if i > len(in)+1 {
				t.Fatal("reader made no progress")
			}
			res, err := readResponse(r, multi, lim)
			if err != nil {
				return
			}
			if len(res.line) > lim.line || (res.multi && (!multi || res.kind != respOK)) {
				t.Fatalf("response %+v breaks the limits or the shape", res)
			}
			total := len(res.line)
			for _, l := range res.body {
				total += len(l) + 2
				if bytes.IndexByte(l, '\n') >= 0 {
					t.Fatalf("body line %q holds a line break", l)
				}
			}
			if total > lim.total {
				t.Fatalf("body of %d octets over the %d limit", total, lim.total)
			}
			res.text()
			temporaryCode(res.code)
			if res.multi {
				wire := appendMulti(nil, res.line, res.body)
				back, err := readResponse(bufio.NewReader(bytes.NewReader(wire)), true, respLimits{line: 1 << 20, total: 1 << 20})
				if err != nil || len(back.body) != len(res.body) {
					t.Fatalf("round trip of %q: %+v, %v", wire, back, err)
				}
				for i := range back.body {
					if !bytes.Equal(back.body[i], res.body[i]) {
						t.Fatalf("round trip line %d: %q, want %q", i, back.body[i], res.body[i])
					}
				}
				rewriteCapa(res.body, capPolicy{offerSTLS: true, loginDisabled: true})
				filterMechList(res.body, capPolicy{})
			}
			rewriteGreeting(res.line)
			apopTimestamp(res.line)
		}
	})
}
