package e2e

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// HTTP mail protocols end to end: the built binary with an http: section in
// front of a real Radicale (CalDAV/CardDAV, Basic auth through an htpasswd
// file; scripts/radicale.sh), and `mailgate demo`'s HTTPS in front of its
// embedded ActiveSync and webmail backends, driven by curl (and a websocket
// client for the webmail socket).

// curlHTTP runs curl and splits off the "\n<code> <version>" its -w prints.
func curlHTTP(t *testing.T, args ...string) (body string, code int, version string) {
	t.Helper()
	out, err := curl(t, append(args, "-w", "\n%{http_code} %{http_version}")...)
	if err != nil {
		t.Fatalf("curl %v: %v\n%s", args, err, out)
	}
	i := strings.LastIndexByte(out, '\n')
	fmt.Sscanf(out[i+1:], "%d %s", &code, &version)
	return out[:i], code, version
}

// userDetail is GET /api/v1/users/{user}.
type userDetail struct {
	Protocols map[string]struct {
		LastLogin *time.Time `json:"last_login"`
		LastIP    *string    `json:"last_authenticated_ip"`
	} `json:"protocols"`
}

func (m *mailgate) userDetail(user string) userDetail {
	m.t.Helper()
	var d userDetail
	m.apiJSON("GET", "/api/v1/users/"+url.PathEscape(user), nil, &d)
	return d
}

func (m *mailgate) waitRow(protocol, user string, conns int) {
	m.t.Helper()
	var last []apiUserRow
	waitFor(m.t, fmt.Sprintf("%s with %d live %s connections", user, conns, protocol), func() bool {
		last = m.users(protocol)
		for _, r := range last {
			if r.User == user {
				return r.Connections == conns
			}
		}
		return conns == 0
	}, func() string { return fmt.Sprintf("rows %+v", last) })
}

const eventICS = "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//mailgate e2e//EN\r\nBEGIN:VEVENT\r\nUID:mailgate-e2e-1\r\nDTSTAMP:20260101T000000Z\r\nDTSTART:20260102T100000Z\r\nDTEND:20260102T110000Z\r\nSUMMARY:mailgate e2e\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"

const cardVCF = "BEGIN:VCARD\r\nVERSION:3.0\r\nUID:mailgate-e2e-card\r\nFN:Bob Example\r\nEMAIL:bob@example.com\r\nEND:VCARD\r\n"

