package accounting_test

import (
	"fmt"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mailgate/mailgate/accounting"
)

// attemptsText is a history as "protocol/ip/mech/result/reason×count", newest first.
func attemptsText(as []accounting.LoginAttempt) string {
	var parts []string
	for _, a := range as {
		p := fmt.Sprintf("%s/%s/%s/%s", a.Protocol, a.IP, a.Mechanism, a.Result)
		if a.Reason != "" {
			p += "/" + a.Reason
		}
		if a.Count != 1 {
			p += fmt.Sprintf("×%d", a.Count)
		}
		parts = append(parts, p)
	}
	return strings.Join(parts, " ")
}

func conn(r *accounting.Registry, protocol, addr string) *accounting.Conn {
	return r.Register(accounting.ConnInfo{Protocol: protocol, Client: netip.MustParseAddrPort(addr)})
}

// try runs one login attempt the way a protocol handler does: the user is
// reported, the gate asked, then the backend's verdict (ok, failed or
// temporary) if the gate let it through.
func try(r *accounting.Registry, protocol, addr, user, mech, verdict string) *accounting.Conn {
	c := conn(r, protocol, addr)
	c.AuthAttempt(user, mech)
	if c.CheckLogin(user) != accounting.DenyNone {
		return c
	}
	switch verdict {
	case "ok":
		c.Authenticated(user, mech)
	case "failed":
		c.AuthFailed(user, mech, false)
	case "temporary":
		c.AuthFailed(user, mech, true)
	}
	return c
}

func TestLoginHistory_resultsAndReasons(t *testing.T) {
	clk := &fakeClock{t: time.Date(2026, 4, 1, 8, 0, 0, 0, time.UTC)}
	r := accounting.New(accounting.Options{Now: clk.Now, PerUser: map[string]int{"pop": 1},
		BruteForce: accounting.BruteForce{MaxFailures: 3, Window: time.Minute, Lockout: time.Minute, MaxLockout: time.Hour}})
	const u = "Alice@Example.com"
	step := func(protocol, addr, mech, verdict string) *accounting.Conn {
		clk.Add(time.Second)
		return try(r, protocol, addr, u, mech, verdict)
	}
	step("imap", "192.0.2.1:1", "LOGIN", "ok")
	step("imap", "192.0.2.1:2", "PLAIN", "failed")
	step("smtp", "192.0.2.2:1", "PLAIN", "temporary")
	step("pop", "192.0.2.3:1", "USER", "ok") // in: the per-user cap of pop is 1
	step("pop", "192.0.2.3:2", "USER", "ok") // gated: limit
	r.SetProtocolEnabled(u, "xmpp", false, false)
	step("xmpp", "192.0.2.4:1", "SCRAM-SHA-1", "ok") // gated: disabled
	step("imap", "192.0.2.9:1", "LOGIN", "failed")   // the pop login cleared the count
	step("imap", "192.0.2.9:2", "LOGIN", "failed")
	step("imap", "192.0.2.9:3", "LOGIN", "failed") // the third locks the user out
	step("imap", "192.0.2.1:3", "LOGIN", "ok")     // gated: lockout
	r.ClearLockout("user", u)
	r.ClearLockout("ip", "192.0.2.9")
	r.AddBlock(netip.MustParsePrefix("198.51.100.0/24"), "test", time.Time{})
	// A connection that got past Admit before the block (Register does
	// not check blocks) is refused at its login.
	step("imap", "198.51.100.5:1", "LOGIN", "ok")

	got := attemptsText(r.UserLogins("alice@example.com"))
	want := strings.Join([]string{
		"imap/198.51.100.5/LOGIN/gated/blocked",
		"imap/192.0.2.1/LOGIN/gated/lockout",
		"imap/192.0.2.9/LOGIN/failed×3",
		"xmpp/192.0.2.4/SCRAM-SHA-1/gated/disabled",
		"pop/192.0.2.3/USER/gated/limit",
		"pop/192.0.2.3/USER/ok",
		"smtp/192.0.2.2/PLAIN/temporary",
		"imap/192.0.2.1/PLAIN/failed",
		"imap/192.0.2.1/LOGIN/ok",
	}, " ")
	if got != want {
		t.Fatalf("history =\n %s\nwant\n %s", got, want)
	}
	h := r.UserLogins(u)
	if !h[0].Time.Equal(clk.Now()) || !h[2].First.Equal(clk.Now().Add(-4*time.Second)) || !h[2].Time.Equal(clk.Now().Add(-2*time.Second)) {
		t.Errorf("times: newest %v, the three failures from %v to %v", h[0].Time, h[2].First, h[2].Time)
	}
	if st := r.Stats(); st.Refusals[accounting.ReasonBlocked] != 1 {
		t.Errorf("the blocked login is not counted as a refusal: %v", st.Refusals)
	}

	// No history for no name (PREAUTH, an unchecked HTTP claim), nor for
	// a name no mailbox has.
	c := conn(r, "webdav", "192.0.2.7:1")
	c.AuthFailed("", "Bearer", false)
	c.Authenticated("", "")
	long := strings.Repeat("x", 400) + "@example.com"
	try(r, "imap", "192.0.2.7:2", long, "LOGIN", "failed")
	if h := r.UserLogins(long); len(h) != 0 {
		t.Errorf("a 412-byte name has a history: %v", attemptsText(h))
	}
}

