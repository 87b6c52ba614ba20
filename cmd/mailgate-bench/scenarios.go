package main

import (
	"context"
	"fmt"
	"math"
	"sort"
	"sync"
	"sync/atomic"
	"time"
)

// The throughput and login scenarios. Both report the proxy's CPU time per
// unit of work when its PIDs are known: on a machine whose cores are shared
// with the client, the backend and other people's jobs, CPU per GiB or per
// login moves much less than MiB/s or logins/s do.

const mib = 1 << 20

func benchUser(i int) string { return fmt.Sprintf("bench%d@example.com", i) }

// cpuMeter reads a target's proxy CPU time, if its PIDs are known.
type cpuMeter struct {
	pids  []int
	start time.Duration
	ok    bool
}

func startCPU(pids []int) *cpuMeter {
	m := &cpuMeter{pids: pids}
	if len(pids) > 0 {
		var err error
		m.start, err = readCPU(pids)
		m.ok = err == nil
	}
	return m
}

// used returns the CPU time since startCPU, false if unknown.
func (m *cpuMeter) used() (time.Duration, bool) {
	if !m.ok {
		return 0, false
	}
	end, err := readCPU(m.pids)
	if err != nil {
		return 0, false
	}
	return end - m.start, true
}

// runThroughput logs in once, then downloads and uploads c.Size bytes.
func runThroughput(ctx context.Context, c *runConfig, out *emitter, t Target, round int) {
	base, fail := measurements(out, "throughput", t, round)
	cl, err := c.Client.dial(ctx, t)
	if err != nil {
		fail("download_mibps", err)
		return
	}
	defer cl.Close()
	if err := cl.login(benchUser(0)); err != nil {
		fail("download_mibps", err)
		return
	}
	buf := make([]byte, bulkBufSize)
	if c.Warmup > 0 {
		if err := cl.download(c.Warmup, buf); err != nil {
			fail("download_mibps", fmt.Errorf("warm-up: %w", err))
			return
		}
		if err := cl.upload(c.Warmup, buf); err != nil {
			fail("upload_mibps", fmt.Errorf("warm-up: %w", err))
			return
		}
	}
	for _, dir := range []struct {
		name string
		move func(int64, []byte) error
	}{{"download", cl.download}, {"upload", cl.upload}} {
		cpu := startCPU(c.PIDs[t.Name])
		start := time.Now()
		err := dir.move(c.Size, buf)
		el := time.Since(start)
		if err != nil {
			fail(dir.name+"_mibps", err)
			return
		}
		r := base
		r.Metric, r.Unit, r.Better = dir.name+"_mibps", "MiB/s", "higher"
		r.Value = float64(c.Size) / mib / el.Seconds()
		r.Extra = map[string]any{"bytes": c.Size, "seconds": el.Seconds()}
		if ti := cl.tlsInfo(); ti != "" {
			r.Extra["tls"] = ti
		}
		out.emit(r)
		if used, ok := cpu.used(); ok && c.Size > 0 {
			r := base
			r.Metric, r.Unit, r.Better = "proxy_cpu_"+dir.name+"_ms_per_gib", "ms/GiB", "lower"
			r.Value = float64(used.Milliseconds()) / (float64(c.Size) / (1 << 30))
			r.Extra = map[string]any{"cpu_ms": used.Milliseconds(), "cores_busy": used.Seconds() / el.Seconds()}
			out.emit(r)
		}
		c.logf("  %s %s: %.0f MiB/s", t, dir.name, float64(c.Size)/mib/el.Seconds())
	}
	if err := cl.logout(); err != nil {
		fail("logout", err)
	}
}

// loginCycle is one full login: connect (and TLS), greeting, LOGIN, tagged
// OK, LOGOUT, close. The latency is up to the LOGIN's tagged OK.
func loginCycle(ctx context.Context, c *runConfig, t Target, user string) (time.Duration, error) {
	start := time.Now()
	cl, err := c.Client.dial(ctx, t)
	if err != nil {
		return 0, err
	}
	defer cl.Close()
	if err := cl.login(user); err != nil {
		return 0, err
	}
	lat := time.Since(start)
	return lat, cl.logout()
}

