package httpmail

import (
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/mailgate/mailgate/accounting"
)

// easBase64Query builds the base64 query form (MS-ASHTTP §2.2.1.1.1.1) of
// command code cmd for a device and a user.
func easBase64Query(cmd byte, deviceID, deviceType, user string) string {
	b := []byte{141, cmd, 0x09, 0x04, byte(len(deviceID))}
	b = append(b, deviceID...)
	b = append(b, 0, byte(len(deviceType)))
	b = append(b, deviceType...)
	b = append(b, easParamUser, byte(len(user)))
	b = append(b, user...)
	return base64.StdEncoding.EncodeToString(b)
}

const easPath = "/Microsoft-Server-ActiveSync"

func easCmd(cmd, device, typ string) string {
	return fmt.Sprintf("%s?Cmd=%s&User=alice&DeviceId=%s&DeviceType=%s", easPath, cmd, device, typ)
}

// backendSaw counts the requests the fake backend saw for a device id.
func (f *front) backendSaw(device string) int {
	n := 0
	for _, r := range f.fb.requests() {
		if q, _ := ParseEASQuery(r.RawQuery); strings.EqualFold(q.DeviceID, device) {
			n++
		}
	}
	return n
}

func devicesOf(reg *accounting.Registry, user string) map[string]accounting.DeviceInfo {
	out := map[string]accounting.DeviceInfo{}
	for _, d := range reg.Devices(user) {
		out[d.ID] = d
	}
	return out
}

// TestEASDevices_tracked: the devices of a user's ActiveSync requests (the
// plain and the base64 query), with their type, User-Agent, last command
// and IP; a waiting Ping counts as its device's live request, and dropping
// that device cuts the Ping and nothing else.
func TestEASDevices_tracked(t *testing.T) {
	for _, proto := range []string{"h1", "h2", "h3"} {
		t.Run(proto, func(t *testing.T) {
			f := startFront(t, frontConfig{})
			c := f.client(proto)
			auth := basicAuth(alice, alicePassword)
			if st, _, _ := f.do(c, "POST", easCmd("FolderSync", "iphone1", "iPhone"), auth, nil, "User-Agent", "Apple-iPhone9C1/1402.100"); st != 200 {
				t.Fatalf("FolderSync = %d", st)
			}
			if st, _, _ := f.do(c, "POST", easPath+"?"+easBase64Query(9, "wm6phone", "PocketPC", alice), auth, nil, "User-Agent", "MSFT-PPC/5.2"); st != 200 {
				t.Fatalf("base64 FolderSync = %d", st)
			}
			// OPTIONS names no device: nothing is recorded.
			if st, _, _ := f.do(c, "OPTIONS", easPath, auth, nil); st != 200 {
				t.Fatalf("OPTIONS = %d", st)
			}
			ds := devicesOf(f.reg, alice)
			ip, wm := ds["iphone1"], ds["wm6phone"]
			if len(ds) != 2 || ip.Type != "iPhone" || ip.UserAgent != "Apple-iPhone9C1/1402.100" || ip.LastCommand != "FolderSync" ||
				ip.LastIP.String() != "127.0.0.1" || wm.Type != "PocketPC" || wm.LastCommand != "FolderSync" || wm.UserAgent != "MSFT-PPC/5.2" {
				t.Fatalf("devices = %+v", ds)
			}

			pingDone := make(chan error, 1)
			go func() {
				req, _ := http.NewRequest("POST", f.url(easCmd("Ping", "iphone1", "iPhone")), nil)
				req.Header.Set("Authorization", auth)
				resp, err := c.Do(req)
				if err == nil {
					_, err = io.ReadAll(resp.Body)
					resp.Body.Close()
					if err == nil {
						err = fmt.Errorf("status %d and a whole body", resp.StatusCode)
					}
				}
				pingDone <- err
			}()
			waitFor(t, "the held Ping", func() bool { return f.fb.holding.Load() == 1 }, nil)
			waitFor(t, "the iPhone's live Ping", func() bool { return devicesOf(f.reg, alice)["iphone1"].Live == 1 },
				func() string { return fmt.Sprintf("%+v", f.reg.Devices(alice)) })
			if d := devicesOf(f.reg, alice); d["iphone1"].LastCommand != "Ping" || d["wm6phone"].Live != 0 {
				t.Fatalf("while the Ping waits: %+v", d)
			}
			// The other device syncs meanwhile, and a drop of it leaves the Ping.
			if st, _, _ := f.do(c, "POST", easPath+"?"+easBase64Query(9, "wm6phone", "PocketPC", alice), auth, nil); st != 200 {
				t.Fatalf("the other device's FolderSync = %d", st)
			}
			if n := f.reg.DropDevice(alice, "WM6PHONE", "test"); n != 0 {
				t.Fatalf("DropDevice of the idle device = %d", n)
			}
			if n := f.reg.DropDevice(alice, "IPHONE1", "test"); n != 1 {
				t.Fatalf("DropDevice of the pinging device = %d, want 1", n)
			}
			select {
			case err := <-pingDone:
				if err == nil {
					t.Fatal("the Ping got an answer after the drop")
				}
			case <-time.After(waitTimeout):
				t.Fatal("the Ping is still open after the drop")
			}
			waitFor(t, "no live eas request", func() bool { return f.reg.Count(ProtoEAS) == 0 && devicesOf(f.reg, alice)["iphone1"].Live == 0 }, nil)
		})
	}
}