func TestLoginHistory_ringAndCoalescing(t *testing.T) {
	clk := &fakeClock{t: time.Date(2026, 4, 1, 8, 0, 0, 0, time.UTC)}
	r := accounting.New(accounting.Options{Now: clk.Now, LoginHistory: 5, BruteForce: accounting.BruteForce{MaxFailures: -1}})
	for i := 0; i < 20; i++ { // one client polling: one entry
		clk.Add(time.Second)
		try(r, "eas", "192.0.2.1:1", "bob@example.com", "Basic", "ok").Close()
	}
	if got := attemptsText(r.UserLogins("bob@example.com")); got != "eas/192.0.2.1/Basic/ok×20" {
		t.Fatalf("20 polls = %s", got)
	}
	for i := 0; i < 8; i++ { // alternating: one entry each, the ring keeps 5
		clk.Add(time.Second)
		try(r, "imap", fmt.Sprintf("192.0.2.%d:1", 10+i), "bob@example.com", "LOGIN", []string{"ok", "failed"}[i%2])
	}
	got := attemptsText(r.UserLogins("bob@example.com"))
	if want := "imap/192.0.2.17/LOGIN/failed imap/192.0.2.16/LOGIN/ok imap/192.0.2.15/LOGIN/failed imap/192.0.2.14/LOGIN/ok imap/192.0.2.13/LOGIN/failed"; got != want {
		t.Fatalf("ring of 5 =\n %s\nwant\n %s", got, want)
	}
	off := accounting.New(accounting.Options{LoginHistory: -1})
	try(off, "imap", "192.0.2.1:1", "bob@example.com", "LOGIN", "ok")
	if h := off.UserLogins("bob@example.com"); len(h) != 0 {
		t.Errorf("history -1 keeps %v", attemptsText(h))
	}
}

func TestLoginHistory_boundedUsers(t *testing.T) {
	r := accounting.New(accounting.Options{LoginHistoryUsers: 128, BruteForce: accounting.BruteForce{MaxFailures: -1}})
	const n = 2000
	for i := 0; i < n; i++ {
		try(r, "imap", "192.0.2.1:1", fmt.Sprintf("user%d@example.com", i), "LOGIN", "failed")
	}
	kept := 0
	for i := 0; i < n; i++ {
		if len(r.UserLogins(fmt.Sprintf("user%d@example.com", i))) > 0 {
			kept++
		}
	}
	// 64 shards of ceil(128/64) users each.
	if kept > 128 || kept < 64 {
		t.Errorf("%d users of %d have a history with a bound of 128", kept, n)
	}
	if len(r.UserLogins(fmt.Sprintf("user%d@example.com", n-1))) != 1 {
		t.Error("the user seen last has no history")
	}
}

