// Package cluster makes several mailgate nodes act as one through Redis
// (or Valkey): one policy, one brute-force count, one history, one live
// view and actions that reach every node.
//
// What lives where:
//
//   - Redis holds the truth that must survive a node: the policy (disabled
//     protocols and domains, blocks, device blocks), lockouts and the
//     failure windows behind them, every user's last logins and IP
//     history, and the nodes' heartbeats. Every key starts with the
//     configured prefix and carries the hash tag {c}, so that a Redis
//     Cluster keeps them in one slot (the scripts touch several keys).
//   - Each node keeps a full copy of the policy in its accounting.Registry,
//     so the login path never waits on Redis. Changes reach the copies on
//     one pub/sub channel (the bus), in the order Redis committed them; a
//     node that (re)subscribes reloads the whole policy first.
//   - Live sessions stay on the node that holds them. A view or an action
//     is a request on the bus that every live node answers into a reply
//     list; the asking node merges the answers (view.go).
//
// An administrator's change is written to Redis and published in one
// MULTI, then the API waits (up to one second) for every live node to
// confirm it applied the change and to say how many sessions it dropped.
package cluster

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/mailgate/mailgate/accounting"
)

// Defaults.
const (
	DefaultPrefix    = "mailgate:"
	DefaultHeartbeat = 2 * time.Second
	DefaultNodeTTL   = 10 * time.Second
	// OnDownLastKnown keeps serving logins with the last policy known when
	// Redis is unreachable; OnDownRefuse refuses them with a temporary error.
	OnDownLastKnown = "last-known"
	OnDownRefuse    = "refuse"
)

// ErrUnavailable is returned for a change or a view while Redis is
// unreachable; the API answers 503.
var ErrUnavailable = accounting.ErrUnavailable

// Redis says how to reach Redis: one server, a Sentinel group (MasterName
// set) or a Redis Cluster (several addresses).
type Redis struct {
	Addresses  []string
	MasterName string
	Username   string
	// Password is the password itself (read from a file by the caller).
	Password string
	DB       int
	TLS      *tls.Config // nil: plain TCP
}

// Options configure a node.
type Options struct {
	Redis Redis
	// Prefix starts every key and channel (default "mailgate:").
	Prefix string
	// Node is this node's name, unique in the cluster.
	Node string
	// Admin is this node's admin API address, shown in the node list.
	Admin   string
	Version string
	// Heartbeat is how often the node says it lives (default 2s); NodeTTL
	// is how long after its last heartbeat a node is gone (default 10s).
	Heartbeat, NodeTTL time.Duration
	// OnDown is OnDownLastKnown (default) or OnDownRefuse.
	OnDown string
	// Registry is this node's registry. Required.
	Registry *accounting.Registry
	// BruteForce returns the lockout settings now (they reload).
	BruteForce func() accounting.BruteForce
	// HistoryPerUser bounds each user's IP history in Redis (default 100).
	HistoryPerUser int
	// JoinTimeout is how long Join waits for a name still held by a node
	// that stopped without leaving (default NodeTTL plus a heartbeat).
	JoinTimeout time.Duration
	Logger      *slog.Logger
}

// Cluster is this node's membership of a cluster.
type Cluster struct {
	opts    Options
	rdb     redis.UniversalClient
	log     *slog.Logger
	reg     *accounting.Registry
	k       keys
	started time.Time

	up       atomic.Bool // Redis answered the last heartbeat
	degraded atomic.Bool // up, but the bus is not subscribed yet
	peers    atomic.Pointer[[]NodeInfo]
	stats    stats

	live   *liveBook
	events chan event // logins, failures, successes to send

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	applyMu sync.Mutex // the bus applies changes one at a time
	epoch   string     // the cluster data's epoch last seen (policy.go)

	auditLog atomic.Pointer[accounting.AuditLog] // this node's audit trail (Audit)
}

