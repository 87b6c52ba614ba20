package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/netip"
	"strings"

	"github.com/mailgate/mailgate/accounting"
	"github.com/mailgate/mailgate/configs"
	"github.com/mailgate/mailgate/protocols/httpmail"
	"github.com/mailgate/mailgate/protocols/webmail"
)

// startHTTP starts the HTTP mail protocols front described by cfg.HTTP
// (non-nil): HTTPS (HTTP/1.1 and HTTP/2) and HTTP/3 on listen, the optional
// plain listener, every protocol with a backend routed to it, counted in
// a.reg. Its graceful shutdown runs from a.onShutdown; closeHTTP stops it
// at once (a start that fails later). On error nothing is left running.
func startHTTP(a *app, cfg *configs.Config, serverTLS *tls.Config) (closeHTTP func(), err error) {
	h := cfg.HTTP
	a.reg.SetDeviceTypes(easDeviceTypes(cfg))
	opts := httpmail.Options{
		Tracker:             httpTracker{a.reg},
		Log:                 a.log.With("component", "http"),
		TLSConfig:           serverTLS,
		RequireProxyHeader:  *h.ProxyProtocol.Require,
		ProxyHeaderTimeout:  h.ProxyProtocol.Timeout.D(),
		ReadHeaderTimeout:   h.Timeouts.ReadHeader.D(),
		RequestTimeout:      h.Timeouts.Request.D(),
		LongPollTimeout:     h.Timeouts.LongPoll.D(),
		IdleTimeout:         h.Timeouts.Idle.D(),
		DialTimeout:         h.Timeouts.Dial.D(),
		TLSHandshakeTimeout: h.Timeouts.TLSHandshake.D(),
		MaxHeaderBytes:      h.MaxHeaderBytes,
	}
	opts.TrustedProxies = prefixes(h.ProxyProtocol.Trusted)
	opts.TrustedForwarders = prefixes(h.TrustedForwarders)
	routes, served, err := httpRoutes(h)
	if err != nil {
		return nil, err
	}
	for _, r := range routes {
		if r.Protocol != httpmail.ProtoWebmail {
			continue
		}
		w := h.Webmail
		wm, err := webmail.New(webmail.Options{LoginPath: w.LoginPath, UserField: w.UserField, Cookie: w.Cookie,
			SessionTTL: w.SessionTTL.D(), MaxSessions: w.MaxSessions, BackendTLS: r.TLS,
			DialTimeout: h.Timeouts.Dial.D(), Log: opts.Log})
		if err != nil {
			return nil, fmt.Errorf("http.webmail: %w", err)
		}
		opts.Webmail = wm
	}
	opts.Routes = routes
	srv, err := httpmail.New(opts)
	if err != nil {
		return nil, err
	}
	a.httpSrv = srv
	defer func() {
		if err != nil {
			srv.Close()
		}
	}()
	backends := strings.Join(served, ",")
	if h.Listen != "" {
		addr, err := srv.ListenTLS(h.Listen)
		if err != nil {
			return nil, fmt.Errorf("http.listen: %w", err)
		}
		a.bound = append(a.bound, boundListener{"https", "https", "implicit", addr.String(), backends})
		if *h.HTTP3 {
			host, _, _ := net.SplitHostPort(h.Listen)
			_, port, _ := net.SplitHostPort(addr.String())
			uaddr, err := srv.ListenHTTP3(net.JoinHostPort(host, port))
			if err != nil {
				return nil, fmt.Errorf("http.http3 (UDP %s): %w", net.JoinHostPort(host, port), err)
			}
			a.bound = append(a.bound, boundListener{"http3", "http3", "quic", uaddr.String(), backends})
		}
	}
	if h.PlainListen != "" {
		addr, err := srv.ListenPlain(h.PlainListen)
		if err != nil {
			return nil, fmt.Errorf("http.plain_listen: %w", err)
		}
		a.bound = append(a.bound, boundListener{"http-plain", "http-plain", "none", addr.String(), backends})
	}
	a.onShutdown = append(a.onShutdown, func(ctx context.Context) {
		if err := srv.Shutdown(ctx); err != nil {
			a.log.Info("http: drain cut short", "err", err)
		}
	})
	return func() { srv.Close() }, nil
}

// httpTracker adapts the registry to httpmail.Tracker.
type httpTracker struct{ reg *accounting.Registry }

func (t httpTracker) Admit(i httpmail.ConnInfo) (httpmail.Conn, string) {
	c, refusal := t.reg.Admit(accounting.ConnInfo{Protocol: i.Protocol, Listener: i.Listener, Client: i.Client, TLS: i.TLS})
	if c == nil { // never a typed nil in the interface
		return nil, refusal
	}
	if i.Protocol == httpmail.ProtoEAS {
		return easConn{c}, ""
	}
	return c, ""
}

// easConn gives an ActiveSync request's accounting entry the device gate.
type easConn struct{ *accounting.Conn }

func (c easConn) CheckDevice(user string, d httpmail.EASDevice) string {
	switch c.Conn.CheckDevice(user, accounting.Device{ID: d.ID, Type: d.Type, UserAgent: d.UserAgent, Command: d.Command}) {
	case "":
		return ""
	case accounting.GateDeviceType:
		return httpmail.DenyDeviceType
	default:
		return httpmail.DenyDeviceBlocked
	}
}

// easDeviceTypes is the device type policy of cfg's eas section (at start;
// a reload sets it again).
func easDeviceTypes(cfg *configs.Config) accounting.DeviceTypes {
	return accounting.DeviceTypes{Allow: cfg.EAS.AllowDeviceTypes, Block: cfg.EAS.BlockDeviceTypes}
}

func prefixes(ss []string) []netip.Prefix {
	var out []netip.Prefix
	for _, s := range ss {
		if p, err := configs.ParsePrefix(s); err == nil { // validated
			out = append(out, p)
		}
	}
	return out
}
