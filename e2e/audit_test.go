package e2e

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/mailgate/mailgate/internal/demo"
)

// The tokens of the accountability test: the legacy admin token in the
// config, the viewer's in a token file, the operator's as a hash only.
const (
	auditAdminToken    = "e2e-audit-admin-token"
	auditViewerToken   = "e2e-audit-viewer-token"
	auditOperatorToken = "e2e-audit-operator-token"
)

// auditRig is mailgate serve in front of the demo IMAP backend, with named
// tokens and a state file.
type auditRig struct {
	m                   *mailgate
	cfg, admin, imap    string
	certFile            string
	viewerFile          string
	statePath, stateDir string
}

func newAuditRig(t *testing.T) *auditRig {
	t.Helper()
	be, err := demo.StartIMAP("127.0.0.1:0", map[string]string{alice: alicePassword, bob: bobPassword})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { be.Close() })
	dir := t.TempDir()
	r := &auditRig{admin: freeAddr(t), imap: freeAddr(t), stateDir: dir, statePath: filepath.Join(dir, "state.db"),
		viewerFile: filepath.Join(dir, "viewer-token")}
	cert, key := writeCert(t, dir)
	r.certFile = cert
	if err := os.WriteFile(r.viewerFile, []byte(auditViewerToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256([]byte(auditOperatorToken))
	y := fmt.Sprintf(`node: e2e-audit
log_level: debug
shutdown_timeout: 3s
state: %q
admin:
  listen: %q
  token: %q
  tokens:
    - name: look
      token_file: %q
      role: viewer
    - name: noc
      token_sha256: %s
      role: operator
certificates:
  - cert: %q
    key: %q
listeners:
  - name: imap
    protocol: imap
    listen: %q
    tls: starttls
    login_timeout: 60s
    backend:
      address: %q
`, r.statePath, r.admin, auditAdminToken, r.viewerFile, hex.EncodeToString(sum[:]), cert, key, r.imap, be.Addr())
	r.cfg = filepath.Join(dir, "mailgate.yaml")
	if err := os.WriteFile(r.cfg, []byte(y), 0o600); err != nil {
		t.Fatal(err)
	}
	r.m = serveConfig(t, r.admin, auditAdminToken, r.cfg)
	return r
}

// apiAs does an admin API request with token and, if not empty, a reason
// header; it returns the status and the body.
func (m *mailgate) apiAs(token, reason, method, path string) (int, []byte) {
	m.t.Helper()
	req, err := http.NewRequest(method, "http://"+m.admin+path, nil)
	if err != nil {
		m.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	if reason != "" {
		req.Header.Set("X-Mailgate-Reason", reason)
	}
	resp, err := m.http.Do(req)
	if err != nil {
		m.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// apiAudit is one entry of GET /api/v1/audit, as the e2e tests read it.
type apiAudit struct {
	ID      uint64            `json:"id"`
	Actor   string            `json:"actor"`
	Role    string            `json:"role"`
	Source  string            `json:"source"`
	Action  string            `json:"action"`
	Target  string            `json:"target"`
	Params  map[string]string `json:"params"`
	Reason  string            `json:"reason"`
	OK      bool              `json:"ok"`
	Dropped int               `json:"dropped"`
	Outcome string            `json:"outcome"`
}

func (m *mailgate) audit(query string) []apiAudit {
	m.t.Helper()
	var l struct {
		Entries []apiAudit `json:"entries"`
	}
	m.apiJSON("GET", "/api/v1/audit"+query, nil, &l)
	return l.Entries
}

// TestAccountability: named tokens with roles, the audit trail, through the
// real binary. A viewer cannot drop and leaves no entry; an operator's drop
// with a reason is in the audit with the actor, the reason and the count,
// and still is after kill -9 and a restart on the same state file. No token
// reaches the log.
func TestAccountability(t *testing.T) {
	t.Parallel()
	r := newAuditRig(t)
	m := r.m

	hold := startPy(t, "hold", imapOpts{Addr: r.imap, Source: "127.0.0.2", User: alice, Password: alicePassword, Then: "hold"})
	if l := hold.expect("LOGIN "); !strings.HasPrefix(l, "LOGIN OK") {
		t.Fatalf("alice's login: %s", l)
	}
	hold.expect("HOLDING")
	m.waitIMAPCount(1)

	t.Run("whoami", func(t *testing.T) {
		for token, want := range map[string]string{auditViewerToken: "look viewer", auditOperatorToken: "noc operator", auditAdminToken: "admin admin"} {
			st, b := m.apiAs(token, "", "GET", "/api/v1/whoami")
			var w struct{ Name, Role string }
			json.Unmarshal(b, &w)
			if st != 200 || w.Name+" "+w.Role != want {
				t.Errorf("whoami = %d %s, want %s", st, b, want)
			}
		}
	})

	t.Run("a viewer cannot drop", func(t *testing.T) {
		st, b := m.apiAs(auditViewerToken, "just looking", "POST", "/api/v1/users/"+alice+"/drop?protocol=imap")
		var e struct {
			Error struct{ Code, Message string } `json:"error"`
		}
		if json.Unmarshal(b, &e); st != http.StatusForbidden || e.Error.Code != "forbidden" {
			t.Fatalf("viewer's drop = %d %s, want 403 forbidden", st, b)
		}
		// Nothing happened and nothing was recorded.
		hold.send("noop")
		if l := hold.expect("NOOP "); l != "NOOP OK" {
			t.Fatalf("alice's session after the viewer's drop: %s", l)
		}
		if got := m.audit(""); len(got) != 0 {
			t.Fatalf("the audit after a forbidden drop: %+v", got)
		}
		if !strings.Contains(m.log.String(), `msg="admin api: forbidden"`) {
			t.Error("the 403 is not in the log")
		}
		out, err := runCmd(t, mailgateBin, "ctl", "--addr", r.admin, "--token", auditViewerToken, "kick", alice)
		if err == nil || !strings.Contains(out, "forbidden") {
			t.Errorf("ctl kick as the viewer: %v\n%s", err, out)
		}
	})

	const reason = "e2e: alice lost her phone"
	t.Run("an operator's drop is audited", func(t *testing.T) {
		out, err := runCmd(t, mailgateBin, "ctl", "--addr", r.admin, "--token", auditOperatorToken,
			"kick", alice, "--protocol", "imap", "--reason", reason)
		if err != nil || !strings.Contains(out, "dropped 1 session(s)") {
			t.Fatalf("ctl kick as the operator: %v\n%s", err, out)
		}
		hold.send("noop")
		hold.expect("EOF")
		m.waitIMAPCount(0)
		wantOperatorDrop(t, m.audit(""), reason)
		out, err = runCmd(t, mailgateBin, "ctl", "--addr", r.admin, "--token", auditViewerToken, "audit", "--actor", "noc", "--since", "1h")
		if err != nil || !strings.Contains(out, "drop_user (protocol=imap)") || !strings.Contains(out, reason) {
			t.Errorf("ctl audit as the viewer: %v\n%s", err, out)
		}
		if !strings.Contains(m.log.String(), `msg=audit node=e2e-audit id=1 actor=noc role=operator source=127.0.0.1 action=drop_user target=`+alice+` reason="`+reason+`" ok=true dropped=1`) {
			t.Errorf("no msg=audit line for the drop:\n%s", m.log.String())
		}
	})

	t.Run("login history", func(t *testing.T) {
		if l := loginOnce(t, "bob-wrong", imapOpts{Addr: r.imap, Source: "127.0.0.4", User: bob, Password: wrongPassword}); !strings.HasPrefix(l, "LOGIN NO") {
			t.Fatalf("bob with a wrong password: %s", l)
		}
		if st, b := m.apiAs(auditOperatorToken, "e2e: bob's imap off", "PUT", "/api/v1/users/"+bob+"/protocols/imap"); st != 400 {
			// PUT needs a body: apiAs sends none, so this is the 400 of a
			// change refused for its input, which leaves no entry.
			t.Fatalf("PUT without a body = %d %s, want 400", st, b)
		}
		m.apiJSON("PUT", "/api/v1/users/"+bob+"/protocols/imap", map[string]any{"enabled": false, "reason": "e2e: bob's imap off"}, nil)
		if l := loginOnce(t, "bob-disabled", imapOpts{Addr: r.imap, Source: "127.0.0.5", User: bob, Password: bobPassword, Auth: "plain"}); !strings.HasPrefix(l, "LOGIN NO") {
			t.Fatalf("bob with imap disabled: %s", l)
		}
		wantBobsLogins(t, m)
		out, err := runCmd(t, mailgateBin, "ctl", "--addr", r.admin, "--token", auditViewerToken, "logins", bob)
		if err != nil || !strings.Contains(out, "gated") || !strings.Contains(out, "disabled") || !strings.Contains(out, "failed") {
			t.Errorf("ctl logins: %v\n%s", err, out)
		}
		if got := m.audit("?target=" + bob); len(got) != 1 || got[0].Action != "disable_protocol" || got[0].Actor != "admin" {
			t.Errorf("audit of bob = %+v", got)
		}
		time.Sleep(300 * time.Millisecond) // login-path writes are committed every 50 ms
	})

	t.Run("the audit survives kill -9", func(t *testing.T) {
		m.kill9 = true
		if err := m.cmd.Process.Kill(); err != nil {
			t.Fatal(err)
		}
		<-m.done
		m2 := startMailgate(t, r.admin, auditAdminToken, "serve", "-config", r.cfg)
		all := m2.audit("")
		if len(all) != 2 || all[0].Action != "disable_protocol" {
			t.Fatalf("audit after the restart: %+v", all)
		}
		wantOperatorDrop(t, all[1:], reason)
		wantBobsLogins(t, m2)
		// The new process records after what the old one did.
		if st, b := m2.apiAs(auditAdminToken, "after the crash", "POST", "/api/v1/users/"+bob+"/drop"); st != 200 {
			t.Fatalf("drop after the restart: %d %s", st, b)
		}
		if got := m2.audit(""); len(got) != 3 || got[0].ID != 3 || got[0].Actor != "admin" || got[0].Reason != "after the crash" {
			t.Fatalf("audit after the restart and one more drop: %+v", got)
		}
		// The second mailgate must name alice in its log for its own secret
		// check to prove anything: one login does it.
		if l := loginOnce(t, "alice-again", imapOpts{Addr: r.imap, User: alice, Password: alicePassword}); !strings.HasPrefix(l, "LOGIN OK") {
			t.Fatalf("alice after the restart: %s", l)
		}
		for _, log := range []string{m.log.String(), m2.log.String()} {
			for _, secret := range []string{auditAdminToken, auditViewerToken, auditOperatorToken} {
				if strings.Contains(log, secret) {
					t.Errorf("mailgate's log holds the token %q", secret)
				}
			}
		}
	})
}

// wantBobsLogins checks bob's login history: the login refused by mailgate
// (imap disabled), newest, then the wrong password, each with its address.
func wantBobsLogins(t *testing.T, m *mailgate) {
	t.Helper()
	var l struct {
		User   string `json:"user"`
		Logins []struct {
			Protocol, IP, Mechanism, Result, Reason string
			Count                                   int
		} `json:"logins"`
	}
	m.apiJSON("GET", "/api/v1/users/"+bob+"/logins", nil, &l)
	if len(l.Logins) != 2 {
		t.Fatalf("bob's logins = %+v, want the gated one and the wrong password", l)
	}
	gated, failed := l.Logins[0], l.Logins[1]
	if gated.Result != "gated" || gated.Reason != "disabled" || gated.IP != "127.0.0.5" || gated.Protocol != "imap" || gated.Mechanism != "PLAIN" {
		t.Errorf("bob's newest login = %+v, want imap from 127.0.0.5 gated: disabled", gated)
	}
	if failed.Result != "failed" || failed.Reason != "" || failed.IP != "127.0.0.4" || failed.Protocol != "imap" {
		t.Errorf("bob's first login = %+v, want a wrong password from 127.0.0.4", failed)
	}
}

// wantOperatorDrop checks that entries are exactly the operator's drop of
// alice.
func wantOperatorDrop(t *testing.T, entries []apiAudit, reason string) {
	t.Helper()
	if len(entries) != 1 {
		t.Fatalf("audit = %+v, want the operator's drop alone", entries)
	}
	e := entries[0]
	if e.Actor != "noc" || e.Role != "operator" || e.Source != "127.0.0.1" || e.Action != "drop_user" || e.Target != alice ||
		e.Reason != reason || !e.OK || e.Dropped != 1 || e.Params["protocol"] != "imap" {
		t.Fatalf("audit entry = %+v, want noc's drop of %s with its reason and 1 dropped", e, alice)
	}
}

// TestAccountability_page: the admin page offers a viewer no change, lets
// an operator drop with a reason, and shows the change in its audit view.
func TestAccountability_page(t *testing.T) {
	t.Parallel()
	r := newAuditRig(t)
	m := r.m
	ctx := browser(t)
	hold := startPy(t, "hold", imapOpts{Addr: r.imap, Source: "127.0.0.3", User: alice, Password: alicePassword, Then: "hold"})
	if l := hold.expect("LOGIN "); !strings.HasPrefix(l, "LOGIN OK") {
		t.Fatalf("alice's login: %s", l)
	}
	hold.expect("HOLDING")
	m.waitIMAPCount(1)

	signIn := func(token string) {
		t.Helper()
		waitJS(t, ctx, "the token form", `!document.getElementById('login').hidden`)
		do(t, ctx, "enter the token", chromedp.SendKeys(chromedp.ID("token"), token),
			chromedp.Click(chromedp.CSS(`#login-form button[type=submit]`), chromedp.NodeVisible))
		waitJS(t, ctx, "alice's row", `document.querySelector(`+jsString(rowSel(alice))+`) !== null && !document.getElementById('whoami').hidden`)
	}
	menu := func() string {
		t.Helper()
		do(t, ctx, "open alice's menu", chromedp.Click(chromedp.CSS(rowSel(alice)+` button[data-role=menu]`), chromedp.NodeVisible))
		waitJS(t, ctx, "the menu", `!document.getElementById('menu').hidden`)
		return strings.Join(eval[[]string](t, ctx, `[...document.querySelectorAll('#menu [role=menuitem]')].map(b => b.textContent)`), "|")
	}

	do(t, ctx, "open the page", chromedp.Navigate("http://"+r.admin+"/#imap"))
	signIn(auditViewerToken)
	if who := eval[string](t, ctx, `document.getElementById('whoami').textContent`); who != "look · viewer" {
		t.Errorf("the header names the token %q, want look · viewer", who)
	}
	if got := menu(); got != "View Authenticated IPs" {
		t.Errorf("the viewer's menu = %q, want only View Authenticated IPs", got)
	}
	do(t, ctx, "close the menu", chromedp.KeyEvent("\u001b"))
	do(t, ctx, "forget the token", chromedp.Click(chromedp.ID("signout"), chromedp.NodeVisible))

	signIn(auditOperatorToken)
	if got := menu(); got != "Drop Connections|Resync Devices|Disable IMAP Access|View Authenticated IPs" {
		t.Errorf("the operator's menu = %q", got)
	}
	do(t, ctx, "Drop Connections", chromedp.Click(`//div[@id="menu"]/button[normalize-space()="Drop Connections"]`, chromedp.NodeVisible))
	waitJS(t, ctx, "the confirmation", `document.getElementById('confirm').open`)
	do(t, ctx, "type a reason", chromedp.SendKeys(chromedp.ID("confirm-reason"), "page: ticket 77"),
		chromedp.Click(chromedp.ID("confirm-ok"), chromedp.NodeVisible))
	waitJS(t, ctx, "the outcome", `/Dropped 1 connection/.test(document.getElementById('status').textContent)`)
	hold.send("noop")
	hold.expect("EOF")

	// A viewer's and an operator's dialog of alice's IPs shows her login
	// history too.
	// The refresh after the action redraws the rows: wait for alice's row
	// without a live connection, and the table no longer busy.
	waitJS(t, ctx, "alice's row after the drop", `document.querySelector(`+jsString(rowSel(alice)+`.ghost`)+`) !== null && document.getElementById('grid').getAttribute('aria-busy') === 'false'`)
	do(t, ctx, "open alice's menu", chromedp.Click(chromedp.CSS(rowSel(alice)+` button[data-role=menu]`), chromedp.NodeVisible))
	do(t, ctx, "View Authenticated IPs", chromedp.Click(`//div[@id="menu"]/button[normalize-space()="View Authenticated IPs"]`, chromedp.NodeVisible))
	waitJS(t, ctx, "the login history", `document.querySelector('#logins-body tbody tr') !== null`)
	cells := eval[[]string](t, ctx, `[...document.querySelectorAll('#logins-body tbody tr:first-child td')].map(td => td.textContent)`)
	if len(cells) != 6 || cells[1] != "IMAP" || cells[2] != "127.0.0.3" || cells[4] != "OK" {
		t.Errorf("alice's newest login attempt on the page = %q", cells)
	}
	do(t, ctx, "close the dialog", chromedp.Click(chromedp.ID("ips-close"), chromedp.NodeVisible))

	do(t, ctx, "open the audit trail", chromedp.Click(chromedp.ID("audit-open"), chromedp.NodeVisible))
	waitJS(t, ctx, "the audit table", `document.getElementById('audit').open && document.querySelector('#audit-body tbody tr') !== null`)
	row := eval[[]string](t, ctx, `[...document.querySelectorAll('#audit-body tbody tr:first-child td')].map(td => td.textContent)`)
	if len(row) != 7 || row[1] != "noc (operator)" || row[2] != "127.0.0.1" || row[3] != "drop_user (protocol=imap)" ||
		row[4] != alice || row[5] != "page: ticket 77" || row[6] != "dropped 1 session(s)" {
		t.Errorf("the audit view's first row = %q", row)
	}
	if got := m.audit(""); len(got) != 1 || got[0].Reason != "page: ticket 77" || got[0].Actor != "noc" {
		t.Errorf("audit = %+v", got)
	}
}
