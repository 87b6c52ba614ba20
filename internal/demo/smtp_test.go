package demo

import (
	"bufio"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

func startSMTP(t *testing.T) *SMTPBackend {
	t.Helper()
	b, err := StartSMTP("127.0.0.1:0", Users)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

func dialSMTP(t *testing.T, b *SMTPBackend) *smtp.Client {
	t.Helper()
	c, err := smtp.Dial(b.Addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if err := c.Hello("client.test"); err != nil {
		t.Fatal(err)
	}
	return c
}

func send(c *smtp.Client, from, to, body string) error {
	return c.SendMail(from, []string{to}, strings.NewReader(body))
}

func TestSMTPAuthAndDelivery(t *testing.T) {
	b := startSMTP(t)
	for _, tt := range []struct {
		name string
		auth sasl.Client
	}{
		{"PLAIN", sasl.NewPlainClient("", "alice@example.com", "alice-secret")},
		{"LOGIN with the user as initial response", sasl.NewLoginClient("bob@example.com", "bob-secret")},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := dialSMTP(t, b)
			if ok, _ := c.Extension("AUTH"); !ok {
				t.Fatal("EHLO does not offer AUTH without TLS")
			}
			if err := c.Auth(tt.auth); err != nil {
				t.Fatalf("Auth() = %v", err)
			}
			body := "Subject: " + tt.name + "\r\n\r\nhello\r\n"
			if err := send(c, "alice@example.com", "bob@example.com", body); err != nil {
				t.Fatalf("SendMail() = %v", err)
			}
			c.Quit()
		})
	}
	msgs := b.Messages()
	if len(msgs) != 2 {
		t.Fatalf("Messages() holds %d messages, want 2", len(msgs))
	}
	if msgs[0].User != "alice@example.com" || msgs[1].User != "bob@example.com" || msgs[0].Helo != "client.test" {
		t.Errorf("messages = %+v", msgs)
	}
	if got := string(msgs[1].Data); !strings.Contains(got, "Subject: LOGIN") || msgs[1].To[0] != "bob@example.com" {
		t.Errorf("second message = %q to %v", got, msgs[1].To)
	}
}

func TestSMTPWrongPassword(t *testing.T) {
	b := startSMTP(t)
	c := dialSMTP(t, b)
	err := c.Auth(sasl.NewPlainClient("", "alice@example.com", "wrong"))
	var se *smtp.SMTPError
	if !errors.As(err, &se) || se.Code != 535 {
		t.Fatalf("Auth() with a wrong password = %v, want 535", err)
	}
}

// TestSMTPLoginWithoutIR drives AUTH LOGIN by hand: the Username: and
// Password: challenges, as clients that send no initial response see them.
func TestSMTPLoginWithoutIR(t *testing.T) {
	b := startSMTP(t)
	conn, err := net.Dial("tcp", b.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	r := bufio.NewReader(conn)
	read := func() string {
		t.Helper()
		var last string
		for {
			l, err := r.ReadString('\n')
			if err != nil {
				t.Fatalf("read: %v", err)
			}
			last = strings.TrimRight(l, "\r\n")
			if len(last) < 4 || last[3] != '-' {
				return last
			}
		}
	}
	b64 := func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
	read()
	fmt.Fprintf(conn, "EHLO client.test\r\n")
	read()
	fmt.Fprintf(conn, "AUTH LOGIN\r\n")
	if l := read(); l != "334 "+b64("Username:") {
		t.Fatalf("first challenge = %q", l)
	}
	fmt.Fprintf(conn, "%s\r\n", b64("alice@example.com"))
	if l := read(); l != "334 "+b64("Password:") {
		t.Fatalf("second challenge = %q", l)
	}
	fmt.Fprintf(conn, "%s\r\n", b64("alice-secret"))
	if l := read(); !strings.HasPrefix(l, "235 ") {
		t.Fatalf("verdict = %q, want 235", l)
	}
}

// TestSMTPMXStyle: mail for the demo domain needs no login; other domains
// are not relayed.
func TestSMTPMXStyle(t *testing.T) {
	b := startSMTP(t)
	c := dialSMTP(t, b)
	if err := send(c, "someone@remote.test", "alice@EXAMPLE.com", "Subject: mx\r\n\r\nhi\r\n"); err != nil {
		t.Fatalf("SendMail to a local domain = %v", err)
	}
	err := send(c, "someone@remote.test", "victim@elsewhere.test", "Subject: relay\r\n\r\nhi\r\n")
	var se *smtp.SMTPError
	if !errors.As(err, &se) || se.Code != 550 {
		t.Fatalf("SendMail to another domain = %v, want 550", err)
	}
	msgs := b.Messages()
	if len(msgs) != 1 || msgs[0].User != "" || msgs[0].From != "someone@remote.test" {
		t.Fatalf("messages = %+v", msgs)
	}
}

func TestSMTPKeepsLastMessages(t *testing.T) {
	b := startSMTP(t)
	for i := 0; i < MaxMessages+5; i++ {
		b.store(Message{From: fmt.Sprint(i)})
	}
	msgs := b.Messages()
	if len(msgs) != MaxMessages || msgs[0].From != "5" || msgs[len(msgs)-1].From != fmt.Sprint(MaxMessages+4) {
		t.Fatalf("kept %d messages, first %q, last %q", len(msgs), msgs[0].From, msgs[len(msgs)-1].From)
	}
}

func TestSMTPClose(t *testing.T) {
	b, err := StartSMTP("127.0.0.1:0", Users)
	if err != nil {
		t.Fatal(err)
	}
	addr := b.Addr()
	if err := b.Close(); err != nil {
		t.Fatalf("Close() = %v", err)
	}
	if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		c.Close()
		t.Fatal("still accepting after Close")
	}
}
