package accounting_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mailgate/mailgate/accounting"
)

// easRequest runs one ActiveSync request the way the HTTP front does: the
// user is tried, the login gate and the device gate asked, and with verdict
// "ok" the request is authenticated. It returns the connection (still
// live: the caller closes it) and the device gate's refusal.
func easRequest(r *accounting.Registry, addr, user string, d accounting.Device, verdict string) (*accounting.Conn, string) {
	c := r.Register(accounting.ConnInfo{Protocol: "eas", Client: ap(addr)})
	c.AuthAttempt(user, "Basic")
	if deny := c.CheckLogin(user); deny != accounting.DenyNone {
		return c, deny
	}
	if deny := c.CheckDevice(user, d); deny != "" {
		return c, deny
	}
	if verdict == "ok" {
		c.Authenticated(user, "Basic")
	}
	return c, ""
}

func devicesText(ds []accounting.DeviceInfo) string {
	var parts []string
	for _, d := range ds {
		p := fmt.Sprintf("%s/%s/%s/live=%d", d.ID, d.Type, d.LastCommand, d.Live)
		if d.Blocked != nil {
			p += "/blocked:" + d.Blocked.Reason
		}
		if d.TypeRefused {
			p += "/type-refused"
		}
		parts = append(parts, p)
	}
	return strings.Join(parts, " ")
}

var (
	iphone  = accounting.Device{ID: "ApplF17A1B2C3", Type: "iPhone", UserAgent: "Apple-iPhone9C1/1402.100", Command: "FolderSync"}
	android = accounting.Device{ID: "androidc1234567", Type: "Android", UserAgent: "Android-Mail/2024", Command: "FolderSync"}
)

func TestDevices_seenLiveAndLastCommand(t *testing.T) {
	clk := &fakeClock{t: time.Date(2026, 5, 1, 8, 0, 0, 0, time.UTC)}
	r := accounting.New(accounting.Options{Now: clk.Now})
	const u = "alice@example.com"
	c, deny := easRequest(r, "192.0.2.1:1", "Alice@Example.com", iphone, "ok")
	if deny != "" {
		t.Fatalf("refused: %s", deny)
	}
	c.Close()
	clk.Add(time.Minute)
	ping := iphone
	ping.ID, ping.Command = strings.ToUpper(iphone.ID), "Ping" // the same device, another case
	waiting, _ := easRequest(r, "192.0.2.9:1", u, ping, "ok")
	clk.Add(time.Second)
	other, _ := easRequest(r, "192.0.2.2:1", u, android, "ok")
	other.Close()
	// A request the backend has not accepted (yet) is no sighting.
	unknown := accounting.Device{ID: "nobody", Type: "Outlook"}
	failed, _ := easRequest(r, "192.0.2.3:1", u, unknown, "failed")
	failed.Close()

	ds := r.Devices(u)
	if got, want := devicesText(ds), "androidc1234567/Android/FolderSync/live=0 APPLF17A1B2C3/iPhone/Ping/live=1"; got != want {
		t.Fatalf("devices = %s, want %s", got, want)
	}
	ip := ds[1]
	if !ip.FirstSeen.Equal(time.Date(2026, 5, 1, 8, 0, 0, 0, time.UTC)) || !ip.LastSeen.Equal(time.Date(2026, 5, 1, 8, 1, 0, 0, time.UTC)) ||
		ip.LastIP.String() != "192.0.2.9" || ip.UserAgent != iphone.UserAgent {
		t.Errorf("the iPhone = %+v", ip)
	}
	if cs := r.Connections(accounting.Filter{Protocol: "eas"}); len(cs) != 1 || cs[0].Device != ping.ID {
		t.Errorf("live eas connections = %+v, want the Ping with its device", cs)
	}
	waiting.Close()
	if got := devicesText(r.Devices(u)); !strings.Contains(got, "Ping/live=0") {
		t.Errorf("after the Ping ended: %s", got)
	}
	if ds := r.Devices("bob@example.com"); len(ds) != 0 {
		t.Errorf("bob has devices: %s", devicesText(ds))
	}
}

