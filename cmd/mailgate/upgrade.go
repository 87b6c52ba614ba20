package main

// Binary upgrade without a refused connection (docs/architecture.md §8.4).
//
// The running process (the parent) starts its binary again (the path it
// was started from, which now holds the new build) with every listening
// socket passed as an extra file (internal/netx: MAILGATE_LISTEN_FDS) and
// one end of a socket pair, the link, named by MAILGATE_UPGRADE_FD. On the
// link, one JSON message per line:
//
//	child -> parent  {"t":"store"}   about to open the state file: release it
//	parent -> child  {"t":"released"}
//	child -> parent  {"t":"ready"}   listening and serving
//	parent -> child  {"t":"logins","logins":[...]}  logins the parent saw
//	                 after it released the file, for the child to write
//
// The parent accepts until the child is ready (both processes hold the same
// listening sockets, so a connect in between is accepted by one of them,
// never refused), then stops accepting and drains: its sessions go on until
// they end or drain_timeout, then get the protocol's goodbye spread over
// drain_spread, and it exits. If the child dies or is not ready within a
// minute, the parent takes its state file back and serves on.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/mailgate/mailgate/accounting"
	"github.com/mailgate/mailgate/adminapi"
	"github.com/mailgate/mailgate/cluster"
	"github.com/mailgate/mailgate/internal/netx"
)

const (
	envUpgradeFD = "MAILGATE_UPGRADE_FD"
	// upgradeReadyTimeout bounds how long the parent waits for the child.
	upgradeReadyTimeout = time.Minute
)

type linkMsg struct {
	T       string                   `json:"t"`
	PID     int                      `json:"pid,omitempty"`
	Version string                   `json:"version,omitempty"`
	NextID  uint64                   `json:"next_id,omitempty"` // released: the new process's ids start here
	Logins  []accounting.LoginRecord `json:"logins,omitempty"`
	Err     string                   `json:"err,omitempty"`
	// A request of the new process (req) and its answer (rep): a view's
	// part or an action on the old process's sessions (cluster.Answer),
	// or "apply", a policy change.
	ID      uint64          `json:"id,omitempty"`
	Op      string          `json:"op,omitempty"`
	Args    json.RawMessage `json:"args,omitempty"`
	Data    []byte          `json:"data,omitempty"`
	Dropped int             `json:"dropped,omitempty"`
}

// link is one end of the parent-child socket pair.
type link struct {
	c   net.Conn
	mu  sync.Mutex
	enc *json.Encoder
	dec *json.Decoder
	old linkMsg // child side: the old process's "released" (pid, version, next id)
}

func newLink(c net.Conn) *link {
	return &link{c: c, enc: json.NewEncoder(c), dec: json.NewDecoder(bufio.NewReader(c))}
}

func (l *link) send(m linkMsg) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.c.SetWriteDeadline(time.Now().Add(10 * time.Second))
	return l.enc.Encode(m)
}

func (l *link) recv(deadline time.Time) (linkMsg, error) {
	var m linkMsg
	l.c.SetReadDeadline(deadline)
	err := l.dec.Decode(&m)
	return m, err
}

// upgradeState is what an app knows of upgrades: its own binary, the link
// to its parent when it is the new process of one, and whether it drains.
type upgradeState struct {
	exe      string   // the binary, resolved at start
	args     []string // its arguments
	mu       sync.Mutex
	parent   *link       // the link to the old process (child side), until it closes
	old      *oldProcess // that process as a peer of the views (nil in a cluster)
	draining bool        // this process handed over and drains
	drained  chan bool   // closed when the drain ended: the process exits
}

func newUpgradeState() *upgradeState {
	exe, err := os.Executable()
	if err == nil {
		if p, err2 := filepath.EvalSymlinks(exe); err2 == nil {
			exe = p
		}
	}
	if len(os.Args) > 0 && filepath.IsAbs(os.Args[0]) {
		exe = os.Args[0] // the path, not the inode: after the upgrade it holds the new build
	}
	return &upgradeState{exe: exe, args: append([]string(nil), os.Args[1:]...), drained: make(chan bool)}
}

