package accounting

import (
	"net/netip"
	"sort"
	"time"

	"github.com/mailgate/mailgate/protocols"
)

// Block refuses every connection from an IP or network until Expires (zero:
// until removed).
type Block struct {
	Prefix  netip.Prefix
	Reason  string
	Created time.Time
	Expires time.Time
}

func (b Block) active(now time.Time) bool { return b.Expires.IsZero() || now.Before(b.Expires) }

// Connect-time denials returned by Admit.
const (
	RefuseBlocked = protocols.RefuseBlocked
	RefuseLimit   = protocols.RefuseLimit
)

// Admit is the connect-time gate: a blocked IP or network, a locked-out IP,
// or the per-IP connection cap refuse the connection; otherwise it is
// registered. The refusal is "" when admitted.
func (r *Registry) Admit(info ConnInfo) (*Conn, string) {
	ip := info.Client.Addr().Unmap()
	if r.Blocked(ip) {
		r.CountRefusal(ReasonBlocked)
		return nil, RefuseBlocked
	}
	if r.guard.locked(ipKey(ip)) {
		r.CountRefusal(ReasonIPLockout)
		return nil, RefuseBlocked
	}
	c := r.Register(info)
	if max := r.limits.Load().PerIP; max > 0 && r.ipCount(ip)+r.remoteIP(ip) > max {
		c.Close()
		r.CountRefusal(ReasonIPLimit)
		return nil, RefuseLimit
	}
	return c, ""
}

// remoteIP is what the other nodes of a cluster hold from ip.
func (r *Registry) remoteIP(ip netip.Addr) int {
	if sh := r.sharedHook(); sh != nil {
		return sh.RemoteIP(ip)
	}
	return 0
}

func (r *Registry) ipCount(ip netip.Addr) int {
	s := r.ipShard(ip)
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.m[ip]
}

// Blocked reports whether an active block covers ip.
func (r *Registry) Blocked(ip netip.Addr) bool {
	blocks := r.policy.Load().blocks
	if len(blocks) == 0 {
		return false // the common case, on every connect and login: no clock read
	}
	ip = ip.Unmap()
	now := r.opts.Now()
	for _, b := range blocks {
		if b.Prefix.Contains(ip) && b.active(now) {
			return true
		}
	}
	return false
}

// Blocks lists the active blocks, newest first.
func (r *Registry) Blocks() []Block {
	now := r.opts.Now()
	var out []Block
	for _, b := range r.policy.Load().blocks {
		if b.active(now) {
			out = append(out, b)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Created.After(out[j].Created) })
	return out
}

// AddBlock blocks a network (replacing any block of the same prefix) and
// drops its live connections; it returns how many were dropped.
func (r *Registry) AddBlock(prefix netip.Prefix, reason string, expires time.Time) (int, error) {
	b := Block{Prefix: prefix.Masked(), Reason: reason, Created: r.opts.Now(), Expires: expires}
	return r.change(Change{Kind: ChangeBlock, Block: &b}, func(st *Store) error { return st.putBlock(b) })
}

// RemoveBlock lifts a block; it reports whether one existed.
func (r *Registry) RemoveBlock(prefix netip.Prefix) (bool, error) {
	prefix = prefix.Masked()
	found := false
	err := r.updatePolicy(func(p *policy) error {
		n := withoutBlock(p.blocks, prefix)
		found = len(n) != len(p.blocks)
		if !found {
			return nil
		}
		if st := r.opts.Store; st != nil {
			if err := st.deleteBlock(prefix); err != nil {
				return err
			}
		}
		p.blocks = n
		return nil
	})
	return found, err
}

func withoutBlock(bs []Block, prefix netip.Prefix) []Block {
	out := make([]Block, 0, len(bs))
	for _, b := range bs {
		if b.Prefix != prefix {
			out = append(out, b)
		}
	}
	return out
}
