package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"
)

// report turns result lines into Markdown: one table of medians over rounds
// with mailgate's ratio to every other target, one table of the spread
// (min..max over rounds), the Go benchmarks of the accounting package, and
// the targets, each met or missed with its margin.

// rowSpec is a metric row in the order the table shows them.
type rowSpec struct {
	scenario, metric, label string
}

var rowOrder = []rowSpec{
	{"throughput", "download_mibps", "relay download, MiB/s ↑"},
	{"throughput", "upload_mibps", "relay upload, MiB/s ↑"},
	{"throughput", "proxy_cpu_download_ms_per_gib", "proxy CPU per GiB down, ms ↓"},
	{"throughput", "proxy_cpu_upload_ms_per_gib", "proxy CPU per GiB up, ms ↓"},
	{"login", "login_p50_ms", "login p50, c=1, ms ↓"},
	{"login", "login_p90_ms", "login p90, c=1, ms ↓"},
	{"login", "login_p99_ms", "login p99, c=1, ms ↓"},
	{"login", "login_rate", "login rate, c=8, logins/s ↑"},
	{"login", "proxy_cpu_us_per_login", "proxy CPU per login (c=8), µs ↓"},
	{"idle", "rss_per_conn_kib", "RSS per idle authenticated conn, KiB ↓"},
	{"idle", "rss_per_user_kib", "RSS per user logged in once (incl. warm-up), KiB ↓"},
	{"idle", "goroutines", "goroutines while holding them ↓"},
}

// targetOrder is the column order; other names follow in order of appearance.
var targetOrder = []string{"direct", "mailgate", "haproxy", "nginx"}

// the target every ratio is taken for
const subject = "mailgate"

type rowKey struct{ scenario, metric, variant string }

// dataset is every result line, grouped.
type dataset struct {
	values  map[rowKey]map[string][]float64
	extras  map[rowKey]map[string][]map[string]any
	targets []string
	rows    []rowKey
	errors  []Result
	rounds  map[int]bool
}

func loadResults(rs []Result) *dataset {
	d := &dataset{values: map[rowKey]map[string][]float64{}, extras: map[rowKey]map[string][]map[string]any{}, rounds: map[int]bool{}}
	seenT := map[string]bool{}
	seenR := map[rowKey]bool{}
	for _, r := range rs {
		if r.Error != "" {
			d.errors = append(d.errors, r)
			continue
		}
		k := rowKey{r.Scenario, r.Metric, r.Variant}
		if d.values[k] == nil {
			d.values[k] = map[string][]float64{}
			d.extras[k] = map[string][]map[string]any{}
		}
		d.values[k][r.Target] = append(d.values[k][r.Target], r.Value)
		d.extras[k][r.Target] = append(d.extras[k][r.Target], r.Extra)
		d.rounds[r.Round] = true
		if !seenT[r.Target] {
			seenT[r.Target] = true
		}
		if !seenR[k] {
			seenR[k] = true
			d.rows = append(d.rows, k)
		}
	}
	for _, t := range targetOrder {
		if seenT[t] {
			d.targets = append(d.targets, t)
			delete(seenT, t)
		}
	}
	for _, r := range rs { // the rest, in order of appearance
		if seenT[r.Target] {
			d.targets = append(d.targets, r.Target)
			delete(seenT, r.Target)
		}
	}
	// Rows: known metrics in rowOrder (plain before tls), then the rest.
	rank := func(k rowKey) int {
		for i, s := range rowOrder {
			if s.scenario == k.scenario && s.metric == k.metric {
				return i
			}
		}
		return len(rowOrder)
	}
	sort.SliceStable(d.rows, func(i, j int) bool {
		ri, rj := rank(d.rows[i]), rank(d.rows[j])
		if ri != rj {
			return ri < rj
		}
		return d.rows[i].variant < d.rows[j].variant // plain < tls
	})
	return d
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return math.NaN()
	}
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func (d *dataset) median(k rowKey, target string) (float64, bool) {
	v := d.values[k][target]
	if len(v) == 0 {
		return 0, false
	}
	return median(v), true
}

func label(k rowKey) string {
	for _, s := range rowOrder {
		if s.scenario == k.scenario && s.metric == k.metric {
			return s.label
		}
	}
	return k.scenario + " " + k.metric
}

