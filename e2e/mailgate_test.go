package e2e

import (
	"bytes"
	"cmp"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/mailgate/mailgate/internal/netx"
	"github.com/mailgate/mailgate/internal/testutil"
	"github.com/mailgate/mailgate/protocols/protocoltest"
)

// Test accounts: the same in mailgate demo and in scripts/dovecot.sh.
const (
	alice         = "alice@example.com"
	alicePassword = "alice-secret"
	bob           = "bob@example.com"
	bobPassword   = "bob-secret"
	wrongPassword = "not-the-secret-42"
)

// How long one step may take. The binary may be built with -race and the
// machine has 2 cores shared with the other packages' tests: be generous,
// these are deadlines, not sleeps.
const (
	stepTimeout  = 45 * time.Second
	pollInterval = 50 * time.Millisecond
)

// mailgate is one running mailgate process.
type mailgate struct {
	t     *testing.T
	cmd   *exec.Cmd
	log   *protocoltest.SyncBuffer // stderr: the slog log
	out   *protocoltest.SyncBuffer // stdout (the demo banner)
	demo  bool                     // mailgate demo: its banner lists the demo users and passwords
	kill9 bool                     // the test killed it with SIGKILL on purpose
	done  chan struct{}
	admin string // admin API host:port
	token string
	http  *http.Client
}

// startMailgate runs the binary with args, waits until its admin API accepts
// connections (the listeners are bound before it) and registers a cleanup
// that stops it, prints its output on failure and checks that output for
// secrets, data races and panics.
func startMailgate(t *testing.T, admin, token string, args ...string) *mailgate {
	t.Helper()
	return startMailgateBin(t, mailgateBin, admin, token, args...)
}

// startMailgateBin is startMailgate with another binary.
func startMailgateBin(t *testing.T, bin, admin, token string, args ...string) *mailgate {
	t.Helper()
	m := &mailgate{
		t: t, log: &protocoltest.SyncBuffer{}, out: &protocoltest.SyncBuffer{}, done: make(chan struct{}), demo: len(args) > 0 && args[0] == "demo",
		admin: admin, token: token, http: &http.Client{Timeout: 10 * time.Second},
	}
	m.cmd = exec.Command(bin, args...)
	m.cmd.Stdout = m.out
	m.cmd.Stderr = m.log
	m.cmd.WaitDelay = 5 * time.Second
	if err := m.cmd.Start(); err != nil {
		t.Fatalf("start %s %v: %v", bin, args, err)
	}
	go func() {
		m.cmd.Wait()
		close(m.done)
	}()
	t.Cleanup(func() {
		m.stop()
		m.checkLog()
		if t.Failed() {
			t.Logf("mailgate %v stdout:\n%s\nstderr:\n%s", args, m.out.String(), m.log.String())
		}
	})
	deadline := time.Now().Add(stepTimeout)
	for {
		c, err := net.DialTimeout("tcp", admin, time.Second)
		if err == nil {
			c.Close()
			return m
		}
		select {
		case <-m.done:
			t.Fatalf("mailgate %v exited before listening (%v)", args, m.cmd.ProcessState)
		case <-time.After(pollInterval):
		}
		if time.Now().After(deadline) {
			t.Fatalf("mailgate admin API %s not up after %v", admin, stepTimeout)
		}
	}
}

// stop sends SIGTERM and waits for a graceful exit, then KILLs.
func (m *mailgate) stop() {
	select {
	case <-m.done:
		return
	default:
	}
	m.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-m.done:
		return
	case <-time.After(15 * time.Second):
		m.t.Errorf("mailgate did not exit within 15 s of SIGTERM: killed")
		m.cmd.Process.Kill()
		<-m.done
	}
}

