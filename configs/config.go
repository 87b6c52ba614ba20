// Package configs holds mailgate's typed configuration, its strict YAML
// decoding (an unknown key is an error naming the key and its line), the
// defaults and Validate. Only cmd/mailgate reads it; every other package gets
// its own Options.
package configs

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/mailgate/mailgate/accounting"
	"github.com/mailgate/mailgate/internal/netx"
	"github.com/mailgate/mailgate/protocols"
	"github.com/mailgate/mailgate/proxy"
)

// Config is the whole file. See mailgate.example.yaml for every key.
type Config struct {
	// Node names this instance in logs and the API.
	Node string `yaml:"node"`
	// LogLevel is debug, info, warn or error. Secrets are never logged at any level.
	LogLevel string `yaml:"log_level"`
	// ShutdownTimeout bounds the graceful drain on SIGTERM (default 30s).
	ShutdownTimeout Duration `yaml:"shutdown_timeout"`
	// DrainTimeout: after a binary upgrade (SIGUSR2, mailgate upgrade) the
	// old process keeps its sessions until they end or this long (default
	// 1h), then says goodbye to the rest spread over DrainSpread (default
	// 5m), so that they do not all reconnect in the same second.
	DrainTimeout Duration `yaml:"drain_timeout"`
	DrainSpread  Duration `yaml:"drain_spread"`
	// State is the bbolt file that keeps policy, last logins, blocks and the
	// IP history across restarts. Empty: memory only (a warning is logged).
	State string `yaml:"state"`
	// HistoryPerUser bounds each user's authenticated-IP history (default 100).
	HistoryPerUser int `yaml:"history_per_user"`
	// HistoryLogins is how many login attempts each user's login history
	// keeps, over every protocol (default 50; -1: none kept).
	HistoryLogins int `yaml:"history_logins"`
	// HistoryLoginUsers bounds the users with a login history, the one
	// seen longest ago forgotten first (default 100000).
	HistoryLoginUsers int `yaml:"history_login_users"`
	// GCPercent is the Go garbage collector's target (GOGC): how far the
	// heap may grow past what is live before a collection. mailgate's memory
	// is mostly idle sessions, so it trades a little CPU for memory: 50 by
	// default (Go's is 100). The GOGC environment variable, when set, wins.
	// -1 turns the collector off (only with GOMEMLIMIT; not for production).
	GCPercent int   `yaml:"gc_percent"`
	Admin     Admin `yaml:"admin"`
	// Certificates served to clients, picked by SNI; the first is the default.
	Certificates []Certificate `yaml:"certificates"`
	Listeners    []Listener    `yaml:"listeners"`
	// HTTP is the HTTPS listener for EAS, MAPI, EWS, WebDAV and webmail
	// (nil: none). See http.go.
	HTTP       *HTTP      `yaml:"http"`
	Limits     Limits     `yaml:"limits"`
	BruteForce BruteForce `yaml:"brute_force"`
	// Resync hooks per protocol key (imap, pop, smtp, xmpp, eas, ...).
	Resync map[string]ResyncHook `yaml:"resync"`
	// EAS is the ActiveSync device policy (the route is http.eas).
	EAS EAS `yaml:"eas"`
	// Cluster joins this node to others through Redis (nil: single node).
	Cluster *Cluster `yaml:"cluster"`
}

// EAS is the ActiveSync device policy, applied by the HTTP front before a
// request reaches the backend. Types are matched without regard to case
// against the DeviceType a request names.
type EAS struct {
	// AllowDeviceTypes, when not empty, lists the only device types let in
	// (a request that names no type is then refused).
	AllowDeviceTypes []string `yaml:"allow_device_types"`
	// BlockDeviceTypes are refused, whatever AllowDeviceTypes says.
	BlockDeviceTypes []string `yaml:"block_device_types"`
}

// maxDeviceTypeLen bounds a device type (EAS clients send short names:
// iPhone, Android, WindowsMail, SAMSUNGSMG991B).
const maxDeviceTypeLen = 64

