package adminapi

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/mailgate/mailgate/accounting"
)

// wwwAuthenticate is sent with every 401.
const wwwAuthenticate = `Bearer realm="mailgate"`

// Token is one bearer token the API accepts, with the name it acts under
// (in the logs and the audit trail) and its role (accounting.RoleViewer,
// RoleOperator or RoleAdmin). Exactly one of Secret and SHA256 is set.
type Token struct {
	Name string
	Role string
	// Secret is the token itself; surrounding white space (a token file's
	// newline) is trimmed.
	Secret string
	// SHA256 is the hex SHA-256 of the token, so that a config can hold the
	// hash alone.
	SHA256 string
}

// LegacyTokenName is the name of the single token of Options.Token (and of
// the config's admin.token or admin.token_file); its role is admin.
const LegacyTokenName = "admin"

// principal is a compiled Token: who, with which role, and the SHA-256 the
// presented token must hash to.
type principal struct {
	name, role string
	sum        [sha256.Size]byte
}

// compileTokens checks a token set and hashes the secrets. Names must be
// unique and not blank, roles known, and no two tokens may be the same
// secret (the name would then depend on the order).
func compileTokens(ts []Token) ([]principal, error) {
	if len(ts) == 0 {
		return nil, errors.New("adminapi: no token")
	}
	out := make([]principal, 0, len(ts))
	byName := map[string]bool{}
	bySum := map[[sha256.Size]byte]string{}
	for _, t := range ts {
		name := strings.TrimSpace(t.Name)
		if name == "" {
			return nil, errors.New("adminapi: a token has no name")
		}
		if byName[name] {
			return nil, fmt.Errorf("adminapi: two tokens are named %q", name)
		}
		byName[name] = true
		if accounting.RoleRank(t.Role) == 0 {
			return nil, fmt.Errorf("adminapi: token %q: role %q is not one of %s", name, t.Role, strings.Join(accounting.Roles, ", "))
		}
		p := principal{name: name, role: t.Role}
		secret := strings.TrimSpace(t.Secret)
		switch {
		case secret != "" && t.SHA256 != "":
			return nil, fmt.Errorf("adminapi: token %q: give the secret or its SHA-256, not both", name)
		case secret != "":
			p.sum = sha256.Sum256([]byte(secret))
		case t.SHA256 != "":
			b, err := hex.DecodeString(strings.TrimSpace(t.SHA256))
			if err != nil || len(b) != sha256.Size {
				return nil, fmt.Errorf("adminapi: token %q: the SHA-256 is not %d hex digits", name, 2*sha256.Size)
			}
			copy(p.sum[:], b)
		default:
			return nil, fmt.Errorf("adminapi: token %q is empty", name)
		}
		if other, dup := bySum[p.sum]; dup {
			return nil, fmt.Errorf("adminapi: tokens %q and %q are the same secret", other, name)
		}
		bySum[p.sum] = name
		out = append(out, p)
	}
	return out, nil
}

// CheckTokens reports what SetTokens would refuse in a token set.
func CheckTokens(ts []Token) error {
	_, err := compileTokens(ts)
	return err
}

// needsAuth reports whether a request path needs a token: the API (unknown
// /api/ paths too, so the route list is not disclosed to strangers) and the
// metrics.
func needsAuth(path string) bool {
	return path == "/api" || strings.HasPrefix(path, "/api/") || path == "/metrics"
}

// authenticate checks "Authorization: Bearer <token>" and returns whose it
// is, or nil. The scheme is case-insensitive (RFC 7235 §2.1). The presented
// token is hashed and compared with every token's hash in constant time,
// all of them every time, so that neither the token's length nor which
// entry matched shows in the timing.
func (s *Server) authenticate(r *http.Request) *principal {
	h := r.Header.Values("Authorization")
	if len(h) != 1 {
		return nil
	}
	scheme, tok, ok := strings.Cut(strings.TrimSpace(h[0]), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return nil
	}
	tok = strings.TrimSpace(tok)
	if tok == "" {
		return nil
	}
	sum := sha256.Sum256([]byte(tok))
	ps := *s.tokens.Load()
	match := -1
	for i := range ps {
		eq := subtle.ConstantTimeCompare(sum[:], ps[i].sum[:])
		match = subtle.ConstantTimeSelect(eq, i, match)
	}
	if match < 0 {
		return nil
	}
	p := ps[match]
	return &p
}

func (s *Server) unauthorized(w http.ResponseWriter, r *http.Request) {
	// Log who and where, never the header itself.
	s.log.Warn("admin api: unauthorized request", "method", r.Method, "path", r.URL.Path, "remote", r.RemoteAddr)
	w.Header().Set("WWW-Authenticate", wwwAuthenticate)
	writeError(w, apiErr(http.StatusUnauthorized, CodeUnauthorized, "missing or invalid bearer token"))
}

type principalKey struct{}

// caller is the token a request was authenticated with; nil on the paths
// that need none.
func caller(r *http.Request) *principal {
	p, _ := r.Context().Value(principalKey{}).(*principal)
	return p
}

func withCaller(r *http.Request, p *principal) *http.Request {
	return r.WithContext(context.WithValue(r.Context(), principalKey{}, p))
}

// allowed reports whether the caller's role reaches role ("" for the
// public routes).
func allowed(r *http.Request, role string) bool {
	if role == "" {
		return true
	}
	p := caller(r)
	return p != nil && accounting.RoleRank(p.role) >= accounting.RoleRank(role)
}

// forbidden answers a request whose token's role is too low. It is logged at
// info (it changed nothing, so it is not in the audit trail).
func (s *Server) forbidden(r *http.Request, role string) error {
	p := caller(r)
	s.log.Info("admin api: forbidden", "route", r.Pattern, "actor", p.name, "role", p.role, "needs", role, "remote", r.RemoteAddr)
	return apiErr(http.StatusForbidden, CodeForbidden, "token %s has role %s; %s %s needs %s",
		quote(p.name), p.role, r.Method, r.Pattern[strings.IndexByte(r.Pattern, ' ')+1:], role)
}

// Whoami is the body of GET /api/v1/whoami: the caller's token and what it
// may do, so that the page offers only those actions.
type Whoami struct {
	Name string `json:"name"`
	Role string `json:"role"`
	// Actions the role may take: drop, resync, enable, disable, domain,
	// device (block, allow, drop and resync an ActiveSync device), block,
	// unblock, clear_lockout, bulk, reload.
	Actions []string `json:"actions"`
	// RequireReason: a change without a reason is refused.
	RequireReason bool `json:"require_reason"`
}

// actionRoles is the role each change needs, by the name Whoami lists.
var actionRoles = []struct{ action, role string }{
	{"drop", accounting.RoleOperator},
	{"resync", accounting.RoleOperator},
	{"enable", accounting.RoleOperator},
	{"disable", accounting.RoleOperator},
	{"domain", accounting.RoleOperator},
	{"device", accounting.RoleOperator},
	{"block", accounting.RoleAdmin},
	{"unblock", accounting.RoleAdmin},
	{"clear_lockout", accounting.RoleAdmin},
	{"bulk", accounting.RoleAdmin},
	{"reload", accounting.RoleAdmin},
}

func (s *Server) whoami(w http.ResponseWriter, r *http.Request) error {
	if _, err := query(r); err != nil {
		return err
	}
	p := caller(r)
	out := Whoami{Name: p.name, Role: p.role, Actions: []string{}, RequireReason: s.requireReason.Load()}
	for _, a := range actionRoles {
		if accounting.RoleRank(p.role) >= accounting.RoleRank(a.role) {
			out.Actions = append(out.Actions, a.action)
		}
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}
