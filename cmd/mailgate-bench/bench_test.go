package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/base64"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/mailgate/mailgate/accounting"
	"github.com/mailgate/mailgate/adminapi"
	"github.com/mailgate/mailgate/protocols/imap"
	"github.com/mailgate/mailgate/proxy"
)

// startBackend serves the bench backend on loopback, plain and implicit TLS.
func startBackend(t *testing.T) (plain, tlsAddr string, cert tls.Certificate) {
	t.Helper()
	certPEM, keyPEM, err := selfSignedPEM()
	if err != nil {
		t.Fatal(err)
	}
	cert, err = tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	b := NewBackend(nil)
	ln, err := listenLoopback("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tln, err := listenLoopback("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go b.Serve(ln)
	go b.Serve(tls.NewListener(tln, &tls.Config{Certificates: []tls.Certificate{cert}}))
	t.Cleanup(b.Close)
	return ln.Addr().String(), tln.Addr().String(), cert
}

// rawConn is a line-level IMAP conversation for protocol tests.
type rawConn struct {
	t *testing.T
	c net.Conn
	r *bufio.Reader
}

func dialRaw(t *testing.T, addr string) *rawConn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	t.Cleanup(func() { c.Close() })
	rc := &rawConn{t: t, c: c, r: bufio.NewReader(c)}
	rc.expect("* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] ready")
	return rc
}

func (rc *rawConn) send(s string) {
	rc.t.Helper()
	if _, err := io.WriteString(rc.c, s); err != nil {
		rc.t.Fatal(err)
	}
}

func (rc *rawConn) expect(prefix string) string {
	rc.t.Helper()
	l, err := rc.r.ReadString('\n')
	if err != nil {
		rc.t.Fatalf("reading, want %q: %v", prefix, err)
	}
	l = strings.TrimRight(l, "\r\n")
	if !strings.HasPrefix(l, prefix) {
		rc.t.Fatalf("got %q, want a line starting with %q", l, prefix)
	}
	return l
}

func TestBackendProtocol(t *testing.T) {
	addr, _, _ := startBackend(t)

	c := dialRaw(t, addr)
	c.send("1 CAPABILITY\r\n")
	c.expect("* CAPABILITY IMAP4rev1 AUTH=PLAIN")
	c.expect("1 OK")
	c.send("2 b DOWNLOAD 10\r\n")
	c.expect("2 BAD") // "b" is not a command
	c.send("3 DOWNLOAD 10\r\n")
	c.expect("3 NO") // not logged in
	c.send("4 LOGIN user wrong\r\n")
	c.expect("4 NO [AUTHENTICATIONFAILED]")
	c.send("5 LOGIN \"us\\\"er\" \"bench\"\r\n")
	c.expect("5 OK")
	c.send("6 LOGIN user bench\r\n")
	c.expect("6 BAD") // already authenticated
	c.send("7 DOWNLOAD 100000\r\n")
	got := make([]byte, 100000)
	if _, err := io.ReadFull(c.r, got); err != nil {
		t.Fatal(err)
	}
	if got[0] != 'a' || got[25] != 'z' || got[26] != 'a' {
		t.Fatalf("payload starts %q", got[:30])
	}
	c.expect("7 OK DOWNLOAD completed")
	c.send("8 UPLOAD 70000\r\n" + strings.Repeat("x", 70000))
	c.expect("8 OK UPLOAD completed")
	c.send("9 NOOP\r\n")
	c.expect("9 OK")
	c.send("11 LOGOUT\r\n")
	c.expect("* BYE")
	c.expect("11 OK LOGOUT")
	c.c.Close()

	// A bad UPLOAD size: the bytes that may follow cannot be framed, so
	// the answer is BAD and the end of the session.
	c = dialRaw(t, addr)
	c.send("a LOGIN user bench\r\nb UPLOAD -1\r\n")
	c.expect("a OK")
	c.expect("b BAD")
	if l, err := c.r.ReadString('\n'); err != io.EOF {
		t.Fatalf("after a bad UPLOAD: %q, %v; want EOF", l, err)
	}

	// nginx replays LOGIN with synchronizing literals.
	c = dialRaw(t, addr)
	c.send("a LOGIN {4}\r\n")
	c.expect("+ ")
	c.send("user {5}\r\n")
	c.expect("+ ")
	c.send("bench\r\n")
	c.expect("a OK")

	// Non-synchronizing literals (RFC 7888) get no "+".
	c = dialRaw(t, addr)
	c.send("a LOGIN {4+}\r\nuser {5+}\r\nwrong\r\n")
	c.expect("a NO")

	// AUTHENTICATE PLAIN, with and without an initial response.
	c = dialRaw(t, addr)
	ir := base64.StdEncoding.EncodeToString([]byte("\x00user\x00bench"))
	c.send("a AUTHENTICATE PLAIN " + ir + "\r\n")
	c.expect("a OK")
	c = dialRaw(t, addr)
	c.send("a AUTHENTICATE PLAIN\r\n")
	c.expect("+ ")
	c.send(base64.StdEncoding.EncodeToString([]byte("\x00user\x00nope")) + "\r\n")
	c.expect("a NO")
	c.send("b AUTHENTICATE PLAIN\r\n")
	c.expect("+ ")
	c.send("*\r\n")
	c.expect("b BAD")

	// ID (an ID list is one argument) and garbage.
	c = dialRaw(t, addr)
	c.send("a ID (\"name\" \"x (y)\")\r\n")
	c.expect("* ID")
	c.expect("a OK")
	c.send("\r\n")
	c.expect("* BAD")
}

