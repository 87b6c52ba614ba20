package httpmail

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"testing/iotest"
	"time"

	"github.com/mailgate/mailgate/protocols/protocoltest"
)

// Issue 19, items 3 and 4: WebDAV under a rewritten path, and the RFC 6764
// well-known URIs. Item 5 (WARN noise) is at the end.

// davBackend records what reaches it and answers with what a test set.
type davBackend struct {
	srv  *httptest.Server
	host string // host:port
	mu   sync.Mutex
	seen []*http.Request
	body []string
	// answer writes the response (nil: 204).
	answer func(w http.ResponseWriter, r *http.Request)
	// unread: the request body is not read (so no 100 Continue is sent).
	unread bool
}

func newDAVBackend(t *testing.T) *davBackend {
	b := &davBackend{}
	b.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b.mu.Lock()
		unread := b.unread
		b.mu.Unlock()
		var body []byte
		if !unread {
			body, _ = io.ReadAll(r.Body)
		}
		b.mu.Lock()
		b.seen = append(b.seen, r)
		b.body = append(b.body, string(body))
		answer := b.answer
		b.mu.Unlock()
		if answer == nil {
			w.WriteHeader(http.StatusNoContent)
			return
		}
		answer(w, r)
	}))
	t.Cleanup(b.srv.Close)
	b.host = strings.TrimPrefix(b.srv.URL, "http://")
	return b
}

func (b *davBackend) last(t *testing.T) (*http.Request, string) {
	t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.seen) == 0 {
		t.Fatal("nothing reached the backend")
	}
	return b.seen[len(b.seen)-1], b.body[len(b.body)-1]
}

func (b *davBackend) count() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.seen)
}

func (b *davBackend) setAnswer(f func(w http.ResponseWriter, r *http.Request)) {
	b.mu.Lock()
	b.answer = f
	b.mu.Unlock()
}

// davFront is a Server with one webdav route (and a webmail route for "the
// rest") on HTTPS.
type davFront struct {
	t      *testing.T
	be     *davBackend
	addr   string // the HTTPS listener, host:port
	client *http.Client
	log    *protocoltest.SyncBuffer
}

