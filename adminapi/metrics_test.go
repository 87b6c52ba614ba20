package adminapi_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/mailgate/mailgate/accounting"
	"github.com/mailgate/mailgate/adminapi"
)

// scrape GETs /metrics with the token and parses the text format.
func (e *env) scrape() map[string]*dto.MetricFamily {
	e.t.Helper()
	r := e.do("GET", "/metrics", "")
	if r.status != http.StatusOK {
		e.t.Fatalf("GET /metrics = %d, want 200; body %s", r.status, r.body)
	}
	if ct := r.header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain; version=0.0.4") {
		e.t.Fatalf("GET /metrics: Content-Type = %q, want the text format", ct)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(bytes.NewReader(r.body))
	if err != nil {
		e.t.Fatalf("parsing /metrics: %v\n%s", err, r.body)
	}
	return mfs
}

// value is the value of the series of name with exactly these labels; it
// fails the test when the series does not exist.
func value(t *testing.T, mfs map[string]*dto.MetricFamily, name string, labels ...string) float64 {
	t.Helper()
	mf := mfs[name]
	if mf == nil {
		t.Fatalf("no metric %s", name)
	}
	want := map[string]string{}
	for i := 0; i+1 < len(labels); i += 2 {
		want[labels[i]] = labels[i+1]
	}
	for _, m := range mf.GetMetric() {
		if len(m.GetLabel()) != len(want) {
			continue
		}
		match := true
		for _, l := range m.GetLabel() {
			if want[l.GetName()] != l.GetValue() {
				match = false
			}
		}
		if !match {
			continue
		}
		switch mf.GetType() {
		case dto.MetricType_COUNTER:
			return m.GetCounter().GetValue()
		case dto.MetricType_GAUGE:
			return m.GetGauge().GetValue()
		}
		t.Fatalf("%s has type %v", name, mf.GetType())
	}
	t.Fatalf("no series %s%v", name, labels)
	return 0
}

// TestMetrics_needsToken: /metrics is guarded like the API.
func TestMetrics_needsToken(t *testing.T) {
	e := newEnv(t)
	wantError(t, e.raw("GET", "/metrics", ""), http.StatusUnauthorized, adminapi.CodeUnauthorized)
	wantError(t, e.raw("GET", "/metrics", "", "Bearer wrong"), http.StatusUnauthorized, adminapi.CodeUnauthorized)
	r := e.raw("GET", "/metrics", "", "Bearer wrong")
	if got := r.header.Get("WWW-Authenticate"); got == "" {
		t.Errorf("401 from /metrics has no WWW-Authenticate")
	}
	wantError(t, e.do("POST", "/metrics", ""), http.StatusMethodNotAllowed, adminapi.CodeMethodNotAllowed)
	if r := e.raw("GET", "/metrics", "", "bearer "+testToken); r.status != http.StatusOK {
		t.Errorf("GET /metrics with a lower-case scheme = %d, want 200", r.status)
	}
}

// TestMetrics_closedLabelSets: every series exists from the start, with
// the label values the design lists and no others.
func TestMetrics_closedLabelSets(t *testing.T) {
	e := newEnv(t)
	mfs := e.scrape()
	count := func(name string) int {
		if mfs[name] == nil {
			t.Fatalf("no metric %s", name)
		}
		return len(mfs[name].GetMetric())
	}
	np := len(accounting.Protocols)
	for name, want := range map[string]int{
		"mailgate_live_connections":          np * 2,
		"mailgate_logins_total":              np * 3,
		"mailgate_refusals_total":            10,
		"mailgate_drops_total":               1,
		"mailgate_backend_dial_errors_total": np,
		"mailgate_relay_bytes_total":         np * 2,
	} {
		if got := count(name); got != want {
			t.Errorf("%s has %d series, want %d", name, got, want)
		}
	}
	for _, p := range accounting.Protocols {
		for _, s := range []string{"authenticated", "preauth"} {
			if v := value(t, mfs, "mailgate_live_connections", "protocol", p, "state", s); v != 0 {
				t.Errorf("live %s %s = %v at start, want 0", p, s, v)
			}
		}
	}
	// Every reason and login result accounting counts has its series: a new
	// one there must be added to adminapi's closed lists.
	st := e.reg.Stats()
	for reason := range st.Refusals {
		value(t, mfs, "mailgate_refusals_total", "reason", reason)
	}
	for p, results := range st.Logins {
		for res := range results {
			value(t, mfs, "mailgate_logins_total", "protocol", p, "result", res)
		}
	}
	// The runtime and process collectors are there too.
	for _, name := range []string{"go_goroutines", "go_memstats_heap_inuse_bytes", "process_open_fds"} {
		if mfs[name] == nil {
			names := make([]string, 0, len(mfs))
			for n := range mfs {
				names = append(names, n)
			}
			sort.Strings(names)
			t.Errorf("no metric %s; have %v", name, names)
		}
	}
}

