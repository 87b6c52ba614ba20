package accounting_test

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/mailgate/mailgate/accounting"
)

func ap(s string) netip.AddrPort { return netip.MustParseAddrPort(s) }

func TestCountsIncludeUnauthenticated(t *testing.T) {
	r := accounting.New(accounting.Options{})
	a := r.Register(accounting.ConnInfo{Protocol: "imap", Listener: "imap", Client: ap("192.0.2.1:1000")})
	b := r.Register(accounting.ConnInfo{Protocol: "imap", Listener: "imap", Client: ap("192.0.2.1:1001")})
	s := r.Register(accounting.ConnInfo{Protocol: "smtp", Listener: "mx", Client: ap("198.51.100.9:25")})
	if got := r.Summary(); got["imap"] != 2 || got["smtp"] != 1 || got["all"] != 3 {
		t.Fatalf("Summary() = %v, want imap 2 smtp 1 all 3", got)
	}
	a.Authenticated("Alice@Example.com", "LOGIN")
	rows := r.Users("imap")
	if len(rows) != 2 {
		t.Fatalf("Users(imap) = %d rows, want 2 (alice + one unauthenticated IP row): %+v", len(rows), rows)
	}
	if rows[0].User != "alice@example.com" || rows[0].Connections != 1 || rows[0].LastIP != netip.MustParseAddr("192.0.2.1") {
		t.Errorf("alice row = %+v", rows[0])
	}
	if rows[1].User != "" || rows[1].IPs[0].IP != netip.MustParseAddr("192.0.2.1") || rows[1].Connections != 1 {
		t.Errorf("unauthenticated row = %+v", rows[1])
	}
	if all := r.Users("all"); len(all) != 3 {
		t.Errorf("Users(all) = %d rows, want 3", len(all))
	}
	a.Close()
	b.Close()
	s.Close()
	if got := r.Summary(); got["all"] != 0 {
		t.Fatalf("after close Summary() = %v", got)
	}
	if a.Close() {
		t.Error("second Close reported true")
	}
	if got := r.Summary(); got["imap"] != 0 {
		t.Fatalf("double close went negative: %v", got)
	}
}

func TestRowIPCountsAndLastLogin(t *testing.T) {
	now := time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)
	r := accounting.New(accounting.Options{Now: func() time.Time { return now }})
	for i, ip := range []string{"192.0.2.1:1", "192.0.2.1:2", "192.0.2.2:3"} {
		c := r.Register(accounting.ConnInfo{Protocol: "imap", Client: ap(ip)})
		now = now.Add(time.Minute)
		c.Authenticated("bob@example.com", "PLAIN")
		_ = i
	}
	rows := r.Users("imap")
	if len(rows) != 1 {
		t.Fatalf("rows = %+v", rows)
	}
	row := rows[0]
	if row.Connections != 3 || len(row.IPs) != 2 || row.IPs[0].Count != 2 || row.IPs[0].IP.String() != "192.0.2.1" {
		t.Errorf("row = %+v", row)
	}
	if !row.LastLogin.Equal(now) || row.LastIP.String() != "192.0.2.2" {
		t.Errorf("last login %v from %v, want %v from 192.0.2.2", row.LastLogin, row.LastIP, now)
	}
	ips := r.UserIPs("BOB@example.com")
	if len(ips) != 2 || ips[0].IP.String() != "192.0.2.2" || ips[1].Count != 2 {
		t.Errorf("UserIPs = %+v", ips)
	}
}

func TestHistoryBounded(t *testing.T) {
	r := accounting.New(accounting.Options{HistoryPerUser: 3})
	for i := 1; i <= 5; i++ {
		c := r.Register(accounting.ConnInfo{Protocol: "imap", Client: netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 0, 0, byte(i)}), 1)})
		c.Authenticated("u@example.com", "LOGIN")
		c.Close()
		time.Sleep(time.Millisecond)
	}
	ips := r.UserIPs("u@example.com")
	if len(ips) != 3 || ips[0].IP.String() != "10.0.0.5" || ips[2].IP.String() != "10.0.0.3" {
		t.Fatalf("history = %+v, want the 3 most recent", ips)
	}
}

