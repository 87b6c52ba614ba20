package e2e

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// Debian's own mail clients through the built binary (issue 20): isync
// (mbsync) syncs alice's INBOX from Dovecot over IMAP, mpop and fetchmail
// retrieve it over POP3, msmtp and swaks submit to Postfix, each over the
// STARTTLS and the implicit-TLS listener. Every client verifies mailgate's
// certificate against the test CA and reads its password from a config
// file, never from its command line. Every subtest runs its own mailgate
// (the accounting store is in memory), so a last login in the admin API can
// only be that client's.

// clientBin finds a client the CI image installs (scripts/test.sh,
// CLIENT_PACKAGES). The servers' variables are set when this is called: a
// missing client is a broken setup, not a reason to skip.
func clientBin(t *testing.T, name, pkg string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("%s is not installed although the servers are up: apt-get install %s (scripts/test.sh installs CLIENT_PACKAGES): %v", name, pkg, err)
	}
	return p
}

// runClient runs a client in dir with HOME=dir, so that nothing of the
// invoking user's dot files is read or written, plus the extra environment.
func runClient(t *testing.T, dir string, env []string, name string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), stepTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	cmd.Env = append(append(os.Environ(), "HOME="+dir), env...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// writeSecret writes a client config that holds a password: mode 0600, as
// msmtp, mpop and fetchmail demand.
func writeSecret(t *testing.T, path, content string) string {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// portOf returns the port of a host:port.
func portOf(t *testing.T, addr string) string {
	t.Helper()
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	return port
}

// wantLogin checks the admin API's attribution of user's login on protocol:
// a last login no earlier than since, from 127.0.0.1.
func (m *mailgate) wantLogin(t *testing.T, protocol, user string, since time.Time) {
	t.Helper()
	for _, l := range strings.Split(m.log.String(), "\n") {
		if strings.Contains(l, "msg=login ") {
			t.Logf("mailgate: %s", l)
		}
	}
	d, ok := m.userDetail(user).Protocols[protocol]
	if !ok {
		t.Errorf("GET /api/v1/users/%s has no protocols.%s", user, protocol)
		return
	}
	// The API gives last_login to the second.
	if d.LastLogin == nil || d.LastLogin.Before(since.Truncate(time.Second)) || d.LastIP == nil || *d.LastIP != "127.0.0.1" {
		ip := "<nil>"
		if d.LastIP != nil {
			ip = *d.LastIP
		}
		t.Errorf("GET /api/v1/users/%s: protocols.%s last_login %v, last_authenticated_ip %s; want a login after %v from 127.0.0.1",
			user, protocol, d.LastLogin, ip, since.Format(time.RFC3339Nano))
	}
}

// maildirHas reports whether a Maildir (new/ or cur/) holds a message with
// this Subject, and which file.
func maildirHas(dir, subject string) (string, bool) {
	for _, sub := range []string{"new", "cur"} {
		files, _ := filepath.Glob(filepath.Join(dir, sub, "*"))
		for _, f := range files {
			b, err := os.ReadFile(f)
			if err == nil && hasSubject(string(b), subject) {
				return f, true
			}
		}
	}
	return "", false
}

// hasSubject looks for the Subject header line, with LF or CRLF endings.
func hasSubject(msg, subject string) bool {
	msg = strings.ReplaceAll(msg, "\r\n", "\n")
	return strings.Contains(msg, "\nSubject: "+subject+"\n") || strings.HasPrefix(msg, "Subject: "+subject+"\n")
}

// makeMaildir creates an empty Maildir (new, cur, tmp).
func makeMaildir(t *testing.T, dir string) string {
	t.Helper()
	for _, sub := range []string{"new", "cur", "tmp"} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// expunger removes the tests' messages from the INBOXes in Dovecot once
// the test and all its subtests are over, so that the mailboxes the clients
// download stay small. It runs after the parallel subtests, not after each:
// an expunge in the middle of a sibling's POP3 session fails its RETR.
type expunger struct {
	mu    sync.Mutex
	conf  string
	mails [][2]string // user, subject
}

func newExpunger(t *testing.T, conf string) *expunger {
	e := &expunger{conf: conf}
	t.Cleanup(func() {
		e.mu.Lock()
		defer e.mu.Unlock()
		for _, um := range e.mails {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			out, err := exec.CommandContext(ctx, "doveadm", "-c", e.conf, "expunge", "-u", um[0],
				"mailbox", "INBOX", "header", "Subject", um[1]).CombinedOutput()
			cancel()
			if err != nil {
				t.Logf("doveadm expunge of %q from %s: %v\n%s", um[1], um[0], err, out)
			}
		}
	})
	return e
}

func (e *expunger) add(user, subject string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.mails = append(e.mails, [2]string{user, subject})
}

// retryExpunged runs a POP3 client again (twice at most) when it failed only
// because another session (TestDovecotPOP3's DELE, another test's cleanup)
// expunged a message between the client's listing and its RETR: Dovecot
// answers "-ERR Message N expunged." then, which says nothing about mailgate.
func retryExpunged(t *testing.T, run func() (string, error)) (string, error) {
	t.Helper()
	out, err := run()
	for i := 0; i < 2 && err != nil && strings.Contains(out, "-ERR Message ") && strings.Contains(out, " expunged."); i++ {
		t.Logf("a message was expunged by another session during the retrieval; once more. Output:\n%s", out)
		out, err = run()
	}
	return out, err
}

// realSubject is a Subject no other test (or run) uses.
func realSubject(what string) string {
	return fmt.Sprintf("mailgate-e2e-real-%s-%d", what, time.Now().UnixNano())
}

// TestRealClientsIMAP: mbsync pulls alice's INBOX through mailgate (PROXY v2
// to Dovecot) into a local Maildir, with IMAP LOGIN over STARTTLS and SASL
// over implicit TLS; the message LMTP put there must arrive.
func TestRealClientsIMAP(t *testing.T) {
	d := needDovecot(t)
	mbsync := clientBin(t, "mbsync", "isync")
	t.Parallel()
	cleanup := newExpunger(t, d.conf)
	for _, tt := range []struct{ name, tls, sslType, auth string }{
		{"STARTTLS LOGIN", "starttls", "STARTTLS", "LOGIN"},
		{"implicit TLS SASL", "implicit", "IMAPS", "*"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			m, addr, cert := serveListeners(t, "e2e-real-imap-token", []listenerConf{
				{Name: "imap", Listen: freeAddr(t), TLS: tt.tls, Backend: d.proxy, ClientAddress: "proxy-v2"},
			})
			subject := realSubject("mbsync-" + tt.tls)
			lmtpDeliver(t, d.lmtp, alice, subject)
			cleanup.add(alice, subject)

			dir := t.TempDir()
			near := filepath.Join(dir, "mail")
			if err := os.Mkdir(near, 0o700); err != nil {
				t.Fatal(err)
			}
			rc := writeSecret(t, filepath.Join(dir, "mbsyncrc"), fmt.Sprintf(`IMAPAccount far
Host localhost
Port %s
User %s
Pass %s
SSLType %s
CertificateFile %s
SystemCertificates no
AuthMechs %s
Timeout 40

IMAPStore far
Account far

MaildirStore near
Path %s/
Inbox %s/INBOX

Channel inbox
Far :far:
Near :near:
Sync Pull
Create Near
Expunge None
SyncState *
`, portOf(t, addr["imap"]), alice, alicePassword, tt.sslType, cert, tt.auth, near, near))

			start := time.Now()
			out, err := runClient(t, dir, nil, mbsync, "-V", "-c", rc, "inbox")
			if err != nil {
				t.Fatalf("mbsync through mailgate's %s listener: %v\n%s", tt.tls, err, out)
			}
			if _, ok := maildirHas(filepath.Join(near, "INBOX"), subject); !ok {
				t.Fatalf("mbsync succeeded but %q is not in %s/INBOX:\n%s", subject, near, out)
			}
			t.Logf("mbsync over %s: %v", tt.tls, time.Since(start).Round(time.Millisecond))
			m.wantLogin(t, "imap", alice, start)
			m.waitSummary("imap", 0)
		})
	}
}

// TestRealClientsPOP3: mpop and fetchmail retrieve alice's mail through
// mailgate (PROXY v2 to Dovecot's POP3) over STLS and implicit TLS, keeping
// it on the server; the message LMTP put there must be delivered locally.
func TestRealClientsPOP3(t *testing.T) {
	d := needDovecot(t)
	mpop := clientBin(t, "mpop", "mpop")
	fetchmail := clientBin(t, "fetchmail", "fetchmail")
	t.Parallel()
	cleanup := newExpunger(t, d.conf)
	for _, tt := range []struct{ client, tls, auth string }{
		{"mpop", "starttls", "user"},
		{"mpop", "implicit", "plain"},
		{"fetchmail", "starttls", "password"},
		{"fetchmail", "implicit", "any"},
	} {
		t.Run(tt.client+" "+tt.tls+" "+tt.auth, func(t *testing.T) {
			t.Parallel()
			m, addr, cert := serveListeners(t, "e2e-real-pop3-token", []listenerConf{
				{Name: "pop3", Protocol: "pop", Listen: freeAddr(t), TLS: tt.tls, Backend: d.pop3Proxy, ClientAddress: "proxy-v2"},
			})
			subject := realSubject(tt.client + "-" + tt.tls)
			lmtpDeliver(t, d.lmtp, alice, subject)
			cleanup.add(alice, subject)
			dir := t.TempDir()
			port := portOf(t, addr["pop3"])

			var out string
			var err error
			var found func() (string, bool)
			start := time.Now()
			switch tt.client {
			case "mpop":
				inbox := makeMaildir(t, filepath.Join(dir, "inbox"))
				starttls := map[string]string{"starttls": "on", "implicit": "off"}[tt.tls]
				rc := writeSecret(t, filepath.Join(dir, "mpoprc"), marlamRC(port, starttls, cert, tt.auth, fmt.Sprintf(
					"keep on\nonly_new off\nuidls_file %s\ndelivery maildir %s\n", filepath.Join(dir, "uidls"), inbox)))
				out, err = retryExpunged(t, func() (string, error) { return runClient(t, dir, nil, mpop, "-C", rc, "mg") })
				found = func() (string, bool) { return maildirHas(inbox, subject) }
			case "fetchmail":
				mbox := filepath.Join(dir, "mbox")
				ssl := map[string]string{"starttls": "", "implicit": "ssl"}[tt.tls]
				// sslproto without ssl makes STLS mandatory (fetchmail 6.4).
				rc := writeSecret(t, filepath.Join(dir, "fetchmailrc"), fmt.Sprintf(`set no syslog
set pidfile "%s"
poll localhost port %s proto pop3 auth %s timeout 40
  user "%s" there password "%s" is root here
  %s sslproto tls1.2+ sslcertck sslcertfile "%s"
  keep fetchall
  mda "cat >>%s"
`, filepath.Join(dir, "fetchmail.pid"), port, tt.auth, alice, alicePassword, ssl, cert, mbox))
				out, err = retryExpunged(t, func() (string, error) {
					return runClient(t, dir, []string{"FETCHMAILHOME=" + dir}, fetchmail, "-v", "-f", rc, "--nosyslog")
				})
				found = func() (string, bool) {
					b, _ := os.ReadFile(mbox)
					return mbox, hasSubject(string(b), subject)
				}
			}
			if err != nil {
				t.Fatalf("%s through mailgate's %s POP3 listener: %v\n%s", tt.client, tt.tls, err, out)
			}
			if where, ok := found(); !ok {
				t.Fatalf("%s succeeded but %q is not in %s:\n%s", tt.client, subject, where, out)
			}
			t.Logf("%s over %s: %v", tt.client, tt.tls, time.Since(start).Round(time.Millisecond))
			m.wantLogin(t, "pop", alice, start)
			m.waitSummary("pop", 0)
		})
	}
}

// TestRealClientsSubmission: msmtp and swaks submit as alice through
// mailgate's submission (STARTTLS) and submissions (implicit TLS)
// listeners to Postfix (PROXY v2); Postfix hands example.com to Dovecot
// over LMTP, where the message is read back from bob's Maildir.
func TestRealClientsSubmission(t *testing.T) {
	v := needEnv(t, "Postfix", `scripts/dovecot.sh start && scripts/postfix.sh start && eval "$(scripts/dovecot.sh env; scripts/postfix.sh env)"`,
		"MAILGATE_POSTFIX_SUBMISSION_PROXY", "MAILGATE_POSTFIX_LOG", "MAILGATE_POSTFIX_MAILDIRS", "MAILGATE_DOVECOT_CONF")
	p := postfix{subProxy: v[0], log: v[1], maildirs: v[2]}
	doveConf := v[3]
	msmtp := clientBin(t, "msmtp", "msmtp")
	swaks := clientBin(t, "swaks", "swaks")
	t.Parallel()
	cleanup := newExpunger(t, doveConf)
	for _, tt := range []struct{ client, role, tls, auth string }{
		{"msmtp", "submission", "starttls", "on"},
		{"msmtp", "submissions", "implicit", "login"},
		{"swaks", "submission", "starttls", "PLAIN"},
		{"swaks", "submissions", "implicit", "LOGIN"},
	} {
		t.Run(tt.client+" "+tt.role+" "+tt.auth, func(t *testing.T) {
			t.Parallel()
			m, addr, cert := serveListeners(t, "e2e-real-smtp-token", []listenerConf{
				{Name: "smtp", Protocol: "smtp", Role: tt.role, Listen: freeAddr(t), TLS: tt.tls, Backend: p.subProxy, ClientAddress: "proxy-v2"},
			})
			subject := realSubject(tt.client + "-" + tt.role)
			cleanup.add(bob, subject)
			dir := t.TempDir()
			port := portOf(t, addr["smtp"])

			var out string
			var err error
			start := time.Now()
			switch tt.client {
			case "msmtp":
				starttls := map[string]string{"starttls": "on", "implicit": "off"}[tt.tls]
				rc := writeSecret(t, filepath.Join(dir, "msmtprc"), marlamRC(port, starttls, cert, tt.auth, "from "+alice+"\n"))
				msg := fmt.Sprintf("From: %s\r\nTo: %s\r\nSubject: %s\r\nMessage-ID: <%d.msmtp@mailgate.test>\r\n\r\nSent by msmtp through mailgate.\r\n",
					alice, bob, subject, time.Now().UnixNano())
				ctx, cancel := context.WithTimeout(context.Background(), stepTimeout)
				defer cancel()
				cmd := exec.CommandContext(ctx, msmtp, "-C", rc, "-a", "mg", bob)
				cmd.Dir, cmd.Env, cmd.Stdin = dir, append(os.Environ(), "HOME="+dir), strings.NewReader(msg)
				var b []byte
				b, err = cmd.CombinedOutput()
				out = string(b)
			case "swaks":
				tlsOpt := map[string]string{"starttls": "tls", "implicit": "tls-on-connect"}[tt.tls]
				rc := writeSecret(t, filepath.Join(dir, "swaksrc"), fmt.Sprintf(`server 127.0.0.1:%s
%s
tls-verify
tls-ca-path %s
auth %s
auth-user %s
auth-password %s
from %s
to %s
header Subject: %s
timeout 40
`, port, tlsOpt, cert, tt.auth, alice, alicePassword, alice, bob, subject))
				out, err = runClient(t, dir, nil, swaks, "--config", rc)
			}
			if err != nil {
				t.Fatalf("%s through mailgate's %s listener: %v\n%s", tt.client, tt.role, err, out)
			}
			rcv := postfixReceived(p.delivered(t, bob, subject))
			t.Logf("%s over %s: %v", tt.client, tt.tls, time.Since(start).Round(time.Millisecond))
			if !strings.Contains(rcv, "[127.0.0.1])") || !strings.Contains(rcv, "(Authenticated sender: "+alice+")") {
				t.Errorf("Postfix's Received: %q, want client 127.0.0.1 and sender %s\n%s output:\n%s", rcv, alice, tt.client, out)
			}
			m.wantLogin(t, "smtp", alice, start)
			m.waitSummary("smtp", 0)
		})
	}
}

// marlamRC is the configuration file mpop and msmtp share the syntax of
// (one author): an account "mg" logging in as alice at 127.0.0.1:port over
// TLS (STARTTLS when starttls is "on"), verifying the server against cert
// under the name localhost, then the client's own lines.
func marlamRC(port, starttls, cert, auth, extra string) string {
	return fmt.Sprintf(`defaults
timeout 40

account mg
host 127.0.0.1
port %s
tls on
tls_starttls %s
tls_trust_file %s
tls_host_override localhost
auth %s
user %s
password %s
`, port, starttls, cert, auth, alice, alicePassword) + extra
}