func TestAuthHTTP(t *testing.T) {
	h, err := newAuthHandler("127.0.0.1:30001")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		user, pass, status string
	}{
		{"bench1@example.com", "bench", "OK"},
		{"bench1@example.com", "b%65nch", "OK"}, // nginx URL-escapes
		{"bench1@example.com", "nope", "Invalid login or password"},
		{"", "bench", "Invalid login or password"},
	} {
		req := httptest.NewRequest(http.MethodGet, "/auth", nil)
		req.Header.Set("Auth-User", tc.user)
		req.Header.Set("Auth-Pass", tc.pass)
		req.Header.Set("Auth-Protocol", "imap")
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		hd := rec.Result().Header
		if got := hd.Get("Auth-Status"); got != tc.status {
			t.Errorf("user %q pass %q: Auth-Status = %q, want %q", tc.user, tc.pass, got, tc.status)
		}
		if tc.status == "OK" && (hd.Get("Auth-Server") != "127.0.0.1" || hd.Get("Auth-Port") != "30001") {
			t.Errorf("OK without the backend: %v", hd)
		}
		if tc.status != "OK" && hd.Get("Auth-Wait") != "0" {
			t.Errorf("failure without Auth-Wait: 0: %v", hd)
		}
	}
	if _, err := newAuthHandler("localhost:30001"); err == nil {
		t.Error("newAuthHandler(localhost:30001) accepted a host name; nginx needs an IP")
	}
}

