package accounting

import (
	"net/netip"
	"slices"
	"sort"
	"strings"
	"time"
)

// Filter selects live connections; empty fields match everything.
type Filter struct {
	Protocol string // a protocol key, "all" or ""
	User     string
	IP       netip.Addr
	Node     string // a cluster node's connections only ("": every node); a single node ignores it
}

func (f Filter) match(i Info) bool {
	if f.Protocol != "" && f.Protocol != "all" && i.Protocol != f.Protocol {
		return false
	}
	if f.User != "" && i.User != NormalizeUser(f.User) {
		return false
	}
	if f.IP.IsValid() && i.Client.Addr() != f.IP.Unmap() {
		return false
	}
	return true
}

// Connections returns the live connections matching f, oldest first.
func (r *Registry) Connections(f Filter) []Info {
	var out []Info
	r.each(func(c *Conn) {
		if i := c.Info(); f.match(i) {
			out = append(out, i)
		}
	})
	sort.Slice(out, func(a, b int) bool { return out[a].ID < out[b].ID })
	return out
}

// IPCount is one client IP and its connection count in a row.
type IPCount struct {
	IP    netip.Addr
	Count int
}

// UserRow is one row of a tab of the User Connections page. Unauthenticated
// connections form rows with an empty User, one per client IP.
type UserRow struct {
	User            string
	Protocols       []string // protocols the row has live connections in
	ProtocolEnabled bool     // the checkmark; All tab: enabled for every protocol in Protocols
	DomainEnabled   bool
	Connections     int
	IPs             []IPCount // sorted by count desc, then IP
	Duration        time.Duration
	LastLogin       time.Time
	LastIP          netip.Addr
	Nodes           []string // the cluster nodes holding the row's connections (set by a cluster view)
}

// Users builds the rows of a tab ("all" or a protocol key) from the
// aggregates kept at every event (per user: live connections per protocol
// and IP; per IP: connections without a user), so it costs one pass over
// the users, not over the connections.
func (r *Registry) Users(protocol string) []UserRow {
	pidx := -1
	if protocol != "" && protocol != "all" {
		if pidx = protoIndex(protocol); pidx < 0 {
			return nil
		}
		protocol = Protocols[pidx]
	} else {
		protocol = "all"
	}
	now := r.opts.Now()
	pol := r.policy.Load()
	live := r.Summary()["all"]
	out := make([]UserRow, 0, live/2+16)
	// Every row's IPs live in one slab (no allocation per row; the GC has
	// a large heap to mark when the registry is big).
	slab := make([]IPCount, 0, live+16)
	for i := range r.users {
		us := &r.users[i]
		us.mu.Lock()
		for user, st := range us.m {
			if len(st.live) == 0 {
				continue
			}
			var protos uint16
			row := UserRow{User: user, ProtocolEnabled: true}
			start := len(slab)
			for k, n := range st.live {
				pi := protoIndex(k.protocol)
				if pidx >= 0 && pi != pidx {
					continue
				}
				protos |= 1 << pi
				row.Connections += n
				slab = addIP(slab, start, k.ip, n)
			}
			if row.Connections == 0 {
				continue
			}
			row.IPs = slab[start:len(slab):len(slab)]
			row.Protocols = protoNames(protos)
			for _, p := range row.Protocols {
				if pol.disabledUser[user][p] {
					row.ProtocolEnabled = false
				}
			}
			row.DomainEnabled = !pol.disabledDomain[DomainOf(user)]
			if pidx < 0 || protocol == "webmail" {
				var oldest time.Time
				for _, t := range st.webmail {
					if oldest.IsZero() || t.Before(oldest) {
						oldest = t
					}
				}
				if !oldest.IsZero() {
					row.Duration = now.Sub(oldest)
				}
			}
			row.LastLogin, row.LastIP = st.last(protocol)
			out = append(out, row)
		}
		us.mu.Unlock()
	}
	named := len(out)
	anon := map[netip.Addr]int{} // IP -> index in out
	for i := range r.anon {
		as := &r.anon[i]
		as.mu.Lock()
		for k, n := range as.m {
			pi := protoIndex(k.protocol)
			if pidx >= 0 && pi != pidx {
				continue
			}
			j, ok := anon[k.ip]
			if !ok {
				j = len(out)
				anon[k.ip] = j
				out = append(out, UserRow{ProtocolEnabled: true, DomainEnabled: true, IPs: []IPCount{{IP: k.ip}}})
			}
			out[j].Connections += n
			out[j].IPs[0].Count += n
			out[j].Protocols = append(out[j].Protocols, k.protocol)
		}
		as.mu.Unlock()
	}
	for j := named; j < len(out); j++ {
		sort.Strings(out[j].Protocols)
	}
	for j := range out[:named] {
		ips := out[j].IPs
		if len(ips) > 1 {
			sort.Slice(ips, func(x, y int) bool {
				if ips[x].Count != ips[y].Count {
					return ips[x].Count > ips[y].Count
				}
				return ips[x].IP.Less(ips[y].IP)
			})
		}
	}
	slices.SortFunc(out[:named], func(a, b UserRow) int { return strings.Compare(a.User, b.User) })
	slices.SortFunc(out[named:], func(a, b UserRow) int { return a.IPs[0].IP.Compare(b.IPs[0].IP) })
	return out
}

