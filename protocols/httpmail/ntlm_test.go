package httpmail

import (
	"crypto/tls"
	"encoding/base64"
	"io"
	"net/http"
	"strings"
	"testing"
)

// oneConnClient is an HTTP/1.1 client that keeps a single TCP connection.
func (f *front) oneConnClient() *http.Client {
	tr := &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: f.pool, ServerName: "127.0.0.1"},
		TLSNextProto:    map[string]func(string, *tls.Conn) http.RoundTripper{},
		MaxConnsPerHost: 1, MaxIdleConnsPerHost: 1,
	}
	c := &http.Client{Transport: tr, Timeout: waitTimeout}
	f.clients = append(f.clients, c)
	return c
}

// TestNTLMConnectionBound: the NTLM handshake on one client connection
// attributes its user; the connection's later requests without
// Authorization stay attributed and reach the same backend connection; a
// second client connection never reaches that backend connection; when the
// client connection closes, its backend connection closes.
func TestNTLMConnectionBound(t *testing.T) {
	f := startFront(t, frontConfig{})
	c1 := f.oneConnClient()
	const path = "/EWS/Exchange.asmx"
	st, hdr, _ := f.do(c1, "POST", path, "", strings.NewReader("<GetFolder/>"))
	if st != 401 || !strings.Contains(strings.Join(hdr.Values("Www-Authenticate"), ","), "NTLM") {
		t.Fatalf("anonymous request = %d %v, want 401 offering NTLM", st, hdr)
	}
	st, hdr, _ = f.do(c1, "POST", path, ntlmType1(), strings.NewReader("<GetFolder/>"))
	if st != 401 || !strings.HasPrefix(hdr.Get("Www-Authenticate"), "NTLM T") {
		t.Fatalf("NTLM leg 1 = %d %v, want 401 with a challenge", st, hdr)
	}
	st, _, _ = f.do(c1, "POST", path, ntlmType3("", alice), strings.NewReader("<GetFolder/>"))
	if st != 200 {
		t.Fatalf("NTLM leg 3 = %d, want 200", st)
	}
	if d := f.reg.User(alice).Protocols[ProtoEWS]; d.LastLogin.IsZero() {
		t.Fatalf("NTLM login not recorded: %+v", d)
	}
	if logins := f.reg.Stats().Logins[ProtoEWS]; logins["failure"] != 0 {
		t.Errorf("the handshake's challenge legs counted as failures: %v", logins)
	}
	reqs := f.fb.requests()
	pinned := reqs[len(reqs)-1].Remote
	if reqs[len(reqs)-2].Remote != pinned {
		t.Errorf("legs 1 and 3 reached different backend connections: %s, %s", reqs[len(reqs)-2].Remote, pinned)
	}

	// Later requests on the connection carry no Authorization and stay alice.
	before := f.lastLogin(alice, ProtoEWS)
	done := make(chan int, 1)
	go func() {
		st, _, _ := f.do(c1, "POST", path+"?hold=1", "", strings.NewReader("<GetFolder/>"))
		done <- st
	}()
	waitFor(t, "the held request", func() bool { return f.fb.holding.Load() == 1 }, nil)
	if row := f.row(ProtoEWS, alice); row == nil || row.Connections != 1 {
		t.Fatalf("row of %s while a later request waits = %+v, want 1 connection", alice, row)
	}
	f.fb.releaseAll()
	if st := <-done; st != 200 {
		t.Fatalf("later request without Authorization = %d, want 200", st)
	}
	if !f.lastLogin(alice, ProtoEWS).After(before) && !f.lastLogin(alice, ProtoEWS).Equal(before) {
		t.Errorf("last login went back")
	}
	reqs = f.fb.requests()
	if last := reqs[len(reqs)-1]; last.Remote != pinned || last.User != alice {
		t.Errorf("later request reached %s as %q, want the pinned %s as alice", last.Remote, last.User, pinned)
	}

	// A second client connection: never the pinned backend connection, so
	// the backend sees it unauthenticated.
	c2 := f.oneConnClient()
	st, _, _ = f.do(c2, "POST", path, "", strings.NewReader("<GetFolder/>"))
	if st != 401 {
		t.Fatalf("second client connection without credentials = %d, want 401", st)
	}
	reqs = f.fb.requests()
	if last := reqs[len(reqs)-1]; last.Remote == pinned {
		t.Fatalf("the second client connection reached the first one's NTLM backend connection %s", pinned)
	}
	st, _, _ = f.do(c2, "POST", path, basicAuth(bob, bobPassword), strings.NewReader("<GetFolder/>"))
	if st != 200 {
		t.Fatalf("second client with Basic = %d", st)
	}
	if last := f.fb.requests()[len(f.fb.requests())-1]; last.Remote == pinned {
		t.Fatalf("a Basic request of another client reached the NTLM backend connection")
	}

	// Closing the client connection closes its backend connection.
	c1.CloseIdleConnections()
	waitFor(t, "the pinned backend connection to close", func() bool {
		return f.fb.connState(pinned) == http.StateClosed
	}, func() string { return f.fb.connState(pinned).String() })
}

