package proxy

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mailgate/mailgate/accounting"
	"github.com/mailgate/mailgate/internal/netx"
	"github.com/mailgate/mailgate/internal/testutil"
	"github.com/mailgate/mailgate/protocols"
)

// lineHandler is a minimal protocol for exercising the core: the backend
// greets with one line, "LOGIN user" is gated and forwarded, "OK" from the
// backend authenticates.
type lineHandler struct{}

func (lineHandler) Protocol() string { return "imap" }

func (lineHandler) PreAuth(ctx context.Context, s *protocols.Session) error {
	greet, err := s.Backend.ReadLine(512)
	if err != nil {
		return err
	}
	s.Client.WriteLine(string(greet))
	return lineDialogue(s)
}

// lineDialogue reads LOGIN lines until the backend accepts one.
func lineDialogue(s *protocols.Session) error {
	for {
		line, err := s.Client.ReadLine(512)
		if err != nil {
			return err
		}
		user, ok := strings.CutPrefix(string(line), "LOGIN ")
		if !ok {
			s.Client.WriteLine("BAD")
			continue
		}
		s.Observer.AuthAttempt(user, "LINE")
		if d := s.Gate.CheckLogin(user); d != protocols.DenyNone {
			s.Client.WriteLine("NO " + d)
			continue
		}
		s.Backend.WriteLine(string(line))
		v, err := s.Backend.ReadLine(512)
		if err != nil {
			return err
		}
		if string(v) == "OK" {
			s.Observer.Authenticated(user, "LINE") // before the client can act on it
			s.Client.WriteLine(string(v))
			return nil
		}
		s.Observer.AuthFailed(user, "LINE", false)
		s.Client.WriteLine(string(v))
	}
}

func (lineHandler) Refuse(w io.Writer, reason string) {
	io.WriteString(w, "BYE refused "+reason+"\r\n")
}
func (lineHandler) Goodbye(w io.Writer, reason string) { io.WriteString(w, "BYE "+reason+"\r\n") }

// backend is a scripted server: it optionally reads a PROXY v2 header,
// greets, answers LOGIN with OK, then echoes. It records what it received.
type backend struct {
	ln        net.Listener
	mu        sync.Mutex
	header    []byte
	got       bytes.Buffer
	wantProxy bool
}

func newBackend(t *testing.T, wantProxy bool) *backend {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &backend{ln: ln, wantProxy: wantProxy}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go b.serve(c)
		}
	}()
	return b
}

func (b *backend) serve(c net.Conn) {
	defer c.Close()
	br := bufio.NewReader(c)
	if b.wantProxy {
		h := make([]byte, 16)
		if _, err := io.ReadFull(br, h); err != nil {
			return
		}
		rest := make([]byte, binary.BigEndian.Uint16(h[14:16]))
		io.ReadFull(br, rest)
		b.mu.Lock()
		b.header = append(h, rest...)
		b.mu.Unlock()
	}
	io.WriteString(c, "HELLO\r\n")
	for {
		line, err := br.ReadString('\n')
		b.mu.Lock()
		b.got.WriteString(line)
		b.mu.Unlock()
		if err != nil {
			if tc, ok := c.(*net.TCPConn); ok && errors.Is(err, io.EOF) {
				io.WriteString(c, "BACKEND-SAW-EOF\r\n")
				tc.CloseWrite()
			}
			return
		}
		if strings.HasPrefix(line, "LOGIN ") {
			io.WriteString(c, "OK\r\n")
			continue
		}
		if line == "QUIT\r\n" { // the last word, then the server closes
			io.WriteString(c, "221 bye\r\n")
			return
		}
		io.WriteString(c, "ECHO "+line)
	}
}

func (b *backend) received() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.got.String()
}

type rig struct {
	t    *testing.T
	reg  *accounting.Registry
	srv  *Server
	ln   *Listener
	log  *bytes.Buffer
	logW *lockedWriter // guards log
}

