package adminapi_test

import (
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mailgate/mailgate/accounting"
	"github.com/mailgate/mailgate/adminapi"
)

func TestSummary_countsMove(t *testing.T) {
	e := newEnv(t)
	keys := []string{"all", "eas", "ews", "imap", "mapi", "pop", "smtp", "webdav", "webmail", "xmpp"}
	zero := map[string]int{}
	for _, k := range keys {
		zero[k] = 0
	}
	want := func(changes map[string]int) map[string]int {
		m := maps.Clone(zero)
		maps.Copy(m, changes)
		return m
	}

	got := e.summary()
	if !maps.Equal(got, zero) {
		t.Fatalf("empty summary = %v, want %v", got, zero)
	}
	if k := slices.Sorted(maps.Keys(got)); !slices.Equal(k, keys) {
		t.Fatalf("summary keys = %v, want exactly %v", k, keys)
	}

	var imap, smtp, pop *accounting.Conn
	steps := []struct {
		name string
		do   func()
		want map[string]int
	}{
		{"imap registers (preauth counts)", func() { imap = e.conn("imap", "192.0.2.1:1000", nil) },
			map[string]int{"all": 1, "imap": 1}},
		{"smtp registers", func() { smtp = e.conn("smtp", "192.0.2.2:25", nil) },
			map[string]int{"all": 2, "imap": 1, "smtp": 1}},
		{"imap authenticates (no change)", func() { imap.Authenticated("bob@example.com", "LOGIN") },
			map[string]int{"all": 2, "imap": 1, "smtp": 1}},
		{"pop logs in", func() { pop = e.login("pop", "192.0.2.3:1100", "alice@example.com", nil) },
			map[string]int{"all": 3, "imap": 1, "smtp": 1, "pop": 1}},
		{"imap closes", func() { imap.Close() },
			map[string]int{"all": 2, "smtp": 1, "pop": 1}},
		{"imap closes twice (no change)", func() { imap.Close() },
			map[string]int{"all": 2, "smtp": 1, "pop": 1}},
		{"smtp and pop close", func() { smtp.Close(); pop.Close() },
			map[string]int{}},
	}
	for _, s := range steps {
		s.do()
		if got := e.summary(); !maps.Equal(got, want(s.want)) {
			t.Fatalf("after %s: summary = %v, want %v", s.name, got, want(s.want))
		}
	}
}

// TestConnections_listJSON pins the exact wire form.
func TestConnections_listJSON(t *testing.T) {
	e := newEnv(t)
	e.conn("smtp", "192.0.2.7:2525", nil)
	e.clock.Advance(1500 * time.Millisecond)
	c := e.conn("imap", "[2001:db8::1]:40000", nil)
	c.TLSStarted()
	e.clock.Advance(2 * time.Second)
	c.Authenticated("Bob@Example.com", "PLAIN")

	r := e.do("GET", "/api/v1/connections", "")
	e.ok(r, nil)
	want := `{"connections":[` +
		`{"id":1,"protocol":"smtp","listener":"smtp-test","user":"","client_ip":"192.0.2.7","client_port":2525,"state":"preauth","tls":false,"mechanism":"","started_at":"2026-01-02T03:04:05Z","authenticated_at":null,"device_id":"","node":"test-node"},` +
		`{"id":2,"protocol":"imap","listener":"imap-test","user":"bob@example.com","client_ip":"2001:db8::1","client_port":40000,"state":"authenticated","tls":true,"mechanism":"PLAIN","started_at":"2026-01-02T03:04:06Z","authenticated_at":"2026-01-02T03:04:08Z","device_id":"","node":"test-node"}` +
		"]}\n"
	if string(r.body) != want {
		t.Fatalf("GET /api/v1/connections =\n%s\nwant\n%s", r.body, want)
	}

	// Empty is [], never null.
	c.Close()
	e.reg.Get(1).Close()
	r = e.do("GET", "/api/v1/connections", "")
	if string(r.body) != "{\"connections\":[]}\n" {
		t.Fatalf("empty list = %s", r.body)
	}
}