// TestNTLMFailedAndGated: a refused leg 3 is a failed login; a gated leg 3
// is answered 403, never forwarded, and the half-done backend connection is
// closed.
func TestNTLMFailedAndGated(t *testing.T) {
	f := startFront(t, frontConfig{})
	c := f.oneConnClient()
	const path = "/mapi/emsmdb/"
	f.do(c, "POST", path, ntlmType1(), nil)
	st, _, _ := f.do(c, "POST", path, ntlmType3("BAD", alice), nil)
	if st != 401 {
		t.Fatalf("leg 3 with a bad domain = %d, want 401", st)
	}
	if l := f.reg.Stats().Logins[ProtoMAPI]; l["failure"] != 1 {
		t.Errorf("mapi logins = %v, want 1 failure", l)
	}

	if _, err := f.reg.SetProtocolEnabled(bob, ProtoMAPI, false, true); err != nil {
		t.Fatal(err)
	}
	f.do(c, "POST", path, ntlmType1(), nil)
	reqs := f.fb.requests()
	half := reqs[len(reqs)-1].Remote
	n := len(reqs)
	st, _, body := f.do(c, "POST", path, ntlmType3("EXAMPLE", bob), nil)
	if st != 403 || !strings.Contains(body, `"disabled"`) {
		t.Fatalf("gated leg 3 = %d %q, want 403 with the JSON error", st, body)
	}
	if got := len(f.fb.requests()); got != n {
		t.Fatalf("the gated leg 3 reached the backend (%d requests, want %d)", got, n)
	}
	waitFor(t, "the half-done backend connection to close", func() bool { return f.fb.connState(half) == http.StateClosed }, nil)
}

func TestParseNTLM(t *testing.T) {
	for _, tc := range []struct {
		name           string
		msg            []byte
		typ            int
		domain, user   string
		identity       string
		wantErr, anony bool
	}{
		{name: "unicode upn", msg: ntlmType3Msg("", alice, true), typ: 3, user: alice, identity: alice},
		{name: "unicode domain", msg: ntlmType3Msg("EXAMPLE", "alice", true), typ: 3, domain: "EXAMPLE", user: "alice", identity: `EXAMPLE\alice`},
		{name: "oem", msg: ntlmType3Msg("EXAMPLE", "bob", false), typ: 3, domain: "EXAMPLE", user: "bob", identity: `EXAMPLE\bob`},
		{name: "oem latin-1", msg: ntlmType3Msg("", "j\xf6rg", false), typ: 3, user: "jörg", identity: "jörg"},
		{name: "type 2", msg: ntlmType2(), typ: 2},
		{name: "short", msg: []byte("NTLMSSP\x00\x03\x00\x00\x00"), wantErr: true},
		{name: "no signature", msg: []byte("XTLMSSP\x00\x01\x00\x00\x00"), wantErr: true},
		{name: "field out of bounds", msg: func() []byte {
			b := ntlmType3Msg("", alice, true)
			b[40] = 0xff // user offset far beyond the message
			return b
		}(), wantErr: true},
		{name: "odd utf-16", msg: func() []byte {
			b := ntlmType3Msg("", alice, true)
			b[36]-- // user length odd
			return b
		}(), wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, err := ParseNTLM(tc.msg)
			if (err != nil) != tc.wantErr {
				t.Fatalf("ParseNTLM() err = %v, want error %v", err, tc.wantErr)
			}
			if err != nil {
				return
			}
			if m.Type != tc.typ || m.Domain != tc.domain || m.User != tc.user || m.Identity() != tc.identity {
				t.Errorf("ParseNTLM() = %+v (identity %q), want type %d domain %q user %q identity %q", m, m.Identity(), tc.typ, tc.domain, tc.user, tc.identity)
			}
		})
	}
	// Negotiate wrapping NTLMSSP in SPNEGO: found by its signature.
	spnego := append([]byte{0xa1, 0x81, 0x9f, 0x30, 0x81, 0x9c, 0xa2, 0x81, 0x99, 0x04, 0x81, 0x96}, ntlmType3Msg("", alice, true)...)
	c := parseAuthorization("Negotiate " + base64.StdEncoding.EncodeToString(spnego))
	if c.user != alice || c.mech != MechNegotiate || !c.connBound || c.ntlmType != 3 {
		t.Errorf("Negotiate(SPNEGO(NTLM type 3)) = %+v, want %s, negotiate, connection-bound", c, alice)
	}
	if c := parseAuthorization("Negotiate YIIKerberosOpaque"); c.user != "" || !c.connBound {
		t.Errorf("Negotiate Kerberos = %+v, want no user, connection-bound", c)
	}
}

// drain reads and closes a response body.
func drain(resp *http.Response) {
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
}
