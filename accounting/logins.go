package accounting

import (
	"encoding/binary"
	"encoding/json"
	"net/netip"
	"sync"
	"time"

	"github.com/hashicorp/golang-lru/v2/simplelru"
	bolt "go.etcd.io/bbolt"
)

// The login history: per user, the last attempts to log in over every
// protocol, whatever their result: accepted by the backend, refused by it
// (a wrong password), refused by mailgate's gate (and why), or lost to a
// backend outage. Memory is bounded twice: a ring of DefaultLoginHistory
// attempts per user, and at most DefaultLoginHistoryUsers users, the one
// seen longest ago forgotten first. Consecutive attempts that differ only
// in time (a client polling with the same credential from the same place)
// make one entry with a count. With a Store the history is kept in the
// state file too, bounded to as many users, and read back when a user
// comes back into memory.

// Login history bounds by default.
const (
	DefaultLoginHistory      = 50
	DefaultLoginHistoryUsers = 100000
)

// Login attempt results.
const (
	LoginOK        = "ok"        // the backend accepted the credential
	LoginFailed    = "failed"    // the backend refused it: a wrong password
	LoginGated     = "gated"     // mailgate refused it before the backend saw it; Reason says why
	LoginTemporary = "temporary" // the backend was unavailable, or its verdict never came
)

// Why the gate refused a login (LoginAttempt.Reason).
const (
	GateDisabled = "disabled" // the protocol or the domain is disabled for the user
	GateLimit    = "limit"    // too many connections of the user (or user and IP)
	GateLockout  = "lockout"  // the user or the IP is locked out (brute force)
	GateBlocked  = "blocked"  // the client IP is blocked
	// GateUnavailable: the cluster store is unreachable and the policy is
	// to refuse logins until it is back (on_redis_down: refuse).
	GateUnavailable = "unavailable"
	// and, for ActiveSync, GateDeviceBlocked and GateDeviceType (devices.go)
)

// LoginAttempt is one entry of a user's login history. Count attempts
// alike but for their time were made from First to Time.
type LoginAttempt struct {
	Time      time.Time
	First     time.Time
	Count     int
	Protocol  string
	IP        netip.Addr
	Mechanism string
	Result    string
	Reason    string
}

// maxHistoryUser bounds the names a history is kept for: a longer one is
// no mailbox (RFC 5321 bounds a path to 256 octets), and attackers choose
// the names of failed attempts.
const maxHistoryUser = 320

// loginPersistEvery: an attempt that only adds to the count of the newest
// entry is written to the store at most this often per user (a client
// polling every second must not rewrite its history every second). A crash
// loses at most this much of such counts.
const loginPersistEvery = time.Minute

var (
	loginResults2 = []string{LoginOK, LoginFailed, LoginGated, LoginTemporary}
	gateReasons   = []string{"", GateDisabled, GateLimit, GateLockout, GateBlocked, GateDeviceBlocked, GateDeviceType}
)

func indexOf(list []string, v string) uint8 {
	for i, s := range list {
		if s == v {
			return uint8(i)
		}
	}
	return 0
}

// attempt is a LoginAttempt in memory: 64 bytes.
type attempt struct {
	first, last int64 // Unix nanoseconds
	ip          netip.Addr
	mech        string
	count       uint32
	proto       uint8 // index in Protocols
	result      uint8 // index in loginResults2
	reason      uint8 // index in gateReasons
}

func (a *attempt) same(b *attempt) bool {
	return a.proto == b.proto && a.ip == b.ip && a.mech == b.mech && a.result == b.result && a.reason == b.reason
}

func (a attempt) public() LoginAttempt {
	return LoginAttempt{Time: time.Unix(0, a.last), First: time.Unix(0, a.first), Count: int(a.count),
		Protocol: Protocols[a.proto], IP: a.ip, Mechanism: a.mech, Result: loginResults2[a.result], Reason: gateReasons[a.reason]}
}

// loginRing is one user's history, oldest first, at most max entries.
type loginRing struct {
	mu       sync.Mutex
	entries  []attempt
	enqueued int64 // when it was last queued for the store (Unix ns)
}

// add records a; it reports whether the store should be told.
func (g *loginRing) add(a attempt, max int) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if n := len(g.entries); n > 0 && g.entries[n-1].same(&a) {
		e := &g.entries[n-1]
		e.count++
		e.last = a.last
		if time.Duration(a.last-g.enqueued) < loginPersistEvery {
			return false
		}
	} else {
		if len(g.entries) >= max {
			copy(g.entries, g.entries[len(g.entries)-max+1:])
			g.entries = g.entries[:max-1]
		}
		g.entries = append(g.entries, a)
	}
	g.enqueued = a.last
	return true
}

