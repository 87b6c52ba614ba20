package httpmail

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// protoCase is one HTTP mail protocol: a short request, and a long poll
// that the backend holds until released.
type protoCase struct {
	protocol          string
	short             func() (method, path string, body string, hdr []string)
	long              func() (method, path string, body string, hdr []string)
	wantShort         int
	wantLongFirstByte bool // the backend answers the long poll's headers at once
}

var protoCases = []protoCase{
	{protocol: ProtoEAS, wantShort: 200,
		short: func() (string, string, string, []string) {
			return "POST", "/Microsoft-Server-ActiveSync?Cmd=FolderSync&User=alice&DeviceId=dev1&DeviceType=iPhone", "", []string{"MS-ASProtocolVersion", "14.1"}
		},
		long: func() (string, string, string, []string) {
			// The base64 query form: Ping (18), device "v140Device", User alice.
			return "POST", "/Microsoft-Server-ActiveSync?jBIJBAp2MTQwRGV2aWNlAApTbWFydFBob25lCBFhbGljZUBleGFtcGxlLmNvbQ==", "", nil
		}},
	{protocol: ProtoEWS, wantShort: 200, wantLongFirstByte: true,
		short: func() (string, string, string, []string) {
			return "POST", "/EWS/Exchange.asmx", "<GetFolder/>", []string{"Content-Type", "text/xml"}
		},
		long: func() (string, string, string, []string) {
			return "POST", "/EWS/Exchange.asmx", "<m:GetStreamingEvents><m:ConnectionTimeout>30</m:ConnectionTimeout></m:GetStreamingEvents>", []string{"Content-Type", "text/xml"}
		}},
	{protocol: ProtoMAPI, wantShort: 200, wantLongFirstByte: true,
		short: func() (string, string, string, []string) {
			return "POST", "/mapi/emsmdb/?MailboxId=x@example.com", "", []string{"X-RequestType", "Connect", "Content-Type", "application/mapi-http"}
		},
		long: func() (string, string, string, []string) {
			return "POST", "/mapi/emsmdb/?MailboxId=x@example.com", "", []string{"X-RequestType", "NotificationWait", "Content-Type", "application/mapi-http"}
		}},
	{protocol: ProtoWebDAV, wantShort: 207,
		short: func() (string, string, string, []string) {
			return "PROPFIND", "/dav/alice/", `<?xml version="1.0"?><propfind xmlns="DAV:"><prop><current-user-principal/></prop></propfind>`, []string{"Depth", "0"}
		},
		long: func() (string, string, string, []string) {
			return "PROPFIND", "/caldav/alice/?hold=1", "", []string{"Depth", "1"}
		}},
}

// TestProtocolsAttributed drives every protocol over HTTP/1.1, HTTP/2 and
// HTTP/3 with a real accounting registry: a request with Basic credentials
// updates the user's last login and IP; a long poll counts as one live
// connection of its user while it waits and stops counting when it returns.
func TestProtocolsAttributed(t *testing.T) {
	for _, pc := range protoCases {
		for _, proto := range []string{"h1", "h2", "h3"} {
			t.Run(pc.protocol+"/"+proto, func(t *testing.T) {
				f := startFront(t, frontConfig{})
				c := f.client(proto)
				m, path, body, hdr := pc.short()
				st, _, _ := f.do(c, m, path, basicAuth(alice, alicePassword), strings.NewReader(body), hdr...)
				if st != pc.wantShort {
					t.Fatalf("%s %s = %d, want %d", m, path, st, pc.wantShort)
				}
				if want := map[string]string{"h1": "HTTP/1.1", "h2": "HTTP/2.0", "h3": "HTTP/3.0"}[proto]; f.proto != want {
					t.Fatalf("response protocol = %s, want %s", f.proto, want)
				}
				d := f.reg.User(alice).Protocols[pc.protocol]
				if d.LastLogin.IsZero() || d.LastIP.String() != "127.0.0.1" {
					t.Fatalf("%s detail after a 2xx = %+v, want a last login from 127.0.0.1", pc.protocol, d)
				}
				f.waitCount(pc.protocol, 0)
				reqs := f.fb.requests()
				if got := reqs[len(reqs)-1].Header.Get("X-Forwarded-For"); got != "127.0.0.1" {
					t.Errorf("backend X-Forwarded-For = %q, want 127.0.0.1", got)
				}

				// The long poll: counted as alice while the backend holds it.
				m, path, body, hdr = pc.long()
				req, _ := http.NewRequest(m, f.url(path), strings.NewReader(body))
				req.Header.Set("Authorization", basicAuth(alice, alicePassword))
				for i := 0; i+1 < len(hdr); i += 2 {
					req.Header.Set(hdr[i], hdr[i+1])
				}
				done := make(chan error, 1)
				go func() {
					resp, err := c.Do(req)
					if err == nil {
						_, err = io.Copy(io.Discard, resp.Body)
						resp.Body.Close()
						if resp.StatusCode/100 != 2 {
							err = &statusError{resp.StatusCode}
						}
					}
					done <- err
				}()
				waitFor(t, "the backend holding the long poll", func() bool { return f.fb.holding.Load() == 1 }, nil)
				f.waitCount(pc.protocol, 1)
				if row := f.row(pc.protocol, alice); row == nil || row.Connections != 1 {
					t.Fatalf("row of %s in %s while the long poll waits = %+v, want 1 connection", alice, pc.protocol, row)
				}
				select {
				case err := <-done:
					t.Fatalf("long poll returned before it was released: %v", err)
				case <-time.After(50 * time.Millisecond):
				}
				f.fb.releaseAll()
				select {
				case err := <-done:
					if err != nil {
						t.Fatalf("long poll: %v", err)
					}
				case <-time.After(waitTimeout):
					t.Fatal("long poll did not return after release")
				}
				f.waitCount(pc.protocol, 0)
				if row := f.row(pc.protocol, alice); row != nil {
					t.Errorf("row of %s after the long poll = %+v, want none", alice, row)
				}
			})
		}
	}
}

