package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"reflect"
	"runtime/debug"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/mailgate/mailgate/accounting"
	"github.com/mailgate/mailgate/adminapi"
	"github.com/mailgate/mailgate/cluster"
	"github.com/mailgate/mailgate/configs"
	"github.com/mailgate/mailgate/internal/netx"
	"github.com/mailgate/mailgate/protocols"
	"github.com/mailgate/mailgate/protocols/httpmail"
	"github.com/mailgate/mailgate/protocols/imap"
	"github.com/mailgate/mailgate/protocols/pop3"
	"github.com/mailgate/mailgate/protocols/smtp"
	"github.com/mailgate/mailgate/protocols/xmpp"
	"github.com/mailgate/mailgate/proxy"
)

func cmdServe(args []string) error {
	cfg, path, err := loadConfigFlag("serve", args)
	if err != nil {
		return err
	}
	return run(cfg, path, nil)
}

func cmdCheck(args []string) error {
	cfg, path, err := loadConfigFlag("check", args)
	if err != nil {
		return err
	}
	if cfg.Admin.Listen != "" {
		// The token files are read as serve would read them, and the set is
		// checked as the admin API checks it (two names for one secret).
		ts, err := cfg.AdminTokens()
		if err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		if err := checkTokens(ts); err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
	}
	fmt.Printf("%s: ok (%d listeners)\n", path, len(cfg.Listeners))
	return nil
}

// loadConfigFlag parses the flags of command name (only -config, which is
// required) and loads that file.
func loadConfigFlag(name string, args []string) (*configs.Config, string, error) {
	fs := flag.NewFlagSet(name, flag.ExitOnError)
	path := fs.String("config", "", "YAML config file (required)")
	fs.Parse(args)
	if *path == "" {
		return nil, "", fmt.Errorf("%s: -config FILE is required", name)
	}
	cfg, err := configs.Load(*path)
	return cfg, *path, err
}

// app is a running mailgate.
type app struct {
	log   *slog.Logger
	level *slog.LevelVar  // log_level: a reload may change it
	cfg   *configs.Config // as started or last reloaded
	certs *proxy.CertStore
	reg   *accounting.Registry
	store *accounting.Store
	// cluster is this node's cluster (nil: a single node).
	cluster *cluster.Cluster
	srv     *proxy.Server
	api     *adminapi.Server
	audit   *accounting.AuditLog // the admin API's audit trail
	admin   *http.Server
	// adminLn is the admin API's listening socket (an upgrade passes it on).
	adminLn net.Listener
	up      *upgradeState
	// listeners by name, with their bound addresses.
	bound []boundListener
	// onShutdown runs at shutdown, after the stream listeners drained.
	onShutdown []func(context.Context)

	// What a reload changes in place.
	path      string                     // the config file ("" for the demo)
	reloadMu  sync.Mutex                 // SIGHUP and POST /api/v1/reload, one at a time
	listeners map[string]*proxy.Listener // the stream listeners, by name
	serverTLS *tls.Config                // the client-facing TLS config (certs), nil without certificates
	httpSrv   *httpmail.Server           // nil without an http section
}

type boundListener struct {
	name, protocol, tls, addr, backend string
}

// newLogger returns a logger to stderr at level (validated), and the
// variable that holds the level.
func newLogger(level string) (*slog.Logger, *slog.LevelVar) {
	lv := new(slog.LevelVar)
	setLevel(lv, level)
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lv})), lv
}

func setLevel(lv *slog.LevelVar, level string) {
	var l slog.Level
	l.UnmarshalText([]byte(level))
	lv.Set(l)
}

