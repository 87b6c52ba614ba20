// Package demo holds the small embedded backends `mailgate demo` runs behind
// the proxy so that it works with no mail server installed, and the
// simulated clients of `mailgate demo -traffic` (Traffic). The backends are
// real protocol servers (go-imap's in-memory server for IMAP), bound to
// loopback.
package demo

import (
	"bytes"
	"net"
	"strings"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapserver"
	"github.com/emersion/go-imap/v2/imapserver/imapmemserver"
)

// Users are the demo accounts.
var Users = map[string]string{
	"alice@example.com": "alice-secret",
	"bob@example.com":   "bob-secret",
}

// IMAPBackend is an in-memory IMAP server on loopback.
type IMAPBackend struct {
	srv *imapserver.Server
	ln  net.Listener
}

// StartIMAP serves an in-memory IMAP server on addr (use 127.0.0.1:0 for
// any port) with the given users, each with an INBOX holding one message.
func StartIMAP(addr string, users map[string]string) (*IMAPBackend, error) {
	mem := imapmemserver.New()
	for name, pass := range users {
		u := imapmemserver.NewUser(name, pass)
		if err := u.Create("INBOX", nil); err != nil {
			return nil, err
		}
		msg := welcome(name)
		if _, err := u.Append("INBOX", literal{bytes.NewReader(msg), int64(len(msg))}, &imap.AppendOptions{}); err != nil {
			return nil, err
		}
		mem.AddUser(u)
	}
	srv := imapserver.New(&imapserver.Options{
		NewSession: func(*imapserver.Conn) (imapserver.Session, *imapserver.GreetingData, error) {
			return mem.NewSession(), nil, nil
		},
		Caps:         imap.CapSet{imap.CapIMAP4rev1: {}, imap.CapIMAP4rev2: {}},
		InsecureAuth: true, // loopback behind mailgate, which terminates TLS
		Logger:       discard{},
	})
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	go srv.Serve(ln)
	return &IMAPBackend{srv: srv, ln: ln}, nil
}

// Addr is the backend's address.
func (b *IMAPBackend) Addr() string { return b.ln.Addr().String() }

// Close stops the backend.
func (b *IMAPBackend) Close() error { return b.srv.Close() }

func welcome(to string) []byte {
	body := strings.Join([]string{
		"From: mailgate demo <demo@example.com>",
		"To: " + to,
		"Subject: Welcome to the mailgate demo",
		"Date: " + time.Now().UTC().Format(time.RFC1123Z),
		"Message-ID: <welcome@mailgate.demo>",
		"",
		"This mailbox lives in memory behind mailgate.",
		"",
	}, "\r\n")
	return []byte(body)
}

type literal struct {
	*bytes.Reader
	n int64
}

func (l literal) Size() int64 { return l.n }

type discard struct{}

func (discard) Printf(string, ...any) {}
