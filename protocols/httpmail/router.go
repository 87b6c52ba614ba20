package httpmail

import (
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"time"
)

// route is a Route ready to serve: its prefixes, its shared backend
// transport and its reverse proxy.
type route struct {
	Route
	prefixes    []string // lowercased
	rewrite     bool     // webdav: this front maps paths (Route.RewriteURLs)
	davRoot     string   // webdav: where the well-known URIs redirect ("" for none)
	dialTimeout time.Duration
	shared      *http.Transport
	proxy       *httputil.ReverseProxy
}

func (s *Server) newRoute(r Route) (*route, error) {
	switch r.Protocol {
	case ProtoEAS, ProtoEWS, ProtoMAPI, ProtoWebDAV, ProtoWebmail:
	default:
		return nil, fmt.Errorf("httpmail: route protocol %q is not one of eas, ews, mapi, webdav, webmail", r.Protocol)
	}
	if r.Backend == nil || (r.Backend.Scheme != "http" && r.Backend.Scheme != "https") || r.Backend.Host == "" {
		return nil, fmt.Errorf("httpmail: %s backend must be an http(s) URL", r.Protocol)
	}
	rt := &route{Route: r, dialTimeout: s.opts.dialTimeout()}
	pfx := r.Prefixes
	if len(pfx) == 0 {
		pfx = DefaultPrefixes[r.Protocol]
	}
	for _, p := range pfx {
		if !strings.HasPrefix(p, "/") {
			return nil, fmt.Errorf("httpmail: %s prefix %q must start with /", r.Protocol, p)
		}
		rt.prefixes = append(rt.prefixes, asciiLower(p))
		if rt.davRoot == "" && !strings.HasPrefix(asciiLower(p), "/.well-known/") {
			rt.davRoot = p
		}
	}
	if r.Protocol != ProtoWebDAV {
		if r.RewriteURLs != nil {
			return nil, fmt.Errorf("httpmail: RewriteURLs is for the webdav route, not %s", r.Protocol)
		}
		rt.davRoot = ""
	} else if r.RewriteURLs != nil {
		rt.rewrite = *r.RewriteURLs
	} else {
		rt.rewrite = strings.Trim(r.Backend.Path, "/") != ""
	}
	rt.shared = rt.newTransport()
	rt.proxy = &httputil.ReverseProxy{
		Rewrite:        s.rewrite,
		Transport:      routeTransport{rt},
		ErrorHandler:   s.proxyError,
		ModifyResponse: s.modifyResponse,
		ErrorLog:       s.errorLog,
	}
	switch r.Protocol {
	case ProtoEAS, ProtoEWS, ProtoMAPI:
		// Long polls stream keep-alive chunks (MAPI PENDING, EWS
		// notifications): flush each write at once.
		rt.proxy.FlushInterval = -1
	}
	return rt, nil
}

// newTransport returns a backend transport for the route. HTTP/1.1 only: a
// backend connection then carries one request at a time, which NTLM needs
// and which keeps one client's request off another's connection state.
func (rt *route) newTransport() *http.Transport {
	d := &net.Dialer{Timeout: rt.dialTimeout, KeepAlive: 30 * time.Second}
	tr := &http.Transport{
		Proxy:                 nil, // never an environment proxy
		DialContext:           d.DialContext,
		TLSHandshakeTimeout:   rt.dialTimeout,
		MaxIdleConns:          256,
		MaxIdleConnsPerHost:   64,
		IdleConnTimeout:       90 * time.Second,
		ExpectContinueTimeout: time.Second,
		DisableCompression:    true, // pass the client's Accept-Encoding through
		ForceAttemptHTTP2:     false,
		TLSNextProto:          map[string]func(string, *tls.Conn) http.RoundTripper{},
	}
	if rt.TLS != nil {
		tr.TLSClientConfig = rt.TLS.Clone()
	}
	return tr
}

// routeTransport sends a request through the client connection's pinned
// backend when it has one (NTLM/Negotiate), else through the shared pool.
type routeTransport struct{ rt *route }

func (t routeTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if st := stateFrom(req.Context()); st != nil && st.pin != nil {
		return st.pin.tr.RoundTrip(req)
	}
	return t.rt.shared.RoundTrip(req)
}

// match finds the route of a request: the longest matching prefix of a
// non-webmail route, else the webmail route. It also returns the prefix.
func (s *Server) match(r *http.Request) (*route, string) {
	path := asciiLower(r.URL.Path)
	host := hostOnly(r.Host)
	var best *route
	bestPrefix := ""
	t := s.table.Load()
	for _, rt := range t.routes {
		if rt.Protocol == ProtoWebmail || (rt.Host != "" && !strings.EqualFold(rt.Host, host)) {
			continue
		}
		for _, p := range rt.prefixes {
			if len(p) > len(bestPrefix) && prefixMatch(path, p) {
				best, bestPrefix = rt, p
			}
		}
	}
	if best != nil {
		return best, r.URL.Path[:len(bestPrefix)]
	}
	if wm := t.webmail; wm != nil && (wm.Host == "" || strings.EqualFold(wm.Host, host)) {
		for _, p := range wm.prefixes {
			if len(p) > len(bestPrefix) && prefixMatch(path, p) {
				bestPrefix = p
				best = wm
			}
		}
		if best != nil {
			return best, r.URL.Path[:len(bestPrefix)]
		}
	}
	return nil, ""
}

// prefixMatch matches a lowercased path against a prefix on a segment
// boundary: "/ews/" matches "/ews/exchange.asmx", and
// "/microsoft-server-activesync" matches itself and "…/x" but not "…x".
func prefixMatch(path, prefix string) bool {
	if !strings.HasPrefix(path, prefix) {
		return false
	}
	return len(path) == len(prefix) || strings.HasSuffix(prefix, "/") || path[len(prefix)] == '/'
}

// dotSegments reports a path with "." or ".." segments: refused, so that no
// path can be routed by one prefix and resolved by the backend to another.
func dotSegments(p string) bool {
	for _, seg := range strings.Split(p, "/") {
		if seg == "." || seg == ".." {
			return true
		}
	}
	return false
}

// asciiLower lowercases A-Z only, so that indexes into the result are
// indexes into the original.
func asciiLower(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c >= 'A' && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}

func hostOnly(h string) string {
	if host, _, err := net.SplitHostPort(h); err == nil {
		return host
	}
	return strings.Trim(h, "[]")
}

// targetURL is the backend URL for r (with the prefix stripped if the route
// says so); websocket swaps the scheme to ws/wss.
func (rt *route) targetURL(r *http.Request, prefix string, websocket bool) *url.URL {
	u := *rt.Backend
	p, raw := r.URL.Path, r.URL.RawPath
	if rt.StripPrefix && prefix != "" {
		p = "/" + strings.TrimPrefix(p[len(prefix):], "/")
		raw = ""
	}
	u.Path = singleJoin(rt.Backend.Path, p)
	if raw != "" {
		u.RawPath = singleJoin(rt.Backend.EscapedPath(), raw)
	} else {
		u.RawPath = ""
	}
	u.RawQuery = r.URL.RawQuery
	if websocket {
		if u.Scheme == "https" {
			u.Scheme = "wss"
		} else {
			u.Scheme = "ws"
		}
	}
	return &u
}

func singleJoin(a, b string) string {
	switch {
	case a == "":
		return b
	case strings.HasSuffix(a, "/") && strings.HasPrefix(b, "/"):
		return a + b[1:]
	case !strings.HasSuffix(a, "/") && !strings.HasPrefix(b, "/"):
		return a + "/" + b
	}
	return a + b
}