// limitsOf is the part of cfg the accounting registry may change live.
func limitsOf(cfg *configs.Config) accounting.Limits {
	l := accounting.Limits{
		PerUserIP: cfg.Limits.PerUserIP, PerUser: cfg.Limits.PerUser, PerIP: cfg.Limits.PerIP,
		BruteForce: accounting.BruteForce{MaxFailures: cfg.BruteForce.MaxFailures, Window: cfg.BruteForce.Window.D(),
			Lockout: cfg.BruteForce.Lockout.D(), MaxLockout: cfg.BruteForce.MaxLockout.D()},
		ResyncHooks: map[string]accounting.ResyncHook{},
	}
	for p, h := range cfg.Resync {
		l.ResyncHooks[p] = accounting.ResyncHook{Command: h.Command, URL: h.URL, Timeout: h.Timeout.D()}
	}
	return l
}

// loadCertificates reads the certificate files cfg names.
func loadCertificates(cfg *configs.Config) ([]tls.Certificate, error) {
	var certs []tls.Certificate
	for _, c := range cfg.Certificates {
		kp, err := tls.LoadX509KeyPair(c.Cert, c.Key)
		if err != nil {
			return nil, fmt.Errorf("certificates: %w", err)
		}
		certs = append(certs, kp)
	}
	return certs, nil
}

// applyGC sets the GC target from cfg unless GOGC is set.
func applyGC(cfg *configs.Config) {
	if _, set := os.LookupEnv("GOGC"); !set && cfg.GCPercent != 0 {
		debug.SetGCPercent(cfg.GCPercent)
	}
}

// undoStack holds how to take back each part of a start that succeeded, in
// the order the parts started.
type undoStack []func()

func (u *undoStack) push(f func()) { *u = append(*u, f) }

// run undoes everything, the last part first.
func (u undoStack) run() {
	for i := len(u) - 1; i >= 0; i-- {
		u[i]()
	}
}

// start builds and starts everything a config describes. Each part that
// started pushes its undo; when a later part fails, start undoes them all,
// so that a failed start leaves no listener bound, no server running and
// the state file closed.
func start(cfg *configs.Config, log *slog.Logger) (_ *app, err error) {
	a := &app{log: log, cfg: cfg, up: newUpgradeState()}
	a.up.parent = parentLink()
	var undo undoStack
	defer func() {
		if err != nil {
			undo.run()
		}
	}()
	applyGC(cfg)
	lim := limitsOf(cfg)
	opts := accounting.Options{
		PerUserIP: lim.PerUserIP, PerUser: lim.PerUser, PerIP: lim.PerIP,
		HistoryPerUser: cfg.HistoryPerUser, BruteForce: lim.BruteForce, ResyncHooks: lim.ResyncHooks,
		LoginHistory: cfg.HistoryLogins, LoginHistoryUsers: cfg.HistoryLoginUsers,
	}
	if cfg.State != "" {
		if err := os.MkdirAll(filepath.Dir(cfg.State), 0o700); err != nil {
			return nil, fmt.Errorf("state: %w", err)
		}
		st, err := openStoreHandOver(a.up.parent, cfg.State, cfg.HistoryPerUser)
		if err != nil {
			return nil, err
		}
		a.store, opts.Store = st, st
		undo.push(a.closeStore)
	} else {
		log.Warn("state: not set; policy, blocks and IP history live in memory only and die with the process")
	}
	if a.reg, err = accounting.Open(opts); err != nil {
		return nil, fmt.Errorf("state %s: %w", cfg.State, err)
	}
	if l := a.up.parent; l != nil && l.old.PID != 0 {
		// The new process of an upgrade: ids after the old process's, and
		// the old process's sessions in the views while it drains.
		a.reg.SetIDBase(l.old.NextID)
		if cfg.Cluster == nil {
			a.up.old = &oldProcess{a: a, l: l, pid: l.old.PID, version: l.old.Version, waiting: map[uint64]chan linkMsg{},
				name: fmt.Sprintf("%s (draining, pid %d)", cfg.Node, l.old.PID)}
		}
	}
	if cfg.Cluster != nil {
		if a.cluster, err = joinCluster(a, cfg); err != nil {
			return nil, err
		}
		undo.push(func() { a.cluster.Close() })
	}
	a.srv = proxy.NewServer(a.reg, log)
	undo.push(func() { a.srv.Close() })
	var serverTLS *tls.Config
	if len(cfg.Certificates) > 0 {
		certs, err := loadCertificates(cfg)
		if err != nil {
			return nil, err
		}
		a.certs = proxy.NewCertStore(certs)
		serverTLS = a.certs.TLSConfig()
	}
	a.serverTLS = serverTLS
	a.listeners = map[string]*proxy.Listener{}
	for _, lc := range cfg.Listeners {
		opts, err := listenerOptions(lc, cfg.Node, serverTLS)
		if err != nil {
			return nil, err
		}
		l, err := a.srv.Listen(opts) // closed by a.srv.Close
		if err != nil {
			return nil, err
		}
		a.listeners[lc.Name] = l
		a.bound = append(a.bound, boundListener{lc.Name, lc.Protocol, string(lc.TLS), l.Addr().String(), lc.Backend.Address})
	}
	if cfg.HTTP != nil {
		closeHTTP, err := startHTTP(a, cfg, serverTLS)
		if err != nil {
			return nil, err
		}
		undo.push(closeHTTP)
	}
	if cfg.Admin.Listen != "" {
		if err := startAdmin(a, cfg, &undo); err != nil {
			return nil, err
		}
	}
	return a, nil
}

