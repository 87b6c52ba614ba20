package httpmail

import (
	"bytes"
	"io"
	"mime"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
)

// WebDAV names resources by URL in places a reverse proxy does not see by
// default: the Destination of COPY and MOVE, the resource tags of the If
// header, Location and Content-Location, and the DAV:href elements of XML
// bodies (207 Multi-Status, LOCK's lockroot, error bodies, and CalDAV
// multiget requests). When a route maps paths (Route.RewriteURLs: a
// Backend with a base path, or StripPrefix for a backend that ignores
// X-Script-Name) this front translates all of them:
//
//   - client to backend: Destination and every If resource tag that names a
//     resource of the same route (an absolute URL on this front's host, or
//     an absolute path) get the backend's path, and the backend's scheme and
//     host when they were absolute. State tokens (<opaquelocktoken:…>) and
//     entity tags are never touched. A Destination on another host, on
//     another route, or outside every route is refused with 502 Bad
//     Gateway (RFC 4918 §9.8.5 and §9.9.4: the destination is on another
//     server or namespace), one that is not an absolute URL or path, or
//     that has "." or ".." segments, with 400, before anything reaches the
//     backend: forwarded as written, the backend would resolve such a path
//     in its own namespace, which is not the one the client sees.
//   - backend to client: Location, Content-Location and DAV:href values
//     under the backend's root (absolute paths, or absolute URLs on the
//     backend's host) get the client-facing path, and this front's scheme
//     and host when they were absolute. Anything else passes as it came.
//
// A route that does not map paths still gets the scheme and host part: an
// absolute Destination or If tag naming this front is sent with the
// backend's origin (mod_dav refuses a Destination whose scheme is not its
// own, so COPY from an https client to an http backend fails otherwise),
// and a Location or Content-Location naming the backend gets this front's
// origin. Its bodies stream untouched.
//
// Hrefs are percent-encoded paths: prefixes are compared on the decoded
// characters (an encoded "/" never matches a separator), and the rest of a
// value keeps the encoding it came with.

// davURLs translates the URLs of one WebDAV request.
type davURLs struct {
	s           *Server
	st          *reqState
	host        string // the request's Host, for routing references
	paths       bool   // the client-facing path differs from the backend's
	clientRoot  string // decoded, ends in "/"
	backendRoot string // decoded, ends in "/"
	frontScheme string
	frontHost   string
	backScheme  string
	backHost    string   // the host the backend is addressed by
	backHosts   []string // hosts the backend may name itself by
}

func (s *Server) newDavURLs(st *reqState, r *http.Request) *davURLs {
	rt := st.rt
	d := &davURLs{s: s, st: st, host: r.Host, frontScheme: "http", frontHost: frontHost(r, st),
		backScheme: rt.Backend.Scheme, backHost: rt.Backend.Host, backHosts: []string{rt.Backend.Host}}
	if st.tls {
		d.frontScheme = "https"
	}
	if rt.PreserveHost {
		d.backHost = r.Host
		d.backHosts = append(d.backHosts, r.Host)
	}
	d.backendRoot = withSlash(rt.Backend.Path)
	d.clientRoot = "/"
	if rt.StripPrefix && st.prefix != "" {
		d.clientRoot = withSlash(st.prefix)
	}
	d.paths = rt.rewrite && d.clientRoot != d.backendRoot
	return d
}

// frontHost is the host the client addressed: the request's Host, or the
// X-Forwarded-Host of a trusted forwarder.
func frontHost(r *http.Request, st *reqState) string {
	if st.viaForwarder {
		if fh := strings.TrimSpace(strings.Split(r.Header.Get("X-Forwarded-Host"), ",")[0]); fh != "" {
			return fh
		}
	}
	return r.Host
}

func withSlash(p string) string {
	if !strings.HasSuffix(p, "/") {
		return p + "/"
	}
	return p
}

// sameHost compares the authority of a URL (with its scheme) against a
// host this side knows: the names without case, and the ports when either
// gives one (a missing port is its scheme's default).
func sameHost(authority, scheme, known, knownScheme string) bool {
	h1, p1 := splitHostPort(authority)
	h2, p2 := splitHostPort(known)
	if !strings.EqualFold(h1, h2) {
		return false
	}
	if p1 == "" && p2 == "" {
		return true
	}
	return orPort(p1, scheme) == orPort(p2, knownScheme)
}

func splitHostPort(a string) (host, port string) {
	if h, p, err := net.SplitHostPort(a); err == nil {
		return h, p
	}
	return strings.Trim(a, "[]"), ""
}

