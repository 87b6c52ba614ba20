package smtp_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/mailgate/mailgate/protocols"
	"github.com/mailgate/mailgate/protocols/protocoltest"
	"github.com/mailgate/mailgate/protocols/smtp"
)

func TestLineTooLong(t *testing.T) {
	h, b := greeted(t, smtp.Options{}, func(s *protocols.Session) { s.ClientTLS = true })
	c := h.c
	c.send("NOOP " + strings.Repeat("x", 600)) // over 512 with CRLF
	c.expect("500 5.5.2 Error: line too long")
	c.send("EHLO " + strings.Repeat("y", 20000))
	c.expect("500 5.5.2 Error: line too long")
	c.send("AUTH PLAIN " + strings.Repeat("A", 13000)) // over 12288
	c.expect("500 5.5.6 Authentication Exchange line is too long")
	c.ehlo("client.test")
	c.send("AUTH PLAIN")
	c.expect("334 ")
	c.send(strings.Repeat("A", 13000))
	c.expect("500 5.5.6")
	c.send("NOOP")
	c.expect("250")
	if got := b.rec.String(); strings.Contains(got, "xxxx") || strings.Contains(got, "yyyy") || strings.Contains(got, "AAAA") {
		t.Error("a long line reached the backend")
	}
}

// TestLongInitialResponse: an AUTH line between 512 and 12288 octets is
// taken (RFC 4954 §4), and sent to the backend after an empty challenge
// because it would not fit its command line.
func TestLongInitialResponse(t *testing.T) {
	b := newFakeBackend(t)
	b.token = strings.Repeat("t", 3000)
	h := newHarness(t, b.addr, smtp.Options{}, func(s *protocols.Session) { s.ClientTLS = true })
	c := h.c
	c.expect("220")
	c.ehlo("client.test")
	ir := b64("user=alice\x01auth=Bearer " + b.token + "\x01\x01")
	c.send("AUTH XOAUTH2 " + ir)
	c.expect("235")
	h.WantResult(nil)
	if got := b.rec.String(); !strings.HasSuffix(got, "AUTH XOAUTH2\r\n"+ir+"\r\n") {
		t.Errorf("backend received %q", got)
	}
}

func TestTooManyBadCommands(t *testing.T) {
	h, _ := greeted(t, smtp.Options{MaxBadCommands: 4})
	c := h.c
	c.send("FOO")
	c.expect("502 5.5.1")
	c.send("")
	c.expect("500 5.5.2 Error: bad syntax")
	c.send("MAIL FROM:<a@b>") // submission: login first
	c.expect("530 5.7.0 Authentication required")
	c.send("HELO") // no name
	lines := c.reply()
	if len(lines) != 1 || !strings.HasPrefix(lines[0], "501 5.5.4") {
		t.Fatalf("HELO without a name = %q", lines)
	}
	c.expect("421 4.7.0 proxy.test Error: too many errors")
	h.WantClosed(protocols.ErrTooManyBadCommands)
}

// TestDefaultBadCommandLimit: ten, like Dovecot's submission-login.
func TestDefaultBadCommandLimit(t *testing.T) {
	h, _ := greeted(t, smtp.Options{})
	c := h.c
	for i := 0; i < 9; i++ {
		c.send("BOGUS")
		c.expect("502")
	}
	h.Running()
	c.send("BOGUS")
	c.expect("502")
	c.expect("421")
	if err := h.Result(); !errors.Is(err, protocols.ErrTooManyBadCommands) {
		t.Fatalf("PreAuth() = %v", err)
	}
}

// TestBackendBadReplyCounts: the backend's 5xx syntax replies to forwarded
// commands count too.
func TestBackendBadReplyCounts(t *testing.T) {
	b := newFakeBackend(t, func(b *fakeBackend) { b.authResp = "504 5.5.4 Mechanism disabled here" })
	h := newHarness(t, b.addr, smtp.Options{MaxBadCommands: 2}, func(s *protocols.Session) { s.ClientTLS = true })
	c := h.c
	c.expect("220")
	c.ehlo("client.test")
	c.send("AUTH CRAM-MD5")
	c.expect("504 5.5.4 Mechanism disabled here")
	c.send("AUTH PLAIN " + b64("\x00alice\x00pass word"))
	c.expect("504 5.5.4 Mechanism disabled here")
	c.expect("421")
	if err := h.Result(); !errors.Is(err, protocols.ErrTooManyBadCommands) {
		t.Fatalf("PreAuth() = %v", err)
	}
}

