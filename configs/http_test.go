package configs

import (
	"strings"
	"testing"
	"time"
)

const httpBase = `
admin:
  token: test-token
certificates:
  - cert: /tmp/c.pem
    key: /tmp/k.pem
`

func TestHTTPDefaults(t *testing.T) {
	c, err := Parse([]byte(httpBase + `
http:
  listen: 127.0.0.1:1443
  eas:
    backend: https://exchange.internal
  webdav:
    backend: http://127.0.0.1:5232
    prefixes: [/dav/]
    strip_prefix: true
  webmail:
    backend: http://127.0.0.1:8080/roundcube
    login_path: /?_task=login
    user_field: _user
    cookie: roundcube_sessid
`))
	if err != nil {
		t.Fatal(err)
	}
	h := c.HTTP
	if h == nil || !*h.HTTP3 || !*h.ProxyProtocol.Require || h.ProxyProtocol.Timeout.D() != 5*time.Second {
		t.Fatalf("defaults: %+v", h)
	}
	if h.Timeouts.LongPoll.D() != 65*time.Minute || h.Timeouts.Request.D() != 10*time.Minute || h.Timeouts.ReadHeader.D() != 30*time.Second ||
		h.Timeouts.Idle.D() != 2*time.Minute || h.Timeouts.Dial.D() != 10*time.Second || h.MaxHeaderBytes != 1<<20 {
		t.Errorf("timeout defaults: %+v", h.Timeouts)
	}
	if h.Webmail.Cookie != "roundcube_sessid" || h.Webmail.UserField != "_user" || h.Webmail.SessionTTL.D() != 12*time.Hour || h.Webmail.MaxSessions != 100000 {
		t.Errorf("webmail: %+v", h.Webmail)
	}
	if !h.WebDAV.StripPrefix || h.WebDAV.Prefixes[0] != "/dav/" || h.EWS.Backend != "" {
		t.Errorf("routes: %+v", h.Routes())
	}
	if len(c.Listeners) != 0 {
		t.Errorf("listeners: %v", c.Listeners)
	}
}

func TestHTTPValidate(t *testing.T) {
	for _, tc := range []struct{ name, yaml, want string }{
		{"no listener", "http:\n  eas: {backend: http://a}\n", "http.listen: set listen"},
		{"bad listen", "http:\n  listen: x\n  eas: {backend: http://a}\n", `http.listen: "x" is not IP:port`},
		{"bad plain", "http:\n  plain_listen: 127.0.0.1\n  eas: {backend: http://a}\n", `http.plain_listen: "127.0.0.1" is not IP:port`},
		{"no backend", "http:\n  listen: 127.0.0.1:1\n", "no protocol has a backend"},
		{"bad backend", "http:\n  listen: 127.0.0.1:1\n  ews: {backend: 'ftp://x'}\n", `http.ews.backend: "ftp://x"`},
		{"prefix without slash", "http:\n  listen: 127.0.0.1:1\n  mapi: {backend: http://a, prefixes: [mapi]}\n", `http.mapi.prefixes: "mapi" must start with /`},
		{"prefix twice", "http:\n  listen: 127.0.0.1:1\n  mapi: {backend: http://a, prefixes: [/x/]}\n  ews: {backend: http://a, prefixes: [/X/]}\n", `is also routed to`},
		{"prefix without backend", "http:\n  listen: 127.0.0.1:1\n  eas: {backend: http://a}\n  ews: {prefixes: [/x/]}\n", "http.ews.prefixes: set ews.backend too"},
		{"tls options on http", "http:\n  listen: 127.0.0.1:1\n  eas: {backend: http://a, insecure_skip_verify: true}\n", "need an https backend"},
		{"short long poll", "http:\n  listen: 127.0.0.1:1\n  eas: {backend: http://a}\n  timeouts: {long_poll: 10m}\n", "http.timeouts.long_poll"},
		{"bad trusted", "http:\n  listen: 127.0.0.1:1\n  eas: {backend: http://a}\n  proxy_protocol: {trusted: [nope]}\n", "http.proxy_protocol.trusted"},
		{"bad forwarder", "http:\n  listen: 127.0.0.1:1\n  eas: {backend: http://a}\n  trusted_forwarders: [10.0.0.0/33]\n", "http.trusted_forwarders"},
		{"bad cookie", "http:\n  listen: 127.0.0.1:1\n  webmail: {backend: http://a, cookie: 'a b'}\n", "http.webmail.cookie"},
		{"bad login path", "http:\n  listen: 127.0.0.1:1\n  webmail: {backend: http://a, login_path: login}\n", "http.webmail.login_path"},
		{"unknown key", "http:\n  listen: 127.0.0.1:1\n  eas: {backend: http://a, nope: 1}\n", "unknown key nope"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(httpBase + tc.yaml))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Parse() error = %v, want one containing %q", err, tc.want)
			}
		})
	}
	// HTTPS without certificates.
	_, err := Parse([]byte("admin: {token: t}\nhttp:\n  listen: 127.0.0.1:1\n  eas: {backend: http://a}\n"))
	if err == nil || !strings.Contains(err.Error(), "http.listen: HTTPS needs at least one entry in certificates") {
		t.Fatalf("no certificates: %v", err)
	}
	// The plain listener alone needs none.
	if _, err := Parse([]byte("admin: {token: t}\nhttp:\n  plain_listen: 127.0.0.1:8080\n  webdav: {backend: http://a}\n")); err != nil {
		t.Fatalf("plain only: %v", err)
	}
}

