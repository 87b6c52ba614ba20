package demo

// A small POP3 server (RFC 1939) for `mailgate demo`: CAPA (RFC 2449), USER
// and PASS, APOP, AUTH PLAIN and LOGIN (RFC 5034, with or without initial
// response), STAT, LIST, UIDL, RETR, TOP, DELE, RSET, NOOP and QUIT. Plain
// TCP only: mailgate in front of it terminates TLS.
//
// Each user's maildrop starts with one welcome message. A session works on
// the messages present when it logged in; messages it deletes are removed
// from the maildrop when it QUITs (the UPDATE state, RFC 1939 §6). There is
// no exclusive maildrop lock: two sessions of one user see the same
// messages, as with Dovecot's default pop3_lock_session = no.

import (
	"bufio"
	"bytes"
	"crypto/md5"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"
)

// pop3 server limits.
const (
	pop3MaxLine     = 12 * 1024        // a command, or an AUTH line (base64 of 8 KiB)
	pop3MaxBad      = 10               // unknown or malformed commands before the server closes
	pop3IdleTimeout = 10 * time.Minute // autologout (RFC 1939 §3: at least 10 minutes)
)

// POP3Backend is an in-memory POP3 server on loopback.
type POP3Backend struct {
	srv   *tcpServer
	users map[string]string // lower-cased name -> password

	mu    sync.Mutex
	drops map[string][]*popMessage // lower-cased name -> maildrop
}

type popMessage struct {
	uid  string
	data []byte // CRLF line endings, ending with CRLF
}

// StartPOP3 serves an in-memory POP3 server on addr (use 127.0.0.1:0 for
// any port) with the given users, each with a maildrop holding one welcome
// message.
func StartPOP3(addr string, users map[string]string) (*POP3Backend, error) {
	b := &POP3Backend{
		users: make(map[string]string, len(users)),
		drops: make(map[string][]*popMessage, len(users)),
	}
	for name, pass := range users {
		key := strings.ToLower(name)
		b.users[key] = pass
		b.drops[key] = []*popMessage{{uid: "mailgate-welcome-1", data: welcome(name)}}
	}
	srv, err := serveTCP(addr, func(c net.Conn) {
		s := &popSession{b: b, conn: c, r: bufio.NewReader(c), w: bufio.NewWriter(c)}
		s.run()
	})
	if err != nil {
		return nil, err
	}
	b.srv = srv
	return b, nil
}

// Addr is the backend's address.
func (b *POP3Backend) Addr() string { return b.srv.Addr() }

// Close stops the backend: the listener and every session are closed, and
// Close returns when their goroutines have ended.
func (b *POP3Backend) Close() error { return b.srv.Close() }

// popSession is one POP3 connection.
type popSession struct {
	b    *POP3Backend
	conn net.Conn
	r    *bufio.Reader
	w    *bufio.Writer

	timestamp string // APOP challenge of this session's greeting
	user      string // USER given, awaiting PASS
	login     string // authenticated user (lower-cased); "" in AUTHORIZATION
	msgs      []*popMessage
	deleted   []bool
	bad       int
}

func (s *popSession) run() {
	var nonce [8]byte
	rand.Read(nonce[:])
	s.timestamp = fmt.Sprintf("<%x.%d@mailgate.demo>", nonce, time.Now().UnixNano())
	s.ok("mailgate demo POP3 server ready " + s.timestamp)
	for {
		if s.r.Buffered() == 0 { // answer a pipelined batch in one write (RFC 2449 §6.6)
			if s.w.Flush() != nil {
				return
			}
		}
		line, err := s.readLine()
		if err != nil {
			if errors.Is(err, errPOPLineTooLong) {
				if s.fail("Line too long") {
					continue
				}
			}
			s.w.Flush()
			return
		}
		name, args, _ := strings.Cut(line, " ")
		if !s.command(strings.ToUpper(name), args) {
			s.w.Flush()
			return
		}
	}
}

var errPOPLineTooLong = errors.New("line too long")

// readLine reads one line (CRLF or LF), consuming an over-long one whole.
func (s *popSession) readLine() (string, error) {
	s.conn.SetReadDeadline(time.Now().Add(pop3IdleTimeout))
	var line []byte
	tooLong := false
	for {
		chunk, err := s.r.ReadSlice('\n')
		if !tooLong {
			if len(line)+len(chunk) > pop3MaxLine {
				tooLong, line = true, nil
			} else {
				line = append(line, chunk...)
			}
		}
		if err == bufio.ErrBufferFull {
			continue
		}
		if err != nil {
			return "", err
		}
		break
	}
	if tooLong {
		return "", errPOPLineTooLong
	}
	return strings.TrimRight(string(line), "\r\n"), nil
}

func (s *popSession) send(line string) {
	s.w.WriteString(line)
	s.w.WriteString("\r\n")
}

