package smtp_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mailgate/mailgate/accounting"
	"github.com/mailgate/mailgate/protocols"
	"github.com/mailgate/mailgate/protocols/protocoltest"
	"github.com/mailgate/mailgate/protocols/smtp"
	"github.com/mailgate/mailgate/proxy"
)

// The handler inside the real proxy in front of a real Postfix
// (scripts/postfix.sh), driven by swaks. The e2e package does the same with
// the built binary and a config file; this one needs neither.

type postfixPeer struct {
	subProxy, subXCLIENT, mx string // addresses
	log, maildirs            string
}

func needPostfix(t *testing.T) postfixPeer {
	t.Helper()
	p := postfixPeer{
		subProxy:   os.Getenv("MAILGATE_POSTFIX_SUBMISSION_PROXY"),
		subXCLIENT: os.Getenv("MAILGATE_POSTFIX_SUBMISSION_XCLIENT"),
		mx:         os.Getenv("MAILGATE_POSTFIX_MX"),
		log:        os.Getenv("MAILGATE_POSTFIX_LOG"),
		maildirs:   os.Getenv("MAILGATE_POSTFIX_MAILDIRS"),
	}
	if p.subProxy == "" || p.subXCLIENT == "" || p.mx == "" || p.log == "" || p.maildirs == "" {
		t.Skip("no Postfix: MAILGATE_POSTFIX_* are not set (scripts/test.sh sets them; by hand: " +
			`scripts/dovecot.sh start && scripts/postfix.sh start && eval "$(scripts/postfix.sh env)")`)
	}
	if _, err := exec.LookPath("swaks"); err != nil {
		t.Skip("swaks is not installed (scripts/postfix.sh packages)")
	}
	return p
}

// swaks runs swaks with a deadline and returns its transcript.
func swaks(t *testing.T, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "swaks", append([]string{"--timeout", "40"}, args...)...).CombinedOutput()
	return string(out), err
}