// secretForms are the strings that must never appear in mailgate's output:
// every password the tests send, raw, base64 (AUTHENTICATE LOGIN) and inside
// a base64 SASL PLAIN message (AUTHENTICATE PLAIN, curl's default).
func secretForms() []string {
	var forms []string
	for _, pw := range []string{alicePassword, bobPassword, wrongPassword} {
		forms = append(forms, pw, base64.StdEncoding.EncodeToString([]byte(pw)))
		for _, u := range []string{alice, bob} {
			forms = append(forms, base64.StdEncoding.EncodeToString([]byte("\x00"+u+"\x00"+pw)))
		}
	}
	return forms
}

// checkLog fails the test when mailgate's log (stderr, at log_level debug)
// holds a secret, a data race report or a panic. stdout is checked for
// secrets too, except the demo's banner, which lists the demo accounts on
// purpose.
func (m *mailgate) checkLog() {
	log := m.log.String()
	if !strings.Contains(log, alice) {
		m.t.Errorf("mailgate's log never names %s: is it logging at all? (the secret check below would prove nothing)", alice)
	}
	for _, s := range secretForms() {
		if strings.Contains(log, s) {
			m.t.Errorf("mailgate's log contains the secret %q (no level may log a credential)", s)
		}
		if !m.demo && strings.Contains(m.out.String(), s) {
			m.t.Errorf("mailgate's stdout contains the secret %q", s)
		}
	}
	for _, bad := range []string{"WARNING: DATA RACE", "panic:", "fatal error:"} {
		if strings.Contains(log, bad) {
			m.t.Errorf("mailgate's stderr contains %q", bad)
		}
	}
	if st := m.cmd.ProcessState; st != nil && !st.Success() && !m.kill9 {
		m.t.Errorf("mailgate exited with %v after SIGTERM, want status 0", st)
	}
}

// api does one admin API request with the bearer token and returns the
// status and body.
func (m *mailgate) api(method, path string, body any) (int, []byte) {
	m.t.Helper()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			m.t.Fatal(err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, "http://"+m.admin+path, rd)
	if err != nil {
		m.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+m.token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := m.http.Do(req)
	if err != nil {
		m.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		m.t.Fatalf("%s %s: reading the body: %v", method, path, err)
	}
	return resp.StatusCode, b
}

// apiJSON does a request, wants status 200 and decodes the body into out.
func (m *mailgate) apiJSON(method, path string, body, out any) {
	m.t.Helper()
	st, b := m.api(method, path, body)
	if st != http.StatusOK {
		m.t.Fatalf("%s %s = %d %s, want 200", method, path, st, b)
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			m.t.Fatalf("%s %s: decoding %s: %v", method, path, b, err)
		}
	}
}

// The admin API wire types the tests read (black box: declared here, not
// imported from adminapi, so a change of the wire format fails a test).
type apiConn struct {
	ID         uint64 `json:"id"`
	Protocol   string `json:"protocol"`
	Listener   string `json:"listener"`
	User       string `json:"user"`
	ClientIP   string `json:"client_ip"`
	ClientPort int    `json:"client_port"`
	State      string `json:"state"`
	TLS        bool   `json:"tls"`
}

type apiUserRow struct {
	User          string `json:"user"`
	Connections   int    `json:"connections"`
	IPConnections []struct {
		IP    string `json:"ip"`
		Count int    `json:"count"`
	} `json:"ip_connections"`
	LastIP *string `json:"last_authenticated_ip"`
}

func (m *mailgate) summary() map[string]int {
	m.t.Helper()
	var s map[string]int
	m.apiJSON("GET", "/api/v1/connections/summary", nil, &s)
	return s
}

func (m *mailgate) connections(query url.Values) []apiConn {
	m.t.Helper()
	var l struct {
		Connections []apiConn `json:"connections"`
	}
	m.apiJSON("GET", "/api/v1/connections?"+query.Encode(), nil, &l)
	return l.Connections
}

func (m *mailgate) users(protocol string) []apiUserRow {
	m.t.Helper()
	var l struct {
		Users []apiUserRow `json:"users"`
	}
	m.apiJSON("GET", "/api/v1/users?protocol="+url.QueryEscape(protocol), nil, &l)
	return l.Users
}

