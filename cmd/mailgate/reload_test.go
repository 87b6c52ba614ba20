package main

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mailgate/mailgate/accounting"
	"github.com/mailgate/mailgate/internal/netx"
	"github.com/mailgate/mailgate/protocols/protocoltest"
)

// writeCert writes a self-signed certificate for name and its key as PEM
// files in dir, and returns their paths.
func writeCert(t *testing.T, dir, name string) (certFile, keyFile string) {
	t.Helper()
	certFile, keyFile, err := netx.WriteSelfSigned(dir, name)
	if err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

// imapBackend greets and answers every tagged command with OK.
func imapBackend(t *testing.T) string {
	t.Helper()
	return protocoltest.Serve(t, func(c net.Conn) {
		defer c.Close()
		fmt.Fprintf(c, "* OK [CAPABILITY IMAP4rev1] ready\r\n")
		r := bufio.NewReader(c)
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				return
			}
			tag, _, _ := strings.Cut(line, " ")
			fmt.Fprintf(c, "%s OK done\r\n", tag)
		}
	})
}

// reloadRig is a mailgate started from a config file with one implicit-TLS
// IMAP listener.
type reloadRig struct {
	t       *testing.T
	dir     string
	path    string
	backend string
	a       *app
	logs    *protocoltest.SyncBuffer
	addr    string // the imaps listener
	admin   string // the admin API
	token   string // written by write
}

func (r *reloadRig) write(certName, level string, perUser, maxConns int) {
	r.t.Helper()
	cert, key := writeCert(r.t, r.dir, certName)
	y := fmt.Sprintf(`node: reload
log_level: %s
admin:
  listen: 127.0.0.1:0
  token: %s
certificates:
  - cert: %s
    key: %s
limits:
  per_user:
    imap: %d
listeners:
  - name: imaps
    protocol: imap
    listen: 127.0.0.1:0
    tls: implicit
    max_connections: %d
    backend:
      address: %s
`, level, r.token, cert, key, perUser, maxConns, r.backend)
	if err := os.WriteFile(r.path, []byte(y), 0o600); err != nil {
		r.t.Fatal(err)
	}
}

func newReloadRig(t *testing.T) *reloadRig {
	dir := t.TempDir()
	r := &reloadRig{t: t, dir: dir, path: filepath.Join(dir, "mailgate.yaml"), backend: imapBackend(t),
		logs: &protocoltest.SyncBuffer{}, token: "first-token"}
	r.write("one.test", "info", 1, 100)
	a := startFile(t, r.path, r.logs)
	r.a = a
	for _, b := range a.bound {
		switch b.name {
		case "imaps":
			r.addr = b.addr
		case "admin":
			r.admin = b.addr
		}
	}
	return r
}

// startFile starts mailgate from the config file at path, as serve does,
// logging to logs at the file's log_level (a reload may change it); it is
// shut down at the end of the test.
func startFile(t *testing.T, path string, logs io.Writer) *app {
	t.Helper()
	cfg, _, err := loadConfigFlag("test", []string{"-config", path})
	if err != nil {
		t.Fatal(err)
	}
	level := new(slog.LevelVar)
	setLevel(level, cfg.LogLevel)
	a, err := start(cfg, slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: level})))
	if err != nil {
		t.Fatal(err)
	}
	a.level, a.path = level, path
	t.Cleanup(func() { a.shutdown(time.Second) })
	return a
}

// served returns the name on the certificate a new client is given.
func (r *reloadRig) served() string {
	r.t.Helper()
	c, err := tls.Dial("tcp", r.addr, &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		r.t.Fatal(err)
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0].DNSNames[0]
}

