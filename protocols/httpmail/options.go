package httpmail

import (
	"crypto/tls"
	"log/slog"
	"net/http"
	"net/netip"
	"net/url"
	"time"

	"github.com/mailgate/mailgate/internal/netx"
	"github.com/mailgate/mailgate/protocols"
)

// Protocol keys (accounting's) of the HTTP mail protocols.
const (
	ProtoEAS     = protocols.ProtoEAS
	ProtoEWS     = protocols.ProtoEWS // Autodiscover is counted as EWS (see DefaultPrefixes)
	ProtoMAPI    = protocols.ProtoMAPI
	ProtoWebDAV  = protocols.ProtoWebDAV
	ProtoWebmail = protocols.ProtoWebmail
)

// DefaultPrefixes are the path prefixes each protocol is routed by when its
// Route lists none. Matching ignores case (Exchange's IIS does, and clients
// write /autodiscover/ and /Autodiscover/ alike).
//
// Autodiscover is counted as EWS: it is an EWS-family service (its SOAP form
// is MS-OXWSADISC), it carries the same credentials as EWS and MAPI, it is
// the favourite target of password spraying, so its failed logins must count
// toward brute-force lockout, and a user disabled for EWS should not keep a
// working Autodiscover. It is proxied to the EWS backend.
var DefaultPrefixes = map[string][]string{
	ProtoEAS:     {"/Microsoft-Server-ActiveSync"},
	ProtoEWS:     {"/EWS/", "/autodiscover/"},
	ProtoMAPI:    {"/mapi/", "/rpc/"},
	ProtoWebDAV:  {"/dav/", "/caldav/", "/carddav/", "/.well-known/caldav", "/.well-known/carddav"},
	ProtoWebmail: {"/"},
}

// Route sends the requests of one protocol to its backend.
type Route struct {
	// Protocol is the accounting key: eas, ews, mapi, webdav or webmail.
	Protocol string
	// Prefixes of the request path (nil: DefaultPrefixes). The longest
	// match wins; webmail is tried last, as the fallback.
	Prefixes []string
	// Host, when set, limits the route to requests for that host name.
	Host string
	// Backend is http(s)://host:port[/base]; the request path is appended.
	Backend *url.URL
	// StripPrefix removes the matched prefix before appending the path and
	// names it in X-Forwarded-Prefix and X-Script-Name (Radicale's way).
	StripPrefix bool
	// PreserveHost forwards the client's Host instead of the backend's.
	PreserveHost bool
	// RewriteURLs (webdav only) says who translates the URLs when the
	// client-facing path differs from the backend's (StripPrefix or a
	// Backend with a path). True: this front maps them, both ways, in the
	// Destination and If request headers, in Location and
	// Content-Location, and in the DAV:href elements of XML bodies, and the
	// backend is not told the prefix. False: the backend is told the prefix
	// (X-Script-Name, X-Forwarded-Prefix, with StripPrefix) and writes its
	// URLs under it itself, as Radicale does. Nil: true when Backend has a
	// path, false otherwise. Either way, an absolute URL naming this front
	// in Destination and If gets the backend's scheme and host, and one
	// naming the backend in Location and Content-Location gets this
	// front's (see davurls.go).
	RewriteURLs *bool
	// TLS verifies an https backend (nil: system roots, the backend's host).
	TLS *tls.Config
}

// ConnInfo describes a live connection for the Tracker.
type ConnInfo struct {
	Protocol string
	Listener string // "https", "http3" or "http"
	Client   netip.AddrPort
	TLS      bool
}

// Tracker registers live connections: accounting.Registry behind a small
// adapter in cmd/mailgate. A request in flight and an open websocket are
// each one live connection.
type Tracker interface {
	// Admit registers a connection or refuses it: refusal is "blocked"
	// (answered 403) or "limit" (503 + Retry-After); the Conn is nil then.
	Admit(ConnInfo) (c Conn, refusal string)
}

// Conn is one live connection in the Tracker.
type Conn interface {
	protocols.Observer
	protocols.Gate
	// SetDropFunc installs what cuts the connection when an administrator
	// drops it (it may run at once if the drop came first).
	SetDropFunc(func(reason string))
	// Close unregisters the connection.
	Close() bool
}

// EASDevice is what an ActiveSync request says about its device: the
// DeviceId and DeviceType of its query (plain or base64), its User-Agent
// and its command.
type EASDevice struct {
	ID, Type, UserAgent, Command string
}

// DeviceGate is optional on a Conn: the device gate of ActiveSync. A Conn
// that has it (accounting's, behind a small adapter in cmd/mailgate) is
// asked about every EAS request that names a command or a device, after
// the login gate and before anything is forwarded.
type DeviceGate interface {
	// CheckDevice returns "" to let the request through, or why it is
	// refused: DenyDeviceBlocked (an administrator blocked this device of
	// user) or DenyDeviceType (the configuration refuses its type); the
	// answer is then a 403 from this front. user is the request's user, ""
	// when it names none. Let through, the device is the connection's: its
	// live request, and the user's device seen once the request is
	// authenticated.
	CheckDevice(user string, d EASDevice) string
}

// What DeviceGate.CheckDevice refuses for.
const (
	DenyDeviceBlocked = "device_blocked"
	DenyDeviceType    = "device_type"
)