func startDAVFront(t *testing.T, backendPath string, r Route, opts ...func(*Options)) *davFront {
	t.Helper()
	be := newDAVBackend(t)
	u, _ := url.Parse(be.srv.URL + backendPath)
	r.Protocol, r.Backend = ProtoWebDAV, u
	wm, _ := url.Parse(be.srv.URL)
	cert, pool := testCert(t)
	f := &davFront{t: t, be: be, log: &protocoltest.SyncBuffer{}}
	o := Options{
		Routes:    []Route{r, {Protocol: ProtoWebmail, Backend: wm}},
		Log:       slog.New(slog.NewTextHandler(f.log, &slog.HandlerOptions{Level: slog.LevelDebug})),
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}},
	}
	for _, fn := range opts {
		fn(&o)
	}
	srv, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	a, err := srv.ListenTLS("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f.addr = a.String()
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"}}
	f.client = &http.Client{Transport: tr, Timeout: waitTimeout,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	t.Cleanup(func() {
		tr.CloseIdleConnections()
		ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
		defer cancel()
		srv.Shutdown(ctx)
		if t.Failed() {
			t.Logf("server log:\n%s", f.log.String())
		}
	})
	return f
}

func (f *davFront) url(p string) string { return "https://" + f.addr + p }

// do sends a request; hdr is name, value pairs. It returns the response
// with its body read.
func (f *davFront) do(method, path, body string, hdr ...string) (*http.Response, string) {
	f.t.Helper()
	req, err := http.NewRequest(method, f.url(path), strings.NewReader(body))
	if err != nil {
		f.t.Fatal(err)
	}
	req.Header.Set("Authorization", basicAuth(alice, alicePassword))
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := f.client.Do(req)
	if err != nil {
		f.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		f.t.Fatalf("%s %s: reading the body: %v", method, path, err)
	}
	return resp, string(b)
}

func boolp(b bool) *bool { return &b }

// /files/ is the backend's /dav/: the Apache mod_dav layout of the issue.
func startFilesFront(t *testing.T, opts ...func(*Options)) *davFront {
	return startDAVFront(t, "/dav/", Route{Prefixes: []string{"/files/"}, StripPrefix: true}, opts...)
}

func TestIssue19_DestinationRewrittenUnderStripPrefix(t *testing.T) {
	f := startFilesFront(t)
	back := "http://" + f.be.host
	for _, tc := range []struct{ name, dest, want string }{
		{"absolute URL", f.url("/files/a%20b/x.txt"), back + "/dav/a%20b/x.txt"},
		{"absolute URL, other case of the prefix", f.url("/FILES/c/"), back + "/dav/c/"},
		{"absolute URL, default port written out", "https://" + f.addr + "/files/x", back + "/dav/x"},
		{"absolute path", "/files/dir/y%40z", "/dav/dir/y@z"},
		{"percent-encoded", f.url("/files/caf%C3%A9/%25"), back + "/dav/caf%C3%A9/%25"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, m := range []string{"COPY", "MOVE"} {
				resp, _ := f.do(m, "/files/a%20b/src.txt", "", "Destination", tc.dest, "Overwrite", "F")
				if resp.StatusCode != http.StatusNoContent {
					t.Fatalf("%s = %d", m, resp.StatusCode)
				}
				r, _ := f.be.last(t)
				if got := r.Header.Get("Destination"); got != tc.want {
					t.Errorf("%s Destination %q reached the backend as %q, want %q", m, tc.dest, got, tc.want)
				}
				if r.URL.EscapedPath() != "/dav/a%20b/src.txt" || r.Header.Get("Overwrite") != "F" {
					t.Errorf("%s reached the backend as %s (Overwrite %q)", m, r.URL.EscapedPath(), r.Header.Get("Overwrite"))
				}
				if r.Header.Get("X-Script-Name") != "" || r.Header.Get("X-Forwarded-Prefix") != "" {
					t.Errorf("the backend was told the prefix although this front maps its URLs: %v", r.Header)
				}
			}
		})
	}

	// Outside the route, or not a URL: refused here, never forwarded.
	n := f.be.count()
	for _, tc := range []struct {
		name, dest string
		code       int
	}{
		{"another host", "https://elsewhere.example/files/x", http.StatusBadGateway},
		{"another port", "https://127.0.0.1:1/files/x", http.StatusBadGateway},
		{"another route (webmail)", f.url("/webmail/x"), http.StatusBadGateway},
		{"another scheme", "ftp://" + f.addr + "/files/x", http.StatusBadGateway},
		{"dot segments", "/files/../etc/x", http.StatusBadRequest},
		{"encoded dot segments", f.url("/files/%2e%2e/x"), http.StatusBadRequest},
		{"relative reference", "x.txt", http.StatusBadRequest},
	} {
		resp, _ := f.do("MOVE", "/files/src", "", "Destination", tc.dest)
		if resp.StatusCode != tc.code {
			t.Errorf("%s: MOVE to %q = %d, want %d", tc.name, tc.dest, resp.StatusCode, tc.code)
		}
	}
	if got := f.be.count(); got != n {
		t.Errorf("%d refused COPY/MOVE requests reached the backend", got-n)
	}
}

func TestIssue19_DestinationRewrittenUnderBasePath(t *testing.T) {
	// No strip_prefix: the client path is appended to the backend's.
	f := startDAVFront(t, "/base", Route{Prefixes: []string{"/dav/"}})
	f.do("COPY", "/dav/a", "", "Destination", f.url("/dav/b%20c"))
	r, _ := f.be.last(t)
	if got, want := r.Header.Get("Destination"), "http://"+f.be.host+"/base/dav/b%20c"; got != want {
		t.Errorf("Destination = %q, want %q", got, want)
	}
	if r.URL.Path != "/base/dav/a" {
		t.Errorf("path = %q", r.URL.Path)
	}
}

