package httpmail

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"unicode/utf16"
)

// seenReq is what the fake backend recorded of one request.
type seenReq struct {
	Method, Path, RawQuery string
	Remote                 string // the backend-side TCP connection (proxy's end)
	User                   string // authenticated user, "" if refused
	Header                 http.Header
	Body                   string
}

// fakeBackend plays every HTTP mail server at once on plain HTTP/1.1:
// Basic auth against testUsers, a connection-bound NTLM handshake (the
// password is not checked; the domain "BAD" fails), long polls held until
// released, a webmail login and a websocket-free page (the websocket tests
// live in package webmail).
type fakeBackend struct {
	t       *testing.T
	srv     *httptest.Server
	mu      sync.Mutex
	seen    []seenReq
	gate    chan struct{}
	holding atomic.Int32
	ntlm    map[string]string // backend-side remote addr -> NTLM user
	conns   map[string]http.ConnState
	cookies map[string]string
}

func newFakeBackend(t *testing.T) *fakeBackend {
	fb := &fakeBackend{t: t, gate: make(chan struct{}), ntlm: map[string]string{}, conns: map[string]http.ConnState{}, cookies: map[string]string{}}
	fb.srv = httptest.NewUnstartedServer(http.HandlerFunc(fb.serve))
	fb.srv.Config.ConnState = func(c net.Conn, s http.ConnState) {
		fb.mu.Lock()
		fb.conns[c.RemoteAddr().String()] = s
		fb.mu.Unlock()
	}
	fb.srv.Start()
	t.Cleanup(func() {
		fb.releaseAll()
		fb.srv.CloseClientConnections()
		fb.srv.Close()
	})
	return fb
}

func (fb *fakeBackend) URL() string { return fb.srv.URL }

// releaseAll lets every held request return.
func (fb *fakeBackend) releaseAll() {
	fb.mu.Lock()
	close(fb.gate)
	fb.gate = make(chan struct{})
	fb.mu.Unlock()
}

func (fb *fakeBackend) requests() []seenReq {
	fb.mu.Lock()
	defer fb.mu.Unlock()
	return append([]seenReq(nil), fb.seen...)
}

// connState is the last state of a backend-side connection.
func (fb *fakeBackend) connState(remote string) http.ConnState {
	fb.mu.Lock()
	defer fb.mu.Unlock()
	return fb.conns[remote]
}

// hold blocks until releaseAll or the request ends.
func (fb *fakeBackend) hold(r *http.Request) {
	fb.mu.Lock()
	g := fb.gate
	fb.mu.Unlock()
	fb.holding.Add(1)
	defer fb.holding.Add(-1)
	select {
	case <-g:
	case <-r.Context().Done():
	}
}

func (fb *fakeBackend) record(r *http.Request, user, body string) {
	fb.mu.Lock()
	fb.seen = append(fb.seen, seenReq{Method: r.Method, Path: r.URL.Path, RawQuery: r.URL.RawQuery, Remote: r.RemoteAddr,
		User: user, Header: r.Header.Clone(), Body: body})
	fb.mu.Unlock()
}

