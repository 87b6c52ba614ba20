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
	"runtime/debug"
	"syscall"
	"time"

	"github.com/mailgate/mailgate/accounting"
	"github.com/mailgate/mailgate/adminapi"
	"github.com/mailgate/mailgate/configs"
	"github.com/mailgate/mailgate/protocols"
	"github.com/mailgate/mailgate/protocols/imap"
	"github.com/mailgate/mailgate/protocols/pop3"
	"github.com/mailgate/mailgate/protocols/smtp"
	"github.com/mailgate/mailgate/protocols/xmpp"
	"github.com/mailgate/mailgate/proxy"
)

func cmdServe(args []string) error {
	cfg, _, err := loadConfigFlag("serve", args)
	if err != nil {
		return err
	}
	return run(cfg, nil)
}

func cmdCheck(args []string) error {
	cfg, path, err := loadConfigFlag("check", args)
	if err != nil {
		return err
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
	reg   *accounting.Registry
	store *accounting.Store
	srv   *proxy.Server
	admin *http.Server
	// listeners by name, with their bound addresses.
	bound []boundListener
	// onShutdown runs at shutdown, after the stream listeners drained.
	onShutdown []func(context.Context)
}

type boundListener struct {
	name, protocol, tls, addr, backend string
}

func newLogger(level string) *slog.Logger {
	var l slog.Level
	l.UnmarshalText([]byte(level))
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: l}))
}

// start builds and starts everything a config describes.
func start(cfg *configs.Config, log *slog.Logger) (*app, error) {
	a := &app{log: log}
	if _, set := os.LookupEnv("GOGC"); !set && cfg.GCPercent != 0 {
		debug.SetGCPercent(cfg.GCPercent)
	}
	opts := accounting.Options{
		PerUserIP: cfg.Limits.PerUserIP, PerUser: cfg.Limits.PerUser, PerIP: cfg.Limits.PerIP,
		HistoryPerUser: cfg.HistoryPerUser,
		BruteForce: accounting.BruteForce{MaxFailures: cfg.BruteForce.MaxFailures, Window: cfg.BruteForce.Window.D(),
			Lockout: cfg.BruteForce.Lockout.D(), MaxLockout: cfg.BruteForce.MaxLockout.D()},
		ResyncHooks: map[string]accounting.ResyncHook{},
	}
	for p, h := range cfg.Resync {
		opts.ResyncHooks[p] = accounting.ResyncHook{Command: h.Command, URL: h.URL, Timeout: h.Timeout.D()}
	}
	if cfg.State != "" {
		if err := os.MkdirAll(filepath.Dir(cfg.State), 0o700); err != nil {
			return nil, fmt.Errorf("state: %w", err)
		}
		st, err := accounting.OpenStore(cfg.State, cfg.HistoryPerUser)
		if err != nil {
			return nil, err
		}
		a.store, opts.Store = st, st
	} else {
		log.Warn("state: not set; policy, blocks and IP history live in memory only and die with the process")
	}
	reg, err := accounting.Open(opts)
	if err != nil {
		a.closeStore()
		return nil, fmt.Errorf("state %s: %w", cfg.State, err)
	}
	a.reg = reg
	a.srv = proxy.NewServer(a.reg, log)
	var serverTLS *tls.Config
	if len(cfg.Certificates) > 0 {
		var certs []tls.Certificate
		for _, c := range cfg.Certificates {
			kp, err := tls.LoadX509KeyPair(c.Cert, c.Key)
			if err != nil {
				return nil, fmt.Errorf("certificates: %w", err)
			}
			certs = append(certs, kp)
		}
		serverTLS = proxy.ServerTLSConfig(certs)
	}
	for _, lc := range cfg.Listeners {
		opts, err := listenerOptions(lc, cfg.Node, serverTLS)
		if err != nil {
			a.srv.Close()
			return nil, err
		}
		l, err := a.srv.Listen(opts)
		if err != nil {
			a.srv.Close()
			return nil, err
		}
		a.bound = append(a.bound, boundListener{lc.Name, lc.Protocol, lc.TLS, l.Addr().String(), lc.Backend.Address})
	}
	if cfg.HTTP != nil {
		if err := startHTTP(a, cfg, serverTLS); err != nil {
			a.srv.Close()
			return nil, err
		}
	}
	if cfg.Admin.Listen != "" {
		token, err := cfg.AdminToken()
		if err != nil {
			a.srv.Close()
			return nil, err
		}
		ln, err := net.Listen("tcp", cfg.Admin.Listen)
		if err != nil {
			a.srv.Close()
			return nil, fmt.Errorf("admin.listen: %w", err)
		}
		api, err := adminapi.New(adminapi.Options{Registry: a.reg, Token: token, Logger: log, Node: cfg.Node})
		if err != nil {
			ln.Close()
			a.srv.Close()
			return nil, err
		}
		a.admin = api.HTTPServer(cfg.Admin.Listen)
		go a.admin.Serve(ln)
		a.bound = append(a.bound, boundListener{"admin", "http", "none", ln.Addr().String(), ""})
	}
	return a, nil
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
	if b.TLS != "none" {
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
	case "imap":
		return imap.New(imap.Options{}), nil
	case "pop":
		return pop3.New(pop3.Options{}), nil
	case "smtp":
		return smtp.New(smtp.Options{Role: lc.Role, Hostname: node}), nil
	case "xmpp":
		return xmpp.New(xmpp.Options{}), nil
	}
	return nil, fmt.Errorf("protocol %q has no handler", lc.Protocol)
}

// wait blocks until SIGTERM or SIGINT, then drains within timeout.
func (a *app) wait(timeout time.Duration) error {
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	s := <-sig
	a.log.Info("draining", "signal", s.String(), "timeout", timeout)
	return a.shutdown(timeout)
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

func run(cfg *configs.Config, extra func(*app)) error {
	log := newLogger(cfg.LogLevel)
	a, err := start(cfg, log)
	if err != nil {
		return err
	}
	for _, b := range a.bound {
		log.Info("listening", "name", b.name, "protocol", b.protocol, "tls", b.tls, "addr", b.addr, "backend", b.backend)
	}
	if extra != nil {
		extra(a)
	}
	return a.wait(cfg.ShutdownTimeout.D())
}