func TestIssue19_DestinationPreserveHost(t *testing.T) {
	// With preserve_host the backend is addressed by the client's host: the
	// Destination names it so, with the backend's scheme.
	f := startDAVFront(t, "/dav/", Route{Prefixes: []string{"/files/"}, StripPrefix: true, PreserveHost: true})
	f.do("MOVE", "/files/a", "", "Destination", f.url("/files/b"))
	r, _ := f.be.last(t)
	if got, want := r.Header.Get("Destination"), "http://"+f.addr+"/dav/b"; got != want {
		t.Errorf("Destination = %q, want %q", got, want)
	}
}

func TestIssue19_IfHeaderResourceTagsRewritten(t *testing.T) {
	f := startFilesFront(t)
	back := "http://" + f.be.host
	token := "<opaquelocktoken:e71d4fae-5dec-22d6-fea5-00a0c91e6be4>"
	for _, tc := range []struct{ name, in, want string }{
		{"tagged, absolute URL",
			"<" + f.url("/files/x") + "> (" + token + ")",
			"<" + back + "/dav/x> (" + token + ")"},
		{"tagged lists, absolute path, Not and an entity tag with brackets",
			`</files/a%20b/> (Not <DAV:no-lock> [W/"e>(]<"]) </files/c> (["x" ] ` + token + `)`,
			`</dav/a%20b/> (Not <DAV:no-lock> [W/"e>(]<"]) </dav/c> (["x" ] ` + token + `)`},
		{"untagged lists are left alone",
			"(" + token + ") (Not <DAV:no-lock>)",
			"(" + token + ") (Not <DAV:no-lock>)"},
		{"a tag on another host is left alone",
			"<https://elsewhere.example/files/x> (" + token + ")",
			"<https://elsewhere.example/files/x> (" + token + ")"},
		{"a state token that looks like a path is left alone",
			"</files/x> (</files/not-a-tag>)",
			"</dav/x> (</files/not-a-tag>)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, _ := f.do("PUT", "/files/x", "data", "If", tc.in)
			if resp.StatusCode != http.StatusNoContent {
				t.Fatalf("PUT = %d", resp.StatusCode)
			}
			r, _ := f.be.last(t)
			if got := r.Header.Get("If"); got != tc.want {
				t.Errorf("If\n in   %s\n got  %s\n want %s", tc.in, got, tc.want)
			}
		})
	}
}

func TestIssue19_RewriteIfMalformedUnchanged(t *testing.T) {
	mapAll := func(string) (string, bool) { return "MAPPED", true }
	for _, in := range []string{"<unterminated", "((<a>)", "(<a>))", `(["unterminated)`, `([x])`} {
		if got := rewriteIf(in, mapAll); got != in {
			t.Errorf("rewriteIf(%q) = %q, want it unchanged", in, got)
		}
	}
	if got := rewriteIf("<a> (<b>) <c> (<d>)", mapAll); got != "<MAPPED> (<b>) <MAPPED> (<d>)" {
		t.Errorf("tagged lists: %q", got)
	}
}

func TestIssue19_LocationRewritten(t *testing.T) {
	f := startFilesFront(t)
	back := "http://" + f.be.host
	for _, tc := range []struct{ name, loc, want string }{
		{"absolute URL of the backend", back + "/dav/new%20dir/", f.url("/files/new%20dir/")},
		{"absolute path", "/dav/x?y=1", "/files/x?y=1"},
		{"the root without its slash", back + "/dav", f.url("/files")},
		{"outside the backend's root", back + "/other/x", back + "/other/x"},
		{"another server", "https://elsewhere.example/dav/x", "https://elsewhere.example/dav/x"},
		{"relative", "x/y", "x/y"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f.be.setAnswer(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Location", tc.loc)
				w.Header().Set("Content-Location", tc.loc)
				w.WriteHeader(http.StatusCreated)
			})
			resp, _ := f.do("MKCOL", "/files/new%20dir/", "")
			if resp.StatusCode != http.StatusCreated {
				t.Fatalf("MKCOL = %d", resp.StatusCode)
			}
			if got := resp.Header.Get("Location"); got != tc.want {
				t.Errorf("Location %q came out as %q, want %q", tc.loc, got, tc.want)
			}
			if got := resp.Header.Get("Content-Location"); got != tc.want {
				t.Errorf("Content-Location %q came out as %q, want %q", tc.loc, got, tc.want)
			}
		})
	}
}

