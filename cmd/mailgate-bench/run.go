package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// runConfig is everything "run" needs; flags fill it, tests build it.
type runConfig struct {
	Scenarios []string // throughput, login, idle, in this order per target
	Targets   []Target
	Round     int  // label of the first round
	Rounds    int  // how many rounds to run
	Rotate    bool // start each round one target name later

	// throughput
	Size   int64 // bytes each way
	Warmup int64 // bytes each way before measuring (not reported)

	// login
	Logins      int           // sequential logins for the latency percentiles
	LoginWarmup int           // logins before measuring (not reported)
	Concurrency int           // workers for the rate
	Duration    time.Duration // how long the rate runs

	// idle
	IdleConns       int
	DialConcurrency int
	SettleMin       time.Duration
	SettleMax       time.Duration
	SettleInterval  time.Duration // between memory readings (default 500ms)
	Users           int           // distinct user names among held connections (0 or more than IdleConns: one each)
	PreLogin        bool          // log each user in and out once before the baseline

	PIDs   map[string][]int        // proxy processes by target name
	Admins map[string]*adminClient // mailgate admin APIs by target name
	Client clientOptions
	Log    io.Writer // progress notes (stderr); nil: none
}

func (c *runConfig) defaults() {
	if c.Rounds <= 0 {
		c.Rounds = 1
	}
	if c.Round <= 0 {
		c.Round = 1
	}
	if c.Size <= 0 {
		c.Size = 1 << 30
	}
	if c.Warmup < 0 {
		c.Warmup = 0
	}
	if c.Logins <= 0 {
		c.Logins = 2000
	}
	if c.Concurrency <= 0 {
		c.Concurrency = 8
	}
	if c.Duration <= 0 {
		c.Duration = 5 * time.Second
	}
	if c.IdleConns <= 0 {
		c.IdleConns = 7500
	}
	if c.DialConcurrency <= 0 {
		c.DialConcurrency = 16
	}
	if c.SettleMin <= 0 {
		c.SettleMin = 3 * time.Second
	}
	if c.SettleInterval <= 0 {
		c.SettleInterval = 500 * time.Millisecond
	}
	if c.SettleMax < c.SettleMin {
		c.SettleMax = max(20*time.Second, c.SettleMin)
	}
	if c.Log == nil {
		c.Log = io.Discard
	}
	c.Client.defaults()
}

func (c *runConfig) logf(format string, args ...any) {
	fmt.Fprintf(c.Log, "[mailgate-bench %s] "+format+"\n", append([]any{time.Now().Format("15:04:05")}, args...)...)
}

// order returns the targets for one round: grouped by name in the order
// first given, the names rotated by the round number when Rotate is set, so
// no proxy always runs first (or right after the same neighbour). The round
// label is used, not the loop index, so a script that calls run once per
// round gets the same rotation.
func (c *runConfig) order(round int) []Target {
	var names []string
	seen := map[string]bool{}
	for _, t := range c.Targets {
		if !seen[t.Name] {
			seen[t.Name] = true
			names = append(names, t.Name)
		}
	}
	if c.Rotate && len(names) > 0 {
		k := (round - 1) % len(names)
		names = append(names[k:], names[:k]...)
	}
	var out []Target
	for _, n := range names {
		for _, t := range c.Targets {
			if t.Name == n {
				out = append(out, t)
			}
		}
	}
	return out
}

// scenarioFunc measures one scenario against one target and emits results.
type scenarioFunc func(ctx context.Context, c *runConfig, out *emitter, t Target, round int)

var scenarios = map[string]scenarioFunc{
	"throughput": runThroughput,
	"login":      runLogin,
	"idle":       runIdle,
}

// runAll runs every round: for each round, each scenario, each target.
func runAll(ctx context.Context, c *runConfig, out *emitter) {
	c.defaults()
	for i := 0; i < c.Rounds && ctx.Err() == nil; i++ {
		round := c.Round + i
		for _, sc := range c.Scenarios {
			for _, t := range c.order(round) {
				if ctx.Err() != nil {
					return
				}
				c.logf("round %d: %s against %s (%s)", round, sc, t, t.Addr)
				scenarios[sc](ctx, c, out, t, round)
			}
		}
	}
}

// multiFlag collects a repeated flag.
type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, " ") }
func (m *multiFlag) Set(s string) error { *m = append(*m, s); return nil }

// parseSize reads 1GiB, 8MiB, 64KiB, 1G, 8M or a byte count.
func parseSize(s string) (int64, error) {
	mult := int64(1)
	num := s
	for _, u := range []struct {
		suffix string
		m      int64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}, {"G", 1 << 30}, {"M", 1 << 20}, {"K", 1 << 10}, {"B", 1}} {
		if strings.HasSuffix(s, u.suffix) {
			num, mult = strings.TrimSuffix(s, u.suffix), u.m
			break
		}
	}
	n, err := strconv.ParseInt(strings.TrimSpace(num), 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("size %q: want e.g. 1GiB, 8MiB or a byte count", s)
	}
	return n * mult, nil
}