func TestConnections_filters(t *testing.T) {
	e := newEnv(t)
	e.login("imap", "192.0.2.1:1000", "bob@example.com", nil)     // 1
	e.login("imap", "192.0.2.2:1000", "alice@example.com", nil)   // 2
	e.login("pop", "192.0.2.1:1001", "bob@example.com", nil)      // 3
	e.conn("imap", "192.0.2.1:1002", nil)                         // 4, preauth
	e.login("mapi", "192.0.2.3:443", "bob@example.com", nil)      // 5
	e.login("ews", "[2001:db8::9]:443", "carol@example.com", nil) // 6

	for _, tc := range []struct {
		query string
		ids   []uint64
	}{
		{"", []uint64{1, 2, 3, 4, 5, 6}},
		{"?protocol=all", []uint64{1, 2, 3, 4, 5, 6}},
		{"?protocol=", []uint64{1, 2, 3, 4, 5, 6}},
		{"?protocol=imap", []uint64{1, 2, 4}},
		{"?protocol=IMAP", []uint64{1, 2, 4}},
		{"?protocol=smtp", nil},
		{"?protocol=mapi%2Bews", []uint64{5, 6}},
		{"?protocol=mapi+ews", []uint64{5, 6}},
		{"?user=bob@example.com", []uint64{1, 3, 5}},
		{"?user=BOB%40example.com", []uint64{1, 3, 5}},
		{"?user=", []uint64{1, 2, 3, 4, 5, 6}},
		{"?user=nobody@example.com", nil},
		{"?ip=192.0.2.1", []uint64{1, 3, 4}},
		{"?ip=::ffff:192.0.2.1", []uint64{1, 3, 4}},
		{"?ip=2001:db8::9", []uint64{6}},
		{"?protocol=imap&ip=192.0.2.1", []uint64{1, 4}},
		{"?protocol=imap&user=bob@example.com&ip=192.0.2.1", []uint64{1}},
	} {
		t.Run(tc.query, func(t *testing.T) {
			var l adminapi.ConnectionList
			e.get("/api/v1/connections"+tc.query, &l)
			var ids []uint64
			for _, c := range l.Connections {
				ids = append(ids, c.ID)
			}
			if !slices.Equal(ids, tc.ids) {
				t.Fatalf("ids = %v, want %v", ids, tc.ids)
			}
		})
	}

	for _, tc := range []struct {
		query, code string
	}{
		{"?protocol=nntp", adminapi.CodeUnknownProtocol},
		{"?protocol=mapi,ews", adminapi.CodeUnknownProtocol},
		{"?ip=999.1.1.1", adminapi.CodeBadRequest},
		{"?ip=192.0.2.0/24", adminapi.CodeBadRequest},
		{"?user=%00bob", adminapi.CodeBadRequest},
		{"?proto=imap", adminapi.CodeBadRequest},
		{"?protocol=imap&protocol=pop", adminapi.CodeBadRequest},
		{"?protocol=%zz", adminapi.CodeBadRequest},
	} {
		t.Run("bad"+tc.query, func(t *testing.T) {
			wantError(t, e.do("GET", "/api/v1/connections"+tc.query, ""), http.StatusBadRequest, tc.code)
		})
	}
}

func TestConnections_deleteByID(t *testing.T) {
	e := newEnv(t)
	var d, other drops
	c := e.login("imap", "192.0.2.1:1000", "bob@example.com", &d)
	e.login("imap", "192.0.2.1:1001", "bob@example.com", &other)

	var res adminapi.DropResult
	e.ok(e.do("DELETE", fmt.Sprintf("/api/v1/connections/%d", c.ID()), ""), &res)
	if res.Dropped != 1 {
		t.Fatalf("dropped = %d, want 1", res.Dropped)
	}
	if got := d.get(); !slices.Equal(got, []string{"admin"}) {
		t.Fatalf("drop func calls = %v, want [admin]", got)
	}
	if len(other.get()) != 0 {
		t.Fatal("the other connection was dropped too")
	}
	if s := e.summary(); s["imap"] != 1 || s["all"] != 1 {
		t.Fatalf("summary after drop = %v, want imap 1", s)
	}
	if !strings.Contains(e.logs.String(), `msg="admin api: drop connection" node=test-node route="DELETE /api/v1/connections/{id}" id=1 user=bob@example.com protocol=imap dropped=true`) {
		t.Errorf("drop not logged with user and protocol:\n%s", e.logs.String())
	}

	wantError(t, e.do("DELETE", fmt.Sprintf("/api/v1/connections/%d", c.ID()), ""), http.StatusNotFound, adminapi.CodeNotFound)
	wantError(t, e.do("DELETE", "/api/v1/connections/12345", ""), http.StatusNotFound, adminapi.CodeNotFound)
	for _, id := range []string{"abc", "-1", "1.0", "0x1", "99999999999999999999999", "summary", "%20"} {
		wantError(t, e.do("DELETE", "/api/v1/connections/"+id, ""), http.StatusBadRequest, adminapi.CodeBadRequest)
	}
	if len(other.get()) != 0 || e.reg.Count("imap") != 1 {
		t.Fatal("a failed DELETE dropped something")
	}
}