// validate reports the first problem; messages start with the key under eas.
func (e *EAS) validate(easServed bool) error {
	seen := map[string]string{}
	for _, l := range []struct {
		key   string
		types []string
	}{{"allow_device_types", e.AllowDeviceTypes}, {"block_device_types", e.BlockDeviceTypes}} {
		for i, t := range l.types {
			v := strings.TrimSpace(t)
			switch {
			case v == "":
				return fmt.Errorf("%s[%d]: empty", l.key, i)
			case len(v) > maxDeviceTypeLen:
				return fmt.Errorf("%s[%d]: %q is over %d bytes", l.key, i, v, maxDeviceTypeLen)
			case strings.ContainsFunc(v, func(c rune) bool { return c < 0x21 || c == 0x7f }):
				return fmt.Errorf("%s[%d]: %q has white space or control characters", l.key, i, v)
			}
			k := strings.ToLower(v)
			if other, dup := seen[k]; dup && other != l.key {
				return fmt.Errorf("%s[%d]: %q is also in %s", l.key, i, v, other)
			}
			seen[k] = l.key
		}
	}
	if len(seen) > 0 && !easServed {
		return errors.New("allow_device_types, block_device_types: ActiveSync is not served (set http.eas.backend)")
	}
	return nil
}

// BruteForce locks out an IP or a user after repeated failed logins.
type BruteForce struct {
	// MaxFailures in Window lock out (default 10; -1 disables).
	MaxFailures int      `yaml:"max_failures"`
	Window      Duration `yaml:"window"`      // default 10m
	Lockout     Duration `yaml:"lockout"`     // first lockout, doubling (default 5m)
	MaxLockout  Duration `yaml:"max_lockout"` // cap (default 1h)
}

// ResyncHook is run by a resync: an argv (no shell; {user} and {protocol}
// are substituted) or a webhook URL receiving a JSON POST.
type ResyncHook struct {
	Command []string `yaml:"command"`
	URL     string   `yaml:"url"`
	Timeout Duration `yaml:"timeout"` // default 30s
}

// Admin is the HTTP admin API.
type Admin struct {
	// Listen address (default 127.0.0.1:1880). Empty string disables the API.
	Listen string `yaml:"listen"`
	// Token is a bearer token with the admin role, named "admin". Prefer
	// TokenFile, or Tokens.
	Token string `yaml:"token"`
	// TokenFile holds that token (surrounding whitespace trimmed).
	TokenFile string `yaml:"token_file"`
	// Tokens are named tokens with roles; they may come alongside Token or
	// TokenFile (then none may be named "admin").
	Tokens []AdminTokenConf `yaml:"tokens"`
	// RequireReason refuses a change made through the API without a reason
	// (the X-Mailgate-Reason header or "reason" in the body).
	RequireReason bool `yaml:"require_reason"`
	// AuditKeep bounds the audit trail to this many entries (default
	// 10000; -1: no bound on the count).
	AuditKeep int `yaml:"audit_keep"`
	// AuditDays drops audit entries older than this many days (default 90;
	// -1: no bound on the age). At least one of the two bounds is on.
	AuditDays int `yaml:"audit_days"`
}

// AdminTokenConf is one named token of admin.tokens: a file holding the
// token, or the token's SHA-256 in hex (so that the config holds no secret),
// and the role it acts with: viewer, operator or admin.
type AdminTokenConf struct {
	Name        string `yaml:"name"`
	TokenFile   string `yaml:"token_file"`
	TokenSHA256 string `yaml:"token_sha256"`
	Role        string `yaml:"role"`
}

// AdminTokenValue is a token as the admin API takes it: exactly one of
// Secret (read from the file) and SHA256 is set.
type AdminTokenValue struct {
	Name, Role, Secret, SHA256 string
}

// Certificate is one PEM certificate chain and its key.
type Certificate struct {
	Cert string `yaml:"cert"`
	Key  string `yaml:"key"`
}

