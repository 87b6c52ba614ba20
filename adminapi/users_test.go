package adminapi_test

import (
	"maps"
	"net/http"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mailgate/mailgate/accounting"
	"github.com/mailgate/mailgate/adminapi"
)

func ipc(ip string, n int) adminapi.IPCount {
	return adminapi.IPCount{IP: netip.MustParseAddr(ip), Count: n}
}

func TestUsers_imapAndAllTabs(t *testing.T) {
	e := newEnv(t)
	e.login("imap", "192.0.2.1:1000", "bob@example.com", nil)
	e.login("imap", "192.0.2.1:1001", "Bob@Example.com", nil)
	e.login("imap", "192.0.2.2:1000", "bob@example.com", nil)
	e.clock.Advance(time.Minute)
	e.login("pop", "192.0.2.1:1100", "bob@example.com", nil) // pop login is later than imap
	e.login("imap", "192.0.2.9:1000", "alice@example.com", nil)
	e.conn("imap", "198.51.100.7:5000", nil) // unauthenticated
	e.conn("imap", "198.51.100.7:5001", nil)
	e.conn("smtp", "198.51.100.7:25", nil)
	e.conn("smtp", "198.51.100.8:25", nil)

	var imap adminapi.UserList
	e.get("/api/v1/users?protocol=imap", &imap)
	wantIMAP := adminapi.UserList{Protocol: "imap", Users: []adminapi.UserRow{
		{User: "alice@example.com", Protocols: []string{"imap"}, ProtocolEnabled: true, DomainEnabled: true,
			Connections: 1, IPConnections: []adminapi.IPCount{ipc("192.0.2.9", 1)},
			LastLogin: ptrTime(t0.Add(time.Minute)), LastIP: ptrIP("192.0.2.9")},
		{User: "bob@example.com", Protocols: []string{"imap"}, ProtocolEnabled: true, DomainEnabled: true,
			Connections: 3, IPConnections: []adminapi.IPCount{ipc("192.0.2.1", 2), ipc("192.0.2.2", 1)},
			LastLogin: ptrTime(t0), LastIP: ptrIP("192.0.2.2")},
		{User: "", Protocols: []string{"imap"}, ProtocolEnabled: true, DomainEnabled: true,
			Connections: 2, IPConnections: []adminapi.IPCount{ipc("198.51.100.7", 2)}},
	}}
	if !reflect.DeepEqual(imap, wantIMAP) {
		t.Fatalf("imap tab =\n%+v\nwant\n%+v", imap, wantIMAP)
	}

	for _, q := range []string{"", "?protocol=all", "?protocol=ALL"} {
		var all adminapi.UserList
		e.get("/api/v1/users"+q, &all)
		wantAll := adminapi.UserList{Protocol: "all", Users: []adminapi.UserRow{
			wantIMAP.Users[0],
			{User: "bob@example.com", Protocols: []string{"imap", "pop"}, ProtocolEnabled: true, DomainEnabled: true,
				Connections: 4, IPConnections: []adminapi.IPCount{ipc("192.0.2.1", 3), ipc("192.0.2.2", 1)},
				LastLogin: ptrTime(t0.Add(time.Minute)), LastIP: ptrIP("192.0.2.1")},
			{User: "", Protocols: []string{"imap", "smtp"}, ProtocolEnabled: true, DomainEnabled: true,
				Connections: 3, IPConnections: []adminapi.IPCount{ipc("198.51.100.7", 3)}},
			{User: "", Protocols: []string{"smtp"}, ProtocolEnabled: true, DomainEnabled: true,
				Connections: 1, IPConnections: []adminapi.IPCount{ipc("198.51.100.8", 1)}},
		}}
		if !reflect.DeepEqual(all, wantAll) {
			t.Fatalf("all tab (%q) =\n%+v\nwant\n%+v", q, all, wantAll)
		}
	}

	// The unauthenticated row's wire form: "user":"" and nulls.
	r := e.do("GET", "/api/v1/users?protocol=smtp", "")
	e.ok(r, nil)
	if !strings.Contains(string(r.body), `{"user":"","protocols":["smtp"],"protocol_enabled":true,"domain_enabled":true,"connections":1,"ip_connections":[{"ip":"198.51.100.7","count":1}],"duration_seconds":0,"last_login":null,"last_authenticated_ip":null}`) {
		t.Fatalf("smtp tab = %s", r.body)
	}

	var empty adminapi.UserList
	e.get("/api/v1/users?protocol=xmpp", &empty)
	if empty.Protocol != "xmpp" || empty.Users == nil || len(empty.Users) != 0 {
		t.Fatalf("xmpp tab = %+v, want no rows ([] not null)", empty)
	}

	var blank adminapi.UserList // a blank selector is the default, "all"
	e.get("/api/v1/users?protocol=%20", &blank)
	if blank.Protocol != "all" {
		t.Fatalf("protocol=%%20 gave tab %q, want all", blank.Protocol)
	}
	for _, q := range []string{"?protocol=nntp", "?protocol=mapi,ews", "?protocol=mapi%2B", "?protocol=all%2Bimap"} {
		wantError(t, e.do("GET", "/api/v1/users"+q, ""), http.StatusBadRequest, adminapi.CodeUnknownProtocol)
	}
}

