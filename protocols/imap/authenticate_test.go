package imap_test

import (
	"crypto/hmac"
	"crypto/md5"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"hash"
	"strings"
	"testing"

	"github.com/mailgate/mailgate/protocols"
	"github.com/mailgate/mailgate/protocols/protocoltest"
)

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

func unb64(t *testing.T, s string) string {
	t.Helper()
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		t.Fatalf("bad base64 %q from proxy: %v", s, err)
	}
	return string(b)
}

// challenge reads a "+ " continuation and decodes it.
func (c *tclient) challenge() string {
	c.T.Helper()
	l := c.expect("+ ")
	return unb64(c.T, l[2:])
}

const goodToken = "vF9dft4qmTc2Nvb3RlckBhbHRhdmlzdGEuY29tCg=="

func scramFlow(h func() hash.Hash, user, pass string, withIR bool) func(*testing.T, *tclient) {
	return func(t *testing.T, c *tclient) {
		bare := "n=" + user + ",r=fyko+d2lbbFgONRv9qkxdawL"
		first := "n,," + bare
		mech := "SCRAM-SHA-256"
		if h().Size() == sha1.Size {
			mech = "SCRAM-SHA-1"
		}
		if withIR {
			c.send("a AUTHENTICATE " + mech + " " + b64(first))
		} else {
			c.send("a AUTHENTICATE " + mech)
			if got := c.challenge(); got != "" {
				t.Fatalf("first challenge = %q, want empty", got)
			}
			c.send(b64(first))
		}
		serverFirst := c.challenge()
		final, wantV := protocoltest.SCRAMClientFinal(h, pass, bare, serverFirst)
		c.send(b64(final))
		if pass != "pencil" {
			return // wrong password: the backend answers NO right away
		}
		if v := c.challenge(); v != wantV {
			t.Fatalf("server-final = %q, want %q", v, wantV)
		}
		c.send("")
	}
}