// startAdmin serves the admin API on cfg.Admin.Listen. A Serve that ends
// other than by Shutdown is logged: the API is how the operator acts.
func startAdmin(a *app, cfg *configs.Config, undo *undoStack) error {
	ts, err := cfg.AdminTokens()
	if err != nil {
		return err
	}
	a.audit = accounting.NewAuditLog(a.store, cfg.Admin.AuditKeep, auditAge(cfg), nil)
	opts := adminapi.Options{Registry: a.reg, Tokens: apiTokens(ts), Logger: a.log, Node: cfg.Node,
		Audit: a.audit, RequireReason: cfg.Admin.RequireReason, Reload: a.apiReload, Version: versionString(),
		Upgrade: a.upgrade}
	if a.cluster != nil {
		opts.Registry, opts.Metrics, opts.Cluster = a.cluster.View(), a.reg, a.cluster
		opts.Audit = a.cluster.Audit(a.audit)
	} else if o := a.up.old; o != nil {
		opts.Registry, opts.Metrics = cluster.NewView(a.reg, o), a.reg
		opts.ExtraNodes = func() []adminapi.Node { return []adminapi.Node{o.node()} }
	}
	api, err := adminapi.New(opts)
	if err != nil {
		return err
	}
	ln, err := netx.Listen("tcp", cfg.Admin.Listen)
	if err != nil {
		return fmt.Errorf("admin.listen: %w", err)
	}
	a.adminLn = ln
	a.api = api
	a.admin = api.HTTPServer(cfg.Admin.Listen)
	undo.push(func() { a.admin.Close() })
	go func() {
		if err := a.admin.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) && !errors.Is(err, net.ErrClosed) {
			a.log.Error("admin API stopped serving", "addr", cfg.Admin.Listen, "err", err)
		}
	}()
	a.bound = append(a.bound, boundListener{"admin", "http", "none", ln.Addr().String(), ""})
	return nil
}

// auditAge is admin.audit_days as a duration (-1: no bound).
func auditAge(cfg *configs.Config) time.Duration {
	if cfg.Admin.AuditDays < 0 {
		return -1
	}
	return time.Duration(cfg.Admin.AuditDays) * 24 * time.Hour
}

// apiTokens turns the config's tokens into the admin API's.
func apiTokens(ts []configs.AdminTokenValue) []adminapi.Token {
	out := make([]adminapi.Token, len(ts))
	for i, t := range ts {
		out[i] = adminapi.Token{Name: t.Name, Role: t.Role, Secret: t.Secret, SHA256: t.SHA256}
	}
	return out
}

