package demo

import (
	"errors"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

func TestWebmailDemo(t *testing.T) {
	b, err := StartWebmail("127.0.0.1:0", Users, WebmailOptions{Tick: 30 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	base := "http://" + b.Addr()
	jar, _ := cookiejar.New(nil)
	c := &http.Client{Jar: jar, Timeout: 30 * time.Second}

	resp, err := c.Get(base + "/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), `name="password"`) {
		t.Fatalf("login page: %q", body)
	}
	resp, err = c.PostForm(base+WebmailLoginPath, url.Values{WebmailUserField: {"alice@example.com"}, "password": {"nope"}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("bad password = %d, want 401", resp.StatusCode)
	}
	resp, err = c.PostForm(base+WebmailLoginPath, url.Values{WebmailUserField: {"alice@example.com"}, "password": {"alice-secret"}})
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(body), "Inbox of alice@example.com") {
		t.Fatalf("after login (redirect followed) = %d %q", resp.StatusCode, body)
	}
	u, _ := url.Parse(base)
	var sid string
	for _, ck := range jar.Cookies(u) {
		if ck.Name == WebmailCookie {
			sid = ck.Value
		}
	}
	if sid == "" {
		t.Fatal("no session cookie")
	}

	if _, r, err := websocket.DefaultDialer.Dial("ws://"+b.Addr()+"/ws", nil); err == nil || r.StatusCode != 401 {
		t.Fatalf("websocket without a session: %v", err)
	}
	ws, _, err := websocket.DefaultDialer.Dial("ws://"+b.Addr()+"/ws", http.Header{"Cookie": {WebmailCookie + "=" + sid}})
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	ws.SetReadDeadline(time.Now().Add(30 * time.Second))
	ws.WriteMessage(websocket.TextMessage, []byte("hi"))
	var echo, tick bool
	for !echo || !tick {
		_, p, err := ws.ReadMessage()
		if err != nil {
			t.Fatal(err)
		}
		echo = echo || string(p) == "hi"
		tick = tick || strings.HasPrefix(string(p), "tick ")
	}
	ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(4002, ""), time.Now().Add(time.Second))
	for {
		if _, _, err := ws.ReadMessage(); err != nil {
			var ce *websocket.CloseError
			if !errors.As(err, &ce) || ce.Code != 4002 {
				t.Fatalf("close echo %v, want 4002", err)
			}
			break
		}
	}

	resp, err = c.Post(base+"/logout", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	resp, err = c.Get(base + "/mail")
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), `name="password"`) {
		t.Fatalf("after logout /mail shows %q, want the login page", body)
	}
}
