package main

import (
	"bufio"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// The bench backend: a minimal IMAP4rev1 server (RFC 3501 framing) that is
// correct for everything the bench, mailgate, HAProxy and nginx send it:
// CAPABILITY, NOOP, ID, LOGOUT, LOGIN with atoms, quoted strings or
// literals (nginx always sends literals), AUTHENTICATE PLAIN with or without
// an initial response. Any user whose password is "bench" logs in. After
// login two bench-only commands move bulk bytes through the proxy's relay:
//
//	b DOWNLOAD <n>   the server sends n raw payload bytes, then "b OK ..."
//	b UPLOAD <n>     the client sends n raw bytes right after the line,
//	                 then the server answers "b OK ..."

const (
	backendGreeting = "* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] ready\r\n"
	benchPassword   = "bench"
	maxArgLiteral   = 4 << 10 // longest literal accepted as a LOGIN argument
	maxTransfer     = 1 << 42 // largest DOWNLOAD/UPLOAD
	bulkBufSize     = 1 << 20 // payload and sink buffer size
	connBufSize     = 4 << 10 // per-connection read buffer, hence the longest line
	respBufSize     = 1 << 10 // per-connection write buffer
	maxBadCommands  = 10      // close after this many BAD answers
	logoutLinger    = 5 * time.Second
	downloadTag     = "DOWNLOAD"
	uploadTag       = "UPLOAD"
	badCommandReply = "BAD command unknown or arguments invalid"
)

var errLineTooLong = errors.New("command line too long")

// Backend serves bench IMAP sessions on any number of listeners.
type Backend struct {
	payload []byte    // read-only source of every DOWNLOAD
	sinks   sync.Pool // *[]byte of bulkBufSize for UPLOAD
	log     *log.Logger

	mu     sync.Mutex
	lns    []net.Listener
	conns  map[net.Conn]struct{}
	closed bool
	wg     sync.WaitGroup
}

// NewBackend returns a backend; logger may be nil (errors are then dropped).
func NewBackend(logger *log.Logger) *Backend {
	if logger == nil {
		logger = log.New(io.Discard, "", 0)
	}
	p := make([]byte, bulkBufSize)
	for i := range p {
		p[i] = 'a' + byte(i%26) // printable, so a stray payload in a log is readable
	}
	b := &Backend{payload: p, log: logger, conns: map[net.Conn]struct{}{}}
	b.sinks.New = func() any { s := make([]byte, bulkBufSize); return &s }
	return b
}

// Serve accepts on ln until Close. It returns nil after Close.
func (b *Backend) Serve(ln net.Listener) error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		ln.Close()
		return nil
	}
	b.lns = append(b.lns, ln)
	b.mu.Unlock()
	for {
		c, err := ln.Accept()
		if err != nil {
			b.mu.Lock()
			closed := b.closed
			b.mu.Unlock()
			if closed || errors.Is(err, net.ErrClosed) {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			// EMFILE and friends: report, keep serving (the bench then
			// sees the refused connection and says so).
			b.log.Printf("backend: accept: %v", err)
			continue
		}
		b.mu.Lock()
		if b.closed {
			b.mu.Unlock()
			c.Close()
			return nil
		}
		b.conns[c] = struct{}{}
		b.wg.Add(1)
		b.mu.Unlock()
		go b.serveConn(c)
	}
}

// Close stops the listeners, closes every connection and waits for them.
func (b *Backend) Close() {
	b.mu.Lock()
	b.closed = true
	for _, ln := range b.lns {
		ln.Close()
	}
	for c := range b.conns {
		c.Close()
	}
	b.mu.Unlock()
	b.wg.Wait()
}

// session is one backend connection.
type session struct {
	b      *Backend
	c      net.Conn
	r      *bufio.Reader
	w      *bufio.Writer
	authed bool
	bad    int
}

