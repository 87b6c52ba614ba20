package accounting

import (
	"net/netip"
	"sort"
	"time"
)

type liveKey struct {
	protocol string
	ip       netip.Addr
}

type histKey struct {
	ip       netip.Addr
	protocol string
}

// IPRecord is one entry of a user's authenticated-IP history.
type IPRecord struct {
	IP        netip.Addr
	Protocol  string
	FirstSeen time.Time
	LastSeen  time.Time
	Count     int
}

// userState is what the registry remembers about a user.
type userState struct {
	live      map[liveKey]int      // authenticated live connections
	webmail   map[uint64]time.Time // live webmail connections: id -> start (Duration column)
	lastLogin map[string]time.Time
	lastIP    map[string]netip.Addr // per protocol
	lastAny   time.Time             // latest login in any protocol
	lastAnyIP netip.Addr
	history   map[histKey]*IPRecord
}

func newUserState() *userState {
	return &userState{live: map[liveKey]int{}, lastLogin: map[string]time.Time{},
		lastIP: map[string]netip.Addr{}, history: map[histKey]*IPRecord{}}
}

func (r *Registry) userLogin(user, protocol string, ip netip.Addr, now time.Time, id uint64, started time.Time) {
	us := r.userShard(user)
	us.mu.Lock()
	defer us.mu.Unlock()
	st := us.m[user]
	if st == nil {
		st = newUserState()
		us.m[user] = st
	}
	st.live[liveKey{protocol, ip}]++
	if protocol == "webmail" {
		if st.webmail == nil {
			st.webmail = map[uint64]time.Time{}
		}
		st.webmail[id] = started
	}
	if r.opts.Store != nil {
		r.opts.Store.enqueueLogin(user, protocol, ip, now)
	}
	if sh := r.sharedHook(); sh != nil {
		sh.Live(protocol, user, ip, 1)
		sh.Login(user, protocol, ip, now)
	}
	r.recordLogin(st, user, protocol, ip, now)
}

// recordLogin updates a locked user state for a login at now: last login
// and IP (unless a newer one is known) and the IP history.
func (r *Registry) recordLogin(st *userState, user, protocol string, ip netip.Addr, now time.Time) {
	if !now.Before(st.lastLogin[protocol]) {
		st.lastLogin[protocol] = now
		st.lastIP[protocol] = ip
	}
	if !now.Before(st.lastAny) {
		st.lastAny, st.lastAnyIP = now, ip
	}
	k := histKey{ip, protocol}
	if rec := st.history[k]; rec != nil {
		if now.After(rec.LastSeen) {
			rec.LastSeen = now
		}
		rec.Count++
		return
	}
	if len(st.history) >= r.opts.HistoryPerUser {
		var oldest histKey
		var t time.Time
		first := true
		for hk, rec := range st.history {
			if first || rec.LastSeen.Before(t) {
				oldest, t, first = hk, rec.LastSeen, false
			}
		}
		delete(st.history, oldest)
	}
	st.history[k] = &IPRecord{IP: ip, Protocol: protocol, FirstSeen: now, LastSeen: now, Count: 1}
}

func (r *Registry) userLogout(user, protocol string, ip netip.Addr, id uint64) {
	us := r.userShard(user)
	us.mu.Lock()
	defer us.mu.Unlock()
	st := us.m[user]
	if st == nil {
		return
	}
	if sh := r.sharedHook(); sh != nil {
		sh.Live(protocol, user, ip, -1)
	}
	k := liveKey{protocol, ip}
	if st.live[k]--; st.live[k] <= 0 {
		delete(st.live, k)
	}
	delete(st.webmail, id)
}

// UserIPs returns the user's authenticated-IP history, most recent first.
func (r *Registry) UserIPs(user string) []IPRecord {
	user = NormalizeUser(user)
	us := r.userShard(user)
	us.mu.Lock()
	var out []IPRecord
	if st := us.m[user]; st != nil {
		for _, rec := range st.history {
			out = append(out, *rec)
		}
	}
	us.mu.Unlock()
	sort.Slice(out, func(i, j int) bool {
		if !out[i].LastSeen.Equal(out[j].LastSeen) {
			return out[i].LastSeen.After(out[j].LastSeen)
		}
		return out[i].IP.Less(out[j].IP)
	})
	return out
}

// lastLogin returns the user's last login time and IP for a protocol, or
// for any protocol when protocol is "all".
func (r *Registry) lastLogin(user, protocol string) (time.Time, netip.Addr) {
	us := r.userShard(user)
	us.mu.Lock()
	defer us.mu.Unlock()
	if st := us.m[user]; st != nil {
		return st.last(protocol)
	}
	return time.Time{}, netip.Addr{}
}

// last is lastLogin on a locked state.
func (st *userState) last(protocol string) (time.Time, netip.Addr) {
	if protocol != "all" {
		return st.lastLogin[protocol], st.lastIP[protocol]
	}
	return st.lastAny, st.lastAnyIP
}
