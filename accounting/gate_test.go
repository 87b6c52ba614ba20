package accounting_test

import (
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"github.com/mailgate/mailgate/accounting"
)

type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func TestBruteForceLocksIPAndUser(t *testing.T) {
	clk := &clock{time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)}
	r := accounting.New(accounting.Options{Now: clk.now,
		BruteForce: accounting.BruteForce{MaxFailures: 3, Window: time.Minute, Lockout: time.Minute, MaxLockout: 3 * time.Minute}})
	attacker := ap("203.0.113.9:1")
	c := r.Register(accounting.ConnInfo{Protocol: "imap", Client: attacker})
	for i := 0; i < 2; i++ {
		c.AuthFailed("victim@example.com", "LOGIN", false)
	}
	if d := c.CheckLogin("victim@example.com"); d != accounting.DenyNone {
		t.Fatalf("after 2 failures: %q", d)
	}
	c.AuthFailed("victim@example.com", "LOGIN", false)
	if d := c.CheckLogin("victim@example.com"); d != accounting.DenyLockout {
		t.Fatalf("after 3 failures: %q, want lockout", d)
	}
	if _, refusal := r.Admit(accounting.ConnInfo{Protocol: "imap", Client: attacker}); refusal != accounting.RefuseBlocked {
		t.Fatalf("locked-out IP admitted: %q", refusal)
	}
	// The user is locked from anywhere; another user from another IP is not.
	other := r.Register(accounting.ConnInfo{Protocol: "imap", Client: ap("198.51.100.1:1")})
	if d := other.CheckLogin("victim@example.com"); d != accounting.DenyLockout {
		t.Fatalf("user lockout not global: %q", d)
	}
	if d := other.CheckLogin("someone@example.com"); d != accounting.DenyNone {
		t.Fatalf("unrelated login refused: %q", d)
	}
	if l := r.Lockouts(); len(l) != 2 {
		t.Fatalf("Lockouts() = %+v, want ip and user", l)
	}
	// Expiry, then a second lockout lasts twice as long.
	clk.t = clk.t.Add(61 * time.Second)
	if d := other.CheckLogin("victim@example.com"); d != accounting.DenyNone {
		t.Fatalf("lockout did not expire: %q", d)
	}
	for i := 0; i < 3; i++ {
		other.AuthFailed("victim@example.com", "LOGIN", false)
	}
	clk.t = clk.t.Add(90 * time.Second)
	if d := other.CheckLogin("victim@example.com"); d != accounting.DenyLockout {
		t.Fatalf("second lockout should last 2 min: %q", d)
	}
	if !r.ClearLockout("user", "Victim@example.com") {
		t.Fatal("ClearLockout(user) found nothing")
	}
	if !r.ClearLockout("ip", "198.51.100.1") {
		t.Fatal("ClearLockout(ip) found nothing")
	}
	if d := other.CheckLogin("victim@example.com"); d != accounting.DenyNone {
		t.Fatalf("after clear: %q", d)
	}
}

func TestBackendOutageNeverLocksOut(t *testing.T) {
	r := accounting.New(accounting.Options{BruteForce: accounting.BruteForce{MaxFailures: 2, Window: time.Minute, Lockout: time.Minute, MaxLockout: time.Minute}})
	c := r.Register(accounting.ConnInfo{Protocol: "imap", Client: ap("192.0.2.1:1")})
	for i := 0; i < 50; i++ {
		c.AuthFailed("alice@example.com", "LOGIN", true)
	}
	if d := c.CheckLogin("alice@example.com"); d != accounting.DenyNone {
		t.Fatalf("temporary failures locked out: %q", d)
	}
}

func TestSuccessResetsUserFailures(t *testing.T) {
	r := accounting.New(accounting.Options{BruteForce: accounting.BruteForce{MaxFailures: 3, Window: time.Hour, Lockout: time.Minute, MaxLockout: time.Minute}})
	for round := 0; round < 3; round++ {
		c := r.Register(accounting.ConnInfo{Protocol: "imap", Client: netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 0, 0, byte(round)}), 1)})
		c.AuthFailed("typo@example.com", "LOGIN", false)
		c.AuthFailed("typo@example.com", "LOGIN", false)
		c.Authenticated("typo@example.com", "LOGIN")
		c.Close()
	}
	c := r.Register(accounting.ConnInfo{Protocol: "imap", Client: ap("10.0.0.9:1")})
	if d := c.CheckLogin("typo@example.com"); d != accounting.DenyNone {
		t.Fatalf("user locked although every pair of failures ended in success: %q", d)
	}
}

