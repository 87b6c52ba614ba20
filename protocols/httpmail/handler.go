package httpmail

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"sync/atomic"
	"time"
)

// reqState is one request's attribution and outcome. The reverse proxy's
// hooks run on the handler's goroutine, so it needs no lock; only the drop
// function (another goroutine) touches the context and the connection.
type reqState struct {
	req           *http.Request
	rt            *route
	prefix        string
	cc            *clientConn
	conn          Conn
	client        netip.AddrPort
	tls           bool
	viaForwarder  bool
	cred          credential
	credKey       string // the credential's key in the accepted-credential cache
	user, mech    string
	hint          bool // user is an unchecked claim (JWT, EAS User=)
	login         bool // a webmail login submission
	confirmed     bool // the backend accepted this credential before
	authenticated bool
	failed        bool
	status        int
	pin           *pinnedBackend
	eas           EASQuery
	longPoll      bool
	dav           *davURLs    // webdav: URL translation (davurls.go)
	destination   string      // COPY/MOVE: the Destination to send
	framing       atomic.Bool // the body's framing was refused (set by the transport's goroutine)
}

// guardedBody is the request body handed to the backend transport. It
// notes a FramingError met while the body is forwarded (net/http cancels the
// request when its connection read fails, and the answer must then be 400,
// not silence), and it answers EOF by itself once Content-Length bytes are
// read: the transport reads once more after the declared length, and if the
// backend has answered meanwhile and the handler returned, the server has
// closed the body, that read fails and the transport drops a backend
// connection that was fine (for NTLM, the authenticated one).
type guardedBody struct {
	io.ReadCloser
	st        *reqState
	remaining int64 // -1: unknown length (chunked)
}

func (b *guardedBody) Read(p []byte) (int, error) {
	if b.remaining == 0 {
		return 0, io.EOF
	}
	if b.remaining > 0 && int64(len(p)) > b.remaining {
		p = p[:b.remaining]
	}
	n, err := b.ReadCloser.Read(p)
	if b.remaining > 0 {
		b.remaining -= int64(n)
		if b.remaining == 0 && err == nil {
			err = io.EOF
		}
	}
	if err != nil {
		var fe *FramingError
		if errors.As(err, &fe) {
			b.st.framing.Store(true)
		}
	}
	return n, err
}

type stateKey struct{}

func stateFrom(ctx context.Context) *reqState {
	st, _ := ctx.Value(stateKey{}).(*reqState)
	return st
}

// errDropped is the cause of a request context cancelled by an administrator.
var errDropped = errors.New("dropped by an administrator")

// errRequestTimeout is the cause of a request that ran past its deadline.
var errRequestTimeout = errors.New("request deadline passed")

