package httpmail

import (
	"net/http"
	"net/http/httputil"
	"net/netip"
	"strings"
)

// clientAddressHeaders name a client address. A client may send any of
// them to pose as someone else, so they are dropped from every request and
// only this front's own values are sent (X-Forwarded-For, Forwarded and
// X-Real-IP; a trusted forwarder's chain is kept and extended).
var clientAddressHeaders = []string{
	"X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto", "X-Forwarded-Port",
	"X-Forwarded-Server", "X-Forwarded-Prefix", "Forwarded", "X-Real-Ip", "X-Client-Ip",
	"True-Client-Ip", "X-Originating-Ip", "X-Cluster-Client-Ip", "Cf-Connecting-Ip",
	"Fastly-Client-Ip", "X-Script-Name",
}

// clientOf returns the real client of a request and whether its link to
// the first proxy is TLS. From a trusted forwarder the client is the
// nearest X-Forwarded-For entry that is not itself a trusted forwarder,
// and X-Forwarded-Proto tells the scheme; from anyone else it is the
// connection's peer (after any PROXY header).
func (s *Server) clientOf(r *http.Request, cc *clientConn) (client netip.AddrPort, tls, via bool) {
	client, tls = cc.peer, cc.tls
	if len(s.opts.TrustedForwarders) == 0 || !s.trustedForwarder(cc.peer.Addr()) {
		return client, tls, false
	}
	var hops []string
	for _, v := range r.Header.Values("X-Forwarded-For") {
		hops = append(hops, strings.Split(v, ",")...)
	}
	for i := len(hops) - 1; i >= 0; i-- {
		a, ok := parseHop(hops[i])
		if !ok {
			break
		}
		client = netip.AddrPortFrom(a, 0)
		if !s.trustedForwarder(a) {
			break
		}
	}
	switch strings.ToLower(strings.TrimSpace(r.Header.Get("X-Forwarded-Proto"))) {
	case "https":
		tls = true
	case "http":
		tls = false
	}
	return client, tls, true
}

// parseHop reads one X-Forwarded-For entry: an address, optionally with a
// port or in brackets.
func parseHop(h string) (netip.Addr, bool) {
	h = strings.TrimSpace(h)
	if ap, err := netip.ParseAddrPort(h); err == nil {
		return ap.Addr().Unmap(), true
	}
	a, err := netip.ParseAddr(strings.Trim(h, "[]"))
	if err != nil {
		return netip.Addr{}, false
	}
	return a.Unmap(), true
}

// rewrite builds the backend request (httputil.ReverseProxy.Rewrite; the
// proxy has already removed hop-by-hop headers and the X-Forwarded-*
// and Forwarded headers from Out).
func (s *Server) rewrite(pr *httputil.ProxyRequest) {
	st := stateFrom(pr.In.Context())
	if st == nil {
		return
	}
	rt := st.rt
	target := rt.targetURL(pr.In, st.prefix, false)
	pr.Out.URL.Scheme, pr.Out.URL.Host = target.Scheme, target.Host
	pr.Out.URL.Path, pr.Out.URL.RawPath, pr.Out.URL.RawQuery = target.Path, target.RawPath, target.RawQuery
	pr.Out.Host = ""
	if rt.PreserveHost {
		pr.Out.Host = pr.In.Host
	}
	s.forwardHeaders(pr.In, pr.Out.Header, st)
	if st.dav != nil {
		st.dav.request(pr.Out)
	}
}

// forwardHeaders sets the client address headers of a backend request.
func (s *Server) forwardHeaders(in *http.Request, h http.Header, st *reqState) {
	for _, k := range clientAddressHeaders {
		h.Del(k)
	}
	proto := "http"
	if st.tls {
		proto = "https"
	}
	peer := st.cc.peer.Addr().String()
	host := in.Host
	xff, fwd := peer, ""
	if st.viaForwarder {
		if prior := strings.Join(in.Header.Values("X-Forwarded-For"), ", "); prior != "" {
			xff = prior + ", " + peer
		}
		if fh := in.Header.Get("X-Forwarded-Host"); fh != "" {
			host = fh
		}
		fwd = strings.Join(in.Header.Values("Forwarded"), ", ")
	}
	h.Set("X-Forwarded-For", xff)
	h.Set("X-Forwarded-Proto", proto)
	h.Set("X-Forwarded-Host", host)
	h.Set("X-Real-Ip", st.client.Addr().String())
	elem := "for=" + forwardedNode(st.cc.peer.Addr()) + ";proto=" + proto
	if host != "" {
		elem += ";host=" + quoteForwarded(host)
	}
	if fwd != "" {
		elem = fwd + ", " + elem
	}
	h.Set("Forwarded", elem)
	if st.rt.StripPrefix && st.prefix != "" && !st.rt.rewrite {
		// The backend builds its URLs under the prefix itself; when this
		// front maps them (RewriteURLs) it is not told, or both would.
		p := strings.TrimSuffix(st.prefix, "/")
		h.Set("X-Forwarded-Prefix", p)
		h.Set("X-Script-Name", p)
	}
}

// forwardedNode writes an address as an RFC 7239 node: IPv6 in quoted
// brackets.
func forwardedNode(a netip.Addr) string {
	if a.Is6() && !a.Is4In6() {
		return `"[` + a.String() + `]"`
	}
	return a.Unmap().String()
}

// quoteForwarded quotes a value that is not a token (RFC 7239 §4).
func quoteForwarded(v string) string {
	for i := 0; i < len(v); i++ {
		if !isTokenChar(v[i]) {
			return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(v) + `"`
		}
	}
	return v
}

// websocketHeader is the handshake header sent to a webmail backend: the
// client's end-to-end headers (cookies included) without the ones the
// websocket dialer writes itself, plus the client address headers.
func (s *Server) websocketHeader(r *http.Request, st *reqState) http.Header {
	h := http.Header{}
	for k, vs := range r.Header {
		switch http.CanonicalHeaderKey(k) {
		case "Host", "Upgrade", "Connection", "Sec-Websocket-Key", "Sec-Websocket-Version",
			"Sec-Websocket-Extensions", "Keep-Alive", "Proxy-Connection", "Proxy-Authorization",
			"Te", "Trailer", "Transfer-Encoding", "Content-Length":
			continue
		}
		h[k] = append([]string(nil), vs...)
	}
	s.forwardHeaders(r, h, st)
	if st.rt.PreserveHost {
		h.Set("Host", r.Host) // the websocket dialer sends it as the request's Host
	}
	return h
}
