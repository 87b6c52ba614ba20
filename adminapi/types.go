package adminapi

import (
	"net/netip"
	"time"

	"github.com/mailgate/mailgate/accounting"
)

// The wire types. They are exported so that clients in this module (mailgate
// ctl, tests) decode exactly what the server encodes.

// Connection is one live connection (GET /api/v1/connections).
type Connection struct {
	ID              uint64     `json:"id"`
	Protocol        string     `json:"protocol"`
	Listener        string     `json:"listener"`
	User            string     `json:"user"` // "" until authenticated
	ClientIP        netip.Addr `json:"client_ip"`
	ClientPort      uint16     `json:"client_port"`
	State           string     `json:"state"` // preauth, authenticated
	TLS             bool       `json:"tls"`
	Mechanism       string     `json:"mechanism"`
	StartedAt       time.Time  `json:"started_at"`
	AuthenticatedAt *time.Time `json:"authenticated_at"` // null until authenticated
	DeviceID        string     `json:"device_id"`        // an ActiveSync request's device, or ""
	Node            string     `json:"node"`             // the cluster node holding it ("" for a single node)
}

// ConnectionList is the body of GET /api/v1/connections.
type ConnectionList struct {
	Connections []Connection `json:"connections"`
}

// IPCount is one client IP of a row and its live connection count.
type IPCount struct {
	IP    netip.Addr `json:"ip"`
	Count int        `json:"count"`
}

// UserRow is one row of a tab of the User Connections page.
type UserRow struct {
	User            string      `json:"user"`      // "" for a row of unauthenticated connections
	Protocols       []string    `json:"protocols"` // protocols the row has live connections in
	ProtocolEnabled bool        `json:"protocol_enabled"`
	DomainEnabled   bool        `json:"domain_enabled"`
	Connections     int         `json:"connections"`
	IPConnections   []IPCount   `json:"ip_connections"`
	DurationSeconds int64       `json:"duration_seconds"` // webmail: the longest open websocket
	LastLogin       *time.Time  `json:"last_login"`
	LastIP          *netip.Addr `json:"last_authenticated_ip"`
	Nodes           []string    `json:"nodes,omitempty"` // a cluster's nodes holding the row's connections
}

// UserList is the body of GET /api/v1/users.
type UserList struct {
	Protocol string    `json:"protocol"` // the selector, normalised: "all", a key, "mapi+ews"
	Users    []UserRow `json:"users"`
}

// ProtocolDetail is one protocol's columns for a user.
type ProtocolDetail struct {
	Enabled     bool        `json:"enabled"`
	Connections int         `json:"connections"`
	LastLogin   *time.Time  `json:"last_login"`
	LastIP      *netip.Addr `json:"last_authenticated_ip"`
}

// UserDetail is the body of GET /api/v1/users/{user}.
type UserDetail struct {
	User          string                    `json:"user"`
	Domain        string                    `json:"domain"`
	DomainEnabled bool                      `json:"domain_enabled"`
	Connections   int                       `json:"connections"`
	Protocols     map[string]ProtocolDetail `json:"protocols"` // every protocol key
	IPs           []IPRecord                `json:"ips"`
}

// IPRecord is one entry of a user's authenticated-IP history.
type IPRecord struct {
	IP        netip.Addr `json:"ip"`
	Protocol  string     `json:"protocol"`
	FirstSeen time.Time  `json:"first_seen"`
	LastSeen  time.Time  `json:"last_seen"`
	Count     int        `json:"count"`
}

// IPList is the body of GET /api/v1/users/{user}/ips, most recent first.
type IPList struct {
	User string     `json:"user"`
	IPs  []IPRecord `json:"ips"`
}

// LoginAttemptJSON is one entry of a user's login history: Count attempts
// alike but for their time, from First to Time.
type LoginAttemptJSON struct {
	Time      time.Time  `json:"time"`
	First     time.Time  `json:"first"`
	Count     int        `json:"count"`
	Protocol  string     `json:"protocol"`
	IP        netip.Addr `json:"ip"`
	Mechanism string     `json:"mechanism"`
	// Result: ok (the backend accepted the credential), failed (it refused
	// it: a wrong password), gated (mailgate refused it first, see Reason),
	// temporary (the backend was unavailable).
	Result string `json:"result"`
	// Reason of a gated attempt: disabled, limit, lockout or blocked.
	Reason string `json:"reason"`
}

