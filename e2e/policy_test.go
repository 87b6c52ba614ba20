package e2e

import (
	"bufio"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// appendYAML adds top-level keys to a config written by writeConfig.
func appendYAML(t *testing.T, path, extra string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString(extra); err != nil {
		t.Fatal(err)
	}
}

// greeting connects from src and returns the server's first line.
func greeting(t *testing.T, addr, src string) string {
	t.Helper()
	d := net.Dialer{Timeout: 10 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("dial %s from %s: %v", addr, src, err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(stepTimeout))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		t.Fatalf("greeting from %s: %v", addr, err)
	}
	return strings.TrimSpace(line)
}

type apiIPs struct {
	User string `json:"user"`
	IPs  []struct {
		IP       string `json:"ip"`
		Protocol string `json:"protocol"`
		Count    int    `json:"count"`
	} `json:"ips"`
}

// TestStateSurvivesKill9: a disabled protocol, last logins and the IP
// history survive `kill -9` and a restart on the same state file.
func TestStateSurvivesKill9(t *testing.T) {
	t.Parallel()
	state := filepath.Join(t.TempDir(), "state.db")
	imapAddr, imapsAddr, adminAddr := freeAddr(t), freeAddr(t), freeAddr(t)
	const token = "e2e-state-token"
	args := []string{"demo", "-imap", imapAddr, "-imaps", imapsAddr, "-admin", adminAddr,
		"-token", token, "-log-level", "debug", "-state", state}
	m := startMailgate(t, adminAddr, token, args...)

	if code, body := m.api("PUT", "/api/v1/users/"+alice+"/protocols/imap", map[string]bool{"enabled": false}); code != 200 {
		t.Fatalf("disable: %d %s", code, body)
	}
	for _, src := range []string{"127.0.0.2", "127.0.0.3"} {
		if l := loginOnce(t, "bob-"+src, imapOpts{Addr: imapAddr, TLS: "starttls", Source: src, User: bob, Password: bobPassword}); !strings.HasPrefix(l, "LOGIN OK") {
			t.Fatalf("bob from %s: %s", src, l)
		}
	}
	// Login-path writes are committed every 50 ms; give the batch time to land.
	var before apiIPs
	m.apiJSON("GET", "/api/v1/users/"+bob+"/ips", nil, &before)
	time.Sleep(300 * time.Millisecond)
	m.kill9 = true
	if err := m.cmd.Process.Kill(); err != nil { // SIGKILL: no shutdown code runs
		t.Fatal(err)
	}
	<-m.done

	m2 := startMailgate(t, adminAddr, token, args...)
	if l := loginOnce(t, "alice-disabled", imapOpts{Addr: imapAddr, TLS: "starttls", User: alice, Password: alicePassword}); !strings.HasPrefix(l, "LOGIN NO") || !strings.Contains(l, "CONTACTADMIN") {
		t.Fatalf("alice after restart: %s, want NO [CONTACTADMIN]", l)
	}
	var after apiIPs
	m2.apiJSON("GET", "/api/v1/users/"+bob+"/ips", nil, &after)
	got := map[string]bool{}
	for _, ip := range after.IPs {
		got[ip.IP+"/"+ip.Protocol] = true
	}
	if !got["127.0.0.2/imap"] || !got["127.0.0.3/imap"] || len(after.IPs) != len(before.IPs) {
		t.Fatalf("IP history after kill -9: %+v, before %+v", after.IPs, before.IPs)
	}
	var detail struct {
		Protocols map[string]struct {
			LastLogin *time.Time `json:"last_login"`
			LastIP    *string    `json:"last_authenticated_ip"`
		} `json:"protocols"`
	}
	m2.apiJSON("GET", "/api/v1/users/"+bob, nil, &detail)
	if p := detail.Protocols["imap"]; p.LastLogin == nil || p.LastIP == nil || *p.LastIP != "127.0.0.3" {
		t.Fatalf("bob's imap last login after kill -9: %+v", p)
	}
}

// TestLimitsLockoutsResyncAndCtl runs the policy features end to end in
// front of the real Dovecot: the per user+IP limit, the brute-force lockout,
// the resync hook (doveadm, no shell) and the webhook, and `mailgate ctl who`
// against the API.
func TestLimitsLockoutsResyncAndCtl(t *testing.T) {
	d := needDovecot(t)
	t.Parallel()
	dir := t.TempDir()
	cert, key := writeCert(t, dir)
	admin := freeAddr(t)
	const token = "e2e-policy-token"
	listen := freeAddr(t)
	cfg := writeConfig(t, dir, admin, token, cert, key, []listenerConf{
		{Name: "imap", Listen: listen, TLS: "starttls", Backend: d.proxy, ClientAddress: "proxy-v2"},
	})
	var hookMu sync.Mutex
	var hooked []map[string]string
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var v map[string]string
		json.NewDecoder(r.Body).Decode(&v)
		hookMu.Lock()
		hooked = append(hooked, v)
		hookMu.Unlock()
	}))
	defer hook.Close()
	appendYAML(t, cfg, `state: `+filepath.Join(dir, "state.db")+`
limits:
  per_user_ip:
    imap: 2
brute_force:
  max_failures: 3
  window: 1m
  lockout: 1m
  max_lockout: 5m
resync:
  imap:
    command: [/usr/bin/doveadm, -c, "`+d.conf+`", force-resync, -u, "{user}", INBOX]
  eas:
    url: "`+hook.URL+`"
`)
	m := serveConfig(t, admin, token, cfg)

	t.Run("per user+IP limit", func(t *testing.T) {
		var holders []*pyClient
		for i := 0; i < 2; i++ {
			c := startPy(t, "hold", imapOpts{Addr: listen, Source: "127.0.0.5", User: bob, Password: bobPassword, Then: "hold"})
			if l := c.expect("LOGIN "); !strings.HasPrefix(l, "LOGIN OK") {
				t.Fatalf("session %d: %s", i, l)
			}
			c.expect("HOLDING")
			holders = append(holders, c)
		}
		l := loginOnce(t, "third", imapOpts{Addr: listen, Source: "127.0.0.5", User: bob, Password: bobPassword})
		if !strings.HasPrefix(l, "LOGIN NO") || !strings.Contains(l, "[LIMIT]") {
			t.Fatalf("third session from the same IP: %s, want NO [LIMIT]", l)
		}
		if l := loginOnce(t, "other-ip", imapOpts{Addr: listen, Source: "127.0.0.6", User: bob, Password: bobPassword}); !strings.HasPrefix(l, "LOGIN OK") {
			t.Fatalf("from another IP: %s", l)
		}

		// mailgate ctl who agrees with the API.
		out, err := runCmd(t, mailgateBin, "ctl", "--addr", admin, "--token", token, "who", "--protocol", "imap")
		if err != nil {
			t.Fatalf("ctl who: %v\n%s", err, out)
		}
		sum := m.summary()
		if !strings.Contains(out, "imap 2") || sum["imap"] != 2 {
			t.Fatalf("ctl who:\n%s\nAPI summary %v", out, sum)
		}
		if !strings.Contains(out, bob) || !strings.Contains(out, "127.0.0.5(2)") {
			t.Fatalf("ctl who shows no row for bob with 127.0.0.5(2):\n%s", out)
		}

		// Resync: drops bob's sessions, runs doveadm force-resync.
		var res struct {
			Steps []struct {
				Step, Detail string
				OK           bool
			} `json:"steps"`
		}
		m.apiJSON("POST", "/api/v1/users/"+bob+"/resync?protocol=imap", nil, &res)
		if len(res.Steps) != 3 || res.Steps[0].Detail != "dropped 2 session(s)" || !res.Steps[2].OK || !strings.Contains(res.Steps[2].Detail, "exit 0") {
			t.Fatalf("resync = %+v", res)
		}
		for _, c := range holders {
			c.send("noop") // the dropped session answers with * BYE and EOF
			c.expect("EOF")
		}
		m.waitIMAPCount(0)
		if code, body := m.api("POST", "/api/v1/users/x;rm%20-rf%20@example.com/resync?protocol=imap", nil); code != 400 {
			t.Fatalf("resync of an unsafe user name: %d %s, want 400", code, body)
		}
		m.apiJSON("POST", "/api/v1/users/"+bob+"/resync?protocol=eas", nil, &res)
		hookMu.Lock()
		defer hookMu.Unlock()
		if !res.Steps[2].OK || len(hooked) != 1 || hooked[0]["user"] != bob || hooked[0]["protocol"] != "eas" {
			t.Fatalf("webhook: steps %+v, received %v", res.Steps, hooked)
		}
	})

	t.Run("brute force lockout", func(t *testing.T) {
		for i := 0; i < 3; i++ {
			if l := loginOnce(t, "wrong", imapOpts{Addr: listen, Source: "127.0.0.7", User: alice, Password: wrongPassword}); !strings.HasPrefix(l, "LOGIN NO") {
				t.Fatalf("wrong password %d: %s", i, l)
			}
		}
		// The IP is locked out now: refused at connect, before any login.
		if g := greeting(t, listen, "127.0.0.7"); !strings.HasPrefix(g, "* BYE") {
			t.Fatalf("locked-out IP greeted with %q, want * BYE", g)
		}
		// So is the user, from anywhere, even with the right password.
		if l := loginOnce(t, "alice-locked", imapOpts{Addr: listen, Source: "127.0.0.8", User: alice, Password: alicePassword}); !strings.HasPrefix(l, "LOGIN NO") {
			t.Fatalf("locked-out user: %s", l)
		}
		var lo struct {
			Lockouts []struct{ Kind, Key string } `json:"lockouts"`
		}
		m.apiJSON("GET", "/api/v1/lockouts", nil, &lo)
		if len(lo.Lockouts) != 2 {
			t.Fatalf("lockouts = %+v", lo)
		}
		for _, q := range []string{"kind=ip&key=127.0.0.7", "kind=user&key=" + alice} {
			if code, body := m.api("DELETE", "/api/v1/lockouts?"+q, nil); code != 200 {
				t.Fatalf("clear %s: %d %s", q, code, body)
			}
		}
		if l := loginOnce(t, "alice-cleared", imapOpts{Addr: listen, Source: "127.0.0.7", User: alice, Password: alicePassword}); !strings.HasPrefix(l, "LOGIN OK") {
			t.Fatalf("after clearing: %s", l)
		}
	})

	t.Run("block an IP", func(t *testing.T) {
		out, err := runCmd(t, mailgateBin, "ctl", "--addr", admin, "--token", token, "block", "127.0.0.9", "--for", "1h")
		if err != nil {
			t.Fatalf("ctl block: %v\n%s", err, out)
		}
		if g := greeting(t, listen, "127.0.0.9"); !strings.HasPrefix(g, "* BYE") {
			t.Fatalf("blocked IP greeted with %q", g)
		}
		if _, err := runCmd(t, mailgateBin, "ctl", "--addr", admin, "--token", token, "unblock", "127.0.0.9"); err != nil {
			t.Fatal(err)
		}
		if g := greeting(t, listen, "127.0.0.9"); !strings.HasPrefix(g, "* OK") {
			t.Fatalf("unblocked IP greeted with %q", g)
		}
	})
}