// TestHTTPRadicale: CalDAV and CardDAV through mailgate to Radicale over
// HTTP/1.1 and HTTP/2, attributed under webdav in the admin API.
func TestHTTPRadicale(t *testing.T) {
	radicale := needEnv(t, "Radicale", `scripts/radicale.sh start && eval "$(scripts/radicale.sh env)"`, "MAILGATE_RADICALE")[0]
	t.Parallel()
	m, httpsAddr, _, cert := serveHTTPFront(t, "http", false, radicaleRoutes(radicale))
	base := "https://" + httpsAddr + "/dav/alice%40example.com/"
	auth := []string{"--cacert", cert, "-u", alice + ":" + alicePassword}

	for _, ver := range []struct{ flag, want string }{{"--http1.1", "1.1"}, {"--http2", "2"}} {
		body, code, v := curlHTTP(t, append(auth, ver.flag, "-X", "PROPFIND", "-H", "Depth: 0", base)...)
		if code != 207 || v != ver.want {
			t.Fatalf("PROPFIND %s = %d over HTTP/%s, want 207 over HTTP/%s\n%s", ver.flag, code, v, ver.want, body)
		}
		// Radicale names its collections under the prefix it was told (X-Script-Name).
		if !strings.Contains(body, "<href>/dav/alice%40example.com/</href>") {
			t.Errorf("PROPFIND body has no href under /dav/:\n%s", body)
		}
	}
	d := m.userDetail(alice).Protocols["webdav"]
	if d.LastLogin == nil || d.LastIP == nil || *d.LastIP != "127.0.0.1" {
		t.Fatalf("webdav detail after PROPFIND = %+v, want a last login from 127.0.0.1", d)
	}

	// CalDAV: a calendar, an event, a calendar-query REPORT (HTTP/2). The
	// collections are new on every run (Radicale keeps its storage).
	run := fmt.Sprintf("%d", time.Now().UnixNano())
	if _, code, _ := curlHTTP(t, append(auth, "--http2", "-X", "MKCALENDAR", base+"cal-"+run+"/")...); code != 201 {
		t.Fatalf("MKCALENDAR = %d, want 201", code)
	}
	if _, code, _ := curlHTTP(t, append(auth, "--http2", "-X", "PUT", "-H", "Content-Type: text/calendar", "--data-binary", eventICS, base+"cal-"+run+"/e1.ics")...); code != 201 {
		t.Fatalf("PUT event = %d, want 201", code)
	}
	query := `<?xml version="1.0"?><C:calendar-query xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav"><D:prop><D:getetag/><C:calendar-data/></D:prop><C:filter><C:comp-filter name="VCALENDAR"><C:comp-filter name="VEVENT"/></C:comp-filter></C:filter></C:calendar-query>`
	body, code, _ := curlHTTP(t, append(auth, "--http2", "-X", "REPORT", "-H", "Depth: 1", "-H", "Content-Type: application/xml", "--data-binary", query, base+"cal-"+run+"/")...)
	if code != 207 || !strings.Contains(body, "mailgate-e2e-1") {
		t.Fatalf("calendar-query REPORT = %d\n%s", code, body)
	}

	// CardDAV: an address book, a card, an addressbook-query REPORT (HTTP/1.1).
	mkcol := `<?xml version="1.0"?><D:mkcol xmlns:D="DAV:" xmlns:CR="urn:ietf:params:xml:ns:carddav"><D:set><D:prop><D:resourcetype><D:collection/><CR:addressbook/></D:resourcetype></D:prop></D:set></D:mkcol>`
	if _, code, _ := curlHTTP(t, append(auth, "--http1.1", "-X", "MKCOL", "-H", "Content-Type: application/xml", "--data-binary", mkcol, base+"contacts-"+run+"/")...); code != 201 {
		t.Fatalf("MKCOL address book = %d, want 201", code)
	}
	if _, code, _ := curlHTTP(t, append(auth, "--http1.1", "-X", "PUT", "-H", "Content-Type: text/vcard", "--data-binary", cardVCF, base+"contacts-"+run+"/c1.vcf")...); code != 201 {
		t.Fatalf("PUT card = %d, want 201", code)
	}
	aq := `<?xml version="1.0"?><CR:addressbook-query xmlns:D="DAV:" xmlns:CR="urn:ietf:params:xml:ns:carddav"><D:prop><D:getetag/><CR:address-data/></D:prop></CR:addressbook-query>`
	body, code, _ = curlHTTP(t, append(auth, "--http1.1", "-X", "REPORT", "-H", "Depth: 1", "-H", "Content-Type: application/xml", "--data-binary", aq, base+"contacts-"+run+"/")...)
	if code != 207 || !strings.Contains(body, "Bob Example") {
		t.Fatalf("addressbook-query REPORT = %d\n%s", code, body)
	}

	// A wrong password is Radicale's 401, passed on.
	if _, code, _ := curlHTTP(t, "--cacert", cert, "-u", alice+":"+wrongPassword, "-X", "PROPFIND", "-H", "Depth: 0", base); code != 401 {
		t.Fatalf("PROPFIND with a wrong password = %d, want 401", code)
	}

	// A request in flight counts: a PUT whose body arrives in two halves
	// shows alice in the webdav tab until it completes.
	c, err := tls.Dial("tcp", httpsAddr, &tls.Config{ServerName: "localhost", RootCAs: httpCertPool(t, cert), NextProtos: []string{"http/1.1"}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(stepTimeout))
	ics := strings.Replace(eventICS, "mailgate-e2e-1", "mailgate-e2e-2", 1)
	fmt.Fprintf(c, "PUT /dav/alice%%40example.com/cal-%s/e2.ics HTTP/1.1\r\nHost: %s\r\nAuthorization: Basic %s\r\nContent-Type: text/calendar\r\nContent-Length: %d\r\n\r\n%s",
		run, httpsAddr, basic(alice, alicePassword), len(ics), ics[:len(ics)/2])
	m.waitSummary("webdav", 1)
	m.waitRow("webdav", alice, 1)
	io.WriteString(c, ics[len(ics)/2:])
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil || resp.StatusCode != 201 {
		t.Fatalf("the slow PUT: %v %v, want 201", resp, err)
	}
	resp.Body.Close()
	m.waitSummary("webdav", 0)
	m.waitRow("webdav", alice, 0)
}

func basic(user, pass string) string {
	return base64.StdEncoding.EncodeToString([]byte(user + ":" + pass))
}

// httpCertPool trusts the test certificate in certFile.
func httpCertPool(t *testing.T, certFile string) *x509.CertPool {
	t.Helper()
	b, err := os.ReadFile(certFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		t.Fatalf("%s holds no certificate", certFile)
	}
	return pool
}

// TestHTTPDemo: `mailgate demo` serves ActiveSync and webmail over HTTPS:
// curl's OPTIONS and FolderSync over HTTP/1.1 and HTTP/2, a Ping counted
// while it waits, the webmail login form and page, and a websocket that an
// administrator's drop closes with 1008.
func TestHTTPDemo(t *testing.T) {
	t.Parallel()
	m, httpsAddr := startHTTPDemo(t, "e2e-http-demo-token")
	base := "https://" + httpsAddr
	eas := base + "/Microsoft-Server-ActiveSync"
	auth := []string{"-k", "-u", alice + ":" + alicePassword}

	out, err := curl(t, append(auth, "--http1.1", "-i", "-X", "OPTIONS", eas)...)
	if err != nil || !strings.Contains(out, "200") || !strings.Contains(strings.ToLower(out), "ms-asprotocolversions: 2.5,12.0,12.1,14.0,14.1") ||
		!strings.Contains(strings.ToLower(out), `alt-svc: h3=":`) {
		t.Fatalf("OPTIONS: %v\n%s", err, out)
	}
	for _, ver := range []struct{ flag, want string }{{"--http1.1", "1.1"}, {"--http2", "2"}} {
		body, code, v := curlHTTP(t, append(auth, ver.flag, "-X", "POST", "-H", "MS-ASProtocolVersion: 14.1",
			eas+"?Cmd=FolderSync&User=alice&DeviceId=e2edevice&DeviceType=curl")...)
		if code != 200 || v != ver.want || !strings.Contains(body, "Inbox") {
			t.Fatalf("FolderSync %s = %d over %s\n%q", ver.flag, code, v, body)
		}
	}
	if d := m.userDetail(alice).Protocols["eas"]; d.LastLogin == nil {
		t.Fatalf("eas last login not set: %+v", d)
	}
	if _, code, _ := curlHTTP(t, "-k", "-u", alice+":"+wrongPassword, "-X", "POST", eas+"?Cmd=FolderSync&User=alice&DeviceId=e2edevice&DeviceType=curl"); code != 401 {
		t.Fatalf("FolderSync with a wrong password = %d, want 401", code)
	}

	// A Ping with an 8 s heartbeat: counted under alice while it waits.
	ping := make(chan int, 1)
	go func() {
		_, code, _ := curlHTTP(t, append(auth, "--http2", "-X", "POST", eas+"?Cmd=Ping&User=alice&DeviceId=e2edevice&DeviceType=curl&heartbeat=8")...)
		ping <- code
	}()
	m.waitSummary("eas", 1)
	m.waitRow("eas", alice, 1)
	select {
	case code := <-ping:
		if code != 200 {
			t.Fatalf("Ping = %d, want 200", code)
		}
	case <-time.After(stepTimeout):
		t.Fatal("the Ping did not return")
	}
	m.waitSummary("eas", 0)

	// Webmail: the login form, then the page with the session cookie.
	jar := filepath.Join(t.TempDir(), "cookies")
	if _, code, _ := curlHTTP(t, "-k", "-c", jar, "-d", "user="+url.QueryEscape(alice)+"&password="+wrongPassword, base+"/login"); code != 401 {
		t.Fatalf("webmail login with a wrong password = %d, want 401", code)
	}
	if _, code, _ := curlHTTP(t, "-k", "-c", jar, "-d", "user="+url.QueryEscape(alice)+"&password="+alicePassword, base+"/login"); code != 302 {
		t.Fatalf("webmail login = %d, want 302", code)
	}
	body, code, _ := curlHTTP(t, "-k", "-b", jar, base+"/mail")
	if code != 200 || !strings.Contains(body, "Inbox of "+alice) {
		t.Fatalf("GET /mail = %d\n%s", code, body)
	}
	if d := m.userDetail(alice).Protocols["webmail"]; d.LastLogin == nil {
		t.Fatalf("webmail last login not set: %+v", d)
	}
	sid := cookieFromJar(t, jar, "demo_session")

	// The page's websocket: counted as alice, dropped with 1008.
	dialer := websocket.Dialer{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, HandshakeTimeout: stepTimeout}
	ws, _, err := dialer.Dial("wss://"+httpsAddr+"/ws", http.Header{"Cookie": {"demo_session=" + sid}})
	if err != nil {
		t.Fatalf("websocket: %v", err)
	}
	defer ws.Close()
	ws.SetReadDeadline(time.Now().Add(stepTimeout))
	ws.WriteMessage(websocket.TextMessage, []byte("ping from e2e"))
	if _, p, err := ws.ReadMessage(); err != nil || string(p) != "ping from e2e" {
		t.Fatalf("websocket echo: %q %v", p, err)
	}
	m.waitRow("webmail", alice, 1)
	if n := m.drop(alice, "webmail"); n != 1 {
		t.Fatalf("drop webmail = %d, want 1", n)
	}
	for {
		_, _, err := ws.ReadMessage()
		if err == nil {
			continue
		}
		var ce *websocket.CloseError
		if !errors.As(err, &ce) || ce.Code != websocket.ClosePolicyViolation {
			t.Fatalf("after the drop: %v, want close 1008", err)
		}
		break
	}
	m.waitSummary("webmail", 0)
}

// cookieFromJar reads a cookie's value from a curl cookie jar.
func cookieFromJar(t *testing.T, jar, name string) string {
	t.Helper()
	b, err := os.ReadFile(jar)
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Split(line, "\t")
		if len(f) == 7 && f[5] == name {
			return f[6]
		}
	}
	t.Fatalf("no %s cookie in curl's jar:\n%s", name, b)
	return ""
}