func TestDevices_blockDropsAndRefusesOnlyThatDevice(t *testing.T) {
	r := accounting.New(accounting.Options{})
	const u = "alice@example.com"
	c, _ := easRequest(r, "192.0.2.1:1", u, iphone, "ok")
	c.Close()
	var dropped atomic.Int32
	ping, _ := easRequest(r, "192.0.2.1:2", u, iphone, "ok")
	ping.SetDropFunc(func(string) { dropped.Add(1) })
	keep, _ := easRequest(r, "192.0.2.2:1", u, android, "ok")
	keep.SetDropFunc(func(string) { t.Error("the other device was dropped") })
	bobs, _ := easRequest(r, "192.0.2.3:1", "bob@example.com", iphone, "ok")
	bobs.SetDropFunc(func(string) { t.Error("bob's device of the same id was dropped") })

	n, err := r.BlockDevice("ALICE@example.com", strings.ToLower(iphone.ID), "lost on the train", "otto")
	if err != nil || n != 1 || dropped.Load() != 1 {
		t.Fatalf("BlockDevice = %d, %v; drop func ran %d times", n, err, dropped.Load())
	}
	if !r.DeviceBlocked(u, iphone.ID) || r.DeviceBlocked("bob@example.com", iphone.ID) {
		t.Fatal("DeviceBlocked is wrong")
	}
	if _, deny := easRequest(r, "192.0.2.1:3", u, iphone, "ok"); deny != accounting.GateDeviceBlocked {
		t.Fatalf("the blocked device: %q, want %q", deny, accounting.GateDeviceBlocked)
	}
	if _, deny := easRequest(r, "192.0.2.2:2", u, android, "ok"); deny != "" {
		t.Fatalf("the other device: %q", deny)
	}
	if _, deny := easRequest(r, "192.0.2.3:2", "bob@example.com", iphone, "ok"); deny != "" {
		t.Fatalf("bob's device with the same id: %q", deny)
	}
	ds := r.Devices(u)
	if got := devicesText(ds); got != "androidc1234567/Android/FolderSync/live=2 ApplF17A1B2C3/iPhone/FolderSync/live=0/blocked:lost on the train" {
		t.Fatalf("devices = %s", got)
	}
	b := ds[1]
	if b.Blocked.By != "otto" || b.Blocked.ID != iphone.ID || b.LastRefused.IsZero() {
		t.Errorf("the blocked device = %+v, block %+v", b, *b.Blocked)
	}
	h := r.UserLogins(u)
	if h[1].Result != accounting.LoginGated || h[1].Reason != accounting.GateDeviceBlocked || h[1].Protocol != "eas" {
		t.Errorf("login history = %s", attemptsText(h))
	}
	if st := r.Stats(); st.Refusals[accounting.ReasonDeviceBlocked] != 1 {
		t.Errorf("refusals = %v", st.Refusals)
	}

	// A device never seen may be blocked too, and shows.
	if _, err := r.BlockDevice(u, "stolen-1", "", "ada"); err != nil {
		t.Fatal(err)
	}
	if got := devicesText(r.Devices(u)); !strings.HasSuffix(got, " stolen-1///live=0/blocked:") {
		t.Errorf("devices = %s", got)
	}
	if ok, err := r.AllowDevice(u, iphone.ID); !ok || err != nil {
		t.Fatalf("AllowDevice = %v, %v", ok, err)
	}
	if ok, _ := r.AllowDevice(u, iphone.ID); ok {
		t.Error("AllowDevice twice found a block")
	}
	if _, deny := easRequest(r, "192.0.2.1:4", u, iphone, "ok"); deny != "" {
		t.Fatalf("the allowed device: %q", deny)
	}
	for _, id := range []string{"", "a b", "x\x00y", strings.Repeat("d", 129)} {
		if _, err := r.BlockDevice(u, id, "", "ada"); err != accounting.ErrBadDevice {
			t.Errorf("BlockDevice(%q) = %v, want ErrBadDevice", id, err)
		}
	}
}