func orPort(p, scheme string) string {
	switch {
	case p != "":
		return p
	case strings.EqualFold(scheme, "https"):
		return "443"
	}
	return "80"
}

// splitAbsolute splits an absolute http(s) URL into scheme, authority and
// the rest (path, query, fragment, as written).
func splitAbsolute(v string) (scheme, authority, rest string, ok bool) {
	i := strings.Index(v, "://")
	if i <= 0 {
		return "", "", "", false
	}
	scheme = v[:i]
	if !strings.EqualFold(scheme, "http") && !strings.EqualFold(scheme, "https") {
		return "", "", "", false
	}
	after := v[i+3:]
	end := strings.IndexAny(after, "/?#")
	if end < 0 {
		end = len(after)
	}
	authority, rest = after[:end], after[end:]
	if authority == "" || strings.ContainsAny(authority, "@ \t") {
		return "", "", "", false
	}
	return scheme, authority, rest, true
}

// cutPath removes a decoded prefix from a percent-encoded path and returns
// the encoded rest. An encoded "/" (%2F) never matches a "/" of the prefix.
func cutPath(raw, prefix string) (string, bool) {
	i := 0
	for j := 0; j < len(prefix); j++ {
		if i >= len(raw) {
			return "", false
		}
		c := raw[i]
		if c == '%' && i+2 < len(raw) && ishex(raw[i+1]) && ishex(raw[i+2]) {
			c = unhex(raw[i+1])<<4 | unhex(raw[i+2])
			if c == '/' {
				return "", false
			}
			i += 3
		} else {
			i++
		}
		if c != prefix[j] {
			return "", false
		}
	}
	return raw[i:], true
}

func ishex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case '0' <= c && c <= '9':
		return c - '0'
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10
	}
	return c - 'A' + 10
}

func escapedPath(p string) string { return (&url.URL{Path: p}).EscapedPath() }

// mapPathBack maps an encoded backend path (possibly with ?query or
// #fragment) to the client-facing one, if it is under the backend's root.
func (d *davURLs) mapPathBack(v string) (string, bool) {
	end := strings.IndexAny(v, "?#")
	if end < 0 {
		end = len(v)
	}
	raw, tail := v[:end], v[end:]
	if rest, ok := cutPath(raw, d.backendRoot); ok {
		return escapedPath(d.clientRoot) + rest + tail, true
	}
	if root := strings.TrimSuffix(d.backendRoot, "/"); root != "" {
		if rest, ok := cutPath(raw, root); ok && rest == "" {
			// The root itself without its slash ("/dav" for "/dav/").
			cr := strings.TrimSuffix(d.clientRoot, "/")
			if cr == "" {
				cr = "/"
			}
			return escapedPath(cr) + tail, true
		}
	}
	return v, false
}

// toClient maps a URL the backend wrote (Location, Content-Location, an
// href) to what the client must see. ok is false when it is left as is.
func (d *davURLs) toClient(v string) (string, bool) {
	if strings.HasPrefix(v, "/") && !strings.HasPrefix(v, "//") {
		if !d.paths {
			return v, false
		}
		return d.mapPathBack(v)
	}
	scheme, authority, rest, ok := splitAbsolute(v)
	if !ok {
		return v, false
	}
	known := false
	for _, h := range d.backHosts {
		if sameHost(authority, scheme, h, d.backScheme) {
			known = true
			break
		}
	}
	if !known {
		return v, false
	}
	if d.paths {
		if rest == "" {
			rest = "/"
		}
		if rest, ok = d.mapPathBack(rest); !ok {
			return v, false // under the backend's host but not what the route serves
		}
	}
	return d.frontScheme + "://" + d.frontHost + rest, true
}

// toBackend maps a URL the client wrote (Destination, an If resource tag,
// an href in a request body) to the backend's form. code is 0 when it
// could be mapped (out may equal ref), 400 when it is not an absolute URL
// or path or has dot segments, 502 when it names another server, another
// route or no route.
func (d *davURLs) toBackend(ref string) (out string, code int) {
	u, err := url.Parse(ref)
	if err != nil || u.Opaque != "" || u.User != nil {
		return ref, http.StatusBadRequest
	}
	abs := u.Scheme != "" || u.Host != ""
	if abs {
		if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" ||
			!sameHost(u.Host, u.Scheme, d.frontHost, d.frontScheme) {
			return ref, http.StatusBadGateway
		}
	} else if !strings.HasPrefix(u.Path, "/") {
		return ref, http.StatusBadRequest
	}
	if dotSegments(u.Path) {
		return ref, http.StatusBadRequest
	}
	fake := &http.Request{URL: &url.URL{Path: u.Path, RawPath: u.RawPath, RawQuery: u.RawQuery}, Host: d.host}
	rt, prefix := d.s.match(fake)
	if rt != d.st.rt {
		return ref, http.StatusBadGateway
	}
	path := u.EscapedPath()
	if d.paths {
		path = rt.targetURL(fake, prefix, false).EscapedPath()
	}
	if !abs {
		if !d.paths {
			return ref, 0
		}
		out = path
	} else {
		out = d.backScheme + "://" + d.backHost + path
	}
	if u.RawQuery != "" {
		out += "?" + u.RawQuery
	}
	return out, 0
}