func TestLoginHistory_persisted(t *testing.T) {
	clk := &fakeClock{t: time.Date(2026, 4, 1, 8, 0, 0, 0, time.UTC)}
	path := filepath.Join(t.TempDir(), "state.db")
	open := func() (*accounting.Store, *accounting.Registry) {
		return openStateRegistry(t, path, accounting.Options{Now: clk.Now, LoginHistory: 4, LoginHistoryUsers: 64,
			BruteForce: accounting.BruteForce{MaxFailures: -1}})
	}
	st, r := open()
	tick := func() { clk.Add(time.Second) }
	tick()
	try(r, "imap", "192.0.2.1:1", "alice@example.com", "LOGIN", "failed")
	tick()
	try(r, "imap", "192.0.2.1:2", "alice@example.com", "LOGIN", "ok")
	r.SetProtocolEnabled("alice@example.com", "pop", false, false)
	tick()
	try(r, "pop", "192.0.2.2:1", "alice@example.com", "USER", "ok")
	tick()
	try(r, "eas", "192.0.2.3:1", "alice@example.com", "Basic", "ok")
	st.Flush()
	for i := 0; i < 4; i++ { // a polling client: written again a minute after the last write, not at each poll
		tick()
		try(r, "eas", "192.0.2.3:1", "alice@example.com", "Basic", "ok")
	}
	want := "eas/192.0.2.3/Basic/ok×5 pop/192.0.2.2/USER/gated/disabled imap/192.0.2.1/LOGIN/ok imap/192.0.2.1/LOGIN/failed"
	if got := attemptsText(r.UserLogins("alice@example.com")); got != want {
		t.Fatalf("before the reopen: %s", got)
	}
	st.Flush()
	st.Close()

	st, r = open()
	if got := attemptsText(r.UserLogins("alice@example.com")); got != strings.Replace(want, "×5", "", 1) {
		t.Fatalf("after a reopen: %s (the count of a polling client is written once a minute)", got)
	}
	// The user comes back into memory with the stored history.
	clk.Add(2 * time.Minute)
	try(r, "eas", "192.0.2.3:1", "alice@example.com", "Basic", "ok")
	tick()
	try(r, "imap", "192.0.2.4:1", "alice@example.com", "LOGIN", "temporary")
	want = "imap/192.0.2.4/LOGIN/temporary eas/192.0.2.3/Basic/ok×2 pop/192.0.2.2/USER/gated/disabled imap/192.0.2.1/LOGIN/ok"
	if got := attemptsText(r.UserLogins("alice@example.com")); got != want {
		t.Fatalf("after more attempts: %s", got)
	}
	// More users than the bound: the file keeps the ones seen last.
	for i := 0; i < 300; i++ {
		tick()
		try(r, "imap", "192.0.2.1:1", fmt.Sprintf("u%d@example.com", i), "LOGIN", "failed")
	}
	st.Flush()
	st.Close()
	st, r = open()
	defer st.Close()
	kept := 0
	for i := 0; i < 300; i++ {
		if len(r.UserLogins(fmt.Sprintf("u%d@example.com", i))) > 0 {
			kept++
		}
	}
	if kept != 64 || len(r.UserLogins("u299@example.com")) != 1 || len(r.UserLogins("alice@example.com")) != 0 {
		t.Errorf("after 301 users with a bound of 64: %d kept, u299 %d, alice %d", kept, len(r.UserLogins("u299@example.com")), len(r.UserLogins("alice@example.com")))
	}
}

// openStateRegistry opens the state file at path and a registry on it with
// opts (its Store set here), as a restart does.
func openStateRegistry(t *testing.T, path string, opts accounting.Options) (*accounting.Store, *accounting.Registry) {
	t.Helper()
	st, err := accounting.OpenStore(path, 0)
	if err != nil {
		t.Fatal(err)
	}
	opts.Store = st
	r, err := accounting.Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	return st, r
}