func TestAuthSyntax(t *testing.T) {
	tests := []struct{ send, want string }{
		{"AUTH", "501 5.5.4"},
		{"AUTH PLAIN a b", "501 5.5.4"},
		{"AUTH  PLAIN", "501 5.5.4"},
		{"AUTH PLAIN !!!!", "501 5.5.2 Invalid base64 data"},
		{"AUTH PLAIN =AAA", "501 5.5.2 Invalid base64 data"},
		{"AUTH PLAIN " + b64("no-nul-here"), "501 5.5.2 Malformed authentication data"},
		{"AUTH PLAIN " + b64("\x00alice\x00"), "501 5.5.2 Malformed authentication data"},
		{"AUTH CRAM-MD5 " + b64("alice x"), "501 5.7.0 Initial response not allowed for CRAM-MD5"},
		{"AUTH GSSAPI", "504 5.5.4"},
		{"AUTH EXTERNAL =", "504 5.5.4"},
		{"AUTH SCRAM-SHA-256-PLUS " + b64("p=tls-unique,,n=alice,r=x"), "504 5.5.4"},
		{"AUTH X-VERY-LONG-MECHANISM-NAME-INDEED", "501 5.5.4"},
	}
	h, b := greeted(t, smtp.Options{MaxBadCommands: 100}, func(s *protocols.Session) { s.ClientTLS = true })
	c := h.c
	c.ehlo("client.test")
	for _, tt := range tests {
		c.send(tt.send)
		if l := c.reply(); len(l) != 1 || !strings.HasPrefix(l[0], tt.want) {
			t.Errorf("%q: reply %q, want %q", tt.send, l, tt.want)
		}
	}
	if got := b.rec.String(); got != "EHLO client.test\r\n" {
		t.Errorf("backend received %q", got)
	}
	h.WantEvents()
}

// TestAuthSequence: AUTH needs an EHLO (not HELO) in the current TLS
// phase, and a backend that offers AUTH at all.
func TestAuthSequence(t *testing.T) {
	b := newFakeBackend(t, func(b *fakeBackend) { b.exts = []string{"PIPELINING", "AUTH GSSAPI"} })
	h := newHarness(t, b.addr, smtp.Options{}, func(s *protocols.Session) { s.ClientTLS = true })
	c := h.c
	c.expect("220")
	c.send("AUTH PLAIN " + b64("\x00alice\x00pass word"))
	c.expect("503 5.5.1 Error: send EHLO first")
	c.send("HELO client.test")
	c.expect("250")
	c.send("AUTH PLAIN " + b64("\x00alice\x00pass word"))
	c.expect("503 5.5.1 Error: send EHLO first")
	kws := c.ehlo("client.test")
	if hasKW(kws, "AUTH") {
		t.Errorf("EHLO = %q, want no AUTH (GSSAPI cannot be attributed)", kws)
	}
	c.send("AUTH PLAIN " + b64("\x00alice\x00pass word"))
	c.expect("503 5.5.1 Error: authentication not enabled")
	if strings.Contains(b.rec.String(), "AUTH") {
		t.Errorf("backend received %q", b.rec.String())
	}
}

func TestLoginTimeout(t *testing.T) {
	b := newFakeBackend(t)
	h := newHarness(t, b.addr, smtp.Options{}, func(s *protocols.Session) { s.Limits.LoginTimeout = 300 * time.Millisecond })
	c := h.c
	// On a loaded machine the deadline may pass before the greeting is
	// relayed: the 421 is what matters.
	lines := c.reply()
	if strings.HasPrefix(lines[0], "220") {
		lines = c.reply()
	}
	if len(lines) != 1 || lines[0] != "421 4.4.2 proxy.test Error: timeout exceeded" {
		t.Fatalf("reply = %q, want the timeout's 421", lines)
	}
	h.WantResult(protocols.ErrLoginTimeout)
}

// TestLoginTimeoutMidExchange: a client that stalls inside AUTH is cut off
// too.
func TestLoginTimeoutMidExchange(t *testing.T) {
	h, _ := greeted(t, smtp.Options{}, func(s *protocols.Session) {
		s.Limits.LoginTimeout = 3 * time.Second // the steps before the stall take milliseconds
		s.ClientTLS = true
	})
	c := h.c
	c.ehlo("client.test")
	c.send("AUTH LOGIN " + b64("alice"))
	c.expect("334")
	c.write("cGFz") // half a line
	c.expect("421 4.4.2")
	h.WantResult(protocols.ErrLoginTimeout)
	h.WantEvents("attempt alice LOGIN", "fail alice LOGIN temporary")
}

