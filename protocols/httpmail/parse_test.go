package httpmail

import (
	"encoding/base64"
	"net/http"
	"net/url"
	"testing"
)

func TestParseEASQuery(t *testing.T) {
	for _, tc := range []struct {
		raw  string
		want EASQuery
		ok   bool
	}{
		{"Cmd=Sync&User=rmjones&DeviceId=v140Device&DeviceType=SmartPhone",
			EASQuery{Cmd: "Sync", User: "rmjones", DeviceID: "v140Device", DeviceType: "SmartPhone"}, true},
		{"cmd=Ping&user=alice%40example.com&deviceid=X&devicetype=Y",
			EASQuery{Cmd: "Ping", User: "alice@example.com", DeviceID: "X", DeviceType: "Y"}, true},
		// MS-ASHTTP §2.2.1.1.1.1 worked example (docs/protocols.md §7.1).
		{"jAAJBAp2MTQwRGV2aWNlAApTbWFydFBob25l",
			EASQuery{Cmd: "Sync", DeviceID: "v140Device", DeviceType: "SmartPhone", Version: 140, Base64: true}, true},
		{"jBIJBAp2MTQwRGV2aWNlAApTbWFydFBob25lCBFhbGljZUBleGFtcGxlLmNvbQ==",
			EASQuery{Cmd: "Ping", User: alice, DeviceID: "v140Device", DeviceType: "SmartPhone", Version: 140, Base64: true}, true},
		{"jBIJBAp2MTQwRGV2aWNlAApTbWFydFBob25lCBFhbGljZUBleGFtcGxlLmNvbQ%3D%3D",
			EASQuery{Cmd: "Ping", User: alice, DeviceID: "v140Device", DeviceType: "SmartPhone", Version: 140, Base64: true}, true},
		{"jAAJBAp2MTQw", EASQuery{}, false},  // truncated device id
		{"", EASQuery{}, false},              // nothing
		{"!!!not-base64", EASQuery{}, false}, // garbage
	} {
		got, ok := ParseEASQuery(tc.raw)
		if ok != tc.ok || got != tc.want {
			t.Errorf("ParseEASQuery(%q) = %+v, %v; want %+v, %v", tc.raw, got, ok, tc.want, tc.ok)
		}
	}
	// A binary device id is shown as hex.
	b := []byte{0x8c, 0x09, 0x09, 0x04, 0x04, 0x00, 0xff, 0x10, 0x20, 0x00, 0x01, 'x'}
	got, ok := ParseEASQuery(base64.StdEncoding.EncodeToString(b))
	if !ok || got.DeviceID != "00ff1020" || got.Cmd != "FolderSync" {
		t.Errorf("binary device id: %+v %v", got, ok)
	}
}

func TestJWTUser(t *testing.T) {
	for _, tc := range []struct {
		token, user, claim string
	}{
		{makeJWT(map[string]any{"upn": alice, "email": "x@y", "sub": "123"}), alice, "upn"},
		{makeJWT(map[string]any{"preferred_username": bob, "sub": "123"}), bob, "preferred_username"},
		{makeJWT(map[string]any{"email": alice, "sub": "123"}), alice, "email"},
		{makeJWT(map[string]any{"sub": "248289761001"}), "248289761001", "sub"},
		{makeJWT(map[string]any{"upn": 42, "sub": "s"}), "s", "sub"},
		{makeJWT(map[string]any{"aud": "x"}), "", ""},
		{"opaque-token-value", "", ""},
		{"a.b.c.d.e", "", ""},
		{base64.RawURLEncoding.EncodeToString([]byte(`{"typ":"JWT"}`)) + "." + base64.RawURLEncoding.EncodeToString([]byte(`{"upn":"x"}`)) + ".s", "", ""},
	} {
		u, c, ok := JWTUser(tc.token)
		if u != tc.user || c != tc.claim || ok != (tc.user != "") {
			t.Errorf("JWTUser(%.40s…) = %q %q %v, want %q %q", tc.token, u, c, ok, tc.user, tc.claim)
		}
	}
}