func cmdRun(args []string) error {
	fs := flag.NewFlagSet("run", flag.ExitOnError)
	var targets, pids, admins multiFlag
	fs.Var(&targets, "target", "NAME=ADDR[,tls] to measure (repeat; loopback only). tls: the client speaks implicit TLS")
	fs.Var(&pids, "pid", "NAME=PID[+PID...]: the target's proxy processes, for RSS and CPU (repeat)")
	fs.Var(&admins, "admin", "NAME=http://127.0.0.1:PORT: a mailgate target's admin API (repeat)")
	scenario := fs.String("scenario", "", "throughput, login or idle; several comma-separated (required)")
	adminToken := fs.String("admin-token", os.Getenv("MAILGATE_BENCH_ADMIN_TOKEN"), "bearer token for -admin (default $MAILGATE_BENCH_ADMIN_TOKEN)")
	round := fs.Int("round", 1, "label of the first round in the output")
	rounds := fs.Int("rounds", 1, "rounds to run (targets interleaved within each round)")
	rotate := fs.Bool("rotate", true, "rotate the order of target names from round to round")
	size := fs.String("size", "1GiB", "throughput: bytes each way")
	warmup := fs.String("warmup", "", "throughput: bytes each way before measuring (default size/16, at most 64MiB)")
	logins := fs.Int("logins", 2000, "login: sequential logins for the latency percentiles (concurrency 1)")
	loginWarmup := fs.Int("login-warmup", 50, "login: logins before measuring")
	conc := fs.Int("concurrency", 8, "login: workers for the rate")
	dur := fs.Duration("duration", 5*time.Second, "login: how long the rate runs")
	idleConns := fs.Int("conns", 7500, "idle: connections to hold (each costs a proxy 2 fds)")
	dialConc := fs.Int("dial-concurrency", 16, "idle: connections opened in parallel")
	settleMin := fs.Duration("settle-min", 3*time.Second, "idle: wait at least this long before reading memory")
	settleMax := fs.Duration("settle-max", 20*time.Second, "idle: read memory after this long even if it still moves")
	users := fs.Int("users", 1000, "idle: distinct user names among held connections (0: one per connection)")
	prelogin := fs.Bool("prelogin", true, "idle: log each user in and out once before the baseline, so per-user state is not counted per connection")
	source := fs.String("source", "", "local IP for client sockets (loopback, e.g. 127.0.0.2; default: the kernel's choice)")
	timeout := fs.Duration("timeout", 30*time.Second, "per short command (greeting, LOGIN, LOGOUT, NOOP)")
	quiet := fs.Bool("q", false, "no progress notes on stderr")
	outPath := fs.String("o", "-", "results file (JSON lines), - for stdout; appended to")
	fs.Parse(args)

	c := &runConfig{Round: *round, Rounds: *rounds, Rotate: *rotate, Logins: *logins, LoginWarmup: *loginWarmup,
		Concurrency: *conc, Duration: *dur, IdleConns: *idleConns, DialConcurrency: *dialConc,
		SettleMin: *settleMin, SettleMax: *settleMax, Users: *users, PreLogin: *prelogin,
		PIDs: map[string][]int{}, Admins: map[string]*adminClient{}, Log: os.Stderr}
	if *quiet {
		c.Log = io.Discard
	}
	c.Client.OpTimeout = *timeout
	for _, s := range strings.Split(*scenario, ",") {
		if _, ok := scenarios[s]; !ok {
			return fmt.Errorf("run: -scenario %q: want throughput, login or idle", s)
		}
		c.Scenarios = append(c.Scenarios, s)
	}
	if len(targets) == 0 {
		return errors.New("run: at least one -target NAME=ADDR[,tls] is required")
	}
	for _, s := range targets {
		t, err := parseTarget(s)
		if err != nil {
			return fmt.Errorf("run: %w", err)
		}
		c.Targets = append(c.Targets, t)
	}
	for _, s := range pids {
		name, list, ok := strings.Cut(s, "=")
		if !ok {
			return fmt.Errorf("run: -pid %q: want NAME=PID[+PID...]", s)
		}
		p, err := parsePIDs(list)
		if err != nil {
			return fmt.Errorf("run: -pid: %w", err)
		}
		c.PIDs[name] = p
	}
	for _, s := range admins {
		name, u, ok := strings.Cut(s, "=")
		if !ok {
			return fmt.Errorf("run: -admin %q: want NAME=http://IP:PORT", s)
		}
		a, err := newAdminClient(u, *adminToken)
		if err != nil {
			return fmt.Errorf("run: -admin: %w", err)
		}
		c.Admins[name] = a
	}
	var err error
	if c.Size, err = parseSize(*size); err != nil {
		return err
	}
	if *warmup != "" {
		if c.Warmup, err = parseSize(*warmup); err != nil {
			return err
		}
	} else {
		c.Warmup = min(c.Size/16, 64<<20)
	}
	if *source != "" {
		a, err := netip.ParseAddr(*source)
		if err != nil || !a.IsLoopback() {
			return fmt.Errorf("run: -source %q: want a loopback IP", *source)
		}
		c.Client.Source = a
	}
	if lim := raiseNoFile(); lim > 0 && c.IdleConns+64 > int(lim) && strings.Contains(*scenario, "idle") {
		return fmt.Errorf("run: -conns %d needs more file descriptors than RLIMIT_NOFILE %d", c.IdleConns, lim)
	}

	var w io.Writer = os.Stdout
	if *outPath != "-" {
		f, err := os.OpenFile(*outPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
		if err != nil {
			return err
		}
		defer f.Close()
		w = f
	}
	out := newEmitter(w)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	runAll(ctx, c, out)
	if ctx.Err() != nil {
		return errors.New("run: interrupted")
	}
	if out.anyFailed() {
		return errors.New("run: some measurements failed (see the \"error\" fields)")
	}
	return nil
}