// checkTokens checks a token set the way the admin API will.
func checkTokens(ts []configs.AdminTokenValue) error {
	return adminapi.CheckTokens(apiTokens(ts))
}

func listenerOptions(lc configs.Listener, node string, serverTLS *tls.Config) (proxy.ListenerOptions, error) {
	h, err := handlerFor(lc, node)
	if err != nil {
		return proxy.ListenerOptions{}, err
	}
	var trusted []netip.Prefix
	for _, t := range lc.ProxyProtocol.Trusted {
		p, _ := configs.ParsePrefix(t) // validated
		trusted = append(trusted, p)
	}
	limits := protocols.DefaultLimits
	limits.LoginTimeout = lc.LoginTimeout.D()
	b := proxy.Backend{
		Address:       lc.Backend.Address,
		TLS:           lc.Backend.TLS,
		ClientAddress: lc.Backend.ClientAddress,
		DialTimeout:   lc.Backend.DialTimeout.D(),
	}
	if b.TLS != protocols.TLSNone {
		bt, err := backendTLS(lc.Backend)
		if err != nil {
			return proxy.ListenerOptions{}, fmt.Errorf("listener %s: %w", lc.Name, err)
		}
		b.TLSConfig = bt
	}
	return proxy.ListenerOptions{
		Name: lc.Name, Address: lc.Listen, Handler: h,
		TLS: lc.TLS, TLSConfig: serverTLS, RequireTLSForLogin: lc.RequireTLSForLogin,
		TrustedProxies: trusted, RequireProxyHeader: *lc.ProxyProtocol.Require,
		ProxyHeaderTimeout: lc.ProxyProtocol.Timeout.D(),
		MaxConnections:     lc.MaxConnections, Limits: limits,
		IdleTimeout: lc.IdleTimeout.D(), Backend: b,
	}, nil
}

// backendTLS verifies a stream listener's TLS backend.
func backendTLS(b configs.Backend) (*tls.Config, error) {
	host, _, err := net.SplitHostPort(b.Address)
	if err != nil {
		return nil, err
	}
	c, err := clientTLS(host, b.ServerName, b.CAFile, b.InsecureSkipVerify)
	if err != nil {
		return nil, fmt.Errorf("backend.%w", err) // backend.ca_file: ...
	}
	return c, nil
}

// clientTLS verifies a TLS backend (a stream listener's or an https route's)
// as host, or as serverName when set, against the certificates in caFile
// when set (else the system roots). Errors name the config key ca_file.
func clientTLS(host, serverName, caFile string, insecureSkipVerify bool) (*tls.Config, error) {
	c := &tls.Config{ServerName: host, InsecureSkipVerify: insecureSkipVerify, MinVersion: tls.VersionTLS12}
	if serverName != "" {
		c.ServerName = serverName
	}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("ca_file: %s holds no PEM certificate", caFile)
		}
		c.RootCAs = pool
	}
	return c, nil
}

func handlerFor(lc configs.Listener, node string) (protocols.Handler, error) {
	switch lc.Protocol {
	case protocols.ProtoIMAP:
		return imap.New(imap.Options{}), nil
	case protocols.ProtoPOP:
		return pop3.New(pop3.Options{}), nil
	case protocols.ProtoSMTP:
		return smtp.New(smtp.Options{Role: lc.Role, Hostname: node}), nil
	case protocols.ProtoXMPP:
		return xmpp.New(xmpp.Options{}), nil
	}
	return nil, fmt.Errorf("protocol %q has no handler", lc.Protocol)
}

// signals are the ones mailgate acts on, caught from before start on (a
// SIGHUP's default action would end the process), on two channels: SIGHUPs
// sent during a reload coalesce in theirs and can never crowd out a SIGTERM.
type signals struct{ stop, hup, usr2 chan os.Signal }