// NodeInfo is one node as the node list shows it.
type NodeInfo struct {
	Name      string    `json:"name"`
	Admin     string    `json:"admin"`
	Version   string    `json:"version"`
	PID       int       `json:"pid"`
	Started   time.Time `json:"started"`
	Heartbeat time.Time `json:"last_heartbeat"`
	Conns     int       `json:"live_connections"`
	State     string    `json:"state"` // up, gone
	Degraded  bool      `json:"degraded"`
}

// keys names the Redis keys and the channel under a prefix.
type keys struct{ p string }

func (k keys) key(parts ...string) string { return k.p + "{c}:" + strings.Join(parts, ":") }
func (k keys) bus() string                { return k.p + "{c}:bus" }
func (k keys) policy() string             { return k.key("policy") }
func (k keys) lockouts() string           { return k.key("lockouts") }
func (k keys) nodes() string              { return k.key("nodes") }
func (k keys) node(n string) string       { return k.key("node", n) }
func (k keys) idseq() string              { return k.key("idseq") }
func (k keys) users() string              { return k.key("users") }
func (k keys) last(u string) string       { return k.key("last", u) }
func (k keys) hist(u string) string       { return k.key("hist", u) }
func (k keys) reply(id string) string     { return k.key("reply", id) }
func (k keys) fails(kind, key string) string {
	return k.key("fail", kind, key)
}
func (k keys) strike(kind, key string) string { return k.key("strike", kind, key) }

// NewClient returns the go-redis client for r (the universal client picks
// a single server, a Sentinel failover client or a cluster client).
func NewClient(r Redis) redis.UniversalClient {
	return redis.NewUniversalClient(&redis.UniversalOptions{
		Addrs: r.Addresses, MasterName: r.MasterName, Username: r.Username, Password: r.Password,
		DB: r.DB, TLSConfig: r.TLS,
		DialTimeout: 2 * time.Second, ReadTimeout: 2 * time.Second, WriteTimeout: 2 * time.Second,
		// A view's answer may be a few megabytes: give BLPOP room.
		PoolSize: 32, MaxRetries: 1,
	})
}