// Listener is one client-facing socket and the backend behind it.
type Listener struct {
	Name string `yaml:"name"`
	// Protocol: imap, pop, smtp or xmpp.
	Protocol string `yaml:"protocol"`
	// Role of an smtp listener: mx (port 25: no AUTH expected), submission
	// (587: STARTTLS, AUTH) or submissions (465: implicit TLS). Default:
	// submissions when tls is implicit, else submission.
	Role   string `yaml:"role"`
	Listen string `yaml:"listen"`
	// TLS toward the client: none, starttls or implicit.
	TLS protocols.TLSMode `yaml:"tls"`
	// RequireTLSForLogin hides plaintext login on a plain link (LOGINDISABLED).
	RequireTLSForLogin bool          `yaml:"require_tls_for_login"`
	ProxyProtocol      ProxyProtocol `yaml:"proxy_protocol"`
	// MaxConnections caps live connections on this listener (0 = no cap).
	MaxConnections int `yaml:"max_connections"`
	// LoginTimeout bounds the pre-auth phase (default 3m).
	LoginTimeout Duration `yaml:"login_timeout"`
	// IdleTimeout closes a relayed session with no traffic either way (default 1h).
	IdleTimeout Duration `yaml:"idle_timeout"`
	Backend     Backend  `yaml:"backend"`
}

// ProxyProtocol says whom to believe about the client address.
type ProxyProtocol struct {
	// Trusted networks (CIDR or address) allowed to send a PROXY v1/v2 header.
	// A header from anyone else is refused. Empty: PROXY is not accepted.
	Trusted []string `yaml:"trusted"`
	// Require a header from trusted peers (default true, as the spec says a
	// receiver must not guess). false: a trusted peer without a header is taken
	// at its socket address once Timeout passes or it speaks first.
	Require *bool `yaml:"require"`
	// Timeout to receive the header (default 5s).
	Timeout Duration `yaml:"timeout"`
}

// Backend is the mail server behind a listener.
type Backend struct {
	Address string `yaml:"address"`
	// TLS toward the backend: none, starttls or implicit.
	TLS protocols.TLSMode `yaml:"tls"`
	// ServerName for certificate verification (default: the address host).
	ServerName string `yaml:"server_name"`
	// CAFile verifies the backend certificate (default: system roots).
	CAFile string `yaml:"ca_file"`
	// InsecureSkipVerify disables backend certificate verification (tests only).
	InsecureSkipVerify bool `yaml:"insecure_skip_verify"`
	// ClientAddress: how the real client address reaches the backend:
	// proxy-v2, imap-id (IMAP only), xclient (SMTP only) or none.
	ClientAddress string `yaml:"client_address"`
	// DialTimeout (default 5s).
	DialTimeout Duration `yaml:"dial_timeout"`
}

// Limits applied by the gate.
type Limits struct {
	// PerUserIP caps live connections per user and client IP, per protocol (default imap: 20).
	PerUserIP map[string]int `yaml:"per_user_ip"`
	// PerUser caps live connections per user, per protocol (default: none).
	PerUser map[string]int `yaml:"per_user"`
	// PerIP caps live connections from one client IP, all protocols (0: none).
	PerIP int `yaml:"per_ip"`
}

// Duration is a time.Duration written as "30s", "5m".
type Duration time.Duration

// UnmarshalYAML parses a Go duration string.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	v, err := time.ParseDuration(n.Value)
	if err != nil || v < 0 {
		return fmt.Errorf("line %d: %q is not a duration (write e.g. 30s, 5m)", n.Line, n.Value)
	}
	*d = Duration(v)
	return nil
}

