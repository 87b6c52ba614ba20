package adminapi

import (
	"errors"
	"log/slog"
	"net/http"
	"path"
	"runtime/debug"
	"strings"
	"sync/atomic"
	"time"

	"github.com/mailgate/mailgate/accounting"
	"github.com/mailgate/mailgate/cluster"
)

// DefaultAddr is where the admin API listens unless configured otherwise.
const DefaultAddr = "127.0.0.1:1880"

// Registry is what the API needs from the live registry;
// *accounting.Registry implements it.
type Registry interface {
	Summary() map[string]int
	Connections(accounting.Filter) []accounting.Info
	Users(protocol string) []accounting.UserRow
	User(user string) accounting.UserDetail
	UserIPs(user string) []accounting.IPRecord
	DropUser(user, protocol, reason string) int
	DropConn(id uint64, reason string) bool
	SetProtocolEnabled(user, protocol string, enabled, drop bool) (int, error)
	SetDomainEnabled(domain string, enabled, drop bool) (int, error)
	ProtocolEnabled(user, protocol string) bool
	DomainEnabled(userOrDomain string) bool
}

// connGetter is optional: when the registry has it, a drop by id logs the
// connection's user and protocol.
type connGetter interface {
	Get(id uint64) *accounting.Conn
}

var (
	_ Registry   = (*accounting.Registry)(nil)
	_ connGetter = (*accounting.Registry)(nil)
)

// Options configure a Server.
type Options struct {
	// Registry is the live registry. Required.
	Registry Registry
	// Token is a bearer token with the admin role, named LegacyTokenName;
	// surrounding white space (a token file's newline) is trimmed.
	Token string
	// Tokens are named bearer tokens with their roles. Token, Tokens or
	// both; at least one token is required.
	Tokens []Token
	// Logger receives the action and error logs. Nil means slog.Default().
	Logger *slog.Logger
	// Node names this node in /healthz and in the logs. Optional.
	Node string
	// Ready, if set, is asked by /readyz; an error makes it answer 503 with
	// the error's text (shown to callers without a token: keep it short).
	// Nil means always ready.
	Ready func() error
	// Audit receives an entry for every change made through the API (nil:
	// an in-memory accounting.AuditLog with the default bounds).
	Audit AuditTrail
	// RequireReason refuses a change without a reason (400).
	RequireReason bool
	// Reload, if set, serves POST /api/v1/reload (admin role): it reloads
	// the configuration as SIGHUP does. Nil: 501.
	Reload ReloadFunc
	// Cluster, when set, is the cluster this node belongs to: /api/v1/nodes
	// lists its nodes and /metrics has its numbers. Registry is then its
	// View.
	Cluster *cluster.Cluster
	// Metrics is what /metrics counts (nil: Registry). A cluster node's
	// metrics are its own: give it the local registry.
	Metrics MetricsSource
	// Upgrade, if set, serves POST /api/v1/upgrade (admin role), as
	// SIGUSR2 does. Nil: 501.
	Upgrade UpgradeFunc
	// ExtraNodes, on a single node, are the other processes its views
	// include (the old process of an upgrade while it drains).
	ExtraNodes func() []Node
	// Version is shown in the node list.
	Version string
}

// Server is the admin API. It is an http.Handler; it holds no state of its
// own beyond its options, so one Server may serve any number of listeners.
type Server struct {
	reg    Registry
	tokens atomic.Pointer[[]principal] // SetTokens replaces the set
	log    *slog.Logger
	node   string
	ready  func() error
	mux    *http.ServeMux
	// roles is the role each route pattern needs ("" for none).
	roles         map[string]string
	audit         AuditTrail
	requireReason atomic.Bool
	reloadFn      ReloadFunc
	upgradeFn     UpgradeFunc
	extraNodes    func() []Node
	cluster       *cluster.Cluster
	metrics       MetricsSource
	version       string
	started       time.Time
}

var _ http.Handler = (*Server)(nil)

