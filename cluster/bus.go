package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/mailgate/mailgate/accounting"
)

// Message types on the bus.
const (
	msgChange = "change" // a committed policy change: every node applies it, in order
	msgRPC    = "rpc"    // a request every other node (or one, To) answers
	msgLogins = "logins" // logins seen by one node
	msgLive   = "live"   // changed live counts of one node (limits)
)

// envelope is one message on the bus.
type envelope struct {
	T      string             `json:"t"`
	From   string             `json:"from"`
	At     int64              `json:"at"` // publish time, unix nanoseconds
	ID     string             `json:"id,omitempty"`
	To     string             `json:"to,omitempty"`
	Op     string             `json:"op,omitempty"`
	Args   json.RawMessage    `json:"args,omitempty"`
	Change *accounting.Change `json:"change,omitempty"`
	Logins []loginEvent       `json:"logins,omitempty"`
	Live   *liveUpdate        `json:"live,omitempty"`
	Reply  bool               `json:"reply,omitempty"` // a change the sender waits for
}

// Reply is one node's answer to a request or a change.
type Reply struct {
	Node    string `json:"node"`
	Err     string `json:"err,omitempty"`
	Dropped int    `json:"dropped"`
	Data    []byte `json:"-"` // after the JSON and a NUL byte: JSON or codec.go's binary
}

// wire is the reply as it travels: its JSON, a NUL (which JSON never holds
// raw), then the data as is.
func (r Reply) wire() []byte {
	b, _ := json.Marshal(r)
	b = append(b, 0)
	return append(b, r.Data...)
}

func parseReply(raw string) (Reply, bool) {
	var r Reply
	head, data, ok := strings.Cut(raw, "\x00")
	if !ok || json.Unmarshal([]byte(head), &r) != nil {
		return r, false
	}
	r.Data = []byte(data)
	return r, true
}

// busLoop reads the bus until Close. go-redis resubscribes by itself after
// a lost connection; every subscription (the first was seen by Join)
// reloads the policy, since messages published meanwhile are lost.
func (c *Cluster) busLoop(ps *redis.PubSub) {
	defer c.wg.Done()
	defer ps.Close()
	ch := ps.ChannelWithSubscriptions(redis.WithChannelSize(4096))
	for {
		select {
		case <-c.ctx.Done():
			return
		case m, ok := <-ch:
			if !ok {
				return
			}
			switch m := m.(type) {
			case *redis.Subscription:
				if m.Kind == "subscribe" {
					c.resubscribed()
				}
			case *redis.Message:
				c.handle(m.Payload)
			}
		}
	}
}

// resubscribed reloads the policy after the bus came back.
func (c *Cluster) resubscribed() {
	ctx, cancel := context.WithTimeout(c.ctx, 5*time.Second)
	defer cancel()
	if err := c.reload(ctx); err != nil {
		c.log.Error("cluster: policy reload after resubscribing", "err", err)
		return
	}
	c.degraded.Store(false)
	c.stats.resyncs.Add(1)
	c.log.Info("cluster: bus subscribed again, policy reloaded")
}

func (c *Cluster) handle(payload string) {
	var e envelope
	if err := json.Unmarshal([]byte(payload), &e); err != nil {
		c.log.Warn("cluster: unreadable bus message", "err", err)
		return
	}
	if e.At > 0 {
		c.stats.observeLag(time.Since(time.Unix(0, e.At)))
	}
	switch e.T {
	case msgChange:
		if e.Change == nil {
			return
		}
		c.applyMu.Lock()
		n, err := c.reg.Apply(*e.Change)
		c.applyMu.Unlock()
		c.stats.changes.Add(1)
		if e.From != c.opts.Node {
			c.stats.observePropagation(time.Since(time.Unix(0, e.At)))
		}
		if e.Reply {
			r := Reply{Node: c.opts.Node, Dropped: n}
			if err != nil {
				r.Err = err.Error()
			}
			c.answer(e.ID, r)
		}
	case msgRPC:
		if e.From == c.opts.Node || (e.To != "" && e.To != c.opts.Node) {
			return
		}
		go func() { c.answer(e.ID, c.serve(e.Op, e.Args)) }()
	case msgLogins:
		if e.From == c.opts.Node {
			return
		}
		for _, l := range e.Logins {
			c.reg.ApplyLogin(l.User, l.Protocol, l.IP, time.UnixMilli(l.At))
		}
	case msgReload:
		go c.resubscribed()
	case msgLive:
		if e.From != c.opts.Node && e.Live != nil {
			if c.live.update(e.From, e.Live) && c.live.startFetch(e.From) {
				go c.fetchLive(e.From)
			}
		}
	}
}

