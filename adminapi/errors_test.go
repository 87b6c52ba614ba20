package adminapi_test

import (
	"encoding/json"
	"net/http"
	"testing"

	"github.com/mailgate/mailgate/adminapi"
)

// TestErrors_shape: every failure, the mux's own 404 and 405 included, is
// the one JSON error shape.
func TestErrors_shape(t *testing.T) {
	e := newEnv(t)
	tok := []string{"Bearer " + testToken}
	for _, tc := range []struct {
		name, method, path, body string
		auth                     []string
		status                   int
		code, allow              string
	}{
		{"unknown api route", "GET", "/api/v1/nope", "", tok, 404, adminapi.CodeNotFound, ""},
		{"unknown version", "GET", "/api/v2/connections", "", tok, 404, adminapi.CodeNotFound, ""},
		{"unknown page", "GET", "/nope", "", nil, 404, adminapi.CodeNotFound, ""},
		{"unknown asset", "GET", "/ui/nope.js", "", nil, 404, adminapi.CodeNotFound, ""},
		{"trailing slash", "GET", "/api/v1/users/", "", tok, 404, adminapi.CodeNotFound, ""},
		{"double slash", "GET", "/api/v1//users", "", tok, 404, adminapi.CodeNotFound, ""},
		{"dot dot", "GET", "/api/v1/users/../connections", "", tok, 404, adminapi.CodeNotFound, ""},
		{"leading double slash", "GET", "//api/v1/users", "", nil, 404, adminapi.CodeNotFound, ""},
		{"too deep", "GET", "/api/v1/users/bob/ips/extra", "", tok, 404, adminapi.CodeNotFound, ""},
		{"delete users", "DELETE", "/api/v1/users", "", tok, 405, adminapi.CodeMethodNotAllowed, "GET, HEAD"},
		{"post summary", "POST", "/api/v1/connections/summary", "", tok, 405, adminapi.CodeMethodNotAllowed, "DELETE, GET, HEAD"}, // DELETE: {id}="summary" is a 400
		{"get by id", "GET", "/api/v1/connections/7", "", tok, 405, adminapi.CodeMethodNotAllowed, "DELETE"},
		{"get drop", "GET", "/api/v1/users/bob/drop", "", tok, 405, adminapi.CodeMethodNotAllowed, "POST"},
		{"post protocol", "POST", "/api/v1/users/bob/protocols/imap", `{"enabled":false}`, tok, 405, adminapi.CodeMethodNotAllowed, "PUT"},
		{"delete domain", "DELETE", "/api/v1/domains/example.com", "", tok, 405, adminapi.CodeMethodNotAllowed, "GET, HEAD, PUT"},
		{"put healthz", "PUT", "/healthz", "", nil, 405, adminapi.CodeMethodNotAllowed, "GET, HEAD"},
		{"unauthorized", "GET", "/api/v1/users", "", nil, 401, adminapi.CodeUnauthorized, ""},
		{"bad protocol", "GET", "/api/v1/users?protocol=x", "", tok, 400, adminapi.CodeUnknownProtocol, ""},
		{"bad ip", "GET", "/api/v1/connections?ip=x", "", tok, 400, adminapi.CodeBadRequest, ""},
		{"bad body", "PUT", "/api/v1/domains/example.com", `{`, tok, 400, adminapi.CodeBadRequest, ""},
		{"unknown param", "GET", "/api/v1/connections/summary?x=1", "", tok, 400, adminapi.CodeBadRequest, ""},
		{"no connection", "DELETE", "/api/v1/connections/42", "", tok, 404, adminapi.CodeNotFound, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := e.raw(tc.method, tc.path, tc.body, tc.auth...)
			wantError(t, r, tc.status, tc.code)
			if got := r.header.Get("Allow"); got != tc.allow {
				t.Errorf("Allow = %q, want %q", got, tc.allow)
			}
			if got := r.header.Get("Cache-Control"); got != "no-store" {
				t.Errorf("Cache-Control = %q, want no-store", got)
			}
		})
	}
}

// TestErrors_neverPanic throws odd methods and paths at the server: the
// answer is always JSON and never a 5xx.
func TestErrors_neverPanic(t *testing.T) {
	e := newEnv(t)
	e.login("imap", "192.0.2.1:1000", "bob@example.com", nil)
	paths := []string{
		"/api/v1/users/%25", "/api/v1/users/%2525/ips", "/api/v1/users/%C0%AF", "/api/v1/users/%E2%80%AE",
		"/api/v1/users/bob@example.com/protocols/%2F", "/api/v1/users/bob@example.com/protocols/mapi%2Bews",
		"/api/v1/users/bob@example.com/protocols/+", "/api/v1/connections/18446744073709551615",
		"/api/v1/connections/18446744073709551616", "/api/v1/connections/%00", "/api/v1/domains/%2E",
		"/api/v1/connections?ip=", "/api/v1/connections?ip=%5B%3A%3A1%5D", "/api/v1/connections?user=%FF",
		"/api/v1/users?protocol=%FF", "/api/v1/users/bob@example.com/drop?protocol=",
		"/api/v1/connections?;", "/api/v1/connections?a&b&c", "/api/v1/users?protocol=all&",
	}
	methods := []string{"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"}
	bodies := []string{"", `{"enabled":true}`, `{"enabled":false,"drop":false}`, "\x00\xff", `{"enabled":1e999}`}
	for _, p := range paths {
		for _, m := range methods {
			for _, b := range bodies {
				r := e.do(m, p, b)
				if r.status >= 500 {
					t.Errorf("%s %s %q: status %d; body %s", m, p, b, r.status, r.body)
				}
				if m != "HEAD" && !json.Valid(r.body) {
					t.Errorf("%s %s %q: body is not JSON: %q", m, p, b, r.body)
				}
				if ct := r.header.Get("Content-Type"); ct != "application/json" {
					t.Errorf("%s %s %q: Content-Type %q", m, p, b, ct)
				}
			}
		}
	}
}

func TestHead_noBody(t *testing.T) {
	e := newEnv(t)
	r := e.do("HEAD", "/api/v1/connections/summary", "")
	if r.status != http.StatusOK || len(r.body) != 0 {
		t.Fatalf("HEAD summary = %d with %d body bytes", r.status, len(r.body))
	}
}
