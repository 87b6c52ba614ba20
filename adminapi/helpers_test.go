package adminapi_test

import (
	"bytes"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mailgate/mailgate/accounting"
	"github.com/mailgate/mailgate/adminapi"
	"github.com/mailgate/mailgate/protocols/protocoltest"
)

const testToken = "t0ken-for-tests-only"

var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

// clock is the registry's fake clock.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// env is a real registry behind a real API server.
type env struct {
	t     *testing.T
	reg   *accounting.Registry
	clock *clock
	srv   *httptest.Server
	api   *adminapi.Server
	logs  *protocoltest.SyncBuffer // the server's log
}

func newEnv(t *testing.T, mod ...func(*adminapi.Options)) *env {
	t.Helper()
	clk := &clock{now: t0}
	reg := accounting.New(accounting.Options{Now: clk.Now})
	logs := &protocoltest.SyncBuffer{}
	opts := adminapi.Options{
		Registry: reg,
		Token:    testToken + "\n", // as read from a token file
		Logger:   slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Node:     "test-node",
	}
	for _, m := range mod {
		m(&opts)
	}
	api, err := adminapi.New(opts)
	if err != nil {
		t.Fatalf("New() = %v", err)
	}
	srv := httptest.NewServer(api)
	t.Cleanup(func() {
		srv.Close()
		if t.Failed() {
			t.Logf("server logs:\n%s", logs.String())
		}
	})
	return &env{t: t, reg: reg, clock: clk, srv: srv, api: api, logs: logs}
}

type response struct {
	status int
	header http.Header
	body   []byte
}

// raw sends a request with the given Authorization header values (none when
// empty). path is sent as written (escapes included).
func (e *env) raw(method, path, body string, auth ...string) response {
	e.t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, e.srv.URL+path, rd)
	if err != nil {
		e.t.Fatalf("NewRequest(%s %s) = %v", method, path, err)
	}
	for _, a := range auth {
		req.Header.Add("Authorization", a)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := e.srv.Client().Do(req)
	if err != nil {
		e.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatalf("%s %s: read body: %v", method, path, err)
	}
	return response{status: resp.StatusCode, header: resp.Header, body: b}
}

// do sends an authorised request.
func (e *env) do(method, path, body string) response {
	e.t.Helper()
	return e.raw(method, path, body, "Bearer "+testToken)
}

// decodeStrict decodes b into v, refusing fields v does not have.
func decodeStrict(t *testing.T, b []byte, v any) {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		t.Fatalf("decode %T from %s: %v", v, b, err)
	}
}

// ok asserts a 200 JSON response and decodes it into v (if not nil).
func (e *env) ok(r response, v any) {
	e.t.Helper()
	if r.status != http.StatusOK {
		e.t.Fatalf("status = %d, want 200; body %s", r.status, r.body)
	}
	if ct := r.header.Get("Content-Type"); ct != "application/json" {
		e.t.Fatalf("Content-Type = %q, want application/json", ct)
	}
	if v != nil {
		decodeStrict(e.t, r.body, v)
	}
}

// get is an authorised GET that must succeed.
func (e *env) get(path string, v any) {
	e.t.Helper()
	e.ok(e.do("GET", path, ""), v)
}

// wantError asserts the one error shape.
func wantError(t *testing.T, r response, status int, code string) adminapi.Error {
	t.Helper()
	if r.status != status {
		t.Fatalf("status = %d, want %d; body %s", r.status, status, r.body)
	}
	if ct := r.header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("Content-Type = %q, want application/json", ct)
	}
	if r.header.Get("X-Content-Type-Options") != "nosniff" {
		t.Errorf("X-Content-Type-Options = %q, want nosniff", r.header.Get("X-Content-Type-Options"))
	}
	var er adminapi.ErrorResponse
	decodeStrict(t, r.body, &er)
	if er.Error.Code != code {
		t.Fatalf("error code = %q, want %q; body %s", er.Error.Code, code, r.body)
	}
	if er.Error.Message == "" {
		t.Fatalf("error message is empty; body %s", r.body)
	}
	return er.Error
}

// drops records what a connection's drop function was called with.
type drops struct {
	mu      sync.Mutex
	reasons []string
}

func (d *drops) fn(reason string) {
	d.mu.Lock()
	d.reasons = append(d.reasons, reason)
	d.mu.Unlock()
}

func (d *drops) get() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]string(nil), d.reasons...)
}

// conn registers a preauth connection from addr ("ip:port"), with a drop
// function recording into d (if not nil).
func (e *env) conn(protocol, addr string, d *drops) *accounting.Conn {
	e.t.Helper()
	c := e.reg.Register(accounting.ConnInfo{Protocol: protocol, Listener: protocol + "-test",
		Client: netip.MustParseAddrPort(addr)})
	if d != nil {
		c.SetDropFunc(d.fn)
	}
	return c
}

// login registers a connection and authenticates it as user.
func (e *env) login(protocol, addr, user string, d *drops) *accounting.Conn {
	e.t.Helper()
	c := e.conn(protocol, addr, d)
	c.AuthAttempt(user, "LOGIN")
	if got := c.CheckLogin(user); got != accounting.DenyNone {
		e.t.Fatalf("CheckLogin(%q) = %q, want allowed", user, got)
	}
	c.Authenticated(user, "LOGIN")
	return c
}

func (e *env) summary() map[string]int {
	e.t.Helper()
	var m map[string]int
	e.get("/api/v1/connections/summary", &m)
	return m
}

func ptrTime(t time.Time) *time.Time { return &t }

func ptrIP(s string) *netip.Addr {
	ip := netip.MustParseAddr(s)
	return &ip
}