// D returns the value as time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// Load reads, decodes strictly, defaults and validates a file.
func Load(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	c, err := Parse(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}

// DefaultAdminListen is where the admin API listens when the config has no
// admin.listen key. An explicit admin.listen: "" disables the API.
const DefaultAdminListen = "127.0.0.1:1880"

// Parse decodes YAML strictly, applies defaults and validates.
func Parse(b []byte) (*Config, error) {
	// admin.listen's default is set before decoding: only a key that is
	// absent keeps it, so listen: "" can mean "no admin API".
	c := Config{Admin: Admin{Listen: DefaultAdminListen}}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil && !errors.Is(err, io.EOF) {
		return nil, cleanYAMLError(err)
	}
	c.SetDefaults()
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return &c, nil
}

// cleanYAMLError turns "field foo not found in type configs.Listener" into
// "unknown key foo".
func cleanYAMLError(err error) error {
	s := err.Error()
	s = strings.TrimPrefix(s, "yaml: unmarshal errors:\n  ")
	s = strings.ReplaceAll(s, "\n  ", "; ")
	if i := strings.Index(s, "field "); i >= 0 && strings.Contains(s, " not found in type ") {
		s = strings.Replace(s, "field ", "unknown key ", 1)
		s = s[:strings.Index(s, " not found in type ")]
	}
	return errors.New(s)
}

// SetDefaults fills unset values.
func (c *Config) SetDefaults() {
	if c.Node == "" {
		c.Node, _ = os.Hostname()
	}
	if c.LogLevel == "" {
		c.LogLevel = "info"
	}
	if c.Cluster != nil {
		c.Cluster.setDefaults()
	}
	if c.ShutdownTimeout == 0 {
		c.ShutdownTimeout = Duration(30 * time.Second)
	}
	if c.DrainTimeout == 0 {
		c.DrainTimeout = Duration(time.Hour)
	}
	if c.DrainSpread == 0 {
		c.DrainSpread = Duration(5 * time.Minute)
	}
	for i := range c.Listeners {
		l := &c.Listeners[i]
		if l.Name == "" {
			l.Name = fmt.Sprintf("%s-%d", l.Protocol, i)
		}
		if l.TLS == "" {
			l.TLS = protocols.TLSNone
		}
		if l.LoginTimeout == 0 {
			l.LoginTimeout = Duration(protocols.DefaultLimits.LoginTimeout)
		}
		if l.IdleTimeout == 0 {
			l.IdleTimeout = Duration(proxy.DefaultIdleTimeout)
		}
		if l.ProxyProtocol.Timeout == 0 {
			l.ProxyProtocol.Timeout = Duration(netx.DefaultProxyHeaderTimeout)
		}
		if l.ProxyProtocol.Require == nil {
			t := true
			l.ProxyProtocol.Require = &t
		}
		if l.Backend.TLS == "" {
			l.Backend.TLS = protocols.TLSNone
		}
		if l.Protocol == "smtp" && l.Role == "" {
			l.Role = "submission"
			if l.TLS == protocols.TLSImplicit {
				l.Role = "submissions"
			}
		}
		if l.Backend.ClientAddress == "" {
			l.Backend.ClientAddress = "none"
		}
		if l.Backend.DialTimeout == 0 {
			l.Backend.DialTimeout = Duration(proxy.DefaultDialTimeout)
		}
	}
	if c.Limits.PerUserIP == nil {
		c.Limits.PerUserIP = map[string]int{}
	}
	if _, ok := c.Limits.PerUserIP["imap"]; !ok {
		c.Limits.PerUserIP["imap"] = 20
	}
	if c.HistoryPerUser == 0 {
		c.HistoryPerUser = accounting.DefaultHistoryPerUser
	}
	if c.HistoryLogins == 0 {
		c.HistoryLogins = accounting.DefaultLoginHistory
	}
	if c.HistoryLoginUsers == 0 {
		c.HistoryLoginUsers = accounting.DefaultLoginHistoryUsers
	}
	if c.Admin.AuditKeep == 0 {
		c.Admin.AuditKeep = accounting.DefaultAuditKeep
	}
	if c.Admin.AuditDays == 0 {
		c.Admin.AuditDays = accounting.DefaultAuditDays
	}
	if c.GCPercent == 0 {
		c.GCPercent = 50
	}
	if c.HTTP != nil {
		c.HTTP.setDefaults()
	}
	bf := &c.BruteForce
	def := accounting.DefaultBruteForce
	if bf.MaxFailures == 0 {
		bf.MaxFailures = def.MaxFailures
	}
	if bf.Window == 0 {
		bf.Window = Duration(def.Window)
	}
	if bf.Lockout == 0 {
		bf.Lockout = Duration(def.Lockout)
	}
	if bf.MaxLockout == 0 {
		bf.MaxLockout = Duration(def.MaxLockout)
	}
	for p, h := range c.Resync {
		if h.Timeout == 0 {
			h.Timeout = Duration(accounting.DefaultResyncTimeout)
			c.Resync[p] = h
		}
	}
}

// ProtocolKeys are the accounting protocol keys limits and hooks refer to.
var ProtocolKeys = protocols.Keys

func validKey(p string) bool {
	for _, k := range ProtocolKeys {
		if k == p {
			return true
		}
	}
	return false
}

// Protocols that have a listener implementation.
var streamProtocols = map[string]bool{protocols.ProtoIMAP: true, protocols.ProtoPOP: true, protocols.ProtoSMTP: true, protocols.ProtoXMPP: true}

// Validate reports the first problem, naming the key.
func (c *Config) Validate() error {
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		return fmt.Errorf("log_level: %q is not one of debug, info, warn, error", c.LogLevel)
	}
	if c.Admin.Listen != "" {
		if _, err := netip.ParseAddrPort(c.Admin.Listen); err != nil {
			return fmt.Errorf("admin.listen: %q is not IP:port", c.Admin.Listen)
		}
		if c.Admin.Token == "" && c.Admin.TokenFile == "" && len(c.Admin.Tokens) == 0 {
			return errors.New("admin: token or token_file is required (the API always needs a token), or a list of named tokens")
		}
		if c.Admin.Token != "" && c.Admin.TokenFile != "" {
			return errors.New("admin: set token or token_file, not both")
		}
	}
	if err := c.Admin.validateTokens(); err != nil {
		return err
	}
	if c.Cluster != nil {
		if err := c.Cluster.validate(); err != nil {
			return err
		}
	}
	if c.Admin.AuditKeep < -1 || c.Admin.AuditDays < -1 {
		return errors.New("admin.audit_keep, admin.audit_days: a positive number, or -1 for no bound")
	}
	if c.Admin.AuditKeep == -1 && c.Admin.AuditDays == -1 {
		return errors.New("admin.audit_keep, admin.audit_days: not both -1: the audit trail must be bounded")
	}
	for i, crt := range c.Certificates {
		if crt.Cert == "" || crt.Key == "" {
			return fmt.Errorf("certificates[%d]: cert and key are both required", i)
		}
	}
	if len(c.Listeners) == 0 && c.HTTP == nil {
		return errors.New("listeners: at least one listener (or an http section) is required")
	}
	if c.HTTP != nil {
		if err := c.HTTP.validate(len(c.Certificates) > 0); err != nil {
			return fmt.Errorf("http.%w", err)
		}
	}
	names := map[string]bool{}
	for i, l := range c.Listeners {
		where := fmt.Sprintf("listeners[%d] (%s)", i, l.Name)
		if names[l.Name] {
			return fmt.Errorf("%s: duplicate name", where)
		}
		names[l.Name] = true
		if !streamProtocols[l.Protocol] {
			return fmt.Errorf("%s.protocol: %q is not supported (supported: imap, pop, smtp, xmpp)", where, l.Protocol)
		}
		if l.Protocol == "smtp" {
			if err := oneOf(l.Role, "mx", "submission", "submissions"); err != nil {
				return fmt.Errorf("%s.role: %w", where, err)
			}
		} else if l.Role != "" {
			return fmt.Errorf("%s.role: only smtp listeners have a role", where)
		}
		if _, err := netip.ParseAddrPort(l.Listen); err != nil {
			return fmt.Errorf("%s.listen: %q is not IP:port", where, l.Listen)
		}
		if err := oneOf(l.TLS, protocols.TLSModes...); err != nil {
			return fmt.Errorf("%s.tls: %w", where, err)
		}
		if l.TLS != protocols.TLSNone && len(c.Certificates) == 0 {
			return fmt.Errorf("%s.tls: %s needs at least one entry in certificates", where, l.TLS)
		}
		for _, n := range l.ProxyProtocol.Trusted {
			if _, err := ParsePrefix(n); err != nil {
				return fmt.Errorf("%s.proxy_protocol.trusted: %w", where, err)
			}
		}
		if l.MaxConnections < 0 {
			return fmt.Errorf("%s.max_connections: must not be negative", where)
		}
		b := l.Backend
		if b.Address == "" {
			return fmt.Errorf("%s.backend.address: required", where)
		}
		if err := oneOf(b.TLS, protocols.TLSModes...); err != nil {
			return fmt.Errorf("%s.backend.tls: %w", where, err)
		}
		if err := oneOf(b.ClientAddress, "none", "proxy-v2", "imap-id", "xclient"); err != nil {
			return fmt.Errorf("%s.backend.client_address: %w", where, err)
		}
		if b.ClientAddress == "imap-id" && l.Protocol != protocols.ProtoIMAP {
			return fmt.Errorf("%s.backend.client_address: imap-id is only for imap listeners", where)
		}
		if (l.Protocol == protocols.ProtoPOP || l.Protocol == protocols.ProtoXMPP) && b.ClientAddress != "none" && b.ClientAddress != "proxy-v2" {
			return fmt.Errorf("%s.backend.client_address: %s listeners pass the client address with proxy-v2 (or none)", where, l.Protocol)
		}
		if b.ClientAddress == "xclient" && l.Protocol != "smtp" {
			return fmt.Errorf("%s.backend.client_address: xclient is only for smtp listeners", where)
		}
	}
	for name, m := range map[string]map[string]int{"per_user_ip": c.Limits.PerUserIP, "per_user": c.Limits.PerUser} {
		for p, n := range m {
			if !validKey(p) {
				return fmt.Errorf("limits.%s: %q is not a protocol (want one of %s)", name, p, strings.Join(ProtocolKeys, ", "))
			}
			if n < 0 {
				return fmt.Errorf("limits.%s.%s: must not be negative", name, p)
			}
		}
	}
	if c.Limits.PerIP < 0 {
		return errors.New("limits.per_ip: must not be negative")
	}
	if c.HistoryPerUser < 0 {
		return errors.New("history_per_user: must not be negative")
	}
	if c.HistoryLogins < -1 {
		return errors.New("history_logins: a positive number, or -1 for no login history")
	}
	if c.HistoryLoginUsers < 0 {
		return errors.New("history_login_users: must not be negative")
	}
	if c.GCPercent < -1 {
		return errors.New("gc_percent: -1 (off) or a positive percentage")
	}
	if c.BruteForce.MaxFailures < -1 {
		return errors.New("brute_force.max_failures: -1 disables, otherwise it must be positive")
	}
	if c.BruteForce.MaxLockout < c.BruteForce.Lockout {
		return errors.New("brute_force.max_lockout: must be at least lockout")
	}
	if err := c.EAS.validate(c.HTTP != nil && c.HTTP.EAS.Backend != ""); err != nil {
		return fmt.Errorf("eas.%w", err)
	}
	for p, h := range c.Resync {
		if !validKey(p) {
			return fmt.Errorf("resync: %q is not a protocol (want one of %s)", p, strings.Join(ProtocolKeys, ", "))
		}
		if (len(h.Command) == 0) == (h.URL == "") {
			return fmt.Errorf("resync.%s: set exactly one of command or url", p)
		}
		if h.URL != "" && !strings.HasPrefix(h.URL, "http://") && !strings.HasPrefix(h.URL, "https://") {
			return fmt.Errorf("resync.%s.url: %q is not an http(s) URL", p, h.URL)
		}
		if len(h.Command) > 0 && !strings.HasPrefix(h.Command[0], "/") {
			return fmt.Errorf("resync.%s.command: the program must be an absolute path, got %q", p, h.Command[0])
		}
	}
	return nil
}

