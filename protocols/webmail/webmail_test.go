package webmail_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/mailgate/mailgate/accounting"
	"github.com/mailgate/mailgate/internal/demo"
	"github.com/mailgate/mailgate/internal/netx"
	"github.com/mailgate/mailgate/internal/testutil"
	"github.com/mailgate/mailgate/protocols/httpmail"
	"github.com/mailgate/mailgate/protocols/protocoltest"
	"github.com/mailgate/mailgate/protocols/webmail"
)

var _ httpmail.Webmail = (*webmail.Webmail)(nil)

const (
	waitTimeout = 30 * time.Second
	alice       = "alice@example.com"
)

var alicePassword = demo.Users[alice]

// clock is the registry's clock, moved by the test (Duration).
type clock struct{ ns atomic.Int64 }

func (c *clock) now() time.Time          { return time.Unix(0, c.ns.Load()) }
func (c *clock) advance(d time.Duration) { c.ns.Add(int64(d)) }

type tracker struct{ reg *accounting.Registry }

func (t tracker) Admit(i httpmail.ConnInfo) (httpmail.Conn, string) {
	c, refusal := t.reg.Admit(accounting.ConnInfo{Protocol: i.Protocol, Listener: i.Listener, Client: i.Client, TLS: i.TLS})
	if c == nil {
		return nil, refusal
	}
	return c, ""
}

type env struct {
	t       *testing.T
	reg     *accounting.Registry
	clk     *clock
	wm      *webmail.Webmail
	backend *demo.WebmailBackend
	addr    string
	pool    *x509.CertPool
	log     *protocoltest.SyncBuffer
	client  *http.Client
}

