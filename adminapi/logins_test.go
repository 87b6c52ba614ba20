package adminapi_test

import (
	"net/http"
	"net/netip"
	"strings"
	"testing"

	"github.com/mailgate/mailgate/adminapi"
)

func TestUserLogins(t *testing.T) {
	e := newEnv(t, withRoles)
	e.login("imap", "192.0.2.1:1000", "bob@example.com", nil)
	c := e.conn("imap", "192.0.2.2:1000", nil)
	c.AuthAttempt("bob@example.com", "PLAIN")
	c.CheckLogin("bob@example.com")
	c.AuthFailed("bob@example.com", "PLAIN", false)
	e.ok(e.raw("PUT", "/api/v1/users/bob@example.com/protocols/pop", `{"enabled":false}`, "Bearer "+adminToken), nil)
	c = e.conn("pop", "192.0.2.3:1000", nil)
	c.AuthAttempt("bob@example.com", "USER")
	c.CheckLogin("bob@example.com")

	var l adminapi.LoginList
	e.ok(e.raw("GET", "/api/v1/users/BOB@example.com/logins", "", "Bearer "+viewerToken), &l)
	if l.User != "bob@example.com" || len(l.Logins) != 3 {
		t.Fatalf("logins = %+v", l)
	}
	want := []adminapi.LoginAttemptJSON{
		{Time: t0, First: t0, Count: 1, Protocol: "pop", IP: netip.MustParseAddr("192.0.2.3"), Mechanism: "USER", Result: "gated", Reason: "disabled"},
		{Time: t0, First: t0, Count: 1, Protocol: "imap", IP: netip.MustParseAddr("192.0.2.2"), Mechanism: "PLAIN", Result: "failed"},
		{Time: t0, First: t0, Count: 1, Protocol: "imap", IP: netip.MustParseAddr("192.0.2.1"), Mechanism: "LOGIN", Result: "ok"},
	}
	for i, w := range want {
		if l.Logins[i] != w {
			t.Errorf("logins[%d] = %+v, want %+v", i, l.Logins[i], w)
		}
	}
	// An unknown user has an empty history, not an error.
	e.ok(e.do("GET", "/api/v1/users/nobody@example.com/logins", ""), &l)
	if len(l.Logins) != 0 || !strings.Contains(string(e.do("GET", "/api/v1/users/nobody@example.com/logins", "").body), `"logins":[]`) {
		t.Errorf("nobody's logins = %+v", l)
	}
	wantError(t, e.do("GET", "/api/v1/users/bob@example.com/logins?limit=1", ""), http.StatusBadRequest, adminapi.CodeBadRequest)
}
