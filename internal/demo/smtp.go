package demo

import (
	"bytes"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

// Message is one message the SMTP demo backend accepted.
type Message struct {
	From     string    // envelope sender (MAIL FROM)
	To       []string  // envelope recipients (RCPT TO)
	User     string    // the AUTH user; "" for mail that came without login (MX)
	Helo     string    // the client's HELO/EHLO name
	Data     []byte    // the message as received, dot-unstuffed, CRLF line endings
	Received time.Time // when DATA completed
}

// SMTPBackend is an in-memory SMTP server on loopback for `mailgate demo`:
// AUTH PLAIN and LOGIN for the demo users, mail accepted for recipients in
// the users' domains (from anyone, like an MX, or from a logged-in user), the
// last MaxMessages kept in memory. It accepts AUTH without TLS: mailgate in
// front of it terminates TLS.
type SMTPBackend struct {
	srv     *smtp.Server
	ln      net.Listener
	users   map[string]string
	domains map[string]bool

	mu   sync.Mutex
	msgs []Message
}

// MaxMessages is how many accepted messages an SMTPBackend keeps.
const MaxMessages = 100

// StartSMTP serves an in-memory SMTP server on addr (use 127.0.0.1:0 for
// any port) with the given users (address → password).
func StartSMTP(addr string, users map[string]string) (*SMTPBackend, error) {
	b := &SMTPBackend{users: map[string]string{}, domains: map[string]bool{}}
	for u, p := range users {
		u = strings.ToLower(u)
		b.users[u] = p
		if _, d, ok := strings.Cut(u, "@"); ok {
			b.domains[d] = true
		}
	}
	srv := smtp.NewServer(smtp.BackendFunc(func(c *smtp.Conn) (smtp.Session, error) {
		return &smtpSession{b: b, c: c}, nil
	}))
	srv.Domain = "localhost"
	srv.AllowInsecureAuth = true // loopback behind mailgate, which terminates TLS
	srv.MaxMessageBytes = 10 << 20
	srv.MaxRecipients = 100
	srv.ReadTimeout = 5 * time.Minute
	srv.WriteTimeout = time.Minute
	srv.ErrorLog = smtpDiscard{}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	b.srv, b.ln = srv, ln
	go srv.Serve(ln)
	return b, nil
}

// Addr is the backend's address.
func (b *SMTPBackend) Addr() string { return b.ln.Addr().String() }

// Close stops the backend and closes its connections. The listener is
// closed here too: Serve, which runs in its own goroutine, may not have
// registered it with the server yet.
func (b *SMTPBackend) Close() error {
	err := b.srv.Close()
	if lerr := b.ln.Close(); lerr != nil && !errors.Is(lerr, net.ErrClosed) && err == nil {
		err = lerr
	}
	return err
}

// Messages returns the messages accepted so far, oldest first (at most
// MaxMessages).
func (b *SMTPBackend) Messages() []Message {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]Message(nil), b.msgs...)
}

func (b *SMTPBackend) store(m Message) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.msgs) >= MaxMessages {
		b.msgs = append(b.msgs[:0], b.msgs[len(b.msgs)-MaxMessages+1:]...)
	}
	b.msgs = append(b.msgs, m)
}

// login checks a demo user's password; the error is the reply the client
// gets (535 5.7.8).
func (b *SMTPBackend) login(user, pass string) error {
	if p, ok := b.users[strings.ToLower(user)]; ok && p == pass {
		return nil
	}
	return smtp.ErrAuthFailed
}

var (
	errRelayDenied = &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 7, 1}, Message: "Relaying denied"}
	errNoSender    = &smtp.SMTPError{Code: 503, EnhancedCode: smtp.EnhancedCode{5, 5, 1}, Message: "Need MAIL first"}
	errNoRcpt      = &smtp.SMTPError{Code: 554, EnhancedCode: smtp.EnhancedCode{5, 5, 1}, Message: "No valid recipients"}
)

// smtpSession is one client connection.
type smtpSession struct {
	b    *SMTPBackend
	c    *smtp.Conn
	user string
	from *string
	to   []string
}

var _ smtp.AuthSession = (*smtpSession)(nil)

func (s *smtpSession) AuthMechanisms() []string { return []string{sasl.Plain, sasl.Login} }

func (s *smtpSession) Auth(mech string) (sasl.Server, error) {
	switch mech {
	case sasl.Plain:
		return sasl.NewPlainServer(func(identity, user, pass string) error {
			if identity != "" && !strings.EqualFold(identity, user) {
				return smtp.ErrAuthFailed
			}
			return s.authenticate(user, pass)
		}), nil
	case sasl.Login:
		return &loginServer{authenticate: s.authenticate}, nil
	}
	return nil, smtp.ErrAuthUnknownMechanism
}

func (s *smtpSession) authenticate(user, pass string) error {
	if err := s.b.login(user, pass); err != nil {
		return err
	}
	s.user = strings.ToLower(user)
	return nil
}

func (s *smtpSession) Mail(from string, _ *smtp.MailOptions) error {
	s.from, s.to = &from, nil
	return nil
}

func (s *smtpSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	if s.from == nil {
		return errNoSender
	}
	_, domain, ok := strings.Cut(strings.ToLower(to), "@")
	if !ok || !s.b.domains[domain] {
		return errRelayDenied
	}
	s.to = append(s.to, to)
	return nil
}

func (s *smtpSession) Data(r io.Reader) error {
	if s.from == nil || len(s.to) == 0 {
		io.Copy(io.Discard, r)
		return errNoRcpt
	}
	var buf bytes.Buffer
	if _, err := io.Copy(&buf, r); err != nil {
		return err
	}
	s.b.store(Message{From: *s.from, To: s.to, User: s.user, Helo: s.c.Hostname(), Data: buf.Bytes(), Received: time.Now()})
	s.from, s.to = nil, nil
	return nil
}

func (s *smtpSession) Reset() { s.from, s.to = nil, nil }

func (s *smtpSession) Logout() error { return nil }

// loginServer is the server side of SASL LOGIN (draft-murchison-sasl-login):
// "Username:", then "Password:". A non-empty initial response is the user
// name (MS-XLOGIN §3.1.5.1).
type loginServer struct {
	authenticate func(user, pass string) error
	step         int
	user         string
}

func (l *loginServer) Next(resp []byte) (challenge []byte, done bool, err error) {
	switch l.step {
	case 0:
		if len(resp) == 0 {
			l.step = 1
			return []byte("Username:"), false, nil
		}
		l.user, l.step = string(resp), 2
		return []byte("Password:"), false, nil
	case 1:
		l.user, l.step = string(resp), 2
		return []byte("Password:"), false, nil
	case 2:
		l.step = 3
		return nil, true, l.authenticate(l.user, string(resp))
	}
	return nil, false, errors.New("sasl: unexpected client response")
}

// smtpDiscard drops go-smtp's error log.
type smtpDiscard struct{}

func (smtpDiscard) Printf(string, ...any) {}
func (smtpDiscard) Println(...any)        {}