// drop has the admin API drop user's connections of protocol and returns
// how many it dropped; -1: the answer has no "dropped".
func (m *mailgate) drop(user, protocol string) int {
	m.t.Helper()
	var d struct {
		Dropped *int `json:"dropped"`
	}
	m.apiJSON("POST", "/api/v1/users/"+url.PathEscape(user)+"/drop?protocol="+url.QueryEscape(protocol), nil, &d)
	if d.Dropped == nil {
		return -1
	}
	return *d.Dropped
}

// waitIMAPCount polls the summary until "imap" is n (and "all" too).
func (m *mailgate) waitIMAPCount(n int) {
	m.t.Helper()
	var last map[string]int
	waitFor(m.t, fmt.Sprintf(`summary {"imap":%d}`, n), func() bool {
		last = m.summary()
		return last["imap"] == n && last["all"] == n
	}, func() string { return fmt.Sprintf("last summary %v", last) })
}

// waitSummary polls the summary until protocol's count is n. "all" is not
// checked: other tests may hold sessions of other protocols on the same
// mailgate.
func (m *mailgate) waitSummary(protocol string, n int) {
	m.t.Helper()
	var last map[string]int
	waitFor(m.t, fmt.Sprintf("summary %s=%d", protocol, n), func() bool {
		last = m.summary()
		return last[protocol] == n
	}, func() string { return fmt.Sprintf("last summary %v", last) })
}

// waitConn polls the live connections of user for protocol until exactly
// one is authenticated, and returns it.
func (m *mailgate) waitConn(protocol, user string) apiConn {
	m.t.Helper()
	var last []apiConn
	waitFor(m.t, fmt.Sprintf("one authenticated %s connection of %s", protocol, user), func() bool {
		last = m.connections(url.Values{"protocol": {protocol}, "user": {user}})
		return len(last) == 1 && last[0].State == "authenticated"
	}, func() string { return fmt.Sprintf("last connections %+v", last) })
	return last[0]
}

// waitFor polls cond until it is true or stepTimeout passes.
func waitFor(t *testing.T, what string, cond func() bool, state func() string) {
	t.Helper()
	testutil.WaitFor(t, stepTimeout, what, cond, state)
}

// needEnv returns the values of names, the variables a peer's script prints
// with env, and skips the test unless all are set (scripts/test.sh sets them;
// CI always does). byHand says how to set them without it.
func needEnv(t *testing.T, peer, byHand string, names ...string) []string {
	t.Helper()
	vals := make([]string, len(names))
	var missing []string
	for i, name := range names {
		if vals[i] = os.Getenv(name); vals[i] == "" {
			missing = append(missing, name)
		}
	}
	if len(missing) > 0 {
		t.Skipf("no %s: %s not set (scripts/test.sh sets them; by hand: %s)", peer, strings.Join(missing, ", "), byHand)
	}
	return vals
}

// freeAddr returns a loopback address with a port free right now, taken
// below the kernel's ephemeral range (32768-60999): a port there is never
// handed to an outgoing connection, so nothing but another listener can
// take it before mailgate binds it. (A port from 127.0.0.1:0 could be, and
// a parallel test's client socket did take one: "address already in use".)
// The range starts at an offset from the process id, so that test binaries
// running side by side seldom probe the same ports.
func freeAddr(t *testing.T) string {
	t.Helper()
	for range portSpan {
		p := portBase + int(nextPort.Add(1))%portSpan
		ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
		if err == nil {
			ln.Close()
			return ln.Addr().String()
		}
	}
	t.Fatalf("no free port in 127.0.0.1:%d-%d", portBase, portBase+portSpan-1)
	return ""
}

// Ports 20000-27999: below the ephemeral range and below the peers'
// (scripts/*.sh use 28222 and up).
const portBase, portSpan = 20000, 8000

var nextPort atomic.Int32

func init() { nextPort.Store(int32(os.Getpid() * 37 % portSpan)) }