// multistatus is a 207 body as a backend under /dav/ writes it, with
// %[1]s for the backend's origin; multistatusMapped the same as the client
// must see it, with %[1]s for this front's.
const multistatus = `<?xml version="1.0" encoding="utf-8"?>
<D:multistatus xmlns:D="DAV:" xmlns:x="urn:example">
<D:response><D:href>/dav/a%20b/</D:href><D:propstat><D:prop>
  <D:lockdiscovery><D:activelock><D:owner><D:href>/dav/the-clients-own-words</D:href></D:owner>
  <D:locktoken><D:href>opaquelocktoken:e71d4fae-5dec</D:href></D:locktoken>
  <D:lockroot><D:href>%[1]s/dav/a%20b/</D:href></D:lockroot></D:activelock></D:lockdiscovery>
  <x:href>/dav/not-dav-namespace</x:href>
</D:prop></D:propstat></D:response>
<d:response xmlns:d="DAV:"><d:href>
   %[1]s/dav/caf%C3%A9/x%40y.ics
 </d:href></d:response>
<response xmlns="DAV:"><href>/dav/q?x=1&amp;y=2</href><propstat><prop><current-user-principal><href>/principals/alice/</href></current-user-principal></prop></propstat></response>
<ns0:response xmlns:ns0="DAV:"><ns0:href><![CDATA[/dav/cdata]]></ns0:href><ns0:href/><ns0:href>https://elsewhere.example/dav/x</ns0:href></ns0:response>
<!-- <D:href>/dav/in-a-comment</D:href> -->
</D:multistatus>
`

const multistatusMapped = `<?xml version="1.0" encoding="utf-8"?>
<D:multistatus xmlns:D="DAV:" xmlns:x="urn:example">
<D:response><D:href>/files/a%20b/</D:href><D:propstat><D:prop>
  <D:lockdiscovery><D:activelock><D:owner><D:href>/dav/the-clients-own-words</D:href></D:owner>
  <D:locktoken><D:href>opaquelocktoken:e71d4fae-5dec</D:href></D:locktoken>
  <D:lockroot><D:href>%[1]s/files/a%20b/</D:href></D:lockroot></D:activelock></D:lockdiscovery>
  <x:href>/dav/not-dav-namespace</x:href>
</D:prop></D:propstat></D:response>
<d:response xmlns:d="DAV:"><d:href>
   %[1]s/files/caf%C3%A9/x%40y.ics
 </d:href></d:response>
<response xmlns="DAV:"><href>/files/q?x=1&amp;y=2</href><propstat><prop><current-user-principal><href>/principals/alice/</href></current-user-principal></prop></propstat></response>
<ns0:response xmlns:ns0="DAV:"><ns0:href>/files/cdata</ns0:href><ns0:href/><ns0:href>https://elsewhere.example/dav/x</ns0:href></ns0:response>
<!-- <D:href>/dav/in-a-comment</D:href> -->
</D:multistatus>
`

func sprintf1(format, a string) string { return strings.ReplaceAll(format, "%[1]s", a) }

func TestIssue19_MultistatusHrefsRewritten(t *testing.T) {
	f := startFilesFront(t)
	back := "http://" + f.be.host
	body := sprintf1(multistatus, back)
	f.be.setAnswer(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", `application/xml; charset="utf-8"`)
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		w.WriteHeader(http.StatusMultiStatus)
		io.WriteString(w, body)
	})
	for _, m := range []string{"PROPFIND", "REPORT", "LOCK"} {
		resp, got := f.do(m, "/files/a%20b/", "", "Depth", "1", "Accept-Encoding", "gzip")
		if resp.StatusCode != http.StatusMultiStatus {
			t.Fatalf("%s = %d", m, resp.StatusCode)
		}
		if want := sprintf1(multistatusMapped, f.url("")); got != want {
			t.Errorf("%s body:\n%s\nwant:\n%s", m, got, want)
		}
		if r, _ := f.be.last(t); r.Header.Get("Accept-Encoding") != "" {
			t.Errorf("%s: the backend was offered %q: a compressed body could not be mapped", m, r.Header.Get("Accept-Encoding"))
		}
	}
	// A GET of an XML file is a resource, never rewritten.
	f.be.setAnswer(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/xml")
		io.WriteString(w, body)
	})
	if _, got := f.do("GET", "/files/a.xml", ""); got != body {
		t.Errorf("GET of an XML file was changed:\n%s", got)
	}
}

