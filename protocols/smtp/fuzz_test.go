package smtp

import (
	"bufio"
	"bytes"
	"net/netip"
	"strings"
	"testing"
)

// FuzzParseCommand runs the command parser and the argument splitters over
// arbitrary lines. The verb is upper-case letters or empty, a CR or NUL is
// always refused, and the parts alias the line.
func FuzzParseCommand(f *testing.F) {
	for _, s := range []string{
		"EHLO client.test", "HELO [127.0.0.1]", "AUTH PLAIN AGFsaWNlAHNlY3JldA==", "AUTH LOGIN =", "AUTH",
		"MAIL FROM:<a@b> SIZE=10 BODY=8BITMIME", "STARTTLS", "XCLIENT ADDR=1.2.3.4", "", " ", "NOOP\r",
		"\x00", "AUTH PLAIN a b", "ehlo\tx", "AUTH " + strings.Repeat("M", 30) + " =",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, line []byte) {
		cmd, ok := parseCommand(line)
		if ok == (bytes.IndexByte(line, 0) >= 0 || bytes.IndexByte(line, '\r') >= 0) {
			t.Fatalf("parseCommand(%q) ok = %v", line, ok)
		}
		if !bytes.Equal(cmd.line, line) {
			t.Fatalf("line not kept: %q", cmd.line)
		}
		if cmd.verb != "" {
			if !ok || len(cmd.verb) > maxVerb || strings.ToUpper(cmd.verb) != cmd.verb || !bytes.HasPrefix(bytes.ToUpper(line), []byte(cmd.verb)) {
				t.Fatalf("verb %q from %q", cmd.verb, line)
			}
			for _, c := range []byte(cmd.verb) {
				if c < 'A' || c > 'Z' {
					t.Fatalf("verb %q from %q", cmd.verb, line)
				}
			}
			if len(cmd.arg) > 0 && !bytes.HasSuffix(line, cmd.arg) {
				t.Fatalf("arg %q not from %q", cmd.arg, line)
			}
		}
		if kv := knownVerb(cmd.verb); kv != "other" && kv != cmd.verb {
			t.Fatalf("knownVerb(%q) = %q", cmd.verb, kv)
		}
		if name := heloName(cmd.arg); strings.ContainsAny(name, " \t\r\n") {
			t.Fatalf("heloName(%q) = %q", cmd.arg, name)
		}
		mech, ir, hasIR, ok := splitAuth(cmd.arg)
		if ok && (mech == "" || len(mech) > maxMech || strings.Contains(mech, " ") || hasIR != (len(ir) > 0) || bytes.IndexByte(ir, ' ') >= 0) {
			t.Fatalf("splitAuth(%q) = %q %q %v", cmd.arg, mech, ir, hasIR)
		}
	})
}

