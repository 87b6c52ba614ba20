package adminapi_test

import (
	"encoding/base64"
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/mailgate/mailgate/accounting"
	"github.com/mailgate/mailgate/adminapi"
)

// apiRoutes is every API route, with a body where one is needed.
var apiRoutes = []struct{ method, path, body string }{
	{"GET", "/api/v1/connections/summary", ""},
	{"GET", "/api/v1/connections", ""},
	{"DELETE", "/api/v1/connections/1", ""},
	{"GET", "/api/v1/users", ""},
	{"GET", "/api/v1/users/bob@example.com", ""},
	{"GET", "/api/v1/users/bob@example.com/ips", ""},
	{"POST", "/api/v1/users/bob@example.com/drop", ""},
	{"PUT", "/api/v1/users/bob@example.com/protocols/imap", `{"enabled":false}`},
	{"GET", "/api/v1/domains/example.com", ""},
	{"PUT", "/api/v1/domains/example.com", `{"enabled":false}`},
	{"GET", "/api/v1/no-such-route", ""},    // unknown: 401 before 404
	{"PATCH", "/api/v1/users", ""},          // wrong method: 401 before 405
	{"GET", "/api/v1/users/../users", ""},   // non-canonical: 401 before 404
	{"GET", "/api", ""},                     // the prefix itself
	{"GET", "/api/v1/users?protocol=x", ""}, // bad input: 401 before 400
}

func TestAuth_everyAPIRoute(t *testing.T) {
	e := newEnv(t)
	var d drops
	e.login("imap", "192.0.2.1:1000", "bob@example.com", &d)

	bad := []struct {
		name string
		auth []string
	}{
		{"missing", nil},
		{"wrong token", []string{"Bearer not-the-token"}},
		{"token prefix", []string{"Bearer " + testToken[:len(testToken)-1]}},
		{"token plus suffix", []string{"Bearer " + testToken + "x"}},
		{"empty bearer", []string{"Bearer "}},
		{"scheme only", []string{"Bearer"}},
		{"token without scheme", []string{testToken}},
		{"basic", []string{"Basic " + base64.StdEncoding.EncodeToString([]byte("admin:"+testToken))}},
		{"two headers", []string{"Bearer " + testToken, "Bearer " + testToken}},
	}
	for _, rt := range apiRoutes {
		for _, b := range bad {
			t.Run(rt.method+" "+rt.path+"/"+b.name, func(t *testing.T) {
				r := e.raw(rt.method, rt.path, rt.body, b.auth...)
				wantError(t, r, http.StatusUnauthorized, adminapi.CodeUnauthorized)
				if got := r.header.Get("WWW-Authenticate"); got != `Bearer realm="mailgate"` {
					t.Errorf("WWW-Authenticate = %q", got)
				}
			})
		}
	}
	// Nothing above may have acted.
	if n := e.reg.Count("imap"); n != 1 || len(d.get()) != 0 {
		t.Fatalf("after unauthorised requests: imap count %d, drops %v; want 1, none", n, d.get())
	}
	if !e.reg.ProtocolEnabled("bob@example.com", "imap") || !e.reg.DomainEnabled("example.com") {
		t.Fatal("an unauthorised PUT changed policy")
	}

	good := []string{"Bearer " + testToken, "bearer " + testToken, "BEARER  " + testToken + " "}
	for _, rt := range apiRoutes {
		for _, a := range good {
			t.Run(rt.method+" "+rt.path+"/ok "+strings.Fields(a)[0], func(t *testing.T) {
				r := e.raw(rt.method, rt.path, rt.body, a)
				if r.status == http.StatusUnauthorized || r.status >= 500 {
					t.Fatalf("status = %d with the right token; body %s", r.status, r.body)
				}
			})
		}
	}
}

func TestAuth_healthWithoutToken(t *testing.T) {
	e := newEnv(t)
	for _, p := range []string{"/healthz", "/readyz"} {
		var h adminapi.Health
		e.ok(e.raw("GET", p, ""), &h)
		if h != (adminapi.Health{Status: "ok", Node: "test-node"}) {
			t.Errorf("GET %s = %+v", p, h)
		}
	}
}

func TestReadyz_notReady(t *testing.T) {
	e := newEnv(t, func(o *adminapi.Options) {
		o.Ready = func() error { return errors.New("listeners not started") }
	})
	er := wantError(t, e.raw("GET", "/readyz", ""), http.StatusServiceUnavailable, adminapi.CodeNotReady)
	if er.Message != "listeners not started" {
		t.Errorf("message = %q", er.Message)
	}
	e.ok(e.raw("GET", "/healthz", ""), nil)
}

func TestNew_requiresRegistryAndToken(t *testing.T) {
	reg := accounting.New(accounting.Options{})
	for _, tc := range []struct {
		name string
		opts adminapi.Options
	}{
		{"no registry", adminapi.Options{Token: "x"}},
		{"no token", adminapi.Options{Registry: reg}},
		{"blank token", adminapi.Options{Registry: reg, Token: " \n"}},
	} {
		if s, err := adminapi.New(tc.opts); err == nil || s != nil {
			t.Errorf("%s: New() = %v, %v; want an error", tc.name, s, err)
		}
	}
}

// TestLogs_actionsWithoutSecrets: mutating actions are logged at info with
// route, user, protocol and result; no token ever reaches the log.
func TestLogs_actionsWithoutSecrets(t *testing.T) {
	e := newEnv(t)
	e.login("imap", "192.0.2.1:1000", "bob@example.com", nil)
	e.raw("GET", "/api/v1/users", "", "Bearer wrong-secret-value")
	e.ok(e.do("POST", "/api/v1/users/bob@example.com/drop?protocol=imap", ""), nil)
	e.ok(e.do("PUT", "/api/v1/users/bob@example.com/protocols/pop", `{"enabled":false}`), nil)
	e.ok(e.do("PUT", "/api/v1/domains/example.org", `{"enabled":false}`), nil)

	logs := e.logs.String()
	for _, want := range []string{
		`level=INFO msg="admin api: drop user" node=test-node route="POST /api/v1/users/{user}/drop" user=bob@example.com protocol=imap dropped=1`,
		`level=INFO msg="admin api: set protocol" node=test-node route="PUT /api/v1/users/{user}/protocols/{protocol}" user=bob@example.com protocol=pop enabled=false drop=true dropped=0`,
		`level=INFO msg="admin api: set domain" node=test-node route="PUT /api/v1/domains/{domain}" domain=example.org enabled=false`,
		`msg="admin api: unauthorized request"`,
	} {
		if !strings.Contains(logs, want) {
			t.Errorf("logs lack %q:\n%s", want, logs)
		}
	}
	for _, secret := range []string{testToken, "wrong-secret-value", "Bearer", "Authorization"} {
		if strings.Contains(logs, secret) {
			t.Errorf("logs contain %q:\n%s", secret, logs)
		}
	}
}
