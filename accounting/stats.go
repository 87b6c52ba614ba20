package accounting

import "sync/atomic"

// Refusal reasons counted by Stats (a closed set: it becomes metric labels).
const (
	ReasonBlocked       = "blocked"        // connect: IP or network blocked
	ReasonIPLockout     = "ip_lockout"     // connect: IP locked out (brute force)
	ReasonIPLimit       = "ip_limit"       // connect: too many connections from the IP
	ReasonListenerLimit = "listener_limit" // connect: listener full
	ReasonDisabled      = "disabled"       // login: protocol or domain disabled
	ReasonLockout       = "lockout"        // login: user or IP locked out
	ReasonUserLimit     = "user_limit"     // login: per user or user+IP limit
	ReasonUnavailable   = "unavailable"    // login: the cluster store is unreachable (on_redis_down: refuse)
	// and, for ActiveSync, ReasonDeviceBlocked and ReasonDeviceType (devices.go)
)

var refusalReasons = []string{ReasonBlocked, ReasonIPLockout, ReasonIPLimit, ReasonListenerLimit,
	ReasonDisabled, ReasonLockout, ReasonUserLimit, ReasonDeviceBlocked, ReasonDeviceType, ReasonUnavailable}

// Login results counted by Stats.
var loginResults = []string{"success", "failure", "temporary_failure"}

type stats struct {
	refusals   map[string]*atomic.Int64 // fixed key set, read-only map
	logins     map[string]*atomic.Int64 // protocol+"/"+result
	authed     map[string]*atomic.Int64 // live authenticated connections per protocol
	dialErrors map[string]*atomic.Int64 // per protocol
	bytesUp    map[string]*atomic.Int64 // relayed client -> backend, per protocol
	bytesDown  map[string]*atomic.Int64 // relayed backend -> client, per protocol
	drops      atomic.Int64
	panics     atomic.Int64
}

func newStats() *stats {
	s := &stats{refusals: map[string]*atomic.Int64{}, logins: map[string]*atomic.Int64{},
		authed: map[string]*atomic.Int64{}, dialErrors: map[string]*atomic.Int64{},
		bytesUp: map[string]*atomic.Int64{}, bytesDown: map[string]*atomic.Int64{}}
	for _, r := range refusalReasons {
		s.refusals[r] = new(atomic.Int64)
	}
	for _, p := range Protocols {
		for _, r := range loginResults {
			s.logins[p+"/"+r] = new(atomic.Int64)
		}
		s.authed[p], s.dialErrors[p] = new(atomic.Int64), new(atomic.Int64)
		s.bytesUp[p], s.bytesDown[p] = new(atomic.Int64), new(atomic.Int64)
	}
	return s
}

// CountRefusal counts a refusal made outside the registry (the proxy's
// listener limit). Unknown reasons are ignored.
func (r *Registry) CountRefusal(reason string) {
	if c := r.stats.refusals[reason]; c != nil {
		c.Add(1)
	}
}

func (r *Registry) countLogin(protocol, result string) {
	if c := r.stats.logins[protocol+"/"+result]; c != nil {
		c.Add(1)
	}
}

// CountPanic counts a session that ended in a panic its goroutine
// recovered from: a bug, never a client's doing.
func (r *Registry) CountPanic() { r.stats.panics.Add(1) }

// CountDialError counts a failed backend dial for a protocol.
func (r *Registry) CountDialError(protocol string) {
	if c := r.stats.dialErrors[protocol]; c != nil {
		c.Add(1)
	}
}

// AddRelayBytes counts bytes relayed after login for a protocol.
func (r *Registry) AddRelayBytes(protocol string, up, down int64) {
	if c := r.stats.bytesUp[protocol]; c != nil {
		c.Add(up)
		r.stats.bytesDown[protocol].Add(down)
	}
}

// Stats is a snapshot of the counters since start.
type Stats struct {
	Refusals      map[string]int64            // by reason
	Logins        map[string]map[string]int64 // protocol -> result -> count
	Drops         int64                       // connections dropped by an administrator or policy
	Panics        int64                       // sessions that ended in a recovered panic (a bug)
	Authenticated map[string]int64            // live authenticated connections per protocol (the rest of the tab count is pre-auth)
	DialErrors    map[string]int64            // failed backend dials per protocol
	BytesUp       map[string]int64            // relayed client -> backend per protocol
	BytesDown     map[string]int64            // relayed backend -> client per protocol
}

// Stats returns the counters.
func (r *Registry) Stats() Stats {
	out := Stats{Refusals: map[string]int64{}, Logins: map[string]map[string]int64{}, Drops: r.stats.drops.Load(), Panics: r.stats.panics.Load(),
		Authenticated: map[string]int64{}, DialErrors: map[string]int64{}, BytesUp: map[string]int64{}, BytesDown: map[string]int64{}}
	for k, v := range r.stats.refusals {
		out.Refusals[k] = v.Load()
	}
	for _, p := range Protocols {
		out.Authenticated[p] = r.stats.authed[p].Load()
		out.DialErrors[p] = r.stats.dialErrors[p].Load()
		out.BytesUp[p], out.BytesDown[p] = r.stats.bytesUp[p].Load(), r.stats.bytesDown[p].Load()
		m := map[string]int64{}
		for _, res := range loginResults {
			m[res] = r.stats.logins[p+"/"+res].Load()
		}
		out.Logins[p] = m
	}
	return out
}