func (s *popSession) ok(text string) {
	if text == "" {
		s.send("+OK")
		return
	}
	s.send("+OK " + text)
}

func (s *popSession) err(text string) { s.send("-ERR " + text) }

// fail answers a bad command; false means the session must end.
func (s *popSession) fail(text string) bool {
	s.bad++
	if s.bad >= pop3MaxBad {
		s.err(text + "; too many invalid commands")
		return false
	}
	s.err(text)
	return true
}

// multi writes a multi-line response body, dot-stuffed (RFC 1939 §3).
func (s *popSession) multi(lines []string) {
	for _, l := range lines {
		if strings.HasPrefix(l, ".") {
			s.w.WriteByte('.')
		}
		s.send(l)
	}
	s.send(".")
}

// command runs one command; false ends the session.
func (s *popSession) command(name, args string) bool {
	switch name {
	case "CAPA":
		s.ok("Capability list follows")
		s.multi([]string{"TOP", "UIDL", "USER", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING", "SASL PLAIN LOGIN", "IMPLEMENTATION mailgate-demo"})
		return true
	case "QUIT":
		s.quit()
		return false
	case "NOOP":
		if s.login == "" {
			return s.fail("Unknown command")
		}
		s.ok("")
		return true
	}
	if s.login == "" {
		return s.authorization(name, args)
	}
	return s.transaction(name, args)
}

// authorization handles the commands of the AUTHORIZATION state (RFC 1939 §4).
func (s *popSession) authorization(name, args string) bool {
	switch name {
	case "USER":
		if args == "" {
			return s.fail("Missing user name")
		}
		s.user = args
		s.ok("")
	case "PASS":
		if s.user == "" {
			s.err("No username given")
			return true
		}
		user := s.user
		s.user = ""
		s.finishLogin(user, s.check(user, args))
	case "APOP":
		i := strings.LastIndexByte(args, ' ')
		if i <= 0 {
			return s.fail("Invalid APOP arguments")
		}
		user, digest := args[:i], args[i+1:]
		pass, known := s.b.users[strings.ToLower(user)]
		sum := md5.Sum([]byte(s.timestamp + pass))
		good := known && subtle.ConstantTimeCompare([]byte(hex.EncodeToString(sum[:])), []byte(strings.ToLower(digest))) == 1
		s.finishLogin(user, good)
	case "AUTH":
		return s.auth(args)
	case "STLS":
		s.err("STLS not available (plain TCP behind mailgate)")
	default:
		return s.fail("Unknown command")
	}
	return true
}

func (s *popSession) check(user, pass string) bool {
	want, known := s.b.users[strings.ToLower(user)]
	return known && subtle.ConstantTimeCompare([]byte(want), []byte(pass)) == 1
}

// finishLogin enters the TRANSACTION state on success, taking the
// session's view of the maildrop.
func (s *popSession) finishLogin(user string, good bool) {
	if !good {
		s.err("[AUTH] Authentication failed")
		return
	}
	s.login = strings.ToLower(user)
	s.b.mu.Lock()
	s.msgs = append([]*popMessage(nil), s.b.drops[s.login]...)
	s.b.mu.Unlock()
	s.deleted = make([]bool, len(s.msgs))
	s.ok("Logged in")
}

// auth runs AUTH (RFC 5034): a bare AUTH lists the mechanisms.
func (s *popSession) auth(args string) bool {
	if args == "" {
		s.ok("Methods supported")
		s.multi([]string{"PLAIN", "LOGIN"})
		return true
	}
	mech, ir, hasIR := strings.Cut(args, " ")
	var first []byte
	if hasIR {
		var ok bool
		if first, ok = decode64(ir); !ok {
			return s.fail("Invalid base64 data in initial response")
		}
	}
	// next returns the initial response once, then asks with challenge.
	next := func(challenge string) ([]byte, bool) {
		if hasIR {
			hasIR = false
			return first, true
		}
		return s.challenge(challenge)
	}
	switch strings.ToUpper(mech) {
	case "PLAIN":
		msg, ok := next("")
		if !ok {
			return true
		}
		f := bytes.Split(msg, []byte{0})
		if len(f) != 3 {
			s.err("[AUTH] Authentication failed")
			return true
		}
		user := string(f[1])
		if len(f[0]) > 0 && !strings.EqualFold(string(f[0]), user) {
			s.err("[AUTH] Authorization identity not allowed")
			return true
		}
		s.finishLogin(user, s.check(user, string(f[2])))
	case "LOGIN":
		user, ok := next("Username:")
		if !ok {
			return true
		}
		pass, ok := s.challenge("Password:")
		if !ok {
			return true
		}
		s.finishLogin(string(user), s.check(string(user), string(pass)))
	default:
		s.err("Unsupported authentication mechanism")
	}
	return true
}

// challenge sends "+ base64" and reads the answer; false means the
// exchange ended (cancelled, or not base64) and the client was answered.
func (s *popSession) challenge(ch string) ([]byte, bool) {
	s.send("+ " + base64.StdEncoding.EncodeToString([]byte(ch)))
	s.w.Flush()
	line, err := s.readLine()
	if err != nil {
		s.err("Authentication failed")
		return nil, false
	}
	if line == "*" {
		s.err("Authentication cancelled")
		return nil, false
	}
	b, ok := decode64(line)
	if !ok {
		s.err("Invalid base64 data")
		return nil, false
	}
	return b, true
}

func decode64(s string) ([]byte, bool) {
	if s == "=" {
		return []byte{}, true
	}
	b, err := base64.StdEncoding.Strict().DecodeString(s)
	return b, err == nil
}

// transaction handles the commands of the TRANSACTION state (RFC 1939 §5).
func (s *popSession) transaction(name, args string) bool {
	switch name {
	case "STAT":
		n, size := s.stat()
		s.ok(fmt.Sprintf("%d %d", n, size))
	case "LIST", "UIDL":
		if args != "" {
			i, ok := s.msg(args)
			if !ok {
				return true
			}
			if name == "LIST" {
				s.ok(fmt.Sprintf("%d %d", i+1, len(s.msgs[i].data)))
			} else {
				s.ok(fmt.Sprintf("%d %s", i+1, s.msgs[i].uid))
			}
			return true
		}
		n, size := s.stat()
		s.ok(fmt.Sprintf("%d messages (%d octets)", n, size))
		var lines []string
		for i, m := range s.msgs {
			if s.deleted[i] {
				continue
			}
			if name == "LIST" {
				lines = append(lines, fmt.Sprintf("%d %d", i+1, len(m.data)))
			} else {
				lines = append(lines, fmt.Sprintf("%d %s", i+1, m.uid))
			}
		}
		s.multi(lines)
	case "RETR":
		if i, ok := s.msg(args); ok {
			s.ok(fmt.Sprintf("%d octets", len(s.msgs[i].data)))
			s.multi(messageLines(s.msgs[i].data, -1))
		}
	case "TOP":
		num, count, _ := strings.Cut(args, " ")
		n, err := strconv.Atoi(count)
		if err != nil || n < 0 {
			return s.fail("Invalid TOP arguments")
		}
		if i, ok := s.msg(num); ok {
			s.ok("")
			s.multi(messageLines(s.msgs[i].data, n))
		}
	case "DELE":
		if i, ok := s.msg(args); ok {
			s.deleted[i] = true
			s.ok(fmt.Sprintf("message %d deleted", i+1))
		}
	case "RSET":
		clear(s.deleted)
		n, size := s.stat()
		s.ok(fmt.Sprintf("maildrop has %d messages (%d octets)", n, size))
	default:
		return s.fail("Unknown command")
	}
	return true
}

// stat counts the messages not marked deleted and their size.
func (s *popSession) stat() (n, size int) {
	for i, m := range s.msgs {
		if !s.deleted[i] {
			n++
			size += len(m.data)
		}
	}
	return n, size
}

// msg resolves a message-number argument; false means the client was
// answered with -ERR.
func (s *popSession) msg(arg string) (int, bool) {
	n, err := strconv.Atoi(arg)
	if err != nil || n < 1 || n > len(s.msgs) {
		s.err("No such message")
		return 0, false
	}
	if s.deleted[n-1] {
		s.err(fmt.Sprintf("Message %d already deleted", n))
		return 0, false
	}
	return n - 1, true
}

// messageLines splits a message into lines; with body >= 0 only the
// headers, the blank line and that many body lines (TOP, RFC 1939 §7).
func messageLines(data []byte, body int) []string {
	lines := strings.Split(strings.TrimSuffix(string(data), "\r\n"), "\r\n")
	if body < 0 {
		return lines
	}
	for i, l := range lines {
		if l == "" {
			return lines[:min(len(lines), i+1+body)]
		}
	}
	return lines
}

// quit ends the session; in the TRANSACTION state the messages marked
// deleted leave the maildrop first (the UPDATE state, RFC 1939 §6).
func (s *popSession) quit() {
	if s.login == "" {
		s.ok("mailgate demo POP3 server signing off")
		return
	}
	s.b.mu.Lock()
	var kept []*popMessage
	for _, m := range s.b.drops[s.login] {
		gone := false
		for i, mine := range s.msgs {
			if mine == m && s.deleted[i] {
				gone = true
			}
		}
		if !gone {
			kept = append(kept, m)
		}
	}
	s.b.drops[s.login] = kept
	s.b.mu.Unlock()
	s.ok(fmt.Sprintf("mailgate demo POP3 server signing off (%d messages left)", len(kept)))
}
