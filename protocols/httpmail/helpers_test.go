package httpmail

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/mailgate/mailgate/accounting"
	"github.com/mailgate/mailgate/internal/netx"
	"github.com/mailgate/mailgate/internal/testutil"
	"github.com/mailgate/mailgate/protocols/protocoltest"
	"github.com/quic-go/quic-go/http3"
)

// Generous deadlines: the machine is shared and tests run with -race.
const (
	waitTimeout = 30 * time.Second
	pollEvery   = 10 * time.Millisecond
)

const (
	alice         = "alice@example.com"
	alicePassword = "alice-secret"
	bob           = "bob@example.com"
	bobPassword   = "bob-secret"
	wrongPassword = "not-the-secret-42"
)

var testUsers = map[string]string{alice: alicePassword, bob: bobPassword}

func basicAuth(user, pass string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+pass))
}

// testCert is a self-signed certificate for 127.0.0.1 and localhost, and a
// pool that trusts it.
func testCert(t testing.TB) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	c, err := netx.SelfSigned("localhost", "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(c.Leaf)
	return c, pool
}

// tracker adapts accounting.Registry to Tracker, as cmd/mailgate does.
type tracker struct{ reg *accounting.Registry }

func (t tracker) Admit(i ConnInfo) (Conn, string) {
	c, refusal := t.reg.Admit(accounting.ConnInfo{Protocol: i.Protocol, Listener: i.Listener, Client: i.Client, TLS: i.TLS})
	if c == nil {
		return nil, refusal
	}
	return deviceConn{c}, ""
}

// deviceConn gives accounting's Conn the DeviceGate, as cmd/mailgate does.
type deviceConn struct{ *accounting.Conn }

func (c deviceConn) CheckDevice(user string, d EASDevice) string {
	return c.Conn.CheckDevice(user, accounting.Device{ID: d.ID, Type: d.Type, UserAgent: d.UserAgent, Command: d.Command})
}

// front is a running Server in front of a fake backend.
type front struct {
	t       *testing.T
	srv     *Server
	reg     *accounting.Registry
	fb      *fakeBackend
	https   string // host:port, TCP and UDP
	plain   string
	pool    *x509.CertPool
	log     *protocoltest.SyncBuffer // the server's log, debug level
	clients []*http.Client
	proto   string // the protocol of the last response of do
}

type frontConfig struct {
	regOpts  accounting.Options
	opts     func(*Options) // adjusts the options before New
	plain    bool
	noHTTP3  bool
	webmail  Webmail
	prefixes map[string][]string
}

// startFront runs a Server with every protocol routed to one fake backend,
// an accounting registry, HTTPS + HTTP/3 on 127.0.0.1 and a debug log.
func startFront(t *testing.T, fc frontConfig) *front {
	t.Helper()
	fb := newFakeBackend(t)
	cert, pool := testCert(t)
	f := &front{t: t, fb: fb, pool: pool, log: &protocoltest.SyncBuffer{}}
	f.reg = accounting.New(fc.regOpts)
	u, _ := url.Parse(fb.URL())
	var routes []Route
	for _, p := range []string{ProtoEAS, ProtoEWS, ProtoMAPI, ProtoWebDAV, ProtoWebmail} {
		routes = append(routes, Route{Protocol: p, Backend: u, Prefixes: fc.prefixes[p]})
	}
	opts := Options{
		Routes: routes, Tracker: tracker{f.reg}, Webmail: fc.webmail,
		Log:       slog.New(slog.NewTextHandler(f.log, &slog.HandlerOptions{Level: slog.LevelDebug})),
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}},
	}
	if fc.opts != nil {
		fc.opts(&opts)
	}
	srv, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	f.srv = srv
	a, err := srv.ListenTLS("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f.https = a.String()
	if !fc.noHTTP3 {
		// The same port over UDP; if another test holds it, any port.
		if _, err := srv.ListenHTTP3(f.https); err != nil {
			t.Fatalf("ListenHTTP3(%s): %v", f.https, err)
		}
	}
	if fc.plain {
		a, err := srv.ListenPlain("127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		f.plain = a.String()
	}
	t.Cleanup(func() {
		fb.releaseAll()
		for _, c := range f.clients {
			c.CloseIdleConnections()
		}
		ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
		defer cancel()
		srv.Shutdown(ctx)
		if t.Failed() {
			t.Logf("server log:\n%s", f.log.String())
		}
	})
	return f
}

// client returns an HTTP client speaking proto ("h1", "h2" or "h3") to the front.
func (f *front) client(proto string) *http.Client {
	tlsConf := &tls.Config{RootCAs: f.pool, ServerName: "127.0.0.1"}
	var rt http.RoundTripper
	switch proto {
	case "h1":
		rt = &http.Transport{TLSClientConfig: tlsConf, TLSNextProto: map[string]func(string, *tls.Conn) http.RoundTripper{}}
	case "h2":
		p := new(http.Protocols)
		p.SetHTTP2(true)
		rt = &http.Transport{TLSClientConfig: tlsConf, Protocols: p}
	case "h3":
		rt = &http3.Transport{TLSClientConfig: tlsConf}
	default:
		f.t.Fatalf("unknown proto %q", proto)
	}
	c := &http.Client{Transport: rt, Timeout: waitTimeout,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	f.clients = append(f.clients, c)
	f.t.Cleanup(func() {
		if tr, ok := rt.(*http3.Transport); ok {
			tr.Close()
		}
	})
	return c
}

func (f *front) url(path string) string { return "https://" + f.https + path }

// do sends one request and returns status, headers and body.
func (f *front) do(c *http.Client, method, path, auth string, body io.Reader, hdr ...string) (int, http.Header, string) {
	f.t.Helper()
	req, err := http.NewRequest(method, f.url(path), body)
	if err != nil {
		f.t.Fatal(err)
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := c.Do(req)
	if err != nil {
		f.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	f.proto = resp.Proto
	return resp.StatusCode, resp.Header, string(b)
}

// waitFor polls cond until it holds or waitTimeout passes.
func waitFor(t testing.TB, what string, cond func() bool, state func() string) {
	t.Helper()
	testutil.WaitFor(t, waitTimeout, what, cond, state)
}

// waitCount waits until the registry counts n live connections of protocol.
func (f *front) waitCount(protocol string, n int) {
	f.t.Helper()
	waitFor(f.t, fmt.Sprintf("%d live %s connections", n, protocol), func() bool { return f.reg.Count(protocol) == n },
		func() string { return fmt.Sprintf("count %d, summary %v", f.reg.Count(protocol), f.reg.Summary()) })
}

// row returns the registry's row of user in a protocol tab, or nil.
func (f *front) row(protocol, user string) *accounting.UserRow {
	for _, r := range f.reg.Users(protocol) {
		if r.User == user {
			return &r
		}
	}
	return nil
}

// lastLogin is the user's last login time for a protocol (zero if none).
func (f *front) lastLogin(user, protocol string) time.Time {
	return f.reg.User(user).Protocols[protocol].LastLogin
}

// rawTLS opens a raw TLS connection speaking HTTP/1.1 to the front.
func (f *front) rawTLS() *tls.Conn {
	f.t.Helper()
	c, err := tls.Dial("tcp", f.https, &tls.Config{RootCAs: f.pool, ServerName: "127.0.0.1", NextProtos: []string{"http/1.1"}})
	if err != nil {
		f.t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(waitTimeout))
	f.t.Cleanup(func() { c.Close() })
	return c
}

func containsAny(s string, subs ...string) string {
	for _, x := range subs {
		if x != "" && strings.Contains(s, x) {
			return x
		}
	}
	return ""
}