func TestUsers_mapiEWSTab(t *testing.T) {
	e := newEnv(t)
	e.login("mapi", "192.0.2.1:1000", "bob@example.com", nil)
	e.clock.Advance(time.Second)
	e.login("ews", "192.0.2.1:1001", "bob@example.com", nil)
	e.clock.Advance(time.Second)
	e.login("ews", "192.0.2.2:1000", "bob@example.com", nil)
	bobLast := e.clock.Now()
	e.clock.Advance(time.Minute)
	e.login("mapi", "192.0.2.5:1000", "carol@example.com", nil).Close() // not live
	e.clock.Advance(time.Minute)
	e.login("ews", "192.0.2.6:1000", "carol@example.com", nil)
	e.clock.Advance(time.Minute)
	e.login("ews", "192.0.2.7:1000", "carol@example.com", nil).Close()
	carolLast := e.clock.Now()
	e.clock.Advance(time.Minute)
	e.login("imap", "192.0.2.1:1002", "bob@example.com", nil) // not in the tab
	e.conn("mapi", "198.51.100.7:5000", nil)
	e.conn("ews", "198.51.100.7:5001", nil)

	// Bob's ews is disabled but his connections stay: the merged checkmark
	// is off because one of the tab's protocols is off.
	e.ok(e.do("PUT", "/api/v1/users/bob@example.com/protocols/ews", `{"enabled":false,"drop":false}`), nil)

	want := adminapi.UserList{Protocol: "mapi+ews", Users: []adminapi.UserRow{
		{User: "bob@example.com", Protocols: []string{"ews", "mapi"}, ProtocolEnabled: false, DomainEnabled: true,
			Connections: 3, IPConnections: []adminapi.IPCount{ipc("192.0.2.1", 2), ipc("192.0.2.2", 1)},
			LastLogin: ptrTime(bobLast), LastIP: ptrIP("192.0.2.2")},
		{User: "carol@example.com", Protocols: []string{"ews"}, ProtocolEnabled: true, DomainEnabled: true,
			Connections: 1, IPConnections: []adminapi.IPCount{ipc("192.0.2.6", 1)},
			LastLogin: ptrTime(carolLast), LastIP: ptrIP("192.0.2.7")},
		{User: "", Protocols: []string{"ews", "mapi"}, ProtocolEnabled: true, DomainEnabled: true,
			Connections: 2, IPConnections: []adminapi.IPCount{ipc("198.51.100.7", 2)}},
	}}
	for _, q := range []string{"mapi%2Bews", "mapi+ews", "MAPI%2BEWS"} {
		var got adminapi.UserList
		e.get("/api/v1/users?protocol="+q, &got)
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("protocol=%s:\n%+v\nwant\n%+v", q, got, want)
		}
	}

	// Carol's latest login is a mapi one without a live mapi connection:
	// the merged row still shows it (the tab's last login, live or not).
	e.clock.Advance(time.Minute)
	e.login("mapi", "192.0.2.8:1000", "carol@example.com", nil).Close()
	var got adminapi.UserList
	e.get("/api/v1/users?protocol=mapi%2Bews", &got)
	if c := got.Users[1]; c.User != "carol@example.com" || !c.LastLogin.Equal(e.clock.Now()) || *c.LastIP != netip.MustParseAddr("192.0.2.8") {
		t.Fatalf("carol = %+v, want last login %v from 192.0.2.8", c, e.clock.Now())
	}
}