func newRig(t *testing.T, be *backend, mod func(*ListenerOptions)) *rig {
	t.Helper()
	var logBuf bytes.Buffer
	logW := &lockedWriter{w: &logBuf}
	reg := accounting.New(accounting.Options{})
	srv := NewServer(reg, slog.New(slog.NewTextHandler(logW, &slog.HandlerOptions{Level: slog.LevelDebug})))
	opts := ListenerOptions{
		Name: "test", Address: "127.0.0.1:0", Handler: lineHandler{}, TLS: "none",
		ProxyHeaderTimeout: time.Second, RequireProxyHeader: true, IdleTimeout: time.Hour,
		Backend: Backend{Address: be.ln.Addr().String(), TLS: "none", ClientAddress: "none"},
	}
	if be.wantProxy {
		opts.Backend.ClientAddress = "proxy-v2"
	}
	if mod != nil {
		mod(&opts)
	}
	ln, err := srv.Listen(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	return &rig{t: t, reg: reg, srv: srv, ln: ln, log: &logBuf, logW: logW}
}

type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// dial connects from the given source address ("" for any).
func (r *rig) dial(src string) (net.Conn, *bufio.Reader) {
	r.t.Helper()
	d := net.Dialer{Timeout: 2 * time.Second}
	if src != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(src)}
	}
	c, err := d.Dial("tcp", r.ln.Addr().String())
	if err != nil {
		r.t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(5 * time.Second))
	r.t.Cleanup(func() { c.Close() })
	return c, bufio.NewReader(c)
}

// login dials, reads the greeting and logs user in; the link gets timeout
// for everything that follows.
func (r *rig) login(user string, timeout time.Duration) (net.Conn, *bufio.Reader) {
	r.t.Helper()
	c, br := r.dial("")
	c.SetDeadline(time.Now().Add(timeout))
	expectLine(r.t, br, "HELLO")
	io.WriteString(c, "LOGIN "+user+"\r\n")
	expectLine(r.t, br, "OK")
	return c, br
}

func expectLine(t *testing.T, br *bufio.Reader, want string) {
	t.Helper()
	line, err := br.ReadString('\n')
	if err != nil {
		t.Fatalf("read: %v (want %q)", err, want)
	}
	if got := strings.TrimRight(line, "\r\n"); got != want {
		t.Fatalf("got %q, want %q", got, want)
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	testutil.WaitFor(t, 3*time.Second, what, cond, nil)
}

func TestLoginRelayAndCounts(t *testing.T) {
	be := newBackend(t, false)
	r := newRig(t, be, nil)
	c, br := r.dial("")
	expectLine(t, br, "HELLO")
	waitFor(t, "preauth count", func() bool { return r.reg.Count("imap") == 1 })
	// A command pipelined behind the login must reach the backend after it.
	io.WriteString(c, "LOGIN alice@example.com\r\nNOOP\r\n")
	expectLine(t, br, "OK")
	expectLine(t, br, "ECHO NOOP")
	conns := r.reg.Connections(accounting.Filter{Protocol: "imap"})
	if len(conns) != 1 || conns[0].User != "alice@example.com" || conns[0].State != accounting.StateAuthenticated {
		t.Fatalf("connections = %+v", conns)
	}
	// Half-close: the client's EOF reaches the backend, whose answer still
	// reaches the client.
	c.(*net.TCPConn).CloseWrite()
	expectLine(t, br, "BACKEND-SAW-EOF")
	if _, err := br.ReadByte(); err != io.EOF {
		t.Fatalf("after backend EOF: %v, want EOF", err)
	}
	waitFor(t, "count to fall", func() bool { return r.reg.Count("imap") == 0 })
}

func TestGatedLoginNeverReachesBackend(t *testing.T) {
	be := newBackend(t, false)
	r := newRig(t, be, nil)
	r.reg.SetProtocolEnabled("alice@example.com", "imap", false, false)
	c, br := r.dial("")
	expectLine(t, br, "HELLO")
	io.WriteString(c, "LOGIN alice@example.com\r\n")
	expectLine(t, br, "NO disabled")
	if strings.Contains(be.received(), "LOGIN") {
		t.Fatalf("backend saw the gated login: %q", be.received())
	}
}

func TestDropSaysGoodbye(t *testing.T) {
	be := newBackend(t, false)
	r := newRig(t, be, nil)
	c, br := r.dial("")
	expectLine(t, br, "HELLO")
	io.WriteString(c, "LOGIN bob@example.com\r\n")
	expectLine(t, br, "OK")
	if n := r.reg.DropUser("bob@example.com", "imap", protocols.ByeDropped); n != 1 {
		t.Fatalf("DropUser = %d", n)
	}
	if r.reg.Count("imap") != 0 {
		t.Fatal("count did not fall at once")
	}
	expectLine(t, br, "BYE dropped")
	if _, err := br.ReadByte(); err == nil {
		t.Fatal("connection still open after drop")
	}
}

func TestProxyHeaderFromTrustedPeer(t *testing.T) {
	for _, tc := range []struct {
		name   string
		header []byte
	}{
		{"v1", []byte("PROXY TCP4 192.0.2.7 127.0.0.1 5555 1143\r\n")},
		{"v2", v2Header(t, "192.0.2.7:5555", "127.0.0.1:1143")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			be := newBackend(t, true)
			r := newRig(t, be, func(o *ListenerOptions) {
				o.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
			})
			c, br := r.dial("")
			c.Write(tc.header)
			expectLine(t, br, "HELLO")
			conns := r.reg.Connections(accounting.Filter{})
			if len(conns) != 1 || conns[0].Client != netip.MustParseAddrPort("192.0.2.7:5555") {
				t.Fatalf("client address = %+v, want 192.0.2.7:5555", conns)
			}
			// The backend got a v2 header naming the real client, byte for byte.
			local := r.ln.Addr().(*net.TCPAddr).AddrPort()
			want := v2Header(t, "192.0.2.7:5555", local.String())
			be.mu.Lock()
			got := be.header
			be.mu.Unlock()
			if !bytes.Equal(got, want) {
				t.Fatalf("upstream header\n got %x\nwant %x", got, want)
			}
		})
	}
}

