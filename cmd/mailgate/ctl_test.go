package main

import (
	"bytes"
	"context"
	"fmt"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"

	"github.com/mailgate/mailgate/accounting"
	"github.com/mailgate/mailgate/adminapi"
	"github.com/mailgate/mailgate/cluster"
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

// ctlCluster is two cluster nodes, a and b, on one miniredis, with the
// admin API served by a over its cluster view.
func ctlCluster(t *testing.T) (mr *miniredis.Miniredis, a, b *accounting.Registry, ctl func(args ...string) (string, error)) {
	t.Helper()
	mr = miniredis.RunT(t)
	regs := map[string]*accounting.Registry{}
	var ca *cluster.Cluster
	for _, name := range []string{"a", "b"} {
		reg := accounting.New(accounting.Options{})
		c, err := cluster.Join(context.Background(), cluster.Options{Redis: cluster.Redis{Addresses: []string{mr.Addr()}},
			Node: name, Admin: name + ".example:1880", Version: "test", Registry: reg,
			Heartbeat: 100 * time.Millisecond, NodeTTL: 500 * time.Millisecond})
		if err != nil {
			t.Fatalf("join %s: %v", name, err)
		}
		t.Cleanup(func() { c.Close() })
		regs[name] = reg
		if name == "a" {
			ca = c
		}
	}
	api, err := adminapi.New(adminapi.Options{Registry: ca.View(), Cluster: ca, Metrics: regs["a"], Token: "tok", Node: "a"})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(api)
	t.Cleanup(srv.Close)
	ctl = func(args ...string) (string, error) {
		var out bytes.Buffer
		err := runCtl(append([]string{"--addr", srv.URL, "--token", "tok"}, args...), &out)
		return out.String(), err
	}
	// a sees b after a heartbeat.
	deadline := time.Now().Add(3 * time.Second)
	for len(ca.Nodes()) < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("node a does not see b: %+v", ca.Nodes())
		}
		time.Sleep(20 * time.Millisecond)
	}
	return mr, regs["a"], regs["b"], ctl
}

