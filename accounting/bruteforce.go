package accounting

import (
	"net/netip"
	"sort"
	"sync"
	"sync/atomic"
	"time"
)

// BruteForce configures lockouts after repeated failed logins. A lockout
// lasts Lockout, doubling with each repeat up to MaxLockout. Backend
// temporary failures never count.
type BruteForce struct {
	// MaxFailures in Window lock the IP or the user out (-1 disables; 0,
	// like the zero BruteForce, takes the default).
	MaxFailures int
	Window      time.Duration
	Lockout     time.Duration
	MaxLockout  time.Duration
}

// DefaultBruteForce: 10 failures in 10 minutes lock out for 5 minutes,
// doubling up to an hour.
var DefaultBruteForce = BruteForce{MaxFailures: 10, Window: 10 * time.Minute, Lockout: 5 * time.Minute, MaxLockout: time.Hour}

// Lockout is a current lockout, for the API.
type Lockout struct {
	Kind     string // "ip" or "user"
	Key      string // the IP or the user
	Failures int
	Until    time.Time
}

type failState struct {
	times  []time.Time // failures inside the window, oldest first
	until  time.Time
	strike int // lockouts so far (for the exponential)
	last   time.Time
}

// guardKey names an IP or a user (exactly one is set). A struct, not a
// string, so the login path builds it without allocating.
type guardKey struct {
	ip   netip.Addr
	user string
}

func (k guardKey) shard() uint32 {
	if k.user != "" {
		return fnv32(k.user) % nShards
	}
	return fnvAddr(k.ip.As16()) % nShards
}

// guard counts failures per IP and per user in shards.
type guard struct {
	cfg    atomic.Pointer[BruteForce]
	now    func() time.Time
	shards [nShards]struct {
		mu sync.Mutex
		m  map[guardKey]*failState
	}
}

func newGuard(now func() time.Time) *guard {
	g := &guard{now: now}
	g.setConfig(DefaultBruteForce)
	for i := range g.shards {
		g.shards[i].m = map[guardKey]*failState{}
	}
	return g
}

func ipKey(ip netip.Addr) guardKey { return guardKey{ip: ip.Unmap()} }
func userKey(u string) guardKey    { return guardKey{user: u} }

// setConfig applies new settings to the failures that come next.
func (g *guard) setConfig(cfg BruteForce) { g.cfg.Store(&cfg) }

// locked reports whether key is locked out now.
func (g *guard) locked(key guardKey) bool {
	if g.cfg.Load().MaxFailures <= 0 {
		return false
	}
	sh := &g.shards[key.shard()]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	st := sh.m[key]
	return st != nil && g.now().Before(st.until)
}

// fail records a failure; it returns true when this failure locked key out.
func (g *guard) fail(key guardKey) bool {
	cfg := g.cfg.Load()
	if cfg.MaxFailures <= 0 {
		return false
	}
	now := g.now()
	sh := &g.shards[key.shard()]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	st := sh.m[key]
	if st == nil {
		st = &failState{}
		sh.m[key] = st
	}
	st.last = now
	cut := 0
	for cut < len(st.times) && now.Sub(st.times[cut]) > cfg.Window {
		cut++
	}
	st.times = append(st.times[cut:], now)
	if len(st.times) < cfg.MaxFailures || now.Before(st.until) {
		return false
	}
	d := cfg.Lockout << min(st.strike, 20)
	if d > cfg.MaxLockout || d <= 0 {
		d = cfg.MaxLockout
	}
	st.until = now.Add(d)
	st.strike++
	st.times = nil
	return true
}

// success clears a user's failure count (not its lockout history).
func (g *guard) success(key guardKey) {
	sh := &g.shards[key.shard()]
	sh.mu.Lock()
	if st := sh.m[key]; st != nil {
		st.times = nil
	}
	sh.mu.Unlock()
}

// clear removes a key's state entirely; it reports whether it existed.
func (g *guard) clear(key guardKey) bool {
	sh := &g.shards[key.shard()]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	_, ok := sh.m[key]
	delete(sh.m, key)
	return ok
}

// list returns the current lockouts and prunes forgotten entries (no
// failure and no lockout for a day after the last event).
func (g *guard) list() []Lockout {
	now := g.now()
	var out []Lockout
	for i := range g.shards {
		sh := &g.shards[i]
		sh.mu.Lock()
		for k, st := range sh.m {
			if now.Before(st.until) {
				l := Lockout{Kind: "user", Key: k.user, Failures: len(st.times), Until: st.until}
				if k.user == "" {
					l.Kind, l.Key = "ip", k.ip.String()
				}
				out = append(out, l)
			} else if now.Sub(st.last) > 24*time.Hour {
				delete(sh.m, k)
			}
		}
		sh.mu.Unlock()
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Until.After(out[j].Until) })
	return out
}

// Lockouts lists the IPs and users locked out now.
func (r *Registry) Lockouts() []Lockout { return r.guard.list() }

// ClearLockout lifts a lockout ("ip" or "user", and the key) and forgets
// its failures; it reports whether there was anything to clear.
func (r *Registry) ClearLockout(kind, key string) bool {
	switch kind {
	case "ip":
		ip, err := netip.ParseAddr(key)
		if err != nil {
			return false
		}
		return r.guard.clear(ipKey(ip))
	case "user":
		return r.guard.clear(userKey(NormalizeUser(key)))
	}
	return false
}

// BruteForceSettings returns the lockout settings in force.
func (r *Registry) BruteForceSettings() BruteForce { return *r.guard.cfg.Load() }