// v2Header builds a PROXY v2 TCP4 PROXY-command header by hand (spec §2.2).
func v2Header(t *testing.T, src, dst string) []byte {
	s, d := netip.MustParseAddrPort(src), netip.MustParseAddrPort(dst)
	b := []byte("\r\n\r\n\x00\r\nQUIT\n")
	b = append(b, 0x21, 0x11, 0, 12) // v2 PROXY, TCP over IPv4, 12 bytes
	s4, d4 := s.Addr().As4(), d.Addr().As4()
	b = append(b, s4[:]...)
	b = append(b, d4[:]...)
	b = binary.BigEndian.AppendUint16(b, s.Port())
	b = binary.BigEndian.AppendUint16(b, d.Port())
	return b
}

func TestProxyHeaderFromUntrustedPeerRefused(t *testing.T) {
	for _, hdr := range []string{"PROXY TCP4 192.0.2.7 127.0.0.1 5555 1143\r\n", "\r\n\r\n\x00\r\nQUIT\n\x21\x11\x00\x0c"} {
		be := newBackend(t, false)
		r := newRig(t, be, func(o *ListenerOptions) {
			o.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}
		})
		c, br := r.dial("")
		expectLine(t, br, "HELLO")
		io.WriteString(c, hdr+"LOGIN alice@example.com\r\n")
		if line, err := br.ReadString('\n'); err == nil {
			t.Fatalf("untrusted header answered with %q, want the connection closed", line)
		}
		waitFor(t, "count to fall", func() bool { return r.reg.Count("imap") == 0 })
		if strings.Contains(be.received(), "LOGIN") || strings.Contains(be.received(), "PROXY") {
			t.Fatalf("backend received %q", be.received())
		}
	}
}