func TestContextCancel(t *testing.T) {
	h, _ := greeted(t, smtp.Options{})
	h.Cancel()
	h.WantResult(context.Canceled)
	// Deadlines were cleared and nothing was written: the proxy says goodbye.
	smtp.New(smtp.Options{Hostname: "proxy.test"}).Goodbye(h.Session.Client.W, protocols.ByeShutdown)
	h.c.expect("421 4.7.0 proxy.test Server shutting down")
}

func TestBackendGreetings(t *testing.T) {
	tests := []struct {
		name     string
		greeting string
		want     []string
		wantErr  error // nil: the session goes on
	}{
		{"multi-line 220", "220-fake.test ESMTP\r\n220-second line\r\n220 last line",
			[]string{"220-fake.test ESMTP", "220-second line", "220 last line"}, nil},
		{"421", "421 4.3.2 fake.test Overloaded, try later", []string{"421 4.3.2 fake.test Overloaded, try later"}, protocols.ErrBackend},
		{"554", "554 5.7.1 fake.test No SMTP service for you", []string{"554 5.7.1 fake.test No SMTP service for you"}, nil},
		{"garbage", "HTTP/1.1 400 Bad Request", []string{"421 4.7.0 proxy.test Service not available, closing transmission channel"}, protocols.ErrBackend},
		{"mixed codes", "220-a\r\n250 b", []string{"421 4.7.0 proxy.test"}, protocols.ErrBackend},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := newFakeBackend(t, func(b *fakeBackend) { b.greeting = tt.greeting })
			h := newHarness(t, b.addr, smtp.Options{})
			got := h.c.reply()
			if len(got) != len(tt.want) {
				t.Fatalf("greeting = %q, want %q", got, tt.want)
			}
			for i := range got {
				if !strings.HasPrefix(got[i], tt.want[i]) {
					t.Fatalf("greeting = %q, want %q", got, tt.want)
				}
			}
			if tt.wantErr == nil {
				h.Running()
				h.c.send("QUIT")
				h.c.expect("221")
				if err := h.Result(); !errors.Is(err, protocols.ErrClientQuit) {
					t.Fatalf("PreAuth() after QUIT = %v", err)
				}
				return
			}
			h.WantClosed(tt.wantErr)
		})
	}
}

func TestBackend421DuringAuth(t *testing.T) {
	b := newFakeBackend(t, func(b *fakeBackend) { b.byeAuth = true })
	h := newHarness(t, b.addr, smtp.Options{}, func(s *protocols.Session) { s.ClientTLS = true })
	h.c.expect("220")
	h.c.ehlo("client.test")
	h.c.send("AUTH PLAIN " + b64("\x00alice\x00pass word"))
	h.c.expect("421 4.3.0 fake.test Server going down")
	h.WantClosed(protocols.ErrBackend)
	h.WantEvents("attempt alice PLAIN", "fail alice PLAIN temporary")
}

func TestClientDisconnect(t *testing.T) {
	h, _ := greeted(t, smtp.Options{})
	h.c.write("NOO")
	h.c.Conn.Close()
	h.WantResult(protocols.ErrClientQuit)
}

// TestSubmissionRefusesMailBeforeAuth: a submission port answers the mail
// commands itself before login; the backend never sees them.
func TestSubmissionRefusesMailBeforeAuth(t *testing.T) {
	h, b := greeted(t, smtp.Options{Role: smtp.RoleSubmission})
	c := h.c
	c.ehlo("client.test")
	for _, cmd := range []string{"MAIL FROM:<a@example.com>", "RCPT TO:<b@example.com>", "DATA", "VRFY alice", "BDAT 10 LAST"} {
		c.send(cmd)
		c.expect("530 5.7.0 Authentication required")
	}
	if got := b.rec.String(); got != "EHLO client.test\r\n" {
		t.Errorf("backend received %q", got)
	}
}

// TestPipelining: commands written in one go are answered in order, one
// reply each; after a failed AUTH the pipelined mail commands are refused,
// after a successful one they wait in Client.R for the relay (RFC 2920,
// RFC 4954 §4).
func TestPipelining(t *testing.T) {
	h, b := greeted(t, smtp.Options{}, func(s *protocols.Session) { s.ClientTLS = true })
	c := h.c
	c.write("EHLO client.test\r\nNOOP\r\nRSET\r\nNOOP\r\n")
	c.expect("250 ") // EHLO, multi-line
	c.expect("250 2.0.0")
	c.expect("250 2.0.0")
	c.expect("250 2.0.0")
	c.write("AUTH PLAIN " + b64("\x00alice\x00wrong") + "\r\nMAIL FROM:<alice@example.com>\r\nRCPT TO:<bob@example.com>\r\nDATA\r\n")
	c.expect("535")
	c.expect("530")
	c.expect("530")
	c.expect("530")
	c.write("AUTH PLAIN " + b64("\x00alice\x00pass word") + "\r\nMAIL FROM:<alice@example.com>\r\nRCPT TO:<bob@example.com>\r\n")
	c.expect("235")
	h.WantResult(nil)
	h.Session.Client.Conn.SetReadDeadline(time.Now().Add(ioTimeout))
	rest, _ := h.Session.Client.R.Peek(h.Session.Client.R.Buffered())
	if string(rest) != "MAIL FROM:<alice@example.com>\r\nRCPT TO:<bob@example.com>\r\n" {
		t.Fatalf("left in Client.R: %q", rest)
	}
	if got := b.rec.String(); strings.Contains(got, "MAIL") {
		t.Errorf("pipelined mail commands reached the backend before the verdict: %q", got)
	}
	h.WantEvents("attempt alice PLAIN", "fail alice PLAIN", "attempt alice PLAIN", "ok alice PLAIN")
}

