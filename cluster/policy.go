package cluster

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/mailgate/mailgate/accounting"
)

// ChangeWait bounds how long a change waits for the nodes to confirm it.
const ChangeWait = time.Second

// Result is what a change or an action did on each node.
type Result struct {
	Dropped int            // in all
	ByNode  map[string]int // per node that answered
	Missing []string       // live nodes that did not answer in time
}

func resultOf(ans Answers) Result {
	res := Result{ByNode: map[string]int{}, Missing: ans.Missing}
	for n, r := range ans.Replies {
		res.ByNode[n] = r.Dropped
		res.Dropped += r.Dropped
	}
	return res
}

// policyField is the field of the policy hash a change sets or clears, and
// whether it sets it. Lockouts are kept in their own hash.
func policyField(ch accounting.Change) (field string, set bool) {
	switch ch.Kind {
	case accounting.ChangeProtocol:
		return "protocol\x00" + accounting.NormalizeUser(ch.User) + "\x00" + ch.Protocol, !ch.Enabled
	case accounting.ChangeDomain:
		return "domain\x00" + accounting.NormalizeUser(ch.Domain), !ch.Enabled
	case accounting.ChangeBlock, accounting.ChangeUnblock:
		return "block\x00" + ch.Block.Prefix.Masked().String(), ch.Kind == accounting.ChangeBlock
	case accounting.ChangeDeviceBlock, accounting.ChangeDeviceAllow:
		return "device\x00" + accounting.NormalizeUser(ch.User) + "\x00" + accounting.DeviceKey(ch.Device.ID),
			ch.Kind == accounting.ChangeDeviceBlock
	}
	return "", false
}

func lockField(l accounting.Lockout) string { return l.Kind + "\x00" + l.Key }

// Commit writes a change to Redis and publishes it in one transaction,
// then waits (up to ChangeWait) for every live node, this one included,
// to apply it. Once Commit returns without an error the change is durable
// in Redis, whatever the nodes answered.
func (c *Cluster) Commit(ctx context.Context, ch accounting.Change) (Result, error) {
	if err := ch.Valid(); err != nil {
		return Result{}, err
	}
	if !c.up.Load() {
		return Result{}, ErrUnavailable
	}
	id := newID()
	e := envelope{T: msgChange, ID: id, Change: &ch, Reply: true, From: c.opts.Node, At: time.Now().UnixNano()}
	msg, err := json.Marshal(e)
	if err != nil {
		return Result{}, err
	}
	stored := ch
	stored.Drop = false
	val, _ := json.Marshal(stored)
	_, err = c.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		switch ch.Kind {
		case accounting.ChangeLockout:
			p.HSet(ctx, c.k.lockouts(), lockField(*ch.Lock), ch.Lock.Until.UnixMilli())
		case accounting.ChangeLockoutClear:
			p.HDel(ctx, c.k.lockouts(), lockField(*ch.Lock))
			p.Del(ctx, c.k.fails(ch.Lock.Kind, ch.Lock.Key), c.k.strike(ch.Lock.Kind, ch.Lock.Key))
		default:
			f, set := policyField(ch)
			if set {
				p.HSet(ctx, c.k.policy(), f, val)
			} else {
				p.HDel(ctx, c.k.policy(), f)
			}
		}
		p.Publish(ctx, c.k.bus(), msg)
		return nil
	})
	if err != nil {
		return Result{}, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	want := c.others("")
	want[c.opts.Node] = true
	got, missing := c.collect(ctx, id, want, ChangeWait)
	return resultOf(Answers{Replies: got, Missing: missing}), nil
}