func TestTrustedPeerWithoutHeader(t *testing.T) {
	be := newBackend(t, false)
	r := newRig(t, be, func(o *ListenerOptions) {
		o.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
		o.ProxyHeaderTimeout = 100 * time.Millisecond
	})
	_, br := r.dial("")
	if _, err := br.ReadString('\n'); err == nil {
		t.Fatal("required header missing but the session went on")
	}

	r2 := newRig(t, be, func(o *ListenerOptions) {
		o.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
		o.ProxyHeaderTimeout = 100 * time.Millisecond
		o.RequireProxyHeader = false
	})
	_, br2 := r2.dial("127.0.0.3")
	expectLine(t, br2, "HELLO")
	conns := r2.reg.Connections(accounting.Filter{})
	if len(conns) != 1 || conns[0].Client.Addr().String() != "127.0.0.3" {
		t.Fatalf("connections = %+v, want the socket address 127.0.0.3", conns)
	}
}

func TestBackendDownRefusesPolitely(t *testing.T) {
	be := newBackend(t, false)
	r := newRig(t, be, func(o *ListenerOptions) { o.Backend.Address = "127.0.0.1:1" })
	_, br := r.dial("")
	expectLine(t, br, "BYE refused unavailable")
	waitFor(t, "count to fall", func() bool { return r.reg.Count("imap") == 0 })
}

func TestListenerLimit(t *testing.T) {
	be := newBackend(t, false)
	r := newRig(t, be, func(o *ListenerOptions) { o.MaxConnections = 1 })
	_, br := r.dial("")
	expectLine(t, br, "HELLO")
	_, br2 := r.dial("")
	expectLine(t, br2, "BYE refused limit")
}

// implicitTLS makes a listener terminate TLS with a self-signed certificate.
func implicitTLS(t *testing.T) func(*ListenerOptions) {
	t.Helper()
	cert, err := netx.SelfSigned("localhost", "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	return func(o *ListenerOptions) {
		o.TLS, o.TLSConfig = "implicit", ServerTLSConfig([]tls.Certificate{cert})
	}
}

func TestImplicitTLSWithProxyHeaderInSameSegment(t *testing.T) {
	be := newBackend(t, false)
	withTLS := implicitTLS(t)
	r := newRig(t, be, func(o *ListenerOptions) {
		withTLS(o)
		o.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
	})
	raw, _ := r.dial("")
	// Header and ClientHello leave in one write, as a load balancer may send them.
	rec := &recordConn{Conn: raw}
	rec.pending = []byte("PROXY TCP4 198.51.100.4 127.0.0.1 4444 993\r\n")
	tc := tls.Client(rec, &tls.Config{InsecureSkipVerify: true})
	br := bufio.NewReader(tc)
	expectLine(t, br, "HELLO")
	io.WriteString(tc, "LOGIN carol@example.com\r\n")
	expectLine(t, br, "OK")
	conns := r.reg.Connections(accounting.Filter{})
	if len(conns) != 1 || !conns[0].TLS || conns[0].Client.Addr().String() != "198.51.100.4" {
		t.Fatalf("connections = %+v", conns)
	}
}

// recordConn prepends pending to the first write.
type recordConn struct {
	net.Conn
	pending []byte
}

func (r *recordConn) Write(p []byte) (int, error) {
	if r.pending != nil {
		b := append(r.pending, p...)
		r.pending = nil
		_, err := r.Conn.Write(b)
		return len(p), err
	}
	return r.Conn.Write(p)
}

func TestShutdownDrainsThenSaysGoodbye(t *testing.T) {
	be := newBackend(t, false)
	r := newRig(t, be, nil)
	c, br := r.dial("")
	expectLine(t, br, "HELLO")
	io.WriteString(c, "LOGIN dave@example.com\r\n")
	expectLine(t, br, "OK")
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	r.srv.Shutdown(ctx)
	if time.Since(start) < 150*time.Millisecond {
		t.Fatal("shutdown did not wait for the live session")
	}
	expectLine(t, br, "BYE shutdown")
	if _, err := net.DialTimeout("tcp", r.ln.Addr().String(), time.Second); err == nil {
		t.Fatal("listener still accepting after shutdown")
	}
}

func TestDropBeforeLoginSaysGoodbye(t *testing.T) {
	be := newBackend(t, false)
	r := newRig(t, be, nil)
	_, br := r.dial("")
	expectLine(t, br, "HELLO")
	conns := r.reg.Connections(accounting.Filter{})
	if len(conns) != 1 || !r.reg.DropConn(conns[0].ID, protocols.ByeDropped) {
		t.Fatalf("DropConn failed: %+v", conns)
	}
	expectLine(t, br, "BYE dropped")
	if _, err := br.ReadByte(); err == nil {
		t.Fatal("connection still open after drop")
	}
}