// ServeHTTP routes, attributes, gates, counts and proxies one request.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	cc := connFrom(r.Context())
	if cc == nil { // served outside our listeners (tests, embedding)
		peer, _ := netip.ParseAddrPort(r.RemoteAddr)
		cc = &clientConn{id: s.nextID.Add(1), listener: "embedded", peer: peer, tls: r.TLS != nil}
	}
	if alt := s.altSvc.Load(); alt != nil && r.ProtoMajor < 3 && cc.listener == "https" {
		w.Header().Set("Alt-Svc", *alt)
	}
	if reason := checkFraming(r); reason != "" {
		s.log.Info("http request refused", "reason", reason, "client", cc.peer, "proto", r.Proto)
		w.Header().Set("Connection", "close")
		http.Error(w, "400 Bad Request", http.StatusBadRequest)
		return
	}
	if dotSegments(r.URL.Path) {
		http.Error(w, "400 Bad Request", http.StatusBadRequest)
		return
	}
	rt, prefix := s.match(r)
	if rt == nil {
		http.NotFound(w, r)
		return
	}
	websocket := isWebsocket(r)
	if (websocket && (rt.Protocol != ProtoWebmail || s.webmail == nil)) || (!websocket && r.Header.Get("Upgrade") != "" && !strings.EqualFold(r.Header.Get("Upgrade"), "h2c")) {
		// None of the mail protocols upgrades; the framing guard stopped
		// checking this connection at the Upgrade, so it closes.
		w.Header().Set("Connection", "close")
		http.Error(w, "400 Bad Request: upgrade not supported here", http.StatusBadRequest)
		return
	}
	st := &reqState{req: r, rt: rt, prefix: prefix, cc: cc}
	st.client, st.tls, st.viaForwarder = s.clientOf(r, cc)
	conn, refusal := s.tracker.Admit(ConnInfo{Protocol: rt.Protocol, Listener: cc.listener, Client: st.client, TLS: st.tls})
	if refusal != "" || conn == nil {
		s.log.Info("http connection refused", "protocol", rt.Protocol, "client", st.client, "reason", refusal)
		if websocket {
			w.Header().Set("Connection", "close")
		}
		s.refuseConnect(w, r, rt, refusal)
		return
	}
	st.conn = conn
	defer conn.Close()
	if rt.davRoot != "" && wellKnownDAV(prefix) {
		// RFC 6764 §5: the well-known URIs redirect to the context path;
		// forwarded, they would be a second copy of the DAV root.
		st.status = wellKnownRedirect(w, r, rt, prefix)
		s.logRequest(st, r, start)
		return
	}
	ctx, cancel := context.WithCancelCause(context.WithValue(r.Context(), stateKey{}, st))
	defer cancel(nil)
	s.attribute(st, r)
	if st.user != "" {
		conn.AuthAttempt(st.user, st.mech)
		if deny := conn.CheckLogin(st.user); deny != "" {
			s.log.Info("http login refused by policy", "protocol", rt.Protocol, "user", st.user, "mech", st.mech,
				"client", st.client, "reason", deny)
			if st.cred.connBound {
				cc.unpin(rt) // its backend connection holds a half-done handshake
			}
			if websocket {
				w.Header().Set("Connection", "close")
			}
			s.refuseLogin(w, r, rt, deny)
			st.status = http.StatusForbidden
			return
		}
	}
	if deny := s.checkDevice(st, r); deny != "" {
		if st.cred.connBound {
			cc.unpin(rt)
		}
		s.refuseDevice(w, deny)
		st.status = http.StatusForbidden
		return
	}
	if st.confirmed {
		s.authenticated(st)
	}
	if websocket {
		s.serveWebsocket(w, r.WithContext(ctx), st)
		s.logRequest(st, r, start)
		return
	}
	if rt.Protocol == ProtoWebDAV {
		st.dav = s.newDavURLs(st, r)
		if r.Method == "COPY" || r.Method == "MOVE" {
			dest, code := st.dav.destination(r)
			if code != 0 {
				s.log.Info("http dav destination refused", "method", r.Method, "path", r.URL.Path, "user", st.user,
					"client", st.client, "status", code)
				st.status = code
				msg := "The Destination is not a resource this server can reach."
				if code == http.StatusBadRequest {
					msg = "The Destination is not an absolute URL or path, or has . or .. segments."
				}
				s.writeErrorCode(w, r, rt, code, "destination", msg)
				s.logRequest(st, r, start)
				return
			}
			st.destination = dest
		}
	}
	conn.SetDropFunc(func(reason string) {
		cancel(errDropped)
		cc.close()
	})
	d := s.opts.requestTimeout()
	if st.longPoll = s.longPoll(st, r); st.longPoll {
		d = s.opts.longPollTimeout()
	}
	rc := http.NewResponseController(w)
	deadline := time.Now().Add(d)
	rc.SetReadDeadline(deadline)
	rc.SetWriteDeadline(deadline)
	ctx, cancelTimeout := context.WithDeadlineCause(ctx, deadline, errRequestTimeout)
	defer cancelTimeout()
	out := r.WithContext(ctx)
	if r.Body != nil && r.Body != http.NoBody {
		// On the copy only: net/http recognises an unanswered
		// "Expect: 100-continue" by the type of the request's own Body,
		// and must, to close the connection instead of waiting for a body
		// the client holds back until it sees 100 Continue.
		out.Body = &guardedBody{ReadCloser: r.Body, st: st, remaining: r.ContentLength}
	}
	st.rt.proxy.ServeHTTP(w, out)
	s.logRequest(st, r, start)
}