// apiStatus is the admin API's answer to a request with token.
func (r *reloadRig) apiStatus(token string) int {
	r.t.Helper()
	req, _ := http.NewRequest("GET", "http://"+r.admin+"/api/v1/connections/summary", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		r.t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// session opens a TLS client session and reads the greeting.
func (r *reloadRig) session() (*tls.Conn, *bufio.Reader) {
	r.t.Helper()
	c, err := tls.Dial("tcp", r.addr, &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		r.t.Fatal(err)
	}
	r.t.Cleanup(func() { c.Close() })
	br := bufio.NewReader(c)
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if line, err := br.ReadString('\n'); err != nil || !strings.HasPrefix(line, "* OK") {
		r.t.Fatalf("greeting %q, %v", line, err)
	}
	return c, br
}

func roundTrip(t *testing.T, c *tls.Conn, br *bufio.Reader, tag string) {
	t.Helper()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprintf(c, "%s NOOP\r\n", tag)
	if line, err := br.ReadString('\n'); err != nil || line != tag+" OK done\r\n" {
		t.Fatalf("NOOP answered %q, %v", line, err)
	}
}

// wantApplied checks the served certificate, what a second login of one
// user is told, and the log level.
func (r *reloadRig) wantApplied(when, cert, secondLogin string, level slog.Level) {
	r.t.Helper()
	if got := r.served(); got != cert {
		r.t.Fatalf("%s: served %q, want %s", when, got, cert)
	}
	if d := checkCap(r.a.reg); d != secondLogin {
		r.t.Fatalf("%s: second login of a user %q, want %q", when, d, secondLogin)
	}
	if got := r.a.level.Level(); got != level {
		r.t.Fatalf("%s: log level %v, want %v", when, got, level)
	}
}

// checkCap reports what a second login of one user is told (the first one
// being in).
func checkCap(reg *accounting.Registry) string {
	in := reg.Register(accounting.ConnInfo{Protocol: "imap", Client: netip.MustParseAddrPort("192.0.2.1:1")})
	in.Authenticated("cap@example.com", "LOGIN")
	defer in.Close()
	next := reg.Register(accounting.ConnInfo{Protocol: "imap", Client: netip.MustParseAddrPort("192.0.2.2:1")})
	defer next.Close()
	return next.CheckLogin("cap@example.com")
}

func TestReloadAppliesWithoutDroppingSessions(t *testing.T) {
	r := newReloadRig(t)
	if got := r.served(); got != "one.test" {
		t.Fatalf("served %q, want one.test", got)
	}
	if d := checkCap(r.a.reg); d != accounting.DenyLimit {
		t.Fatalf("per_user imap 1: second login %q, want limit", d)
	}
	old, oldR := r.session()
	if got := r.apiStatus("first-token"); got != http.StatusOK {
		t.Fatalf("admin API with the first token: %d", got)
	}

	r.token = "rotated-token"
	r.write("two.test", "debug", 5, 200)
	if _, err := r.a.reload(r.path); err != nil {
		t.Fatal(err)
	}
	r.wantApplied("after the reload", "two.test", accounting.DenyNone, slog.LevelDebug)
	roundTrip(t, old, oldR, "a1") // the session from before the reload lives on
	if got := r.apiStatus("first-token"); got != http.StatusUnauthorized {
		t.Fatalf("admin API with the old token after rotation: %d, want 401", got)
	}
	if got := r.apiStatus("rotated-token"); got != http.StatusOK {
		t.Fatalf("admin API with the rotated token: %d", got)
	}
	// A changed listener is applied in place (issue 16): new sessions get
	// max_connections 200, the held session is untouched.
	if got := r.a.listeners["imaps"].Options().MaxConnections; got != 200 || !strings.Contains(r.logs.String(), `changed="listeners: ~imaps"`) {
		t.Fatalf("imaps max_connections after the reload = %d, want 200 and the change logged:\n%s", got, r.logs.String())
	}

	// A file that does not load changes nothing.
	os.WriteFile(r.path, []byte("listeners: [\n"), 0o600)
	if _, err := r.a.reload(r.path); err == nil {
		t.Fatal("reload of broken YAML succeeded")
	}
	r.write("three.test", "warn", 1, 200)
	os.Remove(filepath.Join(r.dir, "three.test.key"))
	if _, err := r.a.reload(r.path); err == nil {
		t.Fatal("reload with a missing key file succeeded")
	}
	r.wantApplied("after failed reloads (the last good one stays)", "two.test", accounting.DenyNone, slog.LevelDebug)
	roundTrip(t, old, oldR, "a2")
}

// waitInBackground runs wait(path) on its own goroutine, the signals caught
// by the test too (so that one that arrives after wait has returned cannot
// end the test binary), and returns a check that wait ends without error
// within timeout (else the test fails with what).
func (r *reloadRig) waitInBackground(path string) (ended func(timeout time.Duration, what string)) {
	guard := make(chan os.Signal, 16)
	signal.Notify(guard, syscall.SIGHUP, syscall.SIGTERM)
	r.t.Cleanup(func() { signal.Stop(guard) })
	done := make(chan error, 1)
	sigs := notifySignals()
	go func() { done <- r.a.wait(path, sigs) }()
	return func(timeout time.Duration, what string) {
		r.t.Helper()
		select {
		case err := <-done:
			if err != nil {
				r.t.Fatalf("wait after SIGTERM: %v", err)
			}
		case <-time.After(timeout):
			r.t.Fatal(what)
		}
	}
}

// SIGHUP reloads; SIGTERM still drains and ends wait.
func TestSIGHUPReloads(t *testing.T) {
	r := newReloadRig(t)
	ended := r.waitInBackground(r.path)

	r.write("four.test", "info", 1, 100)
	deadline := time.Now().Add(10 * time.Second)
	for r.served() != "four.test" {
		if time.Now().After(deadline) {
			t.Fatal("SIGHUP did not reload the certificate within 10 s")
		}
		syscall.Kill(os.Getpid(), syscall.SIGHUP)
		time.Sleep(50 * time.Millisecond)
	}
	syscall.Kill(os.Getpid(), syscall.SIGTERM)
	ended(10*time.Second, "SIGTERM did not end wait")
}

// A SIGTERM sent while a reload runs and another SIGHUP waits is not lost
// behind them. The config path is a FIFO, so that the reload blocks until
// the test feeds it.
func TestSIGTERMNotLostBehindSIGHUP(t *testing.T) {
	r := newReloadRig(t)
	content, err := os.ReadFile(r.path)
	if err != nil {
		t.Fatal(err)
	}
	fifo := filepath.Join(r.dir, "fifo.yaml")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	ended := r.waitInBackground(fifo)
	syscall.Kill(os.Getpid(), syscall.SIGHUP) // the reload blocks on the FIFO
	time.Sleep(200 * time.Millisecond)
	syscall.Kill(os.Getpid(), syscall.SIGHUP) // waits in its channel
	time.Sleep(100 * time.Millisecond)
	syscall.Kill(os.Getpid(), syscall.SIGTERM)
	time.Sleep(100 * time.Millisecond)
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		// Feed each reader of the FIFO (one per reload that runs) once,
		// until the test ends: an open for writing fails (ENXIO) while no
		// reload has it open, and a pause after each feed lets the reader
		// see its EOF before the next feed.
		for {
			select {
			case <-stop:
				return
			default:
			}
			f, err := os.OpenFile(fifo, os.O_WRONLY|syscall.O_NONBLOCK, 0)
			if err != nil {
				time.Sleep(10 * time.Millisecond)
				continue
			}
			f.Write(content)
			f.Close()
			time.Sleep(100 * time.Millisecond)
		}
	}()
	ended(5*time.Second, "the SIGTERM sent during a reload was lost")
}
