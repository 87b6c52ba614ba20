package httpmail

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
)

// TestSetRoutesSwapsBackends: after SetRoutes the next request goes to the
// new backend, with the new prefixes; a set that does not check out (a
// prefix routed twice) is refused whole and the running routes stay.
func TestSetRoutesSwapsBackends(t *testing.T) {
	f := startFront(t, frontConfig{noHTTP3: true})
	c := f.client("h1")
	second := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Backend", "second")
		w.WriteHeader(http.StatusMultiStatus)
		w.Write([]byte("<multistatus xmlns='DAV:'/>"))
	}))
	defer second.Close()
	auth := basicAuth(alice, alicePassword)
	if code, h, _ := f.do(c, "PROPFIND", "/dav/x", auth, nil); code == 0 || h.Get("X-Backend") == "second" {
		t.Fatalf("before SetRoutes: %d from %q, want the first backend", code, h.Get("X-Backend"))
	}
	u, _ := url.Parse(second.URL)
	bad := []Route{{Protocol: ProtoWebDAV, Backend: u, Prefixes: []string{"/files/"}}, {Protocol: ProtoEAS, Backend: u, Prefixes: []string{"/files/"}}}
	if err := f.srv.SetRoutes(bad); err == nil || !strings.Contains(err.Error(), "routed to both") {
		t.Fatalf("SetRoutes(a prefix twice) = %v, want a refusal", err)
	}
	if code, h, _ := f.do(c, "PROPFIND", "/dav/x", auth, nil); code == http.StatusNotFound || h.Get("X-Backend") == "second" {
		t.Fatalf("after a refused SetRoutes: %d from %q, want the first routes still", code, h.Get("X-Backend"))
	}
	if err := f.srv.SetRoutes([]Route{{Protocol: ProtoWebDAV, Backend: u, Prefixes: []string{"/files/"}}}); err != nil {
		t.Fatal(err)
	}
	if code, h, _ := f.do(c, "PROPFIND", "/files/x", auth, nil); code != http.StatusMultiStatus || h.Get("X-Backend") != "second" {
		t.Errorf("after SetRoutes: /files/ answered %d from %q, want 207 from the second backend", code, h.Get("X-Backend"))
	}
	if code, _, _ := f.do(c, "PROPFIND", "/dav/x", auth, nil); code != http.StatusNotFound {
		t.Errorf("after SetRoutes: the old prefix /dav/ answered %d, want 404", code)
	}
}