// attribute names the request's user from, in order: the Authorization
// header; for webmail the login form, then the session cookie; the
// connection's NTLM/Negotiate user; ActiveSync's User= and a websocket's
// access_token (unchecked hints).
func (s *Server) attribute(st *reqState, r *http.Request) {
	rt, cc := st.rt, st.cc
	if rt.Protocol == ProtoEAS {
		st.eas, _ = ParseEASQuery(r.URL.RawQuery)
	}
	if h := r.Header.Get("Authorization"); h != "" {
		st.cred = parseAuthorization(h)
		st.user, st.mech, st.hint = st.cred.user, st.cred.mech, st.cred.hint
		if st.cred.mech != "" && !st.cred.connBound {
			st.credKey = s.creds.key(h)
		}
	}
	switch {
	case st.cred.connBound:
		// Every leg of NTLM/Negotiate, and whatever follows on this client
		// connection, goes through the connection's own backend connection.
		st.pin = cc.pinned(rt)
		if st.cred.ntlmType == NTLMNegotiate {
			cc.setConnAuth("", "") // a new handshake
		}
	case st.cred.mech == "":
		if p := cc.hasPin(rt); p != nil {
			st.pin = p
			if u, m := cc.connAuth(); u != "" {
				st.user, st.mech = u, m
				s.confirmed(st)
			}
		}
	}
	if rt.Protocol == ProtoWebmail && s.webmail != nil && st.cred.mech == "" {
		if u, ok := s.webmail.LoginUser(r); ok {
			st.user, st.mech, st.login = u, MechForm, true
		} else if u := s.webmail.SessionUser(r); u != "" {
			st.user, st.mech = u, MechCookie
			s.confirmed(st)
		}
	}
	if st.user == "" && st.cred.user == "" && st.eas.User != "" && st.cred.mech == "" {
		st.user, st.mech, st.hint = st.eas.User, MechEASUser, true
	}
	if st.user == "" && st.cred.mech == "" {
		if tok := r.URL.Query().Get("access_token"); tok != "" {
			if u, _, ok := JWTUser(tok); ok {
				st.user, st.mech, st.hint = u, MechBearer, true
			}
		}
	}
	if st.credKey != "" && st.user != "" {
		if u, m, ok := s.creds.get(st.credKey); ok && u == st.user && m == st.mech {
			s.confirmed(st)
		}
	}
}

// checkDevice asks the connection's device gate about an ActiveSync
// request that names a command or a device (OPTIONS, which names neither,
// is not asked). It returns the refusal, or "".
func (s *Server) checkDevice(st *reqState, r *http.Request) string {
	if st.rt.Protocol != ProtoEAS || (st.eas.Cmd == "" && st.eas.DeviceID == "") {
		return ""
	}
	g, ok := st.conn.(DeviceGate)
	if !ok {
		return ""
	}
	d := EASDevice{ID: st.eas.DeviceID, Type: st.eas.DeviceType, UserAgent: r.UserAgent(), Command: st.eas.Cmd}
	deny := g.CheckDevice(st.user, d)
	if deny != "" {
		s.log.Info("eas device refused", "user", st.user, "device_id", d.ID, "device_type", d.Type, "eas_cmd", d.Command,
			"client", st.client, "reason", deny)
	}
	return deny
}

// confirmed marks a request whose credential the backend accepted before
// (the same Authorization header within CredentialTTL, the connection's
// NTLM user, a mapped webmail session): it counts as its user from the start,
// so that a long poll is shown under its user while it waits. The gate
// still runs first; confirmation is applied after it allows.
func (s *Server) confirmed(st *reqState) { st.confirmed = true }

// longPoll reports the requests that wait on purpose (see
// Options.LongPollTimeout).
func (s *Server) longPoll(st *reqState, r *http.Request) bool {
	switch st.rt.Protocol {
	case ProtoEAS:
		return easLongPoll(st.eas.Cmd)
	case ProtoMAPI:
		return strings.EqualFold(r.Header.Get("X-RequestType"), "NotificationWait")
	case ProtoEWS:
		return r.Method == http.MethodPost
	}
	return false
}

// modifyResponse sees the backend's answer before it is relayed.
func (s *Server) modifyResponse(resp *http.Response) error {
	st := stateFrom(resp.Request.Context())
	if st == nil {
		return nil
	}
	st.status = resp.StatusCode
	resp.Header.Del("Alt-Svc") // it describes the backend, not this front
	s.observe(st, resp)
	if st.dav != nil {
		st.dav.response(resp)
	}
	return nil
}