// checkEpoch notices a Redis that lost its data (restarted without
// persistence, or flushed): the epoch key, set when the cluster's data was
// first written, is gone. The first node to notice writes its own copy of
// the policy back, so that nothing an administrator changed is lost; the
// others then read it.
func (c *Cluster) checkEpoch(ctx context.Context) error {
	ep, err := c.rdb.Get(ctx, c.k.key("epoch")).Result()
	if err == nil {
		c.epoch = ep
		return nil
	}
	if err != redis.Nil {
		return fmt.Errorf("cluster: read epoch: %w", err)
	}
	fresh := newID()
	won, err := c.rdb.SetNX(ctx, c.k.key("epoch"), fresh, 0).Result()
	if err != nil {
		return fmt.Errorf("cluster: write epoch: %w", err)
	}
	if !won {
		c.epoch, _ = c.rdb.Get(ctx, c.k.key("epoch")).Result()
		return nil
	}
	had := c.epoch != ""
	c.epoch = fresh
	if !had {
		return nil // a new cluster
	}
	res, err := writePolicy(ctx, c.rdb, c.k, c.reg)
	if err != nil {
		return fmt.Errorf("cluster: write the policy back: %w", err)
	}
	c.log.Error("cluster: redis came back without the cluster's data (run it with appendonly yes); "+
		"this node wrote its copy of the policy back", "policy_entries", res.Policy, "lockouts", res.Lockouts)
	return nil
}

// reload replaces the registry's policy and lockouts with Redis's.
func (c *Cluster) reload(ctx context.Context) error {
	if err := c.checkEpoch(ctx); err != nil {
		return err
	}
	pol, err := c.rdb.HGetAll(ctx, c.k.policy()).Result()
	if err != nil {
		return fmt.Errorf("cluster: read policy: %w", err)
	}
	locks, err := c.rdb.HGetAll(ctx, c.k.lockouts()).Result()
	if err != nil {
		return fmt.Errorf("cluster: read lockouts: %w", err)
	}
	changes := make([]accounting.Change, 0, len(pol))
	for f, v := range pol {
		var ch accounting.Change
		if json.Unmarshal([]byte(v), &ch) != nil || ch.Valid() != nil {
			c.log.Warn("cluster: policy entry ignored", "field", strings.ReplaceAll(f, "\x00", " "))
			continue
		}
		changes = append(changes, ch)
	}
	now := time.Now()
	var lockouts []accounting.Lockout
	var stale []string
	for f, v := range locks {
		kind, key, ok := strings.Cut(f, "\x00")
		ms, err := strconv.ParseInt(v, 10, 64)
		if !ok || err != nil {
			continue
		}
		until := time.UnixMilli(ms)
		if !until.After(now) {
			stale = append(stale, f)
			continue
		}
		lockouts = append(lockouts, accounting.Lockout{Kind: kind, Key: key, Until: until})
	}
	if len(stale) > 0 {
		c.rdb.HDel(ctx, c.k.lockouts(), stale...)
	}
	c.applyMu.Lock()
	c.reg.ReplacePolicy(changes, lockouts)
	c.applyMu.Unlock()
	return nil
}

// loadHistory merges every user's last logins and IP history from Redis.
func (c *Cluster) loadHistory(ctx context.Context) error {
	users, err := c.rdb.SMembers(ctx, c.k.users()).Result()
	if err != nil {
		return err
	}
	for len(users) > 0 {
		batch := users[:min(len(users), 500)]
		users = users[len(batch):]
		cmds, err := c.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			for _, u := range batch {
				p.HGetAll(ctx, c.k.last(u))
				p.HGetAll(ctx, c.k.hist(u))
			}
			return nil
		})
		if err != nil {
			return err
		}
		for i, u := range batch {
			last := parseLast(cmds[2*i].(*redis.MapStringStringCmd).Val())
			recs := parseHist(cmds[2*i+1].(*redis.MapStringStringCmd).Val())
			c.reg.MergeHistory(u, recs, last)
		}
	}
	return nil
}

// last:<user> holds protocol -> "ms ip"; hist:<user> holds "ip proto" ->
// "first_ms last_ms count".
func parseLast(m map[string]string) map[string]accounting.LastLogin {
	out := map[string]accounting.LastLogin{}
	for p, v := range m {
		ms, ipText, ok := strings.Cut(v, " ")
		t, err := strconv.ParseInt(ms, 10, 64)
		ip, err2 := netip.ParseAddr(ipText)
		if ok && err == nil && err2 == nil {
			out[p] = accounting.LastLogin{At: time.UnixMilli(t), IP: ip}
		}
	}
	return out
}