func (o *Options) defaults() {
	if o.Prefix == "" {
		o.Prefix = DefaultPrefix
	}
	if o.Heartbeat <= 0 {
		o.Heartbeat = DefaultHeartbeat
	}
	if o.NodeTTL <= 0 {
		o.NodeTTL = DefaultNodeTTL
	}
	if o.OnDown == "" {
		o.OnDown = OnDownLastKnown
	}
	if o.HistoryPerUser <= 0 {
		o.HistoryPerUser = accounting.DefaultHistoryPerUser
	}
	if o.JoinTimeout <= 0 {
		o.JoinTimeout = o.NodeTTL + o.Heartbeat
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.BruteForce == nil {
		o.BruteForce = func() accounting.BruteForce { return accounting.DefaultBruteForce }
	}
}

// Join connects to Redis, claims the node's name, loads the cluster's
// policy and history into the registry, subscribes to the bus and starts
// the heartbeat. The registry must not hold connections yet: Join gives it
// its connection id range and its Shared hook.
func Join(ctx context.Context, opts Options) (*Cluster, error) {
	opts.defaults()
	if opts.Registry == nil || opts.Node == "" {
		return nil, errors.New("cluster: a registry and a node name are required")
	}
	c := &Cluster{opts: opts, rdb: NewClient(opts.Redis), log: opts.Logger.With("cluster", opts.Node),
		reg: opts.Registry, k: keys{opts.Prefix}, started: time.Now(), live: newLiveBook(),
		events: make(chan event, 8192)}
	if err := c.rdb.Ping(ctx).Err(); err != nil {
		c.rdb.Close()
		return nil, fmt.Errorf("cluster: redis %s: %w", strings.Join(opts.Redis.Addresses, ","), err)
	}
	if err := c.claim(ctx); err != nil {
		c.rdb.Close()
		return nil, err
	}
	seq, err := c.rdb.Incr(ctx, c.k.idseq()).Result()
	if err != nil {
		c.rdb.Close()
		return nil, fmt.Errorf("cluster: connection id range: %w", err)
	}
	// 2^40 ids per node start (a trillion connections); ids stay exact in
	// JSON numbers up to 2^53, so 8192 node starts before they do not.
	c.reg.SetIDBase(uint64(seq%8192) << 40)
	c.up.Store(true)
	c.ctx, c.cancel = context.WithCancel(context.Background())
	ps := c.rdb.Subscribe(ctx, c.k.bus())
	if _, err := ps.Receive(ctx); err != nil { // the subscription confirmation
		ps.Close()
		c.leave()
		c.rdb.Close()
		return nil, fmt.Errorf("cluster: subscribe: %w", err)
	}
	if err := c.reload(ctx); err != nil {
		ps.Close()
		c.leave()
		c.rdb.Close()
		return nil, err
	}
	if err := c.loadHistory(ctx); err != nil {
		c.log.Warn("cluster: history not loaded", "err", err)
	}
	c.refreshPeers(ctx)
	c.reg.SetShared(c)
	c.wg.Add(3)
	go c.busLoop(ps)
	go c.heartbeatLoop()
	go c.eventLoop()
	c.log.Info("cluster: joined", "redis", strings.Join(opts.Redis.Addresses, ","), "peers", len(c.Peers())-1)
	return c, nil
}

// claim takes the node's name: SET NX of its heartbeat key. A name held by
// a node that stopped without leaving frees itself within NodeTTL, so
// claim retries that long before it gives up.
func (c *Cluster) claim(ctx context.Context) error {
	deadline := time.Now().Add(c.opts.JoinTimeout)
	for {
		ok, err := c.rdb.SetNX(ctx, c.k.node(c.opts.Node), c.nodeJSON(), c.opts.NodeTTL).Result()
		if err != nil {
			return fmt.Errorf("cluster: claim node name: %w", err)
		}
		if ok {
			return c.rdb.HSet(ctx, c.k.nodes(), c.opts.Node, c.nodeJSON()).Err()
		}
		if time.Now().After(deadline) {
			var other NodeInfo
			raw, _ := c.rdb.Get(ctx, c.k.node(c.opts.Node)).Result()
			json.Unmarshal([]byte(raw), &other)
			return fmt.Errorf("cluster: node name %q is already used by a live node (admin %s, pid %d, started %s): "+
				"give this node another `node:` name", c.opts.Node, other.Admin, other.PID, other.Started.Format(time.RFC3339))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(c.opts.Heartbeat / 2):
		}
	}
}

func (c *Cluster) nodeJSON() string {
	n := NodeInfo{Name: c.opts.Node, Admin: c.opts.Admin, Version: c.opts.Version, PID: os.Getpid(),
		Started: c.started.UTC(), Heartbeat: time.Now().UTC(), Conns: c.reg.Summary()["all"], State: "up",
		Degraded: c.degraded.Load()}
	b, _ := json.Marshal(n)
	return string(b)
}

// heartbeatLoop refreshes the node's key, watches Redis and the peers.
func (c *Cluster) heartbeatLoop() {
	defer c.wg.Done()
	t := time.NewTicker(c.opts.Heartbeat)
	defer t.Stop()
	for {
		select {
		case <-c.ctx.Done():
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(c.ctx, c.opts.Heartbeat)
		err := c.beat(ctx)
		if err == nil {
			c.refreshPeers(ctx)
		}
		cancel()
		was := c.up.Swap(err == nil)
		switch {
		case err != nil && was:
			c.log.Error("cluster: redis unreachable; live sessions go on, logins use the last known policy",
				"on_redis_down", c.opts.OnDown, "err", err)
		case err == nil && !was:
			c.log.Info("cluster: redis reachable again")
		}
	}
}

// beat writes the heartbeat. After an outage long enough for the key to
// expire the node takes its name back.
func (c *Cluster) beat(ctx context.Context) error {
	v := c.nodeJSON()
	_, err := c.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.Set(ctx, c.k.node(c.opts.Node), v, c.opts.NodeTTL)
		p.HSet(ctx, c.k.nodes(), c.opts.Node, v)
		return nil
	})
	return err
}