// forPlainAndTLS runs f with a rig whose listener is plain and then one that
// terminates TLS, and a dialer that speaks the same.
func forPlainAndTLS(t *testing.T, f func(t *testing.T, r *rig, dial func(timeout time.Duration) (net.Conn, *bufio.Reader))) {
	for _, withTLS := range []bool{false, true} {
		t.Run(map[bool]string{false: "plain", true: "tls"}[withTLS], func(t *testing.T) {
			be := newBackend(t, false)
			var mod func(*ListenerOptions)
			if withTLS {
				mod = implicitTLS(t)
			}
			r := newRig(t, be, mod)
			f(t, r, func(timeout time.Duration) (net.Conn, *bufio.Reader) {
				c, _ := r.dial("")
				c.SetDeadline(time.Now().Add(timeout))
				if withTLS {
					c = tls.Client(c, &tls.Config{InsecureSkipVerify: true})
				}
				return c, bufio.NewReader(c)
			})
		})
	}
}

// TestRelayLargeTransfer moves 8 MiB each way through a parked relay, plain
// (hibernation, wake-ups, splice) and with client TLS (records gathered).
func TestRelayLargeTransfer(t *testing.T) {
	forPlainAndTLS(t, func(t *testing.T, r *rig, dial func(time.Duration) (net.Conn, *bufio.Reader)) {
		c, br := dial(60 * time.Second)
		expectLine(t, br, "HELLO")
		io.WriteString(c, "LOGIN u@example.com\r\n")
		expectLine(t, br, "OK")
		line := strings.Repeat("x", 1023) + "\n"
		const lines = 8 << 10
		go func() {
			for i := 0; i < lines; i++ {
				if _, err := io.WriteString(c, line); err != nil {
					return
				}
				if i%2048 == 0 {
					time.Sleep(2 * pumpIdle) // let the relay park mid-stream
				}
			}
		}()
		for i := 0; i < lines; i++ {
			got, err := br.ReadString('\n')
			if err != nil || got != "ECHO "+line {
				t.Fatalf("line %d: %q, %v", i, got[:min(len(got), 20)], err)
			}
		}
	})
}

// TestDeferredAttrsMatchWith: a session logger built with withDeferred
// writes the same line as slog's With, attributes in the same order, and
// keeps attributes added later by the protocol handler.
func TestDeferredAttrsMatchWith(t *testing.T) {
	var a, b strings.Builder
	opts := &slog.HandlerOptions{ReplaceAttr: func(_ []string, at slog.Attr) slog.Attr {
		if at.Key == slog.TimeKey {
			return slog.Attr{}
		}
		return at
	}}
	la := slog.New(slog.NewTextHandler(&a, opts))
	lb := slog.New(slog.NewTextHandler(&b, opts))
	la.With("conn", uint64(7), "listener", "imap", "client", "127.0.0.2").With("protocol", "imap").Info("closed", "user", "alice")
	withDeferred(lb, slog.Uint64("conn", 7), slog.String("listener", "imap"), slog.String("client", "127.0.0.2")).With("protocol", "imap").Info("closed", "user", "alice")
	if a.String() != b.String() || !strings.Contains(b.String(), "conn=7 listener=imap client=127.0.0.2 protocol=imap user=alice") {
		t.Fatalf("deferred:\n%s\nWith:\n%s", b.String(), a.String())
	}
	b.Reset()
	withDeferred(slog.New(slog.NewTextHandler(&b, &slog.HandlerOptions{Level: slog.LevelWarn})), slog.Uint64("conn", 7)).Info("hidden")
	if b.Len() != 0 {
		t.Fatalf("a line below the level was written: %q", b.String())
	}
}