// LoginList is the body of GET /api/v1/users/{user}/logins, newest first.
type LoginList struct {
	User   string             `json:"user"`
	Logins []LoginAttemptJSON `json:"logins"`
}

// DropResult is the body of the drop routes.
type DropResult struct {
	Dropped int `json:"dropped"`
	// In a cluster: how many on each node that answered, and the live
	// nodes that did not answer within a second.
	Nodes   map[string]int `json:"nodes,omitempty"`
	Missing []string       `json:"missing_nodes,omitempty"`
}

// SetEnabledRequest is the body of the protocol and domain PUTs. Enabled is
// required; Drop defaults to true (disabling drops the live connections).
type SetEnabledRequest struct {
	Enabled *bool  `json:"enabled"`
	Drop    *bool  `json:"drop,omitempty"`
	Reason  string `json:"reason,omitempty"` // for the audit trail
}

// ProtocolResult is the body of PUT /api/v1/users/{user}/protocols/{protocol}.
type ProtocolResult struct {
	User     string `json:"user"`
	Protocol string `json:"protocol"`
	Enabled  bool   `json:"enabled"` // the state after the change
	Dropped  int    `json:"dropped"`
}

// DomainResult is the body of the domain routes.
type DomainResult struct {
	Domain  string `json:"domain"`
	Enabled bool   `json:"enabled"` // the state after the change
	Dropped int    `json:"dropped"`
}

// wireTime is t in UTC at second precision; nil when t is zero.
func wireTime(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	u := t.UTC().Truncate(time.Second)
	return &u
}

func mustTime(t time.Time) time.Time {
	if p := wireTime(t); p != nil {
		return *p
	}
	return time.Time{}
}

// wireIP is nil when ip is the zero Addr.
func wireIP(ip netip.Addr) *netip.Addr {
	if !ip.IsValid() {
		return nil
	}
	return &ip
}

func toConnection(i accounting.Info) Connection {
	return Connection{
		ID: i.ID, Protocol: i.Protocol, Listener: i.Listener, User: i.User,
		ClientIP: i.Client.Addr(), ClientPort: i.Client.Port(),
		State: i.State, TLS: i.TLS, Mechanism: i.Mechanism,
		StartedAt: mustTime(i.StartedAt), AuthenticatedAt: wireTime(i.AuthenticatedAt), DeviceID: i.Device,
		Node: i.Node,
	}
}

func toUserRow(r accounting.UserRow) UserRow {
	out := UserRow{
		User: r.User, Protocols: r.Protocols, ProtocolEnabled: r.ProtocolEnabled,
		DomainEnabled: r.DomainEnabled, Connections: r.Connections,
		IPConnections:   make([]IPCount, 0, len(r.IPs)),
		DurationSeconds: int64(r.Duration / time.Second),
		LastLogin:       wireTime(r.LastLogin), LastIP: wireIP(r.LastIP), Nodes: r.Nodes,
	}
	if out.Protocols == nil {
		out.Protocols = []string{}
	}
	for _, c := range r.IPs {
		out.IPConnections = append(out.IPConnections, IPCount{IP: c.IP, Count: c.Count})
	}
	return out
}

func toIPRecords(recs []accounting.IPRecord) []IPRecord {
	out := make([]IPRecord, 0, len(recs))
	for _, r := range recs {
		out = append(out, IPRecord{IP: r.IP, Protocol: r.Protocol,
			FirstSeen: mustTime(r.FirstSeen), LastSeen: mustTime(r.LastSeen), Count: r.Count})
	}
	return out
}

func toUserDetail(d accounting.UserDetail) UserDetail {
	out := UserDetail{User: d.User, Domain: accounting.DomainOf(d.User), DomainEnabled: d.DomainEnabled,
		Protocols: make(map[string]ProtocolDetail, len(accounting.Protocols)), IPs: toIPRecords(d.IPs)}
	for _, p := range accounting.Protocols {
		pd, ok := d.Protocols[p]
		if !ok { // nothing known about it: enabled, never used
			pd.Enabled = true
		}
		out.Protocols[p] = ProtocolDetail{Enabled: pd.Enabled, Connections: pd.Connections,
			LastLogin: wireTime(pd.LastLogin), LastIP: wireIP(pd.LastIP)}
		out.Connections += pd.Connections
	}
	return out
}