// eventually retries f until it returns "" (or fails with its last answer).
func eventually(t *testing.T, f func() string) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	for {
		msg := f()
		if msg == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal(msg)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestCtlNodesSingle(t *testing.T) {
	reg, ctl := ctlEnv(t)
	reg.Register(accounting.ConnInfo{Protocol: "imap", Client: netip.MustParseAddrPort("192.0.2.1:1")})
	out, err := ctl("nodes")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 4 || !strings.HasPrefix(lines[0], "single node") || lines[1] != "" {
		t.Fatalf("nodes on a single node:\n%s", out)
	}
	if h := strings.Fields(lines[2]); strings.Join(h, " ") != "NAME STATE LIVE ADMIN VERSION LAST-HEARTBEAT DEGRADED" {
		t.Errorf("header = %q", lines[2])
	}
	if f := strings.Fields(lines[3]); len(f) != 6 || f[0] != "up" || f[1] != "1" || f[5] != "no" {
		// an unnamed node: the name column is empty
		t.Errorf("node row = %q, want state up, 1 live, not degraded", lines[3])
	}
	out, err = ctl("nodes", "--json")
	if err != nil || !strings.Contains(out, `"cluster":false`) || !strings.Contains(out, `"live_connections":1`) {
		t.Errorf("nodes --json: %q %v", out, err)
	}
	// A single node's connections are its own, the drop says no node.
	c := reg.Register(accounting.ConnInfo{Protocol: "imap", Client: netip.MustParseAddrPort("192.0.2.1:2")})
	c.SetDropFunc(func(string) {})
	c.Authenticated("bob@example.com", "LOGIN")
	if out, err := ctl("kick", "bob@example.com"); err != nil || out != "dropped 1 session(s) of bob@example.com\n" {
		t.Errorf("kick on a single node: %q %v", out, err)
	}
	if _, err := ctl("drop", "nope"); err == nil || !strings.Contains(err.Error(), "connection id") {
		t.Errorf("drop nope: %v", err)
	}
}

func TestCtlCluster(t *testing.T) {
	mr, a, b, ctl := ctlCluster(t)
	for _, x := range []struct {
		reg    *accounting.Registry
		client string
	}{{a, "192.0.2.1:1"}, {b, "192.0.2.2:1"}, {b, "192.0.2.2:2"}} {
		c := x.reg.Register(accounting.ConnInfo{Protocol: "imap", Client: netip.MustParseAddrPort(x.client)})
		c.SetDropFunc(func(string) {})
		c.Authenticated("bob@example.com", "LOGIN")
	}
	b.Register(accounting.ConnInfo{Protocol: "pop", Client: netip.MustParseAddrPort("198.51.100.7:1")})

	t.Run("nodes", func(t *testing.T) {
		eventually(t, func() string {
			out, err := ctl("nodes")
			if err != nil {
				return err.Error()
			}
			lines := strings.Split(strings.TrimSpace(out), "\n")
			if len(lines) != 5 || lines[0] != "cluster of 2 node(s), 2 up; answered by a, Redis up" {
				return "nodes:\n" + out
			}
			rows := map[string]string{}
			for _, l := range lines[3:] {
				f := strings.Fields(l)
				rows[f[0]] = strings.Join(f, " ")
			}
			for name, live := range map[string]string{"a": "1", "b": "3"} {
				want := name + " up " + live + " " + name + ".example:1880 test "
				if !strings.HasPrefix(rows[name], want) || !strings.HasSuffix(rows[name], " no") {
					return fmt.Sprintf("node %s row = %q, want %q... no\n%s", name, rows[name], want, out)
				}
			}
			return ""
		})
		out, err := ctl("nodes", "--json")
		if err != nil || !strings.Contains(out, `"cluster":true`) || !strings.Contains(out, `"name":"b"`) {
			t.Errorf("nodes --json: %q %v", out, err)
		}
	})

	t.Run("connections --node", func(t *testing.T) {
		var lines []string
		eventually(t, func() string {
			out, err := ctl("connections", "--node", "b")
			if err != nil {
				return err.Error()
			}
			lines = strings.Split(strings.TrimSpace(out), "\n")
			if len(lines) != 4 {
				return "connections --node b:\n" + out
			}
			return ""
		})
		if h := strings.Join(strings.Fields(lines[0]), " "); h != "ID NODE PROTOCOL USER CLIENT STATE TLS MECHANISM STARTED" {
			t.Errorf("header = %q", lines[0])
		}
		for _, l := range lines[1:] {
			if f := strings.Fields(l); f[1] != "b" {
				t.Errorf("connections --node b lists %q", l)
			}
		}
		if all := strings.Join(lines, "\n"); !strings.Contains(all, "(not logged in)") || !strings.Contains(all, " 198.51.100.7:1 ") {
			t.Errorf("the unauthenticated pop connection is missing:\n%s", strings.Join(lines, "\n"))
		}
		out, err := ctl("connections", "--node", "a", "--json")
		if err != nil || strings.Count(out, `"id"`) != 1 || !strings.Contains(out, `"node":"a"`) {
			t.Errorf("connections --node a --json: %q %v", out, err)
		}
		out, err = ctl("connections", "--user", "bob@example.com")
		if err != nil || strings.Count(out, "\n") != 4 {
			t.Errorf("connections --user bob: %q %v", out, err)
		}
		out, err = ctl("who")
		if err != nil || !strings.Contains(out, "NODES") || lastField(out, "bob@example.com") != "a,b" {
			t.Errorf("who in a cluster: %q %v", out, err)
		}
	})

	t.Run("drop counts per node", func(t *testing.T) {
		out, err := ctl("kick", "bob@example.com")
		if err != nil || out != "dropped 3 session(s) of bob@example.com (on a: 1, b: 2)\n" {
			t.Errorf("kick in a cluster: %q %v", out, err)
		}
		var id string
		eventually(t, func() string {
			out, err := ctl("connections", "--node", "b", "--protocol", "pop")
			if err != nil {
				return err.Error()
			}
			lines := strings.Split(strings.TrimSpace(out), "\n")
			if len(lines) != 2 {
				return "pop connections on b:\n" + out
			}
			id = strings.Fields(lines[1])[0]
			return ""
		})
		out, err = ctl("drop", id)
		if err != nil || out != "dropped connection "+id+" (on a: 0, b: 1)\n" {
			t.Errorf("drop %s: %q %v", id, out, err)
		}
	})

	t.Run("Redis down", func(t *testing.T) {
		mr.Close()
		eventually(t, func() string {
			out, err := ctl("nodes")
			if err != nil {
				return err.Error()
			}
			if !strings.Contains(out, "WARNING: a cannot reach Redis: it serves with the last known policy; changes are refused until Redis is back") {
				return "nodes with Redis down:\n" + out
			}
			return ""
		})
		_, err := ctl("disable", "bob@example.com", "imap")
		if err == nil || !strings.Contains(err.Error(), "(cluster_unavailable)") {
			t.Errorf("disable with Redis down: %v, want cluster_unavailable", err)
		}
	})
}

// lastField is the last field of the first line of out that starts with
// prefix.
func lastField(out, prefix string) string {
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, prefix) {
			f := strings.Fields(l)
			return f[len(f)-1]
		}
	}
	return ""
}