// parentLink is the link to the old process when this one was started by
// an upgrade (nil otherwise).
func parentLink() *link {
	v := os.Getenv(envUpgradeFD)
	if v == "" {
		return nil
	}
	os.Unsetenv(envUpgradeFD)
	fd, err := strconv.Atoi(v)
	if err != nil {
		return nil
	}
	f := os.NewFile(uintptr(fd), "upgrade link")
	syscall.CloseOnExec(fd)
	c, err := net.FileConn(f)
	f.Close()
	if err != nil {
		return nil
	}
	return newLink(c)
}

// openStoreHandOver opens the state file; as the new process of an upgrade
// it first asks the old one to release it.
func openStoreHandOver(l *link, path string, maxHistory int) (*accounting.Store, error) {
	if l == nil {
		return accounting.OpenStore(path, maxHistory)
	}
	if err := l.send(linkMsg{T: "store", PID: os.Getpid()}); err != nil {
		return nil, fmt.Errorf("upgrade: ask the old process for the state file: %w", err)
	}
	m, err := l.recv(time.Now().Add(30 * time.Second))
	if err != nil || m.T != "released" {
		return nil, fmt.Errorf("upgrade: the old process did not release the state file: %v %s", err, m.Err)
	}
	l.old = m
	return accounting.OpenStoreWait(path, maxHistory, 30*time.Second)
}

// oldProcess is the old process of an upgrade as the new one's views see
// it while it drains: a peer answering over the link (cluster.Peers).
type oldProcess struct {
	a       *app
	l       *link
	name    string // in the rows: "<node> (draining, pid N)"
	pid     int
	version string
	nextID  atomic.Uint64
	mu      sync.Mutex
	waiting map[uint64]chan linkMsg
	gone    atomic.Bool
}

func (o *oldProcess) Name() string { return o.a.cfg.Node }

func (o *oldProcess) request(ctx context.Context, op string, args any, wait time.Duration) (linkMsg, error) {
	if o.gone.Load() {
		return linkMsg{}, errors.New("the old process is gone")
	}
	raw, err := json.Marshal(args)
	if err != nil {
		return linkMsg{}, err
	}
	id := o.nextID.Add(1)
	ch := make(chan linkMsg, 1)
	o.mu.Lock()
	o.waiting[id] = ch
	o.mu.Unlock()
	defer func() {
		o.mu.Lock()
		delete(o.waiting, id)
		o.mu.Unlock()
	}()
	if err := o.l.send(linkMsg{T: "req", ID: id, Op: op, Args: raw}); err != nil {
		return linkMsg{}, err
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case m := <-ch:
		if m.Err != "" {
			return m, errors.New(m.Err)
		}
		return m, nil
	case <-t.C:
		return linkMsg{}, errors.New("the old process did not answer")
	case <-ctx.Done():
		return linkMsg{}, ctx.Err()
	}
}

// Ask is cluster.Peers: the old process's part, if it still runs.
func (o *oldProcess) Ask(ctx context.Context, op string, args any, node string, wait time.Duration) (cluster.Answers, error) {
	ans := cluster.Answers{Replies: map[string]cluster.Reply{}}
	if o.gone.Load() || (node != "" && node != o.name) {
		return ans, nil
	}
	m, err := o.request(ctx, op, args, wait)
	if err != nil {
		ans.Missing = []string{o.name}
		return ans, nil
	}
	ans.Replies[o.name] = cluster.Reply{Node: o.name, Dropped: m.Dropped, Data: m.Data}
	return ans, nil
}

