package accounting

import (
	"fmt"
	"net/netip"
	"time"
)

// Policy change kinds (Change.Kind).
const (
	ChangeProtocol     = "protocol"      // User, Protocol, Enabled, Drop
	ChangeDomain       = "domain"        // Domain, Enabled, Drop
	ChangeBlock        = "block"         // Block (its live connections are dropped)
	ChangeUnblock      = "unblock"       // Block.Prefix
	ChangeDeviceBlock  = "device_block"  // User, Device (its live requests are dropped)
	ChangeDeviceAllow  = "device_allow"  // User, Device.ID
	ChangeLockout      = "lockout"       // Lock: a lockout decided elsewhere
	ChangeLockoutClear = "lockout_clear" // Lock.Kind, Lock.Key
)

// Change is one policy change in a form a cluster carries between nodes and
// keeps in its shared store. A node applies it with Apply; a policy
// snapshot is a list of changes (Snapshot, ReplacePolicy).
type Change struct {
	Kind     string       `json:"kind"`
	User     string       `json:"user,omitempty"`
	Protocol string       `json:"protocol,omitempty"`
	Domain   string       `json:"domain,omitempty"`
	Enabled  bool         `json:"enabled,omitempty"`
	Drop     bool         `json:"drop,omitempty"`
	Block    *Block       `json:"block,omitempty"`
	Device   *DeviceBlock `json:"device,omitempty"`
	Lock     *Lockout     `json:"lock,omitempty"`
}

// Valid checks the fields a change's kind needs.
func (ch Change) Valid() error {
	switch ch.Kind {
	case ChangeProtocol:
		if NormalizeUser(ch.User) == "" || !ValidProtocol(ch.Protocol) {
			return fmt.Errorf("accounting: change %s needs a user and a protocol key", ch.Kind)
		}
	case ChangeDomain:
		if NormalizeUser(ch.Domain) == "" {
			return fmt.Errorf("accounting: change %s needs a domain", ch.Kind)
		}
	case ChangeBlock, ChangeUnblock:
		if ch.Block == nil || !ch.Block.Prefix.IsValid() {
			return fmt.Errorf("accounting: change %s needs a network", ch.Kind)
		}
	case ChangeDeviceBlock, ChangeDeviceAllow:
		if ch.Device == nil || NormalizeUser(ch.User) == "" || DeviceKey(ch.Device.ID) == "" {
			return fmt.Errorf("accounting: change %s needs a user and a device id", ch.Kind)
		}
	case ChangeLockout, ChangeLockoutClear:
		if ch.Lock == nil || (ch.Lock.Kind != "ip" && ch.Lock.Kind != "user") || ch.Lock.Key == "" {
			return fmt.Errorf("accounting: change %s needs a lockout kind and key", ch.Kind)
		}
	default:
		return fmt.Errorf("accounting: unknown change kind %q", ch.Kind)
	}
	return nil
}

// mutate applies a policy change (not a lockout) to p, a private copy.
func (ch Change) mutate(p *policy) {
	switch ch.Kind {
	case ChangeProtocol:
		u := NormalizeUser(ch.User)
		if ch.Enabled {
			delete(p.disabledUser[u], ch.Protocol)
			if len(p.disabledUser[u]) == 0 {
				delete(p.disabledUser, u)
			}
			return
		}
		if p.disabledUser[u] == nil {
			p.disabledUser[u] = map[string]bool{}
		}
		p.disabledUser[u][ch.Protocol] = true
	case ChangeDomain:
		d := NormalizeUser(ch.Domain)
		if ch.Enabled {
			delete(p.disabledDomain, d)
		} else {
			p.disabledDomain[d] = true
		}
	case ChangeBlock:
		b := *ch.Block
		b.Prefix = b.Prefix.Masked()
		p.blocks = append(withoutBlock(p.blocks, b.Prefix), b)
	case ChangeUnblock:
		p.blocks = withoutBlock(p.blocks, ch.Block.Prefix.Masked())
	case ChangeDeviceBlock:
		u, key := NormalizeUser(ch.User), DeviceKey(ch.Device.ID)
		m := p.deviceBlocks[u]
		if m == nil {
			m = map[string]DeviceBlock{}
			p.deviceBlocks[u] = m
		}
		m[key] = *ch.Device
	case ChangeDeviceAllow:
		u, key := NormalizeUser(ch.User), DeviceKey(ch.Device.ID)
		delete(p.deviceBlocks[u], key)
		if len(p.deviceBlocks[u]) == 0 {
			delete(p.deviceBlocks, u)
		}
	}
}

