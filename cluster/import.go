package cluster

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/mailgate/mailgate/accounting"
)

// msgReload asks every node to reload the policy (after an import).
const msgReload = "reload"

// ImportResult counts what Import wrote.
type ImportResult struct {
	Policy   int `json:"policy"`   // protocol, domain, block and device entries
	Lockouts int `json:"lockouts"` // lockouts still running
	Users    int `json:"users"`    // users whose last logins and IP history were merged
}

// mergeScript merges one history record and one last login, newer wins,
// so that importing twice changes nothing.
// KEYS: last, hist, users. ARGV: protocol, last_ms ("" for none), last ip,
// hist field ("" for none), first_ms, last_ms, count, user.
var mergeScript = redis.NewScript(`
if ARGV[2] ~= '' then
  local cur = redis.call('HGET', KEYS[1], ARGV[1])
  if (not cur) or tonumber(string.match(cur, '^(%d+)')) < tonumber(ARGV[2]) then
    redis.call('HSET', KEYS[1], ARGV[1], ARGV[2] .. ' ' .. ARGV[3])
  end
end
if ARGV[4] ~= '' then
  local first, last, n = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
  local h = redis.call('HGET', KEYS[2], ARGV[4])
  if h then
    local a, b, c = string.match(h, '^(%d+) (%d+) (%d+)$')
    first = math.min(first, tonumber(a)); last = math.max(last, tonumber(b)); n = math.max(n, tonumber(c))
  end
  redis.call('HSET', KEYS[2], ARGV[4], string.format('%d %d %d', first, last, n))
end
redis.call('SADD', KEYS[3], ARGV[8])
return 1
`)

// writePolicy writes a registry's policy and running lockouts into Redis.
func writePolicy(ctx context.Context, rdb redis.UniversalClient, k keys, reg *accounting.Registry) (ImportResult, error) {
	var res ImportResult
	_, err := rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, ch := range reg.Snapshot() {
			f, set := policyField(ch)
			if f == "" || !set {
				continue
			}
			v, _ := json.Marshal(ch)
			p.HSet(ctx, k.policy(), f, v)
			res.Policy++
		}
		for _, l := range reg.Lockouts() {
			p.HSet(ctx, k.lockouts(), lockField(l), l.Until.UnixMilli())
			res.Lockouts++
		}
		return nil
	})
	return res, err
}

// Import copies a single node's state (its registry, loaded from its bbolt
// file) into Redis: the policy, the lockouts still running, and every
// user's last logins and IP history. Entries already in Redis are merged,
// newer wins, so running it twice is harmless. Running nodes reload the
// policy.
func Import(ctx context.Context, r Redis, prefix string, reg *accounting.Registry) (ImportResult, error) {
	if prefix == "" {
		prefix = DefaultPrefix
	}
	k := keys{prefix}
	rdb := NewClient(r)
	defer rdb.Close()
	res, err := writePolicy(ctx, rdb, k, reg)
	if err != nil {
		return res, fmt.Errorf("cluster import: policy: %w", err)
	}
	if err := mergeScript.Load(ctx, rdb).Err(); err != nil {
		return res, fmt.Errorf("cluster import: %w", err)
	}
	recs := reg.Records()
	for len(recs) > 0 {
		batch := recs[:min(len(recs), 200)]
		recs = recs[len(batch):]
		_, err := rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			for _, u := range batch {
				ks := []string{k.last(u.User), k.hist(u.User), k.users()}
				for proto, l := range u.Last {
					mergeScript.EvalSha(ctx, p, ks, proto, l.At.UnixMilli(), l.IP.String(), "", 0, 0, 0, u.User)
				}
				for _, h := range u.IPs {
					mergeScript.EvalSha(ctx, p, ks, h.Protocol, "", "", h.IP.String()+" "+h.Protocol,
						h.FirstSeen.UnixMilli(), h.LastSeen.UnixMilli(), h.Count, u.User)
				}
			}
			return nil
		})
		if err != nil {
			return res, fmt.Errorf("cluster import: history: %w", err)
		}
		res.Users += len(batch)
	}
	b, _ := json.Marshal(envelope{T: msgReload, From: "import", At: time.Now().UnixNano()})
	rdb.Publish(ctx, k.bus(), b)
	return res, nil
}
