package proxy

import (
	"crypto/tls"
	"net"
	"testing"

	"github.com/mailgate/mailgate/internal/netx"
)

// servedName handshakes with cfg as the server and returns the first DNS
// name of the certificate the client was given for sni.
func servedName(t *testing.T, cfg *tls.Config, sni string) string {
	t.Helper()
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	go tls.Server(a, cfg).Handshake()
	c := tls.Client(b, &tls.Config{ServerName: sni, InsecureSkipVerify: true})
	if err := c.Handshake(); err != nil {
		t.Fatal(err)
	}
	return c.ConnectionState().PeerCertificates[0].DNSNames[0]
}

func TestCertStoreBySNIAndSwap(t *testing.T) {
	var certs []tls.Certificate
	for _, name := range []string{"one.test", "two.test", "three.test"} {
		c, err := netx.SelfSigned(name)
		if err != nil {
			t.Fatal(err)
		}
		certs = append(certs, c)
	}
	store := NewCertStore(certs[:2])
	cfg := store.TLSConfig()
	for sni, want := range map[string]string{"one.test": "one.test", "two.test": "two.test", "other.test": "one.test"} {
		if got := servedName(t, cfg, sni); got != want {
			t.Errorf("SNI %s: served %s, want %s", sni, got, want)
		}
	}
	store.Set(certs[2:])
	if got := servedName(t, cfg, "two.test"); got != "three.test" {
		t.Errorf("after Set: served %s, want the only certificate left, three.test", got)
	}
	store.Set(nil)
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	go tls.Client(b, &tls.Config{InsecureSkipVerify: true}).Handshake()
	if err := tls.Server(a, cfg).Handshake(); err == nil {
		t.Error("handshake without any certificate succeeded")
	}
}
