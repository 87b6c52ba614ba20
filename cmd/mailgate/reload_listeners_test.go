package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mailgate/mailgate/protocols/protocoltest"
)

// listenersRig is a mailgate whose config file a test rewrites: plain IMAP
// listeners to one fake backend and, optionally, a webdav route.
type listenersRig struct {
	t       *testing.T
	admin   string // admin.listen: "" (none) or an address
	dir     string
	path    string
	backend string
	a       *app
	logs    *protocoltest.SyncBuffer
}

func (r *listenersRig) write(listeners map[string]string, webdav string) {
	r.t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "node: reload\nlog_level: debug\nadmin:\n  listen: %q\n  token: ctl-token\nlisteners:\n", r.admin)
	for _, name := range []string{"one", "two", "three"} {
		if addr, ok := listeners[name]; ok {
			fmt.Fprintf(&b, "  - name: %s\n    protocol: imap\n    listen: %s\n    backend:\n      address: %s\n", name, addr, r.backend)
		}
	}
	if webdav != "" {
		fmt.Fprintf(&b, "http:\n  plain_listen: 127.0.0.1:0\n  webdav:\n    backend: %s\n    prefixes: [/dav/]\n", webdav)
	}
	if err := os.WriteFile(r.path, []byte(b.String()), 0o600); err != nil {
		r.t.Fatal(err)
	}
}

func newListenersRig(t *testing.T, listeners map[string]string, webdav string) *listenersRig {
	return newListenersRigAdmin(t, listeners, webdav, "")
}

func newListenersRigAdmin(t *testing.T, listeners map[string]string, webdav, adminAddr string) *listenersRig {
	t.Helper()
	dir := t.TempDir()
	r := &listenersRig{t: t, dir: dir, path: filepath.Join(dir, "mailgate.yaml"), backend: imapBackend(t), logs: &protocoltest.SyncBuffer{},
		admin: adminAddr}
	r.write(listeners, webdav)
	r.a = startFile(t, r.path, r.logs)
	return r
}

// addrOf is where the running listener name is bound.
func (r *listenersRig) addrOf(name string) string {
	r.t.Helper()
	l := r.a.listeners[name]
	if l == nil {
		r.t.Fatalf("no running listener %s (have %v)", name, r.a.listeners)
	}
	return l.Addr().String()
}

// hold opens a plain IMAP session and reads the greeting.
func hold(t *testing.T, addr string) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	br := bufio.NewReader(c)
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if line, err := br.ReadString('\n'); err != nil || !strings.HasPrefix(line, "* OK") {
		t.Fatalf("greeting from %s: %q, %v", addr, line, err)
	}
	return c, br
}

func noop(t *testing.T, c net.Conn, br *bufio.Reader, tag string) {
	t.Helper()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprintf(c, "%s NOOP\r\n", tag)
	if line, err := br.ReadString('\n'); err != nil || line != tag+" OK done\r\n" {
		t.Fatalf("NOOP answered %q, %v", line, err)
	}
}

// TestReloadListeners (issue 16): SIGHUP opens a new listener, stops a
// removed one while its session goes on, moves one to a new address, and
// refuses a config whose new listener cannot bind, changing nothing.
func TestReloadListeners(t *testing.T) {
	r := newListenersRig(t, map[string]string{"one": "127.0.0.1:0", "two": "127.0.0.1:0"}, "")
	oneAddr, twoAddr := r.addrOf("one"), r.addrOf("two")
	onTwo, onTwoR := hold(t, twoAddr)

	// "two" removed, "three" added.
	r.write(map[string]string{"one": oneAddr, "three": "127.0.0.1:0"}, "")
	res, err := r.a.reload(r.path)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Changed) != 1 || !strings.Contains(res.Changed[0], "+three") || !strings.Contains(res.Changed[0], "-two") {
		t.Errorf("changed = %v, want +three and -two", res.Changed)
	}
	c, _ := hold(t, r.addrOf("three"))
	c.Close()
	if c, err := net.DialTimeout("tcp", twoAddr, time.Second); err == nil {
		c.Close()
		t.Errorf("the removed listener %s still accepts", twoAddr)
	}
	noop(t, onTwo, onTwoR, "a1") // its session lives on
	if r.addrOf("one") != oneAddr {
		t.Errorf("listener one moved from %s to %s", oneAddr, r.addrOf("one"))
	}

	// A new listener on a port that is taken: refused whole.
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	threeAddr := r.addrOf("three")
	r.write(map[string]string{"one": oneAddr, "two": taken.Addr().String()}, "")
	if _, err := r.a.reload(r.path); err == nil || !strings.Contains(err.Error(), "listener two") {
		t.Fatalf("reload onto a taken port = %v, want a refusal naming the listener", err)
	}
	if _, ok := r.a.listeners["three"]; !ok || r.addrOf("three") != threeAddr {
		t.Error("the refused reload changed the running listeners")
	}
	c, _ = hold(t, threeAddr)
	c.Close()
	noop(t, onTwo, onTwoR, "a2")
}

