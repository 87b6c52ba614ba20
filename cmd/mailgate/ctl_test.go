package main

import (
	"bytes"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"

	"github.com/mailgate/mailgate/accounting"
	"github.com/mailgate/mailgate/adminapi"
)

func ctlEnv(t *testing.T) (*accounting.Registry, func(args ...string) (string, error)) {
	reg := accounting.New(accounting.Options{})
	api, err := adminapi.New(adminapi.Options{Registry: reg, Token: "tok"})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(api)
	t.Cleanup(srv.Close)
	return reg, func(args ...string) (string, error) {
		var out bytes.Buffer
		err := runCtl(append([]string{"--addr", srv.URL, "--token", "tok"}, args...), &out)
		return out.String(), err
	}
}

func TestCtlWhoMatchesAPI(t *testing.T) {
	reg, ctl := ctlEnv(t)
	for _, src := range []string{"192.0.2.1:1", "192.0.2.1:2", "192.0.2.9:3"} {
		c := reg.Register(accounting.ConnInfo{Protocol: "imap", Client: netip.MustParseAddrPort(src)})
		c.Authenticated("alice@example.com", "LOGIN")
	}
	reg.Register(accounting.ConnInfo{Protocol: "smtp", Client: netip.MustParseAddrPort("198.51.100.3:25")})
	out, err := ctl("who")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if !strings.HasPrefix(lines[0], "all 4  smtp 1  imap 3  pop 0") {
		t.Errorf("counts line = %q", lines[0])
	}
	if len(lines) != 5 {
		t.Fatalf("who printed %d lines, want counts, blank, header, 2 rows:\n%s", len(lines), out)
	}
	alice := strings.Fields(lines[3])
	if alice[0] != "alice@example.com" || alice[4] != "3" || alice[5] != "192.0.2.1(2)" || alice[6] != "192.0.2.9(1)" {
		t.Errorf("alice row = %q", lines[3])
	}
	if !strings.HasPrefix(lines[4], "(not logged in)") || !strings.Contains(lines[4], "198.51.100.3(1)") {
		t.Errorf("unauthenticated row = %q", lines[4])
	}
	out, _ = ctl("who", "--protocol", "smtp")
	if strings.Contains(out, "alice") {
		t.Errorf("smtp tab shows alice:\n%s", out)
	}
}

func TestCtlActions(t *testing.T) {
	reg, ctl := ctlEnv(t)
	c := reg.Register(accounting.ConnInfo{Protocol: "imap", Client: netip.MustParseAddrPort("192.0.2.1:1")})
	c.Authenticated("bob@example.com", "LOGIN")
	if out, err := ctl("kick", "bob@example.com", "--protocol", "imap"); err != nil || !strings.Contains(out, "dropped 1") {
		t.Fatalf("kick: %q %v", out, err)
	}
	if _, err := ctl("disable", "bob@example.com", "imap"); err != nil || reg.ProtocolEnabled("bob@example.com", "imap") {
		t.Fatalf("disable: %v", err)
	}
	if _, err := ctl("enable", "bob@example.com", "imap"); err != nil || !reg.ProtocolEnabled("bob@example.com", "imap") {
		t.Fatalf("enable: %v", err)
	}
	if _, err := ctl("domain", "disable", "example.com"); err != nil || reg.DomainEnabled("example.com") {
		t.Fatalf("domain disable: %v", err)
	}
	if out, err := ctl("ips", "bob@example.com"); err != nil || !strings.Contains(out, "192.0.2.1  imap") {
		t.Fatalf("ips: %q %v", out, err)
	}
	if _, err := ctl("block", "203.0.113.0/24", "--for", "1h"); err != nil || !reg.Blocked(netip.MustParseAddr("203.0.113.4")) {
		t.Fatalf("block: %v", err)
	}
	if _, err := ctl("unblock", "203.0.113.0/24"); err != nil || reg.Blocked(netip.MustParseAddr("203.0.113.4")) {
		t.Fatalf("unblock: %v", err)
	}
	if _, err := ctl("enable", "bob@example.com", "gopher"); err == nil || !strings.Contains(err.Error(), "unknown_protocol") {
		t.Fatalf("bad protocol: %v", err)
	}
	if _, err := ctl("resync", "x;rm@example.com", "--protocol", "imap"); err == nil {
		t.Fatal("resync accepted an unsafe user")
	}
	for i := 0; i < 10; i++ { // the default brute-force threshold
		reg.Register(accounting.ConnInfo{Protocol: "imap", Client: netip.MustParseAddrPort("192.0.2.66:1")}).AuthFailed("x@example.com", "LOGIN", false)
	}
	if len(reg.Lockouts()) != 2 {
		t.Fatalf("lockouts = %+v", reg.Lockouts())
	}
	if out, err := ctl("unlock", "ip", "192.0.2.66"); err != nil || !strings.Contains(out, "cleared") {
		t.Fatalf("unlock: %q %v", out, err)
	}
	if _, err := ctl("unlock", "ip", "192.0.2.66"); err == nil || !strings.Contains(err.Error(), "not_found") {
		t.Fatalf("unlock again: %v", err)
	}
	if l := reg.Lockouts(); len(l) != 1 || l[0].Kind != "user" {
		t.Fatalf("lockouts after unlock ip = %+v", l)
	}
}

