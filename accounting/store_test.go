package accounting_test

import (
	"fmt"
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"github.com/mailgate/mailgate/accounting"
)

func TestStoreSurvivesReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	st, err := accounting.OpenStore(path, 3)
	if err != nil {
		t.Fatal(err)
	}
	r, err := accounting.Open(accounting.Options{Store: st})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.SetProtocolEnabled("alice@example.com", "imap", false, false); err != nil {
		t.Fatal(err)
	}
	if _, err := r.SetDomainEnabled("blocked.example", false, false); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 5; i++ {
		c := r.Register(accounting.ConnInfo{Protocol: "pop", Client: netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 0, 0, byte(i)}), 1)})
		c.Authenticated("alice@example.com", "PLAIN")
		c.Close()
		time.Sleep(2 * time.Millisecond)
	}
	st.Flush()
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}

	st2, err := accounting.OpenStore(path, 3)
	if err != nil {
		t.Fatal(err)
	}
	defer st2.Close()
	r2, err := accounting.Open(accounting.Options{Store: st2})
	if err != nil {
		t.Fatal(err)
	}
	if r2.ProtocolEnabled("alice@example.com", "imap") {
		t.Error("imap re-enabled after reopen")
	}
	if r2.DomainEnabled("x@blocked.example") {
		t.Error("domain re-enabled after reopen")
	}
	d := r2.User("alice@example.com")
	if d.Protocols["pop"].LastIP.String() != "10.0.0.5" || d.Protocols["pop"].LastLogin.IsZero() {
		t.Errorf("pop last login lost: %+v", d.Protocols["pop"])
	}
	if len(d.IPs) != 3 || d.IPs[0].IP.String() != "10.0.0.5" || d.IPs[2].IP.String() != "10.0.0.3" {
		t.Errorf("history after reopen = %+v, want the 3 most recent", d.IPs)
	}
	if _, err := r2.SetProtocolEnabled("alice@example.com", "imap", true, false); err != nil {
		t.Fatal(err)
	}
	if !r2.ProtocolEnabled("alice@example.com", "imap") {
		t.Error("enable did not apply")
	}
}

// BenchmarkLoginWithStore is the login-path cost with persistence on: the
// write is queued, never waited for.
func BenchmarkLoginWithStore(b *testing.B) {
	st, err := accounting.OpenStore(filepath.Join(b.TempDir(), "s.db"), 100)
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	r, _ := accounting.Open(accounting.Options{Store: st})
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		c := r.Register(accounting.ConnInfo{Protocol: "imap", Client: netip.MustParseAddrPort("192.0.2.1:1")})
		c.Authenticated(fmt.Sprintf("u%d@example.com", i%5000), "LOGIN")
		c.Close()
	}
	b.StopTimer()
	st.Flush()
}