func TestDevices_typePolicy(t *testing.T) {
	r := accounting.New(accounting.Options{DeviceTypes: accounting.DeviceTypes{Allow: []string{"iPhone", " iPad "}}})
	const u = "alice@example.com"
	for _, tc := range []struct {
		typ  string
		deny string
	}{
		{"iPhone", ""}, {"IPHONE", ""}, {"ipad", ""}, {"Android", accounting.GateDeviceType}, {"", accounting.GateDeviceType},
	} {
		d := iphone
		d.Type = tc.typ
		c, deny := easRequest(r, "192.0.2.1:1", u, d, "ok")
		c.Close()
		if deny != tc.deny {
			t.Errorf("type %q with allow [iPhone iPad]: %q, want %q", tc.typ, deny, tc.deny)
		}
	}
	r.SetDeviceTypes(accounting.DeviceTypes{Block: []string{"WindowsMail"}})
	for _, tc := range []struct {
		typ  string
		deny string
	}{
		{"windowsmail", accounting.GateDeviceType}, {"Android", ""}, {"", ""},
	} {
		d := android
		d.Type = tc.typ
		c, deny := easRequest(r, "192.0.2.1:1", u, d, "ok")
		c.Close()
		if deny != tc.deny {
			t.Errorf("type %q with block [WindowsMail]: %q, want %q", tc.typ, deny, tc.deny)
		}
	}
	// Block wins over allow; the list shows which types are refused now.
	r.SetDeviceTypes(accounting.DeviceTypes{Allow: []string{"android", "iphone", "ipad"}, Block: []string{"Android"}})
	if !r.DeviceTypeRefused("ANDROID") || r.DeviceTypeRefused("iPhone") {
		t.Error("block does not win over allow")
	}
	// The android's last type was "" (refused by an allow list).
	if got, want := devicesText(r.Devices(u)), "androidc1234567//FolderSync/live=0/type-refused ApplF17A1B2C3/ipad/FolderSync/live=0"; got != want {
		t.Errorf("devices = %s, want %s", got, want)
	}
	if got, want := attemptsText(r.UserLogins(u)), "eas/192.0.2.1/Basic/ok×2 eas/192.0.2.1/Basic/gated/device_type×3 eas/192.0.2.1/Basic/ok×3"; got != want {
		t.Errorf("login history = %s, want %s", got, want)
	}
}

func TestDevices_bounded(t *testing.T) {
	clk := &fakeClock{t: time.Date(2026, 5, 1, 8, 0, 0, 0, time.UTC)}
	r := accounting.New(accounting.Options{Now: clk.Now, DevicesPerUser: 3, DeviceUsers: 128})
	for i := 0; i < 5; i++ {
		clk.Add(time.Second)
		c, _ := easRequest(r, "192.0.2.1:1", "alice@example.com", accounting.Device{ID: fmt.Sprintf("dev%d", i), Type: "t"}, "ok")
		c.Close()
	}
	if got := devicesText(r.Devices("alice@example.com")); got != "dev4/t//live=0 dev3/t//live=0 dev2/t//live=0" {
		t.Errorf("3 of 5 devices: %s", got)
	}
	for i := 0; i < 2000; i++ {
		c, _ := easRequest(r, "192.0.2.1:1", fmt.Sprintf("u%d@example.com", i), iphone, "ok")
		c.Close()
	}
	kept := 0
	for i := 0; i < 2000; i++ {
		if len(r.Devices(fmt.Sprintf("u%d@example.com", i))) > 0 {
			kept++
		}
	}
	if kept > 128 || kept < 64 || len(r.Devices("u1999@example.com")) != 1 {
		t.Errorf("%d users of 2000 have devices with a bound of 128", kept)
	}
	off := accounting.New(accounting.Options{DevicesPerUser: -1})
	c, _ := easRequest(off, "192.0.2.1:1", "alice@example.com", iphone, "ok")
	c.Close()
	if ds := off.Devices("alice@example.com"); len(ds) != 0 {
		t.Errorf("DevicesPerUser -1 keeps %s", devicesText(ds))
	}
	// A name no mailbox has is not kept; nor is a request without a device id.
	long := strings.Repeat("x", 400) + "@example.com"
	c, _ = easRequest(r, "192.0.2.1:1", long, iphone, "ok")
	c.Close()
	c, _ = easRequest(r, "192.0.2.1:1", "carol@example.com", accounting.Device{Type: "iPhone", Command: "Ping"}, "ok")
	c.Close()
	if len(r.Devices(long)) != 0 || len(r.Devices("carol@example.com")) != 0 {
		t.Error("a device was kept for a 412-byte name or without an id")
	}
}