// TestMetrics_move: the numbers follow logins, failures, refusals, drops,
// dial errors and relayed bytes on a real accounting.Registry.
func TestMetrics_move(t *testing.T) {
	e := newEnv(t)
	live := func(mfs map[string]*dto.MetricFamily, p, state string) float64 {
		t.Helper()
		return value(t, mfs, "mailgate_live_connections", "protocol", p, "state", state)
	}

	// Two IMAP connections before login, one POP3.
	c1 := e.conn("imap", "192.0.2.1:1000", nil)
	c2 := e.conn("imap", "192.0.2.2:1000", nil)
	e.conn("pop", "192.0.2.3:1000", nil)
	mfs := e.scrape()
	if live(mfs, "imap", "preauth") != 2 || live(mfs, "imap", "authenticated") != 0 || live(mfs, "pop", "preauth") != 1 {
		t.Fatalf("live after 3 connects: imap preauth %v authenticated %v, pop preauth %v; want 2, 0, 1",
			live(mfs, "imap", "preauth"), live(mfs, "imap", "authenticated"), live(mfs, "pop", "preauth"))
	}

	// One logs in, one fails its password, one hits a backend outage.
	c1.AuthAttempt("alice@example.com", "LOGIN")
	c1.Authenticated("alice@example.com", "LOGIN")
	c2.AuthFailed("bob@example.com", "LOGIN", false)
	c2.AuthFailed("bob@example.com", "LOGIN", true)
	mfs = e.scrape()
	if live(mfs, "imap", "preauth") != 1 || live(mfs, "imap", "authenticated") != 1 {
		t.Errorf("after one login: imap preauth %v authenticated %v, want 1 and 1",
			live(mfs, "imap", "preauth"), live(mfs, "imap", "authenticated"))
	}
	for res, want := range map[string]float64{"success": 1, "failure": 1, "temporary_failure": 1} {
		if got := value(t, mfs, "mailgate_logins_total", "protocol", "imap", "result", res); got != want {
			t.Errorf("logins imap %s = %v, want %v", res, got, want)
		}
	}
	if got := value(t, mfs, "mailgate_logins_total", "protocol", "pop", "result", "success"); got != 0 {
		t.Errorf("logins pop success = %v, want 0", got)
	}

	// Refusals: a login to a disabled protocol, a blocked network.
	e.ok(e.do("PUT", "/api/v1/users/bob@example.com/protocols/imap", `{"enabled":false}`), nil)
	if got := c2.CheckLogin("bob@example.com"); got != accounting.DenyDisabled {
		t.Fatalf("CheckLogin(bob) = %q, want disabled", got)
	}
	if _, err := e.reg.AddBlock(netip.MustParsePrefix("198.51.100.0/24"), "test", time.Time{}); err != nil {
		t.Fatal(err)
	}
	if _, why := e.reg.Admit(accounting.ConnInfo{Protocol: "smtp", Client: netip.MustParseAddrPort("198.51.100.7:25")}); why == "" {
		t.Fatal("Admit from a blocked network was admitted")
	}
	mfs = e.scrape()
	if got := value(t, mfs, "mailgate_refusals_total", "reason", "disabled"); got != 1 {
		t.Errorf("refusals disabled = %v, want 1", got)
	}
	if got := value(t, mfs, "mailgate_refusals_total", "reason", "blocked"); got != 1 {
		t.Errorf("refusals blocked = %v, want 1", got)
	}
	if got := value(t, mfs, "mailgate_refusals_total", "reason", "user_limit"); got != 0 {
		t.Errorf("refusals user_limit = %v, want 0", got)
	}

	// An admin drop through the API.
	if got := value(t, mfs, "mailgate_drops_total"); got != 0 {
		t.Errorf("drops = %v before any drop, want 0", got)
	}
	e.ok(e.do("POST", "/api/v1/users/alice@example.com/drop?protocol=imap", ""), nil)
	mfs = e.scrape()
	if got := value(t, mfs, "mailgate_drops_total"); got != 1 {
		t.Errorf("drops = %v after dropping alice, want 1", got)
	}
	if live(mfs, "imap", "authenticated") != 0 || live(mfs, "imap", "preauth") != 1 {
		t.Errorf("after the drop: imap authenticated %v preauth %v, want 0 and 1",
			live(mfs, "imap", "authenticated"), live(mfs, "imap", "preauth"))
	}

	// Backend dial errors and relayed bytes.
	e.reg.CountDialError("imap")
	e.reg.CountDialError("imap")
	e.reg.AddRelayBytes("imap", 100, 2500)
	mfs = e.scrape()
	if got := value(t, mfs, "mailgate_backend_dial_errors_total", "protocol", "imap"); got != 2 {
		t.Errorf("dial errors imap = %v, want 2", got)
	}
	if got := value(t, mfs, "mailgate_relay_bytes_total", "protocol", "imap", "direction", "up"); got != 100 {
		t.Errorf("relay bytes imap up = %v, want 100", got)
	}
	if got := value(t, mfs, "mailgate_relay_bytes_total", "protocol", "imap", "direction", "down"); got != 2500 {
		t.Errorf("relay bytes imap down = %v, want 2500", got)
	}

	// Closing the last connections brings the gauges back to zero.
	c2.Close()
	mfs = e.scrape()
	if got := live(mfs, "imap", "preauth"); got != 0 {
		t.Errorf("imap preauth after the last close = %v, want 0", got)
	}
}