func (b *Backend) serveConn(c net.Conn) {
	defer func() {
		c.Close()
		b.mu.Lock()
		delete(b.conns, c)
		b.mu.Unlock()
		b.wg.Done()
	}()
	s := &session{b: b, c: c, r: bufio.NewReaderSize(c, connBufSize), w: bufio.NewWriterSize(c, respBufSize)}
	s.w.WriteString(backendGreeting)
	if s.w.Flush() != nil {
		return
	}
	for {
		cmd, err := s.readCommand()
		if err != nil {
			var pe *parseError
			if errors.As(err, &pe) {
				s.bad++
				if pe.tag == "" {
					s.w.WriteString("* BAD " + pe.msg + "\r\n")
				} else {
					s.w.WriteString(pe.tag + " BAD " + pe.msg + "\r\n")
				}
				if s.w.Flush() != nil || s.bad >= maxBadCommands || pe.fatal {
					return
				}
				continue
			}
			return // EOF, reset, line too long: nothing sensible to answer
		}
		if !s.exec(cmd) {
			return
		}
		if s.w.Flush() != nil {
			return
		}
	}
}

// exec runs one command; false ends the session.
func (s *session) exec(cmd *command) bool {
	tag := cmd.tag
	switch cmd.name {
	case "CAPABILITY":
		s.w.WriteString("* CAPABILITY IMAP4rev1 AUTH=PLAIN\r\n" + tag + " OK CAPABILITY completed\r\n")
	case "NOOP":
		s.w.WriteString(tag + " OK NOOP completed\r\n")
	case "ID":
		s.w.WriteString("* ID (\"name\" \"mailgate-bench\")\r\n" + tag + " OK ID completed\r\n")
	case "LOGOUT":
		s.w.WriteString("* BYE logging out\r\n" + tag + " OK LOGOUT completed\r\n")
		if s.w.Flush() == nil {
			s.awaitClose()
		}
		return false
	case "LOGIN":
		if len(cmd.args) != 2 {
			s.w.WriteString(tag + " " + badCommandReply + "\r\n")
			break
		}
		s.verdict(tag, cmd.args[1] == benchPassword)
	case "AUTHENTICATE":
		return s.authenticate(cmd)
	case downloadTag:
		n, ok := s.bulkArg(cmd)
		if !ok {
			break
		}
		if s.w.Flush() != nil || s.download(n) != nil {
			return false
		}
		s.w.WriteString(tag + " OK DOWNLOAD completed\r\n")
	case uploadTag:
		n, ok := s.bulkArg(cmd)
		if !ok {
			// The client sends the bytes anyway; the stream is lost.
			s.w.Flush()
			return false
		}
		if s.upload(n) != nil {
			return false
		}
		s.w.WriteString(tag + " OK UPLOAD completed\r\n")
	default:
		s.bad++
		s.w.WriteString(tag + " " + badCommandReply + "\r\n")
		if s.bad >= maxBadCommands {
			s.w.Flush()
			return false
		}
	}
	return true
}

// awaitClose lets the client close first after LOGOUT (RFC 9051 has the
// server close; this backend waits up to logoutLinger for the client's EOF).
// On loopback at thousands of logins per second, whoever closes first keeps
// the TIME_WAIT: on the server side, a client that reuses the port soon
// after has its SYN answered with an ACK instead of a SYN-ACK (timestamps
// are offset per connection) and retries a second later, which showed up as
// 1 s and 3 s outliers in every target's login latency. On the client side
// (and on a proxy's side of its backend link) tcp_tw_reuse recycles the
// TIME_WAIT safely.
func (s *session) awaitClose() {
	s.c.SetReadDeadline(time.Now().Add(logoutLinger))
	io.Copy(io.Discard, s.r)
}

// verdict answers a LOGIN or AUTHENTICATE.
func (s *session) verdict(tag string, ok bool) {
	switch {
	case s.authed:
		s.w.WriteString(tag + " BAD already authenticated\r\n")
	case ok:
		s.authed = true
		s.w.WriteString(tag + " OK [CAPABILITY IMAP4rev1] logged in\r\n")
	default:
		s.w.WriteString(tag + " NO [AUTHENTICATIONFAILED] invalid credentials\r\n")
	}
}

