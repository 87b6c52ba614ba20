package adminapi_test

import (
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mailgate/mailgate/accounting"
	"github.com/mailgate/mailgate/adminapi"
)

// auditAs sends a request with a token and, when reason is not empty, the
// reason header.
func (e *env) auditAs(token, reason, method, path, body string) response {
	e.t.Helper()
	req, err := http.NewRequest(method, e.srv.URL+path, strings.NewReader(body))
	if err != nil {
		e.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	if reason != "" {
		req.Header.Set(adminapi.ReasonHeader, reason)
	}
	resp, err := e.srv.Client().Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	var b strings.Builder
	buf := make([]byte, 4096)
	for {
		n, err := resp.Body.Read(buf)
		b.Write(buf[:n])
		if err != nil {
			break
		}
	}
	return response{status: resp.StatusCode, header: resp.Header, body: []byte(b.String())}
}

func (e *env) auditList(query string) []adminapi.AuditJSON {
	e.t.Helper()
	var l adminapi.AuditList
	e.get("/api/v1/audit"+query, &l)
	return l.Entries
}

func TestAudit_everyChange(t *testing.T) {
	e := newEnv(t, withRoles)
	var d drops
	bob := e.login("imap", "192.0.2.1:1000", "bob@example.com", &d)
	e.login("imap", "192.0.2.1:1001", "bob@example.com", &d)
	e.login("pop", "192.0.2.2:1000", "carol@example.com", &d)
	anon := e.conn("smtp", "198.51.100.7:25", &d)
	for i := 0; i < 10; i++ { // the default brute-force threshold locks the IP out
		e.conn("imap", "192.0.2.66:1", nil).AuthFailed("mallory@example.com", "LOGIN", false)
	}

	steps := []struct {
		method, path, body, reason string
		status                     int
		want                       adminapi.AuditJSON // the fields checked; Params compared whole
	}{
		{"DELETE", fmt.Sprintf("/api/v1/connections/%d", bob.ID()), "", "stuck session", 200,
			adminapi.AuditJSON{Action: "drop_connection", Target: "bob@example.com", OK: true, Dropped: 1, Outcome: "dropped 1 session(s)",
				Params: map[string]string{"id": fmt.Sprint(bob.ID()), "protocol": "imap", "ip": "192.0.2.1"}}},
		{"DELETE", fmt.Sprintf("/api/v1/connections/%d", anon.ID()), `{"reason":"scanner"}`, "", 200,
			adminapi.AuditJSON{Action: "drop_connection", Target: "198.51.100.7", Reason: "scanner", OK: true, Dropped: 1, Outcome: "dropped 1 session(s)",
				Params: map[string]string{"id": fmt.Sprint(anon.ID()), "protocol": "smtp", "ip": "198.51.100.7"}}},
		{"DELETE", "/api/v1/connections/999", "", "gone?", 404,
			adminapi.AuditJSON{Action: "drop_connection", Target: "999", OK: false, Outcome: "no live connection with id 999",
				Params: map[string]string{"id": "999"}}},
		{"POST", "/api/v1/users/Bob@Example.com/drop?protocol=imap", "", "phone lost", 200,
			adminapi.AuditJSON{Action: "drop_user", Target: "bob@example.com", OK: true, Dropped: 1, Outcome: "dropped 1 session(s)",
				Params: map[string]string{"protocol": "imap"}}},
		{"PUT", "/api/v1/users/carol@example.com/protocols/pop", `{"enabled":false,"reason":"from the body"}`, "", 200,
			adminapi.AuditJSON{Action: "disable_protocol", Target: "carol@example.com", Reason: "from the body", OK: true, Dropped: 1,
				Outcome: "disabled, dropped 1 session(s)", Params: map[string]string{"protocol": "pop", "drop": "true"}}},
		{"PUT", "/api/v1/users/carol@example.com/protocols/pop", `{"enabled":true,"reason":"body"}`, "the header wins", 200,
			adminapi.AuditJSON{Action: "enable_protocol", Target: "carol@example.com", OK: true, Outcome: "enabled",
				Params: map[string]string{"protocol": "pop"}}},
		{"POST", "/api/v1/users/carol@example.com/resync?protocol=pop", "", "resync", 200,
			adminapi.AuditJSON{Action: "resync", Target: "carol@example.com", OK: true,
				Outcome: "drop: dropped 0 session(s); reconcile: corrected 0 counter(s); hook: no hook configured for pop",
				Params:  map[string]string{"protocol": "pop"}}},
		{"PUT", "/api/v1/domains/example.org", `{"enabled":false,"drop":false}`, "domain gone", 200,
			adminapi.AuditJSON{Action: "disable_domain", Target: "example.org", OK: true, Outcome: "disabled, dropped 0 session(s)",
				Params: map[string]string{"drop": "false"}}},
		{"POST", "/api/v1/blocks", `{"network":"203.0.113.9/24","reason":"spraying","expires":"2026-01-03T00:00:00Z"}`, "", 200,
			adminapi.AuditJSON{Action: "block", Target: "203.0.113.0/24", Reason: "spraying", OK: true, Outcome: "blocked, dropped 0 session(s)",
				Params: map[string]string{"expires": "2026-01-03T00:00:00Z"}}},
		{"POST", "/api/v1/blocks", `{"network":"198.51.100.7","reason":"scanner"}`, "ticket 42", 200,
			adminapi.AuditJSON{Action: "block", Target: "198.51.100.7/32", OK: true, Outcome: "blocked, dropped 0 session(s)",
				Params: map[string]string{"expires": "never", "block_reason": "scanner"}}},
		{"DELETE", "/api/v1/blocks?network=203.0.113.0/24", "", "false alarm", 200,
			adminapi.AuditJSON{Action: "unblock", Target: "203.0.113.0/24", OK: true, Outcome: "removed"}},
		{"DELETE", "/api/v1/lockouts?kind=ip&key=192.0.2.66", "", "it was me", 200,
			adminapi.AuditJSON{Action: "clear_lockout", Target: "192.0.2.66", OK: true, Outcome: "cleared", Params: map[string]string{"kind": "ip"}}},
	}
	for i, st := range steps {
		r := e.auditAs(adminToken, st.reason, st.method, st.path, st.body)
		if r.status != st.status {
			t.Fatalf("step %d %s %s = %d %s, want %d", i, st.method, st.path, r.status, r.body, st.status)
		}
		got := e.auditList("?limit=1")
		if len(got) != 1 {
			t.Fatalf("step %d: no audit entry", i)
		}
		g, w := got[0], st.want
		if w.Reason == "" {
			w.Reason = st.reason
		}
		if w.Params == nil {
			w.Params = map[string]string{}
		}
		if g.ID != uint64(i+1) || g.Actor != "ada" || g.Role != "admin" || g.Source != "127.0.0.1" || g.Time.IsZero() ||
			g.Action != w.Action || g.Target != w.Target || g.Reason != w.Reason || g.OK != w.OK || g.Dropped != w.Dropped ||
			g.Outcome != w.Outcome || fmt.Sprint(g.Params) != fmt.Sprint(w.Params) {
			t.Errorf("step %d %s %s: entry\n %+v\nwant\n %+v", i, st.method, st.path, g, w)
		}
	}

	// A bulk writes one entry per user, in one go.
	e.login("imap", "192.0.2.3:1", "dave@example.com", nil)
	r := e.auditAs(adminToken, "", "POST", "/api/v1/bulk", `{"users":["dave@example.com","erin@example.com"],"action":"drop","protocol":"imap","reason":"cleanup"}`)
	e.ok(r, nil)
	got := e.auditList("?limit=2")
	if len(got) != 2 || got[0].Target != "erin@example.com" || got[1].Target != "dave@example.com" || got[1].Dropped != 1 ||
		got[0].Params["bulk"] != "2" || got[0].Reason != "cleanup" || got[0].Action != "drop_user" {
		t.Errorf("bulk entries = %+v", got)
	}
	r = e.auditAs(adminToken, "", "POST", "/api/v1/bulk", `{"users":["dave@example.com"],"action":"disable","protocol":"mapi+ews","drop":false}`)
	e.ok(r, nil)
	if got := e.auditList("?limit=1"); got[0].Action != "disable_protocol" || got[0].Params["protocol"] != "mapi+ews" || got[0].Params["drop"] != "false" {
		t.Errorf("bulk disable entry = %+v", got[0])
	}

	logs := e.logs.String()
	for _, want := range []string{
		`level=INFO msg=audit node=test-node id=1 actor=ada role=admin source=127.0.0.1 action=drop_connection target=bob@example.com reason="stuck session" ok=true dropped=1 outcome="dropped 1 session(s)" params.id=`,
		`msg=audit node=test-node id=4 actor=ada role=admin source=127.0.0.1 action=drop_user target=bob@example.com reason="phone lost" ok=true dropped=1 outcome="dropped 1 session(s)" params.protocol=imap`,
	} {
		if !strings.Contains(logs, want) {
			t.Errorf("logs lack %q:\n%s", want, logs)
		}
	}
}

// blockingTrail holds Record until released, to see that the answer waits
// for the audit entry.
type blockingTrail struct {
	adminapi.AuditTrail
	entered, release chan struct{}
}

func (b *blockingTrail) Record(es ...accounting.AuditEntry) ([]accounting.AuditEntry, error) {
	b.entered <- struct{}{}
	<-b.release
	return b.AuditTrail.Record(es...)
}

func TestAudit_recordedBeforeTheAnswer(t *testing.T) {
	trail := &blockingTrail{AuditTrail: accounting.NewAuditLog(nil, 0, 0, nil), entered: make(chan struct{}), release: make(chan struct{})}
	e := newEnv(t, func(o *adminapi.Options) { o.Audit = trail })
	e.login("imap", "192.0.2.1:1000", "bob@example.com", nil)
	answered := make(chan response, 1)
	go func() { answered <- e.auditAs(testToken, "", "POST", "/api/v1/users/bob@example.com/drop", "") }()
	select {
	case <-trail.entered:
	case r := <-answered:
		t.Fatalf("answered %d before recording anything", r.status)
	case <-time.After(10 * time.Second):
		t.Fatal("the drop never recorded an entry")
	}
	select {
	case r := <-answered:
		t.Fatalf("answered %d while the entry was not written", r.status)
	case <-time.After(200 * time.Millisecond):
	}
	close(trail.release)
	if r := <-answered; r.status != http.StatusOK {
		t.Fatalf("drop = %d %s", r.status, r.body)
	}
}

func TestAudit_survivesAReopenOfTheStore(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	st, err := accounting.OpenStore(path, 0)
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, withRoles, func(o *adminapi.Options) { o.Audit = accounting.NewAuditLog(st, 0, 0, nil) })
	e.login("imap", "192.0.2.1:1000", "bob@example.com", nil)
	e.ok(e.auditAs(operatorToken, "ticket 7", "POST", "/api/v1/users/bob@example.com/drop", ""), nil)
	// The answer came: the entry is committed. A crash now loses nothing.
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	st2, err := accounting.OpenStore(path, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer st2.Close()
	got, err := accounting.NewAuditLog(st2, 0, 0, nil).Query(accounting.AuditFilter{})
	if err != nil || len(got) != 1 {
		t.Fatalf("after a reopen: %+v, %v", got, err)
	}
	if g := got[0]; g.Actor != "otto" || g.Role != "operator" || g.Reason != "ticket 7" || g.Dropped != 1 || g.Target != "bob@example.com" {
		t.Errorf("entry after a reopen = %+v", g)
	}
}

func TestAudit_requireReason(t *testing.T) {
	e := newEnv(t, withRoles, func(o *adminapi.Options) { o.RequireReason = true })
	e.login("imap", "192.0.2.1:1000", "bob@example.com", nil)
	var w adminapi.Whoami
	e.ok(e.raw("GET", "/api/v1/whoami", "", "Bearer "+operatorToken), &w)
	if !w.RequireReason {
		t.Error("whoami does not tell that reasons are required")
	}
	for _, rt := range []struct{ method, path, body string }{
		{"POST", "/api/v1/users/bob@example.com/drop", ""},
		{"POST", "/api/v1/users/bob@example.com/drop", `{"reason":"  "}`},
		{"PUT", "/api/v1/users/bob@example.com/protocols/imap", `{"enabled":false}`},
		{"PUT", "/api/v1/domains/example.com", `{"enabled":false}`},
		{"POST", "/api/v1/users/bob@example.com/resync?protocol=imap", ""},
		{"POST", "/api/v1/blocks", `{"network":"192.0.2.1"}`},
		{"DELETE", "/api/v1/blocks?network=192.0.2.1", ""},
		{"DELETE", "/api/v1/lockouts?kind=ip&key=192.0.2.1", ""},
		{"DELETE", "/api/v1/connections/1", ""},
		{"POST", "/api/v1/bulk", `{"users":["bob@example.com"],"action":"drop","protocol":"all"}`},
		{"POST", "/api/v1/users/bob@example.com/devices/dev1/block", ""},
		{"POST", "/api/v1/users/bob@example.com/devices/dev1/allow", `{"reason":""}`},
		{"POST", "/api/v1/users/bob@example.com/devices/dev1/drop", ""},
		{"POST", "/api/v1/users/bob@example.com/devices/dev1/resync", ""},
	} {
		er := wantError(t, e.auditAs(adminToken, "", rt.method, rt.path, rt.body), http.StatusBadRequest, adminapi.CodeBadRequest)
		if !strings.Contains(er.Message, "reason is required") {
			t.Errorf("%s %s without a reason: %q", rt.method, rt.path, er.Message)
		}
	}
	if e.reg.Count("imap") != 1 || !e.reg.ProtocolEnabled("bob@example.com", "imap") || !e.reg.DomainEnabled("example.com") || len(e.reg.Blocks()) != 0 {
		t.Fatal("a change refused for want of a reason acted")
	}
	if got := e.auditList(""); len(got) != 0 {
		t.Fatalf("refused changes were audited: %+v", got)
	}
	// A reason in the header or in the body lets it through.
	e.ok(e.auditAs(operatorToken, "user asked", "PUT", "/api/v1/users/bob@example.com/protocols/pop", `{"enabled":false}`), nil)
	e.ok(e.auditAs(operatorToken, "", "PUT", "/api/v1/users/bob@example.com/protocols/imap", `{"enabled":false,"reason":"ticket 9"}`), nil)
	if got := e.auditList(""); len(got) != 2 || got[0].Reason != "ticket 9" || got[1].Reason != "user asked" {
		t.Fatalf("entries = %+v", got)
	}
	// Reasons are text of bounded size.
	long := strings.Repeat("x", 513)
	wantError(t, e.auditAs(operatorToken, long, "POST", "/api/v1/users/bob@example.com/drop", ""), http.StatusBadRequest, adminapi.CodeBadRequest)
	wantError(t, e.auditAs(operatorToken, "", "POST", "/api/v1/users/bob@example.com/drop", `{"reason":"a\u0007b"}`), http.StatusBadRequest, adminapi.CodeBadRequest)
	wantError(t, e.auditAs(operatorToken, "", "POST", "/api/v1/users/bob@example.com/drop", `{"why":"x"}`), http.StatusBadRequest, adminapi.CodeBadRequest)
	e.api.SetRequireReason(false)
	e.ok(e.auditAs(operatorToken, "", "POST", "/api/v1/users/bob@example.com/drop", ""), nil)
}

// TestAudit_onlyChanges: reads, forbidden changes and changes refused for
// their input leave no entry; a 403 is logged at info.
func TestAudit_onlyChanges(t *testing.T) {
	e := newEnv(t, withRoles)
	e.login("imap", "192.0.2.1:1000", "bob@example.com", nil)
	for _, rt := range roleRoutes {
		if rt.method == "GET" {
			e.raw(rt.method, rt.path, rt.body, "Bearer "+adminToken)
		}
		if rt.role != accounting.RoleViewer {
			wantError(t, e.raw(rt.method, rt.path, rt.body, "Bearer "+viewerToken), http.StatusForbidden, adminapi.CodeForbidden)
		}
	}
	wantError(t, e.auditAs(adminToken, "r", "POST", "/api/v1/users/bob@example.com/drop?protocol=gopher", ""), http.StatusBadRequest, adminapi.CodeUnknownProtocol)
	wantError(t, e.auditAs(adminToken, "r", "PUT", "/api/v1/users/bob@example.com/protocols/imap", `{}`), http.StatusBadRequest, adminapi.CodeBadRequest)
	wantError(t, e.auditAs(adminToken, "r", "POST", "/api/v1/users/x;y@example.com/resync?protocol=imap", ""), http.StatusBadRequest, adminapi.CodeBadRequest)
	if got := e.auditList(""); len(got) != 0 {
		t.Fatalf("entries for no change: %+v", got)
	}
	if e.reg.Count("imap") != 1 {
		t.Fatal("something acted")
	}
	if !strings.Contains(e.logs.String(), `level=INFO msg="admin api: forbidden" node=test-node route="POST /api/v1/users/{user}/drop" actor=vera role=viewer needs=operator`) {
		t.Errorf("the viewer's 403 is not logged:\n%s", e.logs.String())
	}
}

func TestAudit_query(t *testing.T) {
	e := newEnv(t, withRoles)
	e.auditAs(operatorToken, "one", "PUT", "/api/v1/users/bob@example.com/protocols/imap", `{"enabled":false}`)
	e.auditAs(adminToken, "two", "PUT", "/api/v1/users/carol@example.com/protocols/imap", `{"enabled":false}`)
	e.auditAs(operatorToken, "three", "PUT", "/api/v1/users/bob@example.com/protocols/imap", `{"enabled":true}`)
	reasons := func(q string) string {
		var out []string
		for _, en := range e.auditList(q) {
			out = append(out, en.Reason)
		}
		return strings.Join(out, ",")
	}
	for q, want := range map[string]string{
		"":                            "three,two,one",
		"?actor=otto":                 "three,one",
		"?target=BOB@example.com":     "three,one",
		"?actor=otto&limit=1":         "three",
		"?since=1h":                   "three,two,one",
		"?since=2999-01-01T00:00:00Z": "",
		"?target=nobody@example.com":  "",
	} {
		if got := reasons(q); got != want {
			t.Errorf("GET /api/v1/audit%s = %q, want %q", q, got, want)
		}
	}
	for _, q := range []string{"?since=yesterday", "?since=-1h", "?limit=0", "?limit=10001", "?limit=x", "?user=bob", "?actor=a&actor=b"} {
		wantError(t, e.do("GET", "/api/v1/audit"+q, ""), http.StatusBadRequest, adminapi.CodeBadRequest)
	}
	// Not a token or any other secret anywhere: the entries, the logs.
	body := string(e.do("GET", "/api/v1/audit", "").body)
	all := body + e.logs.String()
	for _, secret := range []string{viewerToken, operatorToken, adminToken, testToken, sha256Hex(operatorToken)} {
		if strings.Contains(all, secret) {
			t.Errorf("the audit or the log holds the token %q", secret)
		}
	}
}