// refreshPeers reads the node list: a node whose heartbeat key expired is
// gone, and what it held no longer counts. Gone nodes are forgotten after
// an hour.
func (c *Cluster) refreshPeers(ctx context.Context) {
	all, err := c.rdb.HGetAll(ctx, c.k.nodes()).Result()
	if err != nil {
		return
	}
	names := make([]string, 0, len(all))
	for n := range all {
		names = append(names, n)
	}
	sort.Strings(names)
	ks := make([]string, len(names))
	for i, n := range names {
		ks[i] = c.k.node(n)
	}
	var alive []any
	if len(ks) > 0 {
		if alive, err = c.rdb.MGet(ctx, ks...).Result(); err != nil {
			return
		}
	}
	out := make([]NodeInfo, 0, len(names))
	for i, n := range names {
		var ni NodeInfo
		raw := all[n]
		if s, ok := alive[i].(string); ok {
			raw = s
		}
		if json.Unmarshal([]byte(raw), &ni) != nil {
			continue
		}
		ni.Name = n
		if alive[i] == nil {
			ni.State = "gone"
			if time.Since(ni.Heartbeat) > time.Hour {
				c.rdb.HDel(ctx, c.k.nodes(), n)
				continue
			}
		}
		out = append(out, ni)
	}
	c.peers.Store(&out)
	c.live.keepOnly(upNames(out))
}

func upNames(ns []NodeInfo) map[string]bool {
	m := map[string]bool{}
	for _, n := range ns {
		if n.State == "up" {
			m[n.Name] = true
		}
	}
	return m
}

// Peers returns the nodes known, this one included, by name.
func (c *Cluster) Peers() []NodeInfo {
	if p := c.peers.Load(); p != nil {
		return *p
	}
	return nil
}

// Nodes returns the node list with this node's own line current.
func (c *Cluster) Nodes() []NodeInfo {
	ps := c.Peers()
	out := make([]NodeInfo, 0, len(ps)+1)
	self := false
	for _, n := range ps {
		if n.Name == c.opts.Node {
			self = true
			n.Conns, n.Degraded, n.State = c.reg.Summary()["all"], !c.up.Load(), "up"
		}
		out = append(out, n)
	}
	if !self {
		out = append(out, NodeInfo{Name: c.opts.Node, Admin: c.opts.Admin, Version: c.opts.Version, PID: os.Getpid(),
			Started: c.started.UTC(), Conns: c.reg.Summary()["all"], State: "up", Degraded: !c.up.Load()})
	}
	return out
}

// Name is this node's name.
func (c *Cluster) Name() string { return c.opts.Node }

// Up reports whether Redis answered the last heartbeat.
func (c *Cluster) Up() bool { return c.up.Load() }

// Refusing is accounting.Shared: logins get a temporary refusal while
// Redis is down, when so configured.
func (c *Cluster) Refusing() bool {
	return c.opts.OnDown == OnDownRefuse && !c.up.Load()
}

// Close leaves the cluster: the node's name is freed at once and the
// registry is a single node again. Pending events are sent first (up to a
// second).
func (c *Cluster) Close() error {
	c.reg.SetShared(nil)
	c.cancel()
	c.wg.Wait()
	c.leave()
	return c.rdb.Close()
}

func (c *Cluster) leave() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	c.rdb.Del(ctx, c.k.node(c.opts.Node))
	c.rdb.HDel(ctx, c.k.nodes(), c.opts.Node)
}

func newID() string {
	var b [12]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