func TestAuthenticate(t *testing.T) {
	plainIR := b64("\x00alice\x00pass word")
	tests := []struct {
		name    string
		noIR    bool // backend without SASL-IR
		run     func(*testing.T, *tclient)
		result  string
		events  []string
		backend []string // substrings the backend must have received, in order
		never   []string // substrings the backend must not have received
	}{
		{name: "PLAIN IR, backend SASL-IR",
			run:    func(t *testing.T, c *tclient) { c.send("a AUTHENTICATE PLAIN " + plainIR) },
			result: "a OK", events: []string{"attempt alice PLAIN", "ok alice PLAIN"},
			backend: []string{"a AUTHENTICATE PLAIN " + plainIR + "\r\n"}},
		{name: "PLAIN IR, backend without SASL-IR", noIR: true,
			run:    func(t *testing.T, c *tclient) { c.send("a AUTHENTICATE PLAIN " + plainIR) },
			result: "a OK", events: []string{"attempt alice PLAIN", "ok alice PLAIN"},
			backend: []string{"a AUTHENTICATE PLAIN\r\n", plainIR + "\r\n"}},
		{name: "PLAIN without IR, backend SASL-IR",
			run: func(t *testing.T, c *tclient) {
				c.send("a AUTHENTICATE PLAIN")
				c.challenge()
				c.send(plainIR)
			},
			result: "a OK", events: []string{"attempt alice PLAIN", "ok alice PLAIN"},
			backend: []string{"a AUTHENTICATE PLAIN " + plainIR + "\r\n"}},
		{name: "PLAIN wrong password",
			run:    func(t *testing.T, c *tclient) { c.send("a AUTHENTICATE PLAIN " + b64("\x00alice\x00nope")) },
			result: "a NO [AUTHENTICATIONFAILED]", events: []string{"attempt alice PLAIN", "fail alice PLAIN"}},
		{name: "PLAIN empty IR",
			run: func(t *testing.T, c *tclient) {
				c.send("a AUTHENTICATE PLAIN =")
			},
			result: "a BAD", never: []string{"AUTHENTICATE"}},
		{name: "PLAIN invalid base64 IR",
			run:    func(t *testing.T, c *tclient) { c.send("a AUTHENTICATE PLAIN AGFsaWNl=AA") },
			result: "a BAD", never: []string{"AUTHENTICATE"}},
		{name: "PLAIN cancelled locally",
			run: func(t *testing.T, c *tclient) {
				c.send("a AUTHENTICATE PLAIN")
				c.challenge()
				c.send("*")
			},
			result: "a BAD", never: []string{"AUTHENTICATE"}},
		{name: "PLAIN authzid",
			run:    func(t *testing.T, c *tclient) { c.send("a AUTHENTICATE PLAIN " + b64("bob\x00alice\x00pass word")) },
			result: "a OK", events: []string{"attempt alice PLAIN", "ok alice PLAIN"}},

		{name: "LOGIN without IR",
			run: func(t *testing.T, c *tclient) {
				c.send("a AUTHENTICATE LOGIN")
				if got := c.challenge(); got != "Username:" {
					t.Fatalf("challenge = %q", got)
				}
				c.send(b64("alice"))
				if got := c.challenge(); got != "Password:" {
					t.Fatalf("challenge = %q", got)
				}
				c.send(b64("pass word"))
			},
			result: "a OK", events: []string{"attempt alice LOGIN", "ok alice LOGIN"},
			backend: []string{"a AUTHENTICATE LOGIN\r\n", b64("alice") + "\r\n", b64("pass word") + "\r\n"}},
		{name: "LOGIN with IR (MS-XLOGIN)",
			run: func(t *testing.T, c *tclient) {
				c.send("a AUTHENTICATE LOGIN " + b64("alice"))
				if got := c.challenge(); got != "Password:" {
					t.Fatalf("challenge = %q", got)
				}
				c.send(b64("pass word"))
			},
			result: "a OK", events: []string{"attempt alice LOGIN", "ok alice LOGIN"},
			backend: []string{"a AUTHENTICATE LOGIN\r\n", b64("alice") + "\r\n"}},
		{name: "LOGIN with empty IR",
			run: func(t *testing.T, c *tclient) {
				c.send("a AUTHENTICATE LOGIN =")
				c.challenge()
				c.send(b64("alice"))
				c.challenge()
				c.send(b64("pass word"))
			},
			result: "a OK", events: []string{"attempt alice LOGIN", "ok alice LOGIN"}},

		{name: "CRAM-MD5",
			run: func(t *testing.T, c *tclient) {
				c.send("a AUTHENTICATE CRAM-MD5")
				chal := c.challenge()
				m := hmac.New(md5.New, []byte("tanstaaftanstaaf"))
				m.Write([]byte(chal))
				c.send(b64("tim smith " + hex.EncodeToString(m.Sum(nil))))
			},
			result: "a OK", events: []string{"attempt tim smith CRAM-MD5", "ok tim smith CRAM-MD5"}},
		{name: "CRAM-MD5 wrong digest",
			run: func(t *testing.T, c *tclient) {
				c.send("a AUTHENTICATE CRAM-MD5")
				c.challenge()
				c.send(b64("tim smith " + strings.Repeat("0", 32)))
			},
			result: "a NO", events: []string{"attempt tim smith CRAM-MD5", "fail tim smith CRAM-MD5"}},
		{name: "CRAM-MD5 with IR",
			run:    func(t *testing.T, c *tclient) { c.send("a AUTHENTICATE CRAM-MD5 " + b64("tim x")) },
			result: "a BAD", never: []string{"AUTHENTICATE"}},
		{name: "CRAM-MD5 cancelled",
			run: func(t *testing.T, c *tclient) {
				c.send("a AUTHENTICATE CRAM-MD5")
				c.challenge()
				c.send("*")
			},
			result: "a BAD", backend: []string{"a AUTHENTICATE CRAM-MD5\r\n", "*\r\n"}},

		{name: "SCRAM-SHA-256 with IR", run: scramFlow(sha256.New, "user", "pencil", true),
			result: "a OK", events: []string{"attempt user SCRAM-SHA-256", "ok user SCRAM-SHA-256"}},
		{name: "SCRAM-SHA-256 without IR", run: scramFlow(sha256.New, "user", "pencil", false),
			result: "a OK", events: []string{"attempt user SCRAM-SHA-256", "ok user SCRAM-SHA-256"}},
		{name: "SCRAM-SHA-256 backend without SASL-IR", noIR: true, run: scramFlow(sha256.New, "user", "pencil", true),
			result: "a OK", events: []string{"attempt user SCRAM-SHA-256", "ok user SCRAM-SHA-256"}},
		{name: "SCRAM-SHA-1 with IR", run: scramFlow(sha1.New, "user", "pencil", true),
			result: "a OK", events: []string{"attempt user SCRAM-SHA-1", "ok user SCRAM-SHA-1"}},
		{name: "SCRAM-SHA-1 without IR", run: scramFlow(sha1.New, "user", "pencil", false),
			result: "a OK", events: []string{"attempt user SCRAM-SHA-1", "ok user SCRAM-SHA-1"}},
		{name: "SCRAM-SHA-256 wrong password", run: scramFlow(sha256.New, "user", "wrong", true),
			result: "a NO", events: []string{"attempt user SCRAM-SHA-256", "fail user SCRAM-SHA-256"}},
		{name: "SCRAM cancelled after server-first",
			run: func(t *testing.T, c *tclient) {
				c.send("a AUTHENTICATE SCRAM-SHA-256 " + b64("n,,n=user,r=abc"))
				c.challenge()
				c.send("*")
			},
			result: "a BAD", events: []string{"attempt user SCRAM-SHA-256"}},
		{name: "SCRAM malformed client-first",
			run:    func(t *testing.T, c *tclient) { c.send("a AUTHENTICATE SCRAM-SHA-256 " + b64("q,,n=user,r=abc")) },
			result: "a BAD", never: []string{"AUTHENTICATE"}},

		{name: "XOAUTH2",
			run: func(t *testing.T, c *tclient) {
				c.send("a AUTHENTICATE XOAUTH2 " + b64("user=alice\x01auth=Bearer "+goodToken+"\x01\x01"))
			},
			result: "a OK", events: []string{"attempt alice XOAUTH2", "ok alice XOAUTH2"}},
		{name: "XOAUTH2 without IR", noIR: true,
			run: func(t *testing.T, c *tclient) {
				c.send("a AUTHENTICATE XOAUTH2")
				c.challenge()
				c.send(b64("user=alice\x01auth=Bearer " + goodToken + "\x01\x01"))
			},
			result: "a OK", events: []string{"attempt alice XOAUTH2", "ok alice XOAUTH2"}},
		{name: "XOAUTH2 invalid token",
			run: func(t *testing.T, c *tclient) {
				c.send("a AUTHENTICATE XOAUTH2 " + b64("user=alice\x01auth=Bearer expired\x01\x01"))
				if js := c.challenge(); !strings.Contains(js, `"status":"401"`) {
					t.Fatalf("error challenge = %q", js)
				}
				c.send("")
			},
			result: "a NO [AUTHENTICATIONFAILED]", events: []string{"attempt alice XOAUTH2", "fail alice XOAUTH2"}},
		{name: "XOAUTH2 invalid token, client cancels the error challenge",
			run: func(t *testing.T, c *tclient) {
				c.send("a AUTHENTICATE XOAUTH2 " + b64("user=alice\x01auth=Bearer expired\x01\x01"))
				c.challenge()
				c.send("*")
			},
			// The token was refused: it counts as a failed login although
			// the client ended with a cancel.
			result: "a BAD", events: []string{"attempt alice XOAUTH2", "fail alice XOAUTH2"}},
		{name: "OAUTHBEARER",
			run: func(t *testing.T, c *tclient) {
				c.send("a AUTHENTICATE OAUTHBEARER " + b64("n,a=alice,\x01host=mail.test\x01port=143\x01auth=Bearer "+goodToken+"\x01\x01"))
			},
			result: "a OK", events: []string{"attempt alice OAUTHBEARER", "ok alice OAUTHBEARER"}},
		{name: "OAUTHBEARER without IR",
			run: func(t *testing.T, c *tclient) {
				c.send("a AUTHENTICATE OAUTHBEARER")
				if got := c.challenge(); got != "" {
					t.Fatalf("challenge = %q, want empty", got)
				}
				c.send(b64("n,a=alice,\x01auth=Bearer " + goodToken + "\x01\x01"))
			},
			result: "a OK", events: []string{"attempt alice OAUTHBEARER", "ok alice OAUTHBEARER"},
			backend: []string{"a AUTHENTICATE OAUTHBEARER " + b64("n,a=alice,\x01auth=Bearer "+goodToken+"\x01\x01") + "\r\n"}},
		{name: "OAUTHBEARER invalid token",
			run: func(t *testing.T, c *tclient) {
				c.send("a AUTHENTICATE OAUTHBEARER " + b64("n,a=alice,\x01auth=Bearer expired\x01\x01"))
				if js := c.challenge(); !strings.Contains(js, "invalid_token") {
					t.Fatalf("error challenge = %q", js)
				}
				c.send("AQ==")
			},
			result: "a NO [AUTHENTICATIONFAILED]", events: []string{"attempt alice OAUTHBEARER", "fail alice OAUTHBEARER"}},

		{name: "unsupported mechanism",
			run:    func(t *testing.T, c *tclient) { c.send("a AUTHENTICATE GSSAPI") },
			result: "a NO [CANNOT]", never: []string{"AUTHENTICATE"}},
		{name: "EXTERNAL refused",
			run:    func(t *testing.T, c *tclient) { c.send("a AUTHENTICATE EXTERNAL =") },
			result: "a NO [CANNOT]", never: []string{"AUTHENTICATE"}},
		{name: "channel binding refused",
			run: func(t *testing.T, c *tclient) {
				c.send("a AUTHENTICATE SCRAM-SHA-256-PLUS " + b64("p=tls-exporter,,n=user,r=abc"))
			},
			result: "a NO [CANNOT]", never: []string{"AUTHENTICATE"}},
		{name: "literal initial response",
			run:    func(t *testing.T, c *tclient) { c.send("a AUTHENTICATE PLAIN {4}") },
			result: "a BAD", never: []string{"AUTHENTICATE"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := newFakeBackend(t, func(b *fakeBackend) {
				if tt.noIR {
					b.caps = strings.Replace(fakeCaps, "SASL-IR ", "", 1)
				}
			})
			h := newHarness(t, b.addr, func(s *protocols.Session) { s.ClientTLS = true })
			c := h.c
			caps := capsOfLine(t, c.expect("* OK [CAPABILITY "))
			if protocoltest.HasCap(caps, "SASL-IR") == tt.noIR {
				t.Errorf("SASL-IR advertised = %v with backend SASL-IR %v", !tt.noIR, !tt.noIR)
			}
			tt.run(t, c)
			_, res := c.until("a")
			if !strings.HasPrefix(res, tt.result) {
				t.Fatalf("result = %q, want %q", res, tt.result)
			}
			if strings.HasPrefix(tt.result, "a OK") {
				h.WantResult(nil)
			} else {
				h.Running()
				c.send("z NOOP") // still in pre-auth, still in step
				c.expect("z OK")
			}
			h.WantEvents(tt.events...)
			got := b.rec.String()
			at := 0
			for _, want := range tt.backend {
				i := strings.Index(got[at:], want)
				if i < 0 {
					t.Errorf("backend did not receive %q (in order) in %q", want, got)
					break
				}
				at += i + len(want)
			}
			for _, never := range tt.never {
				if strings.Contains(got, never) {
					t.Errorf("backend received %q: %q", never, got)
				}
			}
		})
	}
}