func TestIssue19_HrefRewriterStreams(t *testing.T) {
	d := &davURLs{paths: true, clientRoot: "/files/", backendRoot: "/dav/", frontScheme: "https", frontHost: "front.example",
		backScheme: "http", backHost: "10.0.0.1:8080", backHosts: []string{"10.0.0.1:8080"}}
	in := sprintf1(multistatus, "http://10.0.0.1:8080")
	want := sprintf1(multistatusMapped, "https://front.example")
	// One byte at a time in, small reads out: offsets must hold across
	// every split.
	h := newHrefRewriter(io.NopCloser(iotest.OneByteReader(strings.NewReader(in))), d.toClient, nil)
	var out bytes.Buffer
	buf := make([]byte, 7)
	for {
		n, err := h.Read(buf)
		out.Write(buf[:n])
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if out.String() != want {
		t.Errorf("streamed:\n%s\nwant:\n%s", out.String(), want)
	}

	// A large body goes through with bounded holding back.
	var big strings.Builder
	big.WriteString(`<?xml version="1.0"?><D:multistatus xmlns:D="DAV:">`)
	for i := 0; i < 50000; i++ {
		big.WriteString("<D:response><D:href>/dav/cal/event-" + strconv.Itoa(i) + ".ics</D:href><D:status>HTTP/1.1 200 OK</D:status></D:response>\n")
	}
	big.WriteString("</D:multistatus>")
	got, err := io.ReadAll(newHrefRewriter(io.NopCloser(strings.NewReader(big.String())), d.toClient, nil))
	if err != nil {
		t.Fatal(err)
	}
	if w := strings.ReplaceAll(big.String(), "<D:href>/dav/", "<D:href>/files/"); string(got) != w {
		t.Errorf("large body: %d bytes out, want %d", len(got), len(w))
	}

	// Not XML, or cut short: what came passes, unchanged from the point of
	// the error on.
	var skipped string
	bad := `<D:multistatus xmlns:D="DAV:"><D:href>/dav/a</D:href><D:href>/dav/b</D:oops>`
	got, _ = io.ReadAll(newHrefRewriter(io.NopCloser(strings.NewReader(bad)), d.toClient, func(r string) { skipped = r }))
	if string(got) != `<D:multistatus xmlns:D="DAV:"><D:href>/files/a</D:href><D:href>/dav/b</D:oops>` || skipped == "" {
		t.Errorf("malformed body came out as %q (skipped %q)", got, skipped)
	}
	latin := `<?xml version="1.0" encoding="ISO-8859-1"?><D:href xmlns:D="DAV:">/dav/a</D:href>`
	if got, err := rewriteHrefs([]byte(latin), d.toClient); string(got) != latin || err == nil {
		t.Errorf("an ISO-8859-1 body came out as %q, %v; want it unchanged, with a reason", got, err)
	}
}

func TestIssue19_RequestBodyHrefsRewritten(t *testing.T) {
	f := startFilesFront(t, func(o *Options) { o.DAVBodyLimit = 600 })
	multiget := `<?xml version="1.0"?><C:calendar-multiget xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav">` +
		`<D:prop><D:getetag/></D:prop><D:href>/files/cal/a%20b.ics</D:href><D:href>` + f.url("/files/cal/c.ics") +
		`</D:href><D:href>/elsewhere/d.ics</D:href></C:calendar-multiget>`
	f.do("REPORT", "/files/cal/", multiget, "Content-Type", "application/xml; charset=utf-8")
	r, got := f.be.last(t)
	want := strings.NewReplacer("<D:href>/files/cal/a%20b.ics", "<D:href>/dav/cal/a%20b.ics",
		f.url("/files/cal/c.ics"), "http://"+f.be.host+"/dav/cal/c.ics").Replace(multiget)
	if got != want {
		t.Errorf("REPORT body reached the backend as\n%s\nwant\n%s", got, want)
	}
	if r.ContentLength != int64(len(want)) {
		t.Errorf("Content-Length %d for a %d-byte body", r.ContentLength, len(want))
	}
	// Over DAVBodyLimit: forwarded as it came.
	large := strings.Replace(multiget, "<D:prop>", "<D:prop>"+strings.Repeat("<D:getetag/>", 50), 1)
	f.do("REPORT", "/files/cal/", large, "Content-Type", "application/xml")
	if _, got := f.be.last(t); got != large {
		t.Errorf("a body over the limit was changed")
	}
	// A PUT body is a resource: never rewritten.
	f.do("PUT", "/files/cal/x.xml", multiget, "Content-Type", "application/xml")
	if _, got := f.be.last(t); got != multiget {
		t.Errorf("a PUT body was changed")
	}
}

func TestIssue19_RouteWithoutRewritePassesUnchanged(t *testing.T) {
	// Identity paths (no strip_prefix, no backend path): paths, bodies and
	// headers pass as they are, and the body keeps streaming with its
	// Content-Length.
	for _, tc := range []struct {
		name        string
		backendPath string
		route       Route
		path        string
		scriptName  string
	}{
		{"identity route", "", Route{Prefixes: []string{"/dav/"}}, "/dav/", ""},
		// Radicale's way: strip_prefix without a backend path; the backend
		// is told /dav and writes its URLs under it itself.
		{"strip_prefix for a prefix-aware backend", "", Route{Prefixes: []string{"/dav/"}, StripPrefix: true}, "/dav/", "/dav"},
		{"rewrite_urls: false with a backend path", "/base/", Route{Prefixes: []string{"/dav/"}, StripPrefix: true, RewriteURLs: boolp(false)}, "/dav/", "/dav"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := startDAVFront(t, tc.backendPath, tc.route)
			body := sprintf1(multistatus, "http://elsewhere.example")
			f.be.setAnswer(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "application/xml")
				w.Header().Set("Content-Length", strconv.Itoa(len(body)))
				w.Header().Set("Location", "/dav/x")
				w.WriteHeader(http.StatusMultiStatus)
				io.WriteString(w, body)
			})
			const ifHdr = "</dav/x> (<opaquelocktoken:1>)"
			resp, got := f.do("PROPFIND", tc.path+"x", "", "If", ifHdr, "Accept-Encoding", "gzip")
			if got != body || resp.Header.Get("Location") != "/dav/x" || resp.ContentLength != int64(len(body)) {
				t.Errorf("the answer was changed: Location %q, Content-Length %d, body\n%s",
					resp.Header.Get("Location"), resp.ContentLength, got)
			}
			r, _ := f.be.last(t)
			if r.Header.Get("If") != ifHdr || r.Header.Get("Accept-Encoding") != "gzip" || r.Header.Get("X-Script-Name") != tc.scriptName {
				t.Errorf("the request was changed: If %q, Accept-Encoding %q, X-Script-Name %q",
					r.Header.Get("If"), r.Header.Get("Accept-Encoding"), r.Header.Get("X-Script-Name"))
			}
			f.do("MOVE", tc.path+"x", "", "Destination", "/dav/y%20z")
			if r, _ := f.be.last(t); r.Header.Get("Destination") != "/dav/y%20z" {
				t.Errorf("a Destination path became %q", r.Header.Get("Destination"))
			}
			// Only the origin of an absolute Destination changes (mod_dav
			// refuses a Destination whose scheme is not its own).
			f.do("MOVE", tc.path+"x", "", "Destination", f.url("/dav/y"))
			if r, _ := f.be.last(t); r.Header.Get("Destination") != "http://"+f.be.host+"/dav/y" {
				t.Errorf("an absolute Destination became %q", r.Header.Get("Destination"))
			}
		})
	}
}

