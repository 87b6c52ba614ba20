package e2e

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"mellium.im/sasl"
	"mellium.im/xmpp"

	"github.com/mailgate/mailgate/internal/demo"
)

// idleSession is an IMAP session in IDLE through mailgate, held by the
// test without a goroutine.
type idleSession struct {
	c *net.TCPConn
	r *bufio.Reader
}

// imapIdle logs user in through addr from src and enters IDLE.
func imapIdle(addr, src, user, pass string) (*idleSession, error) {
	d := net.Dialer{Timeout: stepTimeout, LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	s := &idleSession{c: c.(*net.TCPConn), r: bufio.NewReader(c)}
	c.SetDeadline(time.Now().Add(stepTimeout))
	defer c.SetDeadline(time.Time{})
	if err := s.expect("* OK"); err != nil {
		c.Close()
		return nil, fmt.Errorf("greeting: %w", err)
	}
	fmt.Fprintf(c, "a LOGIN %s %s\r\n", user, pass)
	if err := s.expect("a OK"); err != nil {
		c.Close()
		return nil, fmt.Errorf("login: %w", err)
	}
	fmt.Fprintf(c, "b IDLE\r\n")
	if err := s.expect("+ "); err != nil {
		c.Close()
		return nil, fmt.Errorf("idle: %w", err)
	}
	return s, nil
}

// expect reads lines until one starts with prefix; a BYE or a tagged NO or
// BAD first is an error.
func (s *idleSession) expect(prefix string) error {
	for {
		line, err := s.r.ReadString('\n')
		if err != nil {
			return err
		}
		if strings.HasPrefix(line, prefix) {
			return nil
		}
		if strings.HasPrefix(line, "* BYE") || strings.Contains(line, " NO ") || strings.Contains(line, " BAD ") {
			return fmt.Errorf("%q", strings.TrimSpace(line))
		}
	}
}

// alive ends IDLE and runs a NOOP: the session still works.
func (s *idleSession) alive() error {
	s.c.SetDeadline(time.Now().Add(stepTimeout))
	defer s.c.SetDeadline(time.Time{})
	fmt.Fprintf(s.c, "DONE\r\n")
	if err := s.expect("b OK"); err != nil {
		return fmt.Errorf("DONE: %w", err)
	}
	fmt.Fprintf(s.c, "c NOOP\r\n")
	return s.expect("c OK")
}

func envInt(name string, def int) int {
	if n, err := strconv.Atoi(os.Getenv(name)); err == nil && n > 0 {
		return n
	}
	return def
}

// pidAlive reads /proc: a zombie is not alive.
func pidAlive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	f := strings.Fields(string(b))
	return len(f) > 2 && f[2] != "Z"
}

