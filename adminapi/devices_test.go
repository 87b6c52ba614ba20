package adminapi_test

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/mailgate/mailgate/accounting"
	"github.com/mailgate/mailgate/adminapi"
)

// easRequest registers a live ActiveSync request of user from device id
// (type typ) and authenticates it, as the HTTP front does.
func (e *env) easRequest(addr, user, id, typ string, d *drops) *accounting.Conn {
	e.t.Helper()
	c := e.conn("eas", addr, d)
	c.AuthAttempt(user, "basic")
	if got := c.CheckLogin(user); got != accounting.DenyNone {
		e.t.Fatalf("CheckLogin = %q", got)
	}
	if got := c.CheckDevice(user, accounting.Device{ID: id, Type: typ, UserAgent: typ + "-agent/1.0", Command: "Ping"}); got != "" {
		e.t.Fatalf("CheckDevice(%s) = %q", id, got)
	}
	c.Authenticated(user, "basic")
	return c
}

func (e *env) devices(user string) map[string]adminapi.DeviceJSON {
	e.t.Helper()
	var l adminapi.DeviceList
	e.get("/api/v1/users/"+user+"/devices", &l)
	out := map[string]adminapi.DeviceJSON{}
	for _, d := range l.Devices {
		out[d.ID] = d
	}
	return out
}

func TestDevices_listBlockAllowDropResync(t *testing.T) {
	e := newEnv(t, withRoles)
	var phone, desk drops
	e.easRequest("192.0.2.1:1000", "alice@example.com", "PhoneA1", "iPhone", &phone)
	e.clock.Advance(time.Second)
	e.easRequest("192.0.2.2:1000", "alice@example.com", "desk7", "WindowsOutlook15", &desk)

	var l adminapi.DeviceList
	e.get("/api/v1/users/Alice@Example.com/devices", &l)
	if l.User != "alice@example.com" || len(l.Devices) != 2 || l.Devices[0].ID != "desk7" {
		t.Fatalf("devices = %+v", l)
	}
	p := l.Devices[1]
	if p.ID != "PhoneA1" || p.Type != "iPhone" || p.UserAgent != "iPhone-agent/1.0" || p.LastCommand != "Ping" || p.Live != 1 ||
		p.Blocked || p.Block != nil || p.TypeRefused || p.LastIP.String() != "192.0.2.1" || !p.FirstSeen.Equal(t0) || p.LastRefused != nil {
		t.Errorf("the phone = %+v", p)
	}
	// The connection list names the device of each request.
	var cl adminapi.ConnectionList
	e.get("/api/v1/connections?protocol=eas", &cl)
	if len(cl.Connections) != 2 || cl.Connections[0].DeviceID != "PhoneA1" {
		t.Errorf("connections = %+v", cl)
	}

	// An operator blocks the phone with a reason: its Ping is dropped, the
	// desk's stays; the block is in the list and in the audit trail.
	var res adminapi.DeviceResult
	e.ok(e.auditAs(operatorToken, "lost on the train", "POST", "/api/v1/users/alice@example.com/devices/phonea1/block", ""), &res)
	if res != (adminapi.DeviceResult{User: "alice@example.com", DeviceID: "phonea1", Blocked: true, Dropped: 1}) {
		t.Fatalf("block = %+v", res)
	}
	if len(phone.get()) != 1 || len(desk.get()) != 0 {
		t.Fatalf("drops: phone %v, desk %v", phone.get(), desk.get())
	}
	ds := e.devices("alice@example.com")
	if b := ds["PhoneA1"]; !b.Blocked || b.Block == nil || b.Block.By != "otto" || b.Block.Reason != "lost on the train" || b.Live != 0 {
		t.Errorf("the blocked phone = %+v", b)
	}
	if ds["desk7"].Blocked || ds["desk7"].Live != 1 {
		t.Errorf("the desk = %+v", ds["desk7"])
	}
	c := e.conn("eas", "192.0.2.1:1001", nil)
	if got := c.CheckDevice("alice@example.com", accounting.Device{ID: "PHONEA1", Type: "iPhone"}); got != accounting.GateDeviceBlocked {
		t.Errorf("the blocked phone's next request: %q", got)
	}
	c.Close()
	var logins adminapi.LoginList
	e.get("/api/v1/users/alice@example.com/logins", &logins)
	if len(logins.Logins) == 0 || logins.Logins[0].Result != "gated" || logins.Logins[0].Reason != "device_blocked" {
		t.Errorf("logins = %+v", logins.Logins)
	}
	entries := e.auditList("?target=alice@example.com")
	if len(entries) != 1 {
		t.Fatalf("audit = %+v", entries)
	}
	if en := entries[0]; en.Action != "block_device" || en.Actor != "otto" || en.Role != "operator" || en.Reason != "lost on the train" ||
		en.Params["device"] != "phonea1" || !en.OK || en.Dropped != 1 || en.Outcome != "blocked, dropped 1 session(s)" {
		t.Errorf("the audit entry = %+v", en)
	}

	// A viewer sees the devices but may not block.
	e.ok(e.raw("GET", "/api/v1/users/alice@example.com/devices", "", "Bearer "+viewerToken), nil)
	wantError(t, e.auditAs(viewerToken, "x", "POST", "/api/v1/users/alice@example.com/devices/desk7/block", ""), http.StatusForbidden, adminapi.CodeForbidden)
	if e.reg.DeviceBlocked("alice@example.com", "desk7") {
		t.Fatal("a viewer blocked a device")
	}

	// Drop and resync the desk (no eas hook configured).
	var dr adminapi.DropResult
	e.ok(e.auditAs(operatorToken, "", "POST", "/api/v1/users/alice@example.com/devices/desk7/drop", `{"reason":"stuck ping"}`), &dr)
	if dr.Dropped != 1 || len(desk.get()) != 1 {
		t.Fatalf("drop = %+v, drops %v", dr, desk.get())
	}
	var rr adminapi.DeviceResyncResult
	e.ok(e.do("POST", "/api/v1/users/alice@example.com/devices/desk7/resync", ""), &rr)
	if rr.DeviceID != "desk7" || len(rr.Steps) != 2 || rr.Steps[0].Step != "drop" || rr.Steps[1].Detail != "no hook configured for eas" {
		t.Errorf("resync = %+v", rr)
	}

	// Allowed again; a second allow is a 404, audited as not done.
	e.ok(e.auditAs(operatorToken, "found it", "POST", "/api/v1/users/alice@example.com/devices/PhoneA1/allow", ""), &res)
	if res.Blocked || e.reg.DeviceBlocked("alice@example.com", "phonea1") {
		t.Fatalf("allow = %+v", res)
	}
	wantError(t, e.do("POST", "/api/v1/users/alice@example.com/devices/PhoneA1/allow", ""), http.StatusNotFound, adminapi.CodeNotFound)
	got := e.auditList("?target=alice@example.com")
	var actions []string
	for _, en := range got {
		actions = append(actions, en.Action+"/"+map[bool]string{true: "ok", false: "not"}[en.OK])
	}
	if strings.Join(actions, " ") != "allow_device/not allow_device/ok resync_device/ok drop_device/ok block_device/ok" {
		t.Errorf("audit = %v", actions)
	}
	if got[3].Reason != "stuck ping" || got[3].Dropped != 1 || got[2].Params["device"] != "desk7" {
		t.Errorf("drop and resync entries = %+v %+v", got[3], got[2])
	}

	// A device never seen may be blocked: it shows with no sighting.
	e.ok(e.do("POST", "/api/v1/users/alice@example.com/devices/stolen-9/block", `{"reason":"stolen"}`), &res)
	if d := e.devices("alice@example.com")["stolen-9"]; !d.Blocked || d.FirstSeen != nil || d.LastSeen != nil || d.Block.Reason != "stolen" {
		t.Errorf("the never-seen device = %+v", d)
	}
	if ds := e.devices("nobody@example.com"); len(ds) != 0 {
		t.Errorf("nobody's devices = %+v", ds)
	}
}