func (g *loginRing) snapshot() []attempt {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]attempt(nil), g.entries...)
}

// loginHistory holds the rings, in shards, each an LRU of users.
type loginHistory struct {
	max    int // attempts per user
	store  *Store
	shards [nShards]struct {
		mu  sync.Mutex
		lru *simplelru.LRU[string, *loginRing]
	}
}

func newLoginHistory(perUser, users int, store *Store) *loginHistory {
	if perUser < 0 {
		return nil
	}
	if perUser == 0 {
		perUser = DefaultLoginHistory
	}
	if users <= 0 {
		users = DefaultLoginHistoryUsers
	}
	h := &loginHistory{max: perUser, store: store}
	per := max(1, (users+nShards-1)/nShards)
	for i := range h.shards {
		h.shards[i].lru, _ = simplelru.NewLRU[string, *loginRing](per, nil)
	}
	if store != nil {
		store.setLoginBounds(perUser, users)
	}
	return h
}

// record adds an attempt to user's history.
func (h *loginHistory) record(user, protocol string, ip netip.Addr, mech, result, reason string, now time.Time) {
	if h == nil || user == "" || len(user) > maxHistoryUser {
		return
	}
	pi := protoIndex(protocol)
	if pi < 0 {
		return
	}
	if len(mech) > 32 {
		mech = mech[:32]
	}
	ns := now.UnixNano()
	a := attempt{first: ns, last: ns, ip: ip.Unmap(), mech: mech, count: 1, proto: uint8(pi),
		result: indexOf(loginResults2, result), reason: indexOf(gateReasons, reason)}
	g := h.ring(user)
	if g.add(a, h.max) && h.store != nil {
		h.store.enqueueLogins(user, g)
	}
}

// ring returns user's ring, loaded from the store (its queued writes, else
// the file) when the user is not in memory.
func (h *loginHistory) ring(user string) *loginRing {
	sh := &h.shards[fnv32(user)%nShards]
	sh.mu.Lock()
	g, ok := sh.lru.Get(user)
	sh.mu.Unlock()
	if ok {
		return g
	}
	g = &loginRing{}
	if h.store != nil {
		if p := h.store.pendingLogins(user); p != nil {
			g = p
		} else {
			g.entries = h.store.loadLogins(user)
		}
	}
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if cur, ok := sh.lru.Get(user); ok { // another login of the user came first
		return cur
	}
	sh.lru.Add(user, g)
	return g
}

// attempts returns user's history, newest first, without bringing the user
// into memory.
func (h *loginHistory) attempts(user string) []LoginAttempt {
	if h == nil {
		return nil
	}
	sh := &h.shards[fnv32(user)%nShards]
	sh.mu.Lock()
	g, ok := sh.lru.Peek(user)
	sh.mu.Unlock()
	var as []attempt
	switch {
	case ok:
		as = g.snapshot()
	case h.store != nil:
		if p := h.store.pendingLogins(user); p != nil {
			as = p.snapshot()
		} else {
			as = h.store.loadLogins(user)
		}
	}
	out := make([]LoginAttempt, 0, len(as))
	for i := len(as) - 1; i >= 0; i-- {
		out = append(out, as[i].public())
	}
	return out
}

// UserLogins returns the user's last login attempts over every protocol,
// newest first.
func (r *Registry) UserLogins(user string) []LoginAttempt {
	return r.logins.attempts(NormalizeUser(user))
}

// In the store: bucket login_history holds, per user, the attempts (oldest
// first) and the time of the newest; bucket login_users indexes the users by
// that time (8 bytes of Unix ns, big-endian, then the user), so that the
// users seen longest ago go first when there are more than the bound.

var (
	bucketLogins     = []byte("login_history") // user -> loginsRec
	bucketLoginUsers = []byte("login_users")   // be64(last ns) user -> nothing
)

type loginsRec struct {
	Last     int64        `json:"last"` // Unix ns of the newest attempt: the login_users key
	Attempts []attemptRec `json:"attempts"`
}

type attemptRec struct {
	Time     time.Time `json:"time"`
	First    time.Time `json:"first,omitzero"` // when Count > 1
	Count    int       `json:"count,omitempty"`
	Protocol string    `json:"protocol"`
	IP       string    `json:"ip"`
	Mech     string    `json:"mech,omitempty"`
	Result   string    `json:"result"`
	Reason   string    `json:"reason,omitempty"`
}