func TestGateDisabledAndDomain(t *testing.T) {
	r := accounting.New(accounting.Options{})
	c := r.Register(accounting.ConnInfo{Protocol: "imap", Client: ap("192.0.2.1:1")})
	if d := c.CheckLogin("alice@example.com"); d != accounting.DenyNone {
		t.Fatalf("CheckLogin = %q", d)
	}
	r.SetProtocolEnabled("ALICE@example.com", "imap", false, true)
	if d := c.CheckLogin("alice@example.com"); d != accounting.DenyDisabled {
		t.Fatalf("disabled user: CheckLogin = %q", d)
	}
	if r.ProtocolEnabled("alice@example.com", "pop") != true {
		t.Error("pop should stay enabled")
	}
	r.SetProtocolEnabled("alice@example.com", "imap", true, false)
	r.SetDomainEnabled("Example.com", false, false)
	if d := c.CheckLogin("bob@example.com"); d != accounting.DenyDisabled {
		t.Fatalf("disabled domain: CheckLogin = %q", d)
	}
	if r.DomainEnabled("bob@example.com") {
		t.Error("DomainEnabled true for disabled domain")
	}
	r.SetDomainEnabled("example.com", true, false)
	if d := c.CheckLogin("bob@example.com"); d != accounting.DenyNone {
		t.Fatalf("re-enabled domain: CheckLogin = %q", d)
	}
}

func TestDisableDropsLiveConnections(t *testing.T) {
	r := accounting.New(accounting.Options{})
	var dropped []string
	var mu sync.Mutex
	mk := func(proto string) *accounting.Conn {
		c := r.Register(accounting.ConnInfo{Protocol: proto, Client: ap("192.0.2.1:1")})
		c.SetDropFunc(func(reason string) { mu.Lock(); dropped = append(dropped, proto+":"+reason); mu.Unlock() })
		c.Authenticated("alice@example.com", "LOGIN")
		return c
	}
	mk("imap")
	mk("imap")
	mk("pop")
	if n, err := r.SetProtocolEnabled("alice@example.com", "imap", false, false); err != nil || n != 0 {
		t.Fatalf("drop=false dropped %d", n)
	}
	if n, err := r.SetProtocolEnabled("alice@example.com", "imap", false, true); err != nil || n != 2 {
		t.Fatalf("dropped %d, want 2", n)
	}
	if got := r.Summary(); got["imap"] != 0 || got["pop"] != 1 {
		t.Fatalf("Summary after drop = %v", got)
	}
	if len(dropped) != 2 || dropped[0] != "imap:disabled" {
		t.Fatalf("drop funcs called: %v", dropped)
	}
	if n := r.DropUser("alice@example.com", "all", "dropped"); n != 1 {
		t.Fatalf("DropUser(all) = %d, want 1", n)
	}
}

func TestPerUserIPLimit(t *testing.T) {
	r := accounting.New(accounting.Options{PerUserIP: map[string]int{"imap": 2}})
	var conns []*accounting.Conn
	for i := 0; i < 2; i++ {
		c := r.Register(accounting.ConnInfo{Protocol: "imap", Client: ap("192.0.2.1:1")})
		if d := c.CheckLogin("alice@example.com"); d != "" {
			t.Fatalf("login %d denied: %q", i, d)
		}
		c.Authenticated("alice@example.com", "LOGIN")
		conns = append(conns, c)
	}
	c := r.Register(accounting.ConnInfo{Protocol: "imap", Client: ap("192.0.2.1:2")})
	if d := c.CheckLogin("alice@example.com"); d != accounting.DenyLimit {
		t.Fatalf("third login: %q, want limit", d)
	}
	other := r.Register(accounting.ConnInfo{Protocol: "imap", Client: ap("192.0.2.9:2")})
	if d := other.CheckLogin("alice@example.com"); d != "" {
		t.Fatalf("other IP denied: %q", d)
	}
	conns[0].Close()
	if d := c.CheckLogin("alice@example.com"); d != "" {
		t.Fatalf("after a close: %q", d)
	}
}

func TestDropConnByID(t *testing.T) {
	r := accounting.New(accounting.Options{})
	c := r.Register(accounting.ConnInfo{Protocol: "imap", Client: ap("192.0.2.1:1")})
	called := false
	c.SetDropFunc(func(string) { called = true })
	if !r.DropConn(c.ID(), "dropped") || !called {
		t.Fatal("DropConn failed")
	}
	if r.DropConn(c.ID(), "dropped") {
		t.Fatal("second DropConn succeeded")
	}
	if r.Count("imap") != 0 {
		t.Fatal("count did not fall")
	}
}

