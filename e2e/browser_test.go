package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"

	"github.com/mailgate/mailgate/accounting"
	"github.com/mailgate/mailgate/adminapi"
)

// The admin page in a real browser: Debian's chromium, headless, driven by
// chromedp over its DevTools pipe. scripts/test.sh installs chromium; CI
// always has it. Without it the tests skip and say so.

const chromiumPath = "/usr/bin/chromium"

// browser starts a fresh headless chromium (its own profile directory,
// nothing but loopback reachable) and returns a tab's context. Console
// errors and exceptions of the page are collected; a CSP violation or an
// uncaught exception fails the test at cleanup.
func browser(t *testing.T) context.Context {
	t.Helper()
	if _, err := os.Stat(chromiumPath); err != nil {
		t.Skipf("no chromium at %s (scripts/test.sh installs Debian's chromium package; CI has it): the admin page's browser test is skipped", chromiumPath)
	}
	profile, err := os.MkdirTemp("", "mailgate-e2e-chromium-")
	if err != nil {
		t.Fatal(err)
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromiumPath),
		chromedp.UserDataDir(profile),
		chromedp.Headless,
		chromedp.NoSandbox, // the tests run as root
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-domain-reliability", true),
		chromedp.Flag("no-pings", true),
		// Only loopback: every other host fails to resolve, and a request
		// that still tries goes to a proxy that is not there (loopback
		// bypasses proxies).
		chromedp.Flag("host-resolver-rules", "MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"),
		chromedp.Flag("proxy-server", "http://127.0.0.1:9"),
		chromedp.WindowSize(1280, 800),
	)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelTab := chromedp.NewContext(allocCtx)
	ctx, cancelTimeout := context.WithTimeout(ctx, 4*time.Minute)

	var mu sync.Mutex
	var messages []chromedp.ConsoleMessage
	console := chromedp.Console(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for m, err := range console {
			if err != nil {
				return
			}
			mu.Lock()
			messages = append(messages, m)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		cancelTimeout()
		cancelTab()
		cancelAlloc()
		<-done
		mu.Lock()
		defer mu.Unlock()
		for _, m := range messages {
			text := m.String()
			bad := m.IsException() || strings.Contains(text, "Content Security Policy") || strings.Contains(text, "Refused to")
			if bad {
				t.Errorf("browser console: %s %s:%d: %s", m.Type, m.URL, m.Line+1, text)
			} else if t.Failed() || testing.Verbose() {
				t.Logf("browser console: %s %s", m.Type, text)
			}
		}
		// Chromium's helpers may still write in the profile for a moment.
		for range 50 {
			if os.RemoveAll(profile) == nil {
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
	})
	return ctx
}

// do runs browser steps and fails the test on an error. Each call has
// stepTimeout: a click on an element that never shows up fails the step,
// not the whole test's deadline.
func do(t *testing.T, ctx context.Context, what string, steps ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	sctx, cancel := context.WithTimeout(ctx, stepTimeout)
	defer cancel()
	if err := chromedp.Do(sctx, steps...); err != nil {
		t.Fatalf("browser: %s: %v\n%s", what, err, pageState(ctx))
	}
}

// eval evaluates a JavaScript expression in the page.
func eval[T any](t *testing.T, ctx context.Context, expr string) T {
	t.Helper()
	sctx, cancel := context.WithTimeout(ctx, stepTimeout)
	defer cancel()
	v, err := chromedp.Run(sctx, chromedp.Evaluate[T](expr))
	if err != nil {
		t.Fatalf("browser: evaluating %s: %v\n%s", expr, err, pageState(ctx))
	}
	return v
}

// waitJS waits until a JavaScript expression is truthy.
func waitJS(t *testing.T, ctx context.Context, what, expr string) {
	t.Helper()
	_, err := chromedp.Run(ctx, chromedp.Poll[chromedp.Void](expr,
		chromedp.WithPollingInterval(pollInterval*2), chromedp.WithPollingTimeout(stepTimeout)))
	if err != nil {
		t.Fatalf("browser: waiting for %s (%s): %v\n%s", what, expr, err, pageState(ctx))
	}
}

// pageState is what the page shows, for failure messages.
func pageState(ctx context.Context) string {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	s, err := chromedp.Run(ctx, chromedp.Evaluate[string](`JSON.stringify({
		login: !document.getElementById('login').hidden,
		loginMsg: document.getElementById('login-msg').textContent,
		status: document.getElementById('status').textContent,
		error: document.getElementById('error').textContent,
		tabs: [...document.querySelectorAll('[role=tab]')].map(b => b.textContent + (b.getAttribute('aria-selected') === 'true' ? '*' : '')),
		rows: [...document.querySelectorAll('#rows tr')].map(tr => tr.innerText.replace(/\s+/g, ' ')),
		menu: document.getElementById('menu').hidden ? null : document.getElementById('menu').innerText,
	}, null, 1)`))
	if err != nil {
		return "(page state unavailable: " + err.Error() + ")"
	}
	return "page state: " + s
}

// jsString quotes s for a JavaScript expression; the result is a valid
// CSS string too (no \u003c-style escapes, which CSS does not know).
func jsString(s string) string {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	enc.Encode(s)
	return strings.TrimSpace(b.String())
}

// rowSel is the CSS selector of a user's row.
func rowSel(user string) string {
	return `#rows tr[data-user=` + jsString(user) + `]`
}

// demoListenArgs asks `mailgate demo -h` for its listener flags (those
// whose default is a loopback address) and gives each a free port, so the
// tests never collide with each other or with a demo someone runs, and a
// listener another protocol adds later is covered too. It returns the
// arguments and the address of each flag.
func demoListenArgs(t *testing.T) ([]string, map[string]string) {
	t.Helper()
	out, _ := exec.Command(mailgateBin, "demo", "-h").CombinedOutput() // -h exits 0 or 2 depending on the flag package
	var args []string
	addrs := map[string]string{}
	var flag string
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.Fields(line); len(f) >= 1 && strings.HasPrefix(f[0], "-") {
			flag = strings.TrimPrefix(f[0], "-")
		}
		if flag != "" && strings.Contains(line, `(default "127.0.0.1:`) {
			addrs[flag] = freeAddr(t)
			args = append(args, "-"+flag, addrs[flag])
			flag = ""
		}
	}
	for _, f := range []string{"imap", "admin"} {
		if addrs[f] == "" {
			t.Fatalf("mailgate demo -h lists no -%s listener flag:\n%s", f, out)
		}
	}
	return args, addrs
}