// observe turns the backend's verdict into accounting events: a 2xx
// authenticates the request's user (last login, last IP), a 401 to a
// credential is a failed login (brute force), a 5xx a temporary failure.
func (s *Server) observe(st *reqState, resp *http.Response) {
	code := resp.StatusCode
	if st.rt.Protocol == ProtoWebmail && s.webmail != nil && st.cred.mech == "" {
		switch s.webmail.Observe(st.req, st.user, st.login, resp) {
		case LoginOK:
			s.authenticated(st)
			return
		case LoginFailed:
			s.failed(st, false)
			return
		}
		if st.login {
			if code >= 500 {
				s.failed(st, true)
			}
			return
		}
	}
	switch {
	case code >= 200 && code < 300:
		s.authenticated(st)
	case code == http.StatusUnauthorized:
		s.creds.forget(st.credKey)
		challenge := resp.Header.Values("Www-Authenticate")
		if st.cred.connBound || st.pin != nil {
			if st.cred.connBound && st.cred.ntlmType != NTLMAuthenticate && ntlmChallengeLeg(challenge) {
				return // leg 2 of the handshake
			}
			st.cc.setConnAuth("", "")
		}
		if st.cred.mech == "" && !st.login {
			return // no credential was offered: a challenge, not a failure
		}
		if st.cred.mech == MechDigest && digestStale(challenge) {
			return
		}
		if st.user != "" || st.cred.mech != "" {
			s.failed(st, false)
		}
	case code >= 500:
		if st.user != "" {
			s.failed(st, true)
		}
	}
}

func (s *Server) authenticated(st *reqState) {
	if st.user == "" {
		return
	}
	if st.cred.connBound {
		st.cc.setConnAuth(st.user, st.mech)
	}
	if st.credKey != "" {
		s.creds.put(st.credKey, st.user, st.mech)
	}
	if st.authenticated {
		return // counted at the start (a confirmed credential)
	}
	st.authenticated = true
	st.conn.Authenticated(st.user, st.mech)
}

// failed records a refused login. An unchecked claim (a JWT nobody
// verified, EAS User=) never counts against the user it names: anyone can
// write one. The client IP counts either way.
func (s *Server) failed(st *reqState, temporary bool) {
	if st.failed {
		return
	}
	st.failed = true
	user := st.user
	if st.hint && !temporary {
		user = ""
	}
	if !temporary {
		s.log.Info("http login failed", "protocol", st.rt.Protocol, "user", st.user, "mech", st.mech, "client", st.client)
	}
	st.conn.AuthFailed(user, st.mech, temporary)
}

// proxyError answers when the backend could not be reached or the request
// was cut; a drop or a vanished client gets nothing written.
func (s *Server) proxyError(w http.ResponseWriter, r *http.Request, err error) {
	st := stateFrom(r.Context())
	cause := context.Cause(r.Context())
	var fe *FramingError
	if errors.As(err, &fe) || (st != nil && st.framing.Load()) {
		if st != nil {
			st.status = http.StatusBadRequest
		}
		w.Header().Set("Connection", "close")
		http.Error(w, "400 Bad Request", http.StatusBadRequest)
		return
	}
	if errors.Is(cause, errDropped) || errors.Is(err, context.Canceled) && !errors.Is(cause, errRequestTimeout) {
		if st != nil {
			st.status = 499 // client closed request (nginx's code), for the log only
		}
		return
	}
	status := http.StatusBadGateway
	var ne net.Error
	if errors.Is(cause, errRequestTimeout) || errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout()) {
		status = http.StatusGatewayTimeout
	}
	if ue, ok := err.(*url.Error); ok {
		err = ue.Err // the URL may hold query values such as access_token
	}
	if st != nil {
		st.status = status
		s.log.Warn("http backend failed", "protocol", st.rt.Protocol, "backend", st.rt.Backend.Host, "err", err)
		if st.user != "" {
			s.failed(st, true)
		}
		s.writeError(w, st.rt, status, "The mail server did not answer. Try again later.")
		return
	}
	http.Error(w, http.StatusText(status), status)
}

// logRequest writes one debug line per request: never a header value, a
// query or a body, only what names the request.
func (s *Server) logRequest(st *reqState, r *http.Request, start time.Time) {
	if !s.log.Enabled(r.Context(), slog.LevelDebug) {
		return
	}
	attrs := []any{"protocol", st.rt.Protocol, "method", r.Method, "path", r.URL.Path, "proto", r.Proto,
		"status", st.status, "client", st.client, "user", st.user, "mech", st.mech,
		"authenticated", st.authenticated, "duration", time.Since(start).Round(time.Millisecond)}
	if st.eas.Cmd != "" {
		attrs = append(attrs, "eas_cmd", st.eas.Cmd, "device_id", st.eas.DeviceID, "device_type", st.eas.DeviceType)
	}
	s.log.Debug("http request", attrs...)
}
