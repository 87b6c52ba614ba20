package adminapi_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http/httptest"
	"net/netip"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/chromedp/chromedp"

	"github.com/mailgate/mailgate/accounting"
	"github.com/mailgate/mailgate/adminapi"
	"github.com/mailgate/mailgate/cluster"
)

// The page in a cluster, in a real browser (Debian's chromium, headless,
// as in e2e/browser_test.go): the banner with the nodes, the node column,
// the warning of a node that cannot reach Redis and the 503 of a change
// it refuses. The cluster is real: nodes joined on a miniredis, the API of
// node a over its view.

const pageChromium = "/usr/bin/chromium"

const pageStep = 20 * time.Second

// pageBrowser starts a headless chromium that reaches loopback only and
// returns a tab's context. An exception or a CSP violation in the page
// fails the test.
func pageBrowser(t *testing.T) context.Context {
	t.Helper()
	if _, err := os.Stat(pageChromium); err != nil {
		t.Skipf("no chromium at %s (scripts/test.sh installs Debian's chromium package): the page's browser test is skipped", pageChromium)
	}
	profile := t.TempDir()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(pageChromium),
		chromedp.UserDataDir(profile),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("host-resolver-rules", "MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"),
		chromedp.Flag("proxy-server", "http://127.0.0.1:9"),
		chromedp.WindowSize(1280, 800),
	)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelTab := chromedp.NewContext(allocCtx)
	ctx, cancelTimeout := context.WithTimeout(ctx, 2*time.Minute)

	var mu sync.Mutex
	var messages []chromedp.ConsoleMessage
	done := make(chan struct{})
	console := chromedp.Console(ctx)
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
			if m.IsException() || strings.Contains(text, "Content Security Policy") || strings.Contains(text, "Refused to") {
				t.Errorf("browser console: %s %s:%d: %s", m.Type, m.URL, m.Line+1, text)
			}
		}
		// Chromium's helpers may still write in the profile for a moment;
		// t.TempDir's removal retries.
		time.Sleep(200 * time.Millisecond)
	})
	return ctx
}

func pageDo(t *testing.T, ctx context.Context, what string, steps ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	sctx, cancel := context.WithTimeout(ctx, pageStep)
	defer cancel()
	if err := chromedp.Do(sctx, steps...); err != nil {
		t.Fatalf("browser: %s: %v\n%s", what, err, pageDump(ctx))
	}
}

func pageEval[T any](t *testing.T, ctx context.Context, expr string) T {
	t.Helper()
	sctx, cancel := context.WithTimeout(ctx, pageStep)
	defer cancel()
	v, err := chromedp.Run(sctx, chromedp.Evaluate[T](expr))
	if err != nil {
		t.Fatalf("browser: evaluating %s: %v\n%s", expr, err, pageDump(ctx))
	}
	return v
}

func pageWait(t *testing.T, ctx context.Context, what, expr string) {
	t.Helper()
	_, err := chromedp.Run(ctx, chromedp.Poll[chromedp.Void](expr,
		chromedp.WithPollingInterval(50*time.Millisecond), chromedp.WithPollingTimeout(pageStep)))
	if err != nil {
		t.Fatalf("browser: waiting for %s (%s): %v\n%s", what, expr, err, pageDump(ctx))
	}
}

// pageDump is what the page shows, for failure messages.
func pageDump(ctx context.Context) string {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	s, err := chromedp.Run(ctx, chromedp.Evaluate[string](`JSON.stringify({
		login: !document.getElementById('login').hidden,
		cluster: document.getElementById('cluster').hidden ? null : document.getElementById('cluster').innerText,
		status: document.getElementById('status').textContent,
		error: document.getElementById('error').textContent,
		rows: [...document.querySelectorAll('#rows tr')].map(tr => tr.innerText.replace(/\s+/g, ' ')),
	}, null, 1)`))
	if err != nil {
		return "(page state unavailable: " + err.Error() + ")"
	}
	return "page state: " + s
}