// addIP adds n connections from ip to the row that starts at slab[start].
func addIP(slab []IPCount, start int, ip netip.Addr, n int) []IPCount {
	for i := start; i < len(slab); i++ {
		if slab[i].IP == ip {
			slab[i].Count += n
			return slab
		}
	}
	return append(slab, IPCount{IP: ip, Count: n})
}

// protoSets caches, for each set of protocols (a bit per Protocols index),
// its names sorted alphabetically. Rows share these slices: read-only.
var protoSets = func() [][]string {
	sets := make([][]string, 1<<len(Protocols))
	for set := range sets {
		var names []string
		for i, p := range Protocols {
			if set&(1<<i) != 0 {
				names = append(names, p)
			}
		}
		sort.Strings(names)
		sets[set] = names
	}
	return sets
}()

// protoNames lists the protocols of a bit set (shared, read-only).
func protoNames(set uint16) []string { return protoSets[set] }

// protoIndex is p's index in Protocols, or -1.
func protoIndex(p string) int {
	for i, k := range Protocols {
		if k == p {
			return i
		}
	}
	return -1
}

// UserDetail is everything known about one user.
type UserDetail struct {
	User          string
	DomainEnabled bool
	Protocols     map[string]ProtocolDetail
	IPs           []IPRecord
}

// ProtocolDetail is one protocol's column values for a user.
type ProtocolDetail struct {
	Enabled     bool
	Connections int
	LastLogin   time.Time
	LastIP      netip.Addr
}

// User returns the detail of one user (known or not).
func (r *Registry) User(user string) UserDetail {
	user = NormalizeUser(user)
	d := UserDetail{User: user, DomainEnabled: r.DomainEnabled(user), Protocols: map[string]ProtocolDetail{}}
	live := map[string]int{}
	r.each(func(c *Conn) {
		if i := c.Info(); i.User == user {
			live[i.Protocol]++
		}
	})
	for _, p := range Protocols {
		t, ip := r.lastLogin(user, p)
		d.Protocols[p] = ProtocolDetail{Enabled: r.ProtocolEnabled(user, p), Connections: live[p], LastLogin: t, LastIP: ip}
	}
	d.IPs = r.UserIPs(user)
	return d
}

// DropUser drops a user's connections of one protocol ("" or "all": every
// protocol) and returns how many were dropped.
func (r *Registry) DropUser(user, protocol, reason string) int {
	user = NormalizeUser(user)
	f := Filter{Protocol: protocol, User: user}
	if user == "" {
		return 0
	}
	return r.dropWhere(f.match, reason)
}

// DropConn drops one connection by id.
func (r *Registry) DropConn(id uint64, reason string) bool {
	c := r.Get(id)
	return c != nil && c.Drop(reason)
}

func (r *Registry) dropWhere(match func(Info) bool, reason string) int {
	var victims []*Conn
	r.each(func(c *Conn) {
		if match(c.Info()) {
			victims = append(victims, c)
		}
	})
	n := 0
	for _, c := range victims {
		if c.Drop(reason) {
			n++
		}
	}
	return n
}
