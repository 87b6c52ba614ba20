package cluster

import (
	"net/netip"
	"reflect"
	"testing"
	"time"

	"github.com/mailgate/mailgate/accounting"
)

func TestCodecRoundTrip(t *testing.T) {
	t0 := time.Date(2026, 12, 7, 20, 0, 0, 123456789, time.UTC)
	infos := []accounting.Info{
		{ID: 1 << 41, Protocol: "imap", Listener: "imaps", User: "bob@example.com", Client: netip.MustParseAddrPort("[2001:db8::7]:40000"),
			State: accounting.StateAuthenticated, TLS: true, Mechanism: "PLAIN", StartedAt: t0, AuthenticatedAt: t0.Add(time.Second), Device: "dev\x00\n1"},
		{ID: 2, Protocol: "smtp", Client: netip.MustParseAddrPort("192.0.2.1:25"), State: accounting.StatePreauth, StartedAt: t0},
	}
	got, err := decodeInfos(encodeInfos(infos))
	if err != nil || !reflect.DeepEqual(got, infos) {
		t.Fatalf("infos round trip: %v\n got %+v\nwant %+v", err, got, infos)
	}
	rows := []accounting.UserRow{{User: "bob@example.com", Protocols: []string{"imap", "xmpp"}, ProtocolEnabled: true,
		Connections: 3, IPs: []accounting.IPCount{{IP: netip.MustParseAddr("192.0.2.1"), Count: 2}, {IP: netip.MustParseAddr("::1"), Count: 1}},
		Duration: 90 * time.Second, LastLogin: t0, LastIP: netip.MustParseAddr("192.0.2.1")},
		{User: "", Protocols: []string{"imap"}, DomainEnabled: true, Connections: 1, IPs: []accounting.IPCount{{IP: netip.MustParseAddr("10.0.0.1"), Count: 1}}}}
	gr, err := decodeRows(encodeRows(rows))
	if err != nil || !reflect.DeepEqual(gr, rows) {
		t.Fatalf("rows round trip: %v\n got %+v\nwant %+v", err, gr, rows)
	}
	// Truncated data is an error, never a panic or a huge allocation.
	b := encodeInfos(infos)
	for n := 0; n < len(b); n++ {
		if _, err := decodeInfos(b[:n]); err == nil {
			t.Fatalf("decodeInfos of %d of %d bytes: no error", n, len(b))
		}
	}
	if _, err := decodeRows([]byte{0xff, 0xff, 0xff, 0xff, 0x0f}); err == nil {
		t.Fatal("a huge row count was accepted")
	}
}