// TestBrowser_userConnections drives the admin page against `mailgate demo`
// (no simulated traffic) with one IMAP session of alice from 127.0.0.2: the
// token, the tab counts, disabling IMAP for the selected row, the IP history
// modal, the keyboard and a narrow screen.
func TestBrowser_userConnections(t *testing.T) {
	t.Parallel()
	listen, addrs := demoListenArgs(t)
	imapAddr, adminAddr := addrs["imap"], addrs["admin"]
	const token = "e2e-browser-token"
	m := startMailgate(t, adminAddr, token, append(append([]string{"demo"}, listen...),
		"-token", token, "-log-level", "debug")...)
	ctx := browser(t)

	hold := startPy(t, "hold", imapOpts{Addr: imapAddr, TLS: "starttls", Source: "127.0.0.2", User: alice, Password: alicePassword, Then: "hold"})
	if l := hold.expect("LOGIN "); !strings.HasPrefix(l, "LOGIN OK") {
		t.Fatalf("alice's login: %s", l)
	}
	hold.expect("HOLDING")
	m.waitIMAPCount(1)

	page := "http://" + adminAddr + "/"
	do(t, ctx, "open the page", chromedp.Navigate(page))

	t.Run("a wrong token gets a clear 401 message", func(t *testing.T) {
		waitJS(t, ctx, "the token form", `!document.getElementById('login').hidden`)
		do(t, ctx, "type a wrong token",
			chromedp.SendKeys(chromedp.ID("token"), "not-the-token"),
			chromedp.Click(chromedp.CSS(`#login-form button[type=submit]`), chromedp.NodeVisible))
		waitJS(t, ctx, "the 401 message", `!document.getElementById('login').hidden && /401/.test(document.getElementById('login-msg').textContent)`)
		if msg := eval[string](t, ctx, `document.getElementById('login-msg').textContent`); !strings.Contains(msg, "refused the token") {
			t.Errorf("login message = %q, want it to say the API refused the token", msg)
		}
		if got := eval[bool](t, ctx, `sessionStorage.getItem('mailgate.adminToken') === null`); !got {
			t.Errorf("a refused token was kept in sessionStorage")
		}
	})

	do(t, ctx, "enter the token",
		chromedp.SendKeys(chromedp.ID("token"), token),
		chromedp.Click(chromedp.CSS(`#login-form button[type=submit]`), chromedp.NodeVisible))
	waitJS(t, ctx, "the table", `!document.getElementById('main').hidden && document.querySelector('#rows tr') !== null`)

	t.Run("token kept in the session only", func(t *testing.T) {
		if !eval[bool](t, ctx, `sessionStorage.getItem('mailgate.adminToken') === `+jsString(token)) {
			t.Errorf("the token is not in sessionStorage")
		}
		if n := eval[int](t, ctx, `localStorage.length`); n != 0 {
			t.Errorf("localStorage has %d entries, want none", n)
		}
		do(t, ctx, "reload", chromedp.Reload())
		waitJS(t, ctx, "the table after a reload, without the token form", `document.getElementById('login').hidden && document.querySelector('#rows tr') !== null`)
	})

	t.Run("tab counts match the API", func(t *testing.T) {
		waitJS(t, ctx, "the tab counts", `[...document.querySelectorAll('[data-count]')].every(c => c.textContent !== '–')`)
		got := eval[map[string]string](t, ctx, `Object.fromEntries([...document.querySelectorAll('[data-count]')].map(c => [c.dataset.count, c.textContent]))`)
		sum := m.summary()
		want := map[string]int{}
		for _, k := range []string{"all", "smtp", "imap", "pop", "xmpp", "eas", "webdav", "webmail"} {
			want[k] = sum[k]
		}
		want["mapi+ews"] = sum["mapi"] + sum["ews"]
		if len(got) != len(want) {
			t.Errorf("the page has tabs %v, want %d tabs", got, len(want))
		}
		for k, n := range want {
			if got[k] != fmt.Sprint(n) {
				t.Errorf("tab %s shows %q, the API says %d", k, got[k], n)
			}
		}
		if sum["imap"] != 1 || got["imap"] != "1" || got["all"] != "1" {
			t.Errorf("IMAP tab %q, All tab %q, API %v: want alice's one session", got["imap"], got["all"], sum)
		}
		labels := eval[[]string](t, ctx, `[...document.querySelectorAll('[role=tab] .tab-name')].map(e => e.textContent)`)
		if strings.Join(labels, ",") != "All,SMTP,IMAP,POP,XMPP,EAS,MAPI/EWS,WebDAV,Webmail" {
			t.Errorf("tabs = %v", labels)
		}
	})

	// The IMAP tab: alice's row with the check mark, her IP and count.
	do(t, ctx, "open the IMAP tab", chromedp.Click(chromedp.ID("tab-imap"), chromedp.NodeVisible))
	waitJS(t, ctx, "alice's row on the IMAP tab",
		`document.getElementById('tab-imap').getAttribute('aria-selected') === 'true' && document.querySelector(`+jsString(rowSel(alice)+` .check`)+`) !== null`)
	row := eval[string](t, ctx, `document.querySelector(`+jsString(rowSel(alice))+`).innerText`)
	for _, want := range []string{alice, "127.0.0.2", "Yes"} {
		if !strings.Contains(row, want) {
			t.Errorf("alice's row %q does not show %q", row, want)
		}
	}
	if ips := eval[string](t, ctx, `document.querySelector(`+jsString(rowSel(alice)+` .iplist`)+`).textContent`); ips != "127.0.0.2 1" {
		t.Errorf("alice's IP Connections = %q, want 127.0.0.2 with 1", ips)
	}

	t.Run("keyboard: the row menu opens, moves and closes with Escape", func(t *testing.T) {
		kebab := rowSel(alice) + ` button[data-role=menu]`
		do(t, ctx, "open the menu with Enter", chromedp.Focus(chromedp.CSS(kebab)), chromedp.KeyEvent(kb.Enter))
		waitJS(t, ctx, "the menu with the focus on its first item",
			`!document.getElementById('menu').hidden && document.activeElement.getAttribute('role') === 'menuitem'`)
		items := eval[[]string](t, ctx, `[...document.querySelectorAll('#menu [role=menuitem]')].map(b => b.textContent)`)
		if strings.Join(items, "|") != "Drop Connections|Resync Devices|Disable IMAP Access|View Authenticated IPs" {
			t.Errorf("alice's menu = %q", items)
		}
		do(t, ctx, "arrow down", chromedp.KeyEvent(kb.ArrowDown))
		if got := eval[string](t, ctx, `document.activeElement.textContent`); got != "Resync Devices" {
			t.Errorf("after ArrowDown the focus is on %q, want Resync Devices", got)
		}
		if got := eval[string](t, ctx, `document.querySelector(`+jsString(kebab)+`).getAttribute('aria-expanded')`); got != "true" {
			t.Errorf("open menu: aria-expanded = %q", got)
		}
		do(t, ctx, "Escape", chromedp.KeyEvent(kb.Escape))
		waitJS(t, ctx, "the menu closed and the focus back on its button",
			`document.getElementById('menu').hidden && document.activeElement === document.querySelector(`+jsString(kebab)+`)`)
	})

	t.Run("Disable IMAP Access for the selected row", func(t *testing.T) {
		do(t, ctx, "select alice's row", chromedp.Click(chromedp.CSS(rowSel(alice)+` input[data-role=select]`), chromedp.NodeVisible))
		waitJS(t, ctx, "one row selected", `/^1 row selected/.test(document.getElementById('selinfo').textContent)`)
		do(t, ctx, "open the selection's menu", chromedp.Click(chromedp.ID("sel-actions"), chromedp.NodeVisible))
		do(t, ctx, "choose Disable IMAP Access",
			chromedp.Click(`//div[@id="menu"]/button[normalize-space()="Disable IMAP Access"]`, chromedp.NodeVisible))
		waitJS(t, ctx, "the confirmation", `document.getElementById('confirm').open`)
		text := eval[string](t, ctx, `document.getElementById('confirm-text').textContent`)
		if !strings.Contains(text, alice) {
			t.Errorf("the confirmation %q does not name %s", text, alice)
		}
		if !eval[bool](t, ctx, `document.getElementById('confirm-drop').checked`) {
			t.Errorf("the confirmation's 'drop the live connections' option is not checked by default")
		}
		do(t, ctx, "confirm", chromedp.Click(chromedp.ID("confirm-ok"), chromedp.NodeVisible))

		// The check mark goes; the row stays (no live connection left) so
		// the outcome can be seen.
		waitJS(t, ctx, "alice's check mark gone",
			`(() => { const c = document.querySelector(`+jsString(rowSel(alice)+` td.c-user`)+`); return c && c.dataset.enabled === 'false' && !c.querySelector('.check'); })()`)
		status := eval[string](t, ctx, `document.getElementById('status').textContent`)
		if !strings.Contains(status, "Disabled IMAP access for "+alice) || !strings.Contains(status, "Dropped 1 connection") {
			t.Errorf("status = %q, want the disable and one dropped connection", status)
		}
		if e := eval[string](t, ctx, `document.getElementById('error').textContent`); e != "" {
			t.Errorf("error line = %q after a successful action", e)
		}

		// The API agrees: the session is gone, IMAP is disabled for alice.
		m.waitIMAPCount(0)
		var detail struct {
			Protocols map[string]struct {
				Enabled bool `json:"enabled"`
			} `json:"protocols"`
		}
		m.apiJSON("GET", "/api/v1/users/"+url.PathEscape(alice), nil, &detail)
		if detail.Protocols["imap"].Enabled {
			t.Errorf("GET /api/v1/users/%s: imap still enabled", alice)
		}
		hold.send("noop")
		hold.expect("EOF") // the client saw its session cut
		waitJS(t, ctx, "the IMAP tab count 0", `document.querySelector('[data-count=imap]').textContent === '0'`)
	})

	t.Run("View Authenticated IPs", func(t *testing.T) {
		do(t, ctx, "open alice's menu", chromedp.Click(chromedp.CSS(rowSel(alice)+` button[data-role=menu]`), chromedp.NodeVisible))
		items := eval[[]string](t, ctx, `[...document.querySelectorAll('#menu [role=menuitem]')].map(b => b.textContent)`)
		if !strings.Contains(strings.Join(items, "|"), "Enable IMAP Access") {
			t.Errorf("alice's menu after the disable = %q, want Enable IMAP Access", items)
		}
		do(t, ctx, "choose View Authenticated IPs",
			chromedp.Click(`//div[@id="menu"]/button[normalize-space()="View Authenticated IPs"]`, chromedp.NodeVisible))
		waitJS(t, ctx, "the IP history", `document.getElementById('ips').open && document.querySelector('#ips-body table') !== null`)
		cells := eval[[]string](t, ctx, `[...document.querySelectorAll('#ips-body tbody tr:first-child td')].map(td => td.textContent)`)
		heads := eval[[]string](t, ctx, `[...document.querySelectorAll('#ips-body thead th')].map(th => th.textContent)`)
		if strings.Join(heads, "|") != "IP|Protocol|First Seen|Last Seen|Count" {
			t.Errorf("IP history columns = %q", heads)
		}
		if len(cells) != 5 || cells[0] != "127.0.0.2" || cells[1] != "IMAP" || cells[4] != "1" {
			t.Errorf("IP history first row = %q, want 127.0.0.2, IMAP, ..., 1", cells)
		}
		if title := eval[string](t, ctx, `document.getElementById('ips-title').textContent`); !strings.Contains(title, alice) {
			t.Errorf("modal title = %q", title)
		}
		do(t, ctx, "Escape closes the modal", chromedp.KeyEvent(kb.Escape))
		waitJS(t, ctx, "the modal closed", `!document.getElementById('ips').open`)
	})

	t.Run("Enable IMAP Access again", func(t *testing.T) {
		do(t, ctx, "open alice's menu", chromedp.Click(chromedp.CSS(rowSel(alice)+` button[data-role=menu]`), chromedp.NodeVisible))
		do(t, ctx, "choose Enable IMAP Access",
			chromedp.Click(`//div[@id="menu"]/button[normalize-space()="Enable IMAP Access"]`, chromedp.NodeVisible))
		waitJS(t, ctx, "alice's check mark back", `document.querySelector(`+jsString(rowSel(alice)+` .check`)+`) !== null`)
		if l := loginOnce(t, "after-enable", imapOpts{Addr: imapAddr, User: alice, Password: alicePassword}); !strings.HasPrefix(l, "LOGIN OK") {
			t.Errorf("alice's IMAP login after Enable IMAP Access: %q", l)
		}
	})

	t.Run("narrow screen", func(t *testing.T) {
		do(t, ctx, "a phone-sized viewport", chromedp.EmulateViewport(375, 740))
		defer do(t, ctx, "back to the desktop viewport", chromedp.EmulateViewport(1280, 800))
		do(t, ctx, "the All tab", chromedp.Click(chromedp.ID("tab-all"), chromedp.NodeVisible))
		waitJS(t, ctx, "the All tab", `document.getElementById('tab-all').getAttribute('aria-selected') === 'true'`)
		if w := eval[int](t, ctx, `document.documentElement.scrollWidth - window.innerWidth`); w > 1 {
			t.Errorf("the page is %d px wider than a 375 px screen", w)
		}
		if !eval[bool](t, ctx, `getComputedStyle(document.querySelector('.grid thead')).display === 'none'`) {
			t.Errorf("on a narrow screen the table keeps its header row (rows should become cards)")
		}
	})
}

