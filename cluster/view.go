package cluster

import (
	"context"
	"encoding/json"
	"net/netip"
	"slices"
	"sort"
	"time"

	"github.com/mailgate/mailgate/accounting"
)

// ViewWait bounds how long a view waits for the other nodes' parts.
const ViewWait = 2 * time.Second

// Request ops answered by every node.
const (
	opSummary    = "summary"
	opConns      = "conns"
	opUsers      = "users"
	opUserLive   = "user_live"
	opDropUser   = "drop_user"
	opDropConn   = "drop_conn"
	opDropDevice = "drop_device"
	opLiveFull   = "live_full"
	opLogins     = "logins"
	opAudit      = "audit"
	opDevices    = "devices"
)

type dropArgs struct {
	User     string `json:"user,omitempty"`
	Protocol string `json:"protocol,omitempty"`
	ID       uint64 `json:"id,omitempty"`
	Device   string `json:"device,omitempty"`
	Reason   string `json:"reason"`
}

// serve answers a request from another node with this node's part.
func (c *Cluster) serve(op string, args json.RawMessage) Reply {
	r := Reply{Node: c.opts.Node}
	var data any
	switch op {
	case opLiveFull:
		data = c.live.full()
	case opAudit:
		var f accounting.AuditFilter
		json.Unmarshal(args, &f)
		a := c.auditLog.Load()
		if a == nil {
			data = []accounting.AuditEntry{}
			break
		}
		entries, err := a.Query(f)
		if err != nil {
			r.Err = err.Error()
			return r
		}
		data = entries
	default:
		return Answer(c.reg, c.opts.Node, op, args)
	}
	b, err := json.Marshal(data)
	if err != nil {
		r.Err = err.Error()
	}
	r.Data = b
	return r
}

// Answer is a process's part of a view or an action, from its registry,
// named name: what a cluster node answers on the bus and the old process
// of an upgrade answers its successor.
func Answer(reg *accounting.Registry, name, op string, args json.RawMessage) Reply {
	r := Reply{Node: name}
	var data any
	switch op {
	case opSummary:
		data = reg.Summary()
	case opConns:
		var f accounting.Filter
		json.Unmarshal(args, &f)
		r.Data = encodeInfos(reg.Connections(f))
		return r
	case opUsers:
		var p string
		json.Unmarshal(args, &p)
		r.Data = encodeRows(reg.Users(p))
		return r
	case opUserLive:
		var u string
		json.Unmarshal(args, &u)
		live := map[string]int{}
		for _, i := range reg.Connections(accounting.Filter{User: u}) {
			live[i.Protocol]++
		}
		data = live
	case opLogins:
		var u string
		json.Unmarshal(args, &u)
		data = reg.UserLogins(u)
	case opDropUser, opDropConn, opDropDevice:
		var a dropArgs
		if err := json.Unmarshal(args, &a); err != nil {
			r.Err = err.Error()
			return r
		}
		switch op {
		case opDropUser:
			r.Dropped = reg.DropUser(a.User, a.Protocol, a.Reason)
		case opDropConn:
			if reg.DropConn(a.ID, a.Reason) {
				r.Dropped = 1
			}
		case opDropDevice:
			r.Dropped = reg.DropDevice(a.User, a.Device, a.Reason)
		}
		return r
	case opDevices:
		var u string
		json.Unmarshal(args, &u)
		data = reg.Devices(u)
	default:
		r.Err = "unknown op " + op
		return r
	}
	b, err := json.Marshal(data)
	if err != nil {
		r.Err = err.Error()
	}
	r.Data = b
	return r
}

// View is the registry the admin API sees in cluster mode: reads and
// actions answer for every node, changes go through Redis. What it does
// not override is this node's (Stats, Lockouts, Blocks and the policy
// reads are the same on every node).
type View struct {
	*accounting.Registry
	p Peers
}

// Peers are the other processes a View answers for: a cluster's other
// nodes, through Redis, or the old process of an upgrade while it drains.
type Peers interface {
	// Name is this process's name in the view's rows.
	Name() string
	// Ask sends a request to the peers (to node only, when set) and waits
	// up to wait for their answers (Answer's, on their side).
	Ask(ctx context.Context, op string, args any, node string, wait time.Duration) (Answers, error)
	// Commit makes a policy change here and at every peer and says how
	// many sessions each dropped.
	Commit(ctx context.Context, ch accounting.Change) (Result, error)
}