// num formats a figure with a precision that suits its size.
func num(v float64) string {
	a := math.Abs(v)
	switch {
	case math.IsNaN(v):
		return "–"
	case a >= 100:
		return strconv.FormatFloat(v, 'f', 0, 64)
	case a >= 10:
		return strconv.FormatFloat(v, 'f', 1, 64)
	case a >= 1:
		return strconv.FormatFloat(v, 'f', 2, 64)
	default:
		return strconv.FormatFloat(v, 'f', 3, 64)
	}
}

func (d *dataset) writeTables(w io.Writer) {
	others := []string{}
	for _, t := range d.targets {
		if t != subject {
			others = append(others, t)
		}
	}
	hasSubject := len(others) < len(d.targets)
	fmt.Fprintf(w, "Medians over %d round(s); ↑ higher is better, ↓ lower is better. Ratios are mailgate ÷ the other target.\n\n", len(d.rounds))
	hdr := []string{"metric", "client link"}
	hdr = append(hdr, d.targets...)
	if hasSubject {
		for _, o := range others {
			hdr = append(hdr, "mailgate/"+o)
		}
	}
	writeRow(w, hdr)
	writeSep(w, len(hdr))
	for _, k := range d.rows {
		row := []string{label(k), k.variant}
		for _, t := range d.targets {
			if m, ok := d.median(k, t); ok {
				row = append(row, num(m))
			} else {
				row = append(row, "–")
			}
		}
		if hasSubject {
			mg, okS := d.median(k, subject)
			for _, o := range others {
				m, ok := d.median(k, o)
				if !okS || !ok || m == 0 {
					row = append(row, "–")
					continue
				}
				row = append(row, fmt.Sprintf("%.2fx", mg/m))
			}
		}
		writeRow(w, row)
	}

	fmt.Fprintf(w, "\nSpread over rounds (min … max, number of rounds):\n\n")
	hdr = []string{"metric", "client link"}
	hdr = append(hdr, d.targets...)
	writeRow(w, hdr)
	writeSep(w, len(hdr))
	for _, k := range d.rows {
		row := []string{label(k), k.variant}
		for _, t := range d.targets {
			v := d.values[k][t]
			if len(v) == 0 {
				row = append(row, "–")
				continue
			}
			lo, hi := v[0], v[0]
			for _, x := range v {
				lo, hi = math.Min(lo, x), math.Max(hi, x)
			}
			row = append(row, fmt.Sprintf("%s … %s (%d)", num(lo), num(hi), len(v)))
		}
		writeRow(w, row)
	}
}

func writeRow(w io.Writer, cells []string) {
	fmt.Fprintf(w, "| %s |\n", strings.Join(cells, " | "))
}

func writeSep(w io.Writer, n int) {
	s := make([]string, n)
	for i := range s {
		s[i] = "---"
	}
	fmt.Fprintf(w, "|%s|\n", strings.Join(s, "|"))
}

// goBench is one Go benchmark line (medians when it ran several times).
type goBench struct {
	name    string
	nsPerOp []float64
	bPerOp  []float64
	allocs  []float64
}

// parseGoBench reads "go test -bench" output.
func parseGoBench(r io.Reader) ([]*goBench, error) {
	var out []*goBench
	byName := map[string]*goBench{}
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 4 || !strings.HasPrefix(f[0], "Benchmark") {
			continue
		}
		name := f[0]
		if i := strings.LastIndexByte(name, '-'); i > 0 { // strip -GOMAXPROCS
			if _, err := strconv.Atoi(name[i+1:]); err == nil {
				name = name[:i]
			}
		}
		b := byName[name]
		if b == nil {
			b = &goBench{name: name}
			byName[name] = b
			out = append(out, b)
		}
		for i := 2; i+1 < len(f); i += 2 {
			v, err := strconv.ParseFloat(f[i], 64)
			if err != nil {
				continue
			}
			switch f[i+1] {
			case "ns/op":
				b.nsPerOp = append(b.nsPerOp, v)
			case "B/op":
				b.bPerOp = append(b.bPerOp, v)
			case "allocs/op":
				b.allocs = append(b.allocs, v)
			}
		}
	}
	return out, sc.Err()
}