// auth checks the request's credentials; it answers 401 itself when they
// fail and returns ok=false.
func (fb *fakeBackend) auth(w http.ResponseWriter, r *http.Request) (string, bool) {
	h := r.Header.Get("Authorization")
	scheme, tok, _ := strings.Cut(h, " ")
	switch strings.ToLower(scheme) {
	case "basic":
		raw, _ := base64.StdEncoding.DecodeString(tok)
		u, p, _ := strings.Cut(string(raw), ":")
		if pw, ok := testUsers[u]; ok && pw == p {
			return u, true
		}
	case "ntlm":
		m, ok := ParseNTLMToken(tok)
		if !ok {
			break
		}
		switch m.Type {
		case NTLMNegotiate:
			fb.mu.Lock()
			delete(fb.ntlm, r.RemoteAddr)
			fb.mu.Unlock()
			w.Header().Set("WWW-Authenticate", "NTLM "+base64.StdEncoding.EncodeToString(ntlmType2()))
			w.WriteHeader(http.StatusUnauthorized)
			return "", false
		case NTLMAuthenticate:
			if _, known := testUsers[m.User]; known && m.Domain != "BAD" {
				fb.mu.Lock()
				fb.ntlm[r.RemoteAddr] = m.User
				fb.mu.Unlock()
				return m.User, true
			}
		}
	case "":
		fb.mu.Lock()
		u := fb.ntlm[r.RemoteAddr]
		fb.mu.Unlock()
		if u != "" {
			return u, true
		}
	}
	w.Header().Add("WWW-Authenticate", "NTLM")
	w.Header().Add("WWW-Authenticate", `Basic realm="fake"`)
	w.WriteHeader(http.StatusUnauthorized)
	return "", false
}

func (fb *fakeBackend) serve(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		fb.record(r, "", "")
		http.Error(w, "bad body", http.StatusBadRequest)
		return
	}
	p := strings.ToLower(r.URL.Path)
	if p == "/login" || p == "/" || p == "/mail" || p == "/logout" {
		fb.webmail(w, r, string(body))
		return
	}
	user, ok := fb.auth(w, r)
	fb.record(r, user, string(body))
	if !ok {
		return
	}
	if r.URL.Query().Get("fail") == "500" {
		http.Error(w, "backend broken", http.StatusInternalServerError)
		return
	}
	held := r.URL.Query().Get("hold") != ""
	switch {
	case strings.HasPrefix(p, "/microsoft-server-activesync"):
		if r.Method == http.MethodOptions {
			w.Header().Set("MS-ASProtocolVersions", "2.5,12.0,12.1,14.0,14.1")
			return
		}
		q, _ := ParseEASQuery(r.URL.RawQuery)
		if q.Cmd == "Ping" || held {
			fb.hold(r)
		}
		w.Header().Set("Content-Type", "application/vnd.ms-sync.wbxml")
		w.Write([]byte{0x03, 0x01, 0x6a, 0x00})
	case strings.HasPrefix(p, "/mapi/"):
		w.Header().Set("Content-Type", "application/mapi-http")
		if strings.EqualFold(r.Header.Get("X-RequestType"), "NotificationWait") || held {
			w.Write([]byte("PROCESSING\r\n"))
			w.(http.Flusher).Flush()
			fb.hold(r)
			w.Write([]byte("DONE\r\n"))
			return
		}
		w.Write([]byte("DONE\r\n"))
	case strings.HasPrefix(p, "/ews/"), strings.HasPrefix(p, "/autodiscover/"):
		w.Header().Set("Content-Type", "text/xml; charset=utf-8")
		w.Write([]byte(`<?xml version="1.0"?><Envelope>`))
		if strings.Contains(string(body), "GetStreamingEvents") || held {
			w.(http.Flusher).Flush()
			fb.hold(r)
		}
		w.Write([]byte(`</Envelope>`))
	default: // WebDAV
		if held {
			fb.hold(r)
		}
		if r.Method == "PROPFIND" {
			w.Header().Set("Content-Type", "application/xml; charset=utf-8")
			w.WriteHeader(http.StatusMultiStatus)
			w.Write([]byte(`<?xml version="1.0"?><d:multistatus xmlns:d="DAV:"/>`))
			return
		}
	}
}

