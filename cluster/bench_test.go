package cluster

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"

	"github.com/mailgate/mailgate/accounting"
)

// benchRedis is the real redis-server of scripts/redis.sh when
// MAILGATE_REDIS is set (the numbers in BENCHMARKS.md), else a miniredis.
func benchRedis(b *testing.B) string {
	if a := os.Getenv("MAILGATE_REDIS"); a != "" {
		return a
	}
	b.Log("MAILGATE_REDIS not set: miniredis (not comparable with the real server)")
	return miniredis.RunT(b).Addr()
}

// benchNodes joins n nodes under a fresh prefix, each registry holding
// perNode authenticated IMAP connections (users of 3 connections each, from
// 1000 IPs).
func benchNodes(b *testing.B, addr string, n, perNode int) []*node {
	b.Helper()
	prefix := fmt.Sprintf("bench%d:", time.Now().UnixNano())
	var out []*node
	for i := 0; i < n; i++ {
		reg := accounting.New(accounting.Options{})
		c, err := Join(context.Background(), Options{Redis: Redis{Addresses: []string{addr}}, Prefix: prefix,
			Node: fmt.Sprintf("n%d", i+1), Registry: reg, Heartbeat: 200 * time.Millisecond, NodeTTL: 2 * time.Second})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { c.Close() })
		for j := 0; j < perNode; j++ {
			ip := netip.AddrFrom4([4]byte{10, byte(i), byte(j % 1000 / 250), byte(j % 250)})
			cn := reg.Register(accounting.ConnInfo{Protocol: "imap", Listener: "imap", Client: netip.AddrPortFrom(ip, uint16(j))})
			cn.Authenticated(fmt.Sprintf("user%d-%d@example.com", i, j/3), "PLAIN")
		}
		out = append(out, &node{reg, c})
	}
	deadline := time.Now().Add(5 * time.Second)
	for len(out[0].c.others("")) < n-1 {
		if time.Now().After(deadline) {
			b.Fatal("nodes do not see each other")
		}
		time.Sleep(20 * time.Millisecond)
	}
	return out
}

// percentiles reports the p50 and p99 of the samples as metrics.
func percentiles(b *testing.B, samples []time.Duration) {
	if len(samples) == 0 {
		return
	}
	slices.Sort(samples)
	at := func(p float64) time.Duration { return samples[int(p*float64(len(samples)-1))] }
	b.ReportMetric(float64(at(0.50).Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(at(0.99).Microseconds())/1000, "p99-ms")
}

// BenchmarkViewConnections: the cluster-wide connection list at the node
// asked, its own third plus the two others' through Redis.
func BenchmarkViewConnections(b *testing.B) {
	addr := benchRedis(b)
	for _, total := range []int{30000, 100000} {
		b.Run(fmt.Sprintf("conns=%d", total), func(b *testing.B) {
			ns := benchNodes(b, addr, 3, total/3)
			v := ns[0].c.View()
			var samples []time.Duration
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				t0 := time.Now()
				got := v.Connections(accounting.Filter{})
				samples = append(samples, time.Since(t0))
				if len(got) != total/3*3 {
					b.Fatalf("view has %d connections, want %d", len(got), total/3*3)
				}
			}
			percentiles(b, samples)
		})
	}
}

// BenchmarkViewUsers: a tab's rows for the whole cluster.
func BenchmarkViewUsers(b *testing.B) {
	addr := benchRedis(b)
	for _, total := range []int{30000, 100000} {
		b.Run(fmt.Sprintf("conns=%d", total), func(b *testing.B) {
			ns := benchNodes(b, addr, 3, total/3)
			v := ns[0].c.View()
			var samples []time.Duration
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				t0 := time.Now()
				rows := v.Users("imap")
				samples = append(samples, time.Since(t0))
				if len(rows) == 0 {
					b.Fatal("no rows")
				}
			}
			percentiles(b, samples)
		})
	}
}

// BenchmarkSummary: the tab counts of the cluster.
func BenchmarkSummary(b *testing.B) {
	ns := benchNodes(b, benchRedis(b), 3, 1000)
	v := ns[0].c.View()
	var samples []time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		t0 := time.Now()
		if v.Summary()["imap"] != 3000 {
			b.Fatal("wrong count")
		}
		samples = append(samples, time.Since(t0))
	}
	percentiles(b, samples)
}

// BenchmarkPropagation: a policy change committed on one node until every
// node of three applied it and said so (what the API waits for), and the
// one-way time from the commit to its application on another node.
func BenchmarkPropagation(b *testing.B) {
	ns := benchNodes(b, benchRedis(b), 3, 0)
	v := ns[0].c.View()
	var acked []time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		t0 := time.Now()
		res, err := v.SetProtocolEnabledNodes("prop@example.com", "imap", i%2 == 1, true)
		acked = append(acked, time.Since(t0))
		if err != nil || len(res.ByNode) != 3 {
			b.Fatalf("change: %+v %v", res, err)
		}
	}
	b.StopTimer()
	percentiles(b, acked)
	st := ns[1].c.Stats()
	if len(st.Propagation) > 0 {
		slices.Sort(st.Propagation)
		b.ReportMetric(st.Propagation[len(st.Propagation)/2]*1000, "oneway-p50-ms")
		b.ReportMetric(st.Propagation[len(st.Propagation)*99/100]*1000, "oneway-p99-ms")
	}
}

// BenchmarkDropRemote: drop one user's session held on another node.
func BenchmarkDropRemote(b *testing.B) {
	ns := benchNodes(b, benchRedis(b), 3, 0)
	v := ns[0].c.View()
	var samples []time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		cn := ns[2].reg.Register(accounting.ConnInfo{Protocol: "imap", Client: netip.MustParseAddrPort("192.0.2.1:1")})
		cn.Authenticated("drop@example.com", "PLAIN")
		b.StartTimer()
		t0 := time.Now()
		res, err := v.DropUserNodes("drop@example.com", "imap", "bench")
		samples = append(samples, time.Since(t0))
		if err != nil || res.ByNode["n3"] != 1 {
			b.Fatalf("drop: %+v %v", res, err)
		}
	}
	percentiles(b, samples)
}

// BenchmarkLoginPath: the registry's share of one login (connect, gate,
// authenticated, close), single node against a cluster node (whose hooks
// queue the events and count the live sessions for the limits).
func BenchmarkLoginPath(b *testing.B) {
	run := func(b *testing.B, reg *accounting.Registry) {
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			cn, _ := reg.Admit(accounting.ConnInfo{Protocol: "imap", Client: netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 1, byte(i >> 8), byte(i)}), 1)})
			if cn.CheckLogin("login@example.com") != accounting.DenyNone {
				b.Fatal("refused")
			}
			cn.Authenticated("login@example.com", "PLAIN")
			cn.Close()
		}
	}
	b.Run("single", func(b *testing.B) { run(b, accounting.New(accounting.Options{})) })
	b.Run("cluster", func(b *testing.B) {
		ns := benchNodes(b, benchRedis(b), 1, 0)
		run(b, ns[0].reg)
	})
}
