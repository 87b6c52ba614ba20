package main

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// The idle scenario: what an authenticated connection that does nothing
// costs the proxy. It reads the proxy's resident memory, opens and logs in
// N connections, waits until the proxy settles, reads again, and reports
// the growth per connection. Kernel socket buffers are not in RSS, so they
// are not counted, for any proxy; the bench backend's own cost is not
// counted either (it is another process).

// settleWindow is how many consecutive readings (SettleInterval apart)
// must agree before the proxy counts as settled.
const settleWindow = 5

func runIdle(ctx context.Context, c *runConfig, out *emitter, t Target, round int) {
	base, fail := measurements(out, "idle", t, round)
	pids := c.PIDs[t.Name]
	if len(pids) == 0 {
		c.logf("  %s idle: skipped (no -pid for %s: nothing to measure)", t, t.Name)
		return
	}
	admin := c.Admins[t.Name]
	n := c.IdleConns
	users := c.Users
	if users <= 0 || users > n {
		users = n
	}

	// Users first: mailgate keeps state per user (last login, IP history)
	// from the first login on, and it outlives every connection. Logging
	// each user in and out once before the baseline keeps that state out
	// of the per-connection figure; it is reported on its own.
	var pre memSample
	if c.PreLogin {
		var err error
		if pre, err = readMem(pids); err != nil {
			fail("rss_per_conn_kib", err)
			return
		}
		if err := forEach(ctx, users, c.DialConcurrency, func(i int) error {
			_, err := loginCycle(ctx, c, t, benchUser(i))
			return err
		}); err != nil {
			fail("rss_per_conn_kib", fmt.Errorf("logging %d users in once: %w", users, err))
			return
		}
	}

	// Before: the proxy as it is, read a few times (it may still be
	// returning memory from an earlier scenario; the last reading counts).
	var before memSample
	for i := 0; i < 3; i++ {
		m, err := readMem(pids)
		if err != nil {
			fail("rss_per_conn_kib", err)
			return
		}
		before = m
		sleepCtx(ctx, c.SettleInterval)
	}
	var rtBefore runtimeStats
	if admin != nil {
		var err error
		if rtBefore, err = admin.runtime(ctx); err != nil {
			fail("goroutines", err)
			return
		}
	}

	if c.PreLogin {
		r := base
		r.Metric, r.Unit, r.Better = "rss_per_user_kib", "KiB", "lower"
		r.Value = float64(before.RSS-pre.RSS) / float64(users) / 1024
		r.Extra = map[string]any{"users": users, "rss_before_kib": pre.RSS >> 10, "rss_after_kib": before.RSS >> 10}
		out.emit(r)
	}

	// Open and log in N connections as the same users; they are held in
	// a slice, no goroutine each.
	conns := make([]*imapClient, n)
	defer func() {
		for _, cl := range conns {
			if cl != nil {
				cl.Close()
			}
		}
	}()
	openStart := time.Now()
	if err := forEach(ctx, n, c.DialConcurrency, func(i int) error {
		cl, err := c.Client.dial(ctx, t)
		if err != nil {
			return err
		}
		if err := cl.login(benchUser(i % users)); err != nil {
			cl.Close()
			return err
		}
		conns[i] = cl
		return nil
	}); err != nil {
		fail("rss_per_conn_kib", fmt.Errorf("opening %d connections: %w", n, err))
		return
	}
	openTime := time.Since(openStart)
	c.logf("  %s idle: %d connections logged in after %.1fs", t, n, openTime.Seconds())

	// Settle: the proxy is done with the logins when its memory stops
	// moving (and, for mailgate, when the registry counts every connection
	// and the goroutine count is flat: the pumps park 250 ms after the last
	// byte).
	settleStart := time.Now()
	var rss []int64
	var after memSample
	var rt, rtPrev runtimeStats
	settled := false
	for {
		if !sleepCtx(ctx, c.SettleInterval) {
			return
		}
		m, err := readMem(pids)
		if err != nil {
			fail("rss_per_conn_kib", err)
			return
		}
		after = m
		rss = append(rss, m.RSS)
		stable := true
		if admin != nil {
			rtPrev = rt
			if rt, err = admin.runtime(ctx); err != nil {
				fail("goroutines", err)
				return
			}
			stable = rt.Live["imap"] >= rtBefore.Live["imap"]+n && rt.Goroutines == rtPrev.Goroutines
		}
		el := time.Since(settleStart)
		if el >= c.SettleMin && stable && len(rss) >= settleWindow {
			w := rss[len(rss)-settleWindow:]
			lo, hi := w[0], w[0]
			for _, v := range w {
				lo, hi = min(lo, v), max(hi, v)
			}
			growth := max(m.RSS-before.RSS, 0)
			if hi-lo <= max(growth/100, 256<<10) {
				settled = true
				break
			}
		}
		if el >= c.SettleMax {
			break
		}
	}
	settleTime := time.Since(settleStart)

	r := base
	r.Metric, r.Unit, r.Better = "rss_per_conn_kib", "KiB", "lower"
	r.Value = float64(after.RSS-before.RSS) / float64(n) / 1024
	r.Extra = map[string]any{
		"conns":             n,
		"users":             users,
		"rss_before_kib":    before.RSS >> 10,
		"rss_after_kib":     after.RSS >> 10,
		"anon_per_conn_kib": float64(after.Anon-before.Anon) / float64(n) / 1024,
		"settled":           settled,
		"settle_seconds":    settleTime.Seconds(),
		"open_seconds":      openTime.Seconds(),
		"pids":              len(pids),
	}
	out.emit(r)
	c.logf("  %s idle: %.2f KiB per connection (settled %v after %.1fs)", t, r.Value, settled, settleTime.Seconds())
	if admin != nil {
		// The heap figure counts objects not yet collected, so it is
		// kept as a detail, not reported as the cost.
		g := base
		g.Metric, g.Unit, g.Better = "goroutines", "goroutines", "lower"
		g.Value = float64(rt.Goroutines)
		g.Extra = map[string]any{
			"before":              rtBefore.Goroutines,
			"conns":               n,
			"live_imap":           rt.Live["imap"],
			"heap_per_conn_kib":   float64(rt.HeapInuse-rtBefore.HeapInuse) / float64(n) / 1024,
			"stacks_per_conn_kib": float64(rt.StacksInuse-rtBefore.StacksInuse) / float64(n) / 1024,
		}
		out.emit(g)
		c.logf("  %s idle: %d goroutines (%d before)", t, rt.Goroutines, rtBefore.Goroutines)
	}

	// Every held session must still answer through the relay.
	var dead atomic.Int64
	var firstErr error
	var once sync.Once
	forEach(ctx, n, c.DialConcurrency, func(i int) error {
		if err := conns[i].noop(); err != nil {
			dead.Add(1)
			once.Do(func() { firstErr = err })
		}
		return nil
	})
	if d := dead.Load(); d > 0 {
		fail("idle_alive", fmt.Errorf("%d of %d held connections did not answer NOOP: %w", d, n, firstErr))
	}
}

// forEach runs fn(0..n-1) on up to conc goroutines and returns the first
// error (the others stop taking new work).
func forEach(ctx context.Context, n, conc int, fn func(i int) error) error {
	var next atomic.Int64
	var firstErr error
	var once sync.Once
	var stop atomic.Bool
	var wg sync.WaitGroup
	for w := 0; w < min(conc, n); w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() && ctx.Err() == nil {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				if err := fn(i); err != nil {
					once.Do(func() { firstErr = fmt.Errorf("#%d: %w", i, err) })
					stop.Store(true)
					return
				}
			}
		}()
	}
	wg.Wait()
	if firstErr == nil && ctx.Err() != nil {
		return ctx.Err()
	}
	return firstErr
}

// sleepCtx sleeps for d unless ctx ends first; false if it did.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
