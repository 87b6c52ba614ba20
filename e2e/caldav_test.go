package e2e

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mailgate/mailgate/protocols/protocoltest"
)

// Real DAV clients in front of Radicale through mailgate (issue 20): litmus
// gets the same per-test results through mailgate as straight from
// Radicale, over HTTPS and the plain listener; python3-caldav and
// vdirsyncer start from the server's root or /.well-known/caldav (RFC 6764)
// and find alice's principal and calendar home by themselves. Each test
// runs its own mailgate and checks the admin API's webdav login of alice.
// The route is TestHTTPRadicale's: /dav/ and the two well-known URIs,
// strip_prefix, X-Script-Name.

// serveRadicaleRoute runs mailgate with one webdav route to the Radicale at
// backend (host:port) on HTTPS and, with plain, on a plain listener too. It
// returns the mailgate, the two addresses ("" without plain) and the
// certificate clients verify mailgate against.
func serveRadicaleRoute(t *testing.T, backend string, plain bool) (m *mailgate, httpsAddr, plainAddr, cert string) {
	t.Helper()
	return serveHTTPFront(t, "caldav", plain, radicaleRoutes(backend))
}

// litmusRadicale runs a Radicale of the test's own and returns its
// host:port. litmus wants to MKCOL a plain collection "litmus/" below the
// URL it is given and nest more inside it; the owner_only rights of
// scripts/radicale.sh allow plain collections only as the principal
// itself, so against that Radicale every suite stops at its "begin". This
// one has the same binary, users and passwords, its own storage, and rights
// that let each user create anything below their principal.
func litmusRadicale(t *testing.T) string {
	t.Helper()
	const bin = "/usr/bin/radicale"
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("%s is missing (apt-get install radicale; scripts/radicale.sh packages lists it): %v", bin, err)
	}
	dir := t.TempDir()
	addr := freeAddr(t)
	files := map[string]string{
		"users": alice + ":" + alicePassword + "\n" + bob + ":" + bobPassword + "\n",
		// The first section that matches decides.
		"rights": "[root]\nuser: .+\ncollection:\npermissions: R\n\n" +
			"[own]\nuser: .+\ncollection: {user}(/.*)?\npermissions: RWrw\n",
		"config": fmt.Sprintf("[server]\nhosts = %s\nmax_connections = 64\ntimeout = 30\n\n"+
			"[auth]\ntype = htpasswd\nhtpasswd_filename = %[2]s/users\nhtpasswd_encryption = plain\ndelay = 0\n\n"+
			"[rights]\ntype = from_file\nfile = %[2]s/rights\n\n"+
			"[storage]\nfilesystem_folder = %[2]s/collections\n\n"+
			"[web]\ntype = none\n\n[logging]\nlevel = info\nmask_passwords = True\n", addr, dir),
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	log := &protocoltest.SyncBuffer{}
	cmd := exec.Command(bin, "--config", filepath.Join(dir, "config"))
	cmd.Stdout, cmd.Stderr = log, log
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", bin, err)
	}
	done := make(chan struct{})
	go func() {
		cmd.Wait()
		close(done)
	}()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			t.Logf("litmus's Radicale log:\n%s", log.String())
		}
	})
	waitFor(t, "Radicale listening on "+addr, func() bool {
		select {
		case <-done:
			t.Fatalf("Radicale exited (%v):\n%s", cmd.ProcessState, log.String())
		default:
		}
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
		}
		return err == nil
	}, log.String)
	return addr
}

// litmusTest matches the start of one test's line, "\r 3. put_get....... ";
// its result follows, possibly after WARNING lines continued with
// "    ....... ".
var (
	litmusTest    = regexp.MustCompile(`^\s*(\d+)\. (\w+)\.* ?`)
	litmusRunning = regexp.MustCompile("^-> running `([^']+)':")
)

// parseLitmusTests reads litmus's result of each test, keyed
// "suite/N.name" (the same name can come twice in a suite): "pass",
// "FAIL (why)", "SKIPPED (why)". litmus writes each test's name, a
// carriage return, the name again and the result.
func parseLitmusTests(out string) map[string]string {
	tests := map[string]string{}
	suite := ""
	for _, seg := range strings.Split(out, "\r") {
		key, rest := "", seg
		if m := litmusTest.FindStringSubmatchIndex(seg); m != nil {
			key, rest = suite+"/"+seg[m[2]:m[3]]+"."+seg[m[4]:m[5]], seg[m[1]:]
		}
		for _, line := range strings.Split(rest, "\n") {
			if m := litmusRunning.FindStringSubmatch(line); m != nil {
				suite = m[1]
				continue
			}
			word := strings.TrimLeft(line, " .")
			for _, r := range []string{"pass", "FAIL", "SKIPPED"} {
				if key != "" && strings.HasPrefix(word, r) {
					tests[key] = strings.TrimSpace(word)
				}
			}
		}
	}
	return tests
}