func TestDevices_persisted(t *testing.T) {
	clk := &fakeClock{t: time.Date(2026, 5, 1, 8, 0, 0, 0, time.UTC)}
	path := filepath.Join(t.TempDir(), "state.db")
	open := func() (*accounting.Store, *accounting.Registry) {
		return openStateRegistry(t, path, accounting.Options{Now: clk.Now, DeviceUsers: 64})
	}
	st, r := open()
	const u = "alice@example.com"
	c, _ := easRequest(r, "192.0.2.1:1", u, iphone, "ok")
	c.Close()
	clk.Add(time.Second)
	c, _ = easRequest(r, "192.0.2.2:1", u, android, "ok")
	c.Close()
	if _, err := r.BlockDevice(u, android.ID, "left the company", "otto"); err != nil {
		t.Fatal(err)
	}
	if _, err := r.BlockDevice(u, "never-seen", "", "ada"); err != nil {
		t.Fatal(err)
	}
	clk.Add(time.Second)
	if _, deny := easRequest(r, "192.0.2.2:2", u, android, "ok"); deny != accounting.GateDeviceBlocked {
		t.Fatalf("blocked: %q", deny)
	}
	want := devicesText(r.Devices(u))
	st.Flush()
	st.Close()

	st, r = open()
	ds := r.Devices(u)
	if got := devicesText(ds); got != want {
		t.Fatalf("after a reopen:\n %s\nwant\n %s", got, want)
	}
	if ds[0].LastIP.String() != "192.0.2.2" || ds[0].UserAgent != android.UserAgent || ds[0].LastRefused.IsZero() ||
		ds[0].Blocked.By != "otto" || ds[0].Blocked.Created.IsZero() {
		t.Errorf("the android after a reopen = %+v", ds[0])
	}
	if _, deny := easRequest(r, "192.0.2.2:3", u, android, "ok"); deny != accounting.GateDeviceBlocked {
		t.Fatalf("the block did not survive the reopen: %q", deny)
	}
	// The user comes back into memory with the stored devices.
	clk.Add(2 * time.Minute)
	d := iphone
	d.Command = "Ping"
	c, _ = easRequest(r, "192.0.2.1:2", u, d, "ok")
	c.Close()
	if got := devicesText(r.Devices(u)); !strings.HasPrefix(got, "ApplF17A1B2C3/iPhone/Ping/live=0 androidc1234567/Android/FolderSync/live=0/blocked:left the company") {
		t.Fatalf("after a sighting: %s", got)
	}
	if ok, err := r.AllowDevice(u, "NEVER-SEEN"); !ok || err != nil {
		t.Fatalf("AllowDevice = %v, %v", ok, err)
	}
	// More users than the bound: the file keeps the ones seen last; blocks
	// are kept whatever the bound.
	for i := 0; i < 300; i++ {
		clk.Add(time.Second)
		c, _ := easRequest(r, "192.0.2.1:1", fmt.Sprintf("u%d@example.com", i), iphone, "ok")
		c.Close()
	}
	st.Flush()
	st.Close()
	st, r = open()
	defer st.Close()
	kept := 0
	for i := 0; i < 300; i++ {
		if len(r.Devices(fmt.Sprintf("u%d@example.com", i))) > 0 {
			kept++
		}
	}
	if kept != 64 || len(r.Devices("u299@example.com")) != 1 {
		t.Errorf("after 301 users with a bound of 64: %d kept", kept)
	}
	if got := devicesText(r.Devices(u)); got != "androidc1234567///live=0/blocked:left the company" {
		t.Errorf("alice after the bound: %s", got)
	}
}