// TestEASDevices_blockedBeforeTheBackend: a blocked device gets a 403 with
// a line of text from the front, the backend never sees its request, the
// login history says why, and the user's other device goes on.
func TestEASDevices_blockedBeforeTheBackend(t *testing.T) {
	f := startFront(t, frontConfig{})
	c := f.client("h2")
	auth := basicAuth(alice, alicePassword)
	for _, dev := range []string{"lostphone", "desk"} {
		if st, _, _ := f.do(c, "POST", easCmd("FolderSync", dev, "iPhone"), auth, nil); st != 200 {
			t.Fatalf("FolderSync of %s = %d", dev, st)
		}
	}
	if _, err := f.reg.BlockDevice(alice, "LostPhone", "stolen", "test"); err != nil {
		t.Fatal(err)
	}
	seen := f.backendSaw("lostphone")
	for _, tc := range []struct {
		name, path, auth string
	}{
		{"FolderSync", easCmd("FolderSync", "lostphone", "iPhone"), auth},
		{"Ping", easCmd("Ping", "LOSTPHONE", "iPhone"), auth},
		{"base64 query", easPath + "?" + easBase64Query(18, "lostphone", "iPhone", alice), auth},
		// Without a credential the user is the query's User=, unchecked:
		// a device is blocked for the user it names.
		{"no credential, User= only", easPath + "?Cmd=FolderSync&User=alice%40example.com&DeviceId=lostphone&DeviceType=iPhone", ""},
	} {
		st, h, body := f.do(c, "POST", tc.path, tc.auth, strings.NewReader("wbxml"))
		if st != http.StatusForbidden || !strings.Contains(body, "blocked") || !strings.HasPrefix(h.Get("Content-Type"), "text/plain") {
			t.Errorf("%s of the blocked device = %d %q (%s), want 403 with a text", tc.name, st, body, h.Get("Content-Type"))
		}
	}
	if n := f.backendSaw("lostphone"); n != seen {
		t.Fatalf("the backend saw %d requests of the blocked device after the block", n-seen)
	}
	if st, _, _ := f.do(c, "POST", easCmd("Sync", "desk", "iPhone"), auth, nil); st != 200 {
		t.Fatalf("the other device = %d, want 200", st)
	}
	h := f.reg.UserLogins(alice)
	if len(h) < 2 || h[1].Result != accounting.LoginGated || h[1].Reason != accounting.GateDeviceBlocked {
		t.Errorf("login history = %+v", h)
	}
	if d := devicesOf(f.reg, alice)["lostphone"]; d.Blocked == nil || d.LastRefused.IsZero() {
		t.Errorf("the blocked device = %+v", d)
	}
	if !strings.Contains(f.log.String(), `msg="eas device refused" user=alice@example.com device_id=lostphone device_type=iPhone`) {
		t.Errorf("no log line for the refusal:\n%s", f.log.String())
	}
	// Allowed again, it syncs.
	if ok, _ := f.reg.AllowDevice(alice, "lostphone"); !ok {
		t.Fatal("AllowDevice found no block")
	}
	if st, _, _ := f.do(c, "POST", easCmd("FolderSync", "lostphone", "iPhone"), auth, nil); st != 200 {
		t.Fatalf("the allowed device = %d", st)
	}
}

// TestEASDevices_typeLists: the configured device types, matched without
// regard to case, refused before the backend; OPTIONS and the other
// protocols are not asked.
func TestEASDevices_typeLists(t *testing.T) {
	f := startFront(t, frontConfig{regOpts: accounting.Options{DeviceTypes: accounting.DeviceTypes{Allow: []string{"iPhone", "Outlook"}}}})
	c := f.client("h1")
	auth := basicAuth(alice, alicePassword)
	for _, tc := range []struct {
		method, path string
		want         int
	}{
		{"POST", easCmd("FolderSync", "a1", "IPHONE"), 200},
		{"POST", easCmd("FolderSync", "a2", "outlook"), 200},
		{"POST", easCmd("FolderSync", "a3", "Android"), 403},
		{"POST", easPath + "?Cmd=FolderSync&User=alice&DeviceId=a4", 403}, // no type, with an allow list
		{"POST", easPath + "?" + easBase64Query(9, "a5", "SAMSUNGSMG991B", alice), 403},
		{"OPTIONS", easPath, 200},
		{"PROPFIND", "/dav/alice/", 207},
	} {
		st, _, body := f.do(c, tc.method, tc.path, auth, nil)
		if st != tc.want {
			t.Errorf("%s %s = %d, want %d", tc.method, tc.path, st, tc.want)
		}
		if st == 403 && !strings.Contains(body, "type of device") {
			t.Errorf("%s: body %q", tc.path, body)
		}
	}
	for _, dev := range []string{"a3", "a4", "a5"} {
		if n := f.backendSaw(dev); n != 0 {
			t.Errorf("the backend saw %d request(s) of refused device %s", n, dev)
		}
	}
	f.reg.SetDeviceTypes(accounting.DeviceTypes{Block: []string{"android"}})
	if st, _, _ := f.do(c, "POST", easCmd("FolderSync", "a3", "Android"), auth, nil); st != 403 {
		t.Errorf("Android with block [android] = %d", st)
	}
	if st, _, _ := f.do(c, "POST", easCmd("FolderSync", "a6", "WindowsPhone"), auth, nil); st != 200 {
		t.Errorf("WindowsPhone with block [android] = %d", st)
	}
	if h := f.reg.UserLogins(alice); h[1].Reason != accounting.GateDeviceType {
		t.Errorf("login history = %+v", h)
	}
}