func TestIssue19_RewriteURLsStripWithoutBasePath(t *testing.T) {
	// rewrite_urls: true for a backend at its root that ignores
	// X-Script-Name (Apache with the DAV tree at /).
	f := startDAVFront(t, "", Route{Prefixes: []string{"/files/"}, StripPrefix: true, RewriteURLs: boolp(true)})
	f.be.setAnswer(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/xml")
		w.WriteHeader(http.StatusMultiStatus)
		io.WriteString(w, `<multistatus xmlns="DAV:"><response><href>/a/</href></response></multistatus>`)
	})
	_, got := f.do("PROPFIND", "/files/a/", "")
	if !strings.Contains(got, "<href>/files/a/</href>") {
		t.Errorf("PROPFIND body: %s", got)
	}
	f.do("MOVE", "/files/a/", "", "Destination", f.url("/files/b/"))
	if r, _ := f.be.last(t); r.Header.Get("Destination") != "http://"+f.be.host+"/b/" || r.Header.Get("X-Script-Name") != "" {
		t.Errorf("MOVE: Destination %q, X-Script-Name %q", r.Header.Get("Destination"), r.Header.Get("X-Script-Name"))
	}
}

func TestIssue19_RewriteURLsOnlyForWebDAV(t *testing.T) {
	u, _ := url.Parse("http://127.0.0.1:1/base/")
	if _, err := New(Options{Routes: []Route{{Protocol: ProtoEWS, Backend: u, RewriteURLs: boolp(true)}}}); err == nil {
		t.Error("an ews route with RewriteURLs was accepted")
	}
}

