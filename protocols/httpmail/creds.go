package httpmail

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
)

// credCache remembers, for CredentialTTL, which Authorization values the
// backend accepted and whom they named. Keys are HMACs under a key made at
// start, so the cache holds no credential, and a dump of memory gives none
// back.
type credCache struct {
	secret []byte
	ttl    time.Duration
	now    func() time.Time
	c      *lru.Cache[string, credEntry] // safe for concurrent use
}

type credEntry struct {
	user, mech string
	until      time.Time
}

// credCacheSize bounds the remembered credentials (LRU).
const credCacheSize = 50000

func newCredCache(ttl time.Duration) *credCache {
	key := make([]byte, 32)
	rand.Read(key)
	c, _ := lru.New[string, credEntry](credCacheSize)
	return &credCache{secret: key, ttl: ttl, now: time.Now, c: c}
}

func (c *credCache) key(authorization string) string {
	m := hmac.New(sha256.New, c.secret)
	m.Write([]byte(authorization))
	return string(m.Sum(nil))
}

func (c *credCache) get(k string) (user, mech string, ok bool) {
	if k == "" {
		return "", "", false
	}
	e, ok := c.c.Get(k)
	if !ok || c.now().After(e.until) {
		return "", "", false
	}
	return e.user, e.mech, true
}

func (c *credCache) put(k, user, mech string) {
	if k == "" {
		return
	}
	c.c.Add(k, credEntry{user: user, mech: mech, until: c.now().Add(c.ttl)})
}

func (c *credCache) forget(k string) {
	if k != "" {
		c.c.Remove(k)
	}
}
