package webmail

import (
	"bytes"
	"io"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestSessions(t *testing.T) {
	now := time.Unix(1000, 0)
	s := NewSessions(2, time.Minute, func() time.Time { return now })
	s.Put("c1", "alice@example.com")
	if u := s.User("c1"); u != "alice@example.com" {
		t.Fatalf("User(c1) = %q", u)
	}
	now = now.Add(50 * time.Second)
	if s.User("c1") == "" { // renews
		t.Fatal("session expired early")
	}
	now = now.Add(50 * time.Second)
	if s.User("c1") == "" {
		t.Fatal("a used session expired: lookups must renew it")
	}
	now = now.Add(61 * time.Second)
	if u := s.User("c1"); u != "" {
		t.Fatalf("unused session still maps to %q", u)
	}
	s.Put("a", "u1")
	s.Put("b", "u2")
	s.Put("c", "u3") // evicts a
	if s.User("a") != "" || s.User("c") != "u3" || s.Len() != 2 {
		t.Errorf("LRU bound: a=%q c=%q len=%d", s.User("a"), s.User("c"), s.Len())
	}
	s.Delete("c")
	if s.User("c") != "" {
		t.Error("Delete kept the session")
	}
	for _, k := range s.c.Keys() {
		if len(k) != 32 { // an HMAC-SHA256, never the cookie value
			t.Errorf("key %q is not an HMAC", k)
		}
	}
}

func TestLoginUser(t *testing.T) {
	rc, _ := New(Options{LoginPath: "/?_task=login", UserField: "_user", Cookie: "roundcube_sessid"})
	sogo, _ := New(Options{LoginPath: "/SOGo/connect", UserField: "userName", Cookie: "0xHIGHFLYxSOGo"})
	var mp bytes.Buffer
	mw := multipart.NewWriter(&mp)
	mw.WriteField("user", " carol@example.com ")
	mw.WriteField("password", "pw")
	mw.Close()
	plain, _ := New(Options{})
	for _, tc := range []struct {
		name   string
		m      *Webmail
		method string
		target string
		ctype  string
		body   string
		user   string
		ok     bool
	}{
		{"roundcube", rc, "POST", "/?_task=login", "application/x-www-form-urlencoded", "_token=x&_user=alice%40example.com&_pass=secret", "alice@example.com", true},
		{"roundcube other task", rc, "POST", "/?_task=mail", "application/x-www-form-urlencoded", "_user=alice", "", false},
		{"sogo json", sogo, "POST", "/SOGo/connect", "application/json", `{"userName":"bob@example.com","password":"x"}`, "bob@example.com", true},
		{"sogo case", sogo, "POST", "/sogo/CONNECT", "application/json; charset=utf-8", `{"userName":"bob"}`, "bob", true},
		{"multipart", plain, "POST", "/login", mw.FormDataContentType(), mp.String(), "carol@example.com", true},
		{"get", plain, "GET", "/login", "", "", "", false},
		{"no field", plain, "POST", "/login", "application/x-www-form-urlencoded", "password=x", "", false},
		{"crlf", plain, "POST", "/login", "application/x-www-form-urlencoded", "user=a%0d%0ab", "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest(tc.method, tc.target, strings.NewReader(tc.body))
			if tc.ctype != "" {
				r.Header.Set("Content-Type", tc.ctype)
			}
			u, ok := tc.m.LoginUser(r)
			if u != tc.user || ok != tc.ok {
				t.Fatalf("LoginUser = %q %v, want %q %v", u, ok, tc.user, tc.ok)
			}
			if b, _ := io.ReadAll(r.Body); string(b) != tc.body {
				t.Errorf("body after LoginUser = %q, want it restored", b)
			}
		})
	}
	// A body over the limit is forwarded whole but not parsed.
	small, _ := New(Options{MaxLoginBody: 10})
	r := httptest.NewRequest("POST", "/login", strings.NewReader("user=alice&padding=xxxxxxxxxx"))
	r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if _, ok := small.LoginUser(r); ok {
		t.Error("parsed a body over MaxLoginBody")
	}
	if b, _ := io.ReadAll(r.Body); string(b) != "user=alice&padding=xxxxxxxxxx" {
		t.Errorf("body = %q", b)
	}
}

func TestObserve(t *testing.T) {
	m, _ := New(Options{Cookie: "sid"})
	login := httptest.NewRequest("POST", "/login", nil)
	resp := func(status int, cookies ...string) *http.Response {
		h := http.Header{}
		for _, c := range cookies {
			h.Add("Set-Cookie", c)
		}
		return &http.Response{StatusCode: status, Header: h}
	}
	if got := m.Observe(login, "alice", true, resp(302, "sid=s1; Path=/; HttpOnly")); got != loginOK {
		t.Fatalf("login with the cookie = %d, want ok", got)
	}
	if got := m.Observe(login, "alice", true, resp(401)); got != loginFailed {
		t.Fatalf("401 = %d", got)
	}
	if got := m.Observe(login, "alice", true, resp(403)); got != loginFailed {
		t.Fatalf("403 = %d", got)
	}
	if got := m.Observe(login, "alice", true, resp(200)); got != loginUnknown {
		t.Fatalf("200 without the cookie = %d", got)
	}
	if got := m.Observe(login, "alice", true, resp(200, "other=1")); got != loginUnknown {
		t.Fatalf("another cookie = %d", got)
	}
	req := httptest.NewRequest("GET", "/mail", nil)
	req.Header.Set("Cookie", "sid=s1")
	if m.SessionUser(req) != "alice" {
		t.Fatal("s1 not mapped")
	}
	m.Observe(req, "alice", false, resp(200, "sid=s2; Path=/")) // rotation
	req2 := httptest.NewRequest("GET", "/mail", nil)
	req2.Header.Set("Cookie", "sid=s2")
	if m.SessionUser(req2) != "alice" {
		t.Fatal("rotated s2 not mapped")
	}
	m.Observe(req2, "alice", false, resp(200, "sid=; Max-Age=0"))
	if m.SessionUser(req2) != "" {
		t.Fatal("logout kept s2")
	}
	m.Observe(req, "alice", false, resp(401))
	if m.SessionUser(req) != "" {
		t.Fatal("a 401 to the session kept s1")
	}
}
