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
)

var refusalReasons = []string{ReasonBlocked, ReasonIPLockout, ReasonIPLimit, ReasonListenerLimit,
	ReasonDisabled, ReasonLockout, ReasonUserLimit}

// Login results counted by Stats.
var loginResults = []string{"success", "failure", "temporary_failure"}

type stats struct {
	refusals map[string]*atomic.Int64 // fixed key set, read-only map
	logins   map[string]*atomic.Int64 // protocol+"/"+result
	drops    atomic.Int64
}

func newStats() *stats {
	s := &stats{refusals: map[string]*atomic.Int64{}, logins: map[string]*atomic.Int64{}}
	for _, r := range refusalReasons {
		s.refusals[r] = new(atomic.Int64)
	}
	for _, p := range Protocols {
		for _, r := range loginResults {
			s.logins[p+"/"+r] = new(atomic.Int64)
		}
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

// Stats is a snapshot of the counters since start.
type Stats struct {
	Refusals map[string]int64            // by reason
	Logins   map[string]map[string]int64 // protocol -> result -> count
	Drops    int64                       // connections dropped by an administrator or policy
}

// Stats returns the counters.
func (r *Registry) Stats() Stats {
	out := Stats{Refusals: map[string]int64{}, Logins: map[string]map[string]int64{}, Drops: r.stats.drops.Load()}
	for k, v := range r.stats.refusals {
		out.Refusals[k] = v.Load()
	}
	for _, p := range Protocols {
		m := map[string]int64{}
		for _, res := range loginResults {
			m[res] = r.stats.logins[p+"/"+res].Load()
		}
		out.Logins[p] = m
	}
	return out
}
