package adminapi

import (
	"net/http"
	"net/netip"
	"slices"
	"sort"
	"strings"

	"github.com/mailgate/mailgate/accounting"
)

const (
	tabAll     = "all"
	tabMAPIEWS = "mapi+ews" // the page's merged MAPI/EWS tab
)

// selector is a parsed protocol selector: "all" (protos nil), one protocol
// key, or the mapi+ews merge.
type selector struct {
	name   string
	protos []string
}

func (s selector) all() bool { return s.protos == nil }

// parseSelector parses a protocol selector. An empty string means "all"
// when allowAll is set; "all" itself is refused when it is not.
func parseSelector(s string, allowAll bool) (selector, error) {
	v := strings.ToLower(strings.TrimSpace(s))
	switch {
	case v == "" && allowAll, v == tabAll && allowAll:
		return selector{name: tabAll}, nil
	case v == tabMAPIEWS, v == "mapi ews": // '+' in a query decodes to a space
		return selector{name: tabMAPIEWS, protos: []string{"mapi", "ews"}}, nil
	case accounting.ValidProtocol(v):
		return selector{name: v, protos: []string{v}}, nil
	}
	valid := strings.Join(accounting.Protocols, ", ") + ", " + tabMAPIEWS
	if allowAll {
		valid = tabAll + ", " + valid
	}
	return selector{}, apiErr(http.StatusBadRequest, CodeUnknownProtocol,
		"unknown protocol %s; want one of %s", quote(s), valid)
}

// connections lists the live connections of sel matching f, oldest first.
func connections(reg Registry, sel selector, f accounting.Filter) []accounting.Info {
	if sel.all() {
		f.Protocol = tabAll
		return reg.Connections(f)
	}
	var out []accounting.Info
	for _, p := range sel.protos {
		f.Protocol = p
		out = append(out, reg.Connections(f)...)
	}
	if len(sel.protos) > 1 {
		slices.SortFunc(out, func(a, b accounting.Info) int {
			switch {
			case a.ID < b.ID:
				return -1
			case a.ID > b.ID:
				return 1
			}
			return 0
		})
	}
	return out
}

// rows builds the rows of a tab. For mapi+ews it merges the two tabs' rows:
// a user's connections, IPs and protocols add up; the checkmark is set when
// every protocol of the tab (mapi and ews) is enabled for the user, so it
// matches what PUT .../protocols/mapi+ews toggles; last login is the latest
// of either protocol, live or not, read from the IP history.
func rows(reg Registry, sel selector) []accounting.UserRow {
	if len(sel.protos) <= 1 {
		return reg.Users(sel.name)
	}
	type acc struct {
		row    accounting.UserRow
		ips    map[netip.Addr]int
		protos map[string]bool
	}
	byKey := map[string]*acc{}
	for _, p := range sel.protos {
		for _, row := range reg.Users(p) {
			key := row.User
			if key == "" && len(row.IPs) > 0 {
				key = "\x00" + row.IPs[0].IP.String()
			}
			a := byKey[key]
			if a == nil {
				a = &acc{row: row, ips: map[netip.Addr]int{}, protos: map[string]bool{}}
				a.row.Connections = 0
				byKey[key] = a
			} else {
				a.row.DomainEnabled = a.row.DomainEnabled && row.DomainEnabled
				a.row.Duration = max(a.row.Duration, row.Duration)
				if row.LastLogin.After(a.row.LastLogin) {
					a.row.LastLogin, a.row.LastIP = row.LastLogin, row.LastIP
				}
			}
			a.row.Connections += row.Connections
			for _, c := range row.IPs {
				a.ips[c.IP] += c.Count
			}
			for _, q := range row.Protocols {
				a.protos[q] = true
			}
		}
	}
	out := make([]accounting.UserRow, 0, len(byKey))
	for _, a := range byKey {
		row := a.row
		row.IPs = make([]accounting.IPCount, 0, len(a.ips))
		for ip, n := range a.ips {
			row.IPs = append(row.IPs, accounting.IPCount{IP: ip, Count: n})
		}
		sort.Slice(row.IPs, func(x, y int) bool {
			if row.IPs[x].Count != row.IPs[y].Count {
				return row.IPs[x].Count > row.IPs[y].Count
			}
			return row.IPs[x].IP.Less(row.IPs[y].IP)
		})
		row.Protocols = row.Protocols[:0:0]
		for p := range a.protos {
			row.Protocols = append(row.Protocols, p)
		}
		sort.Strings(row.Protocols)
		if row.User != "" {
			row.ProtocolEnabled = true
			for _, p := range sel.protos {
				row.ProtocolEnabled = row.ProtocolEnabled && reg.ProtocolEnabled(row.User, p)
			}
			for _, rec := range reg.UserIPs(row.User) {
				if slices.Contains(sel.protos, rec.Protocol) && rec.LastSeen.After(row.LastLogin) {
					row.LastLogin, row.LastIP = rec.LastSeen, rec.IP
				}
			}
		}
		out = append(out, row)
	}
	// accounting's order: named rows by user, then unauthenticated rows by IP.
	sort.Slice(out, func(x, y int) bool {
		a, b := out[x], out[y]
		if (a.User == "") != (b.User == "") {
			return a.User != ""
		}
		if a.User != b.User {
			return a.User < b.User
		}
		return len(a.IPs) > 0 && len(b.IPs) > 0 && a.IPs[0].IP.Less(b.IPs[0].IP)
	})
	return out
}