// Commit is cluster.Peers: the change is made here (in the state file,
// which this process owns now), then applied to the old process's
// sessions.
func (o *oldProcess) Commit(ctx context.Context, ch accounting.Change) (cluster.Result, error) {
	n, err := o.a.reg.Change(ch)
	res := cluster.Result{Dropped: n, ByNode: map[string]int{o.Name(): n}}
	if err != nil {
		return res, err
	}
	if o.gone.Load() {
		return res, nil
	}
	m, err := o.request(ctx, "apply", ch, time.Second)
	if err != nil {
		res.Missing = []string{o.name}
		return res, nil
	}
	res.ByNode[o.name] = m.Dropped
	res.Dropped += m.Dropped
	return res, nil
}

// node is the old process in the node list.
func (o *oldProcess) node() adminapi.Node {
	n := adminapi.Node{Name: o.name, PID: o.pid, Version: o.version, State: "draining"}
	if o.gone.Load() {
		n.State = "gone"
		return n
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if m, err := o.request(ctx, "summary", nil, time.Second); err == nil {
		var sum map[string]int
		json.Unmarshal(m.Data, &sum)
		n.Connections = sum["all"]
	}
	return n
}

// childReady tells the old process that this one serves, and takes the
// logins the old one records while it drains.
func (a *app) childReady() {
	l := a.up.parent
	if l == nil {
		return
	}
	netx.CloseInherited() // the sockets the new config does not listen on
	if err := l.send(linkMsg{T: "ready", PID: os.Getpid()}); err != nil {
		a.log.Error("upgrade: could not tell the old process we are ready", "err", err)
		return
	}
	o := a.up.old
	go func() {
		defer l.c.Close()
		for {
			m, err := l.recv(time.Time{})
			if err != nil {
				if o != nil {
					o.gone.Store(true)
				}
				a.log.Info("upgrade: the old process is gone")
				return
			}
			switch m.T {
			case "logins":
				a.reg.AdoptLogins(m.Logins)
			case "rep":
				if o == nil {
					continue
				}
				o.mu.Lock()
				ch := o.waiting[m.ID]
				o.mu.Unlock()
				if ch != nil {
					ch <- m
				}
			}
		}
	}()
}

// answerNew serves the new process's requests about this process's
// sessions while it drains.
func (a *app) answerNew(l *link, name string) {
	for {
		m, err := l.recv(time.Time{})
		if err != nil {
			return
		}
		if m.T != "req" {
			continue
		}
		go func() {
			rep := linkMsg{T: "rep", ID: m.ID}
			if m.Op == "apply" {
				var ch accounting.Change
				if err := json.Unmarshal(m.Args, &ch); err != nil {
					rep.Err = err.Error()
				} else if rep.Dropped, err = a.reg.Apply(ch); err != nil {
					rep.Err = err.Error()
				}
			} else {
				r := cluster.Answer(a.reg, name, m.Op, m.Args)
				rep.Data, rep.Dropped, rep.Err = r.Data, r.Dropped, r.Err
			}
			l.send(rep)
		}()
	}
}

// sockets are every listening socket of this process, to pass on.
func (a *app) sockets() ([]netx.Socket, error) {
	var out []netx.Socket
	for _, l := range a.listeners {
		s, err := l.Socket()
		if err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	if a.httpSrv != nil {
		ss, err := a.httpSrv.Sockets()
		if err != nil {
			return nil, err
		}
		out = append(out, ss...)
	}
	if a.adminLn != nil {
		s, err := netx.SocketOf("tcp", a.cfg.Admin.Listen, a.adminLn)
		if err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, nil
}

// upgrade starts the binary again on this process's sockets and, once the
// new process is ready, drains. It returns when the new process is ready,
// or with the reason it is not (this process then serves on).
func (a *app) upgrade() (adminapi.UpgradeResult, error) {
	u := a.up
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.draining {
		return adminapi.UpgradeResult{}, errors.New("this process already handed over and drains")
	}
	socks, err := a.sockets()
	if err != nil {
		return adminapi.UpgradeResult{}, fmt.Errorf("upgrade: %w", err)
	}
	defer func() {
		for _, s := range socks {
			s.File.Close()
		}
	}()
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM, 0)
	if err != nil {
		return adminapi.UpgradeResult{}, fmt.Errorf("upgrade: socketpair: %w", err)
	}
	syscall.CloseOnExec(fds[0]) // the child gets fds[1] through ExtraFiles only
	syscall.CloseOnExec(fds[1])
	mine, theirs := os.NewFile(uintptr(fds[0]), "upgrade link"), os.NewFile(uintptr(fds[1]), "upgrade link (child)")
	defer theirs.Close()
	conn, err := net.FileConn(mine)
	mine.Close()
	if err != nil {
		return adminapi.UpgradeResult{}, fmt.Errorf("upgrade: %w", err)
	}
	l := newLink(conn)
	env, err := netx.ChildEnv(socks)
	if err != nil {
		conn.Close()
		return adminapi.UpgradeResult{}, err
	}
	cmd := exec.Command(u.exe, u.args...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = nil, os.Stdout, os.Stderr
	for _, s := range socks {
		cmd.ExtraFiles = append(cmd.ExtraFiles, s.File)
	}
	cmd.ExtraFiles = append(cmd.ExtraFiles, theirs)
	cmd.Env = append(os.Environ(), env, envUpgradeFD+"="+strconv.Itoa(3+len(socks)))
	// The new process outlives this one: its own session, not our signals.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		conn.Close()
		return adminapi.UpgradeResult{}, fmt.Errorf("upgrade: start %s: %w", u.exe, err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	a.log.Info("upgrade: new process started", "binary", u.exe, "pid", cmd.Process.Pid)
	released, left := false, false
	fail := func(err error) (adminapi.UpgradeResult, error) {
		cmd.Process.Kill()
		conn.Close()
		if released {
			if rerr := a.store.Reopen(10 * time.Second); rerr != nil {
				a.log.Error("upgrade: the state file could not be taken back; changes are not persisted until a restart", "err", rerr)
			}
		}
		if left {
			c, jerr := joinCluster(a, a.cfg)
			if jerr != nil {
				a.log.Error("upgrade: could not join the cluster again; serving as a single node", "err", jerr)
				a.cluster = nil
			} else {
				a.cluster = c
			}
		}
		a.log.Error("upgrade failed; serving on", "err", err)
		return adminapi.UpgradeResult{}, fmt.Errorf("upgrade: %w", err)
	}
	deadline := time.Now().Add(upgradeReadyTimeout)
	msgs := make(chan linkMsg)
	errs := make(chan error, 1)
	go func() {
		for {
			m, err := l.recv(deadline)
			if err != nil {
				errs <- err
				return
			}
			msgs <- m
			if m.T == "ready" {
				return
			}
		}
	}()
	for {
		select {
		case err := <-exited:
			return fail(fmt.Errorf("the new process exited before it was ready: %v", err))
		case err := <-errs:
			return fail(fmt.Errorf("the new process did not get ready: %v", err))
		case m := <-msgs:
			switch m.T {
			case "store":
				// In a cluster the new process takes this node's name: this
				// one leaves (its sessions stay; the cluster no longer
				// reaches them) and joins again if the upgrade fails.
				if a.cluster != nil && !left {
					a.cluster.Close()
					left = true
				}
				if a.store != nil && !released {
					if err := a.store.Release(); err != nil {
						return fail(fmt.Errorf("release the state file: %v", err))
					}
					released = true
				}
				if err := l.send(linkMsg{T: "released", PID: os.Getpid(), Version: versionString(), NextID: a.reg.LastID() + 1}); err != nil {
					return fail(err)
				}
			case "ready":
				u.draining = true
				go a.drainAfterUpgrade(l, exited)
				return adminapi.UpgradeResult{OldPID: os.Getpid(), NewPID: cmd.Process.Pid, Binary: u.exe,
					DrainTimeout: a.cfg.DrainTimeout.D().String(), DrainSpread: a.cfg.DrainSpread.D().String()}, nil
			}
		}
	}
}

// drainAfterUpgrade stops accepting (the new process has the sockets),
// hands it the logins recorded since the state file was released, waits
// for the sessions to end or drain_timeout, says goodbye to the rest over
// drain_spread, and ends the process.
func (a *app) drainAfterUpgrade(l *link, exited chan error) {
	go a.answerNew(l, fmt.Sprintf("%s (draining, pid %d)", a.cfg.Node, os.Getpid()))
	a.srv.StopAccepting()
	if a.httpSrv != nil {
		a.httpSrv.StopAccepting()
	}
	if a.adminLn != nil {
		a.adminLn.Close()
	}
	if a.admin != nil {
		a.admin.SetKeepAlivesEnabled(false) // closes the idle ones: API clients reconnect to the new process
	}
	timeout, spread := a.cfg.DrainTimeout.D(), a.cfg.DrainSpread.D()
	a.log.Info("upgrade: the new process serves; draining", "sessions", a.reg.Summary()["all"],
		"drain_timeout", timeout, "drain_spread", spread)
	// No STOPPING=1: for systemd the service goes on, in the new process
	// (which sent MAINPID= and READY=1).
	handOver := func() {
		if a.store == nil {
			return
		}
		if recs := a.store.PendingLogins(); len(recs) > 0 {
			if err := l.send(linkMsg{T: "logins", Logins: recs}); err != nil {
				a.log.Warn("upgrade: logins not handed to the new process", "count", len(recs), "err", err)
			}
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	t := time.NewTicker(250 * time.Millisecond)
	for a.reg.Summary()["all"] > 0 && ctx.Err() == nil {
		select {
		case <-ctx.Done():
		case <-t.C:
			handOver()
		}
	}
	t.Stop()
	// Whatever is left gets its goodbye, spread out; the HTTP front lets
	// its requests end within the spread.
	spent, sctx := context.WithTimeout(context.Background(), 0)
	defer sctx()
	done := make(chan struct{})
	go func() {
		a.srv.Drain(spent, spread)
		close(done)
	}()
	hctx, hcancel := context.WithTimeout(context.Background(), spread+time.Second)
	defer hcancel()
	for _, f := range a.onShutdown {
		f(hctx)
	}
	<-done
	handOver()
	if a.admin != nil {
		a.admin.Shutdown(hctx)
	}
	l.c.Close()
	a.log.Info("upgrade: drained; exiting")
	close(a.up.drained)
}

// cmdUpgrade: mailgate upgrade -config FILE asks the running mailgate of
// that config (through its admin API, with its admin token) to start its
// binary again and hand over; the same as SIGUSR2, with an answer.
func cmdUpgrade(args []string) error {
	cfg, _, err := loadConfigFlag("upgrade", args)
	if err != nil {
		return err
	}
	if cfg.Admin.Listen == "" {
		return errors.New("upgrade: the config has no admin.listen; send SIGUSR2 to the process instead")
	}
	ts, err := cfg.AdminTokens()
	if err != nil {
		return err
	}
	token := ""
	for _, t := range ts {
		if t.Role == accounting.RoleAdmin && t.Secret != "" {
			token = t.Secret
			break
		}
	}
	if token == "" {
		return errors.New("upgrade: the config has no admin token in clear (token, token_file); send SIGUSR2 instead")
	}
	req, err := http.NewRequest(http.MethodPost, "http://"+cfg.Admin.Listen+"/api/v1/upgrade", nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set(adminapi.ReasonHeader, "mailgate upgrade")
	resp, err := (&http.Client{Timeout: upgradeReadyTimeout + 10*time.Second}).Do(req)
	if err != nil {
		return fmt.Errorf("upgrade: %w", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("upgrade: %s: %s", resp.Status, bytes.TrimSpace(body))
	}
	os.Stdout.Write(body)
	return nil
}
