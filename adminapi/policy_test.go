package adminapi_test

import (
	"net/http"
	"net/netip"
	"strings"
	"testing"

	"github.com/mailgate/mailgate/accounting"
	"github.com/mailgate/mailgate/adminapi"
)

func TestPolicyRoutesNeedToken(t *testing.T) {
	e := newEnv(t)
	for _, rt := range []struct{ method, path string }{
		{"POST", "/api/v1/users/a@example.com/resync?protocol=imap"},
		{"GET", "/api/v1/blocks"}, {"POST", "/api/v1/blocks"}, {"DELETE", "/api/v1/blocks?network=192.0.2.1"},
		{"GET", "/api/v1/lockouts"}, {"DELETE", "/api/v1/lockouts?kind=ip&key=192.0.2.1"},
		{"POST", "/api/v1/bulk"},
	} {
		wantError(t, e.raw(rt.method, rt.path, ""), http.StatusUnauthorized, adminapi.CodeUnauthorized)
		wantError(t, e.raw(rt.method, rt.path, "", "Bearer wrong"), http.StatusUnauthorized, adminapi.CodeUnauthorized)
	}
}

func TestResyncRoute(t *testing.T) {
	e := newEnv(t)
	c := e.reg.Register(accounting.ConnInfo{Protocol: "imap", Client: netip.MustParseAddrPort("192.0.2.1:1")})
	c.Authenticated("alice@example.com", "LOGIN")
	var res adminapi.ResyncResult
	e.ok(e.do("POST", "/api/v1/users/alice@example.com/resync?protocol=imap", ""), &res)
	if len(res.Steps) != 3 || res.Steps[0].Detail != "dropped 1 session(s)" || e.reg.Count("imap") != 0 {
		t.Fatalf("resync = %+v", res)
	}
	wantError(t, e.do("POST", "/api/v1/users/alice@example.com/resync", ""), http.StatusBadRequest, adminapi.CodeUnknownProtocol)
	wantError(t, e.do("POST", "/api/v1/users/"+strings.ReplaceAll("x; rm -rf", " ", "%20")+"/resync?protocol=imap", ""), http.StatusBadRequest, adminapi.CodeBadRequest)
}

func TestBlocksRoutes(t *testing.T) {
	e := newEnv(t)
	c := e.reg.Register(accounting.ConnInfo{Protocol: "imap", Client: netip.MustParseAddrPort("203.0.113.5:1")})
	_ = c
	var added struct {
		Block   adminapi.BlockJSON `json:"block"`
		Dropped int                `json:"dropped"`
	}
	e.ok(e.do("POST", "/api/v1/blocks", `{"network":"203.0.113.0/24","reason":"spam","duration":"1h"}`), &added)
	if added.Dropped != 1 || added.Block.Network != "203.0.113.0/24" || added.Block.Expires == nil {
		t.Fatalf("add = %+v", added)
	}
	var list struct {
		Blocks []adminapi.BlockJSON `json:"blocks"`
	}
	e.get("/api/v1/blocks", &list)
	if len(list.Blocks) != 1 || list.Blocks[0].Reason != "spam" {
		t.Fatalf("blocks = %+v", list)
	}
	wantError(t, e.do("POST", "/api/v1/blocks", `{"network":"nonsense"}`), http.StatusBadRequest, adminapi.CodeBadRequest)
	wantError(t, e.do("POST", "/api/v1/blocks", `{"network":"192.0.2.1","duration":"-1h"}`), http.StatusBadRequest, adminapi.CodeBadRequest)
	e.ok(e.do("DELETE", "/api/v1/blocks?network=203.0.113.0%2F24", ""), nil)
	wantError(t, e.do("DELETE", "/api/v1/blocks?network=203.0.113.0%2F24", ""), http.StatusNotFound, adminapi.CodeNotFound)
	if e.reg.Blocked(netip.MustParseAddr("203.0.113.5")) {
		t.Fatal("still blocked")
	}
}