// serveHTTPFront runs mailgate with an HTTPS front (HTTP/1.1 and HTTP/2, no
// HTTP/3) and, with plain, a plain HTTP listener too, serving routes: YAML
// for the route keys under http:, indented two spaces (e.g. "  webdav:\n
// backend: ..."). It returns the mailgate, the two addresses ("" without
// plain) and the certificate clients verify mailgate against.
func serveHTTPFront(t *testing.T, name string, plain bool, routes string) (m *mailgate, httpsAddr, plainAddr, cert string) {
	t.Helper()
	dir := t.TempDir()
	cert, key := writeCert(t, dir)
	httpsAddr, adminAddr := freeAddr(t), freeAddr(t)
	plainLine := ""
	if plain {
		plainAddr = freeAddr(t)
		plainLine = fmt.Sprintf("  plain_listen: %q\n", plainAddr)
	}
	token := "e2e-" + name + "-token"
	conf := fmt.Sprintf(`node: e2e-%s
log_level: debug
shutdown_timeout: 3s
admin:
  listen: %q
  token: %q
certificates:
  - cert: %q
    key: %q
http:
  listen: %q
%s  http3: false
  timeouts:
    request: 60s
%s`, name, adminAddr, token, cert, key, httpsAddr, plainLine, routes)
	path := filepath.Join(dir, "mailgate.yaml")
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	return serveConfig(t, adminAddr, token, path), httpsAddr, plainAddr, cert
}

// radicaleRoutes is the webdav route in front of the Radicale at backend
// (host:port): /dav/ and the two well-known URIs, strip_prefix, so that
// Radicale is told its prefix by X-Script-Name.
func radicaleRoutes(backend string) string {
	return fmt.Sprintf(`  webdav:
    backend: http://%s
    prefixes: [/dav/, /.well-known/caldav, /.well-known/carddav]
    strip_prefix: true
`, backend)
}

// startHTTPDemo runs `mailgate demo` on free ports with token and returns
// it and its HTTPS address.
func startHTTPDemo(t *testing.T, token string) (*mailgate, string) {
	t.Helper()
	listen, addrs := demoListenArgs(t)
	httpsAddr, adminAddr := addrs["https"], addrs["admin"]
	if httpsAddr == "" {
		t.Fatal("mailgate demo -h lists no -https flag")
	}
	return startMailgate(t, adminAddr, token, append(append([]string{"demo"}, listen...), "-token", token, "-log-level", "debug")...), httpsAddr
}
