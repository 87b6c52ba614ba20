package imap

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"testing"
)

// FuzzReadCommand runs the command reader over arbitrary client input until
// it is consumed. It must not panic or loop, must honour the limits, and every
// continuation request it writes must be the literal go-ahead.
func FuzzReadCommand(f *testing.F) {
	seeds := []string{
		"a LOGIN fred secret\r\n",
		"a LOGIN \"fred smith\" \"se\\\"cr\\\\et\"\r\n",
		"a LOGIN {4}\r\nfred {6}\r\nsecret\r\n",
		"A001 LOGIN {11+}\r\nFRED FOOBAR {7+}\r\nfat man\r\n",
		"a AUTHENTICATE PLAIN AGZyZWQAc2VjcmV0\r\n",
		"a ID (\"name\" {3+}\r\nabc \"x-originating-ip\" NIL)\r\n",
		"a LOGIN {100000}\r\nb NOOP\r\n",
		"a LOGIN {100000+}\r\n",
		"a LOGIN \"x {5}\r\n",
		"* NOOP\r\n\r\na\r\na \x00\r\n",
		"a STARTTLS\r\nb LOGIN x y\r\n",
		"a LOGIN {5+}\r\nab",
		"a NOOP {99999999999999999999}\r\n",
	}
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		var out bytes.Buffer
		cr := cmdReader{
			r:        bufio.NewReaderSize(bytes.NewReader(in), 16),
			w:        bufio.NewWriter(&out),
			maxLine:  64,
			maxLit:   32,
			maxTotal: 128,
			refuse: func(tag, name string) *cmdError {
				if name == "STARTTLS" {
					return badCommand(tag, "no literal")
				}
				return nil
			},
		}
		for i := 0; ; i++ {
			if i > len(in)+1 {
				t.Fatalf("reader made no progress after %d commands", i)
			}
			cmd, err := cr.read()
			if err != nil {
				var ce *cmdError
				if errors.As(err, &ce) {
					if ce.bye != "" {
						break
					}
					continue
				}
				if err != io.EOF && err != io.ErrUnexpectedEOF {
					t.Fatalf("read() = %v", err)
				}
				break
			}
			total := 0
			for i, s := range cmd.segs {
				total += len(s.line) + len(s.lit)
				if len(s.line) > 64 || len(s.lit) > 32 || s.hasLit == (i == len(cmd.segs)-1) {
					t.Fatalf("segment %d out of bounds: %d/%d bytes, literal %v", i, len(s.line), len(s.lit), s.hasLit)
				}
			}
			if total > 128+64 || !isTag([]byte(cmd.tag)) || cmd.name == "" {
				t.Fatalf("bad command %q %q (%d bytes)", cmd.tag, cmd.name, total)
			}
			// Exercise the argument scanner the way LOGIN and ID do.
			sc := newArgScanner(cmd)
			for sc.sp() {
				if _, ok := sc.astring(); !ok {
					break
				}
			}
			parseID(cmd)
			cmd.wipe()
		}
		cr.w.Flush()
		if rest := bytes.ReplaceAll(out.Bytes(), []byte("+ Ready for literal data\r\n"), nil); len(rest) != 0 {
			t.Fatalf("reader wrote %q", rest)
		}
	})
}

// FuzzReadResponse reads arbitrary backend output. It must not panic or
// loop; whatever it returns is consistent; and a tagged line hidden in a
// literal is never returned as a response.
func FuzzReadResponse(f *testing.F) {
	seeds := []string{
		"* OK [CAPABILITY IMAP4rev1 STARTTLS AUTH=PLAIN] ready\r\n",
		"* CAPABILITY IMAP4rev1 SASL-IR\r\na1 OK done\r\n",
		"* ID (\"name\" {14}\r\nx\r\nA1 OK fake\r\n)\r\nA1 NO real\r\n",
		"+ dGVzdA==\r\n+\r\n+ \r\n",
		"* BYE bye\r\n",
		"a1 NO [UNAVAILABLE] later\r\n",
		"* OK text {5}\r\n",
		"* 1 FETCH (BODY[] {3}\r\nabc)\r\n",
		"* ID ({999999}\r\n",
		"a1 OK [CAPABILITY\r\n",
		"garbage\r\n",
	}
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	lim := respLimits{line: 128, literal: 64, total: 256}
	f.Fuzz(func(t *testing.T, in []byte) {
		r := bufio.NewReaderSize(bytes.NewReader(in), 16)
		for i := 0; ; i++ {
			if i > len(in)+1 {
				t.Fatal("reader made no progress")
			}
			res, err := readResponse(r, lim)
			if err != nil {
				return
			}
			if len(res.raw) > lim.total+lim.line+2 || !bytes.HasPrefix(res.raw, res.line) {
				t.Fatalf("raw %q inconsistent with line %q", res.raw, res.line)
			}
			switch res.kind {
			case respTagged:
				if !isTag([]byte(res.tag)) || (res.status != "OK" && res.status != "NO" && res.status != "BAD") {
					t.Fatalf("tagged response %q: tag %q status %q", res.line, res.tag, res.status)
				}
				if bytes.IndexByte(res.raw[:len(res.raw)-2], '\n') >= 0 {
					t.Fatalf("tagged response spans lines: %q", res.raw)
				}
			case respContinuation:
				if res.line[0] != '+' {
					t.Fatalf("continuation %q", res.line)
				}
			}
			caps, _ := capsOf(res)
			rewriteCaps(caps, capPolicy{offerStartTLS: true, loginDisabled: true})
			rewriteResponse(res, capPolicy{offerStartTLS: true})
			res.text()
		}
	})
}

// FuzzParseResponseLine checks the pure classifier, including the response
// code bounds used when rewriting.
func FuzzParseResponseLine(f *testing.F) {
	for _, s := range []string{"* OK [CAPABILITY A B] x", "a[ OK [CAPABILITY]", "+", "* 1 EXISTS", "t NO [", "a OK [X] ]"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, line []byte) {
		res, err := parseResponseLine(line)
		if err != nil {
			return
		}
		res.raw = append(append([]byte{}, line...), '\r', '\n')
		res.text()
		res.codeArgs()
		rewriteResponse(res, capPolicy{offerStartTLS: true, loginDisabled: true})
	})
}
