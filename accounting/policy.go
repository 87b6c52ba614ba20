package accounting

import "fmt"

// policy is an immutable snapshot: the login path reads it with one atomic
// load; writers copy it under polMu and swap it in.
type policy struct {
	disabledUser   map[string]map[string]bool // user -> protocol -> disabled
	disabledDomain map[string]bool
	blocks         []Block
	deviceBlocks   map[string]map[string]DeviceBlock // user -> device key -> block
}

func (p *policy) deviceBlocked(user, key string) bool {
	_, ok := p.deviceBlocks[user][key]
	return ok
}

func (p *policy) enabled(user, protocol string) bool {
	return !p.disabledUser[user][protocol] && !p.disabledDomain[DomainOf(user)]
}

func (p *policy) clone() *policy {
	n := &policy{disabledUser: make(map[string]map[string]bool, len(p.disabledUser)),
		disabledDomain: make(map[string]bool, len(p.disabledDomain)),
		blocks:         append([]Block(nil), p.blocks...),
		deviceBlocks:   make(map[string]map[string]DeviceBlock, len(p.deviceBlocks))}
	for u, m := range p.deviceBlocks {
		c := make(map[string]DeviceBlock, len(m))
		for k, v := range m {
			c[k] = v
		}
		n.deviceBlocks[u] = c
	}
	for u, m := range p.disabledUser {
		c := make(map[string]bool, len(m))
		for k, v := range m {
			c[k] = v
		}
		n.disabledUser[u] = c
	}
	for d, v := range p.disabledDomain {
		n.disabledDomain[d] = v
	}
	return n
}

// updatePolicy applies fn to a copy of the policy and swaps it in. fn
// commits to the store first; if it fails, nothing changes.
func (r *Registry) updatePolicy(fn func(*policy) error) error {
	r.polMu.Lock()
	defer r.polMu.Unlock()
	p := r.policy.Load().clone()
	if err := fn(p); err != nil {
		return fmt.Errorf("%w: %v", ErrStore, err)
	}
	r.policy.Store(p)
	return nil
}

// ValidProtocol reports whether p is a protocol key.
func ValidProtocol(p string) bool {
	for _, k := range Protocols {
		if k == p {
			return true
		}
	}
	return false
}

// ProtocolEnabled reports whether the protocol is enabled for the user
// (ignoring the domain).
func (r *Registry) ProtocolEnabled(user, protocol string) bool {
	return !r.policy.Load().disabledUser[NormalizeUser(user)][protocol]
}

// DomainEnabled reports whether the user's domain (or the domain) is enabled.
func (r *Registry) DomainEnabled(userOrDomain string) bool {
	d := NormalizeUser(userOrDomain)
	if x := DomainOf(d); x != "" {
		d = x
	}
	return !r.policy.Load().disabledDomain[d]
}

// SetProtocolEnabled enables or disables a protocol for a user. Disabling
// with drop set also drops the user's live connections of that protocol; it
// returns how many were dropped. With a store, the change is committed
// before it takes effect; a store error leaves everything as it was.
func (r *Registry) SetProtocolEnabled(user, protocol string, enabled, drop bool) (int, error) {
	ch := Change{Kind: ChangeProtocol, User: NormalizeUser(user), Protocol: protocol, Enabled: enabled, Drop: drop}
	return r.change(ch, func(st *Store) error { return st.setProtocolDisabled(ch.User, protocol, !enabled) })
}

// SetDomainEnabled enables or disables every user of a domain. Disabling
// with drop set drops the domain's live authenticated connections.
func (r *Registry) SetDomainEnabled(domain string, enabled, drop bool) (int, error) {
	ch := Change{Kind: ChangeDomain, Domain: NormalizeUser(domain), Enabled: enabled, Drop: drop}
	return r.change(ch, func(st *Store) error { return st.setDomainDisabled(ch.Domain, !enabled) })
}

// change commits ch with commit (when there is a store), applies it to the
// policy and drops what it cuts.
func (r *Registry) change(ch Change, commit func(*Store) error) (int, error) {
	err := r.updatePolicy(func(p *policy) error {
		if st := r.opts.Store; st != nil {
			if err := commit(st); err != nil {
				return err
			}
		}
		ch.mutate(p)
		return nil
	})
	if err != nil {
		return 0, err
	}
	return r.dropFor(ch), nil
}