type statusError struct{ code int }

func (e *statusError) Error() string { return http.StatusText(e.code) }

// TestFailedLoginCounts: a 401 to Basic credentials is a failed login of
// that user (brute force), a 5xx a temporary one, and a 401 to a JWT only
// counts against the client IP.
func TestFailedLoginCounts(t *testing.T) {
	f := startFront(t, frontConfig{})
	c := f.client("h1")
	st, _, _ := f.do(c, "PROPFIND", "/dav/", basicAuth(alice, wrongPassword), nil)
	if st != 401 {
		t.Fatalf("wrong password = %d, want 401", st)
	}
	st, _, _ = f.do(c, "PROPFIND", "/dav/?fail=500", basicAuth(alice, alicePassword), nil)
	if st != 500 {
		t.Fatalf("?fail=500 = %d, want 500", st)
	}
	st, _, _ = f.do(c, "PROPFIND", "/dav/", "", nil)
	if st != 401 {
		t.Fatalf("no credentials = %d, want 401", st)
	}
	logins := f.reg.Stats().Logins[ProtoWebDAV]
	if logins["failure"] != 1 || logins["temporary_failure"] != 1 || logins["success"] != 0 {
		t.Errorf("webdav logins = %v, want 1 failure (the challenge without credentials is none) and 1 temporary failure", logins)
	}
	if !f.lastLogin(alice, ProtoWebDAV).IsZero() {
		t.Errorf("a failed login set a last login")
	}
}

// TestAltSvc: HTTPS answers advertise HTTP/3 on the same port; the
// backend's own Alt-Svc is not passed on.
func TestAltSvc(t *testing.T) {
	f := startFront(t, frontConfig{})
	_, hdr, _ := f.do(f.client("h2"), "OPTIONS", "/Microsoft-Server-ActiveSync", basicAuth(alice, alicePassword), nil)
	_, port, _ := strings.Cut(f.https, ":")
	if got, want := hdr.Values("Alt-Svc"), `h3=":`+port+`"; ma=86400`; len(got) != 1 || got[0] != want {
		t.Errorf("Alt-Svc = %q, want [%q]", got, want)
	}
	if hdr.Get("MS-ASProtocolVersions") == "" {
		t.Errorf("OPTIONS lost MS-ASProtocolVersions: %v", hdr)
	}
}

// TestShutdownDrains: Shutdown waits for a long poll until its context
// ends, then cuts it; the count falls to zero.
func TestShutdownDrains(t *testing.T) {
	f := startFront(t, frontConfig{})
	c := f.client("h1")
	done := make(chan struct{})
	go func() {
		defer close(done)
		req, _ := http.NewRequest("POST", f.url("/Microsoft-Server-ActiveSync?Cmd=Ping&User=a&DeviceId=d&DeviceType=t"), nil)
		req.Header.Set("Authorization", basicAuth(alice, alicePassword))
		if resp, err := c.Do(req); err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	}()
	f.waitCount(ProtoEAS, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	f.srv.Shutdown(ctx)
	<-done
	f.waitCount(ProtoEAS, 0)
}