func TestConcurrentEvents(t *testing.T) {
	r := accounting.New(accounting.Options{})
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 500; i++ {
				c := r.Register(accounting.ConnInfo{Protocol: "imap", Client: ap("192.0.2.1:1")})
				c.Authenticated("u@example.com", "LOGIN")
				if i%3 == 0 {
					r.Users("imap")
				}
				if i%2 == 0 {
					c.Drop("dropped")
				}
				c.Close()
			}
		}()
	}
	wg.Wait()
	if got := r.Summary(); got["all"] != 0 {
		t.Fatalf("leftover counts %v", got)
	}
	if rows := r.Users("all"); len(rows) != 0 {
		t.Fatalf("leftover rows %+v", rows)
	}
}

// TestAuthenticateCloseRace: a login racing its own close must leave the
// per-user+IP count exact, or the limit could be bypassed.
func TestAuthenticateCloseRace(t *testing.T) {
	r := accounting.New(accounting.Options{PerUserIP: map[string]int{"imap": 1}})
	keep := r.Register(accounting.ConnInfo{Protocol: "imap", Client: ap("192.0.2.1:1")})
	keep.Authenticated("u@example.com", "LOGIN")
	for i := 0; i < 2000; i++ {
		c := r.Register(accounting.ConnInfo{Protocol: "imap", Client: ap("192.0.2.1:2")})
		var wg sync.WaitGroup
		wg.Add(2)
		go func() { defer wg.Done(); c.Authenticated("u@example.com", "LOGIN") }()
		go func() { defer wg.Done(); c.Close() }()
		wg.Wait()
	}
	probe := r.Register(accounting.ConnInfo{Protocol: "imap", Client: ap("192.0.2.1:3")})
	if d := probe.CheckLogin("u@example.com"); d != accounting.DenyLimit {
		t.Fatalf("limit bypassed after races: CheckLogin = %q", d)
	}
}

func TestDropBeforeDropFuncRunsItLater(t *testing.T) {
	r := accounting.New(accounting.Options{})
	c := r.Register(accounting.ConnInfo{Protocol: "imap", Client: ap("192.0.2.1:1")})
	r.DropConn(c.ID(), "dropped")
	got := ""
	c.SetDropFunc(func(reason string) { got = reason })
	if got != "dropped" {
		t.Fatalf("late drop func got %q", got)
	}
}

// TestUsersMatchesConnections: the rows built from the per-event aggregates
// agree with a walk over the live connections, after random events.
func TestUsersMatchesConnections(t *testing.T) {
	r := accounting.New(accounting.Options{})
	rnd := rand.New(rand.NewPCG(1, 2))
	var live []*accounting.Conn
	for i := 0; i < 3000; i++ {
		switch op := rnd.IntN(10); {
		case op < 5 || len(live) == 0:
			ip := netip.AddrFrom4([4]byte{10, 0, 0, byte(rnd.IntN(5))})
			c := r.Register(accounting.ConnInfo{Protocol: accounting.Protocols[rnd.IntN(4)], Client: netip.AddrPortFrom(ip, 1)})
			live = append(live, c)
		case op < 8:
			live[rnd.IntN(len(live))].Authenticated(fmt.Sprintf("u%d@example.com", rnd.IntN(7)), "LOGIN")
		default:
			k := rnd.IntN(len(live))
			live[k].Close()
			live = append(live[:k], live[k+1:]...)
		}
	}
	for _, tab := range append([]string{"all"}, accounting.Protocols...) {
		type key struct{ user, ip string }
		want := map[key]int{}
		for _, c := range r.Connections(accounting.Filter{Protocol: tab}) {
			want[key{c.User, c.Client.Addr().String()}]++
		}
		got := map[key]int{}
		for _, row := range r.Users(tab) {
			n := 0
			for _, ip := range row.IPs {
				got[key{row.User, ip.IP.String()}] += ip.Count
				n += ip.Count
			}
			if n != row.Connections {
				t.Fatalf("%s: row %q connections %d != sum of IPs %d", tab, row.User, row.Connections, n)
			}
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("%s tab:\n rows  %v\n walk  %v", tab, got, want)
		}
	}
}