// New returns the admin API handler.
func New(opts Options) (*Server, error) {
	if opts.Registry == nil {
		return nil, errors.New("adminapi: Options.Registry is required")
	}
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	if opts.Node != "" {
		log = log.With("node", opts.Node)
	}
	s := &Server{reg: opts.Registry, log: log, node: opts.Node, ready: opts.Ready, mux: http.NewServeMux(), roles: map[string]string{}, reloadFn: opts.Reload}
	s.cluster, s.metrics, s.version, s.started = opts.Cluster, opts.Metrics, opts.Version, time.Now()
	s.upgradeFn, s.extraNodes = opts.Upgrade, opts.ExtraNodes
	s.audit = opts.Audit
	if s.audit == nil {
		s.audit = accounting.NewAuditLog(nil, 0, 0, nil)
	}
	s.requireReason.Store(opts.RequireReason)
	ts := opts.Tokens
	if strings.TrimSpace(opts.Token) != "" {
		ts = append([]Token{{Name: LegacyTokenName, Role: accounting.RoleAdmin, Secret: opts.Token}}, ts...)
	}
	if len(ts) == 0 {
		return nil, errors.New("adminapi: Options.Token or Options.Tokens is required")
	}
	if err := s.SetTokens(ts); err != nil {
		return nil, err
	}
	s.routes()
	return s, nil
}

// SetToken replaces the whole token set with one admin token named
// LegacyTokenName. Surrounding white space is trimmed; an empty token is
// refused and the old set kept.
func (s *Server) SetToken(token string) error {
	if strings.TrimSpace(token) == "" {
		return errors.New("adminapi: empty token")
	}
	return s.SetTokens([]Token{{Name: LegacyTokenName, Role: accounting.RoleAdmin, Secret: token}})
}

// SetRequireReason turns the need for a reason on or off (a reload).
func (s *Server) SetRequireReason(on bool) { s.requireReason.Store(on) }

// SetTokens replaces the whole token set (a reload after a rotation): from
// the next request on only these are accepted. A set that does not check
// (see Token) is refused and the old one kept.
func (s *Server) SetTokens(ts []Token) error {
	ps, err := compileTokens(ts)
	if err != nil {
		return err
	}
	s.tokens.Store(&ps)
	return nil
}

func (s *Server) routes() {
	const (
		public   = ""
		viewer   = accounting.RoleViewer
		operator = accounting.RoleOperator
		admin    = accounting.RoleAdmin
	)
	s.handle("GET /healthz", public, s.healthz)
	s.handle("GET /readyz", public, s.readyz)

	s.handle("GET /api/v1/whoami", viewer, s.whoami)
	s.handle("GET /api/v1/nodes", viewer, s.listNodes)
	s.handle("GET /api/v1/connections/summary", viewer, s.summary)
	s.handle("GET /api/v1/connections", viewer, s.listConnections)
	s.handle("DELETE /api/v1/connections/{id}", operator, s.dropConnection)

	s.handle("GET /api/v1/users", viewer, s.listUsers)
	s.handle("GET /api/v1/users/{user}", viewer, s.userDetail)
	s.handle("GET /api/v1/users/{user}/ips", viewer, s.userIPs)
	s.handle("GET /api/v1/users/{user}/logins", viewer, s.userLogins)
	s.handle("POST /api/v1/users/{user}/drop", operator, s.dropUser)
	s.handle("PUT /api/v1/users/{user}/protocols/{protocol}", operator, s.setProtocol)

	s.handle("POST /api/v1/users/{user}/resync", operator, s.resync)
	s.handle("GET /api/v1/users/{user}/devices", viewer, s.userDevices)
	s.handle("POST /api/v1/users/{user}/devices/{id}/block", operator, s.blockDevice)
	s.handle("POST /api/v1/users/{user}/devices/{id}/allow", operator, s.allowDevice)
	s.handle("POST /api/v1/users/{user}/devices/{id}/drop", operator, s.dropDevice)
	s.handle("POST /api/v1/users/{user}/devices/{id}/resync", operator, s.resyncDevice)

	s.handle("GET /api/v1/domains/{domain}", viewer, s.getDomain)
	s.handle("PUT /api/v1/domains/{domain}", operator, s.setDomain)

	s.handle("GET /api/v1/blocks", viewer, s.listBlocks)
	s.handle("POST /api/v1/blocks", admin, s.addBlock)
	s.handle("DELETE /api/v1/blocks", admin, s.removeBlock)
	s.handle("GET /api/v1/lockouts", viewer, s.listLockouts)
	s.handle("DELETE /api/v1/lockouts", admin, s.clearLockout)
	s.handle("POST /api/v1/bulk", admin, s.bulk)
	s.handle("GET /api/v1/runtime", viewer, s.runtimeStats)
	s.handle("GET /api/v1/stats", viewer, s.stats)
	s.handle("GET /api/v1/audit", viewer, s.listAudit)
	s.handle("POST /api/v1/reload", admin, s.reload)
	s.handle("POST /api/v1/upgrade", admin, s.upgrade)
	s.routePage()
	s.routeMetrics()
	s.routePprof()
}