// TestUpgrade holds IMAP IDLE sessions (to Dovecot), XMPP sessions (to
// Prosody) and ActiveSync Pings, reloads with one more listener, then
// upgrades to a second build of the binary while a client opens 200
// connections a second: no held session is dropped, no connect is refused,
// the new process serves the new ones and sees the old one's sessions
// (which it can drop), and the old process exits after its last session.
// MAILGATE_UPGRADE_IDLE, _XMPP and _EAS change the numbers (500, 50, 50).
func TestUpgrade(t *testing.T) {
	d := needDovecot(t)
	c2s, _ := needProsody(t)
	nIdle, nXMPP, nEAS := envInt("MAILGATE_UPGRADE_IDLE", 500), envInt("MAILGATE_UPGRADE_XMPP", 50), envInt("MAILGATE_UPGRADE_EAS", 50)
	dir := t.TempDir()

	// The binary runs from a path of its own; the second build replaces it
	// there, as a package upgrade replaces /usr/bin/mailgate.
	bin := filepath.Join(dir, "mailgate")
	if out, err := exec.Command("cp", mailgateBin, bin).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v %s", err, out)
	}
	second := make(chan error, 1)
	go func() {
		args := []string{"build", "-ldflags", "-X main.version=e2e-second", "-o", bin + ".new"}
		if raceEnabled {
			args = append(args, "-race")
		}
		cmd := exec.Command("go", append(args, "./cmd/mailgate")...)
		cmd.Dir = ".."
		out, err := cmd.CombinedOutput()
		if err != nil {
			err = fmt.Errorf("%v: %s", err, out)
		}
		second <- err
	}()

	eas, err := demo.StartHTTPMail("127.0.0.1:0", demo.Users, demo.HTTPMailOptions{MaxHold: 5 * time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	defer eas.Close()
	cert, key := writeCert(t, dir)
	admin, imap, imap2, xmppAddr, https := freeAddr(t), freeAddr(t), freeAddr(t), freeAddr(t), freeAddr(t)
	const token = "e2e-upgrade-token"
	conf := func(extra string) string {
		return fmt.Sprintf(`node: up
log_level: info
shutdown_timeout: 5s
drain_timeout: 2m
drain_spread: 3s
state: %s
admin:
  listen: %q
  token: %q
certificates:
  - cert: %q
    key: %q
limits:
  per_user_ip: {imap: 0, xmpp: 0}
listeners:
  - name: imap
    protocol: imap
    listen: %q
    tls: none
    backend: {address: %q, client_address: proxy-v2}
  - name: xmpp
    protocol: xmpp
    listen: %q
    tls: starttls
    backend: {address: %q, client_address: none}
%shttp:
  listen: %q
  http3: false
  eas:
    backend: http://%s
`, filepath.Join(dir, "state.db"), admin, token, cert, key, imap, d.proxy, xmppAddr, c2s, extra, https, eas.Addr())
	}
	cfg := filepath.Join(dir, "mailgate.yaml")
	if err := os.WriteFile(cfg, []byte(conf("")), 0o600); err != nil {
		t.Fatal(err)
	}
	m := startMailgateBin(t, bin, admin, token, "serve", "-config", cfg)
	var newPID atomic.Int64
	t.Cleanup(func() {
		if p := int(newPID.Load()); p > 0 {
			syscall.Kill(p, syscall.SIGTERM)
			for i := 0; i < 100 && pidAlive(p); i++ {
				time.Sleep(100 * time.Millisecond)
			}
		}
	})

	// The held sessions: IMAP IDLE from 50 source addresses (Dovecot allows
	// 10 per user and address), XMPP, EAS Ping.
	users := [][2]string{{alice, alicePassword}, {bob, bobPassword}}
	idles := make([]*idleSession, nIdle)
	var wg sync.WaitGroup
	errs := make(chan error, nIdle)
	sem := make(chan struct{}, 16)
	for i := range idles {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			u := users[i%2]
			s, err := imapIdle(imap, fmt.Sprintf("127.0.1.%d", 1+i%50), u[0], u[1])
			if err != nil {
				errs <- fmt.Errorf("IDLE session %d: %w", i, err)
				return
			}
			idles[i] = s
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	defer func() {
		for _, s := range idles {
			if s != nil {
				s.c.Close()
			}
		}
	}()
	pem, _ := os.ReadFile(cert)
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	xc := xmppClient{starttls: xmppAddr, tls: &tls.Config{RootCAs: pool, ServerName: "localhost", MinVersion: tls.VersionTLS12}}
	xdone := make([]<-chan error, nXMPP)
	var xsessions []*xmpp.Session
	for i := range xdone {
		u := users[i%2]
		s, err := xc.login(t, u[0], u[1], sasl.Plain, false)
		if err != nil {
			t.Fatalf("XMPP session %d: %v", i, err)
		}
		xsessions = append(xsessions, s)
		_, xdone[i] = xmppServe(s)
	}
	pings := make(chan int, nEAS)
	for i := 0; i < nEAS; i++ {
		u := users[i%2]
		c := newEASClient(t, https, u[0], u[1], fmt.Sprintf("UPGRADE%02d", i), "iPhone", "Apple-iPhone/1", false)
		go func() {
			st, _, err := c.do(context.Background(), "Ping", 18, "&heartbeat=25")
			if err != nil {
				st = -1
				t.Logf("ping %d: %v", i, err)
			}
			pings <- st
		}()
	}
	waitFor(t, "every session held", func() bool {
		s := m.summary()
		return s["imap"] == nIdle && s["xmpp"] == nXMPP && s["eas"] == nEAS
	}, func() string { return fmt.Sprint(m.summary()) })
	pingsStarted := time.Now()

	// 200 connects a second from here until the old process handed over.
	var connects, refused, unavailable atomic.Int64
	stopLoad := make(chan struct{})
	loadDone := make(chan struct{})
	go func() {
		defer close(loadDone)
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		var lw sync.WaitGroup
		for {
			select {
			case <-stopLoad:
				lw.Wait()
				return
			case <-tick.C:
			}
			lw.Add(1)
			go func() {
				defer lw.Done()
				connects.Add(1)
				c, err := net.DialTimeout("tcp", imap, 5*time.Second)
				if err != nil {
					refused.Add(1)
					t.Logf("connect refused: %v", err)
					return
				}
				defer c.Close()
				c.SetDeadline(time.Now().Add(10 * time.Second))
				// An answer from mailgate is what counts: a "* BYE
				// [UNAVAILABLE]" is Dovecot's login processes running out
				// at this rate, not a refused connect.
				line, err := bufio.NewReader(c).ReadString('\n')
				if err != nil || !strings.HasPrefix(line, "* ") {
					refused.Add(1)
					t.Logf("connect not answered: %q %v", line, err)
				} else if !strings.HasPrefix(line, "* OK") {
					unavailable.Add(1)
				}
			}()
		}
	}()

	// A reload with one more listener: it opens now, and the upgrade hands
	// it over with the others.
	os.WriteFile(cfg, []byte(conf(fmt.Sprintf("  - name: imap2\n    protocol: imap\n    listen: %q\n    tls: none\n    backend: {address: %q, client_address: proxy-v2}\n", imap2, d.proxy))), 0o600)
	m.cmd.Process.Signal(syscall.SIGHUP)
	waitFor(t, "the reloaded listener imap2", func() bool {
		c, err := net.DialTimeout("tcp", imap2, time.Second)
		if err == nil {
			c.Close()
		}
		return err == nil
	}, func() string { return "" })

	if err := <-second; err != nil {
		t.Fatalf("second build: %v", err)
	}
	if err := os.Rename(bin+".new", bin); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second) // load runs against the old process for a while
	out, err := runCmd(t, bin, "upgrade", "-config", cfg)
	if err != nil {
		t.Fatalf("mailgate upgrade: %v\n%s", err, out)
	}
	var res struct {
		OldPID int `json:"old_pid"`
		NewPID int `json:"new_pid"`
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil || res.OldPID != m.cmd.Process.Pid || res.NewPID == 0 {
		t.Fatalf("mailgate upgrade answered %q (%v), want the old pid %d and a new one", out, err, m.cmd.Process.Pid)
	}
	newPID.Store(int64(res.NewPID))
	time.Sleep(2 * time.Second) // and against the new one
	close(stopLoad)
	<-loadDone
	if n := refused.Load(); n != 0 {
		t.Errorf("%d of %d connects during the upgrade were refused or not greeted", n, connects.Load())
	}
	t.Logf("upgrade: %d connects at 200/s across the hand-over, %d refused, %d answered * BYE (backend busy)",
		connects.Load(), refused.Load(), unavailable.Load())

	// The new process: its version, the old one draining in its node list.
	var nodes struct {
		Nodes []struct {
			Name    string `json:"name"`
			PID     int    `json:"pid"`
			Version string `json:"version"`
			State   string `json:"state"`
			Live    int    `json:"live_connections"`
		} `json:"nodes"`
	}
	m.apiJSON("GET", "/api/v1/nodes", nil, &nodes)
	if len(nodes.Nodes) != 2 || nodes.Nodes[0].PID != res.NewPID || nodes.Nodes[0].Version != "e2e-second" ||
		nodes.Nodes[1].PID != res.OldPID || nodes.Nodes[1].State != "draining" || nodes.Nodes[1].Live < nIdle {
		t.Fatalf("node list after the upgrade = %+v", nodes.Nodes)
	}
	drainName := nodes.Nodes[1].Name
	// A new login lands on the new process.
	if l := loginOnce(t, "after", imapOpts{Addr: imap2, TLS: "none", Source: "127.0.2.1", User: alice, Password: alicePassword}); !strings.HasPrefix(l, "LOGIN OK") {
		t.Fatalf("login through the reloaded listener after the upgrade: %s", l)
	}

	// Every held session is there: the old process still relays them.
	for i, s := range idles {
		if err := s.alive(); err != nil {
			t.Fatalf("IDLE session %d after the upgrade: %v", i, err)
		}
	}
	for i, ch := range xdone {
		select {
		case err := <-ch:
			t.Fatalf("XMPP session %d ended by the upgrade: %v", i, err)
		default:
		}
	}
	if wait := 25*time.Second - time.Since(pingsStarted); wait > 0 {
		time.Sleep(wait)
	}
	for i := 0; i < nEAS; i++ {
		select {
		case st := <-pings:
			if st != http.StatusOK {
				t.Fatalf("a Ping held across the upgrade ended with %d, want 200", st)
			}
		case <-time.After(stepTimeout):
			t.Fatalf("only %d of %d Pings held across the upgrade answered", i, nEAS)
		}
	}

	// The new process's API reaches the old one's sessions: one drop by
	// id, then the rest by user.
	conns := m.connectionsOn(url.Values{"protocol": {"imap"}, "node": {drainName}})
	if len(conns) != nIdle {
		t.Fatalf("the new process lists %d imap sessions on %q, want %d", len(conns), drainName, nIdle)
	}
	if st, body := m.api("DELETE", "/api/v1/connections/"+strconv.FormatUint(conns[0].ID, 10), nil); st != 200 {
		t.Fatalf("drop of a draining session through the new process: %d %s", st, body)
	}
	for _, u := range users {
		m.drop(u[0], "imap")
	}
	for _, s := range xsessions {
		xmppClose(s)
	}
	// The old process leaves after its last session.
	waitFor(t, "the old process exits", func() bool { return !pidAlive(res.OldPID) }, func() string { return "" })
	if !pidAlive(res.NewPID) {
		t.Fatal("the new process is not running")
	}
	if !strings.Contains(m.log.String(), "upgrade: drained; exiting") {
		t.Errorf("the old process's log has no drain line")
	}
}

// connectionsOn is connections with the node of each row.
func (m *mailgate) connectionsOn(q url.Values) []apiConn {
	m.t.Helper()
	var l struct {
		Connections []apiConn `json:"connections"`
	}
	m.apiJSON("GET", "/api/v1/connections?"+q.Encode(), nil, &l)
	return l.Connections
}