// rewriteIf maps the resource tags of an If header (RFC 4918 §10.4):
// "<URL>" outside parentheses. State tokens and entity tags inside the
// lists pass unchanged; a header that does not parse passes unchanged.
func rewriteIf(v string, mapRef func(string) (string, bool)) string {
	var b strings.Builder
	inList := false
	for i := 0; i < len(v); {
		switch c := v[i]; c {
		case '<':
			j := strings.IndexByte(v[i+1:], '>')
			if j < 0 {
				return v
			}
			ref := v[i+1 : i+1+j]
			if !inList {
				if m, ok := mapRef(ref); ok {
					ref = m
				}
			}
			b.WriteByte('<')
			b.WriteString(ref)
			b.WriteByte('>')
			i += j + 2
		case '(':
			if inList {
				return v
			}
			inList = true
			b.WriteByte(c)
			i++
		case ')':
			if !inList {
				return v
			}
			inList = false
			b.WriteByte(c)
			i++
		case '[':
			// An entity tag: ["W/"] quoted-string; its characters may
			// include "]", ">" and "<".
			k := i + 1
			if strings.HasPrefix(v[k:], "W/") {
				k += 2
			}
			if k >= len(v) || v[k] != '"' {
				return v
			}
			q := strings.IndexByte(v[k+1:], '"')
			if q < 0 {
				return v
			}
			k += q + 2
			for k < len(v) && (v[k] == ' ' || v[k] == '\t') {
				k++
			}
			if k >= len(v) || v[k] != ']' {
				return v
			}
			b.WriteString(v[i : k+1])
			i = k + 1
		default:
			b.WriteByte(c)
			i++
		}
	}
	return b.String()
}

// destination checks and maps the Destination of a COPY or MOVE. It
// returns the value to send (or none, when the header is absent) and a
// status to answer instead when it cannot be forwarded.
func (d *davURLs) destination(r *http.Request) (string, int) {
	v := strings.TrimSpace(r.Header.Get("Destination"))
	if v == "" {
		return "", 0
	}
	return d.toBackend(v)
}

// request adjusts the backend request: Destination (checked before, in
// st.destination), If, and the hrefs of an XML body.
func (d *davURLs) request(out *http.Request) {
	if d.st.destination != "" {
		out.Header.Set("Destination", d.st.destination)
	}
	if vs := out.Header.Values("If"); len(vs) > 0 {
		for i, v := range vs {
			vs[i] = rewriteIf(v, func(ref string) (string, bool) {
				m, code := d.toBackend(ref)
				return m, code == 0
			})
		}
	}
	if !d.paths {
		return
	}
	if out.Method != http.MethodGet && out.Method != http.MethodHead {
		// Bodies this front may rewrite must arrive uncompressed.
		out.Header.Del("Accept-Encoding")
	}
	if !davXMLMethod(out.Method) || out.Body == nil || out.Body == http.NoBody ||
		!isXML(out.Header.Get("Content-Type")) || !identityEncoding(out.Header.Get("Content-Encoding")) {
		return
	}
	limit := d.s.opts.davBodyLimit()
	buf, err := io.ReadAll(io.LimitReader(out.Body, limit+1))
	switch {
	case err != nil:
		// Forward what came and then the error: the transport fails the
		// request and proxyError answers it (400 for a framing error).
		out.Body = io.NopCloser(io.MultiReader(bytes.NewReader(buf), errReader{err}))
		return
	case int64(len(buf)) > limit:
		d.s.log.Debug("http dav request body passed unchanged", "reason", "larger than the rewrite limit",
			"method", out.Method, "limit", limit)
		out.Body = struct {
			io.Reader
			io.Closer
		}{io.MultiReader(bytes.NewReader(buf), out.Body), out.Body}
		return
	}
	nb, err := rewriteHrefs(buf, func(ref string) (string, bool) {
		m, code := d.toBackend(ref)
		return m, code == 0 && m != ref
	})
	if err != nil {
		d.s.log.Debug("http dav request body passed unchanged", "reason", err.Error(), "method", out.Method)
		nb = buf
	}
	out.Body = io.NopCloser(bytes.NewReader(nb))
	out.ContentLength = int64(len(nb))
	out.Header.Set("Content-Length", strconv.Itoa(len(nb)))
	out.Header.Del("Content-Md5")
}

