package e2e

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
)

// TestDemo is the "done means" test: `mailgate demo` (no config, no mail
// server) serves real clients, the admin API counts them and drops them.
func TestDemo(t *testing.T) {
	t.Parallel()
	imapAddr, imapsAddr, adminAddr := freeAddr(t), freeAddr(t), freeAddr(t)
	const token = "e2e-demo-token"
	m := startMailgate(t, adminAddr, token, "demo",
		"-imap", imapAddr, "-imaps", imapsAddr, "-admin", adminAddr,
		"-token", token, "-log-level", "debug")

	t.Run("api needs the token", func(t *testing.T) {
		resp, err := m.http.Get("http://" + adminAddr + "/api/v1/connections/summary")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("GET summary without a token = %d, want 401", resp.StatusCode)
		}
	})

	t.Run("curl STARTTLS lists mailboxes", func(t *testing.T) {
		out, err := curl(t, "-vk", "--ssl-reqd", "imap://"+imapAddr+"/", "-u", alice+":"+alicePassword)
		if err != nil {
			t.Fatalf("curl -vk --ssl-reqd imap://%s/: %v\n%s", imapAddr, err, out)
		}
		if !strings.Contains(out, "* LIST") || !strings.Contains(out, "INBOX") {
			t.Fatalf("curl listed no INBOX:\n%s", out)
		}
		if !strings.Contains(out, "STARTTLS") {
			t.Errorf("curl -v shows no STARTTLS exchange:\n%s", out)
		}
	})

	t.Run("imaplib implicit TLS", func(t *testing.T) {
		c := startPy(t, "imaps-list", imapOpts{Addr: imapsAddr, TLS: "implicit", User: alice, Password: alicePassword, Then: "list"})
		c.expect("TLS TLSv1.")
		if l := c.expect("LOGIN "); !strings.HasPrefix(l, "LOGIN OK") {
			t.Fatalf("implicit TLS login: %s", l)
		}
		if l := c.expect("LIST "); !strings.Contains(l, "INBOX") {
			t.Fatalf("LIST: %s, want INBOX", l)
		}
		c.expect("LOGOUT")
		c.wait()
	})

	t.Run("IDLE session counted, listed and dropped", func(t *testing.T) {
		m.waitIMAPCount(0) // curl and the implicit-TLS client are gone
		c := startPy(t, "idle", imapOpts{Addr: imapAddr, TLS: "starttls", Source: "127.0.0.2", User: alice, Password: alicePassword, Then: "idle"})
		c.expect("TLS TLSv1.")
		if l := c.expect("LOGIN "); !strings.HasPrefix(l, "LOGIN OK") {
			t.Fatalf("STARTTLS login: %s", l)
		}
		c.expect("IDLING")
		m.waitIMAPCount(1)

		conn := m.waitConn("imap", alice)
		if conn.ClientIP != "127.0.0.2" || !conn.TLS || conn.Protocol != "imap" {
			t.Errorf("connection = %+v, want client_ip 127.0.0.2, tls true, protocol imap", conn)
		}
		rows := m.users("imap")
		var row *apiUserRow
		for i := range rows {
			if rows[i].User == alice {
				row = &rows[i]
			}
		}
		if row == nil {
			t.Fatalf("GET /api/v1/users?protocol=imap has no row for %s: %+v", alice, rows)
		}
		if row.Connections != 1 || len(row.IPConnections) != 1 || row.IPConnections[0].IP != "127.0.0.2" || row.IPConnections[0].Count != 1 {
			t.Errorf("alice's row = %+v, want 1 connection from 127.0.0.2", *row)
		}
		if row.LastIP == nil || *row.LastIP != "127.0.0.2" {
			t.Errorf("alice's last_authenticated_ip = %v, want 127.0.0.2", row.LastIP)
		}

		if n := m.drop(alice, "imap"); n != 1 {
			t.Errorf("drop answered dropped=%d, want 1", n)
		}
		if l := c.expect("BYE "); !strings.Contains(l, "* BYE") {
			t.Errorf("client read %q, want * BYE", l)
		}
		c.expect("EOF")
		c.wait()
		m.waitIMAPCount(0)
	})

	t.Run("wrong password gets NO", func(t *testing.T) {
		l := loginOnce(t, "wrong-password", imapOpts{Addr: imapAddr, User: alice, Password: wrongPassword})
		if !strings.HasPrefix(l, "LOGIN NO") {
			t.Fatalf("login with a wrong password: %q, want LOGIN NO", l)
		}
	})

	t.Run("AUTHENTICATE PLAIN", func(t *testing.T) {
		l := loginOnce(t, "auth-plain", imapOpts{Addr: imapAddr, User: bob, Password: bobPassword, Auth: "plain"})
		if !strings.HasPrefix(l, "LOGIN OK") {
			t.Fatalf("AUTHENTICATE PLAIN: %q, want OK", l)
		}
		l = loginOnce(t, "auth-plain-wrong", imapOpts{Addr: imapAddr, User: bob, Password: wrongPassword, Auth: "plain"})
		if !strings.HasPrefix(l, "LOGIN NO") {
			t.Fatalf("AUTHENTICATE PLAIN with a wrong password: %q, want NO", l)
		}
	})

	t.Run("disabled protocol refuses the login", func(t *testing.T) {
		path := "/api/v1/users/" + url.PathEscape(alice) + "/protocols/imap"
		var res struct {
			Enabled *bool `json:"enabled"`
		}
		m.apiJSON("PUT", path, map[string]bool{"enabled": false}, &res)
		if res.Enabled == nil || *res.Enabled {
			t.Errorf("PUT enabled=false answered enabled=%v", res.Enabled)
		}
		l := loginOnce(t, "disabled", imapOpts{Addr: imapAddr, User: alice, Password: alicePassword})
		if !strings.HasPrefix(l, "LOGIN NO") || !(strings.Contains(l, "[CONTACTADMIN]") || strings.Contains(l, "[AUTHENTICATIONFAILED]")) {
			t.Errorf("login while imap is disabled: %q, want NO [CONTACTADMIN] or NO [AUTHENTICATIONFAILED]", l)
		}
		// bob is not affected.
		if l := loginOnce(t, "bob-while-alice-disabled", imapOpts{Addr: imapsAddr, TLS: "implicit", User: bob, Password: bobPassword}); !strings.HasPrefix(l, "LOGIN OK") {
			t.Errorf("bob's login while alice is disabled: %q, want OK", l)
		}
		m.apiJSON("PUT", path, map[string]bool{"enabled": true}, &res)
		if l := loginOnce(t, "re-enabled", imapOpts{Addr: imapAddr, User: alice, Password: alicePassword}); !strings.HasPrefix(l, "LOGIN OK") {
			t.Errorf("login after re-enabling imap: %q, want OK", l)
		}
	})
}