// answer pushes r to the asker's reply list.
func (c *Cluster) answer(id string, r Reply) {
	if id == "" {
		return
	}
	b := r.wire()
	ctx, cancel := context.WithTimeout(c.ctx, 2*time.Second)
	defer cancel()
	key := c.k.reply(id)
	_, err := c.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		p.RPush(ctx, key, b)
		p.Expire(ctx, key, 30*time.Second)
		return nil
	})
	if err != nil && !errors.Is(err, context.Canceled) {
		c.log.Warn("cluster: reply not sent", "err", err)
	}
}

// publish sends a message on the bus.
func (c *Cluster) publish(ctx context.Context, e envelope) error {
	e.From, e.At = c.opts.Node, time.Now().UnixNano()
	b, err := json.Marshal(e)
	if err != nil {
		return err
	}
	return c.rdb.Publish(ctx, c.k.bus(), b).Err()
}

// collect waits for the replies of want nodes to request id, until ctx
// ends or wait passes. Missing names the nodes that did not answer.
func (c *Cluster) collect(ctx context.Context, id string, want map[string]bool, wait time.Duration) (map[string]Reply, []string) {
	got := map[string]Reply{}
	deadline := time.Now().Add(wait)
	key := c.k.reply(id)
	for len(got) < len(want) {
		left := time.Until(deadline)
		if left <= 0 {
			break
		}
		// BLPOP takes seconds with decimals (Redis 6 and later).
		secs := strconv.FormatFloat(max(left, 10*time.Millisecond).Seconds(), 'f', 3, 64)
		res, err := c.rdb.Do(ctx, "BLPOP", key, secs).StringSlice()
		if err != nil || len(res) != 2 {
			break // redis.Nil: timed out
		}
		if r, ok := parseReply(res[1]); ok && want[r.Node] {
			got[r.Node] = r
		}
	}
	c.rdb.Del(context.WithoutCancel(ctx), key)
	var missing []string
	for n := range want {
		if _, ok := got[n]; !ok {
			missing = append(missing, n)
		}
	}
	return got, missing
}

// others returns the live nodes but this one (only to, when set).
func (c *Cluster) others(to string) map[string]bool {
	want := map[string]bool{}
	for _, n := range c.Peers() {
		if n.State == "up" && n.Name != c.opts.Node && (to == "" || n.Name == to) {
			want[n.Name] = true
		}
	}
	return want
}

// Answers are the replies of a request, by node, and the nodes that did not
// answer in time.
type Answers struct {
	Replies map[string]Reply
	Missing []string
}

// ask sends op to every other live node (or to one) and waits for them;
// this node's own part is the caller's.
func (c *Cluster) ask(ctx context.Context, op string, args any, to string, wait time.Duration) (Answers, error) {
	if !c.up.Load() {
		return Answers{}, ErrUnavailable
	}
	want := c.others(to)
	if len(want) == 0 {
		return Answers{Replies: map[string]Reply{}}, nil
	}
	raw, err := json.Marshal(args)
	if err != nil {
		return Answers{}, err
	}
	id := newID()
	if err := c.publish(ctx, envelope{T: msgRPC, ID: id, Op: op, Args: raw, To: to}); err != nil {
		return Answers{}, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	got, missing := c.collect(ctx, id, want, wait)
	for _, r := range got {
		if r.Err != "" {
			c.log.Warn("cluster: node answered with an error", "node", r.Node, "op", op, "err", r.Err)
		}
	}
	return Answers{Replies: got, Missing: missing}, nil
}