func TestParseAuthorization(t *testing.T) {
	for _, tc := range []struct {
		header, mech, user string
		hint               bool
	}{
		{basicAuth(alice, "pa:ss"), MechBasic, alice, false},
		{"basic " + base64.StdEncoding.EncodeToString([]byte("nocolon")), MechBasic, "", false},
		{`Digest username="alice@example.com", realm="r", nonce="n", uri="/", response="x"`, MechDigest, alice, false},
		{`Digest realm="r", username="a\"b", nonce=n`, MechDigest, `a"b`, false},
		{`Digest username*=UTF-8''j%C3%B6rg%40example.com, realm="r"`, MechDigest, "jörg@example.com", false},
		{`Digest username="5a1f…hash", userhash=true`, MechDigest, "", false},
		{"Bearer " + makeJWT(map[string]any{"upn": alice}), MechBearer, alice, true},
		{"Bearer opaque", MechBearer, "", true},
		{ntlmType1(), MechNTLM, "", false},
		{ntlmType3("", alice), MechNTLM, alice, false},
		{"Unknown abc", "", "", false},
	} {
		c := parseAuthorization(tc.header)
		if c.mech != tc.mech || c.user != tc.user || c.hint != tc.hint {
			t.Errorf("parseAuthorization(%.30q) = %+v, want mech %q user %q hint %v", tc.header, c, tc.mech, tc.user, tc.hint)
		}
	}
	if !digestStale([]string{`Digest realm="r", nonce="n2", stale=TRUE`}) || digestStale([]string{`Digest realm="r"`}) {
		t.Error("digestStale")
	}
}

func TestRouting(t *testing.T) {
	s, err := New(Options{Routes: []Route{
		{Protocol: ProtoEAS, Backend: mustURL("http://eas")},
		{Protocol: ProtoEWS, Backend: mustURL("http://ews")},
		{Protocol: ProtoMAPI, Backend: mustURL("http://mapi")},
		{Protocol: ProtoWebDAV, Backend: mustURL("http://dav"), Prefixes: []string{"/dav/", "/.well-known/caldav"}},
		{Protocol: ProtoWebmail, Backend: mustURL("http://webmail"), Host: "webmail.example.com"},
	}})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ host, path, want string }{
		{"mail.example.com", "/Microsoft-Server-ActiveSync", ProtoEAS},
		{"mail.example.com", "/microsoft-server-activesync/x", ProtoEAS},
		{"mail.example.com", "/Microsoft-Server-ActiveSyncX", ""},
		{"mail.example.com", "/EWS/Exchange.asmx", ProtoEWS},
		{"mail.example.com", "/Autodiscover/Autodiscover.xml", ProtoEWS},
		{"mail.example.com", "/mapi/emsmdb/", ProtoMAPI},
		{"mail.example.com", "/rpc/rpcproxy.dll", ProtoMAPI},
		{"mail.example.com", "/.well-known/caldav", ProtoWebDAV},
		{"mail.example.com", "/dav/alice/", ProtoWebDAV},
		{"mail.example.com", "/caldav/", ""}, // not in this route's prefixes
		{"webmail.example.com", "/", ProtoWebmail},
		{"webmail.example.com:443", "/?_task=mail", ProtoWebmail},
		{"mail.example.com", "/", ""}, // webmail is on its host only
	} {
		r := &http.Request{Host: tc.host, URL: &url.URL{Path: tc.path}}
		rt, _ := s.match(r)
		got := ""
		if rt != nil {
			got = rt.Protocol
		}
		if got != tc.want {
			t.Errorf("match(%s%s) = %q, want %q", tc.host, tc.path, got, tc.want)
		}
	}
	if _, err := New(Options{Routes: []Route{
		{Protocol: ProtoEWS, Backend: mustURL("http://a"), Prefixes: []string{"/x/"}},
		{Protocol: ProtoMAPI, Backend: mustURL("http://b"), Prefixes: []string{"/X/"}},
	}}); err == nil {
		t.Error("New accepted one prefix for two protocols")
	}
	// strip_prefix and the base path of the backend.
	rt := &route{Route: Route{Backend: mustURL("http://dav:5232/base"), StripPrefix: true}}
	u := rt.targetURL(&http.Request{URL: &url.URL{Path: "/dav/alice/cal/", RawQuery: "a=1"}}, "/dav/", false)
	if u.String() != "http://dav:5232/base/alice/cal/?a=1" {
		t.Errorf("targetURL = %s", u)
	}
}

func mustURL(s string) *url.URL {
	u, err := url.Parse(s)
	if err != nil {
		panic(err)
	}
	return u
}