// TestIdleTimeout: a relayed session that carries nothing for IdleTimeout
// gets the timeout goodbye and is closed; one that keeps talking stays,
// however long it lives. Parked sessions are swept; without the park set
// (the goroutine relay) a timer per session does it.
func TestIdleTimeout(t *testing.T) {
	for _, parked := range []bool{true, false} {
		t.Run(map[bool]string{true: "parked", false: "goroutines"}[parked], func(t *testing.T) {
			be := newBackend(t, false)
			const limit = 400 * time.Millisecond
			r := newRig(t, be, func(o *ListenerOptions) { o.IdleTimeout = limit })
			if !parked {
				if r.srv.parker == nil {
					t.Skip("no epoll: already covered by the parked case")
				}
				r.srv.parker = nil
			}
			quiet, qbr := r.dial("")
			busy, bbr := r.dial("")
			for _, br := range []*bufio.Reader{qbr, bbr} {
				expectLine(t, br, "HELLO")
			}
			io.WriteString(quiet, "LOGIN q@example.com\r\n")
			io.WriteString(busy, "LOGIN b@example.com\r\n")
			expectLine(t, qbr, "OK")
			expectLine(t, bbr, "OK")
			start := time.Now()
			for time.Since(start) < 3*limit {
				io.WriteString(busy, "PING\r\n")
				expectLine(t, bbr, "ECHO PING")
				time.Sleep(limit / 5)
			}
			quiet.SetReadDeadline(time.Now().Add(5 * time.Second))
			expectLine(t, qbr, "BYE "+protocols.ByeTimeout)
			if _, err := qbr.ReadByte(); err == nil {
				t.Fatal("idle session still open after its goodbye")
			}
			if n := r.reg.Count("imap"); n != 1 {
				t.Fatalf("%d live sessions, want the busy one only", n)
			}
			io.WriteString(busy, "PING\r\n")
			expectLine(t, bbr, "ECHO PING")
		})
	}
}

// holdConn collects writes while hold is set and sends them in one write
// at flush: two TLS records in one segment.
type holdConn struct {
	net.Conn
	hold bool
	buf  []byte
}

func (h *holdConn) Write(p []byte) (int, error) {
	if h.hold {
		h.buf = append(h.buf, p...)
		return len(p), nil
	}
	return h.Conn.Write(p)
}

func (h *holdConn) flush() error {
	h.hold = false
	_, err := h.Conn.Write(h.buf)
	return err
}

// TestTLSRecordBehindLogin: a command pipelined behind the login in a TLS
// record of its own sits in the tls.Conn, where epoll cannot see it; the
// relay drains it at once instead of waiting for more bytes on the socket.
func TestTLSRecordBehindLogin(t *testing.T) {
	be := newBackend(t, false)
	r := newRig(t, be, implicitTLS(t))
	raw, _ := r.dial("")
	raw.SetDeadline(time.Now().Add(10 * time.Second))
	hc := &holdConn{Conn: raw}
	tc := tls.Client(hc, &tls.Config{InsecureSkipVerify: true})
	br := bufio.NewReader(tc)
	expectLine(t, br, "HELLO")
	hc.hold = true
	io.WriteString(tc, "LOGIN tls@example.com\r\n")
	io.WriteString(tc, "PIPELINED\r\n")
	if err := hc.flush(); err != nil {
		t.Fatal(err)
	}
	expectLine(t, br, "OK")
	expectLine(t, br, "ECHO PIPELINED")
	io.WriteString(tc, "LATER\r\n")
	expectLine(t, br, "ECHO LATER")
}

// TestIdleTimeoutStuckPump: a client that sends and never reads blocks the
// relay's pumps on full sockets; no byte moves, so the idle timeout still
// ends the session (a slow-reader DoS must not hold a session forever).
func TestIdleTimeoutStuckPump(t *testing.T) {
	be := newBackend(t, false)
	r := newRig(t, be, func(o *ListenerOptions) { o.IdleTimeout = 400 * time.Millisecond })
	c, br := r.dial("")
	expectLine(t, br, "HELLO")
	io.WriteString(c, "LOGIN stuck@example.com\r\n")
	expectLine(t, br, "OK")
	line := strings.Repeat("z", 64<<10) + "\n"
	go func() {
		for i := 0; i < 1024; i++ { // 64 MiB at most; blocks long before
			if _, err := io.WriteString(c, line); err != nil {
				return
			}
		}
	}()
	deadline := time.Now().Add(10 * time.Second)
	for r.reg.Count("imap") != 0 {
		if time.Now().After(deadline) {
			t.Fatal("the stuck session was never closed")
		}
		time.Sleep(50 * time.Millisecond)
	}
	c.Close()
}