// Apply makes a change decided elsewhere (another node of a cluster, or
// this one through the cluster) take effect here: the in-memory policy
// changes (the Store is not written: the cluster's store is the truth) and
// the sessions it affects are dropped. It returns how many were dropped.
// Applying the same change twice is harmless.
func (r *Registry) Apply(ch Change) (int, error) {
	if err := ch.Valid(); err != nil {
		return 0, err
	}
	switch ch.Kind {
	case ChangeLockout:
		r.guard.lockUntil(lockKey(*ch.Lock), ch.Lock.Until)
		return 0, nil
	case ChangeLockoutClear:
		r.guard.clear(lockKey(*ch.Lock))
		return 0, nil
	}
	r.polMu.Lock()
	p := r.policy.Load().clone()
	ch.mutate(p)
	r.policy.Store(p)
	r.polMu.Unlock()
	return r.dropFor(ch), nil
}

// dropFor drops the live sessions a change just applied cuts.
func (r *Registry) dropFor(ch Change) int {
	switch ch.Kind {
	case ChangeProtocol:
		if !ch.Enabled && ch.Drop {
			return r.DropUser(ch.User, ch.Protocol, "disabled")
		}
	case ChangeDomain:
		if !ch.Enabled && ch.Drop {
			d := NormalizeUser(ch.Domain)
			return r.dropWhere(func(i Info) bool { return i.User != "" && DomainOf(i.User) == d }, "disabled")
		}
	case ChangeBlock:
		pfx := ch.Block.Prefix.Masked()
		return r.dropWhere(func(i Info) bool { return pfx.Contains(i.Client.Addr()) }, "blocked")
	case ChangeDeviceBlock:
		return r.DropDevice(ch.User, ch.Device.ID, "device blocked")
	}
	return 0
}

// lockKey is the guard key a lockout names.
func lockKey(l Lockout) guardKey {
	if l.Kind == "ip" {
		ip, _ := netip.ParseAddr(l.Key)
		return ipKey(ip)
	}
	return userKey(NormalizeUser(l.Key))
}

// Snapshot is the policy as a list of changes that rebuild it from nothing:
// every disabled protocol and domain, every active block and every device
// block. `mailgate cluster import` copies a node's state with it.
func (r *Registry) Snapshot() []Change {
	p := r.policy.Load()
	var out []Change
	for u, m := range p.disabledUser {
		for proto := range m {
			out = append(out, Change{Kind: ChangeProtocol, User: u, Protocol: proto})
		}
	}
	for d := range p.disabledDomain {
		out = append(out, Change{Kind: ChangeDomain, Domain: d})
	}
	now := r.opts.Now()
	for _, b := range p.blocks {
		if b.active(now) {
			b := b
			out = append(out, Change{Kind: ChangeBlock, Block: &b})
		}
	}
	for u, m := range p.deviceBlocks {
		for _, b := range m {
			b := b
			out = append(out, Change{Kind: ChangeDeviceBlock, User: u, Device: &b})
		}
	}
	return out
}

// ReplacePolicy swaps in the policy the changes build (a cluster's full
// copy, read when a node joins or resubscribes). Lockouts among them
// replace the lockouts held. Live sessions are not dropped: a change that
// drops reaches them through Apply.
func (r *Registry) ReplacePolicy(changes []Change, lockouts []Lockout) {
	p := &policy{disabledUser: map[string]map[string]bool{}, disabledDomain: map[string]bool{},
		deviceBlocks: map[string]map[string]DeviceBlock{}}
	for _, ch := range changes {
		if ch.Valid() == nil {
			ch.mutate(p)
		}
	}
	r.polMu.Lock()
	r.policy.Store(p)
	r.polMu.Unlock()
	for _, l := range lockouts {
		if l.Kind == "ip" || l.Kind == "user" {
			r.guard.lockUntil(lockKey(l), l.Until)
		}
	}
}

// lockUntil puts key under a lockout until t (decided by a cluster), unless
// it is already locked out longer.
func (g *guard) lockUntil(key guardKey, t time.Time) {
	sh := &g.shards[key.shard()]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	st := sh.m[key]
	if st == nil {
		st = &failState{}
		sh.m[key] = st
	}
	if t.After(st.until) {
		st.until = t
	}
	st.last = g.now()
	st.times = nil
}