// webmail: POST /login (user, password) sets the "sid" cookie and
// redirects; a bad password gets 401; /mail needs the cookie; /logout
// deletes it.
func (fb *fakeBackend) webmail(w http.ResponseWriter, r *http.Request, body string) {
	fb.record(r, "", body)
	switch strings.ToLower(r.URL.Path) {
	case "/login":
		if r.Method != http.MethodPost {
			w.Write([]byte("<form method=post action=/login>"))
			return
		}
		r.Body = io.NopCloser(strings.NewReader(body))
		r.ParseForm()
		u, p := r.PostForm.Get("user"), r.PostForm.Get("password")
		if pw, ok := testUsers[u]; !ok || pw != p {
			w.WriteHeader(http.StatusUnauthorized)
			w.Write([]byte("bad login"))
			return
		}
		b := make([]byte, 16)
		rand.Read(b)
		sid := hex.EncodeToString(b)
		fb.mu.Lock()
		fb.cookies[sid] = u
		fb.mu.Unlock()
		http.SetCookie(w, &http.Cookie{Name: "sid", Value: sid, Path: "/", HttpOnly: true})
		http.Redirect(w, r, "/mail", http.StatusFound)
	case "/mail":
		c, err := r.Cookie("sid")
		fb.mu.Lock()
		u := ""
		if err == nil {
			u = fb.cookies[c.Value]
		}
		fb.mu.Unlock()
		if u == "" {
			http.Redirect(w, r, "/login", http.StatusFound)
			return
		}
		if r.URL.Query().Get("hold") != "" {
			fb.hold(r)
		}
		w.Write([]byte("inbox of " + u))
	case "/logout":
		http.SetCookie(w, &http.Cookie{Name: "sid", Value: "", Path: "/", MaxAge: -1})
		w.Write([]byte("bye"))
	default:
		w.Write([]byte("webmail"))
	}
}

// ntlmType2 is a minimal CHALLENGE_MESSAGE (its content does not matter to
// the proxy).
func ntlmType2() []byte {
	b := make([]byte, 48)
	copy(b, ntlmSignature)
	binary.LittleEndian.PutUint32(b[8:], NTLMChallenge)
	return b
}

// ntlmType1 is a NEGOTIATE_MESSAGE.
func ntlmType1() string {
	b := make([]byte, 32)
	copy(b, ntlmSignature)
	binary.LittleEndian.PutUint32(b[8:], NTLMNegotiate)
	binary.LittleEndian.PutUint32(b[12:], ntlmFlagUnicode|ntlmFlagOEM)
	return "NTLM " + base64.StdEncoding.EncodeToString(b)
}

// ntlmType3 builds an AUTHENTICATE_MESSAGE for domain\user with a 24-byte
// fake NT response, UTF-16LE (unicode) or OEM.
func ntlmType3Msg(domain, user string, unicode bool) []byte {
	enc := func(s string) []byte {
		if !unicode {
			return []byte(s)
		}
		u := utf16.Encode([]rune(s))
		b := make([]byte, 2*len(u))
		for i, c := range u {
			binary.LittleEndian.PutUint16(b[2*i:], c)
		}
		return b
	}
	dom, usr, ws := enc(domain), enc(user), enc("WS1")
	nt := make([]byte, 24)
	rand.Read(nt)
	b := make([]byte, 88)
	copy(b, ntlmSignature)
	binary.LittleEndian.PutUint32(b[8:], NTLMAuthenticate)
	off := len(b)
	field := func(at int, v []byte) {
		binary.LittleEndian.PutUint16(b[at:], uint16(len(v)))
		binary.LittleEndian.PutUint16(b[at+2:], uint16(len(v)))
		binary.LittleEndian.PutUint32(b[at+4:], uint32(off))
		off += len(v)
	}
	field(12, nil)
	field(20, nt)
	field(28, dom)
	field(36, usr)
	field(44, ws)
	field(52, nil)
	flags := uint32(ntlmFlagOEM)
	if unicode {
		flags = ntlmFlagUnicode
	}
	binary.LittleEndian.PutUint32(b[60:], flags)
	b = append(b, nt...)
	b = append(b, dom...)
	b = append(b, usr...)
	b = append(b, ws...)
	return b
}

func ntlmType3(domain, user string) string {
	return "NTLM " + base64.StdEncoding.EncodeToString(ntlmType3Msg(domain, user, true))
}