func TestUsers_webmailDuration(t *testing.T) {
	e := newEnv(t)
	e.login("webmail", "192.0.2.1:1000", "bob@example.com", nil)
	e.clock.Advance(30 * time.Second)
	e.login("webmail", "192.0.2.1:1001", "bob@example.com", nil)
	e.clock.Advance(90*time.Second + 700*time.Millisecond)
	var l adminapi.UserList
	e.get("/api/v1/users?protocol=webmail", &l)
	if len(l.Users) != 1 || l.Users[0].DurationSeconds != 120 {
		t.Fatalf("webmail rows = %+v, want one with duration 120 s (the longest)", l.Users)
	}
}

func TestUserDetail(t *testing.T) {
	e := newEnv(t)
	e.login("pop", "192.0.2.1:1000", "bob@example.com", nil).Close()
	e.clock.Advance(time.Minute)
	e.login("imap", "192.0.2.2:1000", "bob@example.com", nil)
	e.login("imap", "192.0.2.2:1001", "bob@example.com", nil)
	e.reg.SetProtocolEnabled("bob@example.com", "smtp", false, true)

	var d adminapi.UserDetail
	e.get("/api/v1/users/BOB%40Example.com", &d)
	if d.User != "bob@example.com" || d.Domain != "example.com" || !d.DomainEnabled || d.Connections != 2 {
		t.Fatalf("detail = %+v", d)
	}
	if k := slices.Sorted(maps.Keys(d.Protocols)); !slices.Equal(k, slices.Sorted(slices.Values(accounting.Protocols))) {
		t.Fatalf("protocols keys = %v, want every protocol", k)
	}
	wantP := map[string]adminapi.ProtocolDetail{
		"imap": {Enabled: true, Connections: 2, LastLogin: ptrTime(t0.Add(time.Minute)), LastIP: ptrIP("192.0.2.2")},
		"pop":  {Enabled: true, Connections: 0, LastLogin: ptrTime(t0), LastIP: ptrIP("192.0.2.1")},
		"smtp": {Enabled: false},
		"eas":  {Enabled: true},
	}
	for p, want := range wantP {
		if got := d.Protocols[p]; !reflect.DeepEqual(got, want) {
			t.Errorf("protocols[%s] = %+v, want %+v", p, got, want)
		}
	}
	if len(d.IPs) != 2 || d.IPs[0].Protocol != "imap" || d.IPs[1].Protocol != "pop" {
		t.Errorf("ips = %+v", d.IPs)
	}

	// A user never seen: 200 with defaults; ips [] not null.
	r := e.do("GET", "/api/v1/users/new@example.net", "")
	e.ok(r, &d)
	if d.Connections != 0 || !d.Protocols["imap"].Enabled || d.IPs == nil {
		t.Fatalf("unknown user detail = %+v", d)
	}
	if !strings.Contains(string(r.body), `"imap":{"enabled":true,"connections":0,"last_login":null,"last_authenticated_ip":null}`) {
		t.Fatalf("unknown user wire form = %s", r.body)
	}
}