// response adjusts the backend's answer: Location, Content-Location, and
// the hrefs of its XML body.
func (d *davURLs) response(resp *http.Response) {
	for _, k := range []string{"Location", "Content-Location"} {
		if v := resp.Header.Get(k); v != "" {
			if m, ok := d.toClient(v); ok {
				resp.Header.Set(k, m)
			}
		}
	}
	if !d.paths || resp.Body == nil || resp.Body == http.NoBody {
		return
	}
	method := d.st.req.Method
	if resp.StatusCode != http.StatusMultiStatus && (!davXMLMethod(method) || !isXML(resp.Header.Get("Content-Type"))) {
		return
	}
	if !identityEncoding(resp.Header.Get("Content-Encoding")) {
		d.s.log.Debug("http dav response body passed unchanged", "reason", "content-encoding", "method", method, "status", resp.StatusCode)
		return
	}
	resp.Body = newHrefRewriter(resp.Body, d.toClient, func(reason string) {
		d.s.log.Debug("http dav response body passed unchanged", "reason", reason, "method", method, "status", resp.StatusCode)
	})
	resp.ContentLength = -1
	resp.Header.Del("Content-Length")
	resp.Header.Del("Content-Md5")
}

// davXMLMethod: the methods whose XML bodies carry hrefs (GET, HEAD, POST
// and PUT carry resources, never touched; OPTIONS and DELETE none).
func davXMLMethod(m string) bool {
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodOptions, http.MethodDelete:
		return false
	}
	return true
}

func isXML(ct string) bool {
	if ct == "" {
		return false
	}
	mt, _, err := mime.ParseMediaType(ct)
	return err == nil && (mt == "application/xml" || mt == "text/xml" || strings.HasSuffix(mt, "+xml"))
}

func identityEncoding(ce string) bool {
	ce = strings.TrimSpace(ce)
	return ce == "" || strings.EqualFold(ce, "identity")
}

type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }

// wellKnownDAV reports the RFC 6764 well-known URIs (a matched prefix, any
// case, with or without a trailing slash).
func wellKnownDAV(prefix string) bool {
	p := strings.TrimSuffix(asciiLower(prefix), "/")
	return p == "/.well-known/caldav" || p == "/.well-known/carddav"
}

// wellKnownRedirect answers /.well-known/caldav and /.well-known/carddav
// with a redirect to the route's DAV root (RFC 6764 §5): 301 for the
// well-known URI itself, 308 (method kept) for a path below it, to the
// same path under the root, for clients that stored one.
func wellKnownRedirect(w http.ResponseWriter, r *http.Request, rt *route, prefix string) int {
	root := rt.davRoot
	rest := ""
	if raw, ok := cutPathFold(r.URL.EscapedPath(), strings.TrimSuffix(prefix, "/")); ok {
		rest = strings.TrimPrefix(raw, "/")
	}
	loc := escapedPath(withSlash(root)) + rest
	if rest == "" {
		loc = escapedPath(root)
	}
	if r.URL.RawQuery != "" {
		loc += "?" + r.URL.RawQuery
	}
	code := http.StatusMovedPermanently
	if rest != "" {
		code = http.StatusPermanentRedirect
	}
	w.Header().Set("Location", loc)
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	return code
}

// cutPathFold is cutPath ignoring ASCII case (route prefixes match so).
func cutPathFold(raw, prefix string) (string, bool) {
	rest, ok := cutPath(asciiLowerEscaped(raw), asciiLower(prefix))
	if !ok {
		return "", false
	}
	return raw[len(raw)-len(rest):], true
}

// asciiLowerEscaped lowercases A-Z outside %XX escapes, so that the
// escapes stay valid and indexes stay put.
func asciiLowerEscaped(s string) string {
	b := []byte(s)
	for i := 0; i < len(b); i++ {
		if b[i] == '%' {
			i += 2
			continue
		}
		if b[i] >= 'A' && b[i] <= 'Z' {
			b[i] += 'a' - 'A'
		}
	}
	return string(b)
}
