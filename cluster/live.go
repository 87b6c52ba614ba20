package cluster

import (
	"context"
	"encoding/json"
	"net/netip"
	"sync"
	"time"
)

// The cluster-wide connection limits: each node keeps its own live counts
// per (protocol, user, IP) and per IP, publishes the ones that changed
// every flushEvery, and keeps the other nodes' counts as they published
// them. A limit check adds them to its own: no Redis round trip on the
// login path, at the price of a window of about flushEvery plus the bus
// latency in which two nodes may each admit the last allowed session (see
// docs/architecture.md §9 for the tolerance).

// liveKey is an authenticated (protocol, user, IP) count, or with protocol
// and user empty, every connection of an IP.
type liveKey struct {
	Protocol string     `json:"p,omitempty"`
	User     string     `json:"u,omitempty"`
	IP       netip.Addr `json:"ip"`
}

type liveEntry struct {
	liveKey
	N int `json:"n"`
}

// liveUpdate is one node's published counts: the changed ones, or all of
// them (Full).
type liveUpdate struct {
	Seq     uint64      `json:"seq"`
	Full    bool        `json:"full,omitempty"`
	Entries []liveEntry `json:"e"`
}

type userKey struct{ protocol, user string }

type remoteNode struct {
	seq     uint64
	entries map[liveKey]int
	perUser map[userKey]int
}

type liveBook struct {
	mu     sync.Mutex
	local  map[liveKey]int
	dirty  map[liveKey]struct{}
	seq    uint64
	remote map[string]*remoteNode
	fetch  map[string]bool // nodes whose full counts are being fetched
}

// startFetch reports whether a fetch of node's counts may start (none is
// running).
func (b *liveBook) startFetch(node string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.fetch[node] {
		return false
	}
	b.fetch[node] = true
	return true
}

func newLiveBook() *liveBook {
	return &liveBook{local: map[liveKey]int{}, dirty: map[liveKey]struct{}{}, remote: map[string]*remoteNode{}, fetch: map[string]bool{}}
}

// Live is accounting.Shared.
func (c *Cluster) Live(protocol, user string, ip netip.Addr, delta int) {
	b := c.live
	k := liveKey{protocol, user, ip}
	b.mu.Lock()
	if n := b.local[k] + delta; n > 0 {
		b.local[k] = n
	} else {
		delete(b.local, k)
	}
	b.dirty[k] = struct{}{}
	b.mu.Unlock()
}

// Remote is accounting.Shared.
func (c *Cluster) Remote(protocol, user string, ip netip.Addr) (perUser, perUserIP int) {
	b := c.live
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, rn := range b.remote {
		perUser += rn.perUser[userKey{protocol, user}]
		perUserIP += rn.entries[liveKey{protocol, user, ip}]
	}
	return perUser, perUserIP
}

// RemoteIP is accounting.Shared.
func (c *Cluster) RemoteIP(ip netip.Addr) int {
	b := c.live
	b.mu.Lock()
	defer b.mu.Unlock()
	n := 0
	for _, rn := range b.remote {
		n += rn.entries[liveKey{IP: ip}]
	}
	return n
}

// changed takes the counts changed since the last call.
func (b *liveBook) changed() *liveUpdate {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.dirty) == 0 {
		return nil
	}
	b.seq++
	u := &liveUpdate{Seq: b.seq, Entries: make([]liveEntry, 0, len(b.dirty))}
	for k := range b.dirty {
		u.Entries = append(u.Entries, liveEntry{k, b.local[k]})
	}
	clear(b.dirty)
	return u
}

// full is every count of this node, at the current sequence.
func (b *liveBook) full() *liveUpdate {
	b.mu.Lock()
	defer b.mu.Unlock()
	u := &liveUpdate{Seq: b.seq, Full: true, Entries: make([]liveEntry, 0, len(b.local))}
	for k, n := range b.local {
		u.Entries = append(u.Entries, liveEntry{k, n})
	}
	return u
}

// update applies a node's published counts; it reports whether updates
// were missed (a sequence gap, or a node first heard of mid-stream), in
// which case the caller fetches the node's full counts.
func (b *liveBook) update(node string, u *liveUpdate) (missed bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	rn := b.remote[node]
	if rn == nil || u.Full {
		if rn == nil && !u.Full && u.Seq != 1 {
			missed = true
		}
		rn = &remoteNode{entries: map[liveKey]int{}, perUser: map[userKey]int{}}
		b.remote[node] = rn
	} else if u.Seq != rn.seq+1 {
		missed = true
	}
	rn.seq = u.Seq
	for _, e := range u.Entries {
		old := rn.entries[e.liveKey]
		if e.N > 0 {
			rn.entries[e.liveKey] = e.N
		} else {
			delete(rn.entries, e.liveKey)
		}
		if e.User != "" {
			uk := userKey{e.Protocol, e.User}
			if n := rn.perUser[uk] + e.N - old; n > 0 {
				rn.perUser[uk] = n
			} else {
				delete(rn.perUser, uk)
			}
		}
	}
	return missed
}

// keepOnly forgets the counts of nodes no longer up.
func (b *liveBook) keepOnly(up map[string]bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for n := range b.remote {
		if !up[n] {
			delete(b.remote, n)
		}
	}
}

// publishLive sends the counts that changed.
func (c *Cluster) publishLive(ctx context.Context) {
	if u := c.live.changed(); u != nil {
		if err := c.publish(ctx, envelope{T: msgLive, Live: u}); err != nil {
			// The sequence moved on: the others will see the gap and ask.
			c.log.Debug("cluster: live counts not published", "err", err)
		}
	}
}

// fetchLive asks a node for all its counts after updates were missed.
func (c *Cluster) fetchLive(node string) {
	defer func() {
		c.live.mu.Lock()
		delete(c.live.fetch, node)
		c.live.mu.Unlock()
	}()
	ctx, cancel := context.WithTimeout(c.ctx, 3*time.Second)
	defer cancel()
	ans, err := c.ask(ctx, opLiveFull, nil, node, 2*time.Second)
	if err != nil {
		return
	}
	if r, ok := ans.Replies[node]; ok {
		var u liveUpdate
		if json.Unmarshal(r.Data, &u) == nil {
			u.Full = true
			c.live.update(node, &u)
		}
	}
}

func jsonMarshal(v any) ([]byte, error) { return json.Marshal(v) }
