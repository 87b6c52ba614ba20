package adminapi

import (
	"fmt"
	"log/slog"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/mailgate/mailgate/accounting"
)

// GET /metrics: the accounting numbers in the Prometheus text format, read
// from the registry at scrape time (nothing is copied between scrapes), plus
// the Go runtime and process collectors. It needs the same bearer token as
// the API: in Prometheus,
//
//	scrape_configs:
//	  - job_name: mailgate
//	    authorization:
//	      credentials_file: /etc/mailgate/admin-token
//	    static_configs:
//	      - targets: ["127.0.0.1:1880"]
//
// Every label has a closed set of values, so the series count is fixed:
// protocols are accounting.Protocols, reasons and results the lists below.
//
//	mailgate_live_connections{protocol,state}      gauge   state: authenticated, preauth
//	mailgate_logins_total{protocol,result}         counter result: success, failure, temporary_failure
//	mailgate_refusals_total{reason}                counter connect and login gate refusals
//	mailgate_drops_total                           counter dropped by an administrator or policy
//	mailgate_session_panics_total                  counter sessions ended by a recovered panic (a bug)
//	mailgate_backend_dial_errors_total{protocol}   counter
//	mailgate_relay_bytes_total{protocol,direction} counter direction: up (client to backend), down

// MetricsSource is what /metrics reads at every scrape; *accounting.Registry
// implements it. When Options.Registry does not, /metrics serves the Go
// runtime and process metrics only.
type MetricsSource interface {
	// Summary is the live connection count per protocol, authenticated or not.
	Summary() map[string]int
	// Stats holds the counters and the live authenticated count per protocol.
	Stats() accounting.Stats
}

var _ MetricsSource = (*accounting.Registry)(nil)

// The closed label sets besides the protocol keys.
var (
	metricRefusalReasons = []string{accounting.ReasonBlocked, accounting.ReasonIPLockout, accounting.ReasonIPLimit,
		accounting.ReasonListenerLimit, accounting.ReasonDisabled, accounting.ReasonLockout, accounting.ReasonUserLimit,
		accounting.ReasonDeviceBlocked, accounting.ReasonDeviceType, accounting.ReasonUnavailable}
	metricLoginResults = []string{"success", "failure", "temporary_failure"}
)

// routeMetrics registers GET /metrics with a registry of its own: nothing
// is registered in prometheus.DefaultRegisterer, so any number of Servers
// may live in one process (tests do).
func (s *Server) routeMetrics() {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	if s.metrics != nil {
		reg.MustRegister(newAccountingCollector(s.metrics))
	} else if src, ok := s.reg.(MetricsSource); ok {
		reg.MustRegister(newAccountingCollector(src))
	}
	if s.cluster != nil {
		reg.MustRegister(newClusterCollector(s.cluster))
	}
	h := promhttp.HandlerFor(reg, promhttp.HandlerOpts{
		ErrorLog:      promLogger{s.log},
		ErrorHandling: promhttp.ContinueOnError, // serve what could be gathered; the error is logged
		Registry:      reg,                      // adds promhttp_metric_handler_errors_total
		// Two scrapers at once are plenty for a local admin listener.
		MaxRequestsInFlight: 2,
	})
	s.handle("GET /metrics", accounting.RoleViewer, func(w http.ResponseWriter, r *http.Request) error {
		h.ServeHTTP(w, r)
		return nil
	})
}

// promLogger sends promhttp's errors to the server's log.
type promLogger struct{ log *slog.Logger }

func (l promLogger) Println(v ...any) {
	l.log.Error("metrics: " + fmt.Sprint(v...))
}

// accountingCollector turns one Stats and one Summary snapshot into const
// metrics at each scrape.
type accountingCollector struct {
	src        MetricsSource
	live       *prometheus.Desc
	logins     *prometheus.Desc
	refusals   *prometheus.Desc
	drops      *prometheus.Desc
	panics     *prometheus.Desc
	dialErrors *prometheus.Desc
	relayBytes *prometheus.Desc
}

func newAccountingCollector(src MetricsSource) *accountingCollector {
	return &accountingCollector{
		src: src,
		live: prometheus.NewDesc("mailgate_live_connections",
			"Live client connections by protocol and state (preauth: not logged in yet). The admin page's tab count is their sum per protocol.",
			[]string{"protocol", "state"}, nil),
		logins: prometheus.NewDesc("mailgate_logins_total",
			"Logins decided by the backend, by protocol and result (temporary_failure: the backend was unavailable, not a wrong password).",
			[]string{"protocol", "result"}, nil),
		refusals: prometheus.NewDesc("mailgate_refusals_total",
			"Connections or logins refused by mailgate's own gate, by reason.",
			[]string{"reason"}, nil),
		drops: prometheus.NewDesc("mailgate_drops_total",
			"Connections dropped by an administrator or by policy (disable, block, resync).",
			nil, nil),
		panics: prometheus.NewDesc("mailgate_session_panics_total",
			"Sessions that ended in a panic mailgate recovered from: a bug to report, with the stack from the log.",
			nil, nil),
		dialErrors: prometheus.NewDesc("mailgate_backend_dial_errors_total",
			"Failed dials to a backend, by protocol.",
			[]string{"protocol"}, nil),
		relayBytes: prometheus.NewDesc("mailgate_relay_bytes_total",
			"Bytes relayed after login, by protocol and direction (up: client to backend, down: backend to client).",
			[]string{"protocol", "direction"}, nil),
	}
}

func (c *accountingCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.live, c.logins, c.refusals, c.drops, c.panics, c.dialErrors, c.relayBytes} {
		ch <- d
	}
}

func (c *accountingCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.src.Stats()
	sum := c.src.Summary()
	gauge := func(d *prometheus.Desc, v int64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, float64(v), labels...)
	}
	counter := func(d *prometheus.Desc, v int64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	for _, p := range accounting.Protocols {
		authed := st.Authenticated[p]
		// Stats and Summary are two reads of moving counters: a connection
		// that logs in or closes between them could make this negative.
		preauth := max(int64(sum[p])-authed, 0)
		gauge(c.live, authed, p, accounting.StateAuthenticated)
		gauge(c.live, preauth, p, accounting.StatePreauth)
		for _, res := range metricLoginResults {
			counter(c.logins, st.Logins[p][res], p, res)
		}
		counter(c.dialErrors, st.DialErrors[p], p)
		counter(c.relayBytes, st.BytesUp[p], p, "up")
		counter(c.relayBytes, st.BytesDown[p], p, "down")
	}
	for _, r := range metricRefusalReasons {
		counter(c.refusals, st.Refusals[r], r)
	}
	counter(c.drops, st.Drops)
	counter(c.panics, st.Panics)
}