func TestCutPath(t *testing.T) {
	for _, tc := range []struct {
		raw, prefix, rest string
		ok                bool
	}{
		{"/dav/x", "/dav/", "x", true},
		{"/%64av/x%20y", "/dav/", "x%20y", true},
		{"/dav%2Fx", "/dav/", "", false}, // an encoded slash is part of a name
		{"/da", "/dav/", "", false},
		{"/DAV/x", "/dav/", "", false},
		{"/caf%C3%A9/", "/café/", "", true},
	} {
		rest, ok := cutPath(tc.raw, tc.prefix)
		if rest != tc.rest || ok != tc.ok {
			t.Errorf("cutPath(%q, %q) = %q, %v; want %q, %v", tc.raw, tc.prefix, rest, ok, tc.rest, tc.ok)
		}
	}
}

func TestIssue19_WellKnownRedirectsToDAVRoot(t *testing.T) {
	f := startDAVFront(t, "/dav/", Route{StripPrefix: true}) // the default prefixes, /dav/ first
	n := f.be.count()
	for _, tc := range []struct {
		method, path, loc string
		code              int
	}{
		{"PROPFIND", "/.well-known/caldav", "/dav/", http.StatusMovedPermanently},
		{"GET", "/.well-known/carddav", "/dav/", http.StatusMovedPermanently},
		{"GET", "/.well-known/CardDAV/", "/dav/", http.StatusMovedPermanently},
		{"GET", "/.well-known/caldav?x=1", "/dav/?x=1", http.StatusMovedPermanently},
		// What a client stored from the old second copy of the root:
		// the same resource under the root, the method kept.
		{"PROPFIND", "/.well-known/caldav/alice%40example.com/Cal/", "/dav/alice%40example.com/Cal/", http.StatusPermanentRedirect},
	} {
		resp, _ := f.do(tc.method, tc.path, "")
		if resp.StatusCode != tc.code || resp.Header.Get("Location") != tc.loc {
			t.Errorf("%s %s = %d Location %q, want %d %q", tc.method, tc.path, resp.StatusCode, resp.Header.Get("Location"), tc.code, tc.loc)
		}
	}
	if got := f.be.count(); got != n {
		t.Errorf("%d well-known requests reached the backend", got-n)
	}
	// Following the redirect reaches the DAV root.
	resp, err := (&http.Client{Transport: f.client.Transport}).Get(f.url("/.well-known/caldav"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if r, _ := f.be.last(t); resp.StatusCode != http.StatusNoContent || r.URL.Path != "/dav/" {
		t.Errorf("following the redirect: %d, backend saw %s", resp.StatusCode, r.URL.Path)
	}

	// A route with only the well-known prefixes has no root to redirect
	// to: forwarded as configured.
	g := startDAVFront(t, "", Route{Prefixes: []string{"/.well-known/caldav"}})
	if resp, _ := g.do("GET", "/.well-known/caldav", ""); resp.StatusCode != http.StatusNoContent {
		t.Errorf("only well-known prefixes: %d", resp.StatusCode)
	}
}

// TestExpectContinueUnansweredBody: a request with "Expect: 100-continue"
// whose backend answers before asking for the body (401 without
// credentials) gets that answer at once; the connection then closes
// (litmus http/expect100 through the plain listener).
func TestExpectContinueUnansweredBody(t *testing.T) {
	f := startFilesFront(t)
	f.be.mu.Lock()
	f.be.unread = true
	f.be.mu.Unlock()
	f.be.setAnswer(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusUnauthorized) })
	c, err := tls.Dial("tcp", f.addr, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"http/1.1"}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(c, "PUT /files/x HTTP/1.1\r\nHost: "+f.addr+"\r\nContent-Length: 100\r\nExpect: 100-continue\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("no answer before the body was sent: %v", err)
	}
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("status %d, want the backend's 401", resp.StatusCode)
	}
}