// TestBrowser_screenshot opens the page on `mailgate demo -traffic` and
// takes the README's screenshot. It writes docs/screenshot.png only with
// MAILGATE_SCREENSHOT=1 (so CI does not rewrite files); otherwise the image
// goes to a temporary directory. Either way it checks that the simulated
// traffic fills the page at once.
func TestBrowser_screenshot(t *testing.T) {
	t.Parallel()
	listen, addrs := demoListenArgs(t)
	adminAddr := addrs["admin"]
	const token = "e2e-screenshot-token"
	m := startMailgate(t, adminAddr, token, append(append([]string{"demo", "-traffic"}, listen...),
		"-token", token, "-log-level", "debug")...)
	ctx := browser(t)

	// The simulated clients: alice and bob from several addresses, and an
	// unauthenticated connection.
	waitFor(t, "the simulated traffic (alice and bob on IMAP, an unauthenticated row)", func() bool {
		rows := m.users("imap")
		seen := map[string]bool{}
		for _, r := range rows {
			seen[r.User] = true
		}
		return seen[alice] && seen[bob] && seen[""] && m.summary()["imap"] >= 5
	}, func() string { return fmt.Sprintf("rows %+v", m.users("imap")) })

	do(t, ctx, "open the page", chromedp.EmulateViewport(1280, 540), chromedp.Navigate("http://"+adminAddr+"/"))
	waitJS(t, ctx, "the token form", `!document.getElementById('login').hidden`)
	do(t, ctx, "enter the token",
		chromedp.SendKeys(chromedp.ID("token"), token),
		chromedp.Click(chromedp.CSS(`#login-form button[type=submit]`), chromedp.NodeVisible))
	waitJS(t, ctx, "rows of alice, bob and an unauthenticated IP",
		`document.querySelector(`+jsString(rowSel(alice))+`) && document.querySelector(`+jsString(rowSel(bob))+`) && document.querySelector('#rows tr.anon')`)
	// Select bob's row so the picture shows the selection bar in use.
	do(t, ctx, "select bob's row", chromedp.Click(chromedp.CSS(rowSel(bob)+` input[data-role=select]`), chromedp.NodeVisible))
	waitJS(t, ctx, "the selection", `/^1 row selected/.test(document.getElementById('selinfo').textContent)`)
	do(t, ctx, "blur", chromedp.Evaluate[chromedp.Void](`document.activeElement && document.activeElement.blur()`))

	png, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	if !bytes.HasPrefix(png, []byte("\x89PNG\r\n\x1a\n")) || len(png) < 10_000 {
		t.Fatalf("the screenshot is not a plausible PNG (%d bytes)", len(png))
	}
	out := filepath.Join(t.TempDir(), "screenshot.png")
	if os.Getenv("MAILGATE_SCREENSHOT") == "1" {
		out = filepath.Join("..", "docs", "screenshot.png")
	}
	if err := os.WriteFile(out, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s (%d bytes)", out, len(png))
}

// TestBrowser_tenThousandRows: the page stays usable with 10 000 rows. The
// registry is filled in process (10 000 logins through the binary would
// take minutes) and served by the real admin API on loopback.
func TestBrowser_tenThousandRows(t *testing.T) {
	t.Parallel()
	const n = 10_000
	reg := accounting.New(accounting.Options{})
	for i := range n {
		c := reg.Register(accounting.ConnInfo{Protocol: "imap", Listener: "imap",
			Client: netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), 40000)})
		c.Authenticated(fmt.Sprintf("user%05d@example.com", i), "LOGIN")
	}
	const token = "e2e-10k-token"
	url := serveAPI(t, reg, token)
	ctx := browser(t)

	do(t, ctx, "open the page", chromedp.Navigate(url+"/#imap"))
	waitJS(t, ctx, "the token form", `!document.getElementById('login').hidden`)
	start := time.Now()
	do(t, ctx, "enter the token",
		chromedp.SendKeys(chromedp.ID("token"), token),
		chromedp.Click(chromedp.CSS(`#login-form button[type=submit]`), chromedp.NodeVisible))
	waitJS(t, ctx, "the first page of rows", `document.querySelectorAll('#rows tr').length > 0`)
	t.Logf("10 000 rows: first page shown %v after the token was entered", time.Since(start))
	if d := time.Since(start); d > 30*time.Second {
		t.Errorf("the first page of 10 000 rows took %v", d)
	}
	if got := eval[int](t, ctx, `document.querySelectorAll('#rows tr').length`); got != 100 {
		t.Errorf("rows in the DOM = %d, want one page of 100", got)
	}
	if got := eval[string](t, ctx, `document.querySelector('[data-count=imap]').textContent`); got != "10000" {
		t.Errorf("IMAP tab count = %q, want 10000", got)
	}
	if info := eval[string](t, ctx, `document.getElementById('pageinfo').textContent`); !strings.Contains(info, "of 10,000") || !strings.Contains(info, "page 1 of 100") {
		t.Errorf("page info = %q", info)
	}

	// The next page, then the filter (after its debounce) finds one user.
	do(t, ctx, "next page", chromedp.Click(chromedp.ID("next"), chromedp.NodeVisible))
	waitJS(t, ctx, "page 2", `/page 2 of 100/.test(document.getElementById('pageinfo').textContent) && document.querySelector('#rows tr[data-user="user00100@example.com"]') !== null`)
	do(t, ctx, "filter", chromedp.SendKeys(chromedp.ID("filter"), "user09999"))
	waitJS(t, ctx, "one matching row", `document.querySelectorAll('#rows tr').length === 1 && document.querySelector('#rows tr[data-user="user09999@example.com"]') !== null`)
	do(t, ctx, "clear the filter", chromedp.Evaluate[chromedp.Void](`(() => { const f = document.getElementById('filter'); f.value = ''; f.dispatchEvent(new Event('input')); })()`))
	waitJS(t, ctx, "all rows again", `/of 10,000/.test(document.getElementById('pageinfo').textContent)`)

	// Select the page, then every matching row.
	do(t, ctx, "select the page", chromedp.Click(chromedp.ID("select-page"), chromedp.NodeVisible))
	waitJS(t, ctx, "100 selected and the offer to select all", `/^100 rows selected/.test(document.getElementById('selinfo').textContent) && !document.getElementById('select-matching').hidden`)
	do(t, ctx, "select all matching", chromedp.Click(chromedp.ID("select-matching"), chromedp.NodeVisible))
	waitJS(t, ctx, "10 000 selected", `/^10,000 rows selected/.test(document.getElementById('selinfo').textContent)`)

	// A refresh of 10 000 rows does not block the page for long.
	ms, err := chromedp.Run(ctx, chromedp.Evaluate[float64](`(async () => {
		const t0 = performance.now();
		document.getElementById('refresh').click(); // disables the button until the rows are drawn
		while (document.getElementById('refresh').disabled) await new Promise(r => setTimeout(r, 10));
		return performance.now() - t0;
	})()`, chromedp.EvalAwaitPromise))
	if err != nil {
		t.Fatalf("timing a refresh: %v", err)
	}
	t.Logf("10 000 rows: a refresh took %.0f ms", ms)
	if ms > 15_000 {
		t.Errorf("a refresh of 10 000 rows took %.0f ms", ms)
	}
	if got := eval[string](t, ctx, `document.getElementById('selinfo').textContent`); !strings.HasPrefix(got, "10,000 rows selected") {
		t.Errorf("after a refresh the selection is %q, want it kept", got)
	}
}

