package configs

import (
	"errors"
	"fmt"
	"net/netip"
	"net/url"
	"strings"
	"time"

	"github.com/mailgate/mailgate/internal/netx"
	"github.com/mailgate/mailgate/protocols/httpmail"
	"github.com/mailgate/mailgate/protocols/webmail"
)

// HTTP configures the HTTP mail protocols front: EAS, EWS (with
// Autodiscover, counted as ews), MAPI (with /rpc/), WebDAV/CalDAV/CardDAV
// and webmail, on one HTTPS listener (HTTP/1.1 and HTTP/2; HTTP/3 on the
// same port over UDP) and an optional plain one. A protocol is served when
// its backend is set.
type HTTP struct {
	// Listen is the HTTPS address, IP:port (TCP; HTTP/3 uses the same port
	// over UDP). Needs certificates. Empty: no HTTPS listener.
	Listen string `yaml:"listen"`
	// HTTP3 serves HTTP/3 on Listen's port over UDP and advertises it with
	// Alt-Svc (default true).
	HTTP3 *bool `yaml:"http3"`
	// PlainListen is an optional plain-HTTP address for use behind a load
	// balancer that terminates TLS (list it in trusted_forwarders or have
	// it send PROXY). Empty: none.
	PlainListen string `yaml:"plain_listen"`
	// ProxyProtocol on the TCP listeners: trusted networks may send a PROXY
	// v1/v2 header; a header from anyone else is refused.
	ProxyProtocol ProxyProtocol `yaml:"proxy_protocol"`
	// TrustedForwarders (CIDRs or addresses) are balancers whose
	// X-Forwarded-For / X-Forwarded-Proto / Forwarded are believed;
	// everyone else's are dropped.
	TrustedForwarders []string `yaml:"trusted_forwarders"`
	// Timeouts; none of them cuts a long poll below long_poll.
	Timeouts HTTPTimeouts `yaml:"timeouts"`
	// MaxHeaderBytes bounds a request head (default 1 MiB).
	MaxHeaderBytes int `yaml:"max_header_bytes"`
	// The protocols. A protocol without a backend is not served.
	EAS     HTTPRoute   `yaml:"eas"`
	EWS     HTTPRoute   `yaml:"ews"`
	MAPI    HTTPRoute   `yaml:"mapi"`
	WebDAV  HTTPRoute   `yaml:"webdav"`
	Webmail HTTPWebmail `yaml:"webmail"`
}

// HTTPTimeouts of the HTTP front.
type HTTPTimeouts struct {
	// ReadHeader bounds reading a request head (default 30s).
	ReadHeader Duration `yaml:"read_header"`
	// Request is the read/write deadline of an ordinary request (default 10m).
	Request Duration `yaml:"request"`
	// LongPoll is the deadline of EAS Ping/Sync, MAPI NotificationWait and
	// EWS requests (default 65m: EAS heartbeats reach 3540 s).
	LongPoll Duration `yaml:"long_poll"`
	// Idle closes keep-alive connections without a request (default 2m).
	Idle Duration `yaml:"idle"`
	// Dial bounds connecting to a backend (default 10s).
	Dial Duration `yaml:"dial"`
	// TLSHandshake bounds the client TLS handshake (default 15s).
	TLSHandshake Duration `yaml:"tls_handshake"`
}