func TestLoopbackOnly(t *testing.T) {
	for _, a := range []string{"10.0.0.1:143", "192.168.1.1:143", "8.8.8.8:143", "[2001:db8::1]:143", "example.com:143"} {
		if err := checkLoopback(a); err == nil {
			t.Errorf("checkLoopback(%q) = nil, want an error", a)
		}
		if _, err := parseTarget("x=" + a); err == nil {
			t.Errorf("parseTarget(x=%s) accepted a non-loopback address", a)
		}
	}
	for _, a := range []string{"127.0.0.1:143", "127.0.0.2:143", "[::1]:143", "localhost:143"} {
		if err := checkLoopback(a); err != nil {
			t.Errorf("checkLoopback(%q) = %v, want nil", a, err)
		}
	}
	tg, err := parseTarget("mailgate=127.0.0.1:993,tls")
	if err != nil || !tg.TLS || tg.Name != "mailgate" || tg.Variant() != "tls" {
		t.Errorf("parseTarget = %+v, %v", tg, err)
	}
}

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{"1GiB": 1 << 30, "8MiB": 8 << 20, "64KiB": 64 << 10, "3M": 3 << 20, "100": 100} {
		if got, err := parseSize(in); err != nil || got != want {
			t.Errorf("parseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	if _, err := parseSize("lots"); err == nil {
		t.Error("parseSize(lots) = nil error")
	}
}

// startMailgate runs mailgate's proxy core in-process in front of the bench
// backend: a plain and an implicit-TLS IMAP listener and the admin API.
func startMailgate(t *testing.T, backend string, cert tls.Certificate) (plain, tlsAddr, admin string) {
	t.Helper()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	reg := accounting.New(accounting.Options{})
	srv := proxy.NewServer(reg, log)
	t.Cleanup(func() { srv.Close() })
	be := proxy.Backend{Address: backend, TLS: "none", ClientAddress: "none", DialTimeout: 5 * time.Second}
	l1, err := srv.Listen(proxy.ListenerOptions{Name: "imap", Address: "127.0.0.1:0", Handler: imap.New(imap.Options{}),
		TLS: "none", IdleTimeout: time.Hour, Backend: be})
	if err != nil {
		t.Fatal(err)
	}
	l2, err := srv.Listen(proxy.ListenerOptions{Name: "imaps", Address: "127.0.0.1:0", Handler: imap.New(imap.Options{}),
		TLS: "implicit", TLSConfig: proxy.ServerTLSConfig([]tls.Certificate{cert}), IdleTimeout: time.Hour, Backend: be})
	if err != nil {
		t.Fatal(err)
	}
	api, err := adminapi.New(adminapi.Options{Registry: reg, Token: "bench-token", Logger: log, Node: "test"})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(api)
	t.Cleanup(hs.Close)
	return l1.Addr().String(), l2.Addr().String(), hs.URL
}

// TestScenarios runs every scenario, small, against the backend directly and
// through an in-process mailgate, plain and TLS, and checks each produced
// its figures without an error. The figures themselves mean little here (one
// process plays every part, under the race detector in CI).
func TestScenarios(t *testing.T) {
	backend, backendTLS, cert := startBackend(t)
	mgPlain, mgTLS, adminURL := startMailgate(t, backend, cert)
	admin, err := newAdminClient(adminURL, "bench-token")
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	out := newEmitter(&buf)
	c := &runConfig{
		Scenarios: []string{"throughput", "login", "idle"},
		Targets: []Target{
			{Name: "direct", Addr: backend}, {Name: "direct", Addr: backendTLS, TLS: true},
			{Name: "mailgate", Addr: mgPlain}, {Name: "mailgate", Addr: mgTLS, TLS: true},
		},
		Rounds: 2, Rotate: true,
		Size: 3 << 20, Warmup: 256 << 10,
		Logins: 20, LoginWarmup: 2, Concurrency: 4, Duration: 200 * time.Millisecond,
		IdleConns: 20, Users: 5, PreLogin: true, DialConcurrency: 4, SettleMin: 100 * time.Millisecond, SettleMax: 2 * time.Second, SettleInterval: 50 * time.Millisecond,
		PIDs:   map[string][]int{"mailgate": {os.Getpid()}},
		Admins: map[string]*adminClient{"mailgate": admin},
		Client: clientOptions{Source: netip.MustParseAddr("127.0.0.1")},
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	runAll(ctx, c, out)
	if out.anyFailed() {
		t.Fatalf("some measurements failed:\n%s", buf.String())
	}
	rs := out.results()
	count := map[string]int{}
	for _, r := range rs {
		count[r.Scenario+" "+r.Metric+" "+r.Target+"/"+r.Variant]++
		if r.Metric == "download_mibps" && r.Value <= 0 {
			t.Errorf("%+v: no throughput", r)
		}
		if r.Metric == "goroutines" && r.Extra["live_imap"].(int) < 20 {
			t.Errorf("%+v: the registry did not count the held connections", r)
		}
	}
	for _, want := range []string{
		"throughput download_mibps direct/plain", "throughput upload_mibps mailgate/tls",
		"throughput proxy_cpu_download_ms_per_gib mailgate/plain",
		"login login_p50_ms direct/tls", "login login_p99_ms mailgate/plain", "login login_rate mailgate/tls",
		"idle rss_per_conn_kib mailgate/plain", "idle rss_per_conn_kib mailgate/tls", "idle goroutines mailgate/tls",
		"idle rss_per_user_kib mailgate/plain",
	} {
		if count[want] != 2 {
			t.Errorf("%s: %d results, want one per round (2)", want, count[want])
		}
	}
	if count["idle rss_per_conn_kib direct/plain"] != 0 {
		t.Error("idle measured direct, which has no proxy process")
	}

	// The report reads what run wrote.
	back, err := readResults(&buf)
	if err != nil || len(back) != len(rs) {
		t.Fatalf("readResults: %d results, %v; want %d", len(back), err, len(rs))
	}
	var rep bytes.Buffer
	if failed, _ := writeReport(&rep, back, nil); failed != 0 {
		t.Errorf("report counted %d failures", failed)
	}
	if !strings.Contains(rep.String(), "| relay download, MiB/s ↑ | plain |") {
		t.Errorf("report has no download row:\n%s", rep.String())
	}
}

func TestReport(t *testing.T) {
	var rs []Result
	add := func(target, variant, metric string, v ...float64) {
		for i, x := range v {
			rs = append(rs, Result{Round: i + 1, Scenario: scenarioOf(metric), Target: target, Variant: variant, Metric: metric, Value: x})
		}
	}
	add("haproxy", "plain", "download_mibps", 100, 110, 90)
	add("mailgate", "plain", "download_mibps", 150, 120, 300) // median 150: 1.50x
	add("haproxy", "tls", "upload_mibps", 100)
	add("mailgate", "tls", "upload_mibps", 80) // 0.80x: short by 20%
	add("haproxy", "plain", "login_p50_ms", 1.0)
	add("mailgate", "plain", "login_p50_ms", 0.5)
	add("mailgate", "plain", "rss_per_conn_kib", 2.5)
	add("mailgate", "tls", "rss_per_conn_kib", 15)
	rs = append(rs, Result{Round: 1, Scenario: "login", Target: "nginx", Variant: "tls", Metric: "login_rate", Error: "boom"})
	gb, err := parseGoBench(strings.NewReader("goos: linux\nBenchmarkSnapshot100k-2   \t      40\t  31000000 ns/op\t 1200 B/op\t 3 allocs/op\nBenchmarkSnapshot100k-2 50 29000000 ns/op\nPASS\n"))
	if err != nil || len(gb) != 1 || len(gb[0].nsPerOp) != 2 {
		t.Fatalf("parseGoBench = %+v, %v", gb, err)
	}
	var w bytes.Buffer
	failed, missed := writeReport(&w, rs, gb)
	s := w.String()
	for _, want := range []string{
		"| relay download, MiB/s ↑ | plain | 150 | 100 | 1.50x |",
		"**MET** relay throughput plain, download ≥ 1.4x HAProxy: mailgate 150 vs HAProxy 100 = 1.50x",
		"**MISSED** relay throughput with client TLS, upload ≥ 1.0x HAProxy: mailgate 80.0 vs HAProxy 100 = 0.80x (target ≥ 1.0x), short by 20%",
		"**MET** login p50 at c=1 ≤ HAProxy's",
		"**MET** RSS per idle authenticated connection, plain ≤ 3 KiB",
		"**MISSED** RSS per idle authenticated connection, tls ≤ 12 KiB: mailgate 15.00 KiB, over by 3.00 KiB (25%)",
		"**MET** admin snapshot of 100 000 live connections < 50 ms: BenchmarkSnapshot100k 30.0ms",
		"not measured: login rate at c=8",
		"round 1, login, nginx/tls, login_rate: boom",
	} {
		if !strings.Contains(s, want) {
			t.Errorf("report lacks %q:\n%s", want, s)
		}
	}
	if failed != 1 || missed != 2 {
		t.Errorf("failed, missed = %d, %d; want 1, 2", failed, missed)
	}
}

func scenarioOf(metric string) string {
	switch {
	case strings.HasSuffix(metric, "mibps"):
		return "throughput"
	case strings.HasPrefix(metric, "login"):
		return "login"
	}
	return "idle"
}

func TestOrderRotates(t *testing.T) {
	c := &runConfig{Rotate: true, Targets: []Target{{Name: "a"}, {Name: "a", TLS: true}, {Name: "b"}, {Name: "c"}}}
	names := func(ts []Target) string {
		var s []string
		for _, t := range ts {
			s = append(s, t.String())
		}
		return strings.Join(s, " ")
	}
	if got := names(c.order(1)); got != "a/plain a/tls b/plain c/plain" {
		t.Errorf("round 1: %s", got)
	}
	if got := names(c.order(2)); got != "b/plain c/plain a/plain a/tls" {
		t.Errorf("round 2: %s", got)
	}
	if got := names(c.order(4)); got != "a/plain a/tls b/plain c/plain" {
		t.Errorf("round 4: %s", got)
	}
}