// Issue 19, item 5: a connection that ends before its first byte is a
// health check or a port probe, not something to warn an operator about.
func TestIssue19_SilentCloseLogsNoWarning(t *testing.T) {
	f := startFilesFront(t, func(o *Options) { o.ProxyHeaderTimeout = 300 * time.Millisecond })
	// Closed at once, reset, and silent until the PROXY-check timeout.
	c, err := net.Dial("tcp", f.addr)
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	c, err = net.Dial("tcp", f.addr)
	if err != nil {
		t.Fatal(err)
	}
	c.(*net.TCPConn).SetLinger(0)
	c.Close()
	c, err = net.Dial("tcp", f.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	waitFor(t, "three debug lines for the silent connections", func() bool {
		return strings.Count(f.log.String(), "closed before sending a byte") >= 3
	}, f.log.String)
	for _, line := range strings.Split(f.log.String(), "\n") {
		if strings.Contains(line, "level=WARN") {
			t.Errorf("a silent connection was logged as a warning: %s", line)
		}
	}
	// A PROXY header from an untrusted peer still warns.
	c2, err := net.Dial("tcp", f.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	io.WriteString(c2, "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n")
	waitFor(t, "a warning for an untrusted PROXY header", func() bool {
		return strings.Contains(f.log.String(), `level=WARN msg="http connection refused"`)
	}, f.log.String)
}

// FuzzHrefRewriter: whatever the body, nothing is lost or added when no
// href maps, and mapping never panics.
func FuzzHrefRewriter(f *testing.F) {
	f.Add(sprintf1(multistatus, "http://10.0.0.1:8080"))
	f.Add(`<D:href xmlns:D="DAV:">/dav/a</D:href>`)
	f.Add(`<a><![CDATA[x]]></a><!-- c --><?p i?>`)
	f.Fuzz(func(t *testing.T, body string) {
		out, err := io.ReadAll(newHrefRewriter(io.NopCloser(strings.NewReader(body)), func(string) (string, bool) { return "", false }, nil))
		if err != nil || string(out) != body {
			t.Fatalf("identity rewrite changed %q into %q (%v)", body, out, err)
		}
		d := &davURLs{paths: true, clientRoot: "/files/", backendRoot: "/dav/", frontScheme: "https", frontHost: "f",
			backScheme: "http", backHost: "b", backHosts: []string{"b"}}
		io.ReadAll(newHrefRewriter(io.NopCloser(iotest.HalfReader(strings.NewReader(body))), d.toClient, nil))
		if got := rewriteIf(body, func(string) (string, bool) { return "", false }); got != body {
			t.Fatalf("rewriteIf with no mapping changed %q into %q", body, got)
		}
	})
}