func TestUserIPs_history(t *testing.T) {
	e := newEnv(t)
	e.login("imap", "192.0.2.1:1000", "bob@example.com", nil).Close()
	e.clock.Advance(time.Hour)
	e.login("imap", "192.0.2.1:1001", "bob@example.com", nil)
	e.clock.Advance(time.Minute)
	e.login("pop", "[2001:db8::5]:1000", "bob@example.com", nil)
	e.login("imap", "192.0.2.3:1000", "alice@example.com", nil)

	var l adminapi.IPList
	e.get("/api/v1/users/bob@example.com/ips", &l)
	want := adminapi.IPList{User: "bob@example.com", IPs: []adminapi.IPRecord{
		{IP: netip.MustParseAddr("2001:db8::5"), Protocol: "pop", FirstSeen: t0.Add(time.Hour + time.Minute), LastSeen: t0.Add(time.Hour + time.Minute), Count: 1},
		{IP: netip.MustParseAddr("192.0.2.1"), Protocol: "imap", FirstSeen: t0, LastSeen: t0.Add(time.Hour), Count: 2},
	}}
	if !reflect.DeepEqual(l, want) {
		t.Fatalf("ips =\n%+v\nwant\n%+v", l, want)
	}
	r := e.do("GET", "/api/v1/users/bob@example.com/ips", "")
	if !strings.Contains(string(r.body), `{"ip":"192.0.2.1","protocol":"imap","first_seen":"2026-01-02T03:04:05Z","last_seen":"2026-01-02T04:04:05Z","count":2}`) {
		t.Fatalf("wire form = %s", r.body)
	}

	r = e.do("GET", "/api/v1/users/nobody@example.com/ips", "")
	e.ok(r, nil)
	if string(r.body) != "{\"user\":\"nobody@example.com\",\"ips\":[]}\n" {
		t.Fatalf("no history = %s", r.body)
	}
}

// TestUserPath_forms: '@', "%40", '+' and case in the path all reach the
// same normalised user; bad names are a 400, never a panic.
func TestUserPath_forms(t *testing.T) {
	e := newEnv(t)
	e.login("imap", "192.0.2.1:1000", "bob+tag@example.com", nil)
	e.login("imap", "192.0.2.1:1001", "bob@example.com", nil)
	for _, tc := range []struct {
		seg, user string
		ips       int
	}{
		{"bob@example.com", "bob@example.com", 1},
		{"bob%40example.com", "bob@example.com", 1},
		{"BOB%40EXAMPLE.COM", "bob@example.com", 1},
		{"bob+tag@example.com", "bob+tag@example.com", 1},
		{"bob%2Btag%40example.com", "bob+tag@example.com", 1},
		{"%20bob@example.com%20", "bob@example.com", 1},
		{"a%2Fb", "a/b", 0},
		{"..%2F..", "../..", 0},
		{"%2E%2E", "..", 0},
		{"bob", "bob", 0},
		{"j%C3%BCrgen@example.de", "jürgen@example.de", 0},
	} {
		var l adminapi.IPList
		e.get("/api/v1/users/"+tc.seg+"/ips", &l)
		if l.User != tc.user || len(l.IPs) != tc.ips {
			t.Errorf("/users/%s/ips = %+v, want user %q with %d ips", tc.seg, l, tc.user, tc.ips)
		}
	}
	long := strings.Repeat("a", 600)
	for _, seg := range []string{"%20", "%09", "bob%00", "bob%0Aevil", "%FF%FE", long} {
		for _, rt := range []struct{ method, path, body string }{
			{"GET", "/api/v1/users/" + seg, ""},
			{"GET", "/api/v1/users/" + seg + "/ips", ""},
			{"POST", "/api/v1/users/" + seg + "/drop", ""},
			{"PUT", "/api/v1/users/" + seg + "/protocols/imap", `{"enabled":false}`},
		} {
			wantError(t, e.do(rt.method, rt.path, rt.body), http.StatusBadRequest, adminapi.CodeBadRequest)
		}
	}
}