// FuzzReadReply reads arbitrary backend output as replies (multi-line
// aware). It must not panic or loop; every reply it returns is consistent,
// writes back to itself, and rewrites into a valid EHLO reply that never
// shows XCLIENT, XFORWARD, a STARTTLS the policy did not ask for, or a
// mechanism the backend did not offer.
func FuzzReadReply(f *testing.F) {
	for _, s := range []string{
		"220 mx.test ESMTP\r\n",
		"220-mx.test\r\n220 second\r\n",
		"250-mx.test\r\n250-PIPELINING\r\n250-AUTH PLAIN LOGIN GSSAPI\r\n250-AUTH=PLAIN\r\n250-XCLIENT ADDR\r\n250 STARTTLS\r\n",
		"250\r\n334 \r\n334 VXNlcm5hbWU6\r\n",
		"535 5.7.8 no\r\n421 4.7.0 bye\n",
		"250-a\r\n251 b\r\n",
		"250-" + strings.Repeat("x", 80) + "\r\n",
		"999 x\r\n250 auth=plain\r\n",
	} {
		f.Add([]byte(s))
	}
	lim := replyLimits{line: 64, lines: 8}
	f.Fuzz(func(t *testing.T, in []byte) {
		r := bufio.NewReaderSize(bytes.NewReader(in), 16)
		for i := 0; ; i++ {
			if i > len(in)+1 {
				t.Fatal("reader made no progress")
			}
			rep, err := readReply(r, lim)
			if err != nil {
				return
			}
			if rep.code < 200 || rep.code > 599 || len(rep.lines) == 0 || len(rep.lines) > lim.lines {
				t.Fatalf("reply %+v", rep)
			}
			again, err := readReply(bufio.NewReader(bytes.NewReader(rep.bytes())), replyLimits{line: 1 << 20, lines: 1 << 10})
			if err != nil || again.code != rep.code || strings.Join(again.lines, "\n") != strings.Join(rep.lines, "\n") {
				t.Fatalf("reply %+v wrote %q, read back %+v, %v", rep, rep.bytes(), again, err)
			}
			if e := rep.enhanced(); e != "" && (int(e[0]-'0') != rep.class() || strings.Count(e, ".") != 2) {
				t.Fatalf("enhanced(%q) = %q", rep.text(), e)
			}
			info := parseEHLO(rep)
			for _, p := range []capPolicy{{}, {offerStartTLS: true}, {hideAuth: true}} {
				out := rewriteEHLO(rep, p)
				b := out.bytes()
				if !bytes.HasSuffix(b, []byte("\r\n")) || out.lines[0] != rep.lines[0] {
					t.Fatalf("rewriteEHLO(%q) = %q", rep.bytes(), b)
				}
				starttls := 0
				for _, l := range out.lines[1:] {
					kw, params := splitKeyword(l)
					switch {
					case kw == "XCLIENT" || kw == "XFORWARD":
						t.Fatalf("rewriteEHLO kept %q", l)
					case kw == "STARTTLS":
						starttls++
					case kw == "AUTH" || strings.HasPrefix(kw, "AUTH="):
						if p.hideAuth {
							t.Fatalf("AUTH shown with hideAuth: %q", l)
						}
						for _, m := range authParams(kw, params) {
							if !attributable(m) || !info.offers(m) {
								t.Fatalf("mechanism %q shown from %q", m, rep.bytes())
							}
						}
					}
				}
				if want := map[bool]int{true: 1, false: 0}[p.offerStartTLS]; starttls != want {
					t.Fatalf("STARTTLS shown %d times with %+v: %q", starttls, p, b)
				}
			}
		}
	})
}

// FuzzXCLIENTLine builds XCLIENT commands from arbitrary HELO names and
// attribute lists: one line, within 512 octets with CRLF, every value xtext.
func FuzzXCLIENTLine(f *testing.F) {
	f.Add("client.test", "NAME ADDR PORT PROTO HELO LOGIN DESTADDR DESTPORT", true)
	f.Add("a+b=c d\x00\r\n", "", false)
	f.Add(strings.Repeat("é", 300), "HELO", true)
	cli := netip.MustParseAddrPort("[2001:db8::1]:65535")
	loc := netip.MustParseAddrPort("192.0.2.1:25")
	f.Fuzz(func(t *testing.T, helo, listed string, esmtp bool) {
		line := xclientLine(cli, loc, esmtp, helo, strings.Fields(listed))
		if len(line)+2 > maxCommandLine || !strings.HasPrefix(line, "XCLIENT") {
			t.Fatalf("xclientLine = %q (%d octets)", line, len(line))
		}
		for _, c := range []byte(line) {
			if c < ' ' || c > '~' {
				t.Fatalf("xclientLine = %q holds %#x", line, c)
			}
		}
		for _, kv := range strings.Fields(line)[1:] {
			k, v, ok := strings.Cut(kv, "=")
			if !ok || k == "" || v == "" || strings.Contains(v, "=") {
				t.Fatalf("attribute %q in %q", kv, line)
			}
		}
	})
}
