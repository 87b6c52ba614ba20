package demo

import (
	"bufio"
	"context"
	"crypto/md5"
	"encoding/base64"
	"encoding/hex"
	"net"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

var popUsers = map[string]string{"alice@example.com": "alice-secret", "bob@example.com": "bob secret"}

func startTestPOP3(t *testing.T) *POP3Backend {
	t.Helper()
	b, err := StartPOP3("127.0.0.1:0", popUsers)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

// popConn is a raw POP3 client for the tests.
type popConn struct {
	t *testing.T
	c net.Conn
	r *bufio.Reader
}

func dialPOP3(t *testing.T, b *POP3Backend) (*popConn, string) {
	t.Helper()
	c, err := net.Dial("tcp", b.Addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	p := &popConn{t: t, c: c, r: bufio.NewReader(c)}
	return p, p.expect("+OK ")
}

func (p *popConn) send(s string) {
	p.t.Helper()
	p.c.SetWriteDeadline(time.Now().Add(10 * time.Second))
	if _, err := p.c.Write([]byte(s + "\r\n")); err != nil {
		p.t.Fatalf("write %q: %v", s, err)
	}
}

func (p *popConn) line() string {
	p.t.Helper()
	p.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	l, err := p.r.ReadString('\n')
	if err != nil {
		p.t.Fatalf("read: %v (partial %q)", err, l)
	}
	if !strings.HasSuffix(l, "\r\n") {
		p.t.Fatalf("line %q does not end in CRLF", l)
	}
	return strings.TrimSuffix(l, "\r\n")
}

func (p *popConn) expect(prefix string) string {
	p.t.Helper()
	l := p.line()
	if !strings.HasPrefix(l, prefix) {
		p.t.Fatalf("got %q, want prefix %q", l, prefix)
	}
	return l
}

// body reads a multi-line body up to ".", undoing dot-stuffing.
func (p *popConn) body() []string {
	p.t.Helper()
	var lines []string
	for {
		l := p.line()
		if l == "." {
			return lines
		}
		if strings.HasPrefix(l, ".") {
			l = l[1:]
		}
		lines = append(lines, l)
	}
}

func (p *popConn) cmd(c, wantPrefix string) string {
	p.t.Helper()
	p.send(c)
	return p.expect(wantPrefix)
}

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

func TestPOP3GreetingAndCapa(t *testing.T) {
	b := startTestPOP3(t)
	p, greeting := dialPOP3(t, b)
	if !regexp.MustCompile(`<[0-9a-f]+\.\d+@mailgate\.demo>$`).MatchString(greeting) {
		t.Errorf("greeting %q has no APOP timestamp", greeting)
	}
	p.cmd("CAPA", "+OK")
	caps := strings.Join(p.body(), "|")
	for _, c := range []string{"TOP", "UIDL", "USER", "RESP-CODES", "PIPELINING", "SASL PLAIN LOGIN"} {
		if !strings.Contains(caps, c) {
			t.Errorf("CAPA = %q, lacks %q", caps, c)
		}
	}
	if strings.Contains(caps, "STLS") {
		t.Errorf("CAPA offers STLS on a plain-only server: %q", caps)
	}
	p.cmd("AUTH", "+OK")
	if mechs := strings.Join(p.body(), " "); mechs != "PLAIN LOGIN" {
		t.Errorf("AUTH list = %q", mechs)
	}
	p.cmd("STAT", "-ERR")   // not logged in
	p.cmd("PASS x", "-ERR") // no USER
	p.cmd("STLS", "-ERR")
	p.cmd("QUIT", "+OK")
}

func TestPOP3Logins(t *testing.T) {
	b := startTestPOP3(t)
	tests := []struct {
		name string
		run  func(p *popConn, greeting string)
		want string
	}{
		{"USER/PASS", func(p *popConn, _ string) {
			p.cmd("USER alice@example.com", "+OK")
			p.send("PASS alice-secret")
		}, "+OK"},
		{"USER/PASS with a space in the password", func(p *popConn, _ string) {
			p.cmd("USER bob@example.com", "+OK")
			p.send("PASS bob secret")
		}, "+OK"},
		{"USER/PASS wrong", func(p *popConn, _ string) {
			p.cmd("USER alice@example.com", "+OK")
			p.send("PASS nope")
		}, "-ERR [AUTH]"},
		{"APOP", func(p *popConn, greeting string) {
			ts := greeting[strings.LastIndexByte(greeting, '<'):]
			sum := md5.Sum([]byte(ts + "alice-secret"))
			p.send("APOP alice@example.com " + hex.EncodeToString(sum[:]))
		}, "+OK"},
		{"APOP wrong", func(p *popConn, _ string) {
			p.send("APOP alice@example.com 0123456789abcdef0123456789abcdef")
		}, "-ERR [AUTH]"},
		{"AUTH PLAIN with IR", func(p *popConn, _ string) {
			p.send("AUTH PLAIN " + b64("\x00alice@example.com\x00alice-secret"))
		}, "+OK"},
		{"AUTH PLAIN without IR", func(p *popConn, _ string) {
			p.send("AUTH PLAIN")
			if l := p.line(); l != "+ " {
				t.Fatalf("challenge = %q, want %q", l, "+ ")
			}
			p.send(b64("\x00alice@example.com\x00alice-secret"))
		}, "+OK"},
		{"AUTH LOGIN", func(p *popConn, _ string) {
			p.cmd("AUTH LOGIN", "+ "+b64("Username:"))
			p.cmd(b64("alice@example.com"), "+ "+b64("Password:"))
			p.send(b64("alice-secret"))
		}, "+OK"},
		{"AUTH LOGIN with IR", func(p *popConn, _ string) {
			p.cmd("AUTH LOGIN "+b64("alice@example.com"), "+ "+b64("Password:"))
			p.send(b64("alice-secret"))
		}, "+OK"},
		{"AUTH cancelled", func(p *popConn, _ string) {
			p.cmd("AUTH PLAIN", "+ ")
			p.send("*")
		}, "-ERR"},
		{"AUTH bad base64", func(p *popConn, _ string) {
			p.send("AUTH PLAIN !!!!")
		}, "-ERR"},
		{"AUTH unknown mechanism", func(p *popConn, _ string) {
			p.send("AUTH CRAM-MD5")
		}, "-ERR"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, greeting := dialPOP3(t, b)
			tt.run(p, greeting)
			p.expect(tt.want)
			if tt.want == "+OK" {
				p.cmd("STAT", "+OK 1 ")
			} else {
				p.cmd("STAT", "-ERR")
			}
			p.cmd("QUIT", "+OK")
		})
	}
}

func TestPOP3Transaction(t *testing.T) {
	b := startTestPOP3(t)
	p, _ := dialPOP3(t, b)
	p.send("USER alice@example.com\r\nPASS alice-secret\r\nSTAT") // pipelined
	p.expect("+OK")
	p.expect("+OK Logged in")
	stat := p.expect("+OK 1 ")
	size := strings.Fields(stat)[2]

	p.cmd("LIST", "+OK 1 messages")
	if l := p.body(); len(l) != 1 || l[0] != "1 "+size {
		t.Errorf("LIST = %q, want [1 %s]", l, size)
	}
	p.cmd("LIST 1", "+OK 1 "+size)
	p.cmd("LIST 2", "-ERR")
	p.cmd("UIDL", "+OK")
	if l := p.body(); len(l) != 1 || l[0] != "1 mailgate-welcome-1" {
		t.Errorf("UIDL = %q", l)
	}
	p.cmd("UIDL 1", "+OK 1 mailgate-welcome-1")

	p.cmd("RETR 1", "+OK "+size+" octets")
	msg := p.body()
	if got := len(strings.Join(msg, "\r\n")) + 2; strconv.Itoa(got) != size {
		t.Errorf("RETR returned %d octets, LIST said %s", got, size)
	}
	if msg[0] != "From: mailgate demo <demo@example.com>" || msg[len(msg)-1] != "This mailbox lives in memory behind mailgate." {
		t.Errorf("RETR = %q", msg)
	}
	p.cmd("TOP 1 0", "+OK")
	top := p.body()
	if top[len(top)-1] != "" || strings.Contains(strings.Join(top, "\n"), "This mailbox") {
		t.Errorf("TOP 1 0 = %q, want the headers and the blank line only", top)
	}
	p.cmd("TOP 1 1", "+OK")
	if top := p.body(); top[len(top)-1] != "This mailbox lives in memory behind mailgate." {
		t.Errorf("TOP 1 1 = %q", top)
	}
	p.cmd("NOOP", "+OK")
	p.cmd("DELE 1", "+OK")
	p.cmd("STAT", "+OK 0 0")
	p.cmd("RETR 1", "-ERR")
	p.cmd("DELE 1", "-ERR")
	p.cmd("RSET", "+OK maildrop has 1 messages")
	p.cmd("STAT", "+OK 1 ")
	p.cmd("XYZZY", "-ERR")

	// DELE then QUIT removes the message for later sessions.
	p.cmd("DELE 1", "+OK")
	p.cmd("QUIT", "+OK mailgate demo POP3 server signing off (0 messages left)")
	q, _ := dialPOP3(t, b)
	q.cmd("AUTH PLAIN "+b64("\x00alice@example.com\x00alice-secret"), "+OK")
	q.cmd("STAT", "+OK 0 0")
	// Other users are untouched.
	r, _ := dialPOP3(t, b)
	r.cmd("USER bob@example.com", "+OK")
	r.cmd("PASS bob secret", "+OK")
	r.cmd("STAT", "+OK 1 ")
}

func TestPOP3BadInput(t *testing.T) {
	b := startTestPOP3(t)
	p, _ := dialPOP3(t, b)
	p.cmd("NOOP "+strings.Repeat("x", 20000), "-ERR Line too long")
	p.cmd("CAPA", "+OK") // the long line was consumed whole
	p.body()
	for i := 0; i < pop3MaxBad-2; i++ {
		p.cmd("BOGUS", "-ERR")
	}
	p.cmd("BOGUS", "-ERR Unknown command; too many invalid commands")
	p.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := p.r.ReadByte(); err == nil {
		t.Fatal("connection still open after too many bad commands")
	}
}

func TestPOP3Close(t *testing.T) {
	b, err := StartPOP3("127.0.0.1:0", popUsers)
	if err != nil {
		t.Fatal(err)
	}
	p, _ := dialPOP3(t, b)
	done := make(chan error, 1)
	go func() { done <- b.Close() }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not return with a session open")
	}
	p.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := p.r.ReadByte(); err == nil {
		t.Fatal("session still open after Close")
	}
	if _, err := net.DialTimeout("tcp", b.Addr(), time.Second); err == nil {
		t.Fatal("listener still accepting after Close")
	}
}

// popClientPy logs in with Python's poplib (USER/PASS or APOP), lists,
// retrieves and reads the headers of message 1, then quits.
const popClientPy = `
import poplib, sys
addr, user, pw, how = sys.argv[1:5]
host, port = addr.rsplit(":", 1)
m = poplib.POP3(host, int(port), timeout=30)
caps = m.capa()
print("CAPA", " ".join(sorted(caps)))
if how == "apop":
    print("LOGIN", m.apop(user, pw).decode())
else:
    m.user(user)
    print("LOGIN", m.pass_(pw).decode())
print("STAT", *m.stat())
resp, listing, _ = m.list()
print("LIST", *[l.decode() for l in listing])
resp, lines, octets = m.retr(1)
print("RETR", octets, lines[2].decode())
resp, lines, _ = m.top(1, 0)
print("TOP", len(lines))
print("UIDL", m.uidl(1).decode())
print("QUIT", m.quit().decode())
`

func TestPOP3PythonPoplib(t *testing.T) {
	py := "/usr/bin/python3"
	if _, err := os.Stat(py); err != nil {
		var lerr error
		if py, lerr = exec.LookPath("python3"); lerr != nil {
			t.Skip("python3 is not installed")
		}
	}
	b := startTestPOP3(t)
	for _, how := range []string{"user", "apop"} {
		t.Run(how, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			out, err := exec.CommandContext(ctx, py, "-c", popClientPy, b.Addr(), "bob@example.com", "bob secret", how).CombinedOutput()
			if err != nil {
				t.Fatalf("poplib: %v\n%s", err, out)
			}
			for _, want := range []string{"CAPA ", "LOGIN +OK", "STAT 1 ", "LIST 1 ", "RETR ", "Subject: Welcome to the mailgate demo", "TOP ", "UIDL +OK 1 mailgate-welcome-1", "QUIT +OK"} {
				if !strings.Contains(string(out), want) {
					t.Errorf("poplib output lacks %q:\n%s", want, out)
				}
			}
		})
	}
}