func notifySignals() *signals {
	s := &signals{stop: make(chan os.Signal, 1), hup: make(chan os.Signal, 1), usr2: make(chan os.Signal, 1)}
	signal.Notify(s.stop, syscall.SIGTERM, syscall.SIGINT)
	signal.Notify(s.hup, syscall.SIGHUP)
	signal.Notify(s.usr2, syscall.SIGUSR2)
	return s
}

func (s *signals) release() {
	signal.Stop(s.stop)
	signal.Stop(s.hup)
	signal.Stop(s.usr2)
}

// wait blocks until SIGTERM or SIGINT, then drains within the configured
// shutdown timeout. SIGHUP reloads the config file at path (if any).
func (a *app) wait(path string, sigs *signals) error {
	defer sigs.release()
	for {
		select {
		case s := <-sigs.stop:
			timeout := a.cfg.ShutdownTimeout.D()
			a.log.Info("draining", "signal", s.String(), "timeout", timeout)
			sdNotify("STOPPING=1")
			return a.shutdown(timeout)
		case <-sigs.usr2:
			go a.upgrade() // logs its outcome
		case <-a.up.drained:
			return nil // upgraded: the new process serves, this one drained
		case <-sigs.hup:
			if path == "" {
				a.log.Warn("SIGHUP: no config file to reload (demo)")
				continue
			}
			a.reload(path) // logs its outcome
		}
	}
}

