package adminapi

import (
	"embed"
	"net/http"
	"strconv"
)

// The admin web page: the User Connections view in plain HTML, CSS and
// JavaScript, embedded in the binary. There is no build step: the files
// under web/ are what the browser runs.
//
// The page holds no data, so it is served without a token; everything it
// shows comes from the /api/v1 routes, called by app.js with the bearer
// token the administrator types in (kept in sessionStorage).

//go:embed web/index.html web/app.js web/style.css web/favicon.svg
var webFiles embed.FS

// pageCSP allows the page's own files and API only: no inline script or
// style, no framing, no plugins. app.js sets element positions through the
// CSSOM, which style-src does not restrict.
const pageCSP = "default-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'; object-src 'none'"

// pageAssets are the files under /ui/ with their content types, set here
// rather than guessed from the system's MIME table.
var pageAssets = map[string]string{
	"app.js":      "text/javascript; charset=utf-8",
	"style.css":   "text/css; charset=utf-8",
	"favicon.svg": "image/svg+xml",
}

// routePage registers the page: GET / is index.html, GET /ui/{file} its
// assets. Anything else stays a JSON 404.
func (s *Server) routePage() {
	s.handle("GET /{$}", "", func(w http.ResponseWriter, r *http.Request) error {
		return servePageFile(w, r, "index.html", "text/html; charset=utf-8")
	})
	s.handle("GET /ui/{file}", "", func(w http.ResponseWriter, r *http.Request) error {
		name := r.PathValue("file")
		ctype, ok := pageAssets[name]
		if !ok {
			return notFound("no such file: %s", quote(name))
		}
		return servePageFile(w, r, name, ctype)
	})
}

// servePageFile writes one embedded file with the page's security headers.
// The query string is ignored.
func servePageFile(w http.ResponseWriter, r *http.Request, name, ctype string) error {
	b, err := webFiles.ReadFile("web/" + name)
	if err != nil {
		return err // a file listed above is missing from the embed: a bug
	}
	h := w.Header()
	h.Set("Content-Type", ctype)
	h.Set("Content-Length", strconv.Itoa(len(b)))
	h.Set("Content-Security-Policy", pageCSP)
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cross-Origin-Opener-Policy", "same-origin")
	w.WriteHeader(http.StatusOK)
	if r.Method != http.MethodHead {
		w.Write(b)
	}
	return nil
}