// writeCert writes a self-signed certificate (it is its own CA, so clients
// can verify it with --cacert / cafile) for 127.0.0.1 and localhost.
func writeCert(t *testing.T, dir string) (certFile, keyFile string) {
	t.Helper()
	certFile, keyFile, err := netx.WriteSelfSigned(dir, "localhost", "mail.example.com", "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

// listenerConf is one entry of listeners: in a generated config.
type listenerConf struct {
	Name          string
	Protocol      string // imap (default), pop, smtp, xmpp
	Role          string // smtp: submission, submissions, mx
	Listen        string
	TLS           string // none, starttls, implicit
	Trusted       []string
	Backend       string
	BackendTLS    string
	BackendCA     string
	ServerName    string // the backend's name in its certificate; default localhost
	ClientAddress string // none, proxy-v2, imap-id, xclient
}

// writeConfig writes a mailgate YAML config at log_level debug.
func writeConfig(t *testing.T, dir, admin, token, cert, key string, ls []listenerConf) string {
	t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "node: e2e\nlog_level: debug\nshutdown_timeout: 3s\n")
	fmt.Fprintf(&b, "admin:\n  listen: %q\n  token: %q\n", admin, token)
	fmt.Fprintf(&b, "certificates:\n  - cert: %q\n    key: %q\n", cert, key)
	b.WriteString("listeners:\n")
	for _, l := range ls {
		fmt.Fprintf(&b, "  - name: %q\n    protocol: %s\n", l.Name, cmp.Or(l.Protocol, "imap"))
		if l.Role != "" {
			fmt.Fprintf(&b, "    role: %s\n", l.Role)
		}
		fmt.Fprintf(&b, "    listen: %q\n    tls: %s\n    login_timeout: 60s\n", l.Listen, l.TLS)
		if len(l.Trusted) > 0 {
			fmt.Fprintf(&b, "    proxy_protocol:\n      trusted: [%s]\n      timeout: 10s\n", quoteList(l.Trusted))
		}
		fmt.Fprintf(&b, "    backend:\n      address: %q\n      client_address: %s\n      dial_timeout: 10s\n", l.Backend, l.ClientAddress)
		if l.BackendTLS != "" {
			fmt.Fprintf(&b, "      tls: %s\n", l.BackendTLS)
		}
		if l.BackendCA != "" {
			fmt.Fprintf(&b, "      ca_file: %q\n      server_name: %s\n", l.BackendCA, cmp.Or(l.ServerName, "localhost"))
		}
	}
	path := filepath.Join(dir, "mailgate.yaml")
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// serveListeners serves ls (writeConfig's config, with a fresh certificate)
// once mailgate check accepts it. It returns the mailgate, the listen address
// of each listener by name, and the certificate file, which clients verify
// mailgate against.
func serveListeners(t *testing.T, token string, ls []listenerConf) (*mailgate, map[string]string, string) {
	t.Helper()
	dir := t.TempDir()
	cert, key := writeCert(t, dir)
	admin := freeAddr(t)
	cfg := writeConfig(t, dir, admin, token, cert, key, ls)
	addr := map[string]string{}
	for _, l := range ls {
		addr[l.Name] = l.Listen
	}
	return serveConfig(t, admin, token, cfg), addr, cert
}

// serveConfig runs mailgate serve with cfg once mailgate check accepts it.
func serveConfig(t *testing.T, admin, token, cfg string) *mailgate {
	t.Helper()
	if out, err := runCmd(t, mailgateBin, "check", "-config", cfg); err != nil {
		t.Fatalf("mailgate check -config %s: %v\n%s", cfg, err, out)
	}
	return startMailgate(t, admin, token, "serve", "-config", cfg)
}

func quoteList(ss []string) string {
	q := make([]string, len(ss))
	for i, s := range ss {
		q[i] = fmt.Sprintf("%q", s)
	}
	return strings.Join(q, ", ")
}