// View returns the cluster-wide registry for the admin API.
func (c *Cluster) View() *View { return NewView(c.reg, c) }

// NewView is a registry that answers for reg and its peers.
func NewView(reg *accounting.Registry, p Peers) *View { return &View{Registry: reg, p: p} }

// Ask is Peers.Ask: the other live nodes, through the bus.
func (c *Cluster) Ask(ctx context.Context, op string, args any, node string, wait time.Duration) (Answers, error) {
	return c.ask(ctx, op, args, node, wait)
}

func (v *View) ctx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), ViewWait+time.Second)
}

// gather asks the other nodes (only node, when set) for their part of a
// view. When Redis is down the view is this node's alone.
func (v *View) gather(op string, args any, node string) map[string][]byte {
	out := map[string][]byte{}
	if node == v.p.Name() {
		return out
	}
	ctx, cancel := v.ctx()
	defer cancel()
	ans, err := v.p.Ask(ctx, op, args, node, ViewWait)
	if err != nil {
		return out
	}
	for n, r := range ans.Replies {
		if r.Err == "" {
			out[n] = r.Data
		}
	}
	return out
}

// Summary is the cluster's live connections per protocol.
func (v *View) Summary() map[string]int {
	sum := v.Registry.Summary()
	for _, raw := range v.gather(opSummary, nil, "") {
		var m map[string]int
		if json.Unmarshal(raw, &m) == nil {
			for p, n := range m {
				sum[p] += n
			}
		}
	}
	return sum
}

// Connections lists the cluster's live connections matching f (f.Node: one
// node's), each with its node, oldest first.
func (v *View) Connections(f accounting.Filter) []accounting.Info {
	self := v.p.Name()
	var out []accounting.Info
	if f.Node == "" || f.Node == self {
		out = v.Registry.Connections(f)
		for i := range out {
			out[i].Node = self
		}
	}
	for n, raw := range v.gather(opConns, f, f.Node) {
		if part, err := decodeInfos(raw); err == nil {
			for i := range part {
				part[i].Node = n
			}
			out = append(out, part...)
		}
	}
	sort.Slice(out, func(a, b int) bool {
		if !out[a].StartedAt.Equal(out[b].StartedAt) {
			return out[a].StartedAt.Before(out[b].StartedAt)
		}
		return out[a].ID < out[b].ID
	})
	return out
}

// Users is a tab's rows for the whole cluster: a user's connections on
// every node in one row, with the nodes that hold them.
func (v *View) Users(protocol string) []accounting.UserRow {
	self := v.p.Name()
	rows := v.Registry.Users(protocol)
	byKey := map[string]int{}
	key := func(r accounting.UserRow) string {
		if r.User == "" && len(r.IPs) > 0 {
			return "\x00" + r.IPs[0].IP.String()
		}
		return r.User
	}
	for i := range rows {
		rows[i].Nodes = []string{self}
		byKey[key(rows[i])] = i
	}
	for n, raw := range v.gather(opUsers, protocol, "") {
		part, err := decodeRows(raw)
		if err != nil {
			continue
		}
		for _, r := range part {
			r.Nodes = []string{n}
			i, ok := byKey[key(r)]
			if !ok {
				byKey[key(r)] = len(rows)
				rows = append(rows, r)
				continue
			}
			rows[i] = mergeRow(rows[i], r)
		}
	}
	for i := range rows {
		sort.Strings(rows[i].Nodes)
	}
	sort.SliceStable(rows, func(a, b int) bool {
		if rows[a].Connections != rows[b].Connections {
			return rows[a].Connections > rows[b].Connections
		}
		return key(rows[a]) < key(rows[b])
	})
	return rows
}

