package httpmail

import (
	"bufio"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// sendRaw writes pre (a PROXY header or nothing) and an HTTP/1.1 request
// on a new connection (TLS when useTLS) and returns the response, or the
// error that ended the connection.
func (f *front) sendRaw(addr string, useTLS bool, pre, req string) (*http.Response, error) {
	f.t.Helper()
	raw, err := net.Dial("tcp", addr)
	if err != nil {
		f.t.Fatal(err)
	}
	f.t.Cleanup(func() { raw.Close() })
	raw.SetDeadline(time.Now().Add(waitTimeout))
	if _, err := io.WriteString(raw, pre); err != nil {
		return nil, err
	}
	var c net.Conn = raw
	if useTLS {
		tc := tls.Client(raw, &tls.Config{RootCAs: f.pool, ServerName: "127.0.0.1", NextProtos: []string{"http/1.1"}})
		if err := tc.Handshake(); err != nil {
			return nil, err
		}
		c = tc
	}
	if _, err := io.WriteString(c, req); err != nil {
		return nil, err
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err == nil {
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	return resp, err
}

// TestProxyProtocolTrusted: a trusted peer's PROXY header names the client,
// which accounting and the backend (X-Forwarded-For, Forwarded, X-Real-IP)
// see; client-sent address headers are replaced.
func TestProxyProtocolTrusted(t *testing.T) {
	f := startFront(t, frontConfig{plain: true, opts: func(o *Options) {
		o.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
		o.RequireProxyHeader = true
	}})
	req := "PROPFIND /dav/ HTTP/1.1\r\nHost: mail.example.com\r\nAuthorization: " + basicAuth(alice, alicePassword) +
		"\r\nX-Forwarded-For: 6.6.6.6\r\nX-Real-IP: 6.6.6.6\r\nForwarded: for=6.6.6.6\r\nContent-Length: 0\r\n\r\n"
	for _, tc := range []struct {
		name, addr string
		tls        bool
		pre        string
		want       string
	}{
		{"https v1", f.https, true, "PROXY TCP4 203.0.113.7 127.0.0.1 40000 443\r\n", "203.0.113.7"},
		{"plain v1", f.plain, false, "PROXY TCP4 203.0.113.8 127.0.0.1 40000 80\r\n", "203.0.113.8"},
		{"https v2", f.https, true, proxyV2("198.51.100.9"), "198.51.100.9"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := f.sendRaw(tc.addr, tc.tls, tc.pre, req)
			if err != nil || resp.StatusCode != 207 {
				t.Fatalf("request = %v %v, want 207", resp, err)
			}
			reqs := f.fb.requests()
			h := reqs[len(reqs)-1].Header
			if h.Get("X-Forwarded-For") != tc.want || h.Get("X-Real-Ip") != tc.want || !strings.HasPrefix(h.Get("Forwarded"), "for="+tc.want+";") {
				t.Errorf("backend headers XFF=%q X-Real-IP=%q Forwarded=%q, want %s", h.Get("X-Forwarded-For"), h.Get("X-Real-Ip"), h.Get("Forwarded"), tc.want)
			}
			if d := f.reg.User(alice).Protocols[ProtoWebDAV]; d.LastIP.String() != tc.want {
				t.Errorf("last authenticated IP = %s, want %s", d.LastIP, tc.want)
			}
		})
	}
	t.Run("missing header refused", func(t *testing.T) {
		if resp, err := f.sendRaw(f.plain, false, "", req); err == nil {
			t.Fatalf("a trusted peer without the required header was served: %d", resp.StatusCode)
		}
	})
}

// proxyV2 is a PROXY v2 header for a TCP4 client.
func proxyV2(src string) string {
	a := netip.MustParseAddr(src).As4()
	b := []byte("\r\n\r\n\x00\r\nQUIT\n\x21\x11\x00\x0c")
	b = append(b, a[:]...)
	b = append(b, 127, 0, 0, 1, 0x9c, 0x40, 0x01, 0xbb)
	return string(b)
}

// TestProxyProtocolUntrusted: a PROXY header from a peer outside the
// trusted networks refuses the connection; without one the peer is served
// under its own address and its forwarding headers are dropped.
func TestProxyProtocolUntrusted(t *testing.T) {
	f := startFront(t, frontConfig{plain: true, opts: func(o *Options) {
		o.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}
	}})
	req := "PROPFIND /dav/ HTTP/1.1\r\nHost: x\r\nAuthorization: " + basicAuth(alice, alicePassword) +
		"\r\nX-Forwarded-For: 6.6.6.6\r\nTrue-Client-IP: 6.6.6.6\r\nContent-Length: 0\r\n\r\n"
	for _, addr := range []string{f.https, f.plain} {
		if resp, err := f.sendRaw(addr, addr == f.https, "PROXY TCP4 203.0.113.7 127.0.0.1 1 2\r\n", req); err == nil {
			t.Errorf("%s: an untrusted PROXY header was accepted: %d", addr, resp.StatusCode)
		}
	}
	// A method starting like the signature is not a header.
	resp, err := f.sendRaw(f.plain, false, "", req)
	if err != nil || resp.StatusCode != 207 {
		t.Fatalf("plain PROPFIND = %v %v, want 207", resp, err)
	}
	reqs := f.fb.requests()
	h := reqs[len(reqs)-1].Header
	if h.Get("X-Forwarded-For") != "127.0.0.1" || h.Get("True-Client-Ip") != "" {
		t.Errorf("backend got X-Forwarded-For %q True-Client-IP %q, want 127.0.0.1 and none", h.Get("X-Forwarded-For"), h.Get("True-Client-Ip"))
	}
	if h.Get("X-Forwarded-Proto") != "http" {
		t.Errorf("X-Forwarded-Proto = %q on the plain listener", h.Get("X-Forwarded-Proto"))
	}
}

// TestTrustedForwarder: behind a trusted load balancer on the plain
// listener, the client is the nearest untrusted X-Forwarded-For address and
// the chain is kept.
func TestTrustedForwarder(t *testing.T) {
	f := startFront(t, frontConfig{plain: true, opts: func(o *Options) {
		o.TrustedForwarders = []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32"), netip.MustParsePrefix("10.0.0.0/8")}
	}})
	req := "PROPFIND /dav/ HTTP/1.1\r\nHost: x\r\nAuthorization: " + basicAuth(alice, alicePassword) +
		"\r\nX-Forwarded-For: 192.0.2.1, 203.0.113.50, 10.1.2.3\r\nX-Forwarded-Proto: https\r\nContent-Length: 0\r\n\r\n"
	resp, err := f.sendRaw(f.plain, false, "", req)
	if err != nil || resp.StatusCode != 207 {
		t.Fatalf("request = %v %v", resp, err)
	}
	if ip := f.reg.User(alice).Protocols[ProtoWebDAV].LastIP.String(); ip != "203.0.113.50" {
		t.Errorf("client = %s, want 203.0.113.50 (the nearest untrusted hop)", ip)
	}
	reqs := f.fb.requests()
	h := reqs[len(reqs)-1].Header
	if got := h.Get("X-Forwarded-For"); got != "192.0.2.1, 203.0.113.50, 10.1.2.3, 127.0.0.1" {
		t.Errorf("X-Forwarded-For = %q, want the chain plus the balancer", got)
	}
	if h.Get("X-Forwarded-Proto") != "https" || h.Get("X-Real-Ip") != "203.0.113.50" {
		t.Errorf("X-Forwarded-Proto %q X-Real-IP %q", h.Get("X-Forwarded-Proto"), h.Get("X-Real-Ip"))
	}
}
