package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// clientOptions are how the bench client connects.
type clientOptions struct {
	// DialTimeout bounds the TCP connect and the TLS handshake.
	DialTimeout time.Duration
	// OpTimeout bounds each short command (greeting, LOGIN, LOGOUT, NOOP).
	OpTimeout time.Duration
	// BulkTimeout bounds one DOWNLOAD or UPLOAD.
	BulkTimeout time.Duration
	// TLS is the client config for tls targets.
	TLS *tls.Config
	// Source, if valid, is the local address of every client socket (the
	// port is still chosen by the kernel at connect time).
	Source netip.Addr
	// Password sent with LOGIN ("bench" logs in).
	Password string
}

// benchTLSConfig is the client TLS configuration for every tls target. The
// certificate is the bench's self-signed one, so it is not verified. The key
// exchange is pinned to X25519: Go clients offer the hybrid X25519MLKEM768
// first, which mailgate (Go) would accept and OpenSSL 3.0 (HAProxy, nginx)
// cannot, so left alone the handshakes would not be the same work. P-256
// stays in the list because a TLS 1.2 server (OpenSSL) only uses a P-256
// certificate with a client that lists the curve.
func benchTLSConfig() *tls.Config {
	return &tls.Config{
		InsecureSkipVerify: true, // loopback bench, self-signed certificate
		ServerName:         "localhost",
		CurvePreferences:   []tls.CurveID{tls.X25519, tls.CurveP256},
		MinVersion:         tls.VersionTLS12,
	}
}

// tlsInfo names the negotiated TLS version and cipher suite, "" for plain.
func (c *imapClient) tlsInfo() string {
	tc, ok := c.conn.(*tls.Conn)
	if !ok {
		return ""
	}
	st := tc.ConnectionState()
	return tls.VersionName(st.Version) + " " + tls.CipherSuiteName(st.CipherSuite)
}

func (o *clientOptions) defaults() {
	if o.DialTimeout <= 0 {
		o.DialTimeout = 10 * time.Second
	}
	if o.OpTimeout <= 0 {
		o.OpTimeout = 30 * time.Second
	}
	if o.BulkTimeout <= 0 {
		o.BulkTimeout = 10 * time.Minute
	}
	if o.TLS == nil {
		o.TLS = benchTLSConfig()
	}
	if o.Password == "" {
		o.Password = benchPassword
	}
}

// imapClient is one bench connection.
type imapClient struct {
	conn net.Conn
	r    *bufio.Reader
	o    *clientOptions
}

// dial connects, runs TLS for tls targets and reads the greeting.
func (o *clientOptions) dial(ctx context.Context, t Target) (*imapClient, error) {
	d := net.Dialer{Timeout: o.DialTimeout}
	if o.Source.IsValid() {
		d.LocalAddr = &net.TCPAddr{IP: o.Source.AsSlice()}
		if o.Source.Is4() {
			d.Control = bindNoPort
		}
	}
	c, err := d.DialContext(ctx, "tcp", t.Addr)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", t.Addr, err)
	}
	if t.TLS {
		tc := tls.Client(c, o.TLS)
		hctx, cancel := context.WithTimeout(ctx, o.DialTimeout)
		err := tc.HandshakeContext(hctx)
		cancel()
		if err != nil {
			c.Close()
			return nil, fmt.Errorf("TLS handshake with %s: %w", t.Addr, err)
		}
		c = tc
	}
	ic := &imapClient{conn: c, r: bufio.NewReaderSize(c, 4<<10), o: o}
	c.SetDeadline(time.Now().Add(o.OpTimeout))
	line, err := ic.readLine()
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("greeting from %s: %w", t.Addr, err)
	}
	if !strings.HasPrefix(line, "* OK") {
		c.Close()
		return nil, fmt.Errorf("greeting from %s: %q", t.Addr, trunc(line))
	}
	return ic, nil
}

// Close closes the connection.
func (c *imapClient) Close() error { return c.conn.Close() }

func (c *imapClient) readLine() (string, error) {
	line, err := c.r.ReadSlice('\n')
	if errors.Is(err, bufio.ErrBufferFull) {
		return "", errors.New("response line too long")
	}
	if err != nil {
		return "", err
	}
	return strings.TrimRight(string(line), "\r\n"), nil
}