// TestAuthenticateCapabilityInOK checks the tagged OK's capability code is
// rewritten: the fake backend advertises UNAUTHENTICATE after login.
func TestAuthenticateCapabilityInOK(t *testing.T) {
	h, _ := greeted(t)
	h.c.send("a LOGIN alice \"pass word\"")
	l := h.c.expect("a OK [CAPABILITY ")
	if caps := capsOfLine(t, l); protocoltest.HasCap(caps, "UNAUTHENTICATE") || protocoltest.HasCap(caps, "STARTTLS") || !protocoltest.HasCap(caps, "IDLE") {
		t.Errorf("login OK capabilities = %q", caps)
	}
	h.WantResult(nil)
}

// TestPipelinedAfterAuthenticate: a command sent right behind AUTHENTICATE
// with an initial response is held until the verdict and left in Client.R.
func TestPipelinedAfterAuthenticate(t *testing.T) {
	h, b := greeted(t)
	h.c.write("a AUTHENTICATE PLAIN " + b64("\x00alice\x00pass word") + "\r\nb SELECT INBOX\r\n")
	h.c.expect("a OK")
	h.WantResult(nil)
	if strings.Contains(b.rec.String(), "SELECT") {
		t.Error("the pipelined command reached the backend")
	}
	l, err := h.Session.Client.ReadLine(1024)
	if err != nil || string(l) != "b SELECT INBOX" {
		t.Fatalf("Client.ReadLine() = %q, %v", l, err)
	}
}

// TestPipelinedAfterFailedLogin: after a refusal the held command is
// processed in pre-auth.
func TestPipelinedAfterFailedLogin(t *testing.T) {
	h, _ := greeted(t)
	h.c.write("a LOGIN alice wrong\r\nb NOOP\r\n")
	h.c.expect("a NO")
	h.c.expect("b OK NOOP completed")
	h.Running()
}
