package adminapi_test

import (
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"strings"
	"testing"

	"github.com/mailgate/mailgate/accounting"
	"github.com/mailgate/mailgate/adminapi"
)

// The named tokens of the role tests. The operator's is given by its hash,
// as a config with token_sha256 gives it.
const (
	viewerToken   = "viewer-secret-1"
	operatorToken = "operator-secret-2"
	adminToken    = "admin-secret-3"
)

func sha256Hex(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

func withRoles(o *adminapi.Options) {
	o.Tokens = []adminapi.Token{
		{Name: "vera", Role: accounting.RoleViewer, Secret: viewerToken},
		{Name: "otto", Role: accounting.RoleOperator, SHA256: sha256Hex(operatorToken)},
		{Name: "ada", Role: accounting.RoleAdmin, Secret: adminToken + "\n"},
	}
	o.Reload = func() (adminapi.ReloadResult, error) { return adminapi.ReloadResult{}, nil }
	o.Upgrade = func() (adminapi.UpgradeResult, error) { return adminapi.UpgradeResult{OldPID: 1, NewPID: 2}, nil }
}

// roleRoutes is every route that needs a token, with the role it needs:
// the specification the server is held to. TestRoles_everyRouteListed
// checks that no route is missing.
var roleRoutes = []struct {
	pattern     string // as registered
	method      string
	path, body  string
	role        string
	description string
}{
	{"GET /metrics", "GET", "/metrics", "", accounting.RoleViewer, "metrics"},
	{"GET /api/v1/whoami", "GET", "/api/v1/whoami", "", accounting.RoleViewer, "whoami"},
	{"GET /api/v1/nodes", "GET", "/api/v1/nodes", "", accounting.RoleViewer, "nodes"},
	{"GET /api/v1/connections/summary", "GET", "/api/v1/connections/summary", "", accounting.RoleViewer, "summary"},
	{"GET /api/v1/connections", "GET", "/api/v1/connections", "", accounting.RoleViewer, "connections"},
	{"DELETE /api/v1/connections/{id}", "DELETE", "/api/v1/connections/1", "", accounting.RoleOperator, "drop a connection"},
	{"GET /api/v1/users", "GET", "/api/v1/users", "", accounting.RoleViewer, "rows"},
	{"GET /api/v1/users/{user}", "GET", "/api/v1/users/bob@example.com", "", accounting.RoleViewer, "user"},
	{"GET /api/v1/users/{user}/ips", "GET", "/api/v1/users/bob@example.com/ips", "", accounting.RoleViewer, "ips"},
	{"GET /api/v1/users/{user}/logins", "GET", "/api/v1/users/bob@example.com/logins", "", accounting.RoleViewer, "logins"},
	{"POST /api/v1/users/{user}/drop", "POST", "/api/v1/users/bob@example.com/drop", "", accounting.RoleOperator, "drop a user"},
	{"PUT /api/v1/users/{user}/protocols/{protocol}", "PUT", "/api/v1/users/bob@example.com/protocols/imap", `{"enabled":false}`, accounting.RoleOperator, "disable a protocol"},
	{"POST /api/v1/users/{user}/resync", "POST", "/api/v1/users/bob@example.com/resync?protocol=imap", "", accounting.RoleOperator, "resync"},
	{"GET /api/v1/users/{user}/devices", "GET", "/api/v1/users/bob@example.com/devices", "", accounting.RoleViewer, "devices"},
	{"POST /api/v1/users/{user}/devices/{id}/block", "POST", "/api/v1/users/bob@example.com/devices/dev1/block", `{"reason":"lost"}`, accounting.RoleOperator, "block a device"},
	{"POST /api/v1/users/{user}/devices/{id}/allow", "POST", "/api/v1/users/bob@example.com/devices/dev1/allow", "", accounting.RoleOperator, "allow a device"},
	{"POST /api/v1/users/{user}/devices/{id}/drop", "POST", "/api/v1/users/bob@example.com/devices/dev1/drop", "", accounting.RoleOperator, "drop a device"},
	{"POST /api/v1/users/{user}/devices/{id}/resync", "POST", "/api/v1/users/bob@example.com/devices/dev1/resync", "", accounting.RoleOperator, "resync a device"},
	{"GET /api/v1/domains/{domain}", "GET", "/api/v1/domains/example.com", "", accounting.RoleViewer, "domain"},
	{"PUT /api/v1/domains/{domain}", "PUT", "/api/v1/domains/example.com", `{"enabled":false}`, accounting.RoleOperator, "disable a domain"},
	{"GET /api/v1/blocks", "GET", "/api/v1/blocks", "", accounting.RoleViewer, "blocks"},
	{"POST /api/v1/blocks", "POST", "/api/v1/blocks", `{"network":"203.0.113.0/24"}`, accounting.RoleAdmin, "block"},
	{"DELETE /api/v1/blocks", "DELETE", "/api/v1/blocks?network=203.0.113.0/24", "", accounting.RoleAdmin, "unblock"},
	{"GET /api/v1/lockouts", "GET", "/api/v1/lockouts", "", accounting.RoleViewer, "lockouts"},
	{"DELETE /api/v1/lockouts", "DELETE", "/api/v1/lockouts?kind=ip&key=192.0.2.1", "", accounting.RoleAdmin, "clear a lockout"},
	{"POST /api/v1/bulk", "POST", "/api/v1/bulk", `{"users":["bob@example.com"],"action":"drop","protocol":"all"}`, accounting.RoleAdmin, "bulk"},
	{"GET /api/v1/runtime", "GET", "/api/v1/runtime", "", accounting.RoleViewer, "runtime"},
	{"GET /api/v1/stats", "GET", "/api/v1/stats", "", accounting.RoleViewer, "stats"},
	{"GET /api/v1/audit", "GET", "/api/v1/audit", "", accounting.RoleViewer, "audit"},
	{"POST /api/v1/reload", "POST", "/api/v1/reload", "", accounting.RoleAdmin, "reload"},
	{"POST /api/v1/upgrade", "POST", "/api/v1/upgrade", "", accounting.RoleAdmin, "upgrade"},
	{"GET /api/v1/debug/pprof/profile", "GET", "/api/v1/debug/pprof/profile?seconds=0", "", accounting.RoleViewer, "cpu profile (refused: seconds=0)"},
	{"GET /api/v1/debug/pprof/{name}", "GET", "/api/v1/debug/pprof/goroutine", "", accounting.RoleViewer, "profile"},
}

// publicRoutes need no token.
var publicRoutes = []string{"GET /healthz", "GET /readyz", "GET /{$}", "GET /ui/{file}"}

func TestRoles_everyRouteListed(t *testing.T) {
	e := newEnv(t, withRoles)
	listed := map[string]string{}
	for _, rt := range roleRoutes {
		listed[rt.pattern] = rt.role
	}
	for _, p := range publicRoutes {
		listed[p] = ""
	}
	got := e.api.RouteRoles()
	for pattern, role := range got {
		want, ok := listed[pattern]
		if !ok {
			t.Errorf("route %s (role %q) is not in the role matrix: add it to roleRoutes", pattern, role)
			continue
		}
		if role != want {
			t.Errorf("route %s needs role %q, the matrix says %q", pattern, role, want)
		}
	}
	for pattern := range listed {
		if _, ok := got[pattern]; !ok {
			t.Errorf("the matrix lists %s, which the server does not register", pattern)
		}
	}
}

// TestRoles_matrix: every route with every role. Below the route's role
// the answer is 403 forbidden and nothing changes; at or above it the
// route runs.
func TestRoles_matrix(t *testing.T) {
	tokens := []struct {
		name, role, token string
	}{
		{"vera", accounting.RoleViewer, viewerToken},
		{"otto", accounting.RoleOperator, operatorToken},
		{"ada", accounting.RoleAdmin, adminToken},
		{"admin", accounting.RoleAdmin, testToken}, // Options.Token: the legacy single token
	}
	for _, tok := range tokens {
		for _, rt := range roleRoutes {
			t.Run(tok.name+"/"+rt.description, func(t *testing.T) {
				e := newEnv(t, withRoles)
				var d drops
				e.login("imap", "192.0.2.1:1000", "bob@example.com", &d)
				r := e.raw(rt.method, rt.path, rt.body, "Bearer "+tok.token)
				if accounting.RoleRank(tok.role) < accounting.RoleRank(rt.role) {
					er := wantError(t, r, http.StatusForbidden, adminapi.CodeForbidden)
					if !strings.Contains(er.Message, tok.role) || !strings.Contains(er.Message, rt.role) {
						t.Errorf("403 message %q names neither the role %s nor the one needed, %s", er.Message, tok.role, rt.role)
					}
					if n := e.reg.Count("imap"); n != 1 || len(d.get()) != 0 {
						t.Errorf("a forbidden %s acted: imap count %d, drops %v", rt.description, n, d.get())
					}
					if !e.reg.ProtocolEnabled("bob@example.com", "imap") || !e.reg.DomainEnabled("example.com") {
						t.Error("a forbidden request changed policy")
					}
					if len(e.reg.Blocks()) != 0 {
						t.Error("a forbidden request added a block")
					}
					logs := e.logs.String()
					if !strings.Contains(logs, `level=INFO msg="admin api: forbidden"`) || !strings.Contains(logs, "actor="+tok.name) {
						t.Errorf("the 403 is not logged at info with the actor:\n%s", logs)
					}
					return
				}
				if r.status == http.StatusForbidden || r.status == http.StatusUnauthorized || r.status >= 500 {
					t.Fatalf("%s with role %s: status %d, want the route to run; body %s", rt.description, tok.role, r.status, r.body)
				}
			})
		}
	}
}

func TestWhoami(t *testing.T) {
	e := newEnv(t, withRoles)
	for _, tc := range []struct {
		token, name, role, actions string
	}{
		{viewerToken, "vera", "viewer", ""},
		{operatorToken, "otto", "operator", "drop resync enable disable domain device"},
		{adminToken, "ada", "admin", "drop resync enable disable domain device block unblock clear_lockout bulk reload"},
		{testToken, "admin", "admin", "drop resync enable disable domain device block unblock clear_lockout bulk reload"},
	} {
		var w adminapi.Whoami
		e.ok(e.raw("GET", "/api/v1/whoami", "", "Bearer "+tc.token), &w)
		if w.Name != tc.name || w.Role != tc.role || strings.Join(w.Actions, " ") != tc.actions {
			t.Errorf("whoami with %s's token = %+v, want %s %s [%s]", tc.name, w, tc.name, tc.role, tc.actions)
		}
	}
	// The operator's token is known by its hash only: the hash itself is
	// not a token.
	wantError(t, e.raw("GET", "/api/v1/whoami", "", "Bearer "+sha256Hex(operatorToken)), http.StatusUnauthorized, adminapi.CodeUnauthorized)
}

func TestSetTokens_rotatesTheWholeSet(t *testing.T) {
	e := newEnv(t, withRoles)
	if err := e.api.SetTokens([]adminapi.Token{{Name: "new", Role: accounting.RoleViewer, Secret: "new-secret"}}); err != nil {
		t.Fatal(err)
	}
	for _, old := range []string{viewerToken, operatorToken, adminToken, testToken} {
		wantError(t, e.raw("GET", "/api/v1/whoami", "", "Bearer "+old), http.StatusUnauthorized, adminapi.CodeUnauthorized)
	}
	var w adminapi.Whoami
	e.ok(e.raw("GET", "/api/v1/whoami", "", "Bearer new-secret"), &w)
	if w.Name != "new" {
		t.Errorf("whoami = %+v", w)
	}
	// A bad set is refused and the running one kept.
	if err := e.api.SetTokens([]adminapi.Token{{Name: "x", Role: "root", Secret: "s"}}); err == nil {
		t.Error("SetTokens accepted the role root")
	}
	e.ok(e.raw("GET", "/api/v1/whoami", "", "Bearer new-secret"), nil)
}

func TestCheckTokens(t *testing.T) {
	ok := adminapi.Token{Name: "a", Role: accounting.RoleAdmin, Secret: "s1"}
	for _, tc := range []struct {
		name string
		ts   []adminapi.Token
		want string
	}{
		{"none", nil, "no token"},
		{"no name", []adminapi.Token{{Role: "admin", Secret: "s"}}, "no name"},
		{"unknown role", []adminapi.Token{{Name: "a", Role: "root", Secret: "s"}}, `role "root" is not one of viewer, operator, admin`},
		{"duplicate name", []adminapi.Token{ok, {Name: "a", Role: "viewer", Secret: "s2"}}, `two tokens are named "a"`},
		{"both", []adminapi.Token{{Name: "a", Role: "admin", Secret: "s", SHA256: sha256Hex("s")}}, "not both"},
		{"empty", []adminapi.Token{{Name: "a", Role: "admin", Secret: " \n"}}, "is empty"},
		{"bad hash", []adminapi.Token{{Name: "a", Role: "admin", SHA256: "abc"}}, "64 hex digits"},
		{"same secret", []adminapi.Token{ok, {Name: "b", Role: "viewer", SHA256: sha256Hex("s1")}}, "same secret"},
		{"good", []adminapi.Token{ok, {Name: "b", Role: "viewer", SHA256: strings.ToUpper(sha256Hex("s2"))}}, ""},
	} {
		err := adminapi.CheckTokens(tc.ts)
		if tc.want == "" {
			if err != nil {
				t.Errorf("%s: CheckTokens = %v", tc.name, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: CheckTokens = %v, want %q", tc.name, err, tc.want)
		}
	}
}
