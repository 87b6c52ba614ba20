package cluster

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"

	"github.com/mailgate/mailgate/accounting"
)

// node is one member of a test cluster.
type node struct {
	reg *accounting.Registry
	c   *Cluster
}

func startNodes(t *testing.T, addr string, names ...string) []*node {
	t.Helper()
	var out []*node
	for _, n := range names {
		reg := accounting.New(accounting.Options{BruteForce: accounting.BruteForce{MaxFailures: 4, Window: time.Minute,
			Lockout: time.Minute, MaxLockout: time.Hour}, PerUser: map[string]int{"imap": 3}})
		c, err := Join(context.Background(), Options{Redis: Redis{Addresses: []string{addr}}, Node: n,
			Heartbeat: 100 * time.Millisecond, NodeTTL: 500 * time.Millisecond, Registry: reg,
			BruteForce: func() accounting.BruteForce {
				return accounting.BruteForce{MaxFailures: 4, Window: time.Minute, Lockout: time.Minute, MaxLockout: time.Hour}
			}})
		if err != nil {
			t.Fatalf("join %s: %v", n, err)
		}
		t.Cleanup(func() { c.Close() })
		out = append(out, &node{reg, c})
	}
	// Every node sees the others after a heartbeat.
	waitFor(t, time.Second, func() bool {
		for _, n := range out {
			if len(n.c.others("")) < len(out)-1 {
				return false
			}
		}
		return true
	})
	return out
}

func waitFor(t *testing.T, d time.Duration, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %v", d)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func login(t *testing.T, reg *accounting.Registry, user, client string) *accounting.Conn {
	t.Helper()
	c := reg.Register(accounting.ConnInfo{Protocol: "imap", Client: netip.MustParseAddrPort(client)})
	if d := c.CheckLogin(user); d != accounting.DenyNone {
		t.Fatalf("CheckLogin(%s) = %q", user, d)
	}
	c.Authenticated(user, "PLAIN")
	return c
}

func TestClusterViewPolicyAndDrops(t *testing.T) {
	mr := miniredis.RunT(t)
	ns := startNodes(t, mr.Addr(), "a", "b", "c")
	a, b, c := ns[0], ns[1], ns[2]
	login(t, b.reg, "bob@example.com", "192.0.2.1:1000")
	login(t, c.reg, "bob@example.com", "192.0.2.2:1000")
	login(t, a.reg, "alice@example.com", "192.0.2.3:1000")

	v := a.c.View()
	if got := v.Summary()["imap"]; got != 3 {
		t.Fatalf("cluster imap count = %d, want 3", got)
	}
	conns := v.Connections(accounting.Filter{User: "bob@example.com"})
	if len(conns) != 2 || conns[0].Node == conns[1].Node || conns[0].ID == conns[1].ID {
		t.Fatalf("bob's connections = %+v, want two on two nodes with distinct ids", conns)
	}
	if got := v.Connections(accounting.Filter{Node: "c"}); len(got) != 1 || got[0].Node != "c" {
		t.Fatalf("node c's connections = %+v", got)
	}
	rows := v.Users("imap")
	var bob *accounting.UserRow
	for i := range rows {
		if rows[i].User == "bob@example.com" {
			bob = &rows[i]
		}
	}
	if bob == nil || bob.Connections != 2 || len(bob.Nodes) != 2 || len(bob.IPs) != 2 {
		t.Fatalf("bob's row = %+v", bob)
	}

	// Disable on a: committed in Redis, applied and dropped on b and c.
	res, err := v.SetProtocolEnabledNodes("bob@example.com", "imap", false, true)
	if err != nil {
		t.Fatal(err)
	}
	if res.Dropped != 2 || res.ByNode["b"] != 1 || res.ByNode["c"] != 1 || len(res.Missing) != 0 {
		t.Fatalf("disable result = %+v", res)
	}
	if b.reg.ProtocolEnabled("bob@example.com", "imap") || c.reg.ProtocolEnabled("bob@example.com", "imap") {
		t.Fatal("disable did not reach every node")
	}
	if !mr.Exists(keys{DefaultPrefix}.policy()) {
		t.Fatal("the change is not in Redis")
	}
	// A node that joins later starts from Redis's policy.
	late := startNodes(t, mr.Addr(), "d")[0]
	if late.reg.ProtocolEnabled("bob@example.com", "imap") {
		t.Fatal("a node joining later does not see the disable")
	}

	// Drop one connection by id from another node.
	aliceID := a.reg.Connections(accounting.Filter{User: "alice@example.com"})[0].ID
	if !c.c.View().DropConn(aliceID, "test") {
		t.Fatal("drop by id from node c did not reach node a")
	}
	if n := a.reg.Summary()["imap"]; n != 0 {
		t.Fatalf("node a still holds %d imap connections", n)
	}
}