func toRec(a attempt) attemptRec {
	r := attemptRec{Time: time.Unix(0, a.last).UTC(), Protocol: Protocols[a.proto], IP: a.ip.String(), Mech: a.mech,
		Result: loginResults2[a.result], Reason: gateReasons[a.reason]}
	if a.count > 1 {
		r.First, r.Count = time.Unix(0, a.first).UTC(), int(a.count)
	}
	return r
}

func fromRec(r attemptRec) (attempt, bool) {
	pi := protoIndex(r.Protocol)
	ip, err := netip.ParseAddr(r.IP)
	if pi < 0 || err != nil {
		return attempt{}, false
	}
	a := attempt{first: r.Time.UnixNano(), last: r.Time.UnixNano(), ip: ip, mech: r.Mech, count: 1, proto: uint8(pi),
		result: indexOf(loginResults2, r.Result), reason: indexOf(gateReasons, r.Reason)}
	if r.Count > 1 {
		a.first, a.count = r.First.UnixNano(), uint32(r.Count)
	}
	return a, true
}

func loginUserKey(last int64, user string) []byte {
	return append(binary.BigEndian.AppendUint64(nil, uint64(last)), user...)
}

// loginBounds are the store's bounds of the history: attempts per user
// (the rings are that long already; a file written with a larger bound is
// cut on load) and users kept.
type historyBounds struct{ perUser, users int }

func (s *Store) setLoginBounds(perUser, users int) {
	s.loginBounds.Store(&historyBounds{perUser, users})
}

// enqueueLogins queues user's ring for the next commit.
func (s *Store) enqueueLogins(user string, g *loginRing) {
	p := &s.pending[fnv32(user)%nShards]
	p.mu.Lock()
	p.logins[user] = g
	p.mu.Unlock()
}

// pendingLogins is user's ring if it waits for a commit or is being
// committed.
func (s *Store) pendingLogins(user string) *loginRing {
	p := &s.pending[fnv32(user)%nShards]
	p.mu.Lock()
	defer p.mu.Unlock()
	if g := p.logins[user]; g != nil {
		return g
	}
	s.committingMu.Lock()
	defer s.committingMu.Unlock()
	for _, m := range s.committing {
		if g := m[user]; g != nil {
			return g
		}
	}
	return nil
}

// loadLogins reads user's history from the file, oldest first.
func (s *Store) loadLogins(user string) []attempt {
	var rec loginsRec
	s.db().View(func(tx *bolt.Tx) error {
		if v := tx.Bucket(bucketLogins).Get([]byte(user)); v != nil {
			json.Unmarshal(v, &rec)
		}
		return nil
	})
	out := make([]attempt, 0, len(rec.Attempts))
	for _, r := range rec.Attempts {
		if a, ok := fromRec(r); ok {
			out = append(out, a)
		}
	}
	if b := s.loginBounds.Load(); b != nil && len(out) > b.perUser {
		out = out[len(out)-b.perUser:]
	}
	return out
}

// commitLogins writes the queued rings (called by commit, in its
// transaction) and forgets the users seen longest ago beyond the bound.
func (s *Store) commitLogins(tx *bolt.Tx, rings []map[string]*loginRing) {
	hb, ub := tx.Bucket(bucketLogins), tx.Bucket(bucketLoginUsers)
	for _, m := range rings {
		for user, g := range m {
			as := g.snapshot()
			if len(as) == 0 {
				continue
			}
			var old loginsRec
			if v := hb.Get([]byte(user)); v != nil {
				json.Unmarshal(v, &old)
				ub.Delete(loginUserKey(old.Last, user))
			} else {
				s.loginUsers++
			}
			rec := loginsRec{Last: as[len(as)-1].last, Attempts: make([]attemptRec, len(as))}
			for i, a := range as {
				rec.Attempts[i] = toRec(a)
			}
			putJSON(hb, []byte(user), rec)
			ub.Put(loginUserKey(rec.Last, user), nil)
		}
	}
	b := s.loginBounds.Load()
	if b == nil {
		return
	}
	c := ub.Cursor()
	for k, _ := c.First(); k != nil && s.loginUsers > b.users; k, _ = c.First() {
		k = append([]byte(nil), k...)
		ub.Delete(k)
		if len(k) > 8 {
			hb.Delete(k[8:])
		}
		s.loginUsers--
	}
}

// countLoginUsers counts the users of the history at open.
func countLoginUsers(tx *bolt.Tx) int {
	return tx.Bucket(bucketLogins).Stats().KeyN
}