// HTTPRoute is one protocol's backend and the path prefixes routed to it.
type HTTPRoute struct {
	// Backend is http(s)://host:port[/base]; the request path is appended
	// (after the prefix when strip_prefix). Empty: the protocol is not served.
	Backend string `yaml:"backend"`
	// Prefixes of the request path, matched without case (default per
	// protocol: eas /Microsoft-Server-ActiveSync; ews /EWS/ and
	// /autodiscover/; mapi /mapi/ and /rpc/; webdav /dav/, /caldav/,
	// /carddav/, /.well-known/caldav, /.well-known/carddav; webmail /).
	Prefixes []string `yaml:"prefixes"`
	// StripPrefix removes the matched prefix before forwarding and names it
	// in X-Script-Name / X-Forwarded-Prefix (Radicale behind /dav/).
	StripPrefix bool `yaml:"strip_prefix"`
	// PreserveHost sends the client's Host instead of the backend's.
	PreserveHost bool `yaml:"preserve_host"`
	// RewriteURLs (webdav only): mailgate maps the URLs of Destination, If,
	// Location, Content-Location and DAV:href between the client-facing
	// path and the backend's (true), or tells the backend the prefix with
	// X-Script-Name / X-Forwarded-Prefix and leaves its URLs alone (false).
	// Default: true when backend has a path, false otherwise.
	RewriteURLs *bool `yaml:"rewrite_urls"`
	// CAFile, ServerName, InsecureSkipVerify verify an https backend.
	CAFile             string `yaml:"ca_file"`
	ServerName         string `yaml:"server_name"`
	InsecureSkipVerify bool   `yaml:"insecure_skip_verify"`
}

// HTTPWebmail is the webmail route and how its sessions are recognised.
type HTTPWebmail struct {
	HTTPRoute `yaml:",inline"`
	// Host limits webmail to requests for this host name (default: any).
	Host string `yaml:"host"`
	// LoginPath is where the login form posts, optionally with required
	// query parameters (default /login; Roundcube "/?_task=login", SOGo
	// "/SOGo/connect").
	LoginPath string `yaml:"login_path"`
	// UserField is the form or JSON field of the username (default user;
	// Roundcube _user, SOGo userName).
	UserField string `yaml:"user_field"`
	// Cookie is the session cookie set at login (default session;
	// Roundcube roundcube_sessid, SOGo 0xHIGHFLYxSOGo).
	Cookie string `yaml:"cookie"`
	// SessionTTL forgets a session unused for this long (default 12h).
	SessionTTL Duration `yaml:"session_ttl"`
	// MaxSessions bounds the session map (default 100000).
	MaxSessions int `yaml:"max_sessions"`
}

// NamedHTTPRoute is a route with its protocol key.
type NamedHTTPRoute struct {
	Protocol string
	Route    *HTTPRoute
}

// Routes returns the protocol routes by accounting key, in a fixed order.
func (h *HTTP) Routes() []NamedHTTPRoute {
	return []NamedHTTPRoute{{"eas", &h.EAS}, {"ews", &h.EWS}, {"mapi", &h.MAPI}, {"webdav", &h.WebDAV}, {"webmail", &h.Webmail.HTTPRoute}}
}

func (h *HTTP) setDefaults() {
	if h.HTTP3 == nil {
		t := true
		h.HTTP3 = &t
	}
	if h.ProxyProtocol.Timeout == 0 {
		h.ProxyProtocol.Timeout = Duration(netx.DefaultProxyHeaderTimeout)
	}
	if h.ProxyProtocol.Require == nil {
		t := true
		h.ProxyProtocol.Require = &t
	}
	t := &h.Timeouts
	for _, d := range []struct {
		v   *Duration
		def time.Duration
	}{{&t.ReadHeader, httpmail.DefaultReadHeaderTimeout}, {&t.Request, httpmail.DefaultRequestTimeout},
		{&t.LongPoll, httpmail.DefaultLongPollTimeout}, {&t.Idle, httpmail.DefaultIdleTimeout},
		{&t.Dial, httpmail.DefaultDialTimeout}, {&t.TLSHandshake, httpmail.DefaultTLSHandshakeTimeout}} {
		if *d.v == 0 {
			*d.v = Duration(d.def)
		}
	}
	if h.MaxHeaderBytes == 0 {
		h.MaxHeaderBytes = httpmail.DefaultMaxHeaderBytes
	}
	w := &h.Webmail
	if w.LoginPath == "" {
		w.LoginPath = webmail.DefaultLoginPath
	}
	if w.UserField == "" {
		w.UserField = webmail.DefaultUserField
	}
	if w.Cookie == "" {
		w.Cookie = webmail.DefaultCookie
	}
	if w.SessionTTL == 0 {
		w.SessionTTL = Duration(webmail.DefaultSessionTTL)
	}
	if w.MaxSessions == 0 {
		w.MaxSessions = webmail.DefaultMaxSessions
	}
}