func TestDropUser(t *testing.T) {
	e := newEnv(t)
	var bobIMAP, bobPOP, alice drops
	e.login("imap", "192.0.2.1:1000", "bob@example.com", &bobIMAP)
	e.login("imap", "192.0.2.2:1000", "bob@example.com", &bobIMAP)
	e.login("pop", "192.0.2.1:1100", "bob@example.com", &bobPOP)
	e.login("imap", "192.0.2.3:1000", "alice@example.com", &alice)

	// Typos and bad selectors drop nothing.
	wantError(t, e.do("POST", "/api/v1/users/bob@example.com/drop?proto=imap", ""), http.StatusBadRequest, adminapi.CodeBadRequest)
	wantError(t, e.do("POST", "/api/v1/users/bob@example.com/drop?protocol=imapp", ""), http.StatusBadRequest, adminapi.CodeUnknownProtocol)
	if e.reg.Summary()["all"] != 4 {
		t.Fatal("a refused drop dropped something")
	}

	steps := []struct {
		path    string
		dropped int
		summary map[string]int
	}{
		{"/api/v1/users/BOB%40example.com/drop?protocol=imap", 2, map[string]int{"all": 2, "imap": 1, "pop": 1}},
		{"/api/v1/users/bob@example.com/drop?protocol=imap", 0, map[string]int{"all": 2, "imap": 1, "pop": 1}},
		{"/api/v1/users/bob@example.com/drop", 1, map[string]int{"all": 1, "imap": 1, "pop": 0}},
		{"/api/v1/users/alice@example.com/drop?protocol=all", 1, map[string]int{"all": 0, "imap": 0, "pop": 0}},
		{"/api/v1/users/nobody@example.com/drop", 0, map[string]int{"all": 0}},
	}
	for _, s := range steps {
		var res adminapi.DropResult
		e.ok(e.do("POST", s.path, ""), &res)
		if res.Dropped != s.dropped {
			t.Fatalf("POST %s: dropped = %d, want %d", s.path, res.Dropped, s.dropped)
		}
		// The counts fall at once: no waiting on the proxy.
		sum := e.reg.Summary()
		for k, v := range s.summary {
			if sum[k] != v {
				t.Fatalf("after POST %s: summary[%s] = %d, want %d", s.path, k, sum[k], v)
			}
		}
	}
	for name, tc := range map[string]struct {
		d    *drops
		want []string
	}{
		"bob imap": {&bobIMAP, []string{"admin", "admin"}},
		"bob pop":  {&bobPOP, []string{"admin"}},
		"alice":    {&alice, []string{"admin"}},
	} {
		if got := tc.d.get(); !slices.Equal(got, tc.want) {
			t.Errorf("%s drop func calls = %v, want %v", name, got, tc.want)
		}
	}
}

func TestDropUser_mapiEWS(t *testing.T) {
	e := newEnv(t)
	e.login("mapi", "192.0.2.1:1000", "bob@example.com", nil)
	e.login("ews", "192.0.2.1:1001", "bob@example.com", nil)
	e.login("eas", "192.0.2.1:1002", "bob@example.com", nil)
	var res adminapi.DropResult
	e.ok(e.do("POST", "/api/v1/users/bob@example.com/drop?protocol=mapi%2Bews", ""), &res)
	if res.Dropped != 2 || e.reg.Count("eas") != 1 {
		t.Fatalf("dropped = %d, eas = %d; want 2, 1", res.Dropped, e.reg.Count("eas"))
	}
}