// mergeRow adds row b (another node's) to a.
func mergeRow(a, b accounting.UserRow) accounting.UserRow {
	a.Connections += b.Connections
	a.Nodes = append(a.Nodes, b.Nodes...)
	for _, p := range b.Protocols {
		if !slices.Contains(a.Protocols, p) {
			a.Protocols = append(a.Protocols, p)
		}
	}
	a.ProtocolEnabled = a.ProtocolEnabled && b.ProtocolEnabled
	a.DomainEnabled = a.DomainEnabled && b.DomainEnabled
	if b.Duration > a.Duration {
		a.Duration = b.Duration
	}
	if b.LastLogin.After(a.LastLogin) {
		a.LastLogin, a.LastIP = b.LastLogin, b.LastIP
	}
	ips := map[netip.Addr]int{}
	for _, x := range a.IPs {
		ips[x.IP] += x.Count
	}
	for _, x := range b.IPs {
		ips[x.IP] += x.Count
	}
	a.IPs = a.IPs[:0:0]
	for ip, n := range ips {
		a.IPs = append(a.IPs, accounting.IPCount{IP: ip, Count: n})
	}
	sort.Slice(a.IPs, func(i, j int) bool {
		if a.IPs[i].Count != a.IPs[j].Count {
			return a.IPs[i].Count > a.IPs[j].Count
		}
		return a.IPs[i].IP.Less(a.IPs[j].IP)
	})
	return a
}

// User is one user's detail with the live counts of every node.
func (v *View) User(user string) accounting.UserDetail {
	d := v.Registry.User(user)
	for _, raw := range v.gather(opUserLive, accounting.NormalizeUser(user), "") {
		var m map[string]int
		if json.Unmarshal(raw, &m) == nil {
			for p, n := range m {
				pd := d.Protocols[p]
				pd.Connections += n
				d.Protocols[p] = pd
			}
		}
	}
	return d
}

// UserLogins merges the login histories every node keeps, newest first.
func (v *View) UserLogins(user string) []accounting.LoginAttempt {
	out := v.Registry.UserLogins(user)
	for _, raw := range v.gather(opLogins, accounting.NormalizeUser(user), "") {
		var part []accounting.LoginAttempt
		if json.Unmarshal(raw, &part) == nil {
			out = append(out, part...)
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Time.After(out[j].Time) })
	return out
}

// act runs a drop here and on every other node.
func (v *View) act(op string, a dropArgs, local int) (Result, error) {
	ctx, cancel := v.ctx()
	defer cancel()
	res := Result{ByNode: map[string]int{v.p.Name(): local}, Dropped: local}
	ans, err := v.p.Ask(ctx, op, a, "", ChangeWait)
	if err != nil {
		return res, err
	}
	other := resultOf(ans)
	for n, d := range other.ByNode {
		res.ByNode[n] = d
	}
	res.Dropped += other.Dropped
	res.Missing = other.Missing
	return res, nil
}

// DropUserNodes drops a user's sessions (of one protocol, or all) on every
// node.
func (v *View) DropUserNodes(user, protocol, reason string) (Result, error) {
	return v.act(opDropUser, dropArgs{User: user, Protocol: protocol, Reason: reason}, v.Registry.DropUser(user, protocol, reason))
}

// DropUser is DropUserNodes's total.
func (v *View) DropUser(user, protocol, reason string) int {
	res, _ := v.DropUserNodes(user, protocol, reason)
	return res.Dropped
}

// DropConnNodes drops one connection wherever it lives.
func (v *View) DropConnNodes(id uint64, reason string) (Result, error) {
	if v.Registry.DropConn(id, reason) {
		return Result{Dropped: 1, ByNode: map[string]int{v.p.Name(): 1}}, nil
	}
	return v.act(opDropConn, dropArgs{ID: id, Reason: reason}, 0)
}

// DropConn is DropConnNodes's outcome.
func (v *View) DropConn(id uint64, reason string) bool {
	res, _ := v.DropConnNodes(id, reason)
	return res.Dropped > 0
}

// DropDevice drops one device's requests on every node.
func (v *View) DropDevice(user, id, reason string) int {
	res, _ := v.act(opDropDevice, dropArgs{User: user, Device: id, Reason: reason}, v.Registry.DropDevice(user, id, reason))
	return res.Dropped
}

// Resync drops the user's sessions on the other nodes, then resyncs here
// (this node's drop, its counters and the hook, run once).
func (v *View) Resync(ctx context.Context, user, protocol string) ([]accounting.ResyncStep, error) {
	if !accounting.ValidHookUser(accounting.NormalizeUser(user)) {
		return nil, accounting.ErrBadUser
	}
	res, _ := v.act(opDropUser, dropArgs{User: user, Protocol: protocol, Reason: "resync"}, 0)
	steps, err := v.Registry.Resync(ctx, user, protocol)
	for i := range steps {
		if steps[i].Step == "drop" && res.Dropped > 0 {
			steps[i].Count += res.Dropped
			steps[i].Detail += " here, " + itoa(res.Dropped) + " on the other nodes"
		}
	}
	return steps, err
}