// reload reads the config file again and applies it without dropping a
// connection: stream listeners are opened, stopped (their sessions go on)
// or given new options for the sessions they accept from then on; the HTTP
// routes are replaced; certificates (new handshakes get the new ones), the
// admin tokens, limits, brute-force settings, resync hooks, the log level,
// gc_percent and shutdown_timeout take effect. A few keys (node, state,
// admin.listen, the HTTP listeners and their settings, the history sizes)
// need a restart: they are reported and keep their running values. A file
// that does not load, or anything in it that cannot be applied (a bad
// certificate, a token, a port in use), changes nothing at all.
func (a *app) reload(path string) (adminapi.ReloadResult, error) {
	a.reloadMu.Lock()
	defer a.reloadMu.Unlock()
	sdNotify("RELOADING=1")
	defer sdNotify("READY=1")
	fail := func(err error) (adminapi.ReloadResult, error) {
		a.log.Error("reload failed: the running configuration is kept", "config", path, "err", err)
		return adminapi.ReloadResult{}, err
	}
	cfg, err := configs.Load(path)
	if err != nil {
		return fail(err)
	}
	var tokens []configs.AdminTokenValue
	if a.api != nil {
		if tokens, err = cfg.AdminTokens(); err != nil {
			return fail(err)
		}
		if err = checkTokens(tokens); err != nil {
			return fail(err)
		}
	}
	var certs []tls.Certificate
	if a.certs != nil || len(cfg.Certificates) > 0 {
		if certs, err = loadCertificates(cfg); err == nil && len(certs) == 0 {
			err = errors.New("certificates: none configured, but TLS listeners are running")
		}
		if err != nil {
			return fail(err)
		}
	}
	old := a.cfg
	var res adminapi.ReloadResult
	for _, d := range []struct {
		key      string
		old, new any
	}{
		{"node", old.Node, cfg.Node}, {"state", old.State, cfg.State},
		{"history_per_user", old.HistoryPerUser, cfg.HistoryPerUser}, {"admin.listen", old.Admin.Listen, cfg.Admin.Listen},
		{"history_logins", old.HistoryLogins, cfg.HistoryLogins}, {"history_login_users", old.HistoryLoginUsers, cfg.HistoryLoginUsers},
		{"cluster", old.Cluster, cfg.Cluster},
	} {
		if !reflect.DeepEqual(d.old, d.new) {
			res.Restart = append(res.Restart, d.key)
		}
	}
	// The client-facing TLS: a node started without certificates gets a
	// store now, for the TLS listeners this reload may open.
	serverTLS, certStore := a.serverTLS, a.certs
	if certStore == nil && len(certs) > 0 {
		certStore = proxy.NewCertStore(certs)
		serverTLS = certStore.TLSConfig()
	}
	// Everything that can fail, before anything running changes.
	plan, err := planListeners(a.listeners, old.Listeners, cfg.Listeners, cfg.Node, serverTLS)
	if err != nil {
		return fail(err)
	}
	var routes []httpmail.Route
	frontKeys := httpFrontKeys(old.HTTP, cfg.HTTP)
	routesChanged := len(frontKeys) == 0 && cfg.HTTP != nil && !reflect.DeepEqual(old.HTTP, cfg.HTTP)
	if routesChanged {
		if routes, _, err = httpRoutes(cfg.HTTP); err != nil {
			return fail(err)
		}
	}
	opened, err := a.openListeners(plan)
	if err != nil {
		return fail(err)
	}
	if routesChanged {
		if err := a.httpSrv.SetRoutes(routes); err != nil {
			for _, l := range opened {
				l.Stop()
			}
			return fail(fmt.Errorf("http: %w", err))
		}
		res.Changed = append(res.Changed, "http routes")
	}
	// Commit.
	if a.listeners, err = commitListeners(a.listeners, plan, opened); err != nil {
		a.log.Error("reload: a listener update failed", "err", err)
	}
	if len(plan.changes) > 0 {
		res.Changed = append(res.Changed, "listeners: "+strings.Join(plan.changes, " "))
		a.rebindStream(cfg.Listeners)
	}
	res.Restart = append(res.Restart, frontKeys...)
	if certStore != nil {
		certStore.Set(certs)
		a.certs, a.serverTLS = certStore, serverTLS
	}
	if a.api != nil {
		a.api.SetTokens(apiTokens(tokens)) // the whole set; checkTokens accepted it
		a.api.SetRequireReason(cfg.Admin.RequireReason)
		a.audit.SetBounds(cfg.Admin.AuditKeep, auditAge(cfg))
	}
	a.reg.SetLimits(limitsOf(cfg))
	a.reg.SetDeviceTypes(easDeviceTypes(cfg))
	setLevel(a.level, cfg.LogLevel)
	applyGC(cfg)
	// What a restart would apply stays as it runs, so that the next reload
	// reports it again.
	cfg.Node, cfg.State, cfg.HistoryPerUser, cfg.Admin.Listen = old.Node, old.State, old.HistoryPerUser, old.Admin.Listen
	cfg.HistoryLogins, cfg.HistoryLoginUsers = old.HistoryLogins, old.HistoryLoginUsers
	if len(frontKeys) > 0 {
		cfg.HTTP = old.HTTP
	}
	a.cfg = cfg
	if len(res.Restart) > 0 {
		a.log.Warn("reload: these changed and take effect at the next restart", "keys", strings.Join(res.Restart, ","))
	}
	a.log.Info("reloaded", "config", path, "changed", strings.Join(res.Changed, "; "), "certificates", len(certs), "log_level", cfg.LogLevel)
	return res, nil
}

// apiReload is POST /api/v1/reload.
func (a *app) apiReload() (adminapi.ReloadResult, error) {
	if a.path == "" {
		return adminapi.ReloadResult{}, errors.New("no configuration file to reload (the demo)")
	}
	return a.reload(a.path)
}

// rebindStream rewrites the stream listeners' entries of a.bound from the
// running set, in the config's order.
func (a *app) rebindStream(ls []configs.Listener) {
	var bound []boundListener
	for _, lc := range ls {
		if l := a.listeners[lc.Name]; l != nil {
			bound = append(bound, boundListener{lc.Name, lc.Protocol, string(lc.TLS), l.Addr().String(), lc.Backend.Address})
			a.log.Info("listening", "name", lc.Name, "protocol", lc.Protocol, "tls", lc.TLS, "addr", l.Addr(), "backend", lc.Backend.Address)
		}
	}
	for _, b := range a.bound {
		if !isStreamBound(b) {
			bound = append(bound, b) // the HTTP front and the admin API
		}
	}
	a.bound = bound
}