func TestSetProtocol(t *testing.T) {
	e := newEnv(t)
	const bob = "bob@example.com"
	var imapDrops, popDrops drops
	e.login("imap", "192.0.2.1:1000", bob, &imapDrops)
	e.login("pop", "192.0.2.1:1100", bob, &popDrops)

	put := func(path, body string) adminapi.ProtocolResult {
		t.Helper()
		var res adminapi.ProtocolResult
		e.ok(e.do("PUT", path, body), &res)
		return res
	}

	// Disable imap: policy off, the gate refuses, the live connection goes.
	res := put("/api/v1/users/Bob%40Example.com/protocols/imap", `{"enabled":false}`)
	if res != (adminapi.ProtocolResult{User: bob, Protocol: "imap", Enabled: false, Dropped: 1}) {
		t.Fatalf("disable imap = %+v", res)
	}
	if e.reg.ProtocolEnabled(bob, "imap") {
		t.Fatal("ProtocolEnabled(imap) = true after disabling")
	}
	if got := e.conn("imap", "192.0.2.1:1001", nil).CheckLogin(bob); got != accounting.DenyDisabled {
		t.Fatalf("CheckLogin after disable = %q, want %q", got, accounting.DenyDisabled)
	}
	if got := imapDrops.get(); !slices.Equal(got, []string{"disabled"}) {
		t.Fatalf("imap drop func calls = %v, want [disabled]", got)
	}
	if len(popDrops.get()) != 0 || e.reg.Count("pop") != 1 {
		t.Fatal("disabling imap touched pop")
	}

	// Disable pop with drop:false: policy off, the connection stays.
	res = put("/api/v1/users/bob@example.com/protocols/pop", `{"enabled":false,"drop":false}`)
	if res != (adminapi.ProtocolResult{User: bob, Protocol: "pop", Enabled: false, Dropped: 0}) {
		t.Fatalf("disable pop keeping connections = %+v", res)
	}
	if e.reg.ProtocolEnabled(bob, "pop") || e.reg.Count("pop") != 1 || len(popDrops.get()) != 0 {
		t.Fatal("drop:false: want pop disabled and its connection kept")
	}
	var row adminapi.UserList
	e.get("/api/v1/users?protocol=pop", &row)
	if len(row.Users) != 1 || row.Users[0].ProtocolEnabled {
		t.Fatalf("pop tab = %+v, want bob's checkmark off", row.Users)
	}

	// Enable again; enabling never drops.
	res = put("/api/v1/users/bob@example.com/protocols/imap", `{"enabled":true,"drop":true}`)
	if res != (adminapi.ProtocolResult{User: bob, Protocol: "imap", Enabled: true, Dropped: 0}) {
		t.Fatalf("enable imap = %+v", res)
	}
	if got := e.conn("imap", "192.0.2.1:1002", nil).CheckLogin(bob); got != accounting.DenyNone {
		t.Fatalf("CheckLogin after enable = %q, want allowed", got)
	}

	// mapi+ews sets both.
	res = put("/api/v1/users/bob@example.com/protocols/mapi+ews", `{"enabled":false}`)
	if res.Protocol != "mapi+ews" || res.Enabled || e.reg.ProtocolEnabled(bob, "mapi") || e.reg.ProtocolEnabled(bob, "ews") {
		t.Fatalf("disable mapi+ews = %+v; mapi %v ews %v", res, e.reg.ProtocolEnabled(bob, "mapi"), e.reg.ProtocolEnabled(bob, "ews"))
	}
}

func TestSetProtocol_badRequests(t *testing.T) {
	e := newEnv(t)
	const carol = "carol@example.com"
	e.login("imap", "192.0.2.1:1000", carol, nil)
	path := "/api/v1/users/carol@example.com/protocols/"
	for _, tc := range []struct {
		name, protocol, body string
		status               int
		code                 string
	}{
		{"empty body", "imap", "", 400, adminapi.CodeBadRequest},
		{"truncated", "imap", `{"enabled":`, 400, adminapi.CodeBadRequest},
		{"not json", "imap", `enabled=false`, 400, adminapi.CodeBadRequest},
		{"wrong type", "imap", `{"enabled":"no"}`, 400, adminapi.CodeBadRequest},
		{"unknown field", "imap", `{"enabled":false,"enabeld":true}`, 400, adminapi.CodeBadRequest},
		{"missing enabled", "imap", `{}`, 400, adminapi.CodeBadRequest},
		{"only drop", "imap", `{"drop":true}`, 400, adminapi.CodeBadRequest},
		{"null", "imap", `null`, 400, adminapi.CodeBadRequest},
		{"array", "imap", `[{"enabled":false}]`, 400, adminapi.CodeBadRequest},
		{"two objects", "imap", `{"enabled":false}{"enabled":true}`, 400, adminapi.CodeBadRequest},
		{"trailing garbage", "imap", `{"enabled":false} x`, 400, adminapi.CodeBadRequest},
		{"too large", "imap", `{"enabled":false,"drop":true` + strings.Repeat(" ", 70<<10) + `}`, 413, adminapi.CodeTooLarge},
		{"unknown protocol", "nntp", `{"enabled":false}`, 400, adminapi.CodeUnknownProtocol},
		{"all refused", "all", `{"enabled":false}`, 400, adminapi.CodeUnknownProtocol},
		{"escaped junk", "%00", `{"enabled":false}`, 400, adminapi.CodeUnknownProtocol},
		{"query param", "imap?drop=false", `{"enabled":false}`, 400, adminapi.CodeBadRequest},
	} {
		t.Run(tc.name, func(t *testing.T) {
			wantError(t, e.do("PUT", path+tc.protocol, tc.body), tc.status, tc.code)
		})
	}
	// Trailing white space is fine.
	e.ok(e.do("PUT", path+"smtp", "{\"enabled\":true}\n\n"), nil)
	if !e.reg.ProtocolEnabled(carol, "imap") || e.reg.Count("imap") != 1 {
		t.Fatal("a refused PUT changed policy or dropped")
	}
}

