package webmail

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
)

// Sessions maps webmail session cookies to users: a bounded LRU whose
// entries expire after TTL without use (each lookup renews them, like the
// webmail's own idle timeout). Keys are HMACs of the cookie values under a
// key made at start, so no session cookie is kept in memory.
type Sessions struct {
	secret []byte
	ttl    time.Duration
	now    func() time.Time
	c      *lru.Cache[string, session] // safe for concurrent use
}

type session struct {
	user    string
	expires time.Time
}

// NewSessions returns a map of at most size sessions that expire after ttl
// without use; now is the clock (nil: time.Now).
func NewSessions(size int, ttl time.Duration, now func() time.Time) *Sessions {
	if size <= 0 {
		size = DefaultMaxSessions
	}
	if ttl <= 0 {
		ttl = DefaultSessionTTL
	}
	if now == nil {
		now = time.Now
	}
	secret := make([]byte, 32)
	rand.Read(secret)
	c, _ := lru.New[string, session](size)
	return &Sessions{secret: secret, ttl: ttl, now: now, c: c}
}

func (s *Sessions) key(cookie string) string {
	m := hmac.New(sha256.New, s.secret)
	m.Write([]byte(cookie))
	return string(m.Sum(nil))
}

// Put maps a session cookie value to user.
func (s *Sessions) Put(cookie, user string) {
	if cookie == "" || user == "" {
		return
	}
	s.c.Add(s.key(cookie), session{user: user, expires: s.now().Add(s.ttl)})
}

// User returns the user of a session cookie value ("" when unknown or
// expired) and renews the session.
func (s *Sessions) User(cookie string) string {
	if cookie == "" {
		return ""
	}
	k := s.key(cookie)
	e, ok := s.c.Get(k)
	if !ok {
		return ""
	}
	now := s.now()
	if now.After(e.expires) {
		s.c.Remove(k)
		return ""
	}
	e.expires = now.Add(s.ttl)
	s.c.Add(k, e)
	return e.user
}

// Delete forgets a session (logout).
func (s *Sessions) Delete(cookie string) {
	if cookie != "" {
		s.c.Remove(s.key(cookie))
	}
}

// Len is the number of sessions held (expired ones included until looked up
// or evicted).
func (s *Sessions) Len() int { return s.c.Len() }