func TestPerIPAndPerUserLimits(t *testing.T) {
	r := accounting.New(accounting.Options{PerIP: 2, PerUser: map[string]int{"imap": 2}})
	ip := ap("192.0.2.1:1")
	a, refusal := r.Admit(accounting.ConnInfo{Protocol: "imap", Client: ip})
	b, _ := r.Admit(accounting.ConnInfo{Protocol: "smtp", Client: ip})
	if refusal != "" || a == nil || b == nil {
		t.Fatal("first two refused")
	}
	if _, refusal := r.Admit(accounting.ConnInfo{Protocol: "pop", Client: ip}); refusal != accounting.RefuseLimit {
		t.Fatalf("third from same IP: %q, want limit", refusal)
	}
	if got := r.Summary()["all"]; got != 2 {
		t.Fatalf("refused connection counted: all=%d", got)
	}
	b.Close()
	if _, refusal := r.Admit(accounting.ConnInfo{Protocol: "pop", Client: ip}); refusal != "" {
		t.Fatalf("after a close: %q", refusal)
	}
	// Per user: two IPs, two sessions, the third from a third IP is refused.
	for i, src := range []string{"10.0.0.1:1", "10.0.0.2:1"} {
		c := r.Register(accounting.ConnInfo{Protocol: "imap", Client: ap(src)})
		if d := c.CheckLogin("u@example.com"); d != "" {
			t.Fatalf("login %d: %q", i, d)
		}
		c.Authenticated("u@example.com", "LOGIN")
	}
	c := r.Register(accounting.ConnInfo{Protocol: "imap", Client: ap("10.0.0.3:1")})
	if d := c.CheckLogin("u@example.com"); d != accounting.DenyLimit {
		t.Fatalf("third session of the user: %q, want limit", d)
	}
}

func TestBlocksPersistAndDrop(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.db")
	st, err := accounting.OpenStore(path, 10)
	if err != nil {
		t.Fatal(err)
	}
	r, _ := accounting.Open(accounting.Options{Store: st})
	live := r.Register(accounting.ConnInfo{Protocol: "imap", Client: ap("203.0.113.5:1")})
	dropped := false
	live.SetDropFunc(func(string) { dropped = true })
	n, err := r.AddBlock(netip.MustParsePrefix("203.0.113.0/24"), "spam run", time.Time{})
	if err != nil || n != 1 || !dropped {
		t.Fatalf("AddBlock = %d, %v (dropped %v)", n, err, dropped)
	}
	if _, refusal := r.Admit(accounting.ConnInfo{Protocol: "imap", Client: ap("203.0.113.77:1")}); refusal != accounting.RefuseBlocked {
		t.Fatalf("blocked network admitted: %q", refusal)
	}
	r.AddBlock(netip.MustParsePrefix("198.51.100.7/32"), "", time.Now().Add(-time.Second))
	if r.Blocked(netip.MustParseAddr("198.51.100.7")) {
		t.Fatal("expired block still applies")
	}
	st.Close()
	st2, _ := accounting.OpenStore(path, 10)
	defer st2.Close()
	r2, _ := accounting.Open(accounting.Options{Store: st2})
	if bs := r2.Blocks(); len(bs) != 1 || bs[0].Reason != "spam run" {
		t.Fatalf("blocks after reopen = %+v", bs)
	}
	if ok, err := r2.RemoveBlock(netip.MustParsePrefix("203.0.113.0/24")); !ok || err != nil {
		t.Fatalf("RemoveBlock = %v, %v", ok, err)
	}
	if r2.Blocked(netip.MustParseAddr("203.0.113.5")) {
		t.Fatal("still blocked after removal")
	}
}

