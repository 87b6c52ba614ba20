package accounting

import (
	"errors"
	"net/netip"
	"time"
)

// ErrUnavailable is the error of a change that could not be made because
// the cluster's store is unreachable: nothing changed.
var ErrUnavailable = errors.New("cluster store unreachable")

// Shared connects a registry to the other nodes of a cluster. The login
// path calls it without waiting on the network: implementations queue the
// events they send and answer the reads from memory.
type Shared interface {
	// Login tells the cluster of a successful login (last login, last
	// authenticated IP, IP history).
	Login(user, protocol string, ip netip.Addr, at time.Time)
	// Failed counts a failed login (a wrong password) of the IP and, when
	// known, of the user toward the cluster-wide brute-force lockout.
	Failed(ip netip.Addr, user string)
	// Succeeded clears the user's cluster-wide failure count.
	Succeeded(user string)
	// Live moves this node's live count of an authenticated (protocol,
	// user, IP) by delta; user "" is any connection of the IP (the per-IP
	// cap counts them all).
	Live(protocol, user string, ip netip.Addr, delta int)
	// Remote is what the other nodes hold live for (protocol, user): all
	// of the user's connections and those from ip.
	Remote(protocol, user string, ip netip.Addr) (perUser, perUserIP int)
	// RemoteIP is what the other nodes hold live from ip.
	RemoteIP(ip netip.Addr) int
	// Refusing reports that logins must get a temporary refusal (the
	// cluster store is unreachable and the policy says refuse).
	Refusing() bool
}

// SetShared joins the registry to a cluster; call it before connections
// are registered. Nil leaves the cluster.
func (r *Registry) SetShared(s Shared) {
	if s == nil {
		r.shared.Store(nil)
		return
	}
	r.shared.Store(&s)
}

// sharedHook is the cluster hook, or nil.
func (r *Registry) sharedHook() Shared {
	if p := r.shared.Load(); p != nil {
		return *p
	}
	return nil
}

// SetIDBase makes the connection ids that come next start after base, so
// that ids are unique across the nodes of a cluster (each node takes its
// own range).
func (r *Registry) SetIDBase(base uint64) {
	for {
		cur := r.nextID.Load()
		if cur >= base || r.nextID.CompareAndSwap(cur, base) {
			return
		}
	}
}

// ApplyLogin records a login another node saw: last login and IP of the
// protocol (when newer than what is known) and the IP history. It counts
// no live connection.
func (r *Registry) ApplyLogin(user, protocol string, ip netip.Addr, at time.Time) {
	user = NormalizeUser(user)
	if user == "" || !ValidProtocol(protocol) {
		return
	}
	us := r.userShard(user)
	us.mu.Lock()
	defer us.mu.Unlock()
	st := us.m[user]
	if st == nil {
		st = newUserState()
		us.m[user] = st
	}
	r.recordLogin(st, user, protocol, ip.Unmap(), at)
}

// MergeHistory adds what a cluster's store keeps of a user (its IP history
// records and last logins) to what this node knows; newer wins.
func (r *Registry) MergeHistory(user string, recs []IPRecord, last map[string]LastLogin) {
	user = NormalizeUser(user)
	if user == "" {
		return
	}
	us := r.userShard(user)
	us.mu.Lock()
	defer us.mu.Unlock()
	st := us.m[user]
	if st == nil {
		st = newUserState()
		us.m[user] = st
	}
	for p, l := range last {
		if ValidProtocol(p) && l.At.After(st.lastLogin[p]) {
			st.lastLogin[p], st.lastIP[p] = l.At, l.IP
			if l.At.After(st.lastAny) {
				st.lastAny, st.lastAnyIP = l.At, l.IP
			}
		}
	}
	for _, rec := range recs {
		k := histKey{rec.IP, rec.Protocol}
		if cur := st.history[k]; cur != nil {
			if rec.LastSeen.After(cur.LastSeen) {
				cur.LastSeen = rec.LastSeen
			}
			if rec.Count > cur.Count {
				cur.Count = rec.Count
			}
			if rec.FirstSeen.Before(cur.FirstSeen) {
				cur.FirstSeen = rec.FirstSeen
			}
			continue
		}
		if len(st.history) < r.opts.HistoryPerUser {
			rec := rec
			st.history[k] = &rec
		}
	}
}

// LastLogin is a user's last login in one protocol.
type LastLogin struct {
	At time.Time
	IP netip.Addr
}

// UserRecord is what a node remembers of a user beyond live sessions.
type UserRecord struct {
	User string
	Last map[string]LastLogin
	IPs  []IPRecord
}

// Records returns every user's last logins and IP history (`mailgate
// cluster import` copies them).
func (r *Registry) Records() []UserRecord {
	var out []UserRecord
	for i := range r.users {
		us := &r.users[i]
		us.mu.Lock()
		for u, st := range us.m {
			rec := UserRecord{User: u, Last: map[string]LastLogin{}}
			for p, t := range st.lastLogin {
				rec.Last[p] = LastLogin{At: t, IP: st.lastIP[p]}
			}
			for _, h := range st.history {
				rec.IPs = append(rec.IPs, *h)
			}
			if len(rec.Last) > 0 || len(rec.IPs) > 0 {
				out = append(out, rec)
			}
		}
		us.mu.Unlock()
	}
	return out
}

// AdoptLogins records logins another process saw (the old process of an
// upgrade, after it handed over the state file): in memory as ApplyLogin
// does, and in the store.
func (r *Registry) AdoptLogins(recs []LoginRecord) {
	for _, rec := range recs {
		r.ApplyLogin(rec.User, rec.Protocol, rec.IP, rec.Last)
		if st := r.opts.Store; st != nil {
			st.enqueueRecord(rec)
		}
	}
}

// LastID is the last connection id given out (an upgrade's new process
// starts after it, so that ids stay unique across the two).
func (r *Registry) LastID() uint64 { return r.nextID.Load() }

// Change makes a policy change the way the admin API's setters do (with a
// store: committed first), and returns how many sessions it dropped here.
func (r *Registry) Change(ch Change) (int, error) {
	if err := ch.Valid(); err != nil {
		return 0, err
	}
	switch ch.Kind {
	case ChangeProtocol:
		return r.SetProtocolEnabled(ch.User, ch.Protocol, ch.Enabled, ch.Drop)
	case ChangeDomain:
		return r.SetDomainEnabled(ch.Domain, ch.Enabled, ch.Drop)
	case ChangeBlock:
		return r.AddBlock(ch.Block.Prefix, ch.Block.Reason, ch.Block.Expires)
	case ChangeUnblock:
		_, err := r.RemoveBlock(ch.Block.Prefix)
		return 0, err
	case ChangeDeviceBlock:
		return r.BlockDevice(ch.User, ch.Device.ID, ch.Device.Reason, ch.Device.By)
	case ChangeDeviceAllow:
		_, err := r.AllowDevice(ch.User, ch.Device.ID)
		return 0, err
	case ChangeLockoutClear:
		r.ClearLockout(ch.Lock.Kind, ch.Lock.Key)
		return 0, nil
	}
	return r.Apply(ch)
}