// authenticate runs AUTHENTICATE PLAIN (RFC 4616), with or without an
// initial response.
func (s *session) authenticate(cmd *command) bool {
	tag := cmd.tag
	if len(cmd.args) < 1 || len(cmd.args) > 2 || !strings.EqualFold(cmd.args[0], "PLAIN") {
		s.w.WriteString(tag + " NO [CANNOT] only PLAIN\r\n")
		return true
	}
	var resp string
	if len(cmd.args) == 2 {
		resp = cmd.args[1]
	} else {
		s.w.WriteString("+ \r\n")
		if s.w.Flush() != nil {
			return false
		}
		line, err := readLine(s.r)
		if err != nil {
			return false
		}
		resp = string(line)
	}
	if resp == "*" {
		s.w.WriteString(tag + " BAD authentication cancelled\r\n")
		return true
	}
	if resp == "=" {
		resp = ""
	}
	raw, err := base64.StdEncoding.DecodeString(resp)
	if err != nil {
		s.w.WriteString(tag + " BAD invalid base64\r\n")
		return true
	}
	parts := strings.Split(string(raw), "\x00")
	if len(parts) != 3 {
		s.w.WriteString(tag + " BAD invalid PLAIN message\r\n")
		return true
	}
	s.verdict(tag, parts[2] == benchPassword)
	return true
}

// bulkArg validates the size of DOWNLOAD/UPLOAD and the session state,
// answering the client itself when it returns false.
func (s *session) bulkArg(cmd *command) (int64, bool) {
	if !s.authed {
		s.w.WriteString(cmd.tag + " NO not authenticated\r\n")
		return 0, false
	}
	if len(cmd.args) != 1 {
		s.w.WriteString(cmd.tag + " " + badCommandReply + "\r\n")
		return 0, false
	}
	n, err := strconv.ParseInt(cmd.args[0], 10, 64)
	if err != nil || n < 0 || n > maxTransfer {
		s.w.WriteString(cmd.tag + " BAD size must be 0.." + strconv.Itoa(maxTransfer) + "\r\n")
		return 0, false
	}
	return n, true
}

// download writes n payload bytes straight to the connection.
func (s *session) download(n int64) error {
	for n > 0 {
		chunk := s.b.payload
		if int64(len(chunk)) > n {
			chunk = chunk[:n]
		}
		k, err := s.c.Write(chunk)
		n -= int64(k)
		if err != nil {
			return err
		}
	}
	return nil
}

// upload reads and discards exactly n bytes: first what the line reader
// already holds, then straight from the connection into a pooled buffer
// (bufio.Reader.Read bypasses its own buffer for reads at least its size).
func (s *session) upload(n int64) error {
	bp := s.b.sinks.Get().(*[]byte)
	defer s.b.sinks.Put(bp)
	buf := *bp
	for n > 0 {
		want := buf
		if int64(len(want)) > n {
			want = want[:n]
		}
		k, err := s.r.Read(want)
		n -= int64(k)
		if err != nil {
			if n > 0 {
				return err
			}
		}
	}
	return nil
}

func cmdBackend(args []string) error {
	fs := flag.NewFlagSet("backend", flag.ExitOnError)
	listen := fs.String("listen", "127.0.0.1:30001", "plain IMAP listen address (loopback)")
	tlsListen := fs.String("tls-listen", "", "implicit-TLS IMAP listen address (loopback; needs -cert and -key)")
	certFile := fs.String("cert", "", "PEM certificate for -tls-listen")
	keyFile := fs.String("key", "", "PEM key for -tls-listen")
	fs.Parse(args)
	raiseNoFile()
	logger := log.New(os.Stderr, "", log.LstdFlags)
	b := NewBackend(logger)
	var lns []net.Listener
	ln, err := listenLoopback(*listen)
	if err != nil {
		return err
	}
	lns = append(lns, ln)
	if *tlsListen != "" {
		if *certFile == "" || *keyFile == "" {
			ln.Close()
			return errors.New("backend: -tls-listen needs -cert and -key")
		}
		kp, err := tls.LoadX509KeyPair(*certFile, *keyFile)
		if err != nil {
			ln.Close()
			return fmt.Errorf("backend: %w", err)
		}
		tln, err := listenLoopback(*tlsListen)
		if err != nil {
			ln.Close()
			return err
		}
		lns = append(lns, tls.NewListener(tln, &tls.Config{Certificates: []tls.Certificate{kp}, MinVersion: tls.VersionTLS12}))
	}
	for _, l := range lns {
		logger.Printf("backend: listening on %s", l.Addr())
		go b.Serve(l)
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	<-sig
	b.Close()
	return nil
}
