package e2e

import (
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"
)

// needRedis returns the address of the redis-server scripts/redis.sh
// started and the redis-server binary (for a private Redis a test stops).
func needRedis(t *testing.T) (addr, server string) {
	t.Helper()
	v := needEnv(t, "Redis", `scripts/redis.sh start && eval "$(scripts/redis.sh env)"`, "MAILGATE_REDIS", "MAILGATE_REDIS_SERVER")
	return v[0], v[1]
}

// clusterNode is one mailgate of a test cluster.
type clusterNode struct {
	*mailgate
	name, imap, cfg string
}

// clusterConf writes a node's config: one IMAP listener in front of
// Dovecot, a state file, brute force at 3 failures, and the cluster block.
func clusterConf(t *testing.T, d dovecot, name, redisAddr, prefix, extra string) (cfg, admin, imap string) {
	t.Helper()
	dir := t.TempDir()
	cert, key := writeCert(t, dir)
	admin, imap = freeAddr(t), freeAddr(t)
	cfg = writeConfig(t, dir, admin, clusterToken, cert, key, []listenerConf{
		{Name: "imap", Listen: imap, TLS: "starttls", Backend: d.proxy, ClientAddress: "proxy-v2"},
	})
	b, err := os.ReadFile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	text := strings.Replace(string(b), "node: e2e\n", "node: "+name+"\n", 1)
	text += fmt.Sprintf(`state: %s
brute_force:
  max_failures: 3
  window: 1m
  lockout: 1m
  max_lockout: 5m
cluster:
  redis:
    addresses: [%q]
  prefix: %q
  heartbeat: 500ms
  node_ttl: 3s
%s`, filepath.Join(dir, "state.db"), redisAddr, prefix, extra)
	if err := os.WriteFile(cfg, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return cfg, admin, imap
}

const clusterToken = "e2e-cluster-token"

func startCluster(t *testing.T, d dovecot, redisAddr, prefix string, names ...string) []*clusterNode {
	t.Helper()
	var ns []*clusterNode
	for _, n := range names {
		cfg, admin, imap := clusterConf(t, d, n, redisAddr, prefix, "")
		ns = append(ns, &clusterNode{mailgate: serveConfig(t, admin, clusterToken, cfg), name: n, imap: imap, cfg: cfg})
	}
	for _, n := range ns {
		n.waitNodes(len(ns))
	}
	return ns
}

type apiNodes struct {
	Cluster  bool `json:"cluster"`
	Degraded bool `json:"degraded"`
	Nodes    []struct {
		Name  string `json:"name"`
		State string `json:"state"`
		Live  int    `json:"live_connections"`
	} `json:"nodes"`
}

func (n *clusterNode) nodes() apiNodes {
	n.t.Helper()
	var l apiNodes
	n.apiJSON("GET", "/api/v1/nodes", nil, &l)
	return l
}

// waitNodes waits until the node sees want nodes up.
func (n *clusterNode) waitNodes(want int) {
	n.t.Helper()
	var last apiNodes
	waitFor(n.t, fmt.Sprintf("%s sees %d nodes up", n.name, want), func() bool {
		last = n.nodes()
		up := 0
		for _, x := range last.Nodes {
			if x.State == "up" {
				up++
			}
		}
		return last.Cluster && up == want
	}, func() string { return fmt.Sprintf("%+v", last) })
}

// hold logs user in through node n from src and holds the session.
func (n *clusterNode) hold(t *testing.T, user, password, src string) *pyClient {
	t.Helper()
	c := startPy(t, "hold-"+n.name, imapOpts{Addr: n.imap, Source: src, User: user, Password: password, Then: "hold"})
	if l := c.expect("LOGIN "); !strings.HasPrefix(l, "LOGIN OK") {
		t.Fatalf("login of %s through %s: %s", user, n.name, l)
	}
	c.expect("HOLDING")
	return c
}

type apiNodeConn struct {
	apiConn
	Node string `json:"node"`
}

func (n *clusterNode) conns(q url.Values) []apiNodeConn {
	n.t.Helper()
	var l struct {
		Connections []apiNodeConn `json:"connections"`
	}
	n.apiJSON("GET", "/api/v1/connections?"+q.Encode(), nil, &l)
	return l.Connections
}

// TestCluster runs three mailgate nodes in front of one Dovecot, joined
// through the real redis-server: one view, drops and policy from any node,
// brute force summed over the nodes, a node killed -9, cluster import.
func TestCluster(t *testing.T) {
	d := needDovecot(t)
	redisAddr, _ := needRedis(t)
	prefix := fmt.Sprintf("e2e%d:", time.Now().UnixNano())
	ns := startCluster(t, d, redisAddr, prefix, "n1", "n2", "n3")
	n1, n2, n3 := ns[0], ns[1], ns[2]

	b2 := n2.hold(t, bob, bobPassword, "127.0.0.21")
	b3 := n3.hold(t, bob, bobPassword, "127.0.0.22")
	a1 := n1.hold(t, alice, alicePassword, "127.0.0.23")

	t.Run("one view from any node", func(t *testing.T) {
		for _, n := range ns {
			n.waitSummary("imap", 3)
		}
		conns := n1.conns(url.Values{"user": {bob}})
		var nodes []string
		for _, c := range conns {
			nodes = append(nodes, c.Node)
		}
		sort.Strings(nodes)
		if strings.Join(nodes, ",") != "n2,n3" {
			t.Fatalf("bob's connections seen from n1 are on %v, want n2,n3: %+v", nodes, conns)
		}
		if got := n2.conns(url.Values{"node": {"n3"}}); len(got) != 1 || got[0].Node != "n3" || got[0].User != bob {
			t.Fatalf("?node=n3 from n2 = %+v", got)
		}
		var rows struct {
			Users []struct {
				User        string   `json:"user"`
				Connections int      `json:"connections"`
				Nodes       []string `json:"nodes"`
			} `json:"users"`
		}
		n3.apiJSON("GET", "/api/v1/users?protocol=imap", nil, &rows)
		found := false
		for _, r := range rows.Users {
			if r.User == bob {
				found = r.Connections == 2 && strings.Join(r.Nodes, ",") == "n2,n3"
			}
		}
		if !found {
			t.Fatalf("n3's imap rows = %+v, want bob with 2 connections on n2,n3", rows.Users)
		}
	})

	t.Run("drop from another node", func(t *testing.T) {
		start := time.Now()
		var res struct {
			Dropped int            `json:"dropped"`
			Nodes   map[string]int `json:"nodes"`
		}
		n1.apiJSON("POST", "/api/v1/users/"+bob+"/drop?protocol=imap", nil, &res)
		took := time.Since(start)
		if res.Dropped != 2 || res.Nodes["n2"] != 1 || res.Nodes["n3"] != 1 {
			t.Fatalf("drop from n1 = %+v, want 2: one on n2, one on n3", res)
		}
		if took > time.Second {
			t.Errorf("the drop took %v, want at most 1s", took)
		}
		t.Logf("drop of 2 sessions on 2 other nodes answered in %v", took)
		for _, c := range []*pyClient{b2, b3} {
			c.send("noop")
			c.expect("EOF")
		}
		n1.waitSummary("imap", 1)
	})

	t.Run("policy change reaches every node", func(t *testing.T) {
		start := time.Now()
		var res struct {
			Dropped int `json:"dropped"`
		}
		n2.apiJSON("PUT", "/api/v1/users/"+alice+"/protocols/imap", map[string]any{"enabled": false}, &res)
		took := time.Since(start)
		if res.Dropped != 1 {
			t.Fatalf("disable of alice's imap on n2 dropped %d, want her session on n1", res.Dropped)
		}
		if took > time.Second {
			t.Errorf("the change took %v, want at most 1s", took)
		}
		t.Logf("disable committed, applied on 3 nodes and 1 session dropped in %v", took)
		a1.send("noop")
		a1.expect("EOF")
		for _, n := range ns {
			l := loginOnce(t, "disabled-"+n.name, imapOpts{Addr: n.imap, Source: "127.0.0.24", User: alice, Password: alicePassword})
			if !strings.HasPrefix(l, "LOGIN NO") || !strings.Contains(l, "CONTACTADMIN") {
				t.Fatalf("alice's login through %s after the disable on n2: %s", n.name, l)
			}
		}
		n3.apiJSON("PUT", "/api/v1/users/"+alice+"/protocols/imap", map[string]any{"enabled": true}, nil)
		if l := loginOnce(t, "enabled", imapOpts{Addr: n1.imap, Source: "127.0.0.24", User: alice, Password: alicePassword}); !strings.HasPrefix(l, "LOGIN OK") {
			t.Fatalf("alice's login on n1 after the enable on n3: %s", l)
		}
		// n1's audit trail shows both changes, each with the node it was
		// made through.
		var audit struct {
			Entries []struct {
				Action string `json:"action"`
				Node   string `json:"node"`
			} `json:"entries"`
		}
		n1.apiJSON("GET", "/api/v1/audit?target="+url.QueryEscape(alice), nil, &audit)
		var seen []string
		for _, e := range audit.Entries {
			seen = append(seen, e.Action+"@"+e.Node)
		}
		if strings.Join(seen, ",") != "enable_protocol@n3,disable_protocol@n2" {
			t.Fatalf("n1's audit for alice = %v, want enable_protocol@n3,disable_protocol@n2", seen)
		}
	})

	t.Run("brute force adds up over the nodes", func(t *testing.T) {
		// One wrong password on each node: three in the cluster lock the
		// IP out (max_failures 3), though no node saw more than one.
		for _, n := range ns {
			l := loginOnce(t, "wrong-"+n.name, imapOpts{Addr: n.imap, Source: "127.0.0.25", User: bob, Password: wrongPassword})
			if !strings.HasPrefix(l, "LOGIN NO") {
				t.Fatalf("wrong password through %s: %s", n.name, l)
			}
		}
		var locks struct {
			Lockouts []struct {
				Kind string `json:"kind"`
				Key  string `json:"key"`
			} `json:"lockouts"`
		}
		for _, n := range ns {
			waitFor(t, n.name+" holds the cluster's lockout of 127.0.0.25", func() bool {
				n.apiJSON("GET", "/api/v1/lockouts", nil, &locks)
				for _, l := range locks.Lockouts {
					if l.Kind == "ip" && l.Key == "127.0.0.25" {
						return true
					}
				}
				return false
			}, func() string { return fmt.Sprintf("%+v", locks) })
		}
		// A connection from that IP is refused now, on any node.
		if g := greeting(t, n2.imap, "127.0.0.25"); !strings.HasPrefix(g, "* BYE") {
			t.Fatalf("a connection from the locked-out IP to n2 was greeted %q, want * BYE", g)
		}
		// Cleared from one node, cleared everywhere.
		st, body := n3.api("DELETE", "/api/v1/lockouts?kind=ip&key=127.0.0.25", nil)
		if st != 200 {
			t.Fatalf("clear lockout: %d %s", st, body)
		}
		if st, body := n3.api("DELETE", "/api/v1/lockouts?kind=user&key="+url.QueryEscape(bob), nil); st != 200 {
			t.Fatalf("clear bob's lockout: %d %s", st, body)
		}
		for _, n := range ns {
			n.apiJSON("GET", "/api/v1/lockouts", nil, &locks)
			if len(locks.Lockouts) != 0 {
				t.Fatalf("%s still holds lockouts %+v", n.name, locks.Lockouts)
			}
		}
		if l := loginOnce(t, "unlocked", imapOpts{Addr: n1.imap, Source: "127.0.0.25", User: alice, Password: alicePassword}); !strings.HasPrefix(l, "LOGIN OK") {
			t.Fatalf("login on n1 after the lockout was cleared on n3: %s", l)
		}
	})

	t.Run("a node killed -9 leaves the view", func(t *testing.T) {
		n3.hold(t, bob, bobPassword, "127.0.0.26")
		n1.waitSummary("imap", 1)
		n3.kill9 = true
		if err := n3.cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		var last apiNodes
		waitFor(t, "n3 gone in n1's node list", func() bool {
			last = n1.nodes()
			for _, x := range last.Nodes {
				if x.Name == "n3" {
					return x.State == "gone"
				}
			}
			return false
		}, func() string { return fmt.Sprintf("%+v", last) })
		took := time.Since(start)
		if took > 3*time.Second+time.Second { // node_ttl plus a heartbeat
			t.Errorf("n3 was gone after %v, want within node_ttl (3s)", took)
		}
		t.Logf("killed node gone from the view after %v (node_ttl 3s)", took)
		n1.waitSummary("imap", 0)
	})

	t.Run("cluster import", func(t *testing.T) {
		// A single node with its own state: carol's imap disabled.
		dir := t.TempDir()
		cert, key := writeCert(t, dir)
		admin, listen := freeAddr(t), freeAddr(t)
		cfg := writeConfig(t, dir, admin, clusterToken, cert, key, []listenerConf{
			{Name: "imap", Listen: listen, TLS: "starttls", Backend: d.proxy, ClientAddress: "proxy-v2"},
		})
		state := filepath.Join(dir, "state.db")
		appendYAML(t, cfg, "state: "+state+"\n")
		single := serveConfig(t, admin, clusterToken, cfg)
		single.apiJSON("PUT", "/api/v1/users/carol@example.com/protocols/pop", map[string]any{"enabled": false}, nil)
		if l := loginOnce(t, "single", imapOpts{Addr: listen, Source: "127.0.0.27", User: alice, Password: alicePassword}); !strings.HasPrefix(l, "LOGIN OK") {
			t.Fatalf("alice's login on the single node: %s", l)
		}
		single.stop()
		newPrefix := prefix + "imported:"
		appendYAML(t, cfg, fmt.Sprintf("cluster:\n  redis:\n    addresses: [%q]\n  prefix: %q\n", redisAddr, newPrefix))
		for i := 0; i < 2; i++ { // twice: idempotent
			out, err := runCmd(t, mailgateBin, "cluster", "import", "-config", cfg)
			if err != nil || !strings.Contains(out, `"policy":1`) {
				t.Fatalf("cluster import (run %d): %v\n%s", i+1, err, out)
			}
		}
		// A node of the new cluster, with a fresh state file of its own,
		// starts from what was imported.
		ncfg, nadmin, nimap := clusterConf(t, d, "m1", redisAddr, newPrefix, "")
		m := serveConfig(t, nadmin, clusterToken, ncfg)
		if l := loginOnce(t, "m1", imapOpts{Addr: nimap, Source: "127.0.0.28", User: alice, Password: alicePassword}); !strings.HasPrefix(l, "LOGIN OK") {
			t.Fatalf("alice's login on the new cluster: %s", l)
		}
		var pd struct {
			Protocols map[string]struct {
				Enabled bool `json:"enabled"`
			} `json:"protocols"`
		}
		m.apiJSON("GET", "/api/v1/users/carol@example.com", nil, &pd)
		if pd.Protocols["pop"].Enabled || !pd.Protocols["imap"].Enabled {
			t.Fatalf("after the import carol's protocols = %+v, want pop disabled, imap enabled", pd.Protocols)
		}
		// The single node's IP history came along: alice from 127.0.0.27
		// (the new node saw her from 127.0.0.28 only).
		var ips apiIPs
		m.apiJSON("GET", "/api/v1/users/"+alice+"/ips", nil, &ips)
		imported := false
		for _, r := range ips.IPs {
			imported = imported || r.IP == "127.0.0.27"
		}
		if !imported {
			t.Fatalf("alice's IP history after the import = %+v, want 127.0.0.27 from the single node", ips.IPs)
		}
	})
}

// privateRedis starts a redis-server of the test's own (appendonly, in a
// temporary directory) on a free port; stop and start it at will.
type privateRedis struct {
	t            *testing.T
	bin, dir, at string
	cmd          *exec.Cmd
}

func (r *privateRedis) start() {
	r.t.Helper()
	host, port, _ := strings.Cut(r.at, ":")
	r.cmd = exec.Command(r.bin, "--bind", host, "--port", port, "--dir", r.dir, "--appendonly", "yes",
		"--appendfsync", "always", "--save", "", "--daemonize", "no", "--logfile", filepath.Join(r.dir, "redis.log"))
	if err := r.cmd.Start(); err != nil {
		r.t.Fatal(err)
	}
	waitFor(r.t, "redis-server on "+r.at, func() bool {
		out, err := exec.Command("redis-cli", "-h", host, "-p", port, "ping").CombinedOutput()
		return err == nil && strings.TrimSpace(string(out)) == "PONG"
	}, func() string { return "" })
}

func (r *privateRedis) stop() {
	if r.cmd != nil && r.cmd.Process != nil {
		r.cmd.Process.Signal(syscall.SIGTERM)
		r.cmd.Wait()
		r.cmd = nil
	}
}

// TestClusterRedisDown stops Redis under two nodes: sessions go on, the
// last known policy holds, changes answer 503, and once Redis is back the
// nodes recover by themselves with nothing acknowledged lost.
func TestClusterRedisDown(t *testing.T) {
	d := needDovecot(t)
	_, server := needRedis(t)
	r := &privateRedis{t: t, bin: server, dir: t.TempDir(), at: freeAddr(t)}
	r.start()
	t.Cleanup(r.stop)
	ns := startCluster(t, d, r.at, "down:", "r1", "r2")
	r1, r2 := ns[0], ns[1]
	r1.apiJSON("PUT", "/api/v1/users/"+alice+"/protocols/imap", map[string]any{"enabled": false}, nil)
	held := r2.hold(t, bob, bobPassword, "127.0.0.31")

	r.stop()
	waitFor(t, "r1 degraded", func() bool { return r1.nodes().Degraded }, func() string { return "" })
	held.send("noop")
	held.expect("NOOP OK")
	if l := loginOnce(t, "last-known", imapOpts{Addr: r2.imap, Source: "127.0.0.32", User: alice, Password: alicePassword}); !strings.Contains(l, "CONTACTADMIN") {
		t.Fatalf("alice's login with Redis down: %s, want the last known policy (disabled)", l)
	}
	if l := loginOnce(t, "allowed", imapOpts{Addr: r2.imap, Source: "127.0.0.32", User: bob, Password: bobPassword}); !strings.HasPrefix(l, "LOGIN OK") {
		t.Fatalf("bob's login with Redis down: %s", l)
	}
	st, body := r1.api("PUT", "/api/v1/users/"+bob+"/protocols/imap", map[string]any{"enabled": false})
	if st != 503 || !strings.Contains(string(body), `"cluster_unavailable"`) {
		t.Fatalf("a change with Redis down: %d %s, want 503 cluster_unavailable", st, body)
	}

	r.start()
	waitFor(t, "r1 recovered", func() bool { return !r1.nodes().Degraded }, func() string { return "" })
	r2.waitNodes(2)
	// Acknowledged before the outage: still there (appendonly).
	if l := loginOnce(t, "after", imapOpts{Addr: r1.imap, Source: "127.0.0.33", User: alice, Password: alicePassword}); !strings.Contains(l, "CONTACTADMIN") {
		t.Fatalf("alice's login after Redis came back: %s, want still disabled", l)
	}
	var res struct {
		Dropped int `json:"dropped"`
	}
	r1.apiJSON("PUT", "/api/v1/users/"+bob+"/protocols/imap", map[string]any{"enabled": false}, &res)
	if res.Dropped != 1 {
		t.Fatalf("bob's disable after recovery dropped %d, want his held session on r2", res.Dropped)
	}
	held.send("noop")
	held.expect("EOF")
}

// TestDemoCluster: two `mailgate demo -redis` processes on one redis-server
// form a cluster: each lists both nodes and counts the other's sessions.
func TestDemoCluster(t *testing.T) {
	_, server := needRedis(t)
	t.Parallel()
	r := &privateRedis{t: t, bin: server, dir: t.TempDir(), at: freeAddr(t)}
	r.start()
	t.Cleanup(r.stop)
	const token = "e2e-demo-cluster-token"
	var nodes []*clusterNode
	for _, name := range []string{"d1", "d2"} {
		admin, imap := freeAddr(t), freeAddr(t)
		args := []string{"demo", "-redis", r.at, "-node", name, "-token", token, "-log-level", "debug", "-admin", admin, "-imap", imap}
		for _, f := range []string{"-imaps", "-pop3", "-pop3s", "-smtp", "-submission", "-submissions", "-xmpp", "-xmpps", "-https"} {
			args = append(args, f, freeAddr(t))
		}
		nodes = append(nodes, &clusterNode{mailgate: startMailgate(t, admin, token, args...), name: name, imap: imap})
	}
	for _, n := range nodes {
		n.waitNodes(2)
	}
	c := startPy(t, "demo-hold", imapOpts{Addr: nodes[1].imap, User: alice, Password: alicePassword, Then: "hold"})
	if l := c.expect("LOGIN "); !strings.HasPrefix(l, "LOGIN OK") {
		t.Fatalf("login through d2: %s", l)
	}
	c.expect("HOLDING")
	nodes[0].waitSummary("imap", 1)
	if got := nodes[0].conns(url.Values{"user": {alice}}); len(got) != 1 || got[0].Node != "d2" {
		t.Fatalf("d1 sees alice's connections %+v, want one on d2", got)
	}
	if n := nodes[0].drop(alice, "imap"); n != 1 {
		t.Fatalf("drop from d1 = %d, want 1", n)
	}
	c.send("noop")
	c.expect("EOF")
}
