package demo

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"html"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/gorilla/websocket"
)

// The demo webmail's login form and session cookie, which mailgate's
// webmail attribution is configured with.
const (
	WebmailLoginPath = "/login"
	WebmailUserField = "user"
	WebmailCookie    = "demo_session"
)

// WebmailOptions configure the demo webmail.
type WebmailOptions struct {
	// Tick is how often the websocket pushes "tick N" (default 10s).
	Tick time.Duration
}

// WebmailBackend is a tiny webmail: a login form (POST user and password
// to /login sets the session cookie and redirects to /mail), a page, a
// websocket at /ws that echoes every message and pushes a tick, and
// POST /logout. Everything but the login page needs the session cookie.
type WebmailBackend struct {
	srv      *http.Server
	ln       net.Listener
	users    map[string]string
	tick     time.Duration
	mu       sync.Mutex
	sessions map[string]string // cookie value -> user
	up       websocket.Upgrader
	wg       sync.WaitGroup
	sockets  map[*websocket.Conn]struct{}
}

// StartWebmail serves the demo webmail on addr (127.0.0.1:0 for any port).
func StartWebmail(addr string, users map[string]string, opts WebmailOptions) (*WebmailBackend, error) {
	if opts.Tick <= 0 {
		opts.Tick = 10 * time.Second
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	b := &WebmailBackend{ln: ln, users: users, tick: opts.Tick, sessions: map[string]string{},
		sockets: map[*websocket.Conn]struct{}{}}
	// mailgate forwards the browser's Origin; the demo accepts any.
	b.up = websocket.Upgrader{CheckOrigin: func(*http.Request) bool { return true }}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", b.index)
	mux.HandleFunc("GET "+WebmailLoginPath, b.index)
	mux.HandleFunc("POST "+WebmailLoginPath, b.login)
	mux.HandleFunc("GET /mail", b.mail)
	mux.HandleFunc("GET /ws", b.websocket)
	mux.HandleFunc("POST /logout", b.logout)
	b.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go b.srv.Serve(ln)
	return b, nil
}

// Addr is the backend's address.
func (b *WebmailBackend) Addr() string { return b.ln.Addr().String() }

// Close stops the server and its websockets.
func (b *WebmailBackend) Close() error {
	err := b.srv.Close()
	b.mu.Lock()
	for c := range b.sockets {
		c.Close()
	}
	b.mu.Unlock()
	b.wg.Wait()
	return err
}

func (b *WebmailBackend) user(r *http.Request) string {
	c, err := r.Cookie(WebmailCookie)
	if err != nil {
		return ""
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.sessions[c.Value]
}

const loginPage = `<!doctype html><html><head><meta charset="utf-8"><title>mailgate demo webmail</title></head>
<body><h1>Demo webmail</h1>%s
<form method="post" action="/login">
<label>User <input name="user" autocomplete="username"></label>
<label>Password <input name="password" type="password" autocomplete="current-password"></label>
<button>Log in</button></form></body></html>
`

func (b *WebmailBackend) index(w http.ResponseWriter, r *http.Request) {
	if b.user(r) != "" {
		http.Redirect(w, r, "/mail", http.StatusFound)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	fmt.Fprintf(w, loginPage, "")
}

func (b *WebmailBackend) login(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
	user, pass := r.PostFormValue("user"), r.PostFormValue("password")
	if want, ok := b.users[user]; !ok || want != pass {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.WriteHeader(http.StatusUnauthorized) // as Roundcube does
		fmt.Fprintf(w, loginPage, "<p>Wrong user or password.</p>")
		return
	}
	buf := make([]byte, 16)
	rand.Read(buf)
	sid := hex.EncodeToString(buf)
	b.mu.Lock()
	b.sessions[sid] = user
	b.mu.Unlock()
	http.SetCookie(w, &http.Cookie{Name: WebmailCookie, Value: sid, Path: "/", HttpOnly: true, SameSite: http.SameSiteLaxMode})
	http.Redirect(w, r, "/mail", http.StatusFound)
}

const mailPage = `<!doctype html><html><head><meta charset="utf-8"><title>Inbox</title></head>
<body><h1>Inbox of %s</h1><p>1 message: Welcome to the mailgate demo.</p>
<form method="post" action="/logout"><button>Log out</button></form>
<pre id="log"></pre>
<script>
const ws = new WebSocket((location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/ws");
ws.onmessage = (e) => { document.getElementById("log").textContent += e.data + "\n"; };
</script></body></html>
`

func (b *WebmailBackend) mail(w http.ResponseWriter, r *http.Request) {
	u := b.user(r)
	if u == "" {
		http.Redirect(w, r, WebmailLoginPath, http.StatusFound)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	fmt.Fprintf(w, mailPage, html.EscapeString(u))
}

func (b *WebmailBackend) logout(w http.ResponseWriter, r *http.Request) {
	if c, err := r.Cookie(WebmailCookie); err == nil {
		b.mu.Lock()
		delete(b.sessions, c.Value)
		b.mu.Unlock()
	}
	http.SetCookie(w, &http.Cookie{Name: WebmailCookie, Value: "", Path: "/", MaxAge: -1})
	http.Redirect(w, r, "/", http.StatusFound)
}

// websocket echoes every message (same type) and pushes "tick N".
func (b *WebmailBackend) websocket(w http.ResponseWriter, r *http.Request) {
	u := b.user(r)
	if u == "" {
		http.Error(w, "log in first", http.StatusUnauthorized)
		return
	}
	c, err := b.up.Upgrade(w, r, nil)
	if err != nil {
		return
	}
	b.mu.Lock()
	b.sockets[c] = struct{}{}
	b.mu.Unlock()
	b.wg.Add(1)
	defer func() {
		b.mu.Lock()
		delete(b.sockets, c)
		b.mu.Unlock()
		c.Close()
		b.wg.Done()
	}()
	var wmu sync.Mutex // one writer at a time: the echo and the ticker
	write := func(kind int, p []byte) error {
		wmu.Lock()
		defer wmu.Unlock()
		c.SetWriteDeadline(time.Now().Add(10 * time.Second))
		return c.WriteMessage(kind, p)
	}
	done := make(chan struct{})
	defer close(done)
	go func() {
		t := time.NewTicker(b.tick)
		defer t.Stop()
		for n := 1; ; n++ {
			select {
			case <-done:
				return
			case <-t.C:
				if write(websocket.TextMessage, []byte(fmt.Sprintf("tick %d", n))) != nil {
					return
				}
			}
		}
	}()
	for {
		kind, p, err := c.ReadMessage()
		if err != nil {
			return
		}
		if write(kind, p) != nil {
			return
		}
	}
}