func TestDevices_dropAndResync(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "argv")
	script := filepath.Join(dir, "hook.sh")
	os.WriteFile(script, []byte("#!/bin/sh\nfor a in \"$@\"; do echo \"$a\"; done > "+out+"\necho resynced\n"), 0o755)
	r := accounting.New(accounting.Options{ResyncHooks: map[string]accounting.ResyncHook{
		"eas": {Command: []string{script, "-a", "resync", "-u", "{user}", "-d", "{device}"}},
	}})
	const u = "alice@example.com"
	var drops atomic.Int32
	for i := 0; i < 2; i++ {
		c, _ := easRequest(r, fmt.Sprintf("192.0.2.1:%d", i+1), u, iphone, "ok")
		c.SetDropFunc(func(string) { drops.Add(1) })
	}
	// Not authenticated yet, trying alice: reached by the drop too.
	pending, _ := easRequest(r, "192.0.2.1:9", u, iphone, "pending")
	pending.SetDropFunc(func(string) { drops.Add(1) })
	other, _ := easRequest(r, "192.0.2.2:1", u, android, "ok")
	other.SetDropFunc(func(string) { t.Error("the other device was dropped") })
	if n := r.DropDevice(u, strings.ToLower(iphone.ID), "dropped"); n != 3 || drops.Load() != 3 {
		t.Fatalf("DropDevice = %d, drop funcs %d; want 3", n, drops.Load())
	}
	c, _ := easRequest(r, "192.0.2.1:3", u, iphone, "ok")
	c.SetDropFunc(func(string) { drops.Add(1) })
	steps, err := r.ResyncDevice(context.Background(), u, iphone.ID)
	if err != nil || len(steps) != 2 || steps[0].Count != 1 || !steps[1].OK || !strings.Contains(steps[1].Detail, "resynced") {
		t.Fatalf("ResyncDevice = %+v, %v", steps, err)
	}
	got, _ := os.ReadFile(out)
	if string(got) != "-a\nresync\n-u\nalice@example.com\n-d\nApplF17A1B2C3\n" {
		t.Fatalf("argv = %q", got)
	}
	for _, id := range []string{"-rf", "a;b", "$(id)", ""} {
		if _, err := r.ResyncDevice(context.Background(), u, id); err != accounting.ErrBadDevice {
			t.Errorf("ResyncDevice(%q) = %v, want ErrBadDevice", id, err)
		}
	}
	if _, err := r.ResyncDevice(context.Background(), "a b", iphone.ID); err != accounting.ErrBadUser {
		t.Errorf("ResyncDevice of a bad user = %v", err)
	}
}

func TestDeviceKey(t *testing.T) {
	for id, want := range map[string]string{
		"ApplF17A": "applf17a", " x1 ": "x1", "": "", "a b": "", "a\tb": "", "\xff": "",
		strings.Repeat("a", 128): strings.Repeat("a", 128), strings.Repeat("a", 129): "",
		"dev/é": "dev/é",
	} {
		if got := accounting.DeviceKey(id); got != want {
			t.Errorf("DeviceKey(%q) = %q, want %q", id, got, want)
		}
	}
	for id, want := range map[string]bool{"ApplF17A": true, "a-b_c.d=e+f": true, "-x": false, "a/b": false, "é": false} {
		if got := accounting.ValidHookDevice(id); got != want {
			t.Errorf("ValidHookDevice(%q) = %v", id, got)
		}
	}
}
