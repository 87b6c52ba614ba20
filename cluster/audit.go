package cluster

import (
	"encoding/json"
	"sort"
	"time"

	"github.com/mailgate/mailgate/accounting"
)

// Audit is the audit trail of a cluster node: each node records the
// changes made through it in its own state file (stamped with its name),
// and a query merges every node's entries, newest first. A node that is
// down does not answer: its entries come back with it.
type Audit struct {
	c     *Cluster
	local *accounting.AuditLog
}

// Audit returns the cluster-wide trail over this node's local one.
func (c *Cluster) Audit(local *accounting.AuditLog) *Audit {
	c.auditLog.Store(local)
	return &Audit{c: c, local: local}
}

// Record stamps the entries with this node's name and records them here.
func (a *Audit) Record(entries ...accounting.AuditEntry) ([]accounting.AuditEntry, error) {
	for i := range entries {
		entries[i].Node = a.c.opts.Node
	}
	return a.local.Record(entries...)
}

// Query merges every live node's entries matching f.
func (a *Audit) Query(f accounting.AuditFilter) ([]accounting.AuditEntry, error) {
	out, err := a.local.Query(f)
	if err != nil {
		return nil, err
	}
	for i := range out {
		if out[i].Node == "" {
			out[i].Node = a.c.opts.Node
		}
	}
	v := a.c.View()
	for n, raw := range v.gather(opAudit, f, "") {
		var part []accounting.AuditEntry
		if json.Unmarshal(raw, &part) == nil {
			for i := range part {
				if part[i].Node == "" {
					part[i].Node = n
				}
			}
			out = append(out, part...)
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Time.After(out[j].Time) })
	limit := f.Limit
	if limit <= 0 {
		limit = accounting.DefaultAuditKeep
	}
	if len(out) > limit {
		out = out[:limit]
	}
	return out, nil
}

// Devices merges the ActiveSync devices every node saw for the user: the
// newest sighting wins, live requests add up.
func (v *View) Devices(user string) []accounting.DeviceInfo {
	all := v.Registry.Devices(user)
	idx := map[string]int{}
	for i, d := range all {
		idx[accounting.DeviceKey(d.ID)] = i
	}
	for _, raw := range v.gather(opDevices, accounting.NormalizeUser(user), "") {
		var part []accounting.DeviceInfo
		if json.Unmarshal(raw, &part) != nil {
			continue
		}
		for _, d := range part {
			k := accounting.DeviceKey(d.ID)
			i, ok := idx[k]
			if !ok {
				idx[k] = len(all)
				all = append(all, d)
				continue
			}
			cur := all[i]
			live := cur.Live + d.Live
			first := earliest(cur.FirstSeen, d.FirstSeen)
			if d.LastSeen.After(cur.LastSeen) {
				blocked := cur.Blocked
				cur = d
				if cur.Blocked == nil {
					cur.Blocked = blocked
				}
			}
			if d.LastRefused.After(cur.LastRefused) {
				cur.LastRefused = d.LastRefused
			}
			cur.Live, cur.FirstSeen = live, first
			all[i] = cur
		}
	}
	sort.SliceStable(all, func(i, j int) bool { return all[i].LastSeen.After(all[j].LastSeen) })
	return all
}

func earliest(a, b time.Time) time.Time {
	switch {
	case a.IsZero():
		return b
	case b.IsZero() || a.Before(b):
		return a
	}
	return b
}
