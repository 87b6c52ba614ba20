package cluster

import (
	"context"
	"net/netip"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/mailgate/mailgate/accounting"
)

// flushEvery is how often queued events go out: a login reaches the other
// nodes' views and Redis within about this long.
const flushEvery = 50 * time.Millisecond

type eventKind uint8

const (
	evLogin eventKind = iota
	evFail
	evSuccess
)

// event is a login-path event queued for Redis.
type event struct {
	kind     eventKind
	user     string
	protocol string
	ip       netip.Addr
	at       time.Time
}

// loginEvent is a login as the bus carries it.
type loginEvent struct {
	User     string     `json:"u"`
	Protocol string     `json:"p"`
	IP       netip.Addr `json:"ip"`
	At       int64      `json:"at"` // unix milliseconds
}

// queue hands an event to the sender without ever blocking the login
// path: when the queue is full (Redis is down long enough) the event is
// counted and dropped; this node's own copy already has it.
func (c *Cluster) queue(e event) {
	select {
	case c.events <- e:
	default:
		c.stats.eventsDropped.Add(1)
	}
}

// Login is accounting.Shared.
func (c *Cluster) Login(user, protocol string, ip netip.Addr, at time.Time) {
	c.queue(event{kind: evLogin, user: user, protocol: protocol, ip: ip, at: at})
}

// Failed is accounting.Shared.
func (c *Cluster) Failed(ip netip.Addr, user string) {
	c.queue(event{kind: evFail, user: user, ip: ip, at: time.Now()})
}

// Succeeded is accounting.Shared.
func (c *Cluster) Succeeded(user string) {
	c.queue(event{kind: evSuccess, user: user})
}

// eventLoop sends queued events every flushEvery, and the live counts that
// changed.
func (c *Cluster) eventLoop() {
	defer c.wg.Done()
	t := time.NewTicker(flushEvery)
	defer t.Stop()
	var batch []event
	for {
		select {
		case <-c.ctx.Done():
			// Last chance for what is queued (Close waits at most a second).
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			for {
				select {
				case e := <-c.events:
					batch = append(batch, e)
					continue
				default:
				}
				break
			}
			c.send(ctx, batch)
			cancel()
			return
		case e := <-c.events:
			batch = append(batch, e)
			if len(batch) < 4096 {
				continue
			}
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(c.ctx, 2*time.Second)
		if len(batch) > 0 {
			c.send(ctx, batch)
			batch = batch[:0]
		}
		c.publishLive(ctx)
		cancel()
	}
}

// send writes a batch: logins into the history and onto the bus, failures
// through the lockout script (a lockout it decides is published as a
// change, so every node applies it in order), successes clear the user's
// failure window.
func (c *Cluster) send(ctx context.Context, batch []event) {
	if len(batch) == 0 {
		return
	}
	bf := c.opts.BruteForce()
	var logins []loginEvent
	type failCmd struct {
		lock accounting.Lockout
		cmd  *redis.Cmd
	}
	var fails []failCmd
	err := c.withScripts(ctx, func(p redis.Pipeliner) error {
		logins, fails = logins[:0], fails[:0]
		for _, e := range batch {
			switch e.kind {
			case evLogin:
				ms := e.at.UnixMilli()
				logins = append(logins, loginEvent{User: e.user, Protocol: e.protocol, IP: e.ip, At: ms})
				loginScript.EvalSha(ctx, p, []string{c.k.last(e.user), c.k.hist(e.user), c.k.users()},
					e.protocol, ms, e.ip.String(), c.opts.HistoryPerUser, e.user, 1)
			case evSuccess:
				p.Del(ctx, c.k.fails("user", e.user))
			case evFail:
				if bf.MaxFailures <= 0 {
					continue
				}
				locks := []accounting.Lockout{{Kind: "ip", Key: e.ip.String()}}
				if e.user != "" {
					locks = append(locks, accounting.Lockout{Kind: "user", Key: e.user})
				}
				member := c.opts.Node + ":" + strconv.FormatInt(e.at.UnixNano(), 10)
				for _, l := range locks {
					cmd := failScript.EvalSha(ctx, p, []string{c.k.fails(l.Kind, l.Key), c.k.strike(l.Kind, l.Key), c.k.lockouts()},
						e.at.UnixMilli(), bf.Window.Milliseconds(), bf.MaxFailures, bf.Lockout.Milliseconds(),
						bf.MaxLockout.Milliseconds(), member, lockField(l))
					fails = append(fails, failCmd{l, cmd})
				}
			}
		}
		if len(logins) > 0 {
			c.publishIn(ctx, p, envelope{T: msgLogins, Logins: logins})
		}
		return nil
	})
	if err != nil {
		c.stats.eventsDropped.Add(int64(len(batch)))
		c.log.Warn("cluster: events not sent", "events", len(batch), "err", err)
		return
	}
	for _, f := range fails {
		vals, err := f.cmd.Int64Slice()
		if err != nil || len(vals) != 2 || vals[1] == 0 {
			continue
		}
		l := f.lock
		l.Failures, l.Until = int(vals[0]), time.UnixMilli(vals[1])
		c.stats.lockouts.Add(1)
		c.publish(ctx, envelope{T: msgChange, Change: &accounting.Change{Kind: accounting.ChangeLockout, Lock: &l}})
	}
}

// publishIn queues a bus message in a pipeline.
func (c *Cluster) publishIn(ctx context.Context, p redis.Pipeliner, e envelope) {
	e.From, e.At = c.opts.Node, time.Now().UnixNano()
	if b, err := jsonMarshal(e); err == nil {
		p.Publish(ctx, c.k.bus(), b)
	}
}

// withScripts runs a pipeline that calls the scripts by their digest; a
// Redis that does not know them (restarted, failed over) gets them loaded
// and the pipeline runs again, once.
func (c *Cluster) withScripts(ctx context.Context, fn func(redis.Pipeliner) error) error {
	for try := 0; ; try++ {
		cmds, err := c.rdb.Pipelined(ctx, fn)
		noscript := false
		for _, cmd := range cmds {
			if e := cmd.Err(); e != nil && redis.HasErrorPrefix(e, "NOSCRIPT") {
				noscript = true
			}
		}
		if !noscript || try > 0 {
			return err
		}
		for _, s := range []*redis.Script{loginScript, failScript} {
			if err := s.Load(ctx, c.rdb).Err(); err != nil {
				return err
			}
		}
	}
}