// litmusLosses lists the tests that pass in direct and do not in via; with
// tls, a test litmus skips because the server is SSL (expect100) does not
// count.
func litmusLosses(direct, via map[string]string, tls bool) []string {
	var lost []string
	for key, d := range direct {
		if !strings.HasPrefix(d, "pass") {
			continue
		}
		v, ok := via[key]
		switch {
		case ok && strings.HasPrefix(v, "pass"):
		case ok && tls && v == "SKIPPED (skipping for SSL server)":
		default:
			if !ok {
				v = "not run"
			}
			lost = append(lost, key+": "+v)
		}
	}
	sort.Strings(lost)
	return lost
}

var litmusSuites = []string{"basic", "copymove", "props", "locks", "http"}

// TestLitmusRadicale: every litmus test that passes against Radicale
// directly passes through mailgate, over HTTPS and the plain listener, with
// Radicale under /dav/ (strip_prefix, X-Script-Name). Radicale stores only
// iCalendar and vCard and has no locks, so many tests fail either way.
func TestLitmusRadicale(t *testing.T) {
	needEnv(t, "Radicale", `scripts/radicale.sh start && eval "$(scripts/radicale.sh env)"`, "MAILGATE_RADICALE")
	t.Parallel()
	backend := litmusRadicale(t)
	m, httpsAddr, plainAddr, _ := serveRadicaleRoute(t, backend, true)
	start := time.Now()

	// One after the other: every run works in alice's litmus/ collection.
	type run struct {
		name  string
		tls   bool
		suite map[string]litmusSuite
		tests map[string]string
	}
	runs := []*run{
		{name: "direct"},
		{name: "through mailgate, HTTPS", tls: true},
		{name: "through mailgate, plain HTTP"},
	}
	urls := []string{"http://" + backend + "/" + alice + "/", "https://" + httpsAddr + "/dav/" + alice + "/", "http://" + plainAddr + "/dav/" + alice + "/"}
	for i, r := range runs {
		var out string
		r.suite, out = litmusRun(t, r.name, urls[i], alice, alicePassword)
		r.tests = parseLitmusTests(out)
	}
	for _, r := range runs {
		// Every test the summaries count was read, no more.
		n := map[string]int{}
		for key := range r.tests {
			n[key[:strings.IndexByte(key, '/')]]++
		}
		for _, s := range litmusSuites {
			if sum := r.suite[s]; n[s] != sum.run+sum.skipped {
				t.Errorf("litmus %s: read %d results of %s, its summary counts %d run and %d skipped", r.name, n[s], s, sum.run, sum.skipped)
			}
		}
	}
	direct := runs[0]
	for _, s := range litmusSuites {
		// Without its collection litmus tests nothing: then the comparison
		// below would hold trivially.
		if got := direct.tests[s+"/1.begin"]; got != "pass" {
			t.Errorf("litmus direct: %s's begin = %q, want pass (Radicale refused litmus's collection?)", s, got)
		}
		d := direct.suite[s]
		line := fmt.Sprintf("%-8s direct %d/%d passed", s, d.passed, d.run)
		for _, r := range runs[1:] {
			v := r.suite[s]
			line += fmt.Sprintf("; %s %d/%d (%d skipped)", r.name, v.passed, v.run, v.skipped)
		}
		t.Log(line)
	}
	for _, r := range runs[1:] {
		if lost := litmusLosses(direct.tests, r.tests, r.tls); len(lost) > 0 {
			t.Errorf("litmus %s: %d tests that pass direct do not:\n%s", r.name, len(lost), strings.Join(lost, "\n"))
		}
	}
	m.wantLogin(t, "webdav", alice, start)
}

