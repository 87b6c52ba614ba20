// Package webmail attributes webmail traffic to users and relays webmail
// websockets, for package httpmail (it implements httpmail.Webmail
// structurally, so neither imports the other).
//
// A browser cannot put credentials on a websocket, so the user is learned at
// login (docs/protocols.md §8.1): when the backend answers a POST of the login
// form with the session cookie, the cookie is mapped to the username the
// form carried, in a bounded LRU whose entries expire when unused. Later
// requests and websockets are attributed by that cookie; a response that
// deletes the cookie (logout) forgets it. Cookie values are never logged
// and are kept only as HMACs.
//
// Typical usage:
//
//	wm, err := webmail.New(webmail.Options{LoginPath: "/?_task=login", UserField: "_user", Cookie: "roundcube_sessid"})
//	srv, err := httpmail.New(httpmail.Options{Webmail: wm, Routes: …})
package webmail

import (
	"crypto/tls"
	"errors"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/gorilla/websocket"
)

// Options configure the webmail attribution and the websocket relay.
type Options struct {
	// LoginPath is the path the login form posts to, optionally with query
	// parameters that must be present, e.g. "/?_task=login" (Roundcube),
	// "/SOGo/connect" (SOGo). Default "/login".
	LoginPath string
	// UserField is the form (or JSON) field holding the username
	// (Roundcube "_user", SOGo "userName"). Default "user".
	UserField string
	// Cookie is the session cookie the backend sets on a successful login
	// (Roundcube "roundcube_sessid", SOGo "0xHIGHFLYxSOGo"). Default "session".
	Cookie string
	// SessionTTL: a session unused for this long is forgotten (default 12h).
	SessionTTL time.Duration
	// MaxSessions bounds the map (LRU, default 100000).
	MaxSessions int
	// MaxLoginBody bounds the login body read for the username (default 64 KiB).
	MaxLoginBody int64
	// BackendTLS verifies a wss:// backend (nil: system roots).
	BackendTLS *tls.Config
	// DialTimeout bounds the backend websocket handshake (default 10s).
	DialTimeout time.Duration
	// Log (nil: discard). Cookies and bodies never reach it.
	Log *slog.Logger
	// Now is the clock (tests).
	Now func() time.Time
}

// Webmail implements httpmail.Webmail.
type Webmail struct {
	loginPath  string
	loginQuery url.Values
	userField  string
	cookie     string
	maxBody    int64
	sessions   *Sessions
	dialer     websocket.Dialer
	now        func() time.Time
	log        *slog.Logger
}

// The defaults of Options.
const (
	DefaultLoginPath   = "/login"
	DefaultUserField   = "user"
	DefaultCookie      = "session"
	DefaultSessionTTL  = 12 * time.Hour
	DefaultMaxSessions = 100000
)

// New returns a Webmail.
func New(o Options) (*Webmail, error) {
	if o.LoginPath == "" {
		o.LoginPath = DefaultLoginPath
	}
	if o.UserField == "" {
		o.UserField = DefaultUserField
	}
	if o.Cookie == "" {
		o.Cookie = DefaultCookie
	}
	if o.MaxLoginBody <= 0 {
		o.MaxLoginBody = 64 << 10
	}
	if o.DialTimeout <= 0 {
		o.DialTimeout = 10 * time.Second
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	u, err := url.Parse(o.LoginPath)
	if err != nil || !strings.HasPrefix(u.Path, "/") {
		return nil, errors.New("webmail: login path must be a path starting with /")
	}
	if !validCookieName(o.Cookie) {
		return nil, errors.New("webmail: invalid cookie name")
	}
	m := &Webmail{
		loginPath: u.Path, loginQuery: u.Query(), userField: o.UserField, cookie: o.Cookie,
		maxBody: o.MaxLoginBody, sessions: NewSessions(o.MaxSessions, o.SessionTTL, o.Now), now: o.Now, log: o.Log,
	}
	m.dialer = websocket.Dialer{
		NetDialContext:   (&netDialer{timeout: o.DialTimeout}).DialContext,
		TLSClientConfig:  o.BackendTLS,
		HandshakeTimeout: o.DialTimeout,
		ReadBufferSize:   4096,
		WriteBufferSize:  4096,
	}
	return m, nil
}

func validCookieName(n string) bool {
	if n == "" {
		return false
	}
	for i := 0; i < len(n); i++ {
		c := n[i]
		if c <= ' ' || c >= 0x7f || strings.IndexByte(`()<>@,;:\"/[]?={}`, c) >= 0 {
			return false
		}
	}
	return true
}

// Sessions exposes the session map (tests, metrics).
func (m *Webmail) Sessions() *Sessions { return m.sessions }

// SessionUser returns the user whose login created r's session cookie.
func (m *Webmail) SessionUser(r *http.Request) string {
	c, err := r.Cookie(m.cookie)
	if err != nil {
		return ""
	}
	return m.sessions.User(c.Value)
}

// Observe's results: the values of httpmail.LoginUnknown, LoginOK and
// LoginFailed.
const (
	loginUnknown = 0
	loginOK      = 1
	loginFailed  = 2
)

// Observe reads the backend's answer to a webmail request. A login
// submission that gets the session cookie (status below 400) is a login:
// the cookie is mapped to user. A 401 or 403 to it is a failed login
// (Roundcube answers 401, SOGo 403). Any later response that sets a new
// session cookie for a known user maps it too (rotation); one that deletes
// the cookie (logout), or a 401 to a request carrying it (the backend no
// longer knows the session), forgets it.
func (m *Webmail) Observe(r *http.Request, user string, login bool, resp *http.Response) int {
	var set *http.Cookie
	for _, c := range resp.Cookies() {
		if c.Name == m.cookie {
			set = c
		}
	}
	deleting := set != nil && (set.Value == "" || set.MaxAge < 0 ||
		(!set.Expires.IsZero() && set.Expires.Before(m.now())))
	if login {
		switch {
		case set != nil && !deleting && resp.StatusCode < 400:
			m.sessions.Put(set.Value, user)
			m.log.Debug("webmail login mapped a session", "user", user)
			return loginOK
		case resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden:
			return loginFailed
		}
		return loginUnknown
	}
	switch {
	case deleting || resp.StatusCode == http.StatusUnauthorized:
		// Logout, or the backend no longer knows the session.
		if old, err := r.Cookie(m.cookie); err == nil {
			m.sessions.Delete(old.Value)
		}
	case set != nil && user != "":
		m.sessions.Put(set.Value, user)
	}
	return loginUnknown
}