// validate reports the first problem; messages start with the key path
// under http. (config.go prefixes "http.").
func (h *HTTP) validate(haveCerts bool) error {
	if h.Listen == "" && h.PlainListen == "" {
		return errors.New("listen: set listen (HTTPS) or plain_listen (or both)")
	}
	if h.Listen != "" {
		if _, err := netip.ParseAddrPort(h.Listen); err != nil {
			return fmt.Errorf("listen: %q is not IP:port", h.Listen)
		}
		if !haveCerts {
			return errors.New("listen: HTTPS needs at least one entry in certificates")
		}
	}
	if h.PlainListen != "" {
		if _, err := netip.ParseAddrPort(h.PlainListen); err != nil {
			return fmt.Errorf("plain_listen: %q is not IP:port", h.PlainListen)
		}
		if h.PlainListen == h.Listen {
			return errors.New("plain_listen: must differ from listen")
		}
	}
	for _, n := range h.ProxyProtocol.Trusted {
		if _, err := ParsePrefix(n); err != nil {
			return fmt.Errorf("proxy_protocol.trusted: %w", err)
		}
	}
	for _, n := range h.TrustedForwarders {
		if _, err := ParsePrefix(n); err != nil {
			return fmt.Errorf("trusted_forwarders: %w", err)
		}
	}
	if h.Timeouts.LongPoll < Duration(time.Hour) {
		return fmt.Errorf("timeouts.long_poll: %v would cut ActiveSync heartbeats (up to 3540s); use at least 1h", h.Timeouts.LongPoll.D())
	}
	if h.MaxHeaderBytes < 4096 {
		return errors.New("max_header_bytes: must be at least 4096")
	}
	served := 0
	prefixes := map[string]string{}
	for _, r := range h.Routes() {
		if r.Route.Backend == "" {
			if len(r.Route.Prefixes) > 0 {
				return fmt.Errorf("%s.prefixes: set %s.backend too (a protocol without a backend is not served)", r.Protocol, r.Protocol)
			}
			continue
		}
		served++
		u, err := url.Parse(r.Route.Backend)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
			return fmt.Errorf("%s.backend: %q is not an http(s)://host:port[/path] URL", r.Protocol, r.Route.Backend)
		}
		if r.Route.RewriteURLs != nil && r.Protocol != "webdav" {
			return fmt.Errorf("%s.rewrite_urls: only webdav rewrites URLs", r.Protocol)
		}
		if u.Scheme == "http" && (r.Route.CAFile != "" || r.Route.ServerName != "" || r.Route.InsecureSkipVerify) {
			return fmt.Errorf("%s.backend: ca_file, server_name and insecure_skip_verify need an https backend", r.Protocol)
		}
		for _, p := range r.Route.Prefixes {
			if !strings.HasPrefix(p, "/") {
				return fmt.Errorf("%s.prefixes: %q must start with /", r.Protocol, p)
			}
			if r.Protocol == "webmail" {
				continue
			}
			if other, dup := prefixes[strings.ToLower(p)]; dup {
				return fmt.Errorf("%s.prefixes: %q is also routed to %s", r.Protocol, p, other)
			}
			prefixes[strings.ToLower(p)] = r.Protocol
		}
	}
	if served == 0 {
		return errors.New("eas|ews|mapi|webdav|webmail.backend: no protocol has a backend; set at least one")
	}
	w := h.Webmail
	if !strings.HasPrefix(w.LoginPath, "/") {
		return fmt.Errorf("webmail.login_path: %q must start with /", w.LoginPath)
	}
	if strings.ContainsAny(w.Cookie, " \t;,=\"") {
		return fmt.Errorf("webmail.cookie: %q is not a cookie name", w.Cookie)
	}
	if w.MaxSessions < 0 {
		return errors.New("webmail.max_sessions: must not be negative")
	}
	return nil
}
