// Package accounting keeps the live connection registry and the numbers the
// administrator sees: per-protocol tab counts (authenticated or not), per-user
// rows with connections per IP, last login and last authenticated IP, and the
// history of authenticated IPs. It also holds policy (protocol enabled per
// user, domain enabled, limits) and answers the login gate.
//
// The registry is sharded: registering, authenticating and closing a
// connection lock one connection shard and one user shard, never a global
// lock, and tab counts are atomics. A snapshot walks the shards one at a time.
//
// accounting imports nothing internal. A *Conn satisfies the protocols
// package's Observer and Gate interfaces structurally.
package accounting

import (
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mailgate/mailgate/protocols"
)

// DefaultHistoryPerUser is how many (IP, protocol) entries a user's
// authenticated-IP history keeps by default.
const DefaultHistoryPerUser = 100

// DefaultResyncTimeout bounds a resync hook by default.
const DefaultResyncTimeout = 30 * time.Second

// Protocols are the protocol keys, in the order of the admin page's tabs.
var Protocols = protocols.Keys

// Gate denial codes: accounting answers protocols.Gate.
const (
	DenyNone     = protocols.DenyNone
	DenyDisabled = protocols.DenyDisabled
	DenyLimit    = protocols.DenyLimit
	DenyLockout  = protocols.DenyLockout
	// DenyUnavailable is a temporary refusal: try again later.
	DenyUnavailable = protocols.DenyUnavailable
)

// Connection states.
const (
	StatePreauth       = "preauth"
	StateAuthenticated = "authenticated"
)

const nShards = 64

// Options configure a Registry.
type Options struct {
	// PerUserIP caps live authenticated connections per (protocol, user, IP).
	// A missing or zero entry means no cap.
	PerUserIP map[string]int
	// HistoryPerUser bounds the authenticated-IP history (default 100).
	HistoryPerUser int
	// Now is the clock (default time.Now); tests set it.
	Now func() time.Time
	// PerUser caps live authenticated connections per (protocol, user).
	PerUser map[string]int
	// PerIP caps live connections from one client IP, all protocols,
	// authenticated or not (0: no cap). Checked at connect time by Admit.
	PerIP int
	// BruteForce configures lockouts (zero value: DefaultBruteForce; set
	// MaxFailures to -1 to disable).
	BruteForce BruteForce
	// ResyncHooks per protocol, run by Resync.
	ResyncHooks map[string]ResyncHook
	// Store persists policy, last logins and IP history (nil: memory only).
	// The registry does not close it.
	Store *Store
	// LoginHistory is how many login attempts each user's history keeps
	// (0: DefaultLoginHistory; -1: no history).
	LoginHistory int
	// LoginHistoryUsers bounds the users with a login history, in memory and
	// in the store (0: DefaultLoginHistoryUsers).
	LoginHistoryUsers int
	// DevicesPerUser bounds the ActiveSync devices kept per user, the one
	// seen longest ago forgotten first (0: DefaultDevicesPerUser; -1: none
	// kept; blocks are kept either way).
	DevicesPerUser int
	// DeviceUsers bounds the users with devices kept, in memory and in the
	// store (0: DefaultDeviceUsers).
	DeviceUsers int
	// DeviceTypes is the ActiveSync device type policy (SetDeviceTypes
	// replaces it).
	DeviceTypes DeviceTypes
}

// Limits are the settings that a configuration reload (SIGHUP) may change
// while connections live: see SetLimits. Their fields mean what the Options
// fields of the same names mean.
type Limits struct {
	PerUserIP   map[string]int
	PerUser     map[string]int
	PerIP       int
	BruteForce  BruteForce
	ResyncHooks map[string]ResyncHook
}

// SetLimits replaces the caps, the brute-force settings and the resync
// hooks. Connections already authenticated stay (a lower cap applies to the
// next login); failures already counted and lockouts already running are
// kept and judged by the new settings from now on. The maps must not be
// changed afterwards.
func (r *Registry) SetLimits(l Limits) {
	if l.BruteForce == (BruteForce{}) {
		l.BruteForce = DefaultBruteForce
	}
	r.guard.setConfig(l.BruteForce)
	r.limits.Store(&l)
}

// Registry is the live view. The zero value is not usable; call New.
type Registry struct {
	opts     Options
	nextID   atomic.Uint64
	counts   map[string]*atomic.Int64 // per protocol, fixed key set
	conns    [nShards]connShard
	users    [nShards]userShard
	policy   atomic.Pointer[policy]
	limits   atomic.Pointer[Limits]
	polMu    sync.Mutex // serialises policy writers only
	guard    *guard
	logins   *loginHistory // nil: none kept
	devices  *deviceBook   // nil: none kept
	devTypes atomic.Pointer[deviceTypes]
	ips      [nShards]ipShard
	anon     [nShards]anonShard // live connections without a user, per (protocol, IP)
	stats    *stats
	shared   atomic.Pointer[Shared] // nil: a single node
}

type anonShard struct {
	mu sync.Mutex
	m  map[liveKey]int
}

// anonAdd moves the count of connections without a user.
func (r *Registry) anonAdd(protocol string, ip netip.Addr, d int) {
	b := ip.As16()
	s := &r.anon[fnvAddr(b)%nShards]
	s.mu.Lock()
	k := liveKey{protocol, ip}
	if n := s.m[k] + d; n <= 0 {
		delete(s.m, k)
	} else {
		s.m[k] = n
	}
	s.mu.Unlock()
}

type ipShard struct {
	mu sync.Mutex
	m  map[netip.Addr]int
}