// TestConcurrentDropsSayGoodbyeOnce: two drops of the same session at once
// (an administrator and the idle sweep, say): the client reads the goodbye
// exactly once, and neither drop closes the link before it is out.
func TestConcurrentDropsSayGoodbyeOnce(t *testing.T) {
	be := newBackend(t, false)
	r := newRig(t, be, nil)
	for i := 0; i < 20; i++ {
		c, br := r.login("twice@example.com", 10*time.Second)
		conns := r.reg.Connections(accounting.Filter{User: "twice@example.com"})
		if len(conns) != 1 {
			t.Fatalf("connections = %+v", conns)
		}
		var wg sync.WaitGroup
		for range 2 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				r.reg.DropConn(conns[0].ID, protocols.ByeDropped)
			}()
		}
		expectLine(t, br, "BYE dropped")
		if rest, err := io.ReadAll(br); err != nil || len(rest) != 0 {
			t.Fatalf("round %d: after the goodbye: %q, %v", i, rest, err)
		}
		wg.Wait()
		c.Close()
		waitFor(t, "the session to end", func() bool { return r.reg.Count("imap") == 0 })
	}
}

// TestLastWordBeforeClose: the backend answers QUIT and closes at once (as
// Postfix and Dovecot do); the answer reaches the client before the end,
// plain and over TLS, many times over.
func TestLastWordBeforeClose(t *testing.T) {
	forPlainAndTLS(t, func(t *testing.T, r *rig, dial func(time.Duration) (net.Conn, *bufio.Reader)) {
		for i := 0; i < 40; i++ {
			c, br := dial(10 * time.Second)
			expectLine(t, br, "HELLO")
			io.WriteString(c, "LOGIN last@example.com\r\nMAIL\r\n")
			expectLine(t, br, "OK")
			expectLine(t, br, "ECHO MAIL")
			io.WriteString(c, "QUIT\r\n")
			if l, err := br.ReadString('\n'); l != "221 bye\r\n" {
				t.Fatalf("round %d: after QUIT %q, %v", i, l, err)
			}
			if _, err := br.ReadByte(); err == nil {
				t.Fatalf("round %d: still open after the backend closed", i)
			}
			c.Close()
		}
	})
}

// An administrator's drop while the backend dial is still going (here the
// TLS handshake with a backend that never answers) is told as a drop, not
// as an unavailable backend, and is not counted as a dial error.
func TestDropDuringDial(t *testing.T) {
	bln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer bln.Close()
	held := make(chan net.Conn, 4)
	defer func() {
		bln.Close()
		for len(held) > 0 {
			(<-held).Close()
		}
	}()
	go func() {
		for {
			c, err := bln.Accept()
			if err != nil {
				return
			}
			held <- c // silent: the handshake never ends
		}
	}()
	r := newRig(t, &backend{ln: bln}, func(o *ListenerOptions) {
		o.Backend.TLS = "implicit"
		o.Backend.TLSConfig = &tls.Config{InsecureSkipVerify: true}
		o.Backend.DialTimeout = 10 * time.Second
	})
	_, br := r.dial("")
	var id uint64
	waitFor(t, "the connection to register", func() bool {
		cs := r.reg.Connections(accounting.Filter{})
		if len(cs) == 1 {
			id = cs[0].ID
		}
		return len(cs) == 1
	})
	time.Sleep(50 * time.Millisecond) // into the handshake
	if !r.reg.DropConn(id, protocols.ByeDropped) {
		t.Fatal("DropConn failed")
	}
	expectLine(t, br, "BYE "+protocols.ByeDropped)
	if n := r.reg.Stats().DialErrors["imap"]; n != 0 {
		t.Fatalf("a cancelled dial counted as %d dial error(s)", n)
	}
}