func TestSetDomain(t *testing.T) {
	e := newEnv(t)
	var d drops
	e.login("imap", "192.0.2.1:1000", "bob@example.com", &d)
	e.login("pop", "192.0.2.1:1001", "alice@Example.COM", &d)
	e.login("imap", "192.0.2.1:1002", "bob@example.org", nil)
	e.conn("imap", "192.0.2.1:1003", nil) // preauth: no domain yet

	var res adminapi.DomainResult
	e.ok(e.do("PUT", "/api/v1/domains/EXAMPLE.com", `{"enabled":false}`), &res)
	if res != (adminapi.DomainResult{Domain: "example.com", Enabled: false, Dropped: 2}) {
		t.Fatalf("disable domain = %+v", res)
	}
	if e.reg.DomainEnabled("example.com") || len(d.get()) != 2 || e.reg.Count("imap") != 2 {
		t.Fatalf("after disable: enabled %v, drops %v, imap %d", e.reg.DomainEnabled("example.com"), d.get(), e.reg.Count("imap"))
	}
	if got := e.conn("imap", "192.0.2.1:1004", nil).CheckLogin("carol@example.com"); got != accounting.DenyDisabled {
		t.Fatalf("CheckLogin in a disabled domain = %q", got)
	}
	e.ok(e.do("GET", "/api/v1/domains/example.com", ""), &res)
	if res.Enabled {
		t.Fatal("GET domain: enabled after disabling")
	}
	var detail adminapi.UserDetail
	e.get("/api/v1/users/carol@example.com", &detail)
	if detail.DomainEnabled {
		t.Fatal("user detail: domain_enabled true in a disabled domain")
	}

	// drop:false keeps connections; enabling reports the new state.
	e.login("imap", "192.0.2.1:1005", "dave@example.net", nil)
	e.ok(e.do("PUT", "/api/v1/domains/example.net", `{"enabled":false,"drop":false}`), &res)
	if res != (adminapi.DomainResult{Domain: "example.net", Enabled: false, Dropped: 0}) || e.reg.Count("imap") != 4 {
		t.Fatalf("disable keeping connections = %+v, imap %d", res, e.reg.Count("imap"))
	}
	var tab adminapi.UserList
	e.get("/api/v1/users?protocol=imap", &tab)
	for _, row := range tab.Users {
		if row.User == "dave@example.net" && row.DomainEnabled {
			t.Fatal("users row: domain_enabled true in a disabled domain")
		}
	}
	e.ok(e.do("PUT", "/api/v1/domains/example.com", `{"enabled":true}`), &res)
	if !res.Enabled || !e.reg.DomainEnabled("example.com") {
		t.Fatalf("enable domain = %+v", res)
	}

	for _, dom := range []string{"bob@example.com", "%20", "a%2Fb", "ex%00ample.com", "a%20b"} {
		wantError(t, e.do("PUT", "/api/v1/domains/"+dom, `{"enabled":false}`), http.StatusBadRequest, adminapi.CodeBadRequest)
	}
	wantError(t, e.do("PUT", "/api/v1/domains/example.org", `{"enabled":0}`), http.StatusBadRequest, adminapi.CodeBadRequest)
	if !e.reg.DomainEnabled("example.org") {
		t.Fatal("a refused domain PUT changed policy")
	}
}