func TestCtlWhoamiAndForbidden(t *testing.T) {
	reg := accounting.New(accounting.Options{})
	api, err := adminapi.New(adminapi.Options{Registry: reg, Tokens: []adminapi.Token{
		{Name: "look", Role: accounting.RoleViewer, Secret: "v"},
		{Name: "noc", Role: accounting.RoleOperator, Secret: "o"},
	}})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(api)
	t.Cleanup(srv.Close)
	ctl := func(token string, args ...string) (string, error) {
		var out bytes.Buffer
		err := runCtl(append([]string{"--addr", srv.URL, "--token", token}, args...), &out)
		return out.String(), err
	}
	if out, err := ctl("v", "whoami"); err != nil || out != "look (viewer): read only\n" {
		t.Errorf("whoami as the viewer: %q %v", out, err)
	}
	if out, err := ctl("o", "whoami"); err != nil || out != "noc (operator): drop, resync, enable, disable, domain, device\n" {
		t.Errorf("whoami as the operator: %q %v", out, err)
	}
	if _, err := ctl("v", "kick", "bob@example.com"); err == nil || !strings.Contains(err.Error(), "(forbidden)") {
		t.Errorf("kick as the viewer: %v, want forbidden", err)
	}
	if _, err := ctl("o", "block", "203.0.113.9"); err == nil || !strings.Contains(err.Error(), "needs admin") {
		t.Errorf("block as the operator: %v, want forbidden", err)
	}
	if _, err := ctl("o", "kick", "bob@example.com"); err != nil {
		t.Errorf("kick as the operator: %v", err)
	}
}

func TestCtlReasonAndAudit(t *testing.T) {
	reg := accounting.New(accounting.Options{})
	api, err := adminapi.New(adminapi.Options{Registry: reg, RequireReason: true, Tokens: []adminapi.Token{
		{Name: "noc", Role: accounting.RoleAdmin, Secret: "a"},
	}})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(api)
	t.Cleanup(srv.Close)
	ctl := func(args ...string) (string, error) {
		var out bytes.Buffer
		err := runCtl(append([]string{"--addr", srv.URL, "--token", "a"}, args...), &out)
		return out.String(), err
	}
	c := reg.Register(accounting.ConnInfo{Protocol: "imap", Client: netip.MustParseAddrPort("192.0.2.1:1")})
	c.Authenticated("bob@example.com", "LOGIN")
	if _, err := ctl("kick", "bob@example.com"); err == nil || !strings.Contains(err.Error(), "reason is required") {
		t.Fatalf("kick without --reason: %v", err)
	}
	if out, err := ctl("kick", "bob@example.com", "--reason", "lost phone, ticket 12"); err != nil || !strings.Contains(out, "dropped 1") {
		t.Fatalf("kick --reason: %q %v", out, err)
	}
	if _, err := ctl("block", "203.0.113.0/24", "--reason", "spraying", "--for", "1h"); err != nil {
		t.Fatal(err)
	}
	if _, err := ctl("disable", "carol@example.com", "pop", "--reason", "left"); err != nil {
		t.Fatal(err)
	}
	out, err := ctl("audit")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 4 || !strings.HasPrefix(lines[0], "TIME") {
		t.Fatalf("audit:\n%s", out)
	}
	for i, want := range []string{
		"noc admin 127.0.0.1 disable_protocol (drop=true protocol=pop) carol@example.com yes 0 left disabled, dropped 0 session(s)",
		"noc admin 127.0.0.1 block (expires=",
		"noc admin 127.0.0.1 drop_user (protocol=all) bob@example.com yes 1 lost phone, ticket 12 dropped 1 session(s)",
	} {
		if got := strings.Join(strings.Fields(lines[i+1])[1:], " "); !strings.HasPrefix(got, want) {
			t.Errorf("audit line %d = %q, want %q", i+1, got, want)
		}
	}
	out, err = ctl("audit", "--target", "bob@example.com", "--since", "1h", "--actor", "noc", "--json")
	if err != nil || strings.Count(out, `"action"`) != 1 || !strings.Contains(out, `"reason":"lost phone, ticket 12"`) {
		t.Errorf("audit --target bob --json: %q %v", out, err)
	}
	if out, err := ctl("audit", "--actor", "someone-else"); err != nil || strings.Count(out, "\n") != 1 {
		t.Errorf("audit --actor someone-else: %q %v", out, err)
	}
}