type connShard struct {
	mu sync.Mutex
	m  map[uint64]*Conn
}

type userShard struct {
	mu sync.Mutex
	m  map[string]*userState
}

// New returns a registry; with a Store it starts from the stored policy and
// history and panics if they cannot be read (use Open to get the error).
func New(opts Options) *Registry {
	r, err := Open(opts)
	if err != nil {
		panic(err)
	}
	return r
}

// Open returns a registry loaded from opts.Store, if any.
func Open(opts Options) (*Registry, error) {
	if opts.HistoryPerUser <= 0 {
		opts.HistoryPerUser = DefaultHistoryPerUser
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	r := &Registry{opts: opts, counts: map[string]*atomic.Int64{}}
	r.guard = newGuard(opts.Now)
	r.SetLimits(Limits{PerUserIP: opts.PerUserIP, PerUser: opts.PerUser, PerIP: opts.PerIP,
		BruteForce: opts.BruteForce, ResyncHooks: opts.ResyncHooks})
	r.stats = newStats()
	for _, p := range Protocols {
		r.counts[p] = new(atomic.Int64)
	}
	for i := range r.conns {
		r.conns[i].m = map[uint64]*Conn{}
		r.users[i].m = map[string]*userState{}
		r.ips[i].m = map[netip.Addr]int{}
		r.anon[i].m = map[liveKey]int{}
	}
	r.policy.Store(&policy{})
	r.logins = newLoginHistory(opts.LoginHistory, opts.LoginHistoryUsers, opts.Store)
	r.devices = newDeviceBook(opts.DevicesPerUser, opts.DeviceUsers, opts.Store)
	r.SetDeviceTypes(opts.DeviceTypes)
	if opts.Store != nil {
		p, users, err := opts.Store.load()
		if err != nil {
			return nil, err
		}
		r.policy.Store(p)
		for u, st := range users {
			r.userShard(u).m[u] = st
		}
	}
	return r, nil
}

// ConnInfo describes a new connection.
type ConnInfo struct {
	Protocol string
	Listener string
	Client   netip.AddrPort
	TLS      bool
}

// Register adds a live connection in state preauth; it counts in its
// protocol's tab at once. Unknown protocols panic: they are programming errors.
func (r *Registry) Register(info ConnInfo) *Conn {
	cnt, ok := r.counts[info.Protocol]
	if !ok {
		panic("accounting: unknown protocol " + info.Protocol)
	}
	c := &Conn{
		reg:      r,
		id:       r.nextID.Add(1),
		protocol: info.Protocol,
		listener: info.Listener,
		client:   netip.AddrPortFrom(info.Client.Addr().Unmap(), info.Client.Port()),
		started:  r.opts.Now(),
		tls:      info.TLS,
		state:    StatePreauth,
	}
	s := &r.conns[c.id%nShards]
	s.mu.Lock()
	s.m[c.id] = c
	s.mu.Unlock()
	cnt.Add(1)
	r.ipAdd(c.client.Addr(), 1)
	if sh := r.sharedHook(); sh != nil {
		sh.Live("", "", c.client.Addr(), 1)
	}
	r.anonAdd(c.protocol, c.client.Addr(), 1)
	return c
}

func (r *Registry) ipShard(ip netip.Addr) *ipShard {
	b := ip.As16()
	return &r.ips[fnvAddr(b)%nShards]
}

// ipAdd moves an IP's live count and returns the new value.
func (r *Registry) ipAdd(ip netip.Addr, d int) int {
	s := r.ipShard(ip)
	s.mu.Lock()
	defer s.mu.Unlock()
	n := s.m[ip] + d
	if n <= 0 {
		delete(s.m, ip)
	} else {
		s.m[ip] = n
	}
	return n
}

// Get returns a live connection by id.
func (r *Registry) Get(id uint64) *Conn {
	s := &r.conns[id%nShards]
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.m[id]
}

// Count is the live connection count of one protocol.
func (r *Registry) Count(protocol string) int {
	if c, ok := r.counts[protocol]; ok {
		return int(c.Load())
	}
	return 0
}

// Summary returns the tab counts: every protocol and "all", their sum.
func (r *Registry) Summary() map[string]int {
	out := make(map[string]int, len(Protocols)+1)
	all := 0
	for _, p := range Protocols {
		n := int(r.counts[p].Load())
		out[p] = n
		all += n
	}
	out["all"] = all
	return out
}

// each calls fn for every live connection, one shard locked at a time.
func (r *Registry) each(fn func(*Conn)) {
	for i := range r.conns {
		s := &r.conns[i]
		s.mu.Lock()
		for _, c := range s.m {
			fn(c)
		}
		s.mu.Unlock()
	}
}

func (r *Registry) remove(c *Conn) {
	s := &r.conns[c.id%nShards]
	s.mu.Lock()
	delete(s.m, c.id)
	s.mu.Unlock()
	r.counts[c.protocol].Add(-1)
	r.ipAdd(c.client.Addr(), -1)
	if sh := r.sharedHook(); sh != nil {
		sh.Live("", "", c.client.Addr(), -1)
	}
}

func (r *Registry) userShard(user string) *userShard {
	return &r.users[fnv32(user)%nShards]
}

// fnvAddr hashes an address's 16 bytes without allocating.
func fnvAddr(b [16]byte) uint32 {
	h := uint32(2166136261)
	for _, c := range b {
		h ^= uint32(c)
		h *= 16777619
	}
	return h
}

func fnv32(s string) uint32 {
	h := uint32(2166136261)
	for i := 0; i < len(s); i++ {
		h ^= uint32(s[i])
		h *= 16777619
	}
	return h
}