func jsQuote(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// pageLogin opens the page at url and enters the token.
func pageLogin(t *testing.T, ctx context.Context, url, token string) {
	t.Helper()
	pageDo(t, ctx, "open the page", chromedp.Navigate(url))
	pageWait(t, ctx, "the token form", `!document.getElementById('login').hidden`)
	pageDo(t, ctx, "enter the token",
		chromedp.SendKeys(chromedp.ID("token"), token),
		chromedp.Click(chromedp.CSS(`#login-form button[type=submit]`), chromedp.NodeVisible))
	pageWait(t, ctx, "the rows", `!document.getElementById('main').hidden && document.querySelector('#rows tr[data-user]') !== null`)
}

// clusterLogin opens and authenticates a connection in reg.
func clusterLogin(reg *accounting.Registry, protocol, client, user string) {
	c := reg.Register(accounting.ConnInfo{Protocol: protocol, Listener: protocol, Client: netip.MustParseAddrPort(client)})
	c.SetDropFunc(func(string) {})
	c.Authenticated(user, "PLAIN")
}

func waitUntil(t *testing.T, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("not within 5s: %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// nodeColumnShown is true when the Node column's header is displayed.
const nodeColumnShown = `getComputedStyle(document.querySelector('#grid thead th.c-node')).display !== 'none'`

func TestPage_clusterBanner(t *testing.T) {
	ctx := pageBrowser(t)

	t.Run("a single node has no banner and no node column", func(t *testing.T) {
		e := newEnv(t)
		clusterLogin(e.reg, "imap", "192.0.2.1:1000", "alice@example.com")
		pageLogin(t, ctx, e.srv.URL+"/", testToken)
		if !pageEval[bool](t, ctx, `document.getElementById('cluster').hidden`) {
			t.Errorf("a single node shows the cluster banner: %q", pageEval[string](t, ctx, `document.getElementById('cluster').innerText`))
		}
		if pageEval[bool](t, ctx, nodeColumnShown) {
			t.Errorf("a single node shows the Node column")
		}
	})

	// A cluster of a and b, and c: a node that died without leaving (what
	// kill -9 leaves once its heartbeat key has expired).
	mr := miniredis.RunT(t)
	regs := map[string]*accounting.Registry{}
	var ca *cluster.Cluster
	for _, name := range []string{"a", "b"} {
		reg := accounting.New(accounting.Options{})
		c, err := cluster.Join(context.Background(), cluster.Options{Redis: cluster.Redis{Addresses: []string{mr.Addr()}},
			Node: name, Admin: name + ".example:1880", Version: "test", Registry: reg,
			Heartbeat: 100 * time.Millisecond, NodeTTL: 500 * time.Millisecond,
			Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Fatalf("join %s: %v", name, err)
		}
		t.Cleanup(func() { c.Close() })
		regs[name] = reg
		if name == "a" {
			ca = c
		}
	}
	dead, _ := json.Marshal(cluster.NodeInfo{Name: "c", Admin: "c.example:1880", Version: "test", PID: 1,
		Started: time.Now().Add(-time.Hour), Heartbeat: time.Now().Add(-time.Minute), Conns: 7, State: "up"})
	mr.HSet("mailgate:{c}:nodes", "c", string(dead))

	clusterLogin(regs["a"], "imap", "192.0.2.1:1000", "alice@example.com")
	clusterLogin(regs["b"], "pop", "192.0.2.2:1000", "alice@example.com")
	clusterLogin(regs["b"], "imap", "192.0.2.3:1000", "bob@example.com")
	clusterLogin(regs["b"], "imap", "192.0.2.3:1001", "bob@example.com")
	waitUntil(t, "a sees b with its 3 connections and c gone", func() bool {
		st := map[string]string{}
		for _, n := range ca.Nodes() {
			st[n.Name] = n.State
			if n.Name == "b" && n.Conns != 3 {
				return false
			}
		}
		return st["a"] == "up" && st["b"] == "up" && st["c"] == "gone"
	})
	const viewerToken = "viewer-token-for-tests"
	api, err := adminapi.New(adminapi.Options{
		Registry: ca.View(), Cluster: ca, Metrics: regs["a"], Node: "a",
		Token:  testToken,
		Tokens: []adminapi.Token{{Name: "look", Role: accounting.RoleViewer, Secret: viewerToken}},
		Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(api)
	t.Cleanup(srv.Close)
	pageLogin(t, ctx, srv.URL+"/", testToken)

	t.Run("banner", func(t *testing.T) {
		pageWait(t, ctx, "the banner", `!document.getElementById('cluster').hidden`)
		if got := pageEval[string](t, ctx, `document.getElementById('cluster-summary').textContent`); got != "Cluster of 3 nodes (1 gone)" {
			t.Errorf("banner summary = %q", got)
		}
		if got := pageEval[string](t, ctx, `document.getElementById('cluster-answered').textContent`); got != "answered by a" {
			t.Errorf("banner answering node = %q", got)
		}
		nodes := pageEval[[]string](t, ctx, `[...document.querySelectorAll('#cluster-nodes li')].map(li => li.textContent + '|' + li.className)`)
		// A gone node's connections no longer count: it says when it was
		// last heard of instead.
		if len(nodes) != 3 || nodes[0] != "a up 1 live|self" || nodes[1] != "b up 3 live|" ||
			!strings.HasPrefix(nodes[2], "c gone last heartbeat ") || !strings.HasSuffix(nodes[2], "|gone") {
			t.Errorf("banner nodes = %q, want a up with 1 live (this node), b up with 3, c gone with its last heartbeat", nodes)
		}
		if !pageEval[bool](t, ctx, `document.getElementById('cluster-degraded').hidden`) {
			t.Errorf("the Redis warning shows while Redis is up")
		}
	})

	t.Run("node column", func(t *testing.T) {
		if !pageEval[bool](t, ctx, nodeColumnShown) {
			t.Fatalf("the Node column is hidden in a cluster")
		}
		for user, want := range map[string]string{"alice@example.com": "a, b", "bob@example.com": "b"} {
			got := pageEval[string](t, ctx, `document.querySelector('#rows tr[data-user=`+jsQuote(user)+`] td.c-node').textContent`)
			if got != want {
				t.Errorf("%s's Node cell = %q, want %q", user, got, want)
			}
		}
	})

	t.Run("a viewer sees the banner, and no action", func(t *testing.T) {
		pageDo(t, ctx, "forget the admin token", chromedp.Click(chromedp.ID("signout"), chromedp.NodeVisible))
		pageLogin(t, ctx, srv.URL+"/", viewerToken)
		pageWait(t, ctx, "the banner and the Node column", `!document.getElementById('cluster').hidden && `+nodeColumnShown)
		pageDo(t, ctx, "open alice's menu", chromedp.Click(chromedp.CSS(`#rows tr[data-user="alice@example.com"] button[data-role=menu]`), chromedp.NodeVisible))
		items := pageEval[[]string](t, ctx, `[...document.querySelectorAll('#menu [role=menuitem]')].map(b => b.textContent)`)
		if strings.Join(items, "|") != "View Authenticated IPs" {
			t.Errorf("the viewer's menu = %q, want View Authenticated IPs only", items)
		}
		pageDo(t, ctx, "close the menu", chromedp.KeyEvent("\x1b"))
		pageDo(t, ctx, "forget the viewer token", chromedp.Click(chromedp.ID("signout"), chromedp.NodeVisible))
		pageLogin(t, ctx, srv.URL+"/", testToken)
	})

	t.Run("Redis down: the warning and a refused change", func(t *testing.T) {
		mr.Close()
		waitUntil(t, "a notices Redis is down", func() bool { return !ca.Up() })
		pageDo(t, ctx, "refresh", chromedp.Click(chromedp.ID("refresh"), chromedp.NodeVisible))
		pageWait(t, ctx, "the warning", `!document.getElementById('cluster-degraded').hidden`)
		warn := pageEval[string](t, ctx, `document.getElementById('cluster-degraded').textContent`)
		if !strings.HasPrefix(warn, "This node cannot reach Redis: it serves with the last known policy; changes are refused until Redis is back") {
			t.Errorf("warning = %q", warn)
		}

		pageDo(t, ctx, "open the IMAP tab", chromedp.Click(chromedp.ID("tab-imap"), chromedp.NodeVisible))
		// Cut off, a's rows are its own: alice's IMAP session is on a.
		alice := `#rows tr[data-user="alice@example.com"]`
		pageWait(t, ctx, "alice on the IMAP tab", `document.getElementById('tab-imap').getAttribute('aria-selected') === 'true' && document.querySelector(`+jsQuote(alice)+`) !== null`)
		pageDo(t, ctx, "open alice's menu", chromedp.Click(chromedp.CSS(alice+` button[data-role=menu]`), chromedp.NodeVisible))
		pageDo(t, ctx, "Disable IMAP Access", chromedp.Click(`//div[@id="menu"]/button[normalize-space()="Disable IMAP Access"]`, chromedp.NodeVisible))
		pageWait(t, ctx, "the confirmation", `document.getElementById('confirm').open`)
		pageDo(t, ctx, "confirm", chromedp.Click(chromedp.ID("confirm-ok"), chromedp.NodeVisible))
		pageWait(t, ctx, "the error", `!document.getElementById('error').hidden`)
		msg := pageEval[string](t, ctx, `document.getElementById('error').textContent`)
		for _, want := range []string{"Disable failed: this node cannot reach Redis", "nothing was changed", "HTTP 503, cluster_unavailable"} {
			if !strings.Contains(msg, want) {
				t.Errorf("error line = %q, want it to contain %q", msg, want)
			}
		}
		if !pageEval[bool](t, ctx, `!document.getElementById('cluster-degraded').hidden`) {
			t.Errorf("the Redis warning went away after the refused change")
		}
		if !regs["a"].ProtocolEnabled("alice@example.com", "imap") {
			t.Errorf("the refused change disabled alice's IMAP on node a")
		}
	})
}