// commit makes one change through Redis.
func (v *View) commit(ch accounting.Change) (Result, error) {
	ctx, cancel := v.ctx()
	defer cancel()
	return v.p.Commit(ctx, ch)
}

// SetProtocolEnabledNodes changes a user's protocol on every node.
func (v *View) SetProtocolEnabledNodes(user, protocol string, enabled, drop bool) (Result, error) {
	return v.commit(accounting.Change{Kind: accounting.ChangeProtocol, User: accounting.NormalizeUser(user),
		Protocol: protocol, Enabled: enabled, Drop: drop})
}

// SetProtocolEnabled is the admin API's form.
func (v *View) SetProtocolEnabled(user, protocol string, enabled, drop bool) (int, error) {
	res, err := v.SetProtocolEnabledNodes(user, protocol, enabled, drop)
	return res.Dropped, err
}

// SetDomainEnabledNodes changes a domain on every node.
func (v *View) SetDomainEnabledNodes(domain string, enabled, drop bool) (Result, error) {
	return v.commit(accounting.Change{Kind: accounting.ChangeDomain, Domain: accounting.NormalizeUser(domain),
		Enabled: enabled, Drop: drop})
}

// SetDomainEnabled is the admin API's form.
func (v *View) SetDomainEnabled(domain string, enabled, drop bool) (int, error) {
	res, err := v.SetDomainEnabledNodes(domain, enabled, drop)
	return res.Dropped, err
}

// AddBlock blocks a network on every node.
func (v *View) AddBlock(prefix netip.Prefix, reason string, expires time.Time) (int, error) {
	b := accounting.Block{Prefix: prefix.Masked(), Reason: reason, Created: time.Now(), Expires: expires}
	res, err := v.commit(accounting.Change{Kind: accounting.ChangeBlock, Block: &b})
	return res.Dropped, err
}

// RemoveBlock lifts a block on every node.
func (v *View) RemoveBlock(prefix netip.Prefix) (bool, error) {
	prefix = prefix.Masked()
	found := false
	for _, b := range v.Registry.Blocks() {
		found = found || b.Prefix == prefix
	}
	if !found {
		return false, nil
	}
	_, err := v.commit(accounting.Change{Kind: accounting.ChangeUnblock, Block: &accounting.Block{Prefix: prefix}})
	return err == nil, err
}

// BlockDevice blocks a device on every node.
func (v *View) BlockDevice(user, id, reason, by string) (int, error) {
	u := accounting.NormalizeUser(user)
	if u == "" || accounting.DeviceKey(id) == "" {
		return 0, accounting.ErrBadDevice
	}
	b := accounting.DeviceBlock{ID: id, Reason: reason, By: by, Created: time.Now()}
	res, err := v.commit(accounting.Change{Kind: accounting.ChangeDeviceBlock, User: u, Device: &b})
	return res.Dropped, err
}

// AllowDevice lifts a device block on every node.
func (v *View) AllowDevice(user, id string) (bool, error) {
	u := accounting.NormalizeUser(user)
	if u == "" || accounting.DeviceKey(id) == "" {
		return false, accounting.ErrBadDevice
	}
	if !v.Registry.DeviceBlocked(u, id) {
		return false, nil
	}
	_, err := v.commit(accounting.Change{Kind: accounting.ChangeDeviceAllow, User: u, Device: &accounting.DeviceBlock{ID: id}})
	return err == nil, err
}

// ClearLockout lifts a lockout on every node; false when there was none or
// Redis is unreachable.
func (v *View) ClearLockout(kind, key string) bool {
	if kind != "ip" && kind != "user" {
		return false
	}
	if kind == "user" {
		key = accounting.NormalizeUser(key)
	} else if ip, err := netip.ParseAddr(key); err == nil {
		key = ip.Unmap().String()
	} else {
		return false
	}
	known := false
	for _, l := range v.Registry.Lockouts() {
		known = known || (l.Kind == kind && l.Key == key)
	}
	_, err := v.commit(accounting.Change{Kind: accounting.ChangeLockoutClear, Lock: &accounting.Lockout{Kind: kind, Key: key}})
	// A failure window without a lockout is cleared too, but there was
	// nothing to say about it.
	return err == nil && known
}

func itoa(n int) string {
	b, _ := json.Marshal(n)
	return string(b)
}