func TestRefusalsCountedByReason(t *testing.T) {
	r := accounting.New(accounting.Options{PerIP: 1, PerUserIP: map[string]int{"imap": 1},
		BruteForce: accounting.BruteForce{MaxFailures: 1, Window: time.Minute, Lockout: time.Minute, MaxLockout: time.Minute}})
	r.AddBlock(netip.MustParsePrefix("203.0.113.0/24"), "", time.Time{})
	r.Admit(accounting.ConnInfo{Protocol: "imap", Client: ap("203.0.113.1:1")})
	a, _ := r.Admit(accounting.ConnInfo{Protocol: "imap", Client: ap("192.0.2.1:1")})
	r.Admit(accounting.ConnInfo{Protocol: "imap", Client: ap("192.0.2.1:2")}) // per IP
	r.SetProtocolEnabled("off@example.com", "imap", false, false)
	a.CheckLogin("off@example.com")
	a.Authenticated("u@example.com", "LOGIN")
	b := r.Register(accounting.ConnInfo{Protocol: "imap", Client: ap("192.0.2.1:3")})
	b.CheckLogin("u@example.com") // per user+IP
	b.AuthFailed("x@example.com", "LOGIN", true)
	b.AuthFailed("x@example.com", "LOGIN", false)
	b.CheckLogin("x@example.com") // lockout
	r.Admit(accounting.ConnInfo{Protocol: "imap", Client: ap("192.0.2.1:4")})
	r.CountRefusal(accounting.ReasonListenerLimit)
	r.DropConn(a.ID(), "dropped")
	s := r.Stats()
	want := map[string]int64{"blocked": 1, "ip_limit": 1, "disabled": 1, "user_limit": 1, "lockout": 1, "ip_lockout": 1, "listener_limit": 1}
	for k, v := range want {
		if s.Refusals[k] != v {
			t.Errorf("refusals[%s] = %d, want %d (all: %v)", k, s.Refusals[k], v, s.Refusals)
		}
	}
	if l := s.Logins["imap"]; l["success"] != 1 || l["failure"] != 1 || l["temporary_failure"] != 1 {
		t.Errorf("logins = %v", l)
	}
	if s.Drops != 1 {
		t.Errorf("drops = %d", s.Drops)
	}
	if s.Authenticated["imap"] != 0 { // the only authenticated one was dropped
		t.Errorf("authenticated = %v", s.Authenticated)
	}
	r.CountDialError("imap")
	r.AddRelayBytes("imap", 10, 20)
	if s := r.Stats(); s.DialErrors["imap"] != 1 || s.BytesUp["imap"] != 10 || s.BytesDown["imap"] != 20 {
		t.Errorf("dial errors %v, bytes %v %v", s.DialErrors, s.BytesUp, s.BytesDown)
	}
}

// SetLimits (a configuration reload) changes caps and lockout settings for
// what comes next, and keeps the sessions and failures already there.
func TestSetLimitsAppliesToNextLogins(t *testing.T) {
	r := accounting.New(accounting.Options{PerUser: map[string]int{"imap": 1}, PerIP: 1,
		BruteForce: accounting.BruteForce{MaxFailures: -1}})
	first := r.Register(accounting.ConnInfo{Protocol: "imap", Client: ap("10.0.0.1:1")})
	first.Authenticated("u@example.com", "LOGIN")
	c := r.Register(accounting.ConnInfo{Protocol: "imap", Client: ap("10.0.0.2:1")})
	if d := c.CheckLogin("u@example.com"); d != accounting.DenyLimit {
		t.Fatalf("second session under a cap of 1: %q, want limit", d)
	}
	if _, refusal := r.Admit(accounting.ConnInfo{Protocol: "pop", Client: ap("10.0.0.1:2")}); refusal != accounting.RefuseLimit {
		t.Fatalf("second connection from one IP under PerIP 1: %q, want limit", refusal)
	}
	for i := 0; i < 5; i++ {
		c.AuthFailed("bad@example.com", "LOGIN", false)
	}
	if d := c.CheckLogin("bad@example.com"); d != accounting.DenyNone {
		t.Fatalf("lockouts disabled, yet: %q", d)
	}

	r.SetLimits(accounting.Limits{PerUser: map[string]int{"imap": 2},
		BruteForce: accounting.BruteForce{MaxFailures: 2, Window: time.Minute, Lockout: time.Minute, MaxLockout: time.Minute}})
	if d := c.CheckLogin("u@example.com"); d != accounting.DenyNone {
		t.Fatalf("second session after the cap was raised to 2: %q", d)
	}
	if got := r.Summary()["imap"]; got != 2 {
		t.Fatalf("live imap = %d after the reload, want the 2 connections kept", got)
	}
	if _, refusal := r.Admit(accounting.ConnInfo{Protocol: "pop", Client: ap("10.0.0.1:3")}); refusal != "" {
		t.Fatalf("PerIP removed by the reload, yet: %q", refusal)
	}
	c.AuthFailed("bad@example.com", "LOGIN", false)
	c.AuthFailed("bad@example.com", "LOGIN", false)
	if d := c.CheckLogin("bad@example.com"); d != accounting.DenyLockout {
		t.Fatalf("two failures under the new MaxFailures 2: %q, want lockout", d)
	}

	r.SetLimits(accounting.Limits{PerUser: map[string]int{"imap": 1}})
	third := r.Register(accounting.ConnInfo{Protocol: "imap", Client: ap("10.0.0.3:1")})
	if d := third.CheckLogin("u@example.com"); d != accounting.DenyLimit {
		t.Fatalf("cap lowered back to 1: %q, want limit", d)
	}
	if got := r.Summary()["imap"]; got != 3 {
		t.Fatalf("live imap = %d after lowering the cap, want all 3 connections kept", got)
	}
}