func TestDevices_badInput(t *testing.T) {
	e := newEnv(t)
	for _, tc := range []struct{ method, path, body string }{
		{"POST", "/api/v1/users/alice@example.com/devices/%20/block", ""},
		{"POST", "/api/v1/users/alice@example.com/devices/a%09b/block", ""},
		{"POST", "/api/v1/users/alice@example.com/devices/" + strings.Repeat("d", 129) + "/drop", ""},
		{"POST", "/api/v1/users/alice@example.com/devices/dev1/block", `{"reason":"x","drop":true}`},
		{"POST", "/api/v1/users/alice@example.com/devices/dev1/block?protocol=eas", ""},
		{"POST", "/api/v1/users/alice@example.com/devices/-rf/resync", ""},
		{"POST", "/api/v1/users/alice@example.com/devices/a;b/resync", ""},
		{"POST", "/api/v1/users/a%20b@example.com/devices/dev1/resync", ""},
		{"GET", "/api/v1/users/alice@example.com/devices?all=1", ""},
	} {
		r := e.do(tc.method, tc.path, tc.body)
		wantError(t, r, http.StatusBadRequest, adminapi.CodeBadRequest)
	}
	wantError(t, e.do("GET", "/api/v1/users/alice@example.com/devices/dev1", ""), http.StatusNotFound, adminapi.CodeNotFound)
	wantError(t, e.do("GET", "/api/v1/users/alice@example.com/devices/dev1/block", ""), http.StatusMethodNotAllowed, adminapi.CodeMethodNotAllowed)
	if got := e.auditList(""); len(got) != 0 {
		t.Errorf("refused requests were audited: %+v", got)
	}
	if len(e.reg.Devices("alice@example.com")) != 0 {
		t.Error("a refused request blocked a device")
	}
}
