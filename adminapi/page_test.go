package adminapi_test

import (
	"net/http"
	"regexp"
	"strings"
	"testing"

	"github.com/mailgate/mailgate/adminapi"
)

// TestPage_served: the page and its assets are served without a token,
// with their content types and a CSP that forbids inline code.
func TestPage_served(t *testing.T) {
	e := newEnv(t)
	for _, tc := range []struct {
		path, ctype, contains string
	}{
		{"/", "text/html; charset=utf-8", `<script src="/ui/app.js" defer></script>`},
		{"/ui/app.js", "text/javascript; charset=utf-8", "/api/v1/connections/summary"},
		{"/ui/style.css", "text/css; charset=utf-8", ":focus-visible"},
		{"/ui/favicon.svg", "image/svg+xml", "<svg"},
		{"/ui/app.js?v=2", "text/javascript; charset=utf-8", "sessionStorage"},
	} {
		t.Run(tc.path, func(t *testing.T) {
			r := e.raw("GET", tc.path, "") // no token
			if r.status != http.StatusOK {
				t.Fatalf("GET %s = %d, want 200; body %.200s", tc.path, r.status, r.body)
			}
			if got := r.header.Get("Content-Type"); got != tc.ctype {
				t.Errorf("GET %s: Content-Type = %q, want %q", tc.path, got, tc.ctype)
			}
			csp := r.header.Get("Content-Security-Policy")
			for _, d := range []string{"default-src 'self'", "frame-ancestors 'none'", "object-src 'none'"} {
				if !strings.Contains(csp, d) {
					t.Errorf("GET %s: Content-Security-Policy = %q, want it to contain %q", tc.path, csp, d)
				}
			}
			if strings.Contains(csp, "unsafe-inline") || strings.Contains(csp, "unsafe-eval") {
				t.Errorf("GET %s: Content-Security-Policy = %q allows inline code", tc.path, csp)
			}
			if got := r.header.Get("X-Content-Type-Options"); got != "nosniff" {
				t.Errorf("GET %s: X-Content-Type-Options = %q, want nosniff", tc.path, got)
			}
			if got := r.header.Get("X-Frame-Options"); got != "DENY" {
				t.Errorf("GET %s: X-Frame-Options = %q, want DENY", tc.path, got)
			}
			if !strings.Contains(string(r.body), tc.contains) {
				t.Errorf("GET %s: body does not contain %q", tc.path, tc.contains)
			}
		})
	}

	t.Run("HEAD", func(t *testing.T) {
		r := e.raw("HEAD", "/", "")
		if r.status != http.StatusOK || len(r.body) != 0 {
			t.Fatalf("HEAD / = %d with %d body bytes, want 200 and none", r.status, len(r.body))
		}
		if got := r.header.Get("Content-Type"); got != "text/html; charset=utf-8" {
			t.Errorf("HEAD /: Content-Type = %q", got)
		}
	})
	t.Run("unknown asset", func(t *testing.T) {
		wantError(t, e.raw("GET", "/ui/nope.js", ""), http.StatusNotFound, adminapi.CodeNotFound)
		wantError(t, e.raw("GET", "/ui/", ""), http.StatusNotFound, adminapi.CodeNotFound)
		wantError(t, e.raw("GET", "/ui/..%2fpage.go", ""), http.StatusNotFound, adminapi.CodeNotFound)
		wantError(t, e.raw("GET", "/index.html", ""), http.StatusNotFound, adminapi.CodeNotFound)
	})
	t.Run("wrong method", func(t *testing.T) {
		r := e.raw("POST", "/", "")
		wantError(t, r, http.StatusMethodNotAllowed, adminapi.CodeMethodNotAllowed)
	})
	t.Run("api still needs the token", func(t *testing.T) {
		wantError(t, e.raw("GET", "/api/v1/connections/summary", ""), http.StatusUnauthorized, adminapi.CodeUnauthorized)
	})
}

// TestPage_noInlineCode checks the files themselves: everything the HTML
// references is served, nothing is inline (the CSP would block it), and the
// script never hands data to the HTML parser.
func TestPage_noInlineCode(t *testing.T) {
	e := newEnv(t)
	html := string(e.raw("GET", "/", "").body)

	for _, m := range regexp.MustCompile(`(?:src|href)="([^"]+)"`).FindAllStringSubmatch(html, -1) {
		ref := m[1]
		if strings.HasPrefix(ref, "#") {
			continue
		}
		if !strings.HasPrefix(ref, "/ui/") {
			t.Errorf("index.html references %q: only the page's own /ui/ files may be loaded", ref)
			continue
		}
		if r := e.raw("GET", ref, ""); r.status != http.StatusOK {
			t.Errorf("index.html references %s, which answers %d", ref, r.status)
		}
	}
	for _, bad := range []*regexp.Regexp{
		regexp.MustCompile(`<script(?:\s[^>]*)?>\s*[^<\s]`), // a script element with a body
		regexp.MustCompile(`<style`),
		regexp.MustCompile(`\sstyle=`),
		regexp.MustCompile(`\son[a-z]+=`),
		regexp.MustCompile(`javascript:`),
		regexp.MustCompile(`(?i)https?://`),
	} {
		if loc := bad.FindStringIndex(html); loc != nil {
			t.Errorf("index.html has inline code or an external reference %q (matching %s)", html[loc[0]:min(loc[1]+20, len(html))], bad)
		}
	}

	js := string(e.raw("GET", "/ui/app.js", "").body)
	for _, bad := range []string{"innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function", "setTimeout('", "http://", "https://", "localStorage"} {
		if strings.Contains(js, bad) {
			t.Errorf("app.js uses %q: values go to the DOM as text only, requests go to this origin only, the token to sessionStorage only", bad)
		}
	}
	css := string(e.raw("GET", "/ui/style.css", "").body)
	if strings.Contains(css, "@import") || strings.Contains(css, "url(") {
		t.Errorf("style.css loads something (@import or url()): the page loads its own three files only")
	}
}

// TestPage_clusterParts: the page has the cluster banner and the node
// column, and reads the node list (page_cluster_test.go drives them in a
// browser, when chromium is there).
func TestPage_clusterParts(t *testing.T) {
	e := newEnv(t)
	html := string(e.raw("GET", "/", "").body)
	for _, want := range []string{`<section id="cluster"`, `id="cluster-degraded"`, `<th scope="col" class="c-node">Node</th>`} {
		if !strings.Contains(html, want) {
			t.Errorf("index.html lacks %s", want)
		}
	}
	js := string(e.raw("GET", "/ui/app.js", "").body)
	for _, want := range []string{"'/api/v1/nodes'", "cluster_unavailable", "This node cannot reach Redis: it serves with the last known policy; changes are refused until Redis is back"} {
		if !strings.Contains(js, want) {
			t.Errorf("app.js lacks %s", want)
		}
	}
	css := string(e.raw("GET", "/ui/style.css", "").body)
	if !strings.Contains(css, ".grid:not(.show-node) .c-node") {
		t.Errorf("style.css does not hide the node column outside a cluster")
	}
}