// isStreamBound reports whether b is a stream listener's entry.
func isStreamBound(b boundListener) bool {
	switch b.protocol {
	case "https", "http3", "http-plain", "http":
		return false
	}
	return true
}

func (a *app) shutdown(timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	err := a.srv.Shutdown(ctx)
	for _, f := range a.onShutdown {
		f(ctx)
	}
	if a.admin != nil {
		a.admin.Shutdown(ctx)
	}
	if a.cluster != nil {
		a.cluster.Close()
	}
	a.closeStore()
	if errors.Is(err, context.DeadlineExceeded) {
		return nil // remaining sessions were told goodbye and closed
	}
	return err
}

func (a *app) closeStore() {
	if a.store != nil {
		if err := a.store.Close(); err != nil {
			a.log.Error("state: close", "err", err)
		}
	}
}

// run starts cfg and serves until SIGTERM or SIGINT; SIGHUP reloads the
// file at path ("" for the demo, which has none).
func run(cfg *configs.Config, path string, extra func(*app)) error {
	sigs := notifySignals()
	log, level := newLogger(cfg.LogLevel)
	a, err := start(cfg, log)
	if err != nil {
		sigs.release()
		return err
	}
	a.level, a.path = level, path
	for _, b := range a.bound {
		log.Info("listening", "name", b.name, "protocol", b.protocol, "tls", b.tls, "addr", b.addr, "backend", b.backend)
	}
	if extra != nil {
		extra(a)
	}
	ready := fmt.Sprintf("READY=1\nSTATUS=serving %d listeners", len(a.bound))
	if a.up.parent != nil {
		ready = fmt.Sprintf("MAINPID=%d\n", os.Getpid()) + ready // systemd: the main process is this one now
	}
	a.childReady()
	sdNotify(ready)
	return a.wait(path, sigs)
}

// redisOptions is the cluster.redis block as the cluster package takes it.
func redisOptions(cc *configs.Cluster) (cluster.Redis, error) {
	r := cc.Redis
	pw, err := r.Password()
	if err != nil {
		return cluster.Redis{}, err
	}
	out := cluster.Redis{Addresses: r.Addresses, MasterName: r.MasterName, Username: r.Username, Password: pw, DB: r.DB}
	if r.TLS.Enabled {
		host, _, _ := net.SplitHostPort(r.Addresses[0])
		if out.TLS, err = clientTLS(host, r.TLS.ServerName, r.TLS.CAFile, false); err != nil {
			return cluster.Redis{}, fmt.Errorf("cluster.redis.tls.%w", err)
		}
	}
	return out, nil
}

// joinCluster joins the node to its cluster before any listener opens: the
// registry takes the cluster's policy, history and connection id range.
func joinCluster(a *app, cfg *configs.Config) (*cluster.Cluster, error) {
	cc := cfg.Cluster
	r, err := redisOptions(cc)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), cc.NodeTTL.D()+cc.Heartbeat.D()+10*time.Second)
	defer cancel()
	return cluster.Join(ctx, cluster.Options{Redis: r, Prefix: cc.Prefix, Node: cfg.Node, Admin: cfg.Admin.Listen,
		Version: versionString(), Heartbeat: cc.Heartbeat.D(), NodeTTL: cc.NodeTTL.D(), OnDown: cc.OnRedisDown,
		Registry: a.reg, HistoryPerUser: cfg.HistoryPerUser, Logger: a.log,
		BruteForce: func() accounting.BruteForce { return a.reg.BruteForceSettings() }})
}