// roundTrip writes one command line and reads responses up to the tagged
// one, which it returns. Untagged lines are skipped (none carries a literal
// in anything the bench asks).
func (c *imapClient) roundTrip(tag, line string) (string, error) {
	c.conn.SetDeadline(time.Now().Add(c.o.OpTimeout))
	if _, err := io.WriteString(c.conn, line+"\r\n"); err != nil {
		return "", err
	}
	return c.readTagged(tag)
}

func (c *imapClient) readTagged(tag string) (string, error) {
	for {
		l, err := c.readLine()
		if err != nil {
			return "", err
		}
		if strings.HasPrefix(l, tag+" ") {
			return l, nil
		}
		if strings.HasPrefix(l, "+") {
			return "", fmt.Errorf("unexpected continuation %q", trunc(l))
		}
	}
}

// expectOK checks a tagged response's status.
func expectOK(tag, resp string) error {
	if strings.HasPrefix(resp, tag+" OK") {
		return nil
	}
	return fmt.Errorf("%s: %q", tag, trunc(resp))
}

// login sends LOGIN with atom arguments (user names here are atoms).
func (c *imapClient) login(user string) error {
	resp, err := c.roundTrip("a", "a LOGIN "+user+" "+c.o.Password)
	if err != nil {
		return fmt.Errorf("LOGIN: %w", err)
	}
	return expectOK("a", resp)
}

// logout says LOGOUT and reads the tagged OK.
func (c *imapClient) logout() error {
	resp, err := c.roundTrip("z", "z LOGOUT")
	if err != nil {
		return fmt.Errorf("LOGOUT: %w", err)
	}
	return expectOK("z", resp)
}

// noop checks that a session still answers.
func (c *imapClient) noop() error {
	resp, err := c.roundTrip("n", "n NOOP")
	if err != nil {
		return fmt.Errorf("NOOP: %w", err)
	}
	return expectOK("n", resp)
}

// download asks for n bytes and reads exactly n, then the tagged OK, which
// must follow at once (so a proxy that lost or added a byte fails here).
func (c *imapClient) download(n int64, buf []byte) error {
	c.conn.SetDeadline(time.Now().Add(c.o.BulkTimeout))
	if _, err := io.WriteString(c.conn, "b DOWNLOAD "+strconv.FormatInt(n, 10)+"\r\n"); err != nil {
		return err
	}
	for left := n; left > 0; {
		want := buf
		if int64(len(want)) > left {
			want = want[:left]
		}
		// bufio.Reader.Read goes straight to the socket for reads at
		// least as large as its buffer once the buffer is empty.
		k, err := c.r.Read(want)
		left -= int64(k)
		if err != nil && left > 0 {
			return fmt.Errorf("DOWNLOAD: %d of %d bytes: %w", n-left, n, err)
		}
	}
	l, err := c.readLine()
	if err != nil {
		return fmt.Errorf("DOWNLOAD: reading the OK: %w", err)
	}
	return expectOK("b", l)
}

// upload sends n bytes after the command line and waits for the OK.
func (c *imapClient) upload(n int64, buf []byte) error {
	c.conn.SetDeadline(time.Now().Add(c.o.BulkTimeout))
	if _, err := io.WriteString(c.conn, "b UPLOAD "+strconv.FormatInt(n, 10)+"\r\n"); err != nil {
		return err
	}
	for left := n; left > 0; {
		chunk := buf
		if int64(len(chunk)) > left {
			chunk = chunk[:left]
		}
		k, err := c.conn.Write(chunk)
		left -= int64(k)
		if err != nil {
			return fmt.Errorf("UPLOAD: %d of %d bytes: %w", n-left, n, err)
		}
	}
	resp, err := c.readTagged("b")
	if err != nil {
		return fmt.Errorf("UPLOAD: reading the OK: %w", err)
	}
	return expectOK("b", resp)
}

// trunc shortens a line for an error message.
func trunc(s string) string {
	if len(s) > 120 {
		return s[:120] + "..."
	}
	return s
}