func writeGoBench(w io.Writer, bs []*goBench) {
	fmt.Fprintf(w, "\nAccounting at scale (`go test -run '^$' -bench . ./accounting/`):\n\n")
	writeRow(w, []string{"benchmark", "time/op", "B/op", "allocs/op"})
	writeSep(w, 4)
	for _, b := range bs {
		t := "–"
		if len(b.nsPerOp) > 0 {
			t = fmtDuration(time.Duration(median(b.nsPerOp)))
		}
		cell := func(v []float64) string {
			if len(v) == 0 {
				return "–"
			}
			return num(median(v))
		}
		writeRow(w, []string{b.name, t, cell(b.bPerOp), cell(b.allocs)})
	}
}

// fmtDuration prints three significant figures: 66.4ms, 1.64µs.
func fmtDuration(d time.Duration) string {
	switch {
	case d >= time.Second:
		return num(d.Seconds()) + "s"
	case d >= time.Millisecond:
		return num(float64(d)/float64(time.Millisecond)) + "ms"
	case d >= time.Microsecond:
		return num(float64(d)/float64(time.Microsecond)) + "µs"
	}
	return num(float64(d)) + "ns"
}

// cpuNote compares mailgate's and HAProxy's CPU cost for the same work, which
// other load on the machine moves much less than a rate does.
func cpuNote(d *dataset, scenario, metric, variant string) string {
	k := rowKey{scenario, metric, variant}
	mg, ok1 := d.median(k, subject)
	hp, ok2 := d.median(k, "haproxy")
	if !ok1 || !ok2 || hp == 0 {
		return ""
	}
	unit := "ms/GiB"
	if scenario == "login" {
		unit = "µs/login"
	}
	return fmt.Sprintf("; proxy CPU %s vs %s %s = %.2fx", num(mg), num(hp), unit, mg/hp)
}

// writeTargets states each of the targets as met, missed or not
// measured, with the figures. It returns how many were missed.
func writeTargets(w io.Writer, d *dataset, bs []*goBench) int {
	missed := 0
	fmt.Fprintf(w, "\nTargets (issue 4), on the medians above:\n\n")
	say := func(ok bool, what, detail string) {
		status := "MET"
		if !ok {
			status = "MISSED"
			missed++
		}
		fmt.Fprintf(w, "- **%s** %s: %s\n", status, what, detail)
	}
	none := func(what string) { fmt.Fprintf(w, "- not measured: %s\n", what) }

	ratio := func(metric, scenario, variant, what string, want float64, higher bool, note string) {
		k := rowKey{scenario, metric, variant}
		mg, ok1 := d.median(k, subject)
		hp, ok2 := d.median(k, "haproxy")
		if !ok1 || !ok2 || hp == 0 {
			none(what)
			return
		}
		r := mg / hp
		if higher {
			detail := fmt.Sprintf("mailgate %s vs HAProxy %s = %.2fx (target ≥ %.1fx)", num(mg), num(hp), r, want)
			if r < want {
				detail += fmt.Sprintf(", short by %.0f%%", (1-r/want)*100)
			}
			say(r >= want, what, detail+note)
			return
		}
		detail := fmt.Sprintf("mailgate %s vs HAProxy %s = %.2fx (target ≤ %.1fx)", num(mg), num(hp), r, want)
		if r > want {
			detail += fmt.Sprintf(", over by %.0f%%", (r/want-1)*100)
		}
		say(r <= want, what, detail+note)
	}
	ratio("download_mibps", "throughput", "plain", "relay throughput plain, download ≥ 1.4x HAProxy", 1.4, true,
		cpuNote(d, "throughput", "proxy_cpu_download_ms_per_gib", "plain"))
	ratio("upload_mibps", "throughput", "plain", "relay throughput plain, upload ≥ 1.4x HAProxy", 1.4, true,
		cpuNote(d, "throughput", "proxy_cpu_upload_ms_per_gib", "plain"))
	ratio("download_mibps", "throughput", "tls", "relay throughput with client TLS, download ≥ 1.0x HAProxy", 1.0, true,
		cpuNote(d, "throughput", "proxy_cpu_download_ms_per_gib", "tls"))
	ratio("upload_mibps", "throughput", "tls", "relay throughput with client TLS, upload ≥ 1.0x HAProxy", 1.0, true,
		cpuNote(d, "throughput", "proxy_cpu_upload_ms_per_gib", "tls"))
	ratio("login_p50_ms", "login", "plain", "login p50 at c=1 ≤ HAProxy's", 1.0, false, "")
	ratio("login_rate", "login", "plain", "login rate at c=8 ≥ HAProxy's", 1.0, true,
		cpuNote(d, "login", "proxy_cpu_us_per_login", "plain"))

	abs := func(variant string, limit float64) {
		what := fmt.Sprintf("RSS per idle authenticated connection, %s ≤ %.0f KiB", variant, limit)
		k := rowKey{"idle", "rss_per_conn_kib", variant}
		mg, ok := d.median(k, subject)
		if !ok {
			none(what)
			return
		}
		detail := fmt.Sprintf("mailgate %.2f KiB", mg)
		if hp, ok := d.median(k, "haproxy"); ok {
			detail += fmt.Sprintf(" (HAProxy %.2f KiB", hp)
			if ng, ok := d.median(k, "nginx"); ok {
				detail += fmt.Sprintf(", nginx %.2f KiB", ng)
			}
			detail += ")"
		}
		if mg > limit {
			detail += fmt.Sprintf(", over by %.2f KiB (%.0f%%)", mg-limit, (mg/limit-1)*100)
		}
		say(mg <= limit, what, detail)
	}
	abs("plain", 3)
	abs("tls", 12)

	what := "admin snapshot of 100 000 live connections < 50 ms"
	found := false
	for _, b := range bs {
		if b.name == "BenchmarkSnapshot100k" && len(b.nsPerOp) > 0 {
			found = true
			t := time.Duration(median(b.nsPerOp))
			detail := fmt.Sprintf("BenchmarkSnapshot100k %s per snapshot", fmtDuration(t))
			if t >= 50*time.Millisecond {
				detail += fmt.Sprintf(", over by %s (%.0f%%)", fmtDuration(t-50*time.Millisecond), (float64(t)/float64(50*time.Millisecond)-1)*100)
			}
			say(t < 50*time.Millisecond, what, detail)
		}
	}
	if !found {
		none(what)
	}
	return missed
}