// delivered polls the user's maildir for a message whose Subject is
// subject, and returns it.
func (p postfixPeer) delivered(t *testing.T, user, subject string) string {
	t.Helper()
	local, domain, _ := strings.Cut(user, "@")
	dir := filepath.Join(p.maildirs, domain, local, "Maildir")
	deadline := time.Now().Add(45 * time.Second)
	for {
		for _, sub := range []string{"new", "cur"} {
			files, _ := filepath.Glob(filepath.Join(dir, sub, "*"))
			for _, f := range files {
				b, err := os.ReadFile(f)
				if err == nil && strings.Contains(string(b), "\nSubject: "+subject+"\n") {
					return string(b)
				}
			}
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(p.log)
			t.Fatalf("no message %q in %s after 45 s; Postfix log:\n%s", subject, dir, tail(string(log), 30))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func tail(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// postfixReceived returns the Received: header Postfix added (the one
// that names its smtpd client), unfolded.
func postfixReceived(msg string) string {
	hdr, _, _ := strings.Cut(strings.ReplaceAll(msg, "\r\n", "\n"), "\n\n")
	hdr = strings.ReplaceAll(hdr, "\n\t", " ")
	hdr = strings.ReplaceAll(hdr, "\n ", " ")
	for _, l := range strings.Split(hdr, "\n") {
		if strings.HasPrefix(l, "Received: ") && strings.Contains(l, "(Postfix)") {
			return l
		}
	}
	return ""
}

func TestPostfix(t *testing.T) {
	p := needPostfix(t)
	srvTLS, _ := protocoltest.TLSConfigs(t)
	reg := accounting.New(accounting.Options{})
	logs := &protocoltest.SyncBuffer{}
	srv := proxy.NewServer(reg, slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	t.Cleanup(func() { srv.Close() })
	listen := func(role, tlsMode, backend, via string) string {
		ln, err := srv.Listen(proxy.ListenerOptions{
			Name: role + "-" + tlsMode + "-" + via, Address: "127.0.0.1:0",
			Handler: smtp.New(smtp.Options{Role: role, Hostname: "mailgate.test"}),
			TLS:     protocols.TLSMode(tlsMode), TLSConfig: srvTLS, IdleTimeout: time.Hour,
			Backend: proxy.Backend{Address: backend, TLS: "none", ClientAddress: via, DialTimeout: 10 * time.Second},
		})
		if err != nil {
			t.Fatal(err)
		}
		return ln.Addr().String()
	}
	sub587 := listen(smtp.RoleSubmission, "starttls", p.subProxy, "proxy-v2")
	sub465 := listen(smtp.RoleSubmissions, "implicit", p.subProxy, "proxy-v2")
	subXC := listen(smtp.RoleSubmission, "starttls", p.subXCLIENT, "xclient")
	mx := listen(smtp.RoleMX, "starttls", p.mx, "proxy-v2")

	run := 0
	send := func(t *testing.T, addr string, tlsArgs []string, auth, user, pass, to string) string {
		t.Helper()
		run++
		subject := fmt.Sprintf("mailgate-smtp-%d-%d", time.Now().UnixNano(), run)
		args := append([]string{"--server", addr, "--local-interface", "127.0.0.2",
			"--from", "alice@example.com", "--to", to, "--header", "Subject: " + subject}, tlsArgs...)
		if auth != "" {
			args = append(args, "--auth", auth, "--auth-user", user, "--auth-password", pass)
		}
		out, err := swaks(t, args...)
		if err != nil {
			t.Fatalf("swaks %q: %v\n%s\nproxy log:\n%s", args, err, out, logs.String())
		}
		msg := p.delivered(t, to, subject)
		rcv := postfixReceived(msg)
		if !strings.Contains(rcv, "[127.0.0.2]") {
			t.Errorf("Postfix's Received: header = %q, want the client 127.0.0.2", rcv)
		}
		return rcv
	}

	for _, tt := range []struct {
		name string
		addr string
		tls  []string
		auth string
	}{
		{"587 STARTTLS PLAIN, PROXY v2", sub587, []string{"-tls"}, "PLAIN"},
		{"587 STARTTLS LOGIN, PROXY v2", sub587, []string{"-tls"}, "LOGIN"},
		{"465 TLS PLAIN, PROXY v2", sub465, []string{"--tls-on-connect"}, "PLAIN"},
		{"465 TLS LOGIN, PROXY v2", sub465, []string{"--tls-on-connect"}, "LOGIN"},
		{"587 STARTTLS PLAIN, XCLIENT", subXC, []string{"-tls"}, "PLAIN"},
		{"587 STARTTLS LOGIN, XCLIENT", subXC, []string{"-tls"}, "LOGIN"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			rcv := send(t, tt.addr, tt.tls, tt.auth, "alice@example.com", "alice-secret", "bob@example.com")
			if !strings.Contains(rcv, "(Authenticated sender: alice@example.com)") {
				t.Errorf("Received: %q, want alice as the authenticated sender", rcv)
			}
		})
	}
	t.Run("MX without AUTH, PROXY v2", func(t *testing.T) {
		rcv := send(t, mx, []string{"-tls"}, "", "", "", "alice@example.com")
		if strings.Contains(rcv, "Authenticated") {
			t.Errorf("Received: %q on the MX port", rcv)
		}
	})
	t.Run("wrong password gets Postfix's 535", func(t *testing.T) {
		out, err := swaks(t, "--server", sub587, "-tls", "--auth", "PLAIN", "--auth-user", "alice@example.com",
			"--auth-password", "not-the-secret-42", "--to", "bob@example.com", "--quit-after", "AUTH")
		if err == nil || !strings.Contains(out, "<~* 535 5.7.8") {
			t.Fatalf("swaks with a wrong password: %v\n%s", err, out)
		}
	})
	t.Run("disabled user never reaches Postfix", func(t *testing.T) {
		if _, err := reg.SetProtocolEnabled("bob@example.com", "smtp", false, false); err != nil {
			t.Fatal(err)
		}
		before, _ := os.ReadFile(p.log)
		out, err := swaks(t, "--server", sub587, "-tls", "--auth", "PLAIN", "--auth-user", "bob@example.com",
			"--auth-password", "bob-secret", "--to", "alice@example.com", "--quit-after", "AUTH")
		if err == nil || !strings.Contains(out, "535 5.7.8 SMTP access is disabled") {
			t.Fatalf("swaks as a disabled user: %v\n%s", err, out)
		}
		time.Sleep(200 * time.Millisecond)
		after, _ := os.ReadFile(p.log)
		if n := strings.Count(string(after), "bob@example.com") - strings.Count(string(before), "bob@example.com"); n < 0 ||
			strings.Contains(string(after[len(before):]), "sasl_username=bob@example.com") {
			t.Errorf("Postfix saw bob's login:\n%s", after[len(before):])
		}
	})
	for _, s := range []string{"alice-secret", "bob-secret", "not-the-secret-42", b64("alice-secret"), b64("\x00alice@example.com\x00alice-secret")} {
		if strings.Contains(logs.String(), s) {
			t.Errorf("the proxy log holds %q", s)
		}
	}
}
