package accounting

import (
	"net/netip"
	"sort"
	"time"
)

// Filter selects live connections; empty fields match everything.
type Filter struct {
	Protocol string // a protocol key, "all" or ""
	User     string
	IP       netip.Addr
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
}

// Users builds the rows of a tab ("all" or a protocol key).
func (r *Registry) Users(protocol string) []UserRow {
	type acc struct {
		row    UserRow
		ips    map[netip.Addr]int
		protos map[string]bool
		oldest time.Time
	}
	rows := map[string]*acc{}
	now := r.opts.Now()
	f := Filter{Protocol: protocol}
	r.each(func(c *Conn) {
		i := c.Info()
		if !f.match(i) {
			return
		}
		key := i.User
		if key == "" {
			key = "\x00" + i.Client.Addr().String()
		}
		a := rows[key]
		if a == nil {
			a = &acc{row: UserRow{User: i.User}, ips: map[netip.Addr]int{}, protos: map[string]bool{}}
			rows[key] = a
		}
		a.row.Connections++
		a.ips[i.Client.Addr()]++
		a.protos[i.Protocol] = true
		if i.Protocol == "webmail" && (a.oldest.IsZero() || i.StartedAt.Before(a.oldest)) {
			a.oldest = i.StartedAt
		}
	})
	pol := r.policy.Load()
	out := make([]UserRow, 0, len(rows))
	for _, a := range rows {
		row := a.row
		for ip, n := range a.ips {
			row.IPs = append(row.IPs, IPCount{ip, n})
		}
		sort.Slice(row.IPs, func(x, y int) bool {
			if row.IPs[x].Count != row.IPs[y].Count {
				return row.IPs[x].Count > row.IPs[y].Count
			}
			return row.IPs[x].IP.Less(row.IPs[y].IP)
		})
		for p := range a.protos {
			row.Protocols = append(row.Protocols, p)
		}
		sort.Strings(row.Protocols)
		if !a.oldest.IsZero() {
			row.Duration = now.Sub(a.oldest)
		}
		row.ProtocolEnabled, row.DomainEnabled = true, true
		if row.User != "" {
			for p := range a.protos {
				if pol.disabledUser[row.User][p] {
					row.ProtocolEnabled = false
				}
			}
			row.DomainEnabled = !pol.disabledDomain[DomainOf(row.User)]
			row.LastLogin, row.LastIP = r.lastLogin(row.User, protocol)
		}
		out = append(out, row)
	}
	sort.Slice(out, func(x, y int) bool {
		if (out[x].User == "") != (out[y].User == "") {
			return out[x].User != ""
		}
		if out[x].User != out[y].User {
			return out[x].User < out[y].User
		}
		return out[x].IPs[0].IP.Less(out[y].IPs[0].IP)
	})
	return out
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