// TestMXRelaysWithoutLogin: port 25 hides AUTH, and the first mail command
// hands the session to the relay without a login.
func TestMXRelaysWithoutLogin(t *testing.T) {
	h, b := greeted(t, smtp.Options{Role: smtp.RoleMX})
	c := h.c
	c.send("MAIL FROM:<x@remote.test>")
	c.expect("503 5.5.1 Error: send HELO/EHLO first")
	kws := c.ehlo("mta.remote.test")
	if hasKW(kws, "AUTH") || hasKW(kws, "XCLIENT") || !hasKW(kws, "STARTTLS") || !hasKW(kws, "PIPELINING") {
		t.Errorf("MX EHLO = %q", kws)
	}
	c.send("AUTH PLAIN " + b64("\x00alice\x00pass word"))
	c.expect("503 5.5.1 Error: authentication not enabled")
	c.write("MAIL FROM:<x@remote.test>\r\nRCPT TO:<alice@example.com>\r\nDATA\r\n")
	h.relay()
	c.expect("250") // MAIL
	c.expect("250") // RCPT
	c.expect("354")
	c.write("Subject: mx\r\n\r\nhi\r\n.\r\n")
	c.expect("250")
	h.WantEvents()
	if m := b.messages(); len(m) != 1 || m[0].user != "" || m[0].helo != "mta.remote.test" {
		t.Fatalf("delivered = %+v", m)
	}
	if strings.Contains(b.rec.String(), "AUTH") {
		t.Error("AUTH reached the MX backend")
	}
}

func TestRefuseAndGoodbye(t *testing.T) {
	h := smtp.New(smtp.Options{Hostname: "mx.test"})
	if h.Role() != smtp.RoleSubmission {
		t.Errorf("Role() = %q", h.Role())
	}
	protocoltest.Farewells{
		Protocol: "smtp",
		Refuse: map[string]string{
			protocols.RefuseUnavailable: "421 4.7.0 mx.test Service not available, closing transmission channel\r\n",
			protocols.RefuseBlocked:     "421 4.7.0 mx.test Service not available, access denied\r\n",
			protocols.RefuseLimit:       "421 4.7.0 mx.test Service not available, too many connections\r\n",
			protocols.RefuseShutdown:    "421 4.7.0 mx.test Service not available, server shutting down\r\n",
		},
		Goodbye: map[string]string{
			protocols.ByeDropped:  "421 4.7.0 mx.test Connection closed by administrator\r\n",
			protocols.ByeShutdown: "421 4.7.0 mx.test Server shutting down\r\n",
			protocols.ByeTimeout:  "421 4.4.2 mx.test Idle timeout, closing transmission channel\r\n",
		},
	}.Check(t, h)
	if r := smtp.New(smtp.Options{Role: "bogus"}).Role(); r != smtp.RoleSubmission {
		t.Errorf("unknown role became %q", r)
	}
}

// TestZeroHandlerAndSession: the zero Handler and a Session with zero
// Limits and no Observer, Gate or Log work with defaults.
func TestZeroHandlerAndSession(t *testing.T) {
	b := newFakeBackend(t)
	h := newHarnessWith(t, b.addr, new(smtp.Handler), func(s *protocols.Session) {
		protocoltest.ZeroSession(s)
		s.ClientTLS = true
	})
	h.c.expect("220")
	h.c.ehlo("client.test")
	h.c.send("AUTH PLAIN " + b64("\x00alice\x00pass word"))
	h.c.expect("235")
	h.WantResult(nil)
}

func TestQuit(t *testing.T) {
	h, _ := greeted(t, smtp.Options{})
	h.c.send("QUIT")
	h.c.expect("221 2.0.0 Bye")
	h.WantClosed(protocols.ErrClientQuit)
}