// serveAPI serves the admin API (and so the page) over reg on loopback, in
// process, and returns its base URL.
func serveAPI(t *testing.T, reg *accounting.Registry, token string) string {
	t.Helper()
	api, err := adminapi.New(adminapi.Options{Registry: reg, Token: token, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(api)
	t.Cleanup(srv.Close)
	return srv.URL
}

// login opens and authenticates a connection in reg ("" user: left before
// login) whose drop function is a no-op.
func login(reg *accounting.Registry, protocol, client, user string) *accounting.Conn {
	c := reg.Register(accounting.ConnInfo{Protocol: protocol, Listener: protocol, Client: netip.MustParseAddrPort(client)})
	c.SetDropFunc(func(string) {})
	if user != "" {
		c.Authenticated(user, "PLAIN")
	}
	return c
}

// TestBrowser_actions: the actions beyond the walkthrough, on a registry
// filled in process: resync of every protocol of a row on the All tab, a
// bulk drop of a user and an unauthenticated row, an API error shown, and
// a user name with markup shown as text.
func TestBrowser_actions(t *testing.T) {
	t.Parallel()
	reg := accounting.New(accounting.Options{})
	const weird = `<b>eve</b>"'&@example.com`
	login(reg, "imap", "10.0.0.1:1000", alice)
	login(reg, "imap", "10.0.0.1:1001", alice)
	login(reg, "pop", "10.0.0.2:1000", alice)
	login(reg, "imap", "10.0.0.3:1000", bob)
	login(reg, "imap", "10.0.0.9:1000", "")
	login(reg, "imap", "10.0.0.9:1001", "")
	login(reg, "imap", "10.0.0.7:1000", weird)
	const token = "e2e-actions-token"
	url := serveAPI(t, reg, token)
	ctx := browser(t)

	do(t, ctx, "open the page", chromedp.Navigate(url+"/"))
	waitJS(t, ctx, "the token form", `!document.getElementById('login').hidden`)
	do(t, ctx, "enter the token",
		chromedp.SendKeys(chromedp.ID("token"), token),
		chromedp.Click(chromedp.CSS(`#login-form button[type=submit]`), chromedp.NodeVisible))
	waitJS(t, ctx, "alice's row on the All tab", `document.querySelector(`+jsString(rowSel(alice))+`) !== null`)

	t.Run("markup in a user name is text", func(t *testing.T) {
		if n := eval[int](t, ctx, `document.querySelectorAll('#rows b').length`); n != 0 {
			t.Errorf("the page made %d <b> elements out of a user name", n)
		}
		got := eval[string](t, ctx, `document.querySelector(`+jsString(rowSel(weird)+` .user`)+`).textContent`)
		if got != weird {
			t.Errorf("user shown as %q, want %q", got, weird)
		}
	})

	t.Run("All tab: resync every protocol of the row", func(t *testing.T) {
		if got := eval[string](t, ctx, `document.querySelector(`+jsString(rowSel(alice)+` .protos`)+`).textContent`); got != "IMAP · POP" {
			t.Errorf("alice's protocols on the All tab = %q", got)
		}
		do(t, ctx, "open alice's menu", chromedp.Click(chromedp.CSS(rowSel(alice)+` button[data-role=menu]`), chromedp.NodeVisible))
		items := eval[[]string](t, ctx, `[...document.querySelectorAll('#menu [role=menuitem]')].map(b => b.textContent)`)
		if strings.Join(items, "|") != "Drop Connections|Resync Devices|View Authenticated IPs" {
			t.Errorf("All tab menu = %q (no Enable/Disable on All)", items)
		}
		do(t, ctx, "Resync Devices", chromedp.Click(`//div[@id="menu"]/button[normalize-space()="Resync Devices"]`, chromedp.NodeVisible))
		waitJS(t, ctx, "the confirmation", `document.getElementById('confirm').open`)
		do(t, ctx, "confirm", chromedp.Click(chromedp.ID("confirm-ok"), chromedp.NodeVisible))
		waitJS(t, ctx, "the resync result", `/IMAP/.test(document.getElementById('status').textContent)`)
		status := eval[string](t, ctx, `document.getElementById('status').textContent`)
		for _, want := range []string{alice + " (IMAP): drop: dropped 2 session(s)", alice + " (POP): drop: dropped 1 session(s)", "no hook configured for pop"} {
			if !strings.Contains(status, want) {
				t.Errorf("status %q does not contain %q", status, want)
			}
		}
		if n := reg.Summary()["all"]; n != 4 {
			t.Errorf("live connections after resyncing alice = %d, want 4", n)
		}
	})

	t.Run("an API error is shown with its code", func(t *testing.T) {
		do(t, ctx, "open the weird user's menu", chromedp.Click(chromedp.CSS(rowSel(weird)+` button[data-role=menu]`), chromedp.NodeVisible))
		do(t, ctx, "Resync Devices", chromedp.Click(`//div[@id="menu"]/button[normalize-space()="Resync Devices"]`, chromedp.NodeVisible))
		waitJS(t, ctx, "the confirmation", `document.getElementById('confirm').open`)
		do(t, ctx, "confirm", chromedp.Click(chromedp.ID("confirm-ok"), chromedp.NodeVisible))
		waitJS(t, ctx, "the error", `!document.getElementById('error').hidden`)
		msg := eval[string](t, ctx, `document.getElementById('error').textContent`)
		if !strings.Contains(msg, "HTTP 400, bad_request") || !strings.Contains(msg, "cannot be passed to a resync hook") {
			t.Errorf("error line = %q, want the API's code and message", msg)
		}
	})

	t.Run("IMAP tab: drop a user and an unauthenticated row together", func(t *testing.T) {
		do(t, ctx, "open the IMAP tab", chromedp.Click(chromedp.ID("tab-imap"), chromedp.NodeVisible))
		waitJS(t, ctx, "bob's row and the unauthenticated row", `document.querySelector(`+jsString(rowSel(bob))+`) && document.querySelector('#rows tr.anon')`)
		if got := eval[string](t, ctx, `document.querySelector('#rows tr.anon .iplist').textContent`); got != "10.0.0.9 2" {
			t.Errorf("unauthenticated row's IP Connections = %q, want 10.0.0.9 with 2", got)
		}
		do(t, ctx, "select bob", chromedp.Click(chromedp.CSS(rowSel(bob)+` input[data-role=select]`), chromedp.NodeVisible))
		do(t, ctx, "select the unauthenticated row", chromedp.Click(chromedp.CSS(`#rows tr.anon input[data-role=select]`), chromedp.NodeVisible))
		do(t, ctx, "open the selection's menu", chromedp.Click(chromedp.ID("sel-actions"), chromedp.NodeVisible))
		do(t, ctx, "Drop Connections", chromedp.Click(`//div[@id="menu"]/button[normalize-space()="Drop Connections"]`, chromedp.NodeVisible))
		waitJS(t, ctx, "the confirmation", `document.getElementById('confirm').open`)
		if text := eval[string](t, ctx, `document.getElementById('confirm-text').textContent`); !strings.Contains(text, "1 user and 1 unauthenticated row") {
			t.Errorf("confirmation = %q", text)
		}
		do(t, ctx, "confirm", chromedp.Click(chromedp.ID("confirm-ok"), chromedp.NodeVisible))
		waitJS(t, ctx, "the result", `/Dropped 3 connections/.test(document.getElementById('status').textContent)`)
		waitJS(t, ctx, "the unauthenticated row gone", `document.querySelector('#rows tr.anon') === null`)
		if n := reg.Summary()["imap"]; n != 1 {
			t.Errorf("live IMAP connections = %d, want 1 (the weird user's)", n)
		}
	})

	t.Run("Escape cancels a confirmation", func(t *testing.T) {
		do(t, ctx, "open the weird user's menu", chromedp.Click(chromedp.CSS(rowSel(weird)+` button[data-role=menu]`), chromedp.NodeVisible))
		do(t, ctx, "Drop Connections", chromedp.Click(`//div[@id="menu"]/button[normalize-space()="Drop Connections"]`, chromedp.NodeVisible))
		waitJS(t, ctx, "the confirmation with the focus on Cancel", `document.getElementById('confirm').open && document.activeElement.id === 'confirm-cancel'`)
		do(t, ctx, "Escape", chromedp.KeyEvent(kb.Escape))
		waitJS(t, ctx, "the confirmation closed", `!document.getElementById('confirm').open`)
		time.Sleep(300 * time.Millisecond) // a cancelled drop must not run
		if n := reg.Summary()["imap"]; n != 1 {
			t.Errorf("live IMAP connections after a cancelled drop = %d, want 1", n)
		}
	})
}