func readResults(r io.Reader) ([]Result, error) {
	var out []Result
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	line := 0
	for sc.Scan() {
		line++
		s := strings.TrimSpace(sc.Text())
		if s == "" || !strings.HasPrefix(s, "{") {
			continue
		}
		var res Result
		if err := json.Unmarshal([]byte(s), &res); err != nil {
			return nil, fmt.Errorf("line %d: %w", line, err)
		}
		out = append(out, res)
	}
	return out, sc.Err()
}

// writeReport writes the whole report; it returns the number of failed
// measurements and of missed targets.
func writeReport(w io.Writer, rs []Result, bs []*goBench) (failed, missed int) {
	d := loadResults(rs)
	d.writeTables(w)
	if len(bs) > 0 {
		writeGoBench(w, bs)
	}
	missed = writeTargets(w, d, bs)
	if len(d.errors) > 0 {
		fmt.Fprintf(w, "\nFailed measurements (%d):\n\n", len(d.errors))
		for _, e := range d.errors {
			fmt.Fprintf(w, "- round %d, %s, %s/%s, %s: %s\n", e.Round, e.Scenario, e.Target, e.Variant, e.Metric, e.Error)
		}
	}
	return len(d.errors), missed
}

func cmdReport(args []string) error {
	fs := flag.NewFlagSet("report", flag.ExitOnError)
	gobench := fs.String("gobench", "", "go test -bench output to include (accounting at scale)")
	fs.Parse(args)
	var rs []Result
	files := fs.Args()
	if len(files) == 0 {
		files = []string{"-"}
	}
	for _, p := range files {
		var r io.Reader = os.Stdin
		if p != "-" {
			f, err := os.Open(p)
			if err != nil {
				return err
			}
			defer f.Close()
			r = f
		}
		got, err := readResults(r)
		if err != nil {
			return fmt.Errorf("%s: %w", p, err)
		}
		rs = append(rs, got...)
	}
	var bs []*goBench
	if *gobench != "" {
		f, err := os.Open(*gobench)
		if err != nil {
			return err
		}
		defer f.Close()
		if bs, err = parseGoBench(f); err != nil {
			return err
		}
	}
	if len(rs) == 0 && len(bs) == 0 {
		return errors.New("report: no results")
	}
	failed, _ := writeReport(os.Stdout, rs, bs)
	if failed > 0 {
		return fmt.Errorf("report: %d measurement(s) failed", failed)
	}
	return nil
}