func TestExampleHTTPSection(t *testing.T) {
	c, err := Load("mailgate.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if c.HTTP == nil || c.HTTP.Listen == "" || c.HTTP.EAS.Backend == "" || c.HTTP.Webmail.Cookie == "" {
		t.Fatalf("the example's http section: %+v", c.HTTP)
	}
}

func TestEASDevicePolicy(t *testing.T) {
	withEAS := httpBase + "http:\n  listen: 127.0.0.1:1443\n  eas: {backend: http://127.0.0.1:8080}\n"
	c, err := Parse([]byte(withEAS + "eas:\n  allow_device_types: [iPhone, ' Outlook ']\n  block_device_types: [WindowsMail]\n"))
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(c.EAS.AllowDeviceTypes, ",") + "|" + strings.Join(c.EAS.BlockDeviceTypes, ","); got != "iPhone, Outlook |WindowsMail" {
		t.Errorf("eas = %q", got)
	}
	if c, err := Parse([]byte(withEAS)); err != nil || len(c.EAS.AllowDeviceTypes)+len(c.EAS.BlockDeviceTypes) != 0 {
		t.Errorf("no eas section: %+v, %v", c.EAS, err)
	}
	for _, tc := range []struct{ name, yaml, want string }{
		{"empty type", withEAS + "eas:\n  allow_device_types: ['']\n", "eas.allow_device_types[0]: empty"},
		{"space", withEAS + "eas:\n  block_device_types: [ok, 'Windows Mail']\n", `eas.block_device_types[1]: "Windows Mail" has white space`},
		{"long", withEAS + "eas:\n  block_device_types: [" + strings.Repeat("x", 65) + "]\n", "is over 64 bytes"},
		{"both lists", withEAS + "eas:\n  allow_device_types: [iPhone]\n  block_device_types: [IPHONE]\n", `eas.block_device_types[0]: "IPHONE" is also in allow_device_types`},
		{"unknown key", withEAS + "eas:\n  allow_types: [iPhone]\n", "allow_types"},
		{"no eas route", httpBase + "http:\n  listen: 127.0.0.1:1443\n  ews: {backend: http://a}\neas:\n  block_device_types: [x]\n", "ActiveSync is not served (set http.eas.backend)"},
		{"no http", minimal + "eas:\n  block_device_types: [x]\n", "ActiveSync is not served"},
	} {
		_, err := Parse([]byte(tc.yaml))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: Parse = %v, want %q", tc.name, err, tc.want)
		}
	}
}
