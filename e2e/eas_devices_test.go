package e2e

import (
	"context"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// ActiveSync devices end to end: the built binary's demo (its embedded
// ActiveSync backend) behind the HTTPS front, two of alice's devices, one
// blocked through the admin API with a reason, and what the API, the audit
// trail, the login history, mailgate ctl and the page say about them.

// easClient is an ActiveSync client of one device.
type easClient struct {
	t                  *testing.T
	base               string // https://host:port/Microsoft-Server-ActiveSync
	user, pass         string
	id, typ, userAgent string
	base64             bool // the base64 query form (MS-ASHTTP 2.2.1.1.1.1)
	http               *http.Client
}

func newEASClient(t *testing.T, httpsAddr, user, pass, id, typ, userAgent string, b64 bool) *easClient {
	return &easClient{t: t, base: "https://" + httpsAddr + "/Microsoft-Server-ActiveSync", user: user, pass: pass,
		id: id, typ: typ, userAgent: userAgent, base64: b64,
		// The demo's certificate is self-signed; this is its client.
		http: &http.Client{Timeout: 2 * stepTimeout, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}}
}

// query is the request's query for command code cmd (name for the plain
// form) with extra parameters (plain form only).
func (c *easClient) query(name string, code byte, extra string) string {
	if !c.base64 {
		return fmt.Sprintf("Cmd=%s&User=%s&DeviceId=%s&DeviceType=%s%s", name, c.user, c.id, c.typ, extra)
	}
	b := []byte{141, code, 0x09, 0x04, byte(len(c.id))}
	b = append(b, c.id...)
	b = append(b, 0, byte(len(c.typ)))
	b = append(b, c.typ...)
	b = append(b, 8, byte(len(c.user)))
	b = append(b, c.user...)
	return base64.StdEncoding.EncodeToString(b)
}

// do sends one command and returns the status and the body.
func (c *easClient) do(ctx context.Context, name string, code byte, extra string) (int, string, error) {
	req, err := http.NewRequestWithContext(ctx, "POST", c.base+"?"+c.query(name, code, extra), strings.NewReader(""))
	if err != nil {
		c.t.Fatal(err)
	}
	req.SetBasicAuth(c.user, c.pass)
	req.Header.Set("User-Agent", c.userAgent)
	req.Header.Set("MS-ASProtocolVersion", "14.1")
	req.Header.Set("Content-Type", "application/vnd.ms-sync.wbxml")
	resp, err := c.http.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

func (c *easClient) folderSync() (int, string) {
	c.t.Helper()
	st, body, err := c.do(context.Background(), "FolderSync", 9, "")
	if err != nil {
		c.t.Fatalf("FolderSync of %s: %v", c.id, err)
	}
	return st, body
}

// apiDevice is one entry of GET /api/v1/users/{user}/devices as the e2e
// tests read it.
type apiDevice struct {
	ID          string  `json:"id"`
	Type        string  `json:"type"`
	UserAgent   string  `json:"user_agent"`
	LastCommand string  `json:"last_command"`
	LastIP      *string `json:"last_ip"`
	LastRefused *string `json:"last_refused"`
	Live        int     `json:"live"`
	Blocked     bool    `json:"blocked"`
	Block       *struct {
		Reason string `json:"reason"`
		By     string `json:"by"`
	} `json:"block"`
}

func (m *mailgate) devices(user string) map[string]apiDevice {
	m.t.Helper()
	var l struct {
		User    string      `json:"user"`
		Devices []apiDevice `json:"devices"`
	}
	m.apiJSON("GET", "/api/v1/users/"+user+"/devices", nil, &l)
	out := map[string]apiDevice{}
	for _, d := range l.Devices {
		out[d.ID] = d
	}
	return out
}

// ctlOut runs mailgate ctl against m and returns its output.
func (m *mailgate) ctlOut(args ...string) (string, error) {
	m.t.Helper()
	cmd := exec.Command(mailgateBin, append([]string{"ctl", "--addr", "http://" + m.admin, "--token", m.token}, args...)...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// TestEASDevices: two devices of alice sync through `mailgate demo`; the
// phone is blocked through the API with a reason while its Ping waits: the
// Ping is cut, the phone gets 403 from mailgate (never reaching the demo's
// backend) while the tablet still syncs; the audit trail shows the block
// with its actor and reason, the login history the refusal, the devices
// list both devices with the blocked flag, and mailgate ctl prints them.
// Allowed again (by ctl, with a reason), the phone syncs. The page's
// Devices dialog shows them and unblocks, as the admin token may.
func TestEASDevices(t *testing.T) {
	t.Parallel()
	const token = "e2e-eas-devices-token"
	m, httpsAddr := startHTTPDemo(t, token)
	phone := newEASClient(t, httpsAddr, alice, alicePassword, "E2EPHONE01", "iPhone", "Apple-iPhone14C2/2008.100", false)
	tablet := newEASClient(t, httpsAddr, alice, alicePassword, "e2etablet02", "SAMSUNGSMX710", "Android-SAMSUNG-SM-X710/101", true)
	for _, c := range []*easClient{phone, tablet} {
		if st, body := c.folderSync(); st != 200 || !strings.Contains(body, "Inbox") {
			t.Fatalf("FolderSync of %s = %d %q", c.id, st, body)
		}
	}
	ds := m.devices(alice)
	if p, tb := ds["E2EPHONE01"], ds["e2etablet02"]; len(ds) != 2 || p.Type != "iPhone" || p.UserAgent != phone.userAgent ||
		p.LastCommand != "FolderSync" || p.LastIP == nil || *p.LastIP != "127.0.0.1" || p.Blocked ||
		tb.Type != "SAMSUNGSMX710" || tb.UserAgent != tablet.userAgent || tb.Blocked {
		t.Fatalf("devices before the block = %+v", ds)
	}

	// The phone waits in a Ping (the credential is known good by now, so it
	// counts as the phone's live request at once).
	pingDone := make(chan error, 1)
	go func() {
		st, _, err := phone.do(context.Background(), "Ping", 18, "&heartbeat=120")
		if err == nil {
			err = fmt.Errorf("status %d", st)
		}
		pingDone <- err
	}()
	waitFor(t, "the phone's live Ping", func() bool { return m.devices(alice)["E2EPHONE01"].Live == 1 },
		func() string { return fmt.Sprintf("%+v", m.devices(alice)) })

	const reason = "lost on the train, ticket 4711"
	st, b := m.apiAs(token, reason, "POST", "/api/v1/users/"+alice+"/devices/e2ephone01/block")
	var res struct {
		User, DeviceID string
		Blocked        bool
		Dropped        int
	}
	if json.Unmarshal(b, &res); st != 200 || !res.Blocked || res.Dropped != 1 {
		t.Fatalf("block = %d %s", st, b)
	}
	select {
	case err := <-pingDone:
		if err == nil || strings.Contains(err.Error(), "status 200") {
			t.Fatalf("the phone's Ping after the block: %v, want it cut", err)
		}
	case <-time.After(stepTimeout):
		t.Fatal("the phone's Ping is still open after the block")
	}

	st, body := phone.folderSync()
	if st != http.StatusForbidden || !strings.Contains(body, "blocked") {
		t.Fatalf("the blocked phone's FolderSync = %d %q, want 403 from mailgate", st, body)
	}
	if st, body := tablet.folderSync(); st != 200 || !strings.Contains(body, "Inbox") {
		t.Fatalf("the tablet's FolderSync after the block = %d %q", st, body)
	}
	// Refused by mailgate: logged as such, never forwarded (a forwarded
	// request is logged at debug as "http request" with its status).
	waitFor(t, "the refusal in the log", func() bool {
		for _, line := range strings.Split(m.log.String(), "\n") {
			if strings.Contains(line, `msg="eas device refused"`) && strings.Contains(line, "user=alice@example.com device_id=E2EPHONE01 device_type=iPhone eas_cmd=FolderSync") &&
				strings.Contains(line, "reason=device_blocked") {
				return true
			}
		}
		return false
	}, nil)
	for _, line := range strings.Split(m.log.String(), "\n") {
		if strings.Contains(line, `msg="http request"`) && strings.Contains(line, "device_id=E2EPHONE01") && strings.Contains(line, "status=403") {
			t.Errorf("the refused request went to the backend: %s", line)
		}
	}

	var found bool
	for _, e := range m.audit("?target=" + alice) {
		if e.Action == "block_device" {
			found = true
			if e.Actor != "admin" || e.Role != "admin" || e.Reason != reason || e.Params["device"] != "e2ephone01" || !e.OK || e.Dropped != 1 {
				t.Errorf("the block's audit entry = %+v", e)
			}
		}
	}
	if !found {
		t.Fatalf("no block_device entry in the audit: %+v", m.audit(""))
	}
	var logins struct {
		Logins []struct{ Protocol, Result, Reason string } `json:"logins"`
	}
	m.apiJSON("GET", "/api/v1/users/"+alice+"/logins", nil, &logins)
	gated := false
	for _, l := range logins.Logins {
		gated = gated || (l.Protocol == "eas" && l.Result == "gated" && l.Reason == "device_blocked")
	}
	if !gated {
		t.Errorf("no gated device_blocked attempt in the login history: %+v", logins.Logins)
	}
	ds = m.devices(alice)
	if p := ds["E2EPHONE01"]; !p.Blocked || p.Block == nil || p.Block.Reason != reason || p.Block.By != "admin" || p.Live != 0 || p.LastRefused == nil {
		t.Errorf("the blocked phone in the list = %+v", p)
	}
	if tb := ds["e2etablet02"]; tb.Blocked || tb.LastCommand != "FolderSync" {
		t.Errorf("the tablet in the list = %+v", tb)
	}

	out, err := m.ctlOut("devices", alice)
	if err != nil {
		t.Fatalf("ctl devices: %v\n%s", err, out)
	}
	rows := map[string]string{}
	for _, l := range strings.Split(strings.TrimSpace(out), "\n")[1:] {
		rows[strings.Fields(l)[0]] = l
	}
	if p := rows["E2EPHONE01"]; !strings.Contains(p, "iPhone") || !strings.Contains(p, "blocked by admin: "+reason) {
		t.Errorf("ctl devices, the phone: %q\n%s", p, out)
	}
	if tb := rows["e2etablet02"]; !strings.Contains(tb, "SAMSUNGSMX710") || !strings.Contains(tb, "allowed") || !strings.Contains(tb, tablet.userAgent) {
		t.Errorf("ctl devices, the tablet: %q\n%s", tb, out)
	}

	t.Run("ctl device allow", func(t *testing.T) {
		out, err := m.ctlOut("device", "allow", alice, "E2EPHONE01", "--reason", "found it")
		if err != nil || !strings.Contains(out, "allowed device E2EPHONE01") {
			t.Fatalf("ctl device allow: %v %q", err, out)
		}
		if st, _ := phone.folderSync(); st != 200 {
			t.Fatalf("the allowed phone's FolderSync = %d", st)
		}
		if e := m.audit("?target=" + alice); len(e) == 0 || e[0].Action != "allow_device" || e[0].Reason != "found it" {
			t.Errorf("the newest audit entry = %+v", e)
		}
		out, err = m.ctlOut("device", "block", alice, "E2EPHONE01", "--reason", "again")
		if err != nil || !strings.Contains(out, "blocked device E2EPHONE01") {
			t.Fatalf("ctl device block: %v %q", err, out)
		}
		if st, _ := phone.folderSync(); st != 403 {
			t.Fatalf("the phone blocked by ctl = %d", st)
		}
	})

	t.Run("page", func(t *testing.T) {
		ctx := browser(t)
		// alice has a row on the EAS tab while a request of hers is live.
		pctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		go tablet.do(pctx, "Ping", 18, "")
		do(t, ctx, "open the page", chromedp.Navigate("http://"+m.admin+"/#eas"))
		waitJS(t, ctx, "the token form", `!document.getElementById('login').hidden`)
		do(t, ctx, "enter the token", chromedp.SendKeys(chromedp.ID("token"), token),
			chromedp.Click(chromedp.CSS(`#login-form button[type=submit]`), chromedp.NodeVisible))
		waitJS(t, ctx, "alice's EAS row", `document.querySelector(`+jsString(rowSel(alice))+`) !== null && !document.getElementById('whoami').hidden`)
		do(t, ctx, "open alice's menu", chromedp.Click(chromedp.CSS(rowSel(alice)+` button[data-role=menu]`), chromedp.NodeVisible))
		do(t, ctx, "View ActiveSync Devices",
			chromedp.Click(`//div[@id="menu"]/button[normalize-space()="View ActiveSync Devices"]`, chromedp.NodeVisible))
		phoneRow := `#devices-body tr[data-device="E2EPHONE01"]`
		waitJS(t, ctx, "the two devices", `document.getElementById('devices').open && document.querySelectorAll('#devices-body tbody tr').length === 2`)
		if txt := eval[string](t, ctx, `document.querySelector(`+jsString(phoneRow)+`).innerText`); !strings.Contains(txt, "Blocked by admin: again") {
			t.Errorf("the phone's row = %q", txt)
		}
		if txt := eval[string](t, ctx, `document.querySelector('#devices-body tr[data-device="e2etablet02"]').innerText`); !strings.Contains(txt, "Allowed") || !strings.Contains(txt, "Ping") {
			t.Errorf("the tablet's row = %q", txt)
		}
		do(t, ctx, "Allow", chromedp.Click(chromedp.CSS(phoneRow+` button[data-action=allow]`), chromedp.NodeVisible))
		waitJS(t, ctx, "the confirmation", `document.getElementById('confirm').open`)
		do(t, ctx, "type a reason", chromedp.SendKeys(chromedp.ID("confirm-reason"), "page: back from the train"),
			chromedp.Click(chromedp.ID("confirm-ok"), chromedp.NodeVisible))
		waitJS(t, ctx, "the phone allowed", `/^Allowed device E2EPHONE01/.test(document.getElementById('devices-msg').textContent) && document.querySelector(`+jsString(phoneRow+` button[data-action=block]`)+`) !== null`)
		if p := m.devices(alice)["E2EPHONE01"]; p.Blocked {
			t.Errorf("the page's Allow left the phone blocked: %+v", p)
		}
		if e := m.audit("?target=" + alice); len(e) == 0 || e[0].Action != "allow_device" || e[0].Reason != "page: back from the train" {
			t.Errorf("the newest audit entry = %+v", e)
		}
	})
}

// TestEASDevices_SOGo: the same block in front of a real SOGo ActiveSync
// (MAILGATE_SOGO_EAS_URL, e.g. http://127.0.0.1:20000, and a user of it);
// skipped where there is none.
func TestEASDevices_SOGo(t *testing.T) {
	backend, user, pass := os.Getenv("MAILGATE_SOGO_EAS_URL"), os.Getenv("MAILGATE_SOGO_USER"), os.Getenv("MAILGATE_SOGO_PASSWORD")
	if backend == "" || user == "" || pass == "" {
		t.Skip("no SOGo ActiveSync: set MAILGATE_SOGO_EAS_URL (http://host:port of SOGo, which serves /Microsoft-Server-ActiveSync), MAILGATE_SOGO_USER and MAILGATE_SOGO_PASSWORD to run it")
	}
	t.Parallel()
	m, httpsAddr, _, _ := serveHTTPFront(t, "eas-sogo", false, fmt.Sprintf("  eas:\n    backend: %s\n", backend))
	a := newEASClient(t, httpsAddr, user, pass, "e2esogoa1", "iPhone", "Apple-iPhone14C2/2008.100", false)
	b := newEASClient(t, httpsAddr, user, pass, "e2esogob2", "Android", "Android-Mail/2024", false)
	for _, c := range []*easClient{a, b} {
		if st, _ := c.folderSync(); st != 200 {
			t.Fatalf("SOGo FolderSync of %s = %d", c.id, st)
		}
	}
	if st, body := m.apiAs(m.token, "e2e", "POST", "/api/v1/users/"+user+"/devices/e2esogoa1/block"); st != 200 {
		t.Fatalf("block = %d %s", st, body)
	}
	if st, _ := a.folderSync(); st != 403 {
		t.Errorf("the blocked device against SOGo = %d, want 403", st)
	}
	if st, _ := b.folderSync(); st != 200 {
		t.Errorf("the other device against SOGo = %d, want 200", st)
	}
}