// TestParseLitmusTests: the per-test reading of litmus's output, with a
// WARNING continued on the next lines and a suite change.
func TestParseLitmusTests(t *testing.T) {
	out := "-> running `props':\n" +
		"\r 3. propfind_invalid2..... \r 3. propfind_invalid2..... pass\n" +
		"\r 4. propfind_d0........... WARNING: response href for wrong resource\n" +
		"    ...................... FAIL (No responses returned)\n" +
		"    ...................... \r 5. propinit.............. FAIL (PUT of `x': 400 Bad Request)\n" +
		"\r 6. propset............... \r 6. propset............... SKIPPED\n" +
		"-> 1 test was skipped.\n<- summary for `props': of 3 tests run: 1 passed, 2 failed. 33.3%\n" +
		"-> running `http':\n" +
		"\r 2. expect100............. \r 2. expect100............. SKIPPED (skipping for SSL server)\n"
	got := parseLitmusTests(out)
	want := map[string]string{
		"props/3.propfind_invalid2": "pass",
		"props/4.propfind_d0":       "FAIL (No responses returned)",
		"props/5.propinit":          "FAIL (PUT of `x': 400 Bad Request)",
		"props/6.propset":           "SKIPPED",
		"http/2.expect100":          "SKIPPED (skipping for SSL server)",
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("parseLitmusTests =\n%v\nwant\n%v", got, want)
	}
	direct := map[string]string{"http/2.expect100": "pass", "props/3.propfind_invalid2": "pass", "props/4.propfind_d0": "pass"}
	if lost := litmusLosses(direct, got, true); fmt.Sprint(lost) != "[props/4.propfind_d0: FAIL (No responses returned)]" {
		t.Errorf("litmusLosses over TLS = %q", lost)
	}
	if lost := litmusLosses(direct, got, false); len(lost) != 2 {
		t.Errorf("litmusLosses over plain HTTP = %q, want expect100 and propfind_d0", lost)
	}
}

// calendarEvent is an iCalendar object with one event.
func calendarEvent(uid, summary string) string {
	return strings.Join([]string{"BEGIN:VCALENDAR", "VERSION:2.0", "PRODID:-//mailgate//e2e//EN",
		"BEGIN:VEVENT", "UID:" + uid, "DTSTAMP:20260101T100000Z", "DTSTART:20260103T100000Z",
		"DTEND:20260103T110000Z", "SUMMARY:" + summary, "END:VEVENT", "END:VCALENDAR", ""}, "\r\n")
}

