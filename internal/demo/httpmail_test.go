package demo

import (
	"context"
	"encoding/base64"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

func startTestHTTPMail(t *testing.T, maxHold time.Duration) *HTTPMailBackend {
	t.Helper()
	b, err := StartHTTPMail("127.0.0.1:0", Users, HTTPMailOptions{MaxHold: maxHold, Pending: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

func httpDo(t *testing.T, method, url, user, pass, body string, hdr ...string) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequest(method, url, strings.NewReader(body))
	if user != "" {
		req.SetBasicAuth(user, pass)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	c := &http.Client{Timeout: 30 * time.Second}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, string(b)
}

func TestHTTPMailAuth(t *testing.T) {
	b := startTestHTTPMail(t, time.Second)
	base := "http://" + b.Addr()
	for _, p := range []string{"/Microsoft-Server-ActiveSync", "/mapi/emsmdb/", "/EWS/Exchange.asmx", "/autodiscover/autodiscover.xml", "/dav/"} {
		if resp, _ := httpDo(t, "POST", base+p, "alice@example.com", "wrong", ""); resp.StatusCode != 401 || resp.Header.Get("WWW-Authenticate") == "" {
			t.Errorf("%s with a bad password = %d, want 401 with a challenge", p, resp.StatusCode)
		}
		if resp, _ := httpDo(t, "POST", base+p, "", "", ""); resp.StatusCode != 401 {
			t.Errorf("%s without credentials = %d, want 401", p, resp.StatusCode)
		}
	}
}

func TestHTTPMailEAS(t *testing.T) {
	b := startTestHTTPMail(t, 200*time.Millisecond)
	base := "http://" + b.Addr() + "/Microsoft-Server-ActiveSync"
	resp, _ := httpDo(t, "OPTIONS", base, "alice@example.com", "alice-secret", "")
	if resp.StatusCode != 200 || !strings.Contains(resp.Header.Get("MS-ASProtocolVersions"), "14.1") {
		t.Fatalf("OPTIONS = %d %v", resp.StatusCode, resp.Header)
	}
	resp, body := httpDo(t, "POST", base+"?Cmd=FolderSync&User=alice&DeviceId=d&DeviceType=t", "alice@example.com", "alice-secret", "")
	if resp.StatusCode != 200 || !strings.Contains(body, "Inbox") || resp.Header.Get("Content-Type") != "application/vnd.ms-sync.wbxml" {
		t.Fatalf("FolderSync = %d %q", resp.StatusCode, body)
	}
	// Ping with a 300 s heartbeat in its WBXML body, capped at MaxHold:
	// held, then status 1.
	ping := []byte{0x03, 0x01, 0x6a, 0x00, 0x00, 0x0d, 0x45, 0x48, 0x03, '3', '0', '0', 0x00, 0x01, 0x01}
	start := time.Now()
	q := base64.StdEncoding.EncodeToString([]byte{0x8c, 18, 0x09, 0x04, 1, 'd', 0, 1, 't'})
	resp, body = httpDo(t, "POST", base+"?"+q, "alice@example.com", "alice-secret", string(ping))
	if d := time.Since(start); resp.StatusCode != 200 || d < 150*time.Millisecond {
		t.Fatalf("Ping = %d after %v, want 200 after the capped heartbeat", resp.StatusCode, d)
	}
	want := string([]byte{0x03, 0x01, 0x6a, 0x00, 0x00, 0x0d, 0x45, 0x47, 0x03, '1', 0x00, 0x01, 0x01})
	if body != want {
		t.Errorf("Ping answer = %x, want %x (status 1)", body, want)
	}
	if n, ok := heartbeat(ping); !ok || n != 300 {
		t.Errorf("heartbeat() = %d %v, want 300", n, ok)
	}
}

func TestHTTPMailLongPolls(t *testing.T) {
	b := startTestHTTPMail(t, 300*time.Millisecond)
	base := "http://" + b.Addr()
	start := time.Now()
	resp, body := httpDo(t, "POST", base+"/mapi/emsmdb/", "bob@example.com", "bob-secret", "", "X-RequestType", "NotificationWait")
	if resp.StatusCode != 200 || !strings.HasPrefix(body, "PROCESSING\r\nPENDING\r\n") || !strings.Contains(body, "DONE\r\n") || time.Since(start) < 250*time.Millisecond {
		t.Fatalf("NotificationWait = %d %q after %v", resp.StatusCode, body, time.Since(start))
	}
	resp, body = httpDo(t, "POST", base+"/mapi/emsmdb/", "bob@example.com", "bob-secret", "", "X-RequestType", "Connect")
	if resp.StatusCode != 200 || strings.Contains(body, "PENDING") {
		t.Fatalf("Connect = %d %q", resp.StatusCode, body)
	}
	start = time.Now()
	resp, body = httpDo(t, "POST", base+"/EWS/Exchange.asmx", "alice@example.com", "alice-secret",
		"<m:GetStreamingEvents><m:ConnectionTimeout>1</m:ConnectionTimeout></m:GetStreamingEvents>")
	if resp.StatusCode != 200 || !strings.Contains(body, "<m:ConnectionStatus>Closed</m:ConnectionStatus>") || time.Since(start) < 250*time.Millisecond {
		t.Fatalf("GetStreamingEvents = %d %q", resp.StatusCode, body)
	}
	resp, body = httpDo(t, "POST", base+"/EWS/Exchange.asmx", "alice@example.com", "alice-secret", "<m:GetFolder/>")
	if resp.StatusCode != 200 || !strings.Contains(body, "NoError") {
		t.Fatalf("EWS = %d %q", resp.StatusCode, body)
	}
	// A held request ends when its client goes.
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "POST", base+"/Microsoft-Server-ActiveSync?Cmd=Ping&heartbeat=3000", nil)
	req.SetBasicAuth("alice@example.com", "alice-secret")
	if _, err := http.DefaultClient.Do(req); err == nil {
		t.Fatal("a 3000 s Ping answered within 50 ms")
	}
}

func TestHTTPMailDAVAndAutodiscover(t *testing.T) {
	b := startTestHTTPMail(t, time.Second)
	base := "http://" + b.Addr()
	resp, body := httpDo(t, "PROPFIND", base+"/dav/", "alice@example.com", "alice-secret", "", "Depth", "0")
	if resp.StatusCode != 207 || !strings.Contains(body, "<d:href>/dav/alice@example.com/</d:href>") {
		t.Fatalf("PROPFIND = %d %q", resp.StatusCode, body)
	}
	// Where mailgate's /.well-known/caldav redirect leads a browser or curl -L.
	resp, body = httpDo(t, "GET", base+"/dav/", "alice@example.com", "alice-secret", "")
	if resp.StatusCode != 200 || !strings.Contains(body, "alice@example.com") {
		t.Fatalf("GET /dav/ = %d %q", resp.StatusCode, body)
	}
	resp, body = httpDo(t, "POST", base+"/autodiscover/autodiscover.xml", "alice@example.com", "alice-secret", "<Autodiscover/>")
	if resp.StatusCode != 200 || !strings.Contains(body, "<EwsUrl>") {
		t.Fatalf("Autodiscover = %d %q", resp.StatusCode, body)
	}
}