// TestReloadHTTPRoutes: a changed webdav backend applies to the next
// request; a change of the HTTP listeners is reported as needing a restart.
func TestReloadHTTPRoutes(t *testing.T) {
	backend := func(name string) *httptest.Server {
		s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("X-Backend", name)
			io.WriteString(w, "ok")
		}))
		t.Cleanup(s.Close)
		return s
	}
	first, second := backend("first"), backend("second")
	r := newListenersRig(t, map[string]string{"one": "127.0.0.1:0"}, first.URL)
	var plain string
	for _, b := range r.a.bound {
		if b.name == "http-plain" {
			plain = b.addr
		}
	}
	get := func() string {
		t.Helper()
		resp, err := http.Get("http://" + plain + "/dav/x")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.Header.Get("X-Backend")
	}
	if got := get(); got != "first" {
		t.Fatalf("before the reload: backend %q, want first", got)
	}
	r.write(map[string]string{"one": r.addrOf("one")}, second.URL)
	res, err := r.a.reload(r.path)
	if err != nil {
		t.Fatal(err)
	}
	if got := get(); got != "second" || len(res.Changed) != 1 || res.Changed[0] != "http routes" {
		t.Errorf("after the reload: backend %q, changed %v; want second and the routes", got, res.Changed)
	}
	s, _ := os.ReadFile(r.path)
	os.WriteFile(r.path, []byte(strings.Replace(string(s), "plain_listen: 127.0.0.1:0", "plain_listen: 127.0.0.1:1", 1)), 0o600)
	res, err = r.a.reload(r.path)
	if err != nil || len(res.Restart) != 1 || res.Restart[0] != "http.plain_listen" {
		t.Errorf("reload with another plain_listen = %+v, %v; want it reported for a restart", res, err)
	}
	if got := get(); got != "second" {
		t.Errorf("after a restart-only change: backend %q, want second still", got)
	}
}

// TestCtlReload: `mailgate ctl reload` reloads a running mailgate through
// POST /api/v1/reload and prints what changed; a refused file is an error
// that names the key, and the listeners stay as they were.
func TestCtlReload(t *testing.T) {
	r := newListenersRigAdmin(t, map[string]string{"one": "127.0.0.1:0"}, "", freePort(t))
	ctl := func(args ...string) (string, error) {
		var out strings.Builder
		err := runCtl(append([]string{"--addr", "http://" + r.admin, "--token", "ctl-token"}, args...), &out)
		return out.String(), err
	}
	r.write(map[string]string{"one": r.addrOf("one"), "two": "127.0.0.1:0"}, "")
	out, err := ctl("reload")
	if err != nil || !strings.Contains(out, "applied: listeners: +two") {
		t.Fatalf("ctl reload = %q, %v; want the new listener applied", out, err)
	}
	c, _ := hold(t, r.addrOf("two"))
	c.Close()
	r.write(map[string]string{"one": r.addrOf("one"), "two": "localhost"}, "")
	if out, err := ctl("reload"); err == nil || !strings.Contains(err.Error(), "reload_refused") || !strings.Contains(err.Error(), "listen") {
		t.Fatalf("ctl reload of a bad file = %q, %v; want reload_refused naming the key", out, err)
	}
	if _, ok := r.a.listeners["two"]; !ok {
		t.Error("the refused reload changed the listeners")
	}
}