// TestCalDAVDiscovery: python3-caldav and vdirsyncer, given only mailgate's
// well-known URL or its root, find alice's principal and calendar home in
// the Radicale of scripts/radicale.sh and work with a calendar there.
func TestCalDAVDiscovery(t *testing.T) {
	radicale := needEnv(t, "Radicale", `scripts/radicale.sh start && eval "$(scripts/radicale.sh env)"`, "MAILGATE_RADICALE")[0]
	t.Parallel()
	run := fmt.Sprint(time.Now().UnixNano())
	auth := []string{"-u", alice + ":" + alicePassword}

	// python3-caldav from /.well-known/caldav: the PROPFIND for
	// current-user-principal follows mailgate's 301 to /dav/; MKCALENDAR,
	// PUT, a calendar-query REPORT and a search by UID follow.
	t.Run("python3-caldav", func(t *testing.T) {
		t.Parallel()
		py, err := python3()
		if err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command(py, "-c", "import caldav").CombinedOutput(); err != nil {
			t.Fatalf("%s cannot import caldav although Radicale is up: apt-get install python3-caldav (scripts/test.sh installs CLIENT_PACKAGES): %v\n%s", py, err, out)
		}
		m, addr, _, cert := serveRadicaleRoute(t, radicale, false)
		start := time.Now()
		calID, uid := "caldavc-"+run, "caldavc-event-"+run
		c := startPyClient(t, "python3-caldav", "caldavc.py", "--url", "https://"+addr+"/.well-known/caldav",
			"--user", alice, "--password", alicePassword, "--cafile", cert,
			"--calendar", calID, "--uid", uid, "--summary", "e2e via caldav", "--delete")
		home := "https://" + addr + "/dav/alice%40example.com/"
		if got := c.expect("PRINCIPAL "); got != "PRINCIPAL "+home {
			t.Errorf("%s, want PRINCIPAL %s", got, home)
		}
		if got := c.expect("HOME "); got != "HOME "+home {
			t.Errorf("%s, want HOME %s", got, home)
		}
		if got, want := c.expect("CALENDAR "), "CALENDAR "+home+calID+"/"; got != want {
			t.Errorf("%s, want %s", got, want)
		}
		if got, want := c.expect("SAVED "), "SAVED "+home+calID+"/"; !strings.HasPrefix(got, want) {
			t.Errorf("%s, want an event under %s", got, want)
		}
		want := uid + " e2e via caldav"
		if got := c.expect("EVENT "); got != "EVENT "+want {
			t.Errorf("%s, want EVENT %s", got, want)
		}
		if got := c.expect("BYUID "); got != "BYUID "+want {
			t.Errorf("%s, want BYUID %s", got, want)
		}
		c.expect("DELETED ")
		c.wait()
		m.wantLogin(t, "webdav", alice, start)
	})

	// vdirsyncer from the root: PROPFIND / is no DAV URL, so it tries
	// /.well-known/caldav, lists alice's calendars, downloads one made
	// straight at Radicale and uploads an event written next to it.
	t.Run("vdirsyncer", func(t *testing.T) {
		t.Parallel()
		vds := clientBin(t, "vdirsyncer", "vdirsyncer")
		calID, uid1, uid2 := "vdirsyncer-"+run, "vds-remote-"+run, "vds-local-"+run
		// Made without mailgate, so that the only webdav login it sees is
		// vdirsyncer's.
		direct := "http://" + radicale + "/" + alice + "/" + calID + "/"
		if _, code, _ := curlHTTP(t, append(auth, "-X", "MKCALENDAR", direct)...); code != 201 {
			t.Fatalf("MKCALENDAR %s = %d, want 201", direct, code)
		}
		t.Cleanup(func() { curl(t, append(auth, "-X", "DELETE", direct)...) })
		if _, code, _ := curlHTTP(t, append(auth, "-X", "PUT", "-H", "Content-Type: text/calendar", "--data-binary", calendarEvent(uid1, "from Radicale"), direct+uid1+".ics")...); code != 201 {
			t.Fatalf("PUT %s.ics = %d, want 201", uid1, code)
		}
		m, addr, _, cert := serveRadicaleRoute(t, radicale, false)
		start := time.Now()
		dir := t.TempDir()
		local := filepath.Join(dir, "calendars")
		if err := os.MkdirAll(filepath.Join(local, calID), 0o700); err != nil {
			t.Fatal(err)
		}
		conf := writeSecret(t, filepath.Join(dir, "config"), fmt.Sprintf(`[general]
status_path = %q

[pair cal]
a = "mailgate"
b = "local"
collections = [%q]

[storage mailgate]
type = "caldav"
url = "https://%s/"
username = %q
password = %q
verify = %q

[storage local]
type = "filesystem"
path = %q
fileext = ".ics"
`, filepath.Join(dir, "status")+"/", calID, addr, alice, alicePassword, cert, local+"/"))

		out, err := runClient(t, dir, nil, vds, "-c", conf, "discover", "cal")
		if err != nil || !strings.Contains(out, fmt.Sprintf("%q (%q)", calID, alice+"/"+calID)) {
			t.Fatalf("vdirsyncer discover: %v, want %s among the remote collections:\n%s", err, calID, out)
		}
		t.Logf("vdirsyncer discover:\n%s", out)
		if out, err := runClient(t, dir, nil, vds, "-c", conf, "sync", "cal"); err != nil {
			t.Fatalf("vdirsyncer sync: %v\n%s", err, out)
		}
		files, _ := filepath.Glob(filepath.Join(local, calID, "*.ics"))
		var got []string
		for _, f := range files {
			b, _ := os.ReadFile(f)
			if strings.Contains(string(b), "UID:"+uid1) {
				got = append(got, f)
			}
		}
		if len(got) != 1 {
			t.Fatalf("after vdirsyncer sync, %v in %s; want one file holding UID %s", files, local, uid1)
		}

		if err := os.WriteFile(filepath.Join(local, calID, uid2+".ics"), []byte(calendarEvent(uid2, "from vdirsyncer")), 0o600); err != nil {
			t.Fatal(err)
		}
		if out, err := runClient(t, dir, nil, vds, "-c", conf, "sync", "cal"); err != nil || !strings.Contains(out, uid2) {
			t.Fatalf("vdirsyncer sync of a local event: %v, want %s uploaded\n%s", err, uid2, out)
		}
		query := `<?xml version="1.0"?><C:calendar-query xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav"><D:prop><C:calendar-data/></D:prop><C:filter><C:comp-filter name="VCALENDAR"><C:comp-filter name="VEVENT"/></C:comp-filter></C:filter></C:calendar-query>`
		body, code, _ := curlHTTP(t, append(auth, "-X", "REPORT", "-H", "Depth: 1", "-H", "Content-Type: application/xml", "--data-binary", query, direct)...)
		if code != 207 || !strings.Contains(body, "UID:"+uid2) || !strings.Contains(body, "UID:"+uid1) {
			t.Fatalf("REPORT %s straight at Radicale = %d, want both events\n%s", direct, code, body)
		}
		m.wantLogin(t, "webdav", alice, start)
	})
}