func oneOf[T ~string](v T, allowed ...T) error {
	names := make([]string, len(allowed))
	for i, a := range allowed {
		if v == a {
			return nil
		}
		names[i] = string(a)
	}
	return fmt.Errorf("%q is not one of %s", v, strings.Join(names, ", "))
}

// ParsePrefix accepts a CIDR or a bare address (a /32 or /128).
func ParsePrefix(s string) (netip.Prefix, error) {
	if p, err := netip.ParsePrefix(s); err == nil {
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%q is neither a CIDR nor an address", s)
	}
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// legacyTokenName names the token of admin.token or admin.token_file.
const legacyTokenName = "admin"

// validateTokens checks admin.tokens without reading the files.
func (a *Admin) validateTokens() error {
	names := map[string]bool{}
	if a.Token != "" || a.TokenFile != "" {
		names[legacyTokenName] = true
	}
	for i, t := range a.Tokens {
		where := fmt.Sprintf("admin.tokens[%d]", i)
		if t.Name != "" {
			where += " (" + t.Name + ")"
		}
		switch {
		case strings.TrimSpace(t.Name) == "":
			return fmt.Errorf("%s.name: required (it names the actor in the logs and the audit)", where)
		case t.Name != strings.TrimSpace(t.Name) || strings.ContainsFunc(t.Name, func(r rune) bool { return r < ' ' || r == 0x7f }):
			return fmt.Errorf("%s.name: no surrounding spaces or control characters", where)
		case len(t.Name) > 64:
			return fmt.Errorf("%s.name: at most 64 bytes", where)
		case names[t.Name] && t.Name == legacyTokenName && (a.Token != "" || a.TokenFile != ""):
			return fmt.Errorf("%s.name: %q is taken by admin.token or admin.token_file", where, t.Name)
		case names[t.Name]:
			return fmt.Errorf("%s.name: duplicate name", where)
		}
		names[t.Name] = true
		if accounting.RoleRank(t.Role) == 0 {
			if t.Role == "" {
				return fmt.Errorf("%s.role: required (one of %s)", where, strings.Join(accounting.Roles, ", "))
			}
			return fmt.Errorf("%s.role: %q is not one of %s", where, t.Role, strings.Join(accounting.Roles, ", "))
		}
		switch {
		case t.TokenFile != "" && t.TokenSHA256 != "":
			return fmt.Errorf("%s: set token_file or token_sha256, not both", where)
		case t.TokenFile == "" && t.TokenSHA256 == "":
			return fmt.Errorf("%s: empty: set token_file or token_sha256", where)
		case t.TokenSHA256 != "":
			if b, err := hex.DecodeString(t.TokenSHA256); err != nil || len(b) != sha256.Size {
				return fmt.Errorf("%s.token_sha256: want %d hex digits (sha256sum of the token)", where, 2*sha256.Size)
			}
		}
	}
	return nil
}

// AdminTokens returns every token the admin API accepts: admin.token or
// admin.token_file as one token named "admin" with the role admin, then
// admin.tokens, each token_file read now (a reload reads them again). A
// file that cannot be read or holds only white space is an error.
func (c *Config) AdminTokens() ([]AdminTokenValue, error) {
	var out []AdminTokenValue
	if c.Admin.Token != "" || c.Admin.TokenFile != "" {
		t, err := c.AdminToken()
		if err != nil {
			return nil, err
		}
		out = append(out, AdminTokenValue{Name: legacyTokenName, Role: accounting.RoleAdmin, Secret: t})
	}
	for i, t := range c.Admin.Tokens {
		v := AdminTokenValue{Name: t.Name, Role: t.Role, SHA256: strings.ToLower(t.TokenSHA256)}
		if t.TokenFile != "" {
			b, err := os.ReadFile(t.TokenFile)
			if err != nil {
				return nil, fmt.Errorf("admin.tokens[%d] (%s).token_file: %w", i, t.Name, err)
			}
			if v.Secret = strings.TrimSpace(string(b)); v.Secret == "" {
				return nil, fmt.Errorf("admin.tokens[%d] (%s).token_file: %s is empty", i, t.Name, t.TokenFile)
			}
		}
		out = append(out, v)
	}
	if len(out) == 0 {
		return nil, errors.New("admin: no token configured")
	}
	return out, nil
}

// AdminToken returns the configured token, reading TokenFile if set,
// without surrounding white space; a blank one is an error.
func (c *Config) AdminToken() (string, error) {
	if c.Admin.TokenFile == "" {
		t := strings.TrimSpace(c.Admin.Token)
		if t == "" {
			return "", errors.New("admin.token: blank")
		}
		return t, nil
	}
	b, err := os.ReadFile(c.Admin.TokenFile)
	if err != nil {
		return "", fmt.Errorf("admin.token_file: %w", err)
	}
	t := strings.TrimSpace(string(b))
	if t == "" {
		return "", fmt.Errorf("admin.token_file: %s is empty", c.Admin.TokenFile)
	}
	return t, nil
}