// TestMetrics_twoServers: each Server has its own prometheus registry, so
// two in one process do not collide (no global registration).
func TestMetrics_twoServers(t *testing.T) {
	a, b := newEnv(t), newEnv(t)
	a.login("imap", "192.0.2.1:1000", "alice@example.com", nil)
	if got := value(t, a.scrape(), "mailgate_live_connections", "protocol", "imap", "state", "authenticated"); got != 1 {
		t.Errorf("server a: imap authenticated = %v, want 1", got)
	}
	if got := value(t, b.scrape(), "mailgate_live_connections", "protocol", "imap", "state", "authenticated"); got != 0 {
		t.Errorf("server b: imap authenticated = %v, want 0 (it has its own registry)", got)
	}
}

// TestMetrics_dashboardNames: configs/grafana-dashboard.json queries only
// metrics and label values that /metrics serves.
func TestMetrics_dashboardNames(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join("..", "configs", "grafana-dashboard.json"))
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(raw, &dash); err != nil {
		t.Fatalf("configs/grafana-dashboard.json: %v", err)
	}
	e := newEnv(t)
	mfs := e.scrape()
	values := map[string]bool{} // label="value" pairs the server has
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				values[l.GetName()+`="`+l.GetValue()+`"`] = true
			}
		}
	}
	names := regexp.MustCompile(`\b(?:mailgate|go|process)_[a-z_]+\b`)
	pairs := regexp.MustCompile(`\b(state|result|reason|direction)="([^"]*)"`)
	exprs := 0
	for _, p := range dash.Panels {
		for _, tg := range p.Targets {
			exprs++
			for _, n := range names.FindAllString(tg.Expr, -1) {
				if mfs[n] == nil {
					t.Errorf("panel %q queries %s, which /metrics does not serve", p.Title, n)
				}
			}
			for _, m := range pairs.FindAllStringSubmatch(tg.Expr, -1) {
				if !values[m[0]] {
					t.Errorf("panel %q selects %s, which no series has", p.Title, m[0])
				}
			}
		}
	}
	if exprs < 10 {
		t.Errorf("the dashboard has %d queries; is it the right file?", exprs)
	}
}