func TestClusterBruteForceAddsUp(t *testing.T) {
	mr := miniredis.RunT(t)
	ns := startNodes(t, mr.Addr(), "a", "b")
	// Two failures on each node: four in the cluster lock the user out
	// everywhere, though neither node saw four.
	for i, n := range []*node{ns[0], ns[1], ns[0], ns[1]} {
		cn := n.reg.Register(accounting.ConnInfo{Protocol: "imap", Client: netip.MustParseAddrPort("198.51.100.7:" + itoa(2000+i))})
		cn.AuthAttempt("carol@example.com", "PLAIN")
		cn.AuthFailed("carol@example.com", "PLAIN", false)
		cn.Close()
	}
	waitFor(t, 2*time.Second, func() bool {
		for _, n := range ns {
			cn := n.reg.Register(accounting.ConnInfo{Protocol: "imap", Client: netip.MustParseAddrPort("203.0.113.9:1")})
			d := cn.CheckLogin("carol@example.com")
			cn.Close()
			if d != accounting.DenyLockout {
				return false
			}
		}
		return true
	})
	// Cleared on one node, cleared on all.
	if !ns[1].c.View().ClearLockout("user", "carol@example.com") {
		t.Fatal("ClearLockout found no lockout")
	}
	for _, n := range ns {
		cn := n.reg.Register(accounting.ConnInfo{Protocol: "imap", Client: netip.MustParseAddrPort("203.0.113.9:2")})
		if d := cn.CheckLogin("carol@example.com"); d != accounting.DenyNone {
			t.Fatalf("after clearing: %q", d)
		}
		cn.Close()
	}
}

func TestClusterLimitsAndHistory(t *testing.T) {
	mr := miniredis.RunT(t)
	ns := startNodes(t, mr.Addr(), "a", "b")
	login(t, ns[0].reg, "dave@example.com", "192.0.2.9:1")
	login(t, ns[0].reg, "dave@example.com", "192.0.2.9:2")
	login(t, ns[1].reg, "dave@example.com", "192.0.2.10:1")
	// per_user imap is 3: the fourth, on either node, is refused once the
	// counts have crossed.
	waitFor(t, 2*time.Second, func() bool {
		cn := ns[1].reg.Register(accounting.ConnInfo{Protocol: "imap", Client: netip.MustParseAddrPort("192.0.2.11:1")})
		defer cn.Close()
		return cn.CheckLogin("dave@example.com") == accounting.DenyLimit
	})
	// b learned a's logins: last login and IP history.
	waitFor(t, 2*time.Second, func() bool {
		ips := ns[1].reg.UserIPs("dave@example.com")
		return len(ips) == 2
	})
}

func TestClusterNameTakenAndGone(t *testing.T) {
	mr := miniredis.RunT(t)
	ns := startNodes(t, mr.Addr(), "a", "b")
	reg := accounting.New(accounting.Options{})
	_, err := Join(context.Background(), Options{Redis: Redis{Addresses: []string{mr.Addr()}}, Node: "a", Registry: reg,
		Heartbeat: 100 * time.Millisecond, NodeTTL: 500 * time.Millisecond, JoinTimeout: 300 * time.Millisecond})
	if err == nil {
		t.Fatal("a second node named a was let in")
	}
	// b stops heartbeating (as after kill -9): gone within the TTL.
	ns[1].c.cancel()
	ns[1].c.wg.Wait()
	mr.FastForward(time.Second)
	waitFor(t, 2*time.Second, func() bool {
		for _, n := range ns[0].c.Nodes() {
			if n.Name == "b" {
				return n.State == "gone"
			}
		}
		return false
	})
}

func TestClusterRedisLostItsData(t *testing.T) {
	mr := miniredis.RunT(t)
	ns := startNodes(t, mr.Addr(), "a", "b")
	if _, err := ns[0].c.View().SetDomainEnabledNodes("example.org", false, false); err != nil {
		t.Fatal(err)
	}
	// Redis restarts empty; the node that notices first writes its copy back.
	mr.FlushAll()
	ns[1].c.resubscribed()
	for _, n := range ns {
		if n.reg.DomainEnabled("example.org") {
			t.Fatalf("node %s lost the domain's disable", n.c.Name())
		}
	}
	if v := mr.HGet(keys{DefaultPrefix}.policy(), "domain\x00example.org"); v == "" {
		t.Fatal("the policy was not written back to Redis")
	}
}