// start runs the demo webmail behind an httpmail front (HTTPS) with a real
// registry whose clock the test moves.
func start(t *testing.T) *env {
	t.Helper()
	e := &env{t: t, clk: &clock{}, log: &protocoltest.SyncBuffer{}}
	e.clk.ns.Store(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano())
	e.reg = accounting.New(accounting.Options{Now: e.clk.now})
	b, err := demo.StartWebmail("127.0.0.1:0", demo.Users, demo.WebmailOptions{Tick: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	e.backend = b
	log := slog.New(slog.NewTextHandler(e.log, &slog.HandlerOptions{Level: slog.LevelDebug}))
	e.wm, err = webmail.New(webmail.Options{LoginPath: demo.WebmailLoginPath, UserField: demo.WebmailUserField,
		Cookie: demo.WebmailCookie, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	cert, pool := testCert(t)
	e.pool = pool
	u, _ := url.Parse("http://" + b.Addr())
	srv, err := httpmail.New(httpmail.Options{
		Routes:  []httpmail.Route{{Protocol: httpmail.ProtoWebmail, Backend: u}},
		Tracker: tracker{e.reg}, Webmail: e.wm, Log: log,
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}},
	})
	if err != nil {
		t.Fatal(err)
	}
	a, err := srv.ListenTLS("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e.addr = a.String()
	jar, _ := cookiejar.New(nil)
	e.client = &http.Client{Jar: jar, Timeout: waitTimeout, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
		defer cancel()
		srv.Shutdown(ctx)
		b.Close()
		if t.Failed() {
			t.Logf("log:\n%s", e.log.String())
		}
	})
	return e
}

func (e *env) url(p string) string { return "https://" + e.addr + p }

func (e *env) login(user, pass string) *http.Response {
	e.t.Helper()
	resp, err := e.client.PostForm(e.url(demo.WebmailLoginPath), url.Values{"user": {user}, "password": {pass}})
	if err != nil {
		e.t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp
}

func (e *env) cookie() string {
	u, _ := url.Parse(e.url("/"))
	for _, c := range e.client.Jar.Cookies(u) {
		if c.Name == demo.WebmailCookie {
			return c.Value
		}
	}
	return ""
}

func (e *env) dialWS() *websocket.Conn {
	e.t.Helper()
	d := websocket.Dialer{TLSClientConfig: &tls.Config{RootCAs: e.pool}, HandshakeTimeout: waitTimeout}
	h := http.Header{"Cookie": {demo.WebmailCookie + "=" + e.cookie()}, "Origin": {"https://" + e.addr}}
	c, resp, err := d.Dial("wss://"+e.addr+"/ws", h)
	if err != nil {
		st := 0
		if resp != nil {
			st = resp.StatusCode
		}
		e.t.Fatalf("websocket dial: %v (status %d)", err, st)
	}
	e.t.Cleanup(func() { c.Close() })
	return c
}

func (e *env) row(user string) *accounting.UserRow {
	for _, r := range e.reg.Users(httpmail.ProtoWebmail) {
		if r.User == user {
			return &r
		}
	}
	return nil
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	testutil.WaitFor(t, waitTimeout, what, cond, nil)
}

// TestWebsocketLifecycle: login through the form maps the session cookie;
// the websocket opened with it counts as alice with a growing duration,
// relays messages, pings and ticks, and an administrator's drop closes it
// with 1008.
func TestWebsocketLifecycle(t *testing.T) {
	e := start(t)
	resp := e.login(alice, alicePassword)
	if resp.StatusCode != http.StatusFound || e.cookie() == "" {
		t.Fatalf("login = %d, cookie %q; want 302 and the session cookie", resp.StatusCode, e.cookie())
	}
	if d := e.reg.User(alice).Protocols[httpmail.ProtoWebmail]; d.LastLogin.IsZero() {
		t.Fatalf("webmail login not recorded: %+v", d)
	}
	r, err := e.client.Get(e.url("/mail"))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(r.Body)
	r.Body.Close()
	if r.StatusCode != 200 || !strings.Contains(string(body), "Inbox of "+alice) {
		t.Fatalf("GET /mail = %d %q", r.StatusCode, body)
	}

	c := e.dialWS()
	waitFor(t, "one live webmail connection of alice", func() bool {
		row := e.row(alice)
		return e.reg.Count(httpmail.ProtoWebmail) == 1 && row != nil && row.Connections == 1
	})
	e.clk.advance(5 * time.Second)
	d1 := e.row(alice).Duration
	e.clk.advance(7 * time.Second)
	d2 := e.row(alice).Duration
	if d1 < 5*time.Second || d2 != d1+7*time.Second {
		t.Errorf("duration %v then %v, want >= 5s then 7s more", d1, d2)
	}

	c.SetReadDeadline(time.Now().Add(waitTimeout))
	if err := c.WriteMessage(websocket.TextMessage, []byte("hello")); err != nil {
		t.Fatal(err)
	}
	if err := c.WriteMessage(websocket.BinaryMessage, []byte{0, 1, 2}); err != nil {
		t.Fatal(err)
	}
	pong := make(chan string, 1)
	c.SetPongHandler(func(s string) error { pong <- s; return nil })
	if err := c.WriteControl(websocket.PingMessage, []byte("p1"), time.Now().Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	var gotText, gotBinary, gotTick bool
	for !(gotText && gotBinary && gotTick) {
		kind, p, err := c.ReadMessage()
		if err != nil {
			t.Fatalf("reading: %v", err)
		}
		switch {
		case kind == websocket.TextMessage && string(p) == "hello":
			gotText = true
		case kind == websocket.BinaryMessage && bytes.Equal(p, []byte{0, 1, 2}):
			gotBinary = true
		case kind == websocket.TextMessage && strings.HasPrefix(string(p), "tick "):
			gotTick = true
		default:
			t.Fatalf("unexpected message %d %q", kind, p)
		}
	}
	select {
	case s := <-pong:
		if s != "p1" {
			t.Errorf("pong %q, want p1", s)
		}
	default:
		t.Errorf("the ping got no pong through the relay")
	}

	if n := e.reg.DropUser(alice, httpmail.ProtoWebmail, "test"); n != 1 {
		t.Fatalf("DropUser = %d, want 1", n)
	}
	for {
		_, _, err := c.ReadMessage()
		if err == nil {
			continue // ticks already in flight
		}
		var ce *websocket.CloseError
		if !errors.As(err, &ce) || ce.Code != websocket.ClosePolicyViolation {
			t.Fatalf("after the drop: %v, want close 1008", err)
		}
		break
	}
	waitFor(t, "the count to fall", func() bool { return e.reg.Count(httpmail.ProtoWebmail) == 0 })
	if log := e.log.String(); strings.Contains(log, e.cookie()) || strings.Contains(log, alicePassword) {
		t.Errorf("the log holds the cookie or the password:\n%s", log)
	}
}

// TestWebsocketCloseCode: a client's close code reaches the backend, whose
// echo comes back; the websocket stops counting.
func TestWebsocketCloseCode(t *testing.T) {
	e := start(t)
	e.login(alice, alicePassword)
	c := e.dialWS()
	waitFor(t, "the websocket to count", func() bool { return e.reg.Count(httpmail.ProtoWebmail) == 1 })
	c.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(4001, "bye"), time.Now().Add(time.Second))
	c.SetReadDeadline(time.Now().Add(waitTimeout))
	for {
		_, _, err := c.ReadMessage()
		if err == nil {
			continue
		}
		var ce *websocket.CloseError
		if !errors.As(err, &ce) || ce.Code != 4001 {
			t.Fatalf("close echo: %v, want 4001", err)
		}
		break
	}
	waitFor(t, "the count to fall", func() bool { return e.reg.Count(httpmail.ProtoWebmail) == 0 })
}

// TestLoginGatedAndFailed: a disabled user's login is refused with 403 and
// the password never reaches the backend; a wrong password is a failed
// login; a websocket without a session is refused by the backend.
func TestLoginGatedAndFailed(t *testing.T) {
	e := start(t)
	if resp := e.login(alice, "wrong-password-1"); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("wrong password = %d, want 401", resp.StatusCode)
	}
	if l := e.reg.Stats().Logins[httpmail.ProtoWebmail]; l["failure"] != 1 {
		t.Errorf("webmail logins %v, want 1 failure", l)
	}
	if _, err := e.reg.SetProtocolEnabled(alice, httpmail.ProtoWebmail, false, true); err != nil {
		t.Fatal(err)
	}
	resp, err := e.client.PostForm(e.url(demo.WebmailLoginPath), url.Values{"user": {alice}, "password": {alicePassword}})
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden || !strings.Contains(string(body), `"disabled"`) || e.cookie() != "" {
		t.Fatalf("gated login = %d %q cookie %q, want 403 JSON and no session", resp.StatusCode, body, e.cookie())
	}
	d := websocket.Dialer{TLSClientConfig: &tls.Config{RootCAs: e.pool}}
	_, r, err := d.Dial("wss://"+e.addr+"/ws", nil)
	if err == nil || r == nil || r.StatusCode != http.StatusUnauthorized {
		t.Fatalf("websocket without a session: %v %v, want 401 from the backend", err, r)
	}
}

// TestLogoutForgets: a response deleting the cookie forgets the session.
func TestLogoutForgets(t *testing.T) {
	e := start(t)
	e.login(alice, alicePassword)
	old := e.cookie()
	r := &http.Request{Header: http.Header{"Cookie": {demo.WebmailCookie + "=" + old}}}
	if u := e.wm.SessionUser(r); u != alice {
		t.Fatalf("SessionUser = %q, want %s", u, alice)
	}
	resp, err := e.client.Post(e.url("/logout"), "text/plain", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if u := e.wm.SessionUser(r); u != "" {
		t.Fatalf("SessionUser after logout = %q, want none", u)
	}
}

func testCert(t *testing.T) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	c, err := netx.SelfSigned("localhost", "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(c.Leaf)
	return c, pool
}
