package accounting

import (
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Conn is one live connection. It implements protocols.Observer and
// protocols.Gate structurally. Its methods are safe for concurrent use.
type Conn struct {
	reg      *Registry
	id       uint64
	protocol string
	listener string
	client   netip.AddrPort
	started  time.Time
	closed   atomic.Bool

	mu       sync.Mutex
	tls      bool
	state    string
	user     string // lowercased; set on Authenticated
	tried    string // last username attempted (pre-auth)
	mech     string
	authAt   time.Time
	counted  bool // this login is in the user's live per-IP counts, not in the anonymous ones
	dropFunc func(reason string)
	dropped  string // drop reason when dropped before dropFunc was set
	// An ActiveSync request's device (CheckDevice); deviceKey "" for none.
	device    Device
	deviceKey string
}

// ID is the connection id shown in the API.
func (c *Conn) ID() uint64 { return c.id }

// Protocol is the connection's protocol key.
func (c *Conn) Protocol() string { return c.protocol }

// SetDropFunc installs what Drop calls to cut the connection (the proxy
// writes a goodbye and closes both sides). If the connection was dropped
// before the function was installed, f runs at once.
func (c *Conn) SetDropFunc(f func(reason string)) {
	c.mu.Lock()
	c.dropFunc = f
	dropped := c.dropped
	c.mu.Unlock()
	if dropped != "" {
		f(dropped)
	}
}

// TLSStarted records that the client link is now TLS.
func (c *Conn) TLSStarted() {
	c.mu.Lock()
	c.tls = true
	c.mu.Unlock()
}

// AuthAttempt records the username being tried.
func (c *Conn) AuthAttempt(user, mech string) {
	c.mu.Lock()
	c.tried = NormalizeUser(user)
	c.mech = mech
	c.mu.Unlock()
}

// CheckLogin is the auth gate: protocol or domain disabled, client IP
// blocked, brute-force lockout of the user or the IP, per user+IP and per
// user limits. A refusal goes into the user's login history with its reason.
func (c *Conn) CheckLogin(user string) string {
	u := NormalizeUser(user)
	why := c.checkLogin(u)
	var d string
	switch why {
	case "":
		return DenyNone
	case GateDisabled:
		d = DenyDisabled
		c.reg.CountRefusal(ReasonDisabled)
	case GateBlocked:
		// Admit refuses a blocked IP at connect; this one got in while the
		// block was being added. The client is told what a lockout tells.
		d = DenyLockout
		c.reg.CountRefusal(ReasonBlocked)
	case GateLockout:
		d = DenyLockout
		c.reg.CountRefusal(ReasonLockout)
	case GateLimit:
		d = DenyLimit
		c.reg.CountRefusal(ReasonUserLimit)
	case GateUnavailable:
		d = DenyUnavailable
		c.reg.CountRefusal(ReasonUnavailable)
	}
	c.history(u, "", LoginGated, why)
	return d
}

// history adds an attempt of this connection to user's login history; mech
// "" is the one AuthAttempt saw.
func (c *Conn) history(user, mech, result, reason string) {
	if c.reg.logins == nil || user == "" {
		return
	}
	if mech == "" {
		c.mu.Lock()
		mech = c.mech
		c.mu.Unlock()
	}
	c.reg.logins.record(user, c.protocol, c.client.Addr(), mech, result, reason, c.reg.opts.Now())
}

// checkLogin returns why the gate refuses the login (a Gate* reason), or "".
func (c *Conn) checkLogin(user string) string {
	r := c.reg
	if sh := r.sharedHook(); sh != nil && sh.Refusing() {
		return GateUnavailable
	}
	if !r.policy.Load().enabled(user, c.protocol) {
		return GateDisabled
	}
	if r.Blocked(c.client.Addr()) {
		return GateBlocked
	}
	if r.guard.locked(userKey(user)) || r.guard.locked(ipKey(c.client.Addr())) {
		return GateLockout
	}
	lim := r.limits.Load()
	perIP, perUser := lim.PerUserIP[c.protocol], lim.PerUser[c.protocol]
	if perIP <= 0 && perUser <= 0 {
		return ""
	}
	us := r.userShard(user)
	us.mu.Lock()
	nIP, nUser := 0, 0
	if st := us.m[user]; st != nil {
		for k, n := range st.live {
			if k.protocol == c.protocol {
				nUser += n
				if k.ip == c.client.Addr() {
					nIP += n
				}
			}
		}
	}
	us.mu.Unlock()
	if sh := r.sharedHook(); sh != nil {
		ru, rip := sh.Remote(c.protocol, user, c.client.Addr())
		nUser, nIP = nUser+ru, nIP+rip
	}
	if (perIP > 0 && nIP >= perIP) || (perUser > 0 && nUser >= perUser) {
		return GateLimit
	}
	return ""
}

// Authenticated moves the connection to the user: last login, last
// authenticated IP and the IP history update.
func (c *Conn) Authenticated(user, mech string) {
	user = NormalizeUser(user)
	now := c.reg.opts.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.state == StateAuthenticated || c.closed.Load() {
		return
	}
	c.reg.countLogin(c.protocol, "success")
	c.reg.stats.authed[c.protocol].Add(1)
	c.state = StateAuthenticated
	c.user = user
	c.mech = mech
	c.authAt = now
	if user != "" { // "" is PREAUTH: authenticated by the backend, name unknown
		c.reg.anonAdd(c.protocol, c.client.Addr(), -1)
		c.reg.userLogin(user, c.protocol, c.client.Addr(), now, c.id, c.started)
		c.counted = true
		c.reg.guard.success(userKey(user))
		if sh := c.reg.sharedHook(); sh != nil {
			sh.Succeeded(user)
		}
		if c.reg.logins != nil {
			c.reg.logins.record(user, c.protocol, c.client.Addr(), mech, LoginOK, "", now)
		}
		if c.deviceKey != "" {
			c.reg.devices.seen(user, c.deviceKey, c.device, c.client.Addr(), now)
		}
	}
}

// AuthFailed records a login the backend refused: it counts toward the
// brute-force lockout of the client IP and of the user, unless it was a
// temporary failure (a backend outage is not a bad password).
func (c *Conn) AuthFailed(user, mech string, temporary bool) {
	if temporary {
		c.reg.countLogin(c.protocol, "temporary_failure")
		c.history(NormalizeUser(user), mech, LoginTemporary, "")
		return
	}
	c.reg.countLogin(c.protocol, "failure")
	c.history(NormalizeUser(user), mech, LoginFailed, "")
	c.reg.guard.fail(ipKey(c.client.Addr()))
	u := NormalizeUser(user)
	if u != "" {
		c.reg.guard.fail(userKey(u))
	}
	if sh := c.reg.sharedHook(); sh != nil {
		sh.Failed(c.client.Addr(), u)
	}
}

// Drop cuts the connection: it leaves the counts at once, then the drop
// function (if any) says goodbye and closes the sockets.
func (c *Conn) Drop(reason string) bool {
	if !c.Close() {
		return false
	}
	c.reg.stats.drops.Add(1)
	c.mu.Lock()
	f := c.dropFunc
	if f == nil {
		c.dropped = reason // SetDropFunc will run it
	}
	c.mu.Unlock()
	if f != nil {
		f(reason)
	}
	return true
}

// Close unregisters the connection; it reports whether this call did it.
func (c *Conn) Close() bool {
	if !c.closed.CompareAndSwap(false, true) {
		return false
	}
	c.reg.remove(c)
	c.mu.Lock()
	if c.state == StateAuthenticated {
		c.reg.stats.authed[c.protocol].Add(-1)
	}
	if c.counted {
		c.reg.userLogout(c.user, c.protocol, c.client.Addr(), c.id)
		c.counted = false
	} else {
		c.reg.anonAdd(c.protocol, c.client.Addr(), -1)
	}
	c.mu.Unlock()
	return true
}

// Info is a copy of a connection's public state.
type Info struct {
	ID              uint64
	Protocol        string
	Listener        string
	User            string
	Client          netip.AddrPort
	State           string
	TLS             bool
	Mechanism       string
	StartedAt       time.Time
	AuthenticatedAt time.Time
	Device          string // an ActiveSync request's DeviceId, or ""
	Node            string // the cluster node holding it ("" for this one; set by a cluster view)
}

// Info returns a snapshot of the connection.
func (c *Conn) Info() Info {
	c.mu.Lock()
	defer c.mu.Unlock()
	return Info{ID: c.id, Protocol: c.protocol, Listener: c.listener, User: c.user, Client: c.client,
		State: c.state, TLS: c.tls, Mechanism: c.mech, StartedAt: c.started, AuthenticatedAt: c.authAt, Device: c.device.ID}
}

// NormalizeUser lowercases and trims a username.
func NormalizeUser(u string) string { return strings.ToLower(strings.TrimSpace(u)) }

// DomainOf returns the part after the last '@', or "".
func DomainOf(user string) string {
	if i := strings.LastIndexByte(user, '@'); i >= 0 {
		return user[i+1:]
	}
	return ""
}

// Closed reports whether the connection has left the registry (closed or dropped).
func (c *Conn) Closed() bool { return c.closed.Load() }