// handlerFunc is a route: it writes a success itself or returns an error,
// which ServeHTTP's wrapper turns into the JSON error shape.
type handlerFunc func(w http.ResponseWriter, r *http.Request) error

// handle registers a route that needs role (accounting.RoleViewer and up;
// "" for the routes that need no token). A caller below the role gets a 403
// before the route runs.
func (s *Server) handle(pattern, role string, fn handlerFunc) {
	s.roles[pattern] = role
	s.mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
		err := error(nil)
		if !allowed(r, role) {
			err = s.forbidden(r, role)
		} else {
			err = fn(w, r)
		}
		if err != nil {
			var e *Error
			if !errors.As(err, &e) && !errors.Is(err, accounting.ErrUnavailable) {
				s.log.Error("admin api: request failed", "route", r.Pattern, "err", err)
			}
			writeError(w, err)
		}
	})
}

// ServeHTTP authenticates /api/ requests, rejects non-canonical paths and
// turns the mux's own 404 and 405 into the JSON error shape.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	defer func() {
		if v := recover(); v != nil {
			if v == http.ErrAbortHandler {
				panic(v)
			}
			s.log.Error("admin api: panic", "method", r.Method, "path", r.URL.Path, "panic", v, "stack", string(debug.Stack()))
			writeError(w, apiErr(http.StatusInternalServerError, CodeInternal, "internal error"))
		}
	}()
	h := w.Header()
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")

	if needsAuth(r.URL.Path) {
		p := s.authenticate(r)
		if p == nil {
			s.unauthorized(w, r)
			return
		}
		r = withCaller(r, p)
	}
	// The mux would redirect "//x" or "/a/../b" with an HTML body; an API
	// client gets a JSON 404 instead.
	if !canonical(r.URL.EscapedPath()) {
		writeError(w, notFound("no such route: path is not canonical"))
		return
	}
	handler, pattern := s.mux.Handler(r)
	if pattern == "" { // the mux's 404 or 405: run it to learn which
		rec := &headerRecorder{header: http.Header{}}
		handler.ServeHTTP(rec, r)
		if rec.status == http.StatusMethodNotAllowed {
			if allow := rec.header.Get("Allow"); allow != "" {
				h.Set("Allow", allow)
			}
			writeError(w, apiErr(http.StatusMethodNotAllowed, CodeMethodNotAllowed, "method %s not allowed here", r.Method))
			return
		}
		writeError(w, notFound("no such route: %s %s", r.Method, quote(r.URL.Path)))
		return
	}
	s.mux.ServeHTTP(w, r)
}

// canonical mirrors the mux's path cleaning: a trailing slash is kept.
func canonical(p string) bool {
	if p == "" || p[0] != '/' {
		return false
	}
	c := path.Clean(p)
	if strings.HasSuffix(p, "/") && c != "/" {
		c += "/"
	}
	return c == p
}

// headerRecorder captures the status and headers of the mux's fallback
// handlers and discards their text bodies.
type headerRecorder struct {
	header http.Header
	status int
}

func (h *headerRecorder) Header() http.Header { return h.header }
func (h *headerRecorder) Write(b []byte) (int, error) {
	if h.status == 0 {
		h.status = http.StatusOK
	}
	return len(b), nil
}
func (h *headerRecorder) WriteHeader(status int) {
	if h.status == 0 {
		h.status = status
	}
}

// HTTPServer returns an http.Server for this API with timeouts suited to a
// local admin endpoint. An empty addr means DefaultAddr.
func (s *Server) HTTPServer(addr string) *http.Server {
	if addr == "" {
		addr = DefaultAddr
	}
	return &http.Server{
		Addr:              addr,
		Handler:           s,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      60 * time.Second, // a 100 000-row users list still fits
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    32 << 10,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
}

// Health is the body of /healthz and a ready /readyz.
type Health struct {
	Status string `json:"status"`
	Node   string `json:"node,omitempty"`
}

func (s *Server) healthz(w http.ResponseWriter, r *http.Request) error {
	writeJSON(w, http.StatusOK, Health{Status: "ok", Node: s.node})
	return nil
}

func (s *Server) readyz(w http.ResponseWriter, r *http.Request) error {
	if s.ready != nil {
		if err := s.ready(); err != nil {
			return apiErr(http.StatusServiceUnavailable, CodeNotReady, "%s", err.Error())
		}
	}
	writeJSON(w, http.StatusOK, Health{Status: "ok", Node: s.node})
	return nil
}