func parseHist(m map[string]string) []accounting.IPRecord {
	var out []accounting.IPRecord
	for f, v := range m {
		ipText, proto, ok := strings.Cut(f, " ")
		ip, err := netip.ParseAddr(ipText)
		parts := strings.Fields(v)
		if !ok || err != nil || len(parts) != 3 {
			continue
		}
		first, _ := strconv.ParseInt(parts[0], 10, 64)
		last, _ := strconv.ParseInt(parts[1], 10, 64)
		n, _ := strconv.Atoi(parts[2])
		out = append(out, accounting.IPRecord{IP: ip, Protocol: proto, FirstSeen: time.UnixMilli(first),
			LastSeen: time.UnixMilli(last), Count: n})
	}
	return out
}

// loginScript records one login: the protocol's last login (unless a newer
// one is there), the (IP, protocol) history entry, the history bound (the
// entry seen longest ago goes), and the user in the user set.
// KEYS: last, hist, users. ARGV: protocol, ms, ip, max, user, count.
var loginScript = redis.NewScript(`
local cur = redis.call('HGET', KEYS[1], ARGV[1])
local ms = tonumber(ARGV[2])
if (not cur) or tonumber(string.match(cur, '^(%d+)')) <= ms then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2] .. ' ' .. ARGV[3])
end
local f = ARGV[3] .. ' ' .. ARGV[1]
local h = redis.call('HGET', KEYS[2], f)
local add = tonumber(ARGV[6])
if h then
  local a, b, n = string.match(h, '^(%d+) (%d+) (%d+)$')
  local first, last = tonumber(a), tonumber(b)
  if ms < first then first = ms end
  if ms > last then last = ms end
  redis.call('HSET', KEYS[2], f, string.format('%d %d %d', first, last, tonumber(n) + add))
else
  redis.call('HSET', KEYS[2], f, string.format('%d %d %d', ms, ms, add))
  if redis.call('HLEN', KEYS[2]) > tonumber(ARGV[4]) then
    local all = redis.call('HGETALL', KEYS[2])
    local oldest, t = nil, nil
    for i = 1, #all, 2 do
      local l = tonumber(string.match(all[i+1], '^%d+ (%d+)'))
      if t == nil or l < t then oldest, t = all[i], l end
    end
    redis.call('HDEL', KEYS[2], oldest)
  end
end
redis.call('SADD', KEYS[3], ARGV[5])
return 1
`)

// failScript counts one failure in a sliding window and decides a
// lockout: MaxFailures inside Window lock the key out for Lockout, doubled
// with each repeat within a day, up to MaxLockout.
// KEYS: fails (sorted set), strike, lockouts. ARGV: now_ms, window_ms,
// max, lockout_ms, max_lockout_ms, member, lock field.
// Returns {failures, until_ms}; until_ms is 0 unless this failure locked.
var failScript = redis.NewScript(`
local now = tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[2]))
redis.call('ZADD', KEYS[1], now, ARGV[6])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
local n = redis.call('ZCARD', KEYS[1])
if n < tonumber(ARGV[3]) then return {n, 0} end
local cur = redis.call('HGET', KEYS[3], ARGV[7])
if cur and tonumber(cur) > now then return {n, 0} end
local strike = redis.call('INCR', KEYS[2])
redis.call('PEXPIRE', KEYS[2], 86400000)
local d = tonumber(ARGV[4]) * math.pow(2, math.min(strike - 1, 20))
if d > tonumber(ARGV[5]) then d = tonumber(ARGV[5]) end
local untilms = now + d
redis.call('HSET', KEYS[3], ARGV[7], string.format('%d', untilms))
redis.call('DEL', KEYS[1])
return {n, untilms}
`)