func TestLockoutRoutes(t *testing.T) {
	e := newEnv(t)
	c := e.reg.Register(accounting.ConnInfo{Protocol: "imap", Client: netip.MustParseAddrPort("203.0.113.9:1")})
	for i := 0; i < accounting.DefaultBruteForce.MaxFailures; i++ {
		c.AuthFailed("victim@example.com", "LOGIN", false)
	}
	var list struct {
		Lockouts []adminapi.LockoutJSON `json:"lockouts"`
	}
	e.get("/api/v1/lockouts", &list)
	if len(list.Lockouts) != 2 {
		t.Fatalf("lockouts = %+v", list)
	}
	e.ok(e.do("DELETE", "/api/v1/lockouts?kind=user&key=victim@example.com", ""), nil)
	e.ok(e.do("DELETE", "/api/v1/lockouts?kind=ip&key=203.0.113.9", ""), nil)
	e.get("/api/v1/lockouts", &list)
	if len(list.Lockouts) != 0 {
		t.Fatalf("after clearing: %+v", list)
	}
	wantError(t, e.do("DELETE", "/api/v1/lockouts?kind=host&key=x", ""), http.StatusBadRequest, adminapi.CodeBadRequest)
}

func TestBulkRoute(t *testing.T) {
	e := newEnv(t)
	for _, u := range []string{"a@example.com", "b@example.com"} {
		c := e.reg.Register(accounting.ConnInfo{Protocol: "imap", Client: netip.MustParseAddrPort("192.0.2.1:1")})
		c.Authenticated(u, "LOGIN")
	}
	var out struct {
		Action   string              `json:"action"`
		Protocol string              `json:"protocol"`
		Results  []adminapi.BulkItem `json:"results"`
	}
	e.ok(e.do("POST", "/api/v1/bulk", `{"users":["a@example.com","B@example.com"],"action":"disable","protocol":"imap"}`), &out)
	if len(out.Results) != 2 || out.Results[0].Dropped != 1 || out.Results[1].Dropped != 1 || e.reg.Count("imap") != 0 {
		t.Fatalf("bulk disable = %+v", out)
	}
	if e.reg.ProtocolEnabled("b@example.com", "imap") {
		t.Fatal("b still enabled")
	}
	e.ok(e.do("POST", "/api/v1/bulk", `{"users":["a@example.com","b@example.com"],"action":"enable","protocol":"imap"}`), &out)
	if !e.reg.ProtocolEnabled("a@example.com", "imap") {
		t.Fatal("a not re-enabled")
	}
	wantError(t, e.do("POST", "/api/v1/bulk", `{"users":[],"action":"drop"}`), http.StatusBadRequest, adminapi.CodeBadRequest)
	wantError(t, e.do("POST", "/api/v1/bulk", `{"users":["a@example.com"],"action":"explode","protocol":"imap"}`), http.StatusBadRequest, adminapi.CodeBadRequest)
	wantError(t, e.do("POST", "/api/v1/bulk", `{"users":["a@example.com"],"action":"disable","protocol":"all"}`), http.StatusBadRequest, adminapi.CodeUnknownProtocol)
}

func TestStatsRoute(t *testing.T) {
	e := newEnv(t)
	c := e.reg.Register(accounting.ConnInfo{Protocol: "imap", Client: netip.MustParseAddrPort("192.0.2.1:1")})
	e.reg.SetProtocolEnabled("a@example.com", "imap", false, false)
	c.CheckLogin("a@example.com")
	c.Authenticated("b@example.com", "LOGIN")
	var st adminapi.StatsJSON
	e.get("/api/v1/stats", &st)
	if st.Refusals["disabled"] != 1 || st.Logins["imap"]["success"] != 1 {
		t.Fatalf("stats = %+v", st)
	}
	wantError(t, e.raw("GET", "/api/v1/stats", ""), http.StatusUnauthorized, adminapi.CodeUnauthorized)
}