func TestCtlLogins(t *testing.T) {
	reg, ctl := ctlEnv(t)
	c := reg.Register(accounting.ConnInfo{Protocol: "imap", Client: netip.MustParseAddrPort("192.0.2.1:1")})
	c.AuthAttempt("bob@example.com", "PLAIN")
	c.CheckLogin("bob@example.com")
	c.AuthFailed("bob@example.com", "PLAIN", false)
	reg.SetProtocolEnabled("bob@example.com", "pop", false, false)
	c = reg.Register(accounting.ConnInfo{Protocol: "pop", Client: netip.MustParseAddrPort("192.0.2.2:1")})
	c.AuthAttempt("bob@example.com", "USER")
	c.CheckLogin("bob@example.com")
	out, err := ctl("logins", "bob@example.com")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 3 {
		t.Fatalf("logins:\n%s", out)
	}
	for i, want := range []string{"pop 192.0.2.2 USER gated disabled 1 -", "imap 192.0.2.1 PLAIN failed - 1 -"} {
		if got := strings.Join(strings.Fields(lines[i+1])[1:], " "); got != want {
			t.Errorf("line %d = %q, want %q", i+1, got, want)
		}
	}
}

func TestCtlDevices(t *testing.T) {
	reg, ctl := ctlEnv(t)
	if out, err := ctl("devices", "alice@example.com"); err != nil || !strings.Contains(out, "no ActiveSync device of alice@example.com") {
		t.Fatalf("devices of nobody: %q %v", out, err)
	}
	for i, d := range []accounting.Device{{ID: "phone1", Type: "iPhone", UserAgent: "Apple-iPhone/1", Command: "FolderSync"},
		{ID: "tab2", Type: "iPad", Command: "Ping"}} {
		c := reg.Register(accounting.ConnInfo{Protocol: "eas", Client: netip.MustParseAddrPort("192.0.2.7:1")})
		c.AuthAttempt("alice@example.com", "basic")
		c.CheckDevice("alice@example.com", d)
		c.Authenticated("alice@example.com", "basic")
		if i == 0 {
			c.Close()
		}
	}
	out, err := ctl("device", "block", "alice@example.com", "phone1", "--reason", "lost")
	if err != nil || out != "blocked device phone1 of alice@example.com, dropped 0 session(s)\n" || !reg.DeviceBlocked("alice@example.com", "phone1") {
		t.Fatalf("device block: %q %v", out, err)
	}
	out, err = ctl("devices", "alice@example.com")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "DEVICE  TYPE") {
		t.Fatalf("devices:\n%s", out)
	}
	rows := map[string][]string{}
	for _, l := range lines[1:] {
		f := strings.Fields(l)
		rows[f[0]] = f
	}
	if p := strings.Join(rows["phone1"], " "); !strings.Contains(p, "phone1 iPhone blocked by admin: lost 0 FolderSync") || !strings.HasSuffix(p, "192.0.2.7 Apple-iPhone/1") {
		t.Errorf("phone row = %q", p)
	}
	if tb := strings.Join(rows["tab2"], " "); !strings.HasPrefix(tb, "tab2 iPad allowed 1 Ping") || !strings.HasSuffix(tb, " -") {
		t.Errorf("tablet row = %q", tb)
	}
	if out, err := ctl("device", "drop", "alice@example.com", "TAB2"); err != nil || out != "dropped 1 session(s) of device TAB2 of alice@example.com\n" {
		t.Fatalf("device drop: %q %v", out, err)
	}
	if out, err := ctl("device", "resync", "alice@example.com", "tab2"); err != nil || !strings.Contains(out, "no hook configured for eas") {
		t.Fatalf("device resync: %q %v", out, err)
	}
	if out, err := ctl("device", "allow", "alice@example.com", "phone1"); err != nil || out != "allowed device phone1 of alice@example.com\n" {
		t.Fatalf("device allow: %q %v", out, err)
	}
	if _, err := ctl("device", "allow", "alice@example.com", "phone1"); err == nil || !strings.Contains(err.Error(), "not blocked") {
		t.Errorf("allow twice: %v", err)
	}
	if _, err := ctl("device", "wipe", "alice@example.com", "phone1"); err == nil {
		t.Error("device wipe: no error")
	}
	if out, err := ctl("devices", "alice@example.com", "--json"); err != nil || !strings.Contains(out, `"id":"phone1"`) {
		t.Errorf("devices --json: %q %v", out, err)
	}
}
