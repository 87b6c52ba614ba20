package accounting_test

import (
	"fmt"
	"net/netip"
	"runtime"
	"testing"

	"github.com/mailgate/mailgate/accounting"
)

// BenchmarkLifecycle is one connection's accounting cost: register, gate,
// authenticate, close.
func BenchmarkLifecycle(b *testing.B) {
	r := accounting.New(accounting.Options{PerUserIP: map[string]int{"imap": 20}})
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			i++
			user := fmt.Sprintf("user%d@example.com", i%1000)
			c := r.Register(accounting.ConnInfo{Protocol: "imap", Client: netip.MustParseAddrPort("192.0.2.1:1")})
			c.CheckLogin(user)
			c.Authenticated(user, "LOGIN")
			c.Close()
		}
	})
}

func populate(b *testing.B, n int) *accounting.Registry {
	r := accounting.New(accounting.Options{})
	for i := 0; i < n; i++ {
		ip := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
		c := r.Register(accounting.ConnInfo{Protocol: accounting.Protocols[i%len(accounting.Protocols)], Client: netip.AddrPortFrom(ip, 1)})
		c.Authenticated(fmt.Sprintf("user%d@example.com", i%20000), "LOGIN")
	}
	return r
}

// BenchmarkSnapshot100k builds the All tab with 100 000 live connections.
func BenchmarkSnapshot100k(b *testing.B) {
	r := populate(b, 100000)
	runtime.GC()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if rows := r.Users("all"); len(rows) != 20000 {
			b.Fatalf("rows = %d", len(rows))
		}
	}
}

// BenchmarkSummary100k reads the tab counts with 100 000 live connections.
func BenchmarkSummary100k(b *testing.B) {
	r := populate(b, 100000)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if s := r.Summary(); s["all"] != 100000 {
			b.Fatal(s)
		}
	}
}