// Webmail is the webmail-specific part of attribution: session cookies
// mapped to users, login forms, and the websocket relay. Package webmail
// implements it.
type Webmail interface {
	// SessionUser returns the user whose login created the session cookie
	// r carries, or "".
	SessionUser(r *http.Request) string
	// LoginUser returns the username when r submits the login form (its
	// body is restored for forwarding).
	LoginUser(r *http.Request) (user string, ok bool)
	// Observe sees the backend's response to every webmail request. user is
	// the request's user (from the form or the session), login whether r
	// was a login submission. It maps, rotates or forgets sessions and
	// returns LoginOK when the response completed a login, LoginFailed
	// when it refused one, LoginUnknown otherwise (an int, so that an
	// implementation needs no import of this package).
	Observe(r *http.Request, user string, login bool, resp *http.Response) int
	// RelayWebsocket upgrades r, dials target with hdr and relays frames
	// both ways until either side closes or a close code arrives on stop
	// (1008 for a drop, 1001 for shutdown). opened runs once both sides are
	// open. It writes an error response itself when the upgrade fails.
	RelayWebsocket(w http.ResponseWriter, r *http.Request, target *url.URL, hdr http.Header, opened func(), stop <-chan int) error
}

// What Webmail.Observe concluded.
const (
	LoginUnknown = 0
	LoginOK      = 1
	LoginFailed  = 2
)

// Options configure a Server. The zero value of every field but Routes
// works.
type Options struct {
	Routes []Route
	// Webmail attributes webmail requests and relays websockets (nil:
	// webmail is proxied, counted, and its websockets refused).
	Webmail Webmail
	// Tracker counts and gates (nil: nothing counted, nobody refused).
	Tracker Tracker
	// Log (nil: discard). Secrets never reach it at any level.
	Log *slog.Logger
	// TLSConfig holds the certificates of the HTTPS and HTTP/3 listeners.
	TLSConfig *tls.Config
	// TrustedProxies may send a PROXY v1/v2 header on the TCP listeners.
	TrustedProxies []netip.Prefix
	// RequireProxyHeader: a trusted peer must send one.
	RequireProxyHeader bool
	// ProxyHeaderTimeout (default 5s).
	ProxyHeaderTimeout time.Duration
	// TrustedForwarders are load balancers whose X-Forwarded-For,
	// X-Forwarded-Proto and Forwarded headers are believed; the client is
	// the nearest address in X-Forwarded-For that is not one of them.
	// Anyone else's forwarding headers are dropped.
	TrustedForwarders []netip.Prefix
	// ReadHeaderTimeout (default 30s) bounds reading a request head.
	ReadHeaderTimeout time.Duration
	// RequestTimeout (default 10m) bounds an ordinary request: the
	// read and write deadline set per request.
	RequestTimeout time.Duration
	// LongPollTimeout (default 65m) bounds the requests that wait on
	// purpose: EAS Ping and Sync (heartbeats up to 3540 s), MAPI
	// NotificationWait, and EWS (GetStreamingEvents, 1-30 min, is only
	// visible in the body, so every EWS request gets this deadline).
	LongPollTimeout time.Duration
	// IdleTimeout (default 2m) closes keep-alive connections without a request.
	IdleTimeout time.Duration
	// DialTimeout (default 10s) for backend connections.
	DialTimeout time.Duration
	// TLSHandshakeTimeout (default 15s).
	TLSHandshakeTimeout time.Duration
	// MaxHeaderBytes (default 1 MiB).
	MaxHeaderBytes int
	// RetryAfter is sent with 503 (default 30s).
	RetryAfter time.Duration
	// DAVBodyLimit (default 4 MiB) is the largest WebDAV request body
	// whose hrefs are mapped (RewriteURLs); a larger one is forwarded as it
	// came. Response bodies are mapped as they stream, at any size.
	DAVBodyLimit int64
	// CredentialTTL: a credential the backend accepted is trusted for this
	// long to name a request before its answer (an EAS Ping is counted as
	// its user while it waits). Default 15m.
	CredentialTTL time.Duration
}

// The defaults of the Options timeouts, for a config to take.
const (
	DefaultReadHeaderTimeout   = 30 * time.Second
	DefaultRequestTimeout      = 10 * time.Minute
	DefaultLongPollTimeout     = 65 * time.Minute // EAS Ping's heartbeat goes up to 59 min
	DefaultIdleTimeout         = 2 * time.Minute
	DefaultDialTimeout         = 10 * time.Second
	DefaultTLSHandshakeTimeout = 15 * time.Second
	DefaultMaxHeaderBytes      = http.DefaultMaxHeaderBytes
)

func (o *Options) proxyHeaderTimeout() time.Duration {
	return orDefault(o.ProxyHeaderTimeout, netx.DefaultProxyHeaderTimeout)
}
func (o *Options) readHeaderTimeout() time.Duration {
	return orDefault(o.ReadHeaderTimeout, DefaultReadHeaderTimeout)
}
func (o *Options) requestTimeout() time.Duration {
	return orDefault(o.RequestTimeout, DefaultRequestTimeout)
}
func (o *Options) longPollTimeout() time.Duration {
	return orDefault(o.LongPollTimeout, DefaultLongPollTimeout)
}
func (o *Options) idleTimeout() time.Duration { return orDefault(o.IdleTimeout, DefaultIdleTimeout) }
func (o *Options) dialTimeout() time.Duration { return orDefault(o.DialTimeout, DefaultDialTimeout) }
func (o *Options) handshakeTimeout() time.Duration {
	return orDefault(o.TLSHandshakeTimeout, DefaultTLSHandshakeTimeout)
}
func (o *Options) retryAfter() time.Duration    { return orDefault(o.RetryAfter, 30*time.Second) }
func (o *Options) credentialTTL() time.Duration { return orDefault(o.CredentialTTL, 15*time.Minute) }

func (o *Options) davBodyLimit() int64 {
	if o.DAVBodyLimit > 0 {
		return o.DAVBodyLimit
	}
	return 4 << 20
}

func (o *Options) maxHeaderBytes() int {
	if o.MaxHeaderBytes > 0 {
		return o.MaxHeaderBytes
	}
	return DefaultMaxHeaderBytes
}

func orDefault(d, def time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return def
}