// percentile is the nearest-rank percentile of sorted durations.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(math.Ceil(p*float64(len(sorted)))) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// runLogin measures latency at concurrency 1, then the rate at c.Concurrency.
func runLogin(ctx context.Context, c *runConfig, out *emitter, t Target, round int) {
	base, fail := measurements(out, "login", t, round)
	for i := 0; i < c.LoginWarmup; i++ {
		if _, err := loginCycle(ctx, c, t, benchUser(i%1000)); err != nil {
			fail("login_p50_ms", fmt.Errorf("warm-up login %d: %w", i, err))
			return
		}
	}
	lats := make([]time.Duration, 0, c.Logins)
	var sum time.Duration
	for i := 0; i < c.Logins; i++ {
		lat, err := loginCycle(ctx, c, t, benchUser(i%1000))
		if err != nil {
			fail("login_p50_ms", fmt.Errorf("login %d of %d: %w", i+1, c.Logins, err))
			return
		}
		lats = append(lats, lat)
		sum += lat
	}
	sort.Slice(lats, func(i, j int) bool { return lats[i] < lats[j] })
	for _, p := range []struct {
		name string
		q    float64
	}{{"login_p50_ms", 0.50}, {"login_p90_ms", 0.90}, {"login_p99_ms", 0.99}} {
		r := base
		r.Metric, r.Unit, r.Better = p.name, "ms", "lower"
		r.Value = ms(percentile(lats, p.q))
		r.Extra = map[string]any{"logins": len(lats), "concurrency": 1, "mean_ms": ms(sum / time.Duration(max(len(lats), 1))), "max_ms": ms(lats[len(lats)-1])}
		out.emit(r)
	}
	c.logf("  %s login c=1: p50 %.3f ms p99 %.3f ms", t, ms(percentile(lats, 0.5)), ms(percentile(lats, 0.99)))

	// The rate: c.Concurrency workers log in and out back to back until
	// the deadline; the elapsed time ends with the last cycle.
	var count atomic.Int64
	var errOnce sync.Once
	var firstErr error
	cpu := startCPU(c.PIDs[t.Name])
	start := time.Now()
	deadline := start.Add(c.Duration)
	var wg sync.WaitGroup
	for w := 0; w < c.Concurrency; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; time.Now().Before(deadline) && ctx.Err() == nil; i++ {
				if _, err := loginCycle(ctx, c, t, benchUser((w*7919+i)%1000)); err != nil {
					errOnce.Do(func() { firstErr = err })
					return
				}
				count.Add(1)
			}
		}(w)
	}
	wg.Wait()
	el := time.Since(start)
	if firstErr != nil {
		fail("login_rate", fmt.Errorf("concurrency %d, after %d logins: %w", c.Concurrency, count.Load(), firstErr))
		return
	}
	n := count.Load()
	r := base
	r.Metric, r.Unit, r.Better = "login_rate", "logins/s", "higher"
	r.Value = float64(n) / el.Seconds()
	r.Extra = map[string]any{"logins": n, "concurrency": c.Concurrency, "seconds": el.Seconds()}
	out.emit(r)
	if used, ok := cpu.used(); ok && n > 0 {
		r := base
		r.Metric, r.Unit, r.Better = "proxy_cpu_us_per_login", "µs", "lower"
		r.Value = float64(used.Microseconds()) / float64(n)
		r.Extra = map[string]any{"cpu_ms": used.Milliseconds(), "cores_busy": used.Seconds() / el.Seconds()}
		out.emit(r)
	}
	c.logf("  %s login c=%d: %.0f logins/s", t, c.Concurrency, float64(n)/el.Seconds())
}
